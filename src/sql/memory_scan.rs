//! Scans of a table's decoded batches (the memory tier). DataFusion's memory source does the
//! reading; this source wraps it to take the filters DataFusion pushes down — the query's
//! own and the dynamic ones joins and TopK make while running — and skip every batch whose
//! value ranges rule them out, as the Parquet reader skips row groups and pages. Filters are
//! kept for skipping only: the rows of a kept batch still go through them above.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, BooleanArray, UInt32Array};
use datafusion::arrow::compute::take;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::Session;
use datafusion::common::config::ConfigOptions;
use datafusion::common::pruning::PruningStatistics;
use datafusion::common::stats::Precision;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, ScalarValue, project_schema};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::source::{DataSource, DataSourceExec};
use datafusion::error::Result;
use datafusion::execution::TaskContext;
use datafusion::physical_expr::{EquivalenceProperties, Partitioning, PhysicalExpr, conjunction};
use datafusion::physical_optimizer::pruning::PruningPredicateBuilder;
use datafusion::physical_plan::execution_plan::SchedulingType;
use datafusion::physical_plan::expressions;
use datafusion::physical_plan::filter_pushdown::{FilterPushdownPropagation, PushedDown};
use datafusion::physical_plan::memory::MemoryStream;
use datafusion::physical_plan::projection::ProjectionExprs;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayFormatType, ExecutionPlan, SendableRecordBatchStream, Statistics,
};
use futures::{StreamExt, TryStreamExt};

use crate::cache::{ResidentFile, extremes};

/// Plans a scan of a decoded file, its batches dealt round-robin to the session's partitions.
pub fn plan(
    state: &dyn Session,
    file: Arc<ResidentFile>,
    schema: SchemaRef,
    projection: Option<&Vec<usize>>,
    limit: Option<usize>,
) -> Result<Arc<dyn ExecutionPlan>> {
    let count = state
        .config()
        .target_partitions()
        .clamp(1, file.batches.len().max(1));
    let mut indices = vec![Vec::new(); count];
    let mut split = vec![Vec::new(); count];
    for (i, batch) in file.batches.iter().enumerate() {
        indices[i % count].push(i);
        split[i % count].push(batch.clone());
    }
    let inner = MemorySourceConfig::try_new(&split, schema, projection.cloned())?.with_limit(limit);
    Ok(DataSourceExec::from_data_source(ResidentSource {
        inner,
        file,
        indices: Arc::new(indices),
        predicate: None,
    }))
}

#[derive(Clone)]
struct ResidentSource {
    inner: MemorySourceConfig,
    file: Arc<ResidentFile>,
    // Which of the file's batches each partition reads, in order.
    indices: Arc<Vec<Vec<usize>>>,
    // Over the table's full schema, so projections never shift its columns.
    predicate: Option<Arc<dyn PhysicalExpr>>,
}

impl fmt::Debug for ResidentSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResidentSource")
            .field("batches", &self.file.batches.len())
            .field("predicate", &self.predicate)
            .finish()
    }
}

impl ResidentSource {
    fn with_inner(&self, inner: MemorySourceConfig) -> Self {
        ResidentSource {
            inner,
            ..self.clone()
        }
    }
}

/// Which of `indices` may hold rows `predicate` accepts (all, if it cannot tell).
fn batches_to_read(
    file: &ResidentFile,
    schema: &SchemaRef,
    indices: &[usize],
    predicate: Option<&Arc<dyn PhysicalExpr>>,
) -> Vec<bool> {
    let all = || vec![true; indices.len()];
    let Some(predicate) = predicate else {
        return all();
    };
    // Built when the scan is first polled: a join's dynamic filter is complete by then.
    let Ok(pruning) = PruningPredicateBuilder::new()
        .with_file_schema(Arc::clone(schema))
        .try_build(Arc::clone(predicate))
    else {
        return all();
    };
    if pruning.always_true() {
        return all();
    }
    let ranges = BatchRanges {
        file,
        schema,
        picked: UInt32Array::from_iter_values(indices.iter().map(|&i| i as u32)),
    };
    pruning.prune(&ranges).unwrap_or_else(|_| all())
}

/// The value ranges of some of a file's batches, as the pruning predicate asks for them.
struct BatchRanges<'a> {
    file: &'a ResidentFile,
    schema: &'a SchemaRef,
    picked: UInt32Array,
}

impl BatchRanges<'_> {
    fn pick(&self, arrays: &[Option<ArrayRef>], column: &Column) -> Option<ArrayRef> {
        let index = self.schema.index_of(&column.name).ok()?;
        let array = arrays.get(index)?.as_ref()?;
        take(array.as_ref(), &self.picked, None).ok()
    }
}

impl PruningStatistics for BatchRanges<'_> {
    fn min_values(&self, column: &Column) -> Option<ArrayRef> {
        self.pick(&self.file.mins, column)
    }

    fn max_values(&self, column: &Column) -> Option<ArrayRef> {
        self.pick(&self.file.maxs, column)
    }

    fn num_containers(&self) -> usize {
        self.picked.len()
    }

    fn null_counts(&self, column: &Column) -> Option<ArrayRef> {
        let index = self.schema.index_of(&column.name).ok()?;
        take(
            self.file.null_counts.get(index)?.as_ref(),
            &self.picked,
            None,
        )
        .ok()
    }

    fn row_counts(&self) -> Option<ArrayRef> {
        take(self.file.row_counts.as_ref(), &self.picked, None).ok()
    }

    fn contained(
        &self,
        _column: &Column,
        _values: &std::collections::HashSet<ScalarValue>,
    ) -> Option<BooleanArray> {
        None
    }
}

