//! The `quarry` catalog: its information_schema views (see `information_schema`, served
//! as `quarry.catalog.*` and reached as `quarry.information_schema.*`) and the views made
//! with `CREATE VIEW` (`quarry.views`, see `views`).

use std::sync::Arc;

use datafusion::catalog::{CatalogProvider, SchemaProvider};
use datafusion::execution::runtime_env::RuntimeEnv;

use super::information_schema::{InformationSchema, View};
use super::views::StoredViews;
use crate::connections::Connections;

/// Name of the system catalog.
pub const SYSTEM_CATALOG: &str = "quarry";
/// The schema holding the views; `quarry.information_schema.x` is routed here, since
/// DataFusion answers every `*.information_schema` itself.
pub const VIEWS_SCHEMA: &str = "catalog";
/// The schema of the views made with `CREATE VIEW` (see `sql::views`).
pub const USER_VIEWS_SCHEMA: &str = "views";

/// Rewrites references to `quarry.information_schema.<view>` to the views' schema.
pub fn route_views(statement: &mut datafusion::sql::parser::Statement) {
    use datafusion::sql::sqlparser::ast::{Ident, ObjectNamePart, visit_relations_mut};
    let datafusion::sql::parser::Statement::Statement(inner) = statement else {
        return;
    };
    let _ = visit_relations_mut(inner.as_mut(), |name| {
        let parts: Vec<String> = name
            .0
            .iter()
            .map(|p| match p {
                ObjectNamePart::Identifier(i) => i.value.to_ascii_lowercase(),
                _ => String::new(),
            })
            .collect();
        if parts.len() == 3
            && parts[0] == SYSTEM_CATALOG
            && parts[1] == "information_schema"
            && View::named(&parts[2]).is_some()
        {
            name.0[1] = ObjectNamePart::Identifier(Ident::new(VIEWS_SCHEMA));
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
}

/// The `quarry` catalog with its one schema.
#[derive(Debug)]
pub(crate) struct SystemCatalog {
    connections: Arc<Connections>,
    runtime: Arc<RuntimeEnv>,
}

impl SystemCatalog {
    pub(crate) fn new(connections: Arc<Connections>, runtime: Arc<RuntimeEnv>) -> Self {
        SystemCatalog {
            connections,
            runtime,
        }
    }
}

impl CatalogProvider for SystemCatalog {
    fn schema_names(&self) -> Vec<String> {
        vec![VIEWS_SCHEMA.into(), USER_VIEWS_SCHEMA.into()]
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        match name {
            VIEWS_SCHEMA => Some(Arc::new(InformationSchema {
                connections: Arc::clone(&self.connections),
            })),
            USER_VIEWS_SCHEMA => Some(Arc::new(StoredViews {
                connections: Arc::clone(&self.connections),
                runtime: Arc::clone(&self.runtime),
            })),
            _ => None,
        }
    }
}
