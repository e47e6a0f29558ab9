//! Runs pushed-down statements: a connection as datafusion-federation's SQL executor, and
//! the plan node that sends a federated sub-plan to it and starts the background copies
//! `auto` asks for.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::stream::RecordBatchReceiverStreamBuilder;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, SendableRecordBatchStream,
};
use datafusion::sql::unparser::dialect::{Dialect, MySqlDialect, PostgreSqlDialect, SqliteDialect};
use datafusion_federation::schema_cast::SchemaCastScanExec;
use datafusion_federation::sql::{LogicalOptimizer, SQLExecutor, VirtualExecutionPlan};

use super::live_table::LiveTable;
use super::rules::Rules;
use crate::connection::Connection;
use crate::connections::Connections;
use crate::source::{QueryRequest, SqlDialect};
use crate::sql::deferred::external;

/// One connection as the federation crate's executor of SQL statements.
pub(super) struct SourceExecutor {
    pub connection: Connection,
    pub connections: Arc<Connections>,
    pub dialect: SqlDialect,
}

impl SourceExecutor {
    /// The executor of `connection`'s statements.
    pub fn new(connection: Connection, connections: Arc<Connections>) -> Self {
        let dialect = SqlDialect::of(connection.source_type);
        SourceExecutor {
            connection,
            connections,
            dialect,
        }
    }

    /// Streams the rows of `sql`, which must have `schema`, from one pooled session.
    pub fn stream(&self, sql: String, schema: SchemaRef) -> SendableRecordBatchStream {
        remote_rows(&self.connections, &self.connection, sql, schema)
    }
}

/// Streams the rows of `sql`, a statement in `connection`'s dialect that must have `schema`,
/// from one pooled session of its source.
pub(crate) fn remote_rows(
    connections: &Arc<Connections>,
    connection: &Connection,
    sql: String,
    schema: SchemaRef,
) -> SendableRecordBatchStream {
    let request = QueryRequest {
        connection: connection.name.to_string(),
        sql,
        arrow_schema: Arc::clone(&schema),
    };
    let (connection, connections) = (connection.clone(), Arc::clone(connections));
    let mut builder = RecordBatchReceiverStreamBuilder::new(schema, 2);
    let tx = builder.tx();
    // Dropping the stream aborts the task, which drops the source's session mid-query.
    builder.spawn(async move {
        let (sink, mut batches) = tokio::sync::mpsc::channel(2);
        let run = connections.query(&connection, &request, sink);
        let forward = async {
            while let Some(batch) = batches.recv().await {
                if tx.send(Ok(batch)).await.is_err() {
                    break;
                }
            }
        };
        let (result, ()) = tokio::join!(run, forward);
        result.map_err(external)
    });
    builder.build()
}

impl SqlDialect {
    /// The unparser dialect that writes this dialect's SQL.
    fn unparser(self) -> Arc<dyn Dialect> {
        match self {
            SqlDialect::Postgres => Arc::new(PostgreSqlDialect {}),
            SqlDialect::Mysql => Arc::new(MySqlDialect {}),
            SqlDialect::Sqlite => Arc::new(SqliteDialect {}),
        }
    }
}

#[async_trait]
impl SQLExecutor for SourceExecutor {
    fn name(&self) -> &str {
        self.connection.name.as_str()
    }

    fn compute_context(&self) -> Option<String> {
        Some(self.connection.id.to_string())
    }

    fn dialect(&self) -> Arc<dyn Dialect> {
        self.dialect.unparser()
    }

    fn logical_optimizer(&self) -> Option<LogicalOptimizer> {
        let rules = Rules {
            dialect: self.dialect,
        };
        Some(Box::new(move |plan| super::split(plan, rules)))
    }

    fn execute(
        &self,
        query: &str,
        schema: SchemaRef,
        _filters: &[Arc<dyn PhysicalExpr>],
    ) -> Result<SendableRecordBatchStream> {
        Ok(self.stream(query.to_owned(), schema))
    }

    async fn table_names(&self) -> Result<Vec<String>> {
        Err(DataFusionError::NotImplemented(
            "tables come from Quarry's discovery".into(),
        ))
    }

    async fn get_table_schema(&self, _table_name: &str) -> Result<SchemaRef> {
        Err(DataFusionError::NotImplemented(
            "schemas come from Quarry's discovery".into(),
        ))
    }
}

/// Replaces the federation crate's cast above each pushed-down statement (Quarry's readers
/// produce the planned schema exactly, or fail) with [`RemoteScanExec`].
pub(super) fn adopt_remote_scans(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    plan.transform_up(|node| {
        if node.downcast_ref::<SchemaCastScanExec>().is_none() {
            return Ok(Transformed::no(node));
        }
        let child = Arc::clone(node.children()[0]);
        // DataFusion's physical optimizer may have wrapped the leaf (`CooperativeExec`).
        let mut leaf = &child;
        while leaf.downcast_ref::<VirtualExecutionPlan>().is_none() && leaf.children().len() == 1 {
            leaf = leaf.children()[0];
        }
        let Some(remote) = leaf.downcast_ref::<VirtualExecutionPlan>() else {
            return Ok(Transformed::no(node));
        };
        if remote.schema().fields() != node.schema().fields() {
            return Err(DataFusionError::Plan(format!(
                "the statement pushed down to {} would return {}, but the query planned {}",
                remote.executor().name(),
                remote.schema(),
                node.schema()
            )));
        }
        let tables = super::live_tables(remote);
        Ok(Transformed::yes(Arc::new(RemoteScanExec {
            input: child,
            tables,
        }) as Arc<dyn ExecutionPlan>))
    })
    .map(|t| t.data)
}

/// A statement sent to a source; running it also starts the background copies `auto`
/// chose for the tables it reads.
pub(super) struct RemoteScanExec {
    input: Arc<dyn ExecutionPlan>,
    tables: Vec<Arc<LiveTable>>,
}

impl fmt::Debug for RemoteScanExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteScanExec").finish_non_exhaustive()
    }
}

impl DisplayAs for RemoteScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "RemoteScanExec: pushed down")?;
        let caching: Vec<String> = self
            .tables
            .iter()
            .filter(|t| t.caches_in_background())
            .map(|t| t.label())
            .collect();
        if !caching.is_empty() {
            write!(f, ", caching {} in the background", caching.join(", "))?;
        }
        Ok(())
    }
}

impl ExecutionPlan for RemoteScanExec {
    fn name(&self) -> &str {
        "RemoteScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
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
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return Err(DataFusionError::Internal(
                "RemoteScanExec has one child".into(),
            ));
        }
        Ok(Arc::new(RemoteScanExec {
            input: children.swap_remove(0),
            tables: self.tables.clone(),
        }))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        for table in &self.tables {
            table.start_background_copy();
        }
        self.input.execute(partition, context)
    }
}
