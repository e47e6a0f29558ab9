//! The `quarry` catalog: `quarry.information_schema.connections`, `.tables` (with cache
//! state) and `.columns` (also reachable as `quarry.catalog.*`), read from the metadata store when a query scans them. No config
//! and no secret is ever shown.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Int64Array, StringArray, TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::{CatalogProvider, SchemaProvider, Session};
use datafusion::datasource::{MemTable, TableProvider, TableType};
use datafusion::error::Result;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;

use datafusion::execution::runtime_env::RuntimeEnv;

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
            && VIEWS.contains(&parts[2].as_str())
        {
            name.0[1] = ObjectNamePart::Identifier(Ident::new(VIEWS_SCHEMA));
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
}
const VIEWS: [&str; 3] = ["connections", "tables", "columns"];

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
            VIEWS_SCHEMA => Some(Arc::new(SystemSchema {
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

#[derive(Debug)]
struct SystemSchema {
    connections: Arc<Connections>,
}

#[async_trait]
impl SchemaProvider for SystemSchema {
    fn table_names(&self) -> Vec<String> {
        VIEWS.iter().map(|v| v.to_string()).collect()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        Ok(VIEWS.iter().find(|v| **v == name).map(|view| {
            Arc::new(SystemView {
                view,
                connections: Arc::clone(&self.connections),
            }) as Arc<dyn TableProvider>
        }))
    }

    fn table_exist(&self, name: &str) -> bool {
        VIEWS.contains(&name)
    }
}

/// `quarry.views`: the views made with `CREATE VIEW`, from the snapshot. Each is planned
/// when a statement names it, in a session of its own with the default schema it was made
/// in.
#[derive(Debug)]
struct StoredViews {
    connections: Arc<Connections>,
    runtime: Arc<RuntimeEnv>,
}

#[async_trait]
impl SchemaProvider for StoredViews {
    fn table_names(&self) -> Vec<String> {
        self.connections.snapshot().views.keys().cloned().collect()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        let Some(view) = self.connections.snapshot().views.get(name).cloned() else {
            return Ok(None);
        };
        // Stored definitions name views and session-free tables explicitly (see
        // `sql::views`); the rest resolves in the default schema the view was made in.
        let context = super::context::new(&self.connections, &self.runtime);
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
        route_views(&mut statement);
        let plan = context
            .state()
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

struct SystemView {
    view: &'static str,
    connections: Arc<Connections>,
}

impl fmt::Debug for SystemView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "quarry.information_schema.{}", self.view)
    }
}

fn utc() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

fn schema_of(view: &str) -> SchemaRef {
    let f = |name: &str, t: DataType| Field::new(name, t, true);
    Arc::new(Schema::new(match view {
        "connections" => vec![
            f("id", DataType::Utf8),
            f("name", DataType::Utf8),
            f("source_type", DataType::Utf8),
            f("created_at", utc()),
            f("updated_at", utc()),
            f("last_tested_at", utc()),
            f("test_status", DataType::Utf8),
            f("test_latency_ms", DataType::Int64),
            f("test_error", DataType::Utf8),
        ],
        "tables" => vec![
            f("connection_id", DataType::Utf8),
            f("connection_name", DataType::Utf8),
            f("table_schema", DataType::Utf8),
            f("table_name", DataType::Utf8),
            f("table_type", DataType::Utf8),
            f("row_estimate", DataType::Int64),
            f("cached", DataType::Boolean),
            f("cache_rows", DataType::Int64),
            f("cache_bytes", DataType::Int64),
            f("fetched_at", utc()),
            f("cache_version", DataType::Int64),
            f("fetch_count", DataType::Int64),
            f("memory_bytes", DataType::Int64),
        ],
        _ => vec![
            f("connection_name", DataType::Utf8),
            f("table_schema", DataType::Utf8),
            f("table_name", DataType::Utf8),
            f("column_name", DataType::Utf8),
            f("ordinal_position", DataType::Int64),
            f("source_type", DataType::Utf8),
            f("arrow_type", DataType::Utf8),
            f("is_nullable", DataType::Boolean),
        ],
    }))
}

fn strings<I: IntoIterator<Item = Option<String>>>(values: I) -> ArrayRef {
    Arc::new(StringArray::from_iter(values))
}

fn ints<I: IntoIterator<Item = Option<i64>>>(values: I) -> ArrayRef {
    Arc::new(Int64Array::from_iter(values))
}

fn times<I: IntoIterator<Item = Option<DateTime<Utc>>>>(values: I) -> ArrayRef {
    Arc::new(
        TimestampMicrosecondArray::from_iter(
            values.into_iter().map(|t| t.map(|t| t.timestamp_micros())),
        )
        .with_timezone("UTC"),
    )
}

/// The rows of `view`, read from the store now.
async fn rows(engine: &Connections, view: &str) -> crate::Result<Vec<ArrayRef>> {
    let connections = engine.connections().await?;
    Ok(match view {
        "connections" => vec![
            strings(connections.iter().map(|c| Some(c.id.to_string()))),
            strings(connections.iter().map(|c| Some(c.name.to_string()))),
            strings(connections.iter().map(|c| Some(c.source_type.to_string()))),
            times(connections.iter().map(|c| Some(c.created_at))),
            times(connections.iter().map(|c| Some(c.updated_at))),
            times(connections.iter().map(|c| c.status.last_tested_at)),
            strings(connections.iter().map(|c| c.status.test_status.clone())),
            ints(connections.iter().map(|c| c.status.test_latency_ms)),
            strings(connections.iter().map(|c| c.status.test_error.clone())),
        ],
        "tables" => {
            let mut cols: [Vec<Option<String>>; 5] = Default::default();
            let (
                mut estimate,
                mut cached,
                mut crow,
                mut cbytes,
                mut fetched,
                mut version,
                mut count,
                mut memory,
            ) = (
                vec![],
                vec![],
                vec![],
                vec![],
                vec![],
                vec![],
                vec![],
                vec![],
            );
            let cache = engine.cache();
            for c in &connections {
                let entries = engine.store().cache_entries(&c.id).await?;
                for t in engine.store().tables(&c.id).await? {
                    let entry = entries.iter().rev().find(|e| {
                        e.is_current && e.table_schema == t.schema && e.table_name == t.name
                    });
                    cols[0].push(Some(c.id.to_string()));
                    cols[1].push(Some(c.name.to_string()));
                    cols[2].push(Some(t.schema.clone()));
                    cols[3].push(Some(t.name.clone()));
                    cols[4].push(Some(t.table_type.clone()));
                    estimate.push(t.row_estimate);
                    cached.push(Some(entry.is_some()));
                    crow.push(entry.map(|e| e.row_count));
                    cbytes.push(entry.map(|e| e.byte_size));
                    fetched.push(entry.map(|e| e.fetched_at));
                    version.push(entry.map(|e| e.version));
                    count.push(Some(t.fetch_count));
                    memory.push(entry.map(|e| {
                        let bytes = cache.memory().resident_bytes(&cache.absolute(e));
                        bytes.unwrap_or(0) as i64
                    }));
                }
            }
            let [id, name, schema, table, kind] = cols;
            vec![
                strings(id),
                strings(name),
                strings(schema),
                strings(table),
                strings(kind),
                ints(estimate),
                Arc::new(BooleanArray::from(cached)),
                ints(crow),
                ints(cbytes),
                times(fetched),
                ints(version),
                ints(count),
                ints(memory),
            ]
        }
        _ => {
            let mut text: [Vec<Option<String>>; 6] = Default::default();
            let (mut position, mut nullable) = (vec![], vec![]);
            for c in &connections {
                for t in engine.store().tables(&c.id).await? {
                    for col in &t.columns {
                        text[0].push(Some(c.name.to_string()));
                        text[1].push(Some(t.schema.clone()));
                        text[2].push(Some(t.name.clone()));
                        text[3].push(Some(col.name.clone()));
                        text[4].push(Some(col.source_type.clone()));
                        text[5].push(Some(col.arrow_type.clone()));
                        position.push(Some(col.ordinal_position));
                        nullable.push(Some(col.is_nullable));
                    }
                }
            }
            let [conn, schema, table, column, source, arrow] = text;
            vec![
                strings(conn),
                strings(schema),
                strings(table),
                strings(column),
                ints(position),
                strings(source),
                strings(arrow),
                Arc::new(BooleanArray::from(nullable)),
            ]
        }
    })
}

#[async_trait]
impl TableProvider for SystemView {
    fn schema(&self) -> SchemaRef {
        schema_of(self.view)
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let columns = rows(&self.connections, self.view)
            .await
            .map_err(super::deferred::external)?;
        let batch = RecordBatch::try_new(self.schema(), columns)?;
        MemTable::try_new(self.schema(), vec![vec![batch]])?
            .scan(state, projection, filters, limit)
            .await
    }
}
