//! Views that outlive the session: `CREATE VIEW name AS …` stores the query in the
//! metadata store, served as `quarry.views.name` to every session from then on;
//! `DROP VIEW name` removes it. `CREATE TEMPORARY VIEW` and `CREATE TABLE … AS` stay in the
//! session's own `datafusion.public`, as in PostgreSQL.
//!
//! Unqualified names look in the default schema first, then in the session's
//! `datafusion.public`, then in `quarry.views` (a search path, like psql's).

use std::collections::BTreeSet;
use std::ops::ControlFlow;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::{SchemaProvider, TableProvider};
use datafusion::execution::runtime_env::RuntimeEnv;

use datafusion::catalog::CatalogProviderList;
use datafusion::common::TableReference;
use datafusion::sql::parser::Statement;
use datafusion::sql::resolve::resolve_table_references;
use datafusion::sql::sqlparser::ast::{
    self, Ident, ObjectName, ObjectNamePart, ObjectType, visit_relations, visit_relations_mut,
};

use super::default_schema::DefaultSchema;
use super::names::parts;
use super::system_catalog::{SYSTEM_CATALOG, USER_VIEWS_SCHEMA};
use crate::connections::Connections;
use crate::connections::snapshot::Snapshot;
use crate::error::{Error, Result};

/// The catalog and schema of the session's own tables and temporary views.
const SESSION_CATALOG: &str = "datafusion";
const SESSION_SCHEMA: &str = "public";

/// A `CREATE VIEW` to store.
#[derive(Debug)]
pub struct CreateView {
    /// The view's name in `quarry.views`.
    pub name: String,
    /// Its query.
    pub query: ast::Query,
    /// Whether an existing view of that name is replaced.
    pub or_replace: bool,
}

/// A `DROP VIEW` of stored views.
#[derive(Debug)]
pub struct DropViews {
    /// The views' names in `quarry.views`.
    pub names: Vec<String>,
    /// Whether a missing view is passed over.
    pub if_exists: bool,
}

/// The stored view a view name stands for: `name`, `views.name` or `quarry.views.name`.
fn stored_name(parts: &[String]) -> Option<&str> {
    match parts {
        [name] => Some(name),
        [schema, name] if schema == USER_VIEWS_SCHEMA => Some(name),
        [catalog, schema, name] if catalog == SYSTEM_CATALOG && schema == USER_VIEWS_SCHEMA => {
            Some(name)
        }
        _ => None,
    }
}

/// Whether `statement` creates a view to store, and which.
pub fn create_request(statement: &Statement) -> Result<Option<CreateView>> {
    let Statement::Statement(inner) = statement else {
        return Ok(None);
    };
    let ast::Statement::CreateView(create) = inner.as_ref() else {
        return Ok(None);
    };
    let name = parts(&create.name);
    if create.temporary || name.first().is_some_and(|c| c == SESSION_CATALOG) {
        return Ok(None);
    }
    if create.materialized {
        return Err(Error::Usage(
            "materialized views are not supported; a table's cache already keeps its rows \
             (CREATE VIEW stores the query)"
                .into(),
        ));
    }
    let Some(view) = stored_name(&name) else {
        return Err(Error::Usage(format!(
            "views are stored in {SYSTEM_CATALOG}.{USER_VIEWS_SCHEMA}, not in '{}': write \
             CREATE VIEW {} AS …, or CREATE TEMPORARY VIEW for one that lasts this session",
            name[..name.len() - 1].join("."),
            name.last().map(String::as_str).unwrap_or_default()
        )));
    };
    let mut query = create.query.as_ref().clone();
    if !create.columns.is_empty() {
        // `CREATE VIEW v (a, b) AS q` is `SELECT * FROM (q) AS v (a, b)`.
        let columns: Vec<String> = create
            .columns
            .iter()
            .map(|c| Ident::new(c.name.value.clone()).to_string())
            .collect();
        let sql = format!(
            "SELECT * FROM ({query}) AS {} ({})",
            Ident::new(view),
            columns.join(", ")
        );
        query = parse_query(&sql)?;
    }
    Ok(Some(CreateView {
        name: view.to_owned(),
        query,
        or_replace: create.or_replace,
    }))
}

fn parse_query(sql: &str) -> Result<ast::Query> {
    let mut statements = datafusion::sql::parser::DFParser::parse_sql(sql)?;
    match statements.pop_front() {
        Some(Statement::Statement(inner)) => match *inner {
            ast::Statement::Query(query) => Ok(*query),
            _ => Err(Error::Usage(format!("not a query: {sql}"))),
        },
        _ => Err(Error::Usage(format!("not a query: {sql}"))),
    }
}