impl DataSource for ResidentSource {
    fn open(
        &self,
        partition: usize,
        _context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let schema = self.inner.original_schema();
        let projection = self.inner.projection().clone();
        let projected = project_schema(&schema, projection.as_ref())?;
        let (file, predicate, fetch) = (
            Arc::clone(&self.file),
            self.predicate.clone(),
            self.inner.fetch(),
        );
        let indices = self.indices.get(partition).cloned().unwrap_or_default();
        let stream_schema = Arc::clone(&projected);
        let batches = futures::stream::once(async move {
            let keep = batches_to_read(&file, &schema, &indices, predicate.as_ref());
            let batches = indices
                .iter()
                .zip(keep)
                .filter(|(_, keep)| *keep)
                .map(|(&i, _)| file.batches[i].clone())
                .collect();
            Ok::<_, datafusion::error::DataFusionError>(
                MemoryStream::try_new(batches, stream_schema, projection)?.with_fetch(fetch),
            )
        })
        .try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            projected,
            batches.boxed(),
        )))
    }

    fn fmt_as(&self, t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        self.inner.fmt_as(t, f)?;
        match &self.predicate {
            Some(predicate) => write!(f, ", skips batches by {predicate}"),
            None => Ok(()),
        }
    }

    fn output_partitioning(&self) -> Partitioning {
        self.inner.output_partitioning()
    }

    fn eq_properties(&self) -> EquivalenceProperties {
        self.inner.eq_properties()
    }

    fn scheduling_type(&self) -> SchedulingType {
        self.inner.scheduling_type()
    }

    // The memory source counts rows, bytes and nulls; the column ranges come from the ranges
    // kept at load (without them TPC-H Q18 built its hash table on the 6M-row side).
    fn partition_statistics(&self, partition: Option<usize>) -> Result<Arc<Statistics>> {
        let mut statistics = self.inner.partition_statistics(partition)?.as_ref().clone();
        let picked: Vec<u32> = match partition {
            Some(p) => self.indices.get(p).map_or_else(Vec::new, |batches| {
                batches.iter().map(|&i| i as u32).collect()
            }),
            None => (0..self.file.batches.len() as u32).collect(),
        };
        let picked = UInt32Array::from(picked);
        let columns = match self.inner.projection() {
            Some(projection) => projection.clone(),
            None => (0..self.inner.original_schema().fields().len()).collect(),
        };
        // A limit keeps some rows only: the ranges still bound them.
        let precision = |value: ScalarValue| match self.inner.fetch() {
            None => Precision::Exact(value),
            Some(_) => Precision::Inexact(value),
        };
        for (column, statistic) in columns.iter().zip(&mut statistics.column_statistics) {
            let range =
                |arrays: &[Option<ArrayRef>],
                 pick: fn((ScalarValue, ScalarValue)) -> ScalarValue| {
                    let per_batch = arrays.get(*column)?.as_ref()?;
                    let picked = take(per_batch.as_ref(), &picked, None).ok()?;
                    Some(pick(extremes(&picked))).filter(|v| !v.is_null())
                };
            if let Some(min) = range(&self.file.mins, |(min, _)| min) {
                statistic.min_value = precision(min);
            }
            if let Some(max) = range(&self.file.maxs, |(_, max)| max) {
                statistic.max_value = precision(max);
            }
        }
        Ok(Arc::new(statistics))
    }

    fn with_fetch(&self, limit: Option<usize>) -> Option<Arc<dyn DataSource>> {
        Some(Arc::new(
            self.with_inner(self.inner.clone().with_limit(limit)),
        ))
    }

    fn fetch(&self) -> Option<usize> {
        self.inner.fetch()
    }

    // The scan already reads only the columns the query needs.
    fn try_swapping_with_projection(
        &self,
        _projection: &ProjectionExprs,
    ) -> Result<Option<Arc<dyn DataSource>>> {
        Ok(None)
    }

    fn try_pushdown_filters(
        &self,
        filters: Vec<Arc<dyn PhysicalExpr>>,
        _config: &ConfigOptions,
    ) -> Result<FilterPushdownPropagation<Arc<dyn DataSource>>> {
        let parents = vec![PushedDown::No; filters.len()];
        let schema = self.inner.original_schema();
        // The filters name columns of the scan's output; the ranges are kept by table column.
        let remapped: Vec<_> = filters
            .into_iter()
            .filter_map(|filter| {
                filter
                    .transform(|expr| match expr.downcast_ref::<expressions::Column>() {
                        Some(column) => {
                            let index = schema.index_of(column.name())?;
                            Ok(Transformed::yes(Arc::new(expressions::Column::new(
                                column.name(),
                                index,
                            ))
                                as Arc<dyn PhysicalExpr>))
                        }
                        None => Ok(Transformed::no(expr)),
                    })
                    .ok()
                    .map(|t| t.data)
            })
            .collect();
        if remapped.is_empty() {
            return Ok(FilterPushdownPropagation::with_parent_pushdown_result(
                parents,
            ));
        }
        let predicate = conjunction(self.predicate.iter().cloned().chain(remapped));
        let updated = ResidentSource {
            predicate: Some(predicate),
            ..self.clone()
        };
        Ok(
            FilterPushdownPropagation::with_parent_pushdown_result(parents)
                .with_updated_node(Arc::new(updated) as Arc<dyn DataSource>),
        )
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        match &self.predicate {
            Some(predicate) => f(predicate),
            None => Ok(TreeNodeRecursion::Continue),
        }
    }
}
