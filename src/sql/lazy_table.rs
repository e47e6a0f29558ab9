//! A source table as DataFusion sees it. Its schema comes from the snapshot; planning reads
//! only the store. A cached table is scanned from its Parquet file (projection, filter and
//! limit pushed into the Parquet reader, statistics from the file) under a lease that keeps
//! the file until the query is done. An uncached table plans a scan that fetches the table
//! when it executes, then reads the new file.

use std::fmt;
use std::sync::{Arc, Weak};

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::Session;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::execution::context::SessionState;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{
    Boundedness, ChildrenPropertiesMode, EmissionType, ReplaceChildrenOptions,
};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
    SendableRecordBatchStream, execute_stream,
};
use futures::{StreamExt, TryStreamExt};

use super::snapshot::SnapshotTable;
use crate::cache::CacheLease;
use crate::connection::Connection;
use crate::engine::{Engine, EngineCore};
use crate::source::CommonOptions;

/// A discovered table, fetched on first read.
#[derive(Debug)]
pub struct LazyTable {
    connection: Connection,
    table: Arc<SnapshotTable>,
    core: Weak<EngineCore>,
}

impl LazyTable {
    /// The table `table` of `connection`.
    pub(crate) fn new(
        connection: Connection,
        table: Arc<SnapshotTable>,
        core: Weak<EngineCore>,
    ) -> Self {
        LazyTable {
            connection,
            table,
            core,
        }
    }
}

fn engine(core: &Weak<EngineCore>) -> Result<Engine> {
    core.upgrade()
        .map(Engine::from_core)
        .ok_or_else(|| DataFusionError::Execution("the Quarry engine was shut down".into()))
}

fn external(e: crate::Error) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

/// Plans a scan of one cache file with everything DataFusion can push into it.
async fn parquet_scan(
    state: &dyn Session,
    lease: &CacheLease,
    schema: SchemaRef,
    projection: Option<&Vec<usize>>,
    filters: &[Expr],
    limit: Option<usize>,
) -> Result<Arc<dyn ExecutionPlan>> {
    let path = lease.path().to_string_lossy();
    let url = ListingTableUrl::parse(path.as_ref())?;
    let options =
        ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
    let config = ListingTableConfig::new(url)
        .with_listing_options(options)
        .with_schema(schema);
    ListingTable::try_new(config)?
        .scan(state, projection, filters, limit)
        .await
}

#[async_trait]
impl TableProvider for LazyTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.table.schema)
    }

    fn table_type(&self) -> TableType {
        if self.table.record.table_type == "view" {
            TableType::View
        } else {
            TableType::Base
        }
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
        let engine = engine(&self.core)?;
        let record = &self.table.record;
        let current = engine
            .store()
            .current_cache_entry(&self.connection.id, &record.schema, &record.name)
            .await
            .map_err(external)?;
        let max_age =
            CommonOptions::max_age_of(self.connection.source_type, &self.connection.config);
        let stale = match (&current, max_age) {
            (Some(entry), Some(age)) => {
                let age = chrono::Duration::from_std(age).unwrap_or(chrono::Duration::MAX);
                chrono::Utc::now() - entry.fetched_at > age
            }
            _ => false,
        };
        if let Some(entry) = current.filter(|_| !stale) {
            let lease = Arc::new(engine.cache().lease(&entry));
            let plan =
                parquet_scan(state, &lease, self.schema(), projection, filters, limit).await?;
            return Ok(Arc::new(LeaseExec::new(plan, lease)));
        }
        let state = state
            .as_any()
            .downcast_ref::<SessionState>()
            .cloned()
            .ok_or_else(|| DataFusionError::Internal("scan without a SessionState".into()))?;
        let projected = match projection {
            Some(p) => Arc::new(self.table.schema.project(p)?),
            None => self.schema(),
        };
        Ok(Arc::new(FetchExec {
            properties: Arc::new(PlanProperties::new(
                EquivalenceProperties::new(Arc::clone(&projected)),
                Partitioning::UnknownPartitioning(1),
                EmissionType::Incremental,
                Boundedness::Bounded,
            )),
            label: format!("{}.{}.{}", self.connection.name, record.schema, record.name),
            connection: self.connection.clone(),
            table: Arc::clone(&self.table),
            core: self.core.clone(),
            state,
            projection: projection.cloned(),
            filters: filters.to_vec(),
            limit,
            refresh: stale,
        }))
    }
}

/// Keeps a cache file's lease for as long as the scan plan above it exists.
struct LeaseExec {
    input: Arc<dyn ExecutionPlan>,
    lease: Arc<CacheLease>,
}

impl LeaseExec {
    fn new(input: Arc<dyn ExecutionPlan>, lease: Arc<CacheLease>) -> Self {
        LeaseExec { input, lease }
    }
}

impl fmt::Debug for LeaseExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeaseExec")
            .field("file", &self.lease.path())
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

/// A scan of a table that is not cached yet: executing it fetches the table (sharing a
/// fetch already running), then reads the new file.
struct FetchExec {
    properties: Arc<PlanProperties>,
    label: String,
    connection: Connection,
    table: Arc<SnapshotTable>,
    core: Weak<EngineCore>,
    state: SessionState,
    projection: Option<Vec<usize>>,
    filters: Vec<Expr>,
    limit: Option<usize>,
    /// The cached version is older than the connection's max_age: fetch a new one.
    refresh: bool,
}

impl fmt::Debug for FetchExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FetchExec")
            .field("table", &self.label)
            .finish()
    }
}

impl DisplayAs for FetchExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "FetchExec: {} (not cached; fetched when run)",
            self.label
        )
    }
}

impl ExecutionPlan for FetchExec {
    fn name(&self) -> &str {
        "FetchExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        if partition != 0 {
            return Err(DataFusionError::Internal(format!(
                "FetchExec has one partition, asked for {partition}"
            )));
        }
        let engine = engine(&self.core)?;
        let connection = self.connection.clone();
        let record = self.table.record.clone();
        let schema = Arc::clone(&self.table.schema);
        let state = self.state.clone();
        let projection = self.projection.clone();
        let filters = self.filters.clone();
        let limit = self.limit;
        let refresh = self.refresh;
        let stream = futures::stream::once(async move {
            let (id, schema_name, table) = (connection.id.as_str(), &record.schema, &record.name);
            let entry = if refresh {
                engine.refresh_table(id, schema_name, table).await
            } else {
                engine.cached_table(id, schema_name, table).await
            }
            .map_err(external)?;
            let lease = Arc::new(engine.cache().lease(&entry));
            let plan =
                parquet_scan(&state, &lease, schema, projection.as_ref(), &filters, limit).await?;
            let plan: Arc<dyn ExecutionPlan> = Arc::new(LeaseExec::new(plan, lease));
            execute_stream(plan, context)
        })
        .try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema(),
            stream,
        )))
    }
}
