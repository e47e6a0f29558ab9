//! A one-partition leaf plan whose stream is produced by async work done only when the plan
//! executes: fetching an uncached table, or a management function's effect. Planning
//! (and `EXPLAIN`) never runs that work.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
    SendableRecordBatchStream,
};
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};

/// Makes the stream when the plan executes.
pub(crate) type StreamFactory = Arc<
    dyn Fn(Arc<TaskContext>) -> BoxFuture<'static, Result<SendableRecordBatchStream>> + Send + Sync,
>;

/// Wraps a Quarry error for DataFusion.
pub(crate) fn external(e: crate::Error) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

/// A leaf plan that runs `factory` when executed.
pub(crate) struct DeferredExec {
    label: String,
    properties: Arc<PlanProperties>,
    factory: StreamFactory,
}

impl DeferredExec {
    /// A plan producing `schema`, shown as `label`.
    pub(crate) fn new(label: String, schema: SchemaRef, factory: StreamFactory) -> Self {
        DeferredExec {
            label,
            properties: Arc::new(PlanProperties::new(
                EquivalenceProperties::new(schema),
                Partitioning::UnknownPartitioning(1),
                EmissionType::Incremental,
                Boundedness::Bounded,
            )),
            factory,
        }
    }
}

/// Makes, when the plan executes, the rows of a table's whole schema.
pub(crate) type RowsFactory =
    Arc<dyn Fn() -> BoxStream<'static, Result<RecordBatch>> + Send + Sync>;

impl DeferredExec {
    /// A plan of the columns `projection` picks from the rows `rows` makes (of schema
    /// `full`), shown as `label`: a table that computes its whole rows either way.
    pub(crate) fn projected(
        label: String,
        full: &SchemaRef,
        projection: Option<&Vec<usize>>,
        rows: RowsFactory,
    ) -> Result<Self> {
        let output = datafusion::physical_plan::project_schema(full, projection)?;
        let (projection, schema) = (projection.cloned(), Arc::clone(&output));
        let factory: StreamFactory = Arc::new(move |_context| {
            let projection = projection.clone();
            let stream = rows().map(move |batch| match &projection {
                Some(p) => Ok(batch?.project(p)?),
                None => batch,
            });
            let stream: SendableRecordBatchStream =
                Box::pin(RecordBatchStreamAdapter::new(Arc::clone(&schema), stream));
            Box::pin(async move { Ok(stream) })
        });
        Ok(DeferredExec::new(label, output, factory))
    }
}

impl fmt::Debug for DeferredExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label)
    }
}

impl DisplayAs for DeferredExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.label)
    }
}

impl ExecutionPlan for DeferredExec {
    fn name(&self) -> &str {
        "DeferredExec"
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
                "{} has one partition, asked for {partition}",
                self.label
            )));
        }
        let stream = futures::stream::once((self.factory)(context)).try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema(),
            stream,
        )))
    }
}
