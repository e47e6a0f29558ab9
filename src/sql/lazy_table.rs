//! A source table as DataFusion sees it. Its schema comes from the snapshot; planning reads
//! only the store. A cached table whose file is in the memory tier is scanned from its
//! decoded batches; otherwise from its Parquet file (projection, filter and limit pushed into
//! the Parquet reader, statistics from the file) under a lease that keeps the file until the
//! query is done, and the file starts loading into the memory tier for the next statement.
//! An uncached table plans a scan that fetches the table when it executes, then reads the
//! new file.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::Session;
use datafusion::common::config::ConfigOptions;
use datafusion::common::project_schema;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::execution::context::SessionState;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::execution_plan::CardinalityEffect;
use datafusion::physical_plan::execution_plan::{ChildrenPropertiesMode, ReplaceChildrenOptions};
use datafusion::physical_plan::filter_pushdown::{FilterDescription, FilterPushdownPhase};
use datafusion::physical_plan::statistics::{ChildStats, StatisticsArgs};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, SendableRecordBatchStream,
    Statistics, execute_stream,
};
use futures::StreamExt;

use super::deferred::{DeferredExec, StreamFactory, external};
use super::memory_scan;
use crate::cache::CacheLease;
use crate::cache::FetchMode;
use crate::cache::Freshness;
use crate::connection::Connection;
use crate::connections::Connections;
use crate::connections::snapshot::SnapshotTable;
use crate::events::TableName;

/// A discovered table, fetched on first read.
#[derive(Debug)]
pub struct LazyTable {
    connection: Connection,
    table: Arc<SnapshotTable>,
    connections: Arc<Connections>,
}

impl LazyTable {
    /// The table `table` of `connection`.
    pub(crate) fn new(
        connection: Connection,
        table: Arc<SnapshotTable>,
        connections: Arc<Connections>,
    ) -> Self {
        LazyTable {
            connection,
            table,
            connections,
        }
    }

    /// Its stored record: the source's row estimate and constraints.
    pub(crate) fn record(&self) -> &crate::table::TableRecord {
        &self.table.record
    }

    /// Its current cache version as a plain Parquet table of the cache's files, and the
    /// lease that keeps them: what a Ballista cluster reads. The table is fetched first if it
    /// is not cached, and refreshed first if it is older than `max_age` (unless its
    /// `on_stale` serves the old copy), as a local scan would.
    #[cfg(feature = "distributed")]
    pub(crate) async fn cached_files(
        &self,
    ) -> Result<(
        datafusion::datasource::listing::ListingTable,
        Arc<CacheLease>,
    )> {
        let engine = &self.connections;
        let record = &self.table.record;
        let freshness = engine
            .cache()
            .fresh_entry(&self.connection, record)
            .await
            .map_err(external)?;
        let serve_stale = record.refresh_settings(&self.connection.config).on_stale
            == Some(crate::refresh::OnStale::Serve);
        let entry = match freshness {
            Freshness::Fresh(entry) => entry,
            Freshness::Stale(entry) if serve_stale => {
                engine.refresh_in_background(&self.connection, record);
                entry
            }
            Freshness::Stale(_) => engine
                .fetch_table(&self.connection, record, FetchMode::Refresh)
                .await
                .map_err(external)?,
            Freshness::Missing => engine
                .fetch_table(&self.connection, record, FetchMode::Ensure)
                .await
                .map_err(external)?,
        };
        let lease = Arc::new(engine.cache().lease(&entry));
        Ok((lease.table(self.schema())?, lease))
    }
}

/// Plans a scan of one cache version's files with everything DataFusion can push into it.
async fn parquet_scan(
    state: &dyn Session,
    lease: &CacheLease,
    schema: SchemaRef,
    projection: Option<&Vec<usize>>,
    filters: &[Expr],
    limit: Option<usize>,
) -> Result<Arc<dyn ExecutionPlan>> {
    // The session's statistics cache, as `register_parquet` tables have: without it every
    // statement re-reads the footer statistics of every file it scans.
    lease
        .table(schema)?
        .with_cache(state.runtime_env().cache_manager.get_file_statistic_cache())
        .scan(state, projection, filters, limit)
        .await
}

