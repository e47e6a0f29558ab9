//! A table read live: a datafusion-federation SQL table named as the source names it, and,
//! for plans the federation rule leaves alone, a plain scan that reads the columns it needs
//! (with any limit) from the source.

use std::any::Any;
use std::fmt;
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::catalog::Session;
use datafusion::common::TableReference;
use datafusion::common::project_schema;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::Result;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
    SendableRecordBatchStream,
};
use datafusion::sql::sqlparser::ast::{Ident, ObjectNamePart, visit_relations_mut};
use datafusion_federation::FederatedTableProviderAdaptor;
use datafusion_federation::sql::{SQLFederationProvider, SQLTable, SQLTableSource};
use futures::StreamExt;

use super::executor::SourceExecutor;
use crate::connection::Connection;
use crate::connections::Connections;
use crate::connections::snapshot::SnapshotTable;
use crate::source::SqlDialect;

/// `table` of `connection` read live; `copy_in_background` when `auto` also wants a copy.
pub(crate) fn live_table(
    connection: &Connection,
    table: &Arc<SnapshotTable>,
    connections: &Arc<Connections>,
    copy_in_background: bool,
) -> Arc<dyn TableProvider> {
    let executor = Arc::new(SourceExecutor::new(
        connection.clone(),
        Arc::clone(connections),
    ));
    let live = LiveTable {
        connection: connection.clone(),
        table: Arc::clone(table),
        connections: Arc::clone(connections),
        copy_in_background,
        scan_name: Arc::default(),
    };
    let provider = Arc::new(SQLFederationProvider::new(
        Arc::clone(&executor) as Arc<dyn datafusion_federation::sql::SQLExecutor>
    ));
    let source = Arc::new(SQLTableSource::new_with_table(
        provider,
        Arc::new(live.clone()),
    ));
    let scan = Arc::new(LiveScan { live, executor });
    Arc::new(FederatedTableProviderAdaptor::new_with_provider(
        source, scan,
    ))
}

/// A live table as the federation crate sees it.
#[derive(Clone)]
pub(super) struct LiveTable {
    connection: Connection,
    table: Arc<SnapshotTable>,
    connections: Arc<Connections>,
    copy_in_background: bool,
    /// The name the plan's scans give the table, once the split has seen them.
    scan_name: Arc<Mutex<Option<TableReference>>>,
}

impl fmt::Debug for LiveTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LiveTable({})", self.label())
    }
}

impl LiveTable {
    /// `connection.schema.table`.
    pub fn label(&self) -> String {
        format!(
            "{}.{}.{}",
            self.connection.name, self.table.record.schema, self.table.record.name
        )
    }

    /// Whether reading it starts a copy into the cache.
    pub fn caches_in_background(&self) -> bool {
        self.copy_in_background
    }

    /// Starts the background copy `auto` chose, unless one is running or done.
    pub fn start_background_copy(&self) {
        if self.copy_in_background {
            self.connections
                .cache_in_background(&self.connection, &self.table.record);
        }
    }

    /// Records the name `scan` reads the table by (see `SQLTable::table_reference`).
    pub fn named_by(&self, scan: &TableReference) {
        *self.scan_name.lock().unwrap_or_else(|e| e.into_inner()) = Some(scan.clone());
    }

    fn scan_name(&self) -> Option<TableReference> {
        self.scan_name
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn remote_name(&self) -> TableReference {
        TableReference::partial(
            self.table.record.schema.as_str(),
            self.table.record.name.as_str(),
        )
    }
}

impl SQLTable for LiveTable {
    fn as_any(&self) -> &dyn Any {
        self
    }

    /// The name the plan already uses, so the federation crate renames nothing: its renaming
    /// misses the names DataFusion gives coerced expressions (`sum(x * (1 - y))` of TPC-H Q3),
    /// which then no longer match the columns that refer to them. `ast_analyzer` puts the
    /// source's own name in the statement instead.
    fn table_reference(&self) -> TableReference {
        self.scan_name().unwrap_or_else(|| self.remote_name())
    }

