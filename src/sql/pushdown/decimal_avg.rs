//! `AVG` over decimals, split for pushdown: the source computes `SUM` and `COUNT` (exact on
//! every dialect that takes decimals) and Quarry divides them here exactly as DataFusion's
//! own `AVG` divides, truncating at four more digits of scale. The sources round their own
//! quotient, and to another scale, so a pushed-down `AVG` would change answers.

use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, Decimal128Builder};
use datafusion::arrow::datatypes::{DataType, Decimal128Type, Int64Type};
use datafusion::common::tree_node::Transformed;
use datafusion::common::{Column, Result, exec_err};
use datafusion::functions_aggregate::expr_fn::{count, sum};
use datafusion::logical_expr::expr::{AggregateFunction, Alias};
use datafusion::logical_expr::{
    Aggregate, ColumnarValue, Expr, ExprSchemable, LogicalPlan, Projection, ScalarFunctionArgs,
    ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion_functions_aggregate_common::utils::DecimalAverager;

/// The name of the division step, as `EXPLAIN` shows it.
const NAME: &str = "avg_from_sum_count";

/// `agg` with each decimal `AVG` computed from a `SUM` and a `COUNT` of its argument, under
/// a projection that divides them and keeps `agg`'s schema. Unchanged when it has none.
/// (Constant keys stay in the aggregate: `normalize` lifts them out of the projection.)
pub(super) fn split(agg: Aggregate) -> Result<Transformed<LogicalPlan>> {
    /// Where an original aggregate's value is in the split aggregate.
    enum Output {
        Kept(usize),
        Divided {
            sum: usize,
            precision: u8,
            scale: i8,
        },
    }
    if agg
        .group_expr
        .iter()
        .any(|e| matches!(e, Expr::GroupingSet(_)))
    {
        return Ok(Transformed::no(LogicalPlan::Aggregate(agg)));
    }
    let input = agg.input.schema();
    let mut aggr_expr = Vec::new();
    let mut outputs = Vec::new();
    for (i, e) in agg.aggr_expr.iter().enumerate() {
        match decimal_avg(e, input) {
            Some((arg, precision, scale)) => {
                let sum_at = aggr_expr.len();
                outputs.push(Output::Divided {
                    sum: sum_at,
                    precision,
                    scale,
                });
                aggr_expr.push(sum(arg.clone()).alias(format!("__quarry_avg_sum_{i}")));
                aggr_expr.push(count(arg).alias(format!("__quarry_avg_count_{i}")));
            }
            None => {
                outputs.push(Output::Kept(aggr_expr.len()));
                aggr_expr.push(e.clone());
            }
        }
    }
    if outputs.iter().all(|o| matches!(o, Output::Kept(_))) {
        return Ok(Transformed::no(LogicalPlan::Aggregate(agg)));
    }
    let keys = agg.group_expr.len();
    let split = Aggregate::try_new(Arc::clone(&agg.input), agg.group_expr.clone(), aggr_expr)?;
    let column = |i: usize| {
        let (qualifier, field) = split.schema.qualified_field(i);
        Expr::Column(Column::new(qualifier.cloned(), field.name()))
    };
    let mut exprs: Vec<Expr> = (0..keys).map(column).collect();
    for (i, output) in outputs.into_iter().enumerate() {
        let (qualifier, field) = agg.schema.qualified_field(keys + i);
        let value = match output {
            Output::Kept(at) => column(keys + at),
            Output::Divided {
                sum,
                precision,
                scale,
            } => {
                let divide = ScalarUDF::new_from_impl(AvgFromSumCount::new(precision, scale));
                divide.call(vec![column(keys + sum), column(keys + sum + 1)])
            }
        };
        exprs.push(value.alias_qualified(qualifier.cloned(), field.name()));
    }
    let projection = Projection::try_new_with_schema(
        exprs,
        Arc::new(LogicalPlan::Aggregate(split)),
        Arc::clone(&agg.schema),
    )?;
    Ok(Transformed::yes(LogicalPlan::Projection(projection)))
}

/// The argument of a plain `AVG` over a `Decimal128`, with the precision and scale of
/// DataFusion's answer.
fn decimal_avg(e: &Expr, schema: &datafusion::common::DFSchema) -> Option<(Expr, u8, i8)> {
    let e = match e {
        Expr::Alias(Alias { expr, .. }) => expr.as_ref(),
        other => other,
    };
    let Expr::AggregateFunction(AggregateFunction { func, params }) = e else {
        return None;
    };
    if !func.name().eq_ignore_ascii_case("avg")
        || params.distinct
        || params.filter.is_some()
        || !params.order_by.is_empty()
        || params.args.len() != 1
    {
        return None;
    }
    let arg = params.args[0].clone();
    match arg.get_type(schema).ok()? {
        DataType::Decimal128(p, s) => {
            let DataType::Decimal128(precision, scale) =
                func.return_type(&[DataType::Decimal128(p, s)]).ok()?
            else {
                return None;
            };
            Some((arg, precision, scale))
        }
        _ => None,
    }
}

/// `sum / count` as DataFusion's decimal `AVG` computes it; NULL where the count is zero.
#[derive(Debug, PartialEq, Eq, Hash)]
struct AvgFromSumCount {
    precision: u8,
    scale: i8,
    signature: Signature,
}

impl AvgFromSumCount {
    fn new(precision: u8, scale: i8) -> Self {
        AvgFromSumCount {
            precision,
            scale,
            signature: Signature::any(2, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for AvgFromSumCount {
    fn name(&self) -> &str {
        NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Decimal128(self.precision, self.scale))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let [sums, counts] = args.args.as_slice() else {
            return exec_err!("{NAME} takes a sum and a count");
        };
        let (sums, counts) = (sums.to_array(rows)?, counts.to_array(rows)?);
        let DataType::Decimal128(_, sum_scale) = sums.data_type() else {
            return exec_err!("{NAME} takes a decimal sum, not {}", sums.data_type());
        };
        let averager =
            DecimalAverager::<Decimal128Type>::try_new(*sum_scale, self.precision, self.scale)?;
        let sums = sums.as_primitive::<Decimal128Type>();
        let Some(counts) = counts.as_primitive_opt::<Int64Type>() else {
            return exec_err!("{NAME} takes an integer count, not {}", counts.data_type());
        };
        let mut out = Decimal128Builder::with_capacity(rows);
        for i in 0..rows {
            if sums.is_null(i) || counts.is_null(i) || counts.value(i) == 0 {
                out.append_null();
            } else {
                out.append_value(averager.avg(sums.value(i), i128::from(counts.value(i)))?);
            }
        }
        let out = out
            .finish()
            .with_precision_and_scale(self.precision, self.scale)?;
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}