/// Whether `statement` drops stored views (and not session ones), and which.
pub fn drop_request(
    statement: &Statement,
    snapshot: &Snapshot,
    catalogs: &dyn CatalogProviderList,
) -> Option<DropViews> {
    let Statement::Statement(inner) = statement else {
        return None;
    };
    let ast::Statement::Drop {
        object_type: ObjectType::View,
        if_exists,
        names,
        ..
    } = inner.as_ref()
    else {
        return None;
    };
    let mut stored = Vec::new();
    for name in names {
        let name = parts(name);
        let view = stored_name(&name)?;
        // A bare name that is a session view is the session's to drop.
        if name.len() == 1 && session_has(catalogs, view) {
            return None;
        }
        if name.len() == 1 && !snapshot.views.contains_key(view) && *if_exists {
            return None;
        }
        stored.push(view.to_owned());
    }
    Some(DropViews {
        names: stored,
        if_exists: *if_exists,
    })
}

fn session_has(catalogs: &dyn CatalogProviderList, table: &str) -> bool {
    catalogs
        .catalog(SESSION_CATALOG)
        .and_then(|c| c.schema(SESSION_SCHEMA))
        .is_some_and(|s| s.table_exist(table))
}

/// Qualifies the unqualified names of `statement` that the default schema does not hold
/// but the session (`datafusion.public`) or the stored views do. CTE names and table
/// functions are left alone.
pub fn resolve_unqualified(
    statement: &mut Statement,
    snapshot: &Snapshot,
    catalogs: &dyn CatalogProviderList,
    default: &DefaultSchema,
    is_table_function: impl Fn(&str) -> bool,
) {
    let Ok((_, ctes)) = resolve_table_references(statement, true) else {
        return;
    };
    let ctes: BTreeSet<String> = ctes.iter().map(|c| c.table().to_owned()).collect();
    let Statement::Statement(inner) = statement else {
        return;
    };
    if matches!(
        inner.as_ref(),
        ast::Statement::CreateView(_)
            | ast::Statement::CreateTable(_)
            | ast::Statement::Drop { .. }
    ) {
        return;
    }
    let in_default = |table: &str| {
        catalogs
            .catalog(&default.catalog)
            .and_then(|c| c.schema(&default.schema))
            .is_some_and(|s| s.table_exist(table))
    };
    let _ = visit_relations_mut(inner.as_mut(), |name| {
        if let [ObjectNamePart::Identifier(ident)] = name.0.as_slice() {
            let table = if ident.quote_style.is_some() {
                ident.value.clone()
            } else {
                ident.value.to_lowercase()
            };
            let found = if ctes.contains(&table) || is_table_function(&table) || in_default(&table)
            {
                None
            } else if !default.is_initial() && session_has(catalogs, &table) {
                Some((SESSION_CATALOG, SESSION_SCHEMA))
            } else if snapshot.views.contains_key(&table) {
                Some((SYSTEM_CATALOG, USER_VIEWS_SCHEMA))
            } else {
                None
            };
            if let Some((catalog, schema)) = found {
                *name = ObjectName::from(vec![
                    Ident::new(catalog),
                    Ident::new(schema),
                    Ident::with_quote('"', table),
                ]);
            }
        }
        ControlFlow::<()>::Continue(())
    });
}

/// Puts the unqualified targets of `CREATE TABLE` and `CREATE TEMPORARY VIEW` in the
/// session's `datafusion.public` (a connection's schema cannot hold them), and makes a
/// temporary view one of DataFusion's views there, which last as long as the session.
pub fn qualify_session_objects(statement: &mut Statement, default: &DefaultSchema) {
    let Statement::Statement(inner) = statement else {
        return;
    };
    let session_default = default.catalog == SESSION_CATALOG;
    let name = match inner.as_mut() {
        ast::Statement::CreateTable(create) if !session_default => &mut create.name,
        // A connection's tables cannot be dropped: a bare name is the session's.
        ast::Statement::Drop { names, .. } if !session_default => {
            names.iter_mut().for_each(in_session);
            return;
        }
        ast::Statement::CreateView(create) if create.temporary => {
            create.temporary = false;
            &mut create.name
        }
        _ => return,
    };
    in_session(name);
}

/// `name` in the session's `datafusion.public`, when it is unqualified.
fn in_session(name: &mut ObjectName) {
    if name.0.len() == 1 {
        let table = name.0.remove(0);
        *name = ObjectName(vec![
            ObjectNamePart::Identifier(Ident::new(SESSION_CATALOG)),
            ObjectNamePart::Identifier(Ident::new(SESSION_SCHEMA)),
            table,
        ]);
    }
}

/// The stored views `query` reads directly (`quarry.views.x`).
fn views_read_by(query: &ast::Query) -> Vec<String> {
    let mut read = Vec::new();
    let _ = visit_relations(query, |name| {
        let name = parts(name);
        if let [catalog, schema, view] = name.as_slice()
            && catalog == SYSTEM_CATALOG
            && schema == USER_VIEWS_SCHEMA
        {
            read.push(view.clone());
        }
        ControlFlow::<()>::Continue(())
    });
    read
}