    fn ast_analyzer(&self) -> Option<datafusion_federation::sql::AstAnalyzer> {
        let scan = self.scan_name()?;
        let remote = self.remote_name();
        if scan == remote {
            return None;
        }
        let quote = match SqlDialect::of(self.connection.source_type) {
            SqlDialect::Mysql => '`',
            SqlDialect::Postgres | SqlDialect::Sqlite => '"',
        };
        let scan: Vec<String> = scan.to_vec();
        let remote: Vec<ObjectNamePart> = remote
            .to_vec()
            .into_iter()
            .map(|part| ObjectNamePart::Identifier(Ident::with_quote(quote, part)))
            .collect();
        Some(Box::new(move |mut statement| {
            let _ = visit_relations_mut(&mut statement, |name| {
                let parts: Vec<String> = name
                    .0
                    .iter()
                    .map(|part| part.as_ident().map_or(String::new(), |i| i.value.clone()))
                    .collect();
                if parts == scan {
                    name.0 = remote.clone();
                }
                ControlFlow::<()>::Continue(())
            });
            Ok(statement)
        }))
    }

    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.table.schema)
    }

    /// Normalizes again just before unparsing: DataFusion's rules that ran after the split
    /// (limit and projection pushdown) may have made shapes the unparser mistranslates.
    fn logical_optimizer(&self) -> Option<datafusion_federation::sql::LogicalOptimizer> {
        Some(Box::new(super::normalize))
    }
}

impl SqlDialect {
    /// `name` quoted as an identifier of this dialect.
    pub(super) fn quote(self, name: &str) -> String {
        match self {
            SqlDialect::Mysql => format!("`{}`", name.replace('`', "``")),
            SqlDialect::Postgres | SqlDialect::Sqlite => {
                format!("\"{}\"", name.replace('"', "\"\""))
            }
        }
    }
}

/// The scan of a live table in a plan the federation rule did not place: the needed columns
/// and the limit go to the source, the filters stay above.
struct LiveScan {
    live: LiveTable,
    executor: Arc<SourceExecutor>,
}

impl fmt::Debug for LiveScan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LiveScan({})", self.live.label())
    }
}

#[async_trait]
impl TableProvider for LiveScan {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.live.table.schema)
    }

    fn table_type(&self) -> TableType {
        crate::sql::lazy_table::table_type(&self.live.table)
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(vec![
            TableProviderFilterPushDown::Unsupported;
            filters.len()
        ])
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let dialect = self.executor.dialect;
        let projected = project_schema(&self.live.table.schema, projection)?;
        let columns: Vec<String> = projected
            .fields()
            .iter()
            .map(|f| dialect.quote(f.name()))
            .collect();
        let record = &self.live.table.record;
        let select = if columns.is_empty() {
            "1".to_owned()
        } else {
            columns.join(", ")
        };
        let mut sql = format!(
            "SELECT {select} FROM {}.{}",
            dialect.quote(&record.schema),
            dialect.quote(&record.name)
        );
        if let Some(limit) = limit {
            sql.push_str(&format!(" LIMIT {limit}"));
        }
        Ok(Arc::new(LiveScanExec::new(
            self.live.clone(),
            Arc::clone(&self.executor),
            sql,
            projected,
        )))
    }
}

/// Reads a live table's columns with one statement.
struct LiveScanExec {
    live: LiveTable,
    executor: Arc<SourceExecutor>,
    sql: String,
    properties: Arc<PlanProperties>,
}

impl LiveScanExec {
    fn new(live: LiveTable, executor: Arc<SourceExecutor>, sql: String, schema: SchemaRef) -> Self {
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(schema),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        LiveScanExec {
            live,
            executor,
            sql,
            properties,
        }
    }
}

impl fmt::Debug for LiveScanExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LiveScanExec({})", self.sql)
    }
}

impl DisplayAs for LiveScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "LiveScanExec: {} sql={}",
            self.executor.connection.name, self.sql
        )
    }
}

impl ExecutionPlan for LiveScanExec {
    fn name(&self) -> &str {
        "LiveScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(
            &Arc<dyn PhysicalExpr>,
        ) -> Result<datafusion::common::tree_node::TreeNodeRecursion>,
    ) -> Result<datafusion::common::tree_node::TreeNodeRecursion> {
        Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn execute(
        &self,
        _partition: usize,
        _context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        self.live.start_background_copy();
        let schema = self.schema();
        if !schema.fields().is_empty() {
            return Ok(self.executor.stream(self.sql.clone(), schema));
        }
        // No columns needed (a count): read a constant per row and keep only the count.
        let one = Arc::new(Schema::new(vec![Field::new("one", DataType::Int64, true)]));
        let rows = self.executor.stream(self.sql.clone(), one);
        let empty = Arc::clone(&schema);
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            schema,
            rows.map(move |batch| {
                let batch = batch?;
                Ok(RecordBatch::try_new_with_options(
                    Arc::clone(&empty),
                    vec![],
                    &RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
                )?)
            }),
        )))
    }
}
