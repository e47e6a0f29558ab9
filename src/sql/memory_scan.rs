//! Scans of a table's decoded batches (the memory tier). DataFusion's memory source does the
//! reading; this source wraps it to take the filters DataFusion pushes down — the query's
//! own and the dynamic ones joins and TopK make while running — and skip every batch whose
//! value ranges rule them out, as the Parquet reader skips row groups and pages. The
//! query's own filters are kept for skipping only: the rows of a kept batch still go through
//! them above. The dynamic ones are also applied to the rows of each kept batch (as the
//! Parquet reader does with `pushdown_filters`), so a selective join drops most of a big
//! table before it is repartitioned, aggregated or hashed (TPC-H Q17's subquery aggregated
//! all 6M lineitem rows for the 2,000 parts it joins).

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, BooleanArray, RecordBatch, UInt32Array};
use datafusion::arrow::compute::BatchCoalescer;
use datafusion::arrow::compute::kernels::boolean::and;
use datafusion::arrow::compute::{filter_record_batch, take};
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::Session;
use datafusion::common::cast::as_boolean_array;
use datafusion::common::config::ConfigOptions;
use datafusion::common::pruning::PruningStatistics;
use datafusion::common::stats::Precision;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, ScalarValue, project_schema};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::source::{DataSource, DataSourceExec};
use datafusion::error::Result;
use datafusion::execution::TaskContext;
use datafusion::physical_expr::expressions::DynamicFilterPhysicalExpr;
use datafusion::physical_expr::utils::{collect_columns, split_conjunction};
use datafusion::physical_expr::{EquivalenceProperties, Partitioning, PhysicalExpr, conjunction};
use datafusion::physical_optimizer::pruning::PruningPredicateBuilder;
use datafusion::physical_plan::execution_plan::SchedulingType;
use datafusion::physical_plan::expressions;
use datafusion::physical_plan::filter_pushdown::{FilterPushdownPropagation, PushedDown};
use datafusion::physical_plan::joins::HashTableLookupExpr;
use datafusion::physical_plan::metrics::{Count, ExecutionPlanMetricsSet, MetricBuilder};
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
        filters: Arc::new(Vec::new()),
        dynamic: Arc::new(Vec::new()),
        metrics: ExecutionPlanMetricsSet::new(),
    }))
}

#[derive(Clone)]
struct ResidentSource {
    inner: MemorySourceConfig,
    file: Arc<ResidentFile>,
    // Which of the file's batches each partition reads, in order.
    indices: Arc<Vec<Vec<usize>>>,
    // The query's own filters, taken over from the filter above, as conjuncts in the order
    // they run (cheapest first). Over the table's full schema, so projections never shift
    // its columns.
    filters: Arc<Vec<Arc<dyn PhysicalExpr>>>,
    // The dynamic filters pushed down: they skip batches, and filter rows while they pay.
    dynamic: Arc<Vec<Arc<dyn PhysicalExpr>>>,
    metrics: ExecutionPlanMetricsSet,
}

