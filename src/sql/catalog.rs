//! Every connection is a DataFusion catalog: catalog = connection name, schema = source
//! schema, table = source table. Lookups read the in-memory snapshot only; the default
//! `datafusion.public` catalog stays available for the session's own tables.

use std::sync::{Arc, Weak};

use async_trait::async_trait;
use datafusion::catalog::{
    CatalogProvider, CatalogProviderList, MemoryCatalogProvider, MemorySchemaProvider,
    SchemaProvider, TableProvider,
};
use datafusion::error::{DataFusionError, Result};

use super::lazy_table::LazyTable;
use super::snapshot::{SnapshotCell, SnapshotConnection};
use super::system_catalog::{SYSTEM_CATALOG, SystemCatalog};
use crate::engine::EngineCore;

/// The session's catalogs: one per connection, plus DataFusion's default.
#[derive(Debug)]
pub struct QuarryCatalogList {
    snapshot: Arc<SnapshotCell>,
    core: Weak<EngineCore>,
    default: Arc<MemoryCatalogProvider>,
}

impl QuarryCatalogList {
    /// Catalogs served from `snapshot`; tables fetch through `core`.
    pub(crate) fn new(snapshot: Arc<SnapshotCell>, core: Weak<EngineCore>) -> Self {
        let default = Arc::new(MemoryCatalogProvider::new());
        default
            .register_schema("public", Arc::new(MemorySchemaProvider::new()))
            .expect("a new memory catalog accepts a schema");
        QuarryCatalogList {
            snapshot,
            core,
            default,
        }
    }
}

impl CatalogProviderList for QuarryCatalogList {
    fn register_catalog(
        &self,
        name: String,
        _catalog: Arc<dyn CatalogProvider>,
    ) -> Option<Arc<dyn CatalogProvider>> {
        tracing::warn!(
            name,
            "catalogs are connections; create a connection instead"
        );
        None
    }

    fn catalog_names(&self) -> Vec<String> {
        let mut names = vec!["datafusion".to_owned(), SYSTEM_CATALOG.to_owned()];
        names.extend(self.snapshot.get().connections.keys().cloned());
        names
    }

    fn catalog(&self, name: &str) -> Option<Arc<dyn CatalogProvider>> {
        if name == "datafusion" {
            return Some(self.default.clone());
        }
        if name == SYSTEM_CATALOG {
            return Some(Arc::new(SystemCatalog::new(self.core.clone())));
        }
        let connection = self.snapshot.get().connections.get(name)?.clone();
        Some(Arc::new(ConnectionCatalog {
            connection,
            core: self.core.clone(),
        }))
    }
}

/// One connection as a catalog, fixed to the snapshot it was looked up in.
#[derive(Debug)]
struct ConnectionCatalog {
    connection: Arc<SnapshotConnection>,
    core: Weak<EngineCore>,
}

impl CatalogProvider for ConnectionCatalog {
    fn schema_names(&self) -> Vec<String> {
        self.connection.schemas.keys().cloned().collect()
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        self.connection.schemas.contains_key(name).then(|| {
            Arc::new(ConnectionSchema {
                connection: self.connection.clone(),
                schema: name.to_owned(),
                core: self.core.clone(),
            }) as Arc<dyn SchemaProvider>
        })
    }
}

/// One source schema of a connection.
#[derive(Debug)]
struct ConnectionSchema {
    connection: Arc<SnapshotConnection>,
    schema: String,
    core: Weak<EngineCore>,
}

#[async_trait]
impl SchemaProvider for ConnectionSchema {
    fn table_names(&self) -> Vec<String> {
        self.connection
            .schemas
            .get(&self.schema)
            .map(|tables| tables.keys().cloned().collect())
            .unwrap_or_default()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        let Some(table) = self
            .connection
            .schemas
            .get(&self.schema)
            .and_then(|tables| tables.get(name))
        else {
            return Ok(None);
        };
        if table.schema.fields().is_empty() {
            return Err(DataFusionError::Plan(format!(
                "table {}.{}.{} has no stored schema; run discovery again",
                self.connection.connection.name, self.schema, name
            )));
        }
        Ok(Some(Arc::new(LazyTable::new(
            self.connection.connection.clone(),
            table.clone(),
            self.core.clone(),
        ))))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.connection
            .schemas
            .get(&self.schema)
            .is_some_and(|tables| tables.contains_key(name))
    }
}