#[async_trait]
impl TableProvider for LazyTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.table.schema)
    }

    fn table_type(&self) -> TableType {
        table_type(&self.table)
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        // Parquet pruning skips row groups and pages; rows still need the filter.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let engine = &self.connections;
        let record = &self.table.record;
        // Before the store is read: an entry published after this is one the read missed.
        let missing_since = std::time::Instant::now();
        let freshness = engine
            .cache()
            .fresh_entry(&self.connection, record)
            .await
            .map_err(external)?;
        let settings = record.refresh_settings(&self.connection.config);
        let serve_stale = settings.on_stale == Some(crate::refresh::OnStale::Serve);
        let (stale, readable) = match freshness {
            Freshness::Fresh(entry) => (false, Some(entry)),
            Freshness::Stale(entry) if serve_stale => {
                // Answered from the stale copy now; the next statement reads the new one.
                engine.refresh_in_background(&self.connection, record);
                (false, Some(entry))
            }
            Freshness::Stale(_) => (true, None),
            Freshness::Missing => (false, None),
        };
        if let Some(entry) = readable {
            let lease = Arc::new(engine.cache().lease(&entry));
            let memory = engine.cache().memory();
            if let Some(resident) = memory.get_version(&lease)
                && resident
                    .batches
                    .first()
                    .is_none_or(|b| b.schema() == self.schema())
            {
                // Decoded batches outlive the file: no lease needed.
                return memory_scan::plan(state, resident, self.schema(), projection, limit);
            }
            let name = TableName::of(&self.connection, &self.table.record);
            memory.load_in_background(&lease, self.schema(), name);
            let plan =
                parquet_scan(state, &lease, self.schema(), projection, filters, limit).await?;
            return Ok(Arc::new(LeaseExec::new(plan, lease)));
        }
        let state = state
            .as_any()
            .downcast_ref::<SessionState>()
            .cloned()
            .ok_or_else(|| DataFusionError::Internal("scan without a SessionState".into()))?;
        let projected = project_schema(&self.table.schema, projection)?;
        let label = format!(
            "FetchExec: {}.{}.{} ({}; fetched when run)",
            self.connection.name,
            record.schema,
            record.name,
            if stale {
                "older than max_age"
            } else {
                "not cached"
            }
        );
        let (connection, record, connections) = (
            self.connection.clone(),
            record.clone(),
            Arc::clone(&self.connections),
        );
        let (schema, projection, filters) = (self.schema(), projection.cloned(), filters.to_vec());
        let factory: StreamFactory = Arc::new(move |context| {
            let (connection, record, engine, state) = (
                connection.clone(),
                record.clone(),
                Arc::clone(&connections),
                state.clone(),
            );
            let (schema, projection, filters) =
                (schema.clone(), projection.clone(), filters.clone());
            Box::pin(async move {
                // Planning saw no fresh entry: fetch without reading the store again.
                let mode = if stale {
                    FetchMode::Refresh
                } else {
                    FetchMode::Fill { missing_since }
                };
                let entry = engine
                    .fetch_table(&connection, &record, mode)
                    .await
                    .map_err(external)?;
                let lease = Arc::new(engine.cache().lease(&entry));
                let plan =
                    parquet_scan(&state, &lease, schema, projection.as_ref(), &filters, limit)
                        .await?;
                let plan: Arc<dyn ExecutionPlan> = Arc::new(LeaseExec::new(plan, lease));
                execute_stream(plan, context)
            })
        });
        Ok(Arc::new(DeferredExec::new(label, projected, factory)))
    }
}

/// Keeps a cache file's lease for as long as the scan plan above it exists.
pub(crate) struct LeaseExec {
    input: Arc<dyn ExecutionPlan>,
    lease: Arc<CacheLease>,
}

impl LeaseExec {
    /// `input`, holding `lease` until it and its streams are dropped.
    pub(crate) fn new(input: Arc<dyn ExecutionPlan>, lease: Arc<CacheLease>) -> Self {
        LeaseExec { input, lease }
    }
}

impl fmt::Debug for LeaseExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeaseExec")
            .field("files", &self.lease.paths())
            .finish()
    }
}

impl DisplayAs for LeaseExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "CacheLeaseExec")
    }
}

impl ExecutionPlan for LeaseExec {
    fn name(&self) -> &str {
        "CacheLeaseExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return Err(DataFusionError::Internal(
                "CacheLeaseExec has one child".into(),
            ));
        }
        Ok(Arc::new(LeaseExec::new(
            children.swap_remove(0),
            Arc::clone(&self.lease),
        )))
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(
            children,
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
        )
    }

    fn with_new_children_and_same_properties(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(
            children,
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Keep),
        )
    }

    // A pass-through node: filters (including the dynamic ones joins and TopK create at
    // run time) and limits go on down to the Parquet scan.
    fn gather_filters_for_pushdown(
        &self,
        _phase: FilterPushdownPhase,
        parent_filters: Vec<Arc<dyn PhysicalExpr>>,
        _config: &ConfigOptions,
    ) -> Result<FilterDescription> {
        FilterDescription::from_children(parent_filters, &self.children())
    }

    fn supports_limit_pushdown(&self) -> bool {
        true
    }

    // The scan's statistics (row counts, column ranges from the Parquet footers) are the
    // table's: without them the optimizer cannot pick a join's build side or order.
    fn child_stats_requests(&self, partition: Option<usize>) -> Vec<ChildStats> {
        vec![ChildStats::At(partition)]
    }

    fn statistics_from_inputs(
        &self,
        input_stats: &[Arc<Statistics>],
        _args: &StatisticsArgs,
    ) -> Result<Arc<Statistics>> {
        Ok(Arc::clone(&input_stats[0]))
    }

    fn cardinality_effect(&self) -> CardinalityEffect {
        CardinalityEffect::Equal
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let stream = self.input.execute(partition, context)?;
        let lease = Arc::clone(&self.lease);
        let schema = stream.schema();
        // The stream owns a lease too: the file stays until the last batch is read.
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            schema,
            stream.map(move |batch| {
                let _ = &lease;
                batch
            }),
        )))
    }
}

/// How DataFusion sees a discovered table: a source view is a view, anything else a table.
pub(in crate::sql) fn table_type(table: &SnapshotTable) -> TableType {
    if table.record.table_type == "view" {
        TableType::View
    } else {
        TableType::Base
    }
}
