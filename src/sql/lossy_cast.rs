//! Keeps lossy casts in comparisons as written.
//!
//! DataFusion 55's simplifier rewrites `CAST(x AS t) = literal` to `x = CAST(literal AS
//! type of x)`. That is only right when the cast loses nothing. For `CAST(l_discount AS
//! BIGINT) = 0` on a `decimal(15,2)` column it compares `l_discount = 0.00`, where the cast
//! truncates every discount below 1 to 0: a wrong count (apache/datafusion#23095). Until
//! that is fixed upstream, an analyzer rule wraps every lossy cast that is an operand of a
//! comparison in [`KEEP_CAST`], an identity function the simplifier does not look into.

use std::sync::{Arc, LazyLock};

use datafusion::arrow::datatypes::{DataType, FieldRef};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DFSchema, Result};
use datafusion::logical_expr::expr_rewriter::NamePreserver;
use datafusion::logical_expr::utils::merge_schema;
use datafusion::logical_expr::{
    BinaryExpr, Cast, ColumnarValue, Expr, ExprSchemable, LogicalPlan, Operator, ReturnFieldArgs,
    ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TryCast, Volatility, expr::InList,
};
use datafusion::optimizer::AnalyzerRule;

/// The identity function that hides a lossy cast from the simplifier.
pub const KEEP_CAST: &str = "keep_cast";

static KEEP_CAST_UDF: LazyLock<Arc<ScalarUDF>> =
    LazyLock::new(|| Arc::new(ScalarUDF::from(KeepCast::new())));

/// The analyzer rule; it runs after type coercion, so every cast is explicit by then.
#[derive(Debug, Default)]
pub struct KeepLossyCasts;

impl AnalyzerRule for KeepLossyCasts {
    fn name(&self) -> &str {
        "keep_lossy_casts"
    }

    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> Result<LogicalPlan> {
        plan.transform_up_with_subqueries(|plan| {
            let schema = input_schema(&plan)?;
            let names = NamePreserver::new(&plan);
            plan.map_expressions(|expr| {
                let name = names.save(&expr);
                let rewritten = expr.transform_up(|e| guard(e, &schema))?;
                Ok(rewritten.update_data(|e| name.restore(e)))
            })
        })
        .map(|t| t.data)
    }
}

/// The columns a plan node's expressions can refer to.
fn input_schema(plan: &LogicalPlan) -> Result<DFSchema> {
    let mut schema = merge_schema(&plan.inputs());
    if let LogicalPlan::TableScan(scan) = plan {
        schema.merge(&DFSchema::try_from_qualified_schema(
            scan.table_name.clone(),
            &scan.source.schema(),
        )?);
    }
    Ok(schema)
}

/// Wraps the lossy-cast operands of a comparison or IN list.
fn guard(expr: Expr, schema: &DFSchema) -> Result<Transformed<Expr>> {
    match expr {
        Expr::BinaryExpr(BinaryExpr { left, op, right }) if is_comparison(op) => {
            let (left, l) = keep(*left, schema)?;
            let (right, r) = keep(*right, schema)?;
            let expr = Expr::BinaryExpr(BinaryExpr::new(Box::new(left), op, Box::new(right)));
            Ok(if l || r {
                Transformed::yes(expr)
            } else {
                Transformed::no(expr)
            })
        }
        Expr::InList(InList {
            expr,
            list,
            negated,
        }) => {
            let (inner, changed) = keep(*expr, schema)?;
            let expr = Expr::InList(InList::new(Box::new(inner), list, negated));
            Ok(if changed {
                Transformed::yes(expr)
            } else {
                Transformed::no(expr)
            })
        }
        other => Ok(Transformed::no(other)),
    }
}

fn is_comparison(op: Operator) -> bool {
    matches!(
        op,
        Operator::Eq
            | Operator::NotEq
            | Operator::Lt
            | Operator::LtEq
            | Operator::Gt
            | Operator::GtEq
            | Operator::IsDistinctFrom
            | Operator::IsNotDistinctFrom
    )
}

/// `expr` wrapped in [`KEEP_CAST`] if it is a chain of casts with a lossy one in it
/// (coercion may add a widening cast on top: `0 = CAST(d AS INT)` compares as Int64);
/// whether it was.
fn keep(expr: Expr, schema: &DFSchema) -> Result<(Expr, bool)> {
    let mut link = &expr;
    let mut lossy = false;
    while let Expr::Cast(Cast { expr: inner, field })
    | Expr::TryCast(TryCast { expr: inner, field }) = link
    {
        lossy |= is_lossy(&inner.get_type(schema)?, field.data_type());
        link = inner;
    }
    if !lossy {
        return Ok((expr, false));
    }
    Ok((KEEP_CAST_UDF.call(vec![expr]), true))
}

/// Whether casting `from` to `to` can map two values to one (so that comparing after the
/// cast is not comparing before it).
fn is_lossy(from: &DataType, to: &DataType) -> bool {
    let scale = |t: &DataType| match t {
        DataType::Decimal32(_, s)
        | DataType::Decimal64(_, s)
        | DataType::Decimal128(_, s)
        | DataType::Decimal256(_, s) => Some(*s),
        _ => None,
    };
    match (scale(from), scale(to)) {
        (Some(from), Some(to)) => to < from,
        (Some(from), None) => from > 0 && to.is_integer(),
        _ => false,
    }
}

/// The identity function behind [`KEEP_CAST`].
#[derive(Debug, PartialEq, Eq, Hash)]
struct KeepCast {
    signature: Signature,
}

impl KeepCast {
    fn new() -> Self {
        KeepCast {
            signature: Signature::any(1, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for KeepCast {
    fn name(&self) -> &str {
        KEEP_CAST
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        Ok(arg_types[0].clone())
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        Ok(Arc::clone(&args.arg_fields[0]))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        Ok(args.args.into_iter().next().expect("one argument"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn casts_that_merge_values_are_lossy() {
        let dec = |p, s| DataType::Decimal128(p, s);
        assert!(is_lossy(&dec(15, 2), &DataType::Int64));
        assert!(is_lossy(&dec(15, 2), &dec(15, 1)));
        assert!(!is_lossy(&dec(15, 0), &DataType::Int64));
        assert!(!is_lossy(&dec(15, 2), &dec(20, 4)));
        assert!(!is_lossy(&DataType::Int32, &DataType::Int64));
        assert!(!is_lossy(&dec(15, 2), &DataType::Float64));
    }
}