impl fmt::Debug for ResidentSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResidentSource")
            .field("batches", &self.file.batches.len())
            .field("filters", &self.filters)
            .field("dynamic", &self.dynamic)
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

    /// All the filters as one, to skip batches by (`None`: no filter).
    fn predicate(&self) -> Option<Arc<dyn PhysicalExpr>> {
        let all: Vec<_> = self
            .filters
            .iter()
            .chain(self.dynamic.iter())
            .cloned()
            .collect();
        (!all.is_empty()).then(|| conjunction(all))
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
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let schema = self.inner.original_schema();
        let projection = self.inner.projection().clone();
        let projected = project_schema(&schema, projection.as_ref())?;
        let (file, predicate, fetch) =
            (Arc::clone(&self.file), self.predicate(), self.inner.fetch());
        let reader = RowReader::new(&schema, projection.as_ref(), &self.filters, &self.dynamic)?;
        let indices = self.indices.get(partition).cloned().unwrap_or_default();
        let metric = MetricBuilder::new(&self.metrics);
        let skipped = metric.clone().counter("batches_skipped", partition);
        let rows_read = metric.clone().counter("rows_read", partition);
        let output_rows = metric.output_rows(partition);
        let (stream_schema, batch_size) = (
            Arc::clone(&projected),
            context.session_config().batch_size(),
        );
        let batches = futures::stream::once(async move {
            let keep = batches_to_read(&file, &schema, &indices, predicate.as_ref());
            skipped.add(keep.iter().filter(|keep| !**keep).count());
            let batches: Vec<RecordBatch> = indices
                .iter()
                .zip(keep)
                .filter(|(_, keep)| *keep)
                .map(|(&i, _)| file.batches[i].clone())
                .collect();
            let read = Rows {
                batches: batches.into_iter(),
                coalescer: BatchCoalescer::new(stream_schema, batch_size)
                    .with_biggest_coalesce_batch_size(Some(batch_size / 2)),
                reader,
                rows_read,
                output_rows,
                left: fetch.unwrap_or(usize::MAX),
                read_all: false,
            };
            Ok::<_, datafusion::error::DataFusionError>(futures::stream::iter(read))
        })
        .try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            projected,
            batches.boxed(),
        )))
    }

    fn fmt_as(&self, t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        self.inner.fmt_as(t, f)?;
        if let Some(predicate) = self.predicate() {
            write!(f, ", skips batches by {predicate}")?;
        }
        if !self.filters.is_empty() {
            let filters: Vec<String> = self.filters.iter().map(|f| f.to_string()).collect();
            write!(f, ", filters rows by {}", filters.join(", then "))?;
        }
        match self.dynamic.as_slice() {
            [] => Ok(()),
            dynamic => write!(
                f,
                ", filters rows dynamically by {}",
                conjunction(dynamic.iter().cloned())
            ),
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
        // Filtered rows: the counts and ranges bound the rows returned, no more.
        if !self.filters.is_empty() || !self.dynamic.is_empty() {
            statistics = statistics.to_inexact();
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

    fn metrics(&self) -> ExecutionPlanMetricsSet {
        self.metrics.clone()
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
        let schema = self.inner.original_schema();
        // The filters name columns of the scan's output; the ranges are kept by table column.
        let remapped: Vec<Option<Arc<dyn PhysicalExpr>>> = filters
            .into_iter()
            .map(|filter| remap(filter, |column| schema.index_of(column.name()).ok()))
            .collect();
        // The query's own filters are evaluated here; dynamic ones also above (their makers
        // check the rows anyway).
        let parents = remapped
            .iter()
            .map(|filter| match filter {
                Some(filter) if !is_dynamic(filter) => PushedDown::Yes,
                _ => PushedDown::No,
            })
            .collect();
        let remapped: Vec<_> = remapped.into_iter().flatten().collect();
        if remapped.is_empty() {
            return Ok(FilterPushdownPropagation::with_parent_pushdown_result(
                parents,
            ));
        }
        let (dynamic, own): (Vec<_>, Vec<_>) = remapped.iter().cloned().partition(is_dynamic);
        let mut filters: Vec<_> = self
            .filters
            .iter()
            .cloned()
            .chain(own.iter().flat_map(split_conjunction).cloned())
            .collect();
        // Fixed-width comparisons before text: a date range often drops most rows for less
        // than one string comparison costs (TPC-H Q12's filter spent most of its time on
        // l_shipmode). A stable sort keeps the written order otherwise.
        filters.sort_by_key(|filter| !fixed_width(filter, &schema));
        let updated = ResidentSource {
            filters: Arc::new(filters),
            dynamic: Arc::new(self.dynamic.iter().cloned().chain(dynamic).collect()),
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
        match self.predicate() {
            Some(predicate) => f(&predicate),
            None => Ok(TreeNodeRecursion::Continue),
        }
    }
}

/// `expr` with each column's index replaced by `index(column)`; `None` if one has none.
fn remap(
    expr: Arc<dyn PhysicalExpr>,
    index: impl Fn(&expressions::Column) -> Option<usize>,
) -> Option<Arc<dyn PhysicalExpr>> {
    expr.transform(|e| match e.downcast_ref::<expressions::Column>() {
        Some(column) => {
            let at = index(column).ok_or_else(|| {
                datafusion::error::DataFusionError::Plan(format!("no column {column}"))
            })?;
            Ok(Transformed::yes(
                Arc::new(expressions::Column::new(column.name(), at)) as Arc<dyn PhysicalExpr>,
            ))
        }
        None => Ok(Transformed::no(e)),
    })
    .ok()
    .map(|t| t.data)
}

/// Whether `filter` reads only fixed-width columns (numbers, decimals, dates, booleans).
fn fixed_width(filter: &Arc<dyn PhysicalExpr>, schema: &SchemaRef) -> bool {
    collect_columns(filter).iter().all(|column| {
        let data_type = schema.field(column.index()).data_type();
        data_type.is_primitive() || *data_type == DataType::Boolean
    })
}

/// A partition's batches as the scan returns them: read, filtered, and gathered again into
/// batches of the session's size (filtered batches are small, and every operator above
/// pays per batch), up to the scan's limit.
struct Rows {
    batches: std::vec::IntoIter<RecordBatch>,
    reader: RowReader,
    coalescer: BatchCoalescer,
    rows_read: Count,
    output_rows: Count,
    left: usize,
    read_all: bool,
}

impl Iterator for Rows {
    type Item = Result<RecordBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.left == 0 {
                return None;
            }
            if let Some(batch) = self.coalescer.next_completed_batch() {
                let batch = batch.slice(0, batch.num_rows().min(self.left));
                self.left -= batch.num_rows();
                self.output_rows.add(batch.num_rows());
                return Some(Ok(batch));
            }
            if self.read_all {
                return None;
            }
            let pushed = match self.batches.next() {
                Some(batch) => {
                    self.rows_read.add(batch.num_rows());
                    self.reader
                        .read(&batch)
                        .and_then(|batch| Ok(self.coalescer.push_batch(batch)?))
                }
                None => {
                    self.read_all = true;
                    self.coalescer.finish_buffered_batch().map_err(Into::into)
                }
            };
            if let Err(e) = pushed {
                return Some(Err(e));
            }
        }
    }
}

/// Reads a scan's rows from the table's batches: the columns it needs, the rows its filters
/// keep, the columns it returns.
struct RowReader {
    // Table columns the filters or the output need, in table order.
    needed: Vec<usize>,
    // Over `needed`: the query's own filters, then the dynamic ones.
    conjuncts: Vec<Conjunct>,
    // Positions in `needed` of the columns returned.
    output: Vec<usize>,
}

/// One filter a scan applies to rows. A dynamic one is on trial: it is dropped once it
/// turns into a hash table lookup, or keeps nearly every row of its first batches; the
/// operator that made it checks the rows anyway, so evaluating it twice would only cost.
struct Conjunct {
    expr: Arc<dyn PhysicalExpr>,
    trial: Option<Trial>,
}

/// What a dynamic filter kept so far.
#[derive(Default)]
struct Trial {
    batches: usize,
    rows: usize,
    kept: usize,
}

/// Batches read before a dynamic filter that removes almost nothing is given up.
const TRIAL_BATCHES: usize = 8;

impl Conjunct {
    /// Whether to keep evaluating it. A join's filter is complete only once its build side
    /// is read, which may be after the scan started: judged again on every batch.
    fn pays(&self) -> bool {
        match &self.trial {
            None => true,
            // Less than a tenth of the rows dropped: not worth its cost.
            Some(t) => {
                (t.batches < TRIAL_BATCHES || t.kept * 10 <= t.rows * 9) && cheap(&self.expr)
            }
        }
    }
}

impl RowReader {
    fn new(
        schema: &SchemaRef,
        projection: Option<&Vec<usize>>,
        filters: &[Arc<dyn PhysicalExpr>],
        dynamic: &[Arc<dyn PhysicalExpr>],
    ) -> Result<Self> {
        let returned: Vec<usize> = match projection {
            Some(columns) => columns.clone(),
            None => (0..schema.fields().len()).collect(),
        };
        let mut needed: Vec<usize> = returned
            .iter()
            .copied()
            .chain(
                filters
                    .iter()
                    .chain(dynamic)
                    .flat_map(collect_columns)
                    .map(|c| c.index()),
            )
            .collect();
        needed.sort_unstable();
        needed.dedup();
        let at = |column: &expressions::Column| needed.iter().position(|&i| i == column.index());
        let conjuncts = filters
            .iter()
            .map(|f| (f, None))
            .chain(dynamic.iter().map(|f| (f, Some(Trial::default()))))
            .map(|(f, trial)| {
                let expr = remap(Arc::clone(f), at).ok_or_else(|| {
                    datafusion::error::DataFusionError::Internal(format!(
                        "the memory scan could not place the columns of {f}"
                    ))
                })?;
                Ok(Conjunct { expr, trial })
            })
            .collect::<Result<_>>()?;
        Ok(RowReader {
            conjuncts,
            output: returned
                .iter()
                .map(|c| needed.iter().position(|n| n == c).unwrap_or_default())
                .collect(),
            needed,
        })
    }

    /// The rows and columns of one of the table's batches that the scan returns.
    fn read(&mut self, batch: &RecordBatch) -> Result<RecordBatch> {
        let mut batch = batch.project(&self.needed)?;
        self.conjuncts.retain(Conjunct::pays);
        // The rows are copied (only the columns still needed) once the filters so far keep
        // less than an eighth of them: the filters after see only those. Until then the
        // masks are combined, as one filter over the conjunction would: a comparison over
        // every row costs less than copying the columns of many (TPC-H Q15 spent half its
        // time copying after a date bound that kept 43%).
        let mut pending: Option<BooleanArray> = None;
        for conjunct in &mut self.conjuncts {
            if batch.num_rows() == 0 {
                break;
            }
            let keep = conjunct
                .expr
                .evaluate(&batch)?
                .into_array(batch.num_rows())?;
            let keep = as_boolean_array(&keep)?;
            if let Some(trial) = &mut conjunct.trial {
                trial.batches += 1;
                trial.rows += batch.num_rows();
                trial.kept += keep.true_count();
            }
            let keep = match pending.take() {
                Some(before) => and(&before, keep)?,
                None => keep.clone(),
            };
            if keep.true_count() * 8 < batch.num_rows() {
                batch = filter_record_batch(&batch, &keep)?;
            } else {
                pending = Some(keep);
            }
        }
        if let Some(keep) = pending {
            batch = filter_record_batch(&batch, &keep)?;
        }
        Ok(batch.project(&self.output)?)
    }
}

/// Whether `filter` holds a filter that a join, TopK or aggregate fills in while running.
fn is_dynamic(filter: &Arc<dyn PhysicalExpr>) -> bool {
    filter
        .exists(|e| Ok(e.downcast_ref::<DynamicFilterPhysicalExpr>().is_some()))
        .unwrap_or(false)
}

/// Whether `filter`, as its dynamic parts stand now, avoids looking rows up in a join's
/// hash table. A join whose build side is too big for a value list filters by hashing
/// every row and probing its table: about what the join's own probe costs, so it only pays
/// in the join (TPC-H Q4 and Q9 ran 1.7x and 1.9x slower with it applied in the scan).
fn cheap(filter: &Arc<dyn PhysicalExpr>) -> bool {
    !filter
        .exists(|e| {
            if let Some(dynamic) = e.downcast_ref::<DynamicFilterPhysicalExpr>() {
                return Ok(dynamic.current().is_ok_and(|now| !cheap(&now)));
            }
            Ok(e.downcast_ref::<HashTableLookupExpr>().is_some())
        })
        .unwrap_or(true)
}