/// Refuses a view whose query reads the session's own tables (gone with the session) or,
/// through other stored views, the view itself.
pub fn check_definition(
    name: &str,
    query: &Statement,
    snapshot: &Snapshot,
    default: &DefaultSchema,
    is_table_function: impl Fn(&str) -> bool,
) -> Result<()> {
    let (references, _ctes) = resolve_table_references(query, true)?;
    let session_table = references.into_iter().find_map(|reference| {
        if matches!(&reference, TableReference::Bare { table } if is_table_function(table)) {
            return None;
        }
        let resolved = reference.resolve(&default.catalog, &default.schema);
        (resolved.catalog.as_ref() == SESSION_CATALOG).then(|| resolved.to_string())
    });
    if let Some(table) = session_table {
        return Err(Error::Usage(format!(
            "view '{name}' would read {table}, which lasts only for this session; make it a \
             CREATE TEMPORARY VIEW, or read a connection's table"
        )));
    }
    let Statement::Statement(inner) = query else {
        return Ok(());
    };
    let ast::Statement::Query(query) = inner.as_ref() else {
        return Ok(());
    };
    let mut pending = views_read_by(query);
    let mut seen = BTreeSet::new();
    while let Some(view) = pending.pop() {
        if view == name {
            return Err(Error::Usage(format!(
                "view '{name}' would read itself (through {}); a view cannot be defined by itself",
                seen.iter().cloned().collect::<Vec<_>>().join(", ")
            )));
        }
        if !seen.insert(view.clone()) {
            continue;
        }
        if let Some(record) = snapshot.views.get(&view)
            && let Ok(inner) = parse_query(&record.definition)
        {
            pending.extend(views_read_by(&inner));
        }
    }
    Ok(())
}

/// The query as a statement, for planning and for [`resolve_unqualified`].
pub fn query_statement(query: ast::Query) -> Statement {
    Statement::Statement(Box::new(ast::Statement::Query(Box::new(query))))
}

/// The query of `statement`, made by [`query_statement`].
pub fn query_of(statement: Statement) -> Option<ast::Query> {
    match statement {
        Statement::Statement(inner) => match *inner {
            ast::Statement::Query(query) => Some(*query),
            _ => None,
        },
        _ => None,
    }
}

/// `quarry.views`: the views made with `CREATE VIEW`, from the snapshot. Each is planned
/// when a statement names it, in a session of its own with the default schema it was made
/// in.
#[derive(Debug)]
pub(crate) struct StoredViews {
    pub(crate) connections: Arc<Connections>,
    pub(crate) runtime: Arc<RuntimeEnv>,
}

#[async_trait]
impl SchemaProvider for StoredViews {
    fn table_names(&self) -> Vec<String> {
        self.connections.snapshot().views.keys().cloned().collect()
    }

    async fn table(&self, name: &str) -> datafusion::error::Result<Option<Arc<dyn TableProvider>>> {
        let Some(view) = self.connections.snapshot().views.get(name).cloned() else {
            return Ok(None);
        };
        // Stored definitions name views and session-free tables explicitly (see
        // `sql::views`); the rest resolves in the default schema the view was made in.
        let context = super::context::new(
            &self.connections,
            &self.runtime,
            &super::context::Placement::default(),
        );
        crate::sql::default_schema::DefaultSchema {
            catalog: view.default_catalog.clone(),
            schema: view.default_schema.clone(),
        }
        .apply(&mut context.state_ref().write());
        let no_longer_plans = |e: datafusion::error::DataFusionError| {
            datafusion::error::DataFusionError::Plan(format!(
                "view {SYSTEM_CATALOG}.{USER_VIEWS_SCHEMA}.{name} no longer plans: {e}. \
                 Recreate it with CREATE OR REPLACE VIEW, or DROP VIEW it"
            ))
        };
        let mut statement = datafusion::sql::parser::DFParser::parse_sql(&view.definition)
            .map_err(no_longer_plans)?
            .pop_front()
            .ok_or_else(|| {
                no_longer_plans(datafusion::error::DataFusionError::Plan("empty".into()))
            })?;
        super::system_catalog::route_views(&mut statement);
        let state = context.state();
        super::source_query::describe_calls(&state, &statement)
            .await
            .map_err(|e| no_longer_plans(super::deferred::external(e)))?;
        let plan = state
            .statement_to_plan(statement)
            .await
            .map_err(no_longer_plans)?;
        Ok(Some(Arc::new(datafusion::datasource::ViewTable::new(
            plan,
            Some(view.definition.clone()),
        ))))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.connections.snapshot().views.contains_key(name)
    }
}
