//! What a source may compute for a query: the plan nodes and expressions whose answer is the
//! same on the source as in DataFusion, per dialect. A sub-plan that passes goes to the
//! source as one statement; a node that does not stays local, above pushed-down inputs.
//!
//! The rules that keep work local, and why:
//! - string comparison other than `=` / `<>` on PostgreSQL (the database's collation orders
//!   text; DataFusion orders bytes), and any string comparison, grouping, join key,
//!   `DISTINCT` or `MIN`/`MAX` on MySQL (its default collations ignore case and trailing
//!   spaces); so also sorting by strings there; SQLite's default `BINARY` collation orders
//!   bytes, as DataFusion does;
//! - sorts whose NULL placement the dialect cannot spell: MySQL has no `NULLS FIRST/LAST`
//!   and puts NULLs first ascending, so only sorts that agree, or keys that cannot be NULL,
//!   go there;
//! - arithmetic that differs: division and modulo except integer ones on PostgreSQL (MySQL's
//!   `/` makes decimals, SQLite's division by zero is NULL, PostgreSQL's float division by
//!   zero fails), decimals on SQLite (it computes them as doubles), and casts that round or
//!   reformat (decimal to float, anything to text), so float versus numeric arithmetic never
//!   moves;
//! - `LIKE` except on PostgreSQL (SQLite ignores ASCII case, MySQL follows the collation),
//!   and there only without an escape clause or backslashes in the pattern;
//! - `AVG` except over floats (the sources average exactly and round once; DataFusion
//!   divides its own sum), aggregates with `FILTER` or `ORDER BY`, and every other function
//!   but `coalesce` and `substr` from a constant position (not on SQLite). An `AVG` over
//!   decimals is split first: its `SUM` and `COUNT` go, and the division stays here
//!   ([`super::decimal_avg`]);
//! - `NOT IN` (an anti join that NULLs change): `EXISTS`, `NOT EXISTS` and `IN` go, as
//!   `[NOT] EXISTS` subqueries.

use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::common::{DFSchema, NullEquality, ScalarValue};
use datafusion::logical_expr::expr::{AggregateFunction, Alias, Sort};
use datafusion::logical_expr::{
    BinaryExpr, Distinct, Expr, ExprSchemable, JoinType, LogicalPlan, Operator,
};

use crate::source::SqlDialect;

/// The pushdown rules of one dialect.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Rules {
    pub dialect: SqlDialect,
}

/// A constant, possibly under aliases.
pub(crate) fn is_literal(e: &Expr) -> bool {
    match e {
        Expr::Alias(Alias { expr, .. }) => is_literal(expr),
        Expr::Literal(..) => true,
        _ => false,
    }
}

fn is_string(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
}

fn is_integer(t: &DataType) -> bool {
    t.is_integer()
}

/// The decimal digits the largest value of integer type `t` has.
fn integer_digits(t: &DataType) -> i16 {
    match t {
        DataType::Int8 | DataType::UInt8 => 3,
        DataType::Int16 | DataType::UInt16 => 5,
        DataType::Int32 | DataType::UInt32 => 10,
        DataType::Int64 => 19,
        _ => 20,
    }
}

fn is_float(t: &DataType) -> bool {
    matches!(t, DataType::Float32 | DataType::Float64)
}

fn is_decimal(t: &DataType) -> bool {
    matches!(t, DataType::Decimal128(..))
}

/// Whether `plan` unparses as one relation of a `FROM` clause: a table without filters (the
/// unparser would move them where a semi join drops them), or a derived table.
fn exists_relation(plan: &LogicalPlan) -> bool {
    match plan {
        LogicalPlan::TableScan(scan) => scan.filters.is_empty(),
        LogicalPlan::SubqueryAlias(_) => true,
        _ => false,
    }
}

/// Whether `plan` unparses into the `FROM` and `WHERE` of the statement that reads it, so a
/// semi join's `EXISTS` can join its `WHERE`: tables, aliases, joins and filters, but not
/// an aggregate, a limit or a projection, whose rows the `EXISTS` would filter before them.
fn filtering_input(plan: &LogicalPlan) -> bool {
    match plan {
        LogicalPlan::TableScan(_) | LogicalPlan::SubqueryAlias(_) | LogicalPlan::Join(_) => true,
        LogicalPlan::Filter(filter) => filtering_input(&filter.input),
        _ => false,
    }
}

impl Rules {
    /// Whether the whole of `plan` can run on the source as one statement.
    pub fn pushable(&self, plan: &LogicalPlan) -> bool {
        let node = match plan {
            LogicalPlan::TableScan(scan) => {
                scan.fetch.is_none()
                    && crate::sql::pushdown::is_live_scan(scan)
                    && scan
                        .filters
                        .iter()
                        .all(|f| self.expr(f, plan.schema().as_ref()))
            }
            LogicalPlan::Projection(p) => {
                !p.expr.is_empty() && p.expr.iter().all(|e| self.expr(e, p.input.schema()))
            }
            LogicalPlan::Filter(f) => self.expr(&f.predicate, f.input.schema()),
            LogicalPlan::Limit(limit) => {
                matches!(
                    limit.get_skip_type(),
                    Ok(datafusion::logical_expr::SkipType::Literal(_))
                ) && matches!(
                    limit.get_fetch_type(),
                    Ok(datafusion::logical_expr::FetchType::Literal(_))
                )
            }
            LogicalPlan::Sort(sort) => sort
                .expr
                .iter()
                .all(|k| self.sort_key(k, sort.input.schema())),
            LogicalPlan::Aggregate(agg) => {
                let input = agg.input.schema();
                agg.group_expr.iter().all(|e| self.group_key(e, input))
                    && agg.aggr_expr.iter().all(|e| self.aggregate(e, input))
            }
            LogicalPlan::Join(join) => {
                // A semi or anti join is written as `[NOT] EXISTS (SELECT 1 FROM right ...)`
                // in the left side's `WHERE`: its filter sees both sides, and the right side
                // must be one relation (a table, or a derived table under its alias).
                let semi = matches!(join.join_type, JoinType::LeftSemi | JoinType::LeftAnti);
                let both;
                let schema = if semi {
                    both = join.left.schema().join(join.right.schema());
                    match both {
                        Ok(ref both) => both,
                        Err(_) => return false,
                    }
                } else {
                    join.schema.as_ref()
                };
                let sides = !semi
                    || (exists_relation(&join.right)
                        && filtering_input(&join.left)
                        && !super::filtered_scan(&join.left)
                        && !super::filtered_scan(&join.right));
                sides
                    && matches!(
                        join.join_type,
                        JoinType::Inner
                            | JoinType::Left
                            | JoinType::Right
                            | JoinType::Full
                            | JoinType::LeftSemi
                            | JoinType::LeftAnti
                    )
                    && join.null_equality == NullEquality::NullEqualsNothing
                    && !join.null_aware
                    && join.on.iter().all(|(l, r)| {
                        self.group_key(l, join.left.schema())
                            && self.group_key(r, join.right.schema())
                    })
                    && join.filter.as_ref().is_none_or(|f| self.expr(f, schema))
            }
            LogicalPlan::SubqueryAlias(_) => true,
            LogicalPlan::Distinct(Distinct::All(input)) => input
                .schema()
                .fields()
                .iter()
                .all(|f| self.groupable(f.data_type())),
            _ => false,
        };
        node && !plan.schema().fields().is_empty()
            && plan
                .schema()
                .fields()
                .iter()
                .all(|f| self.decodable(f.data_type()))
            && plan.inputs().iter().all(|input| self.pushable(input))
    }

    /// Types the source's rows decode into exactly.
    fn decodable(&self, t: &DataType) -> bool {
        match t {
            DataType::Boolean
            | DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::Float32
            | DataType::Float64
            | DataType::Utf8
            | DataType::Binary
            | DataType::Date32 => true,
            DataType::UInt8 | DataType::UInt16 | DataType::UInt32 | DataType::UInt64 => {
                self.dialect == SqlDialect::Mysql
            }
            DataType::Decimal128(..) => self.dialect != SqlDialect::Sqlite,
            DataType::Timestamp(TimeUnit::Microsecond, None) => self.dialect != SqlDialect::Sqlite,
            DataType::Timestamp(TimeUnit::Microsecond, Some(_)) => {
                self.dialect == SqlDialect::Postgres
            }
            _ => false,
        }
    }

    /// Types whose equality is the same on the source (grouping, joining, DISTINCT).
    fn groupable(&self, t: &DataType) -> bool {
        !(is_string(t) && self.dialect == SqlDialect::Mysql)
    }

    /// A literal key is positional in SQL (`GROUP BY 1` is the first column), so it never
    /// goes; `normalize` lifts constant keys out of aggregates first.
    fn group_key(&self, e: &Expr, schema: &DFSchema) -> bool {
        !is_literal(e)
            && self.expr(e, schema)
            && e.get_type(schema).is_ok_and(|t| self.groupable(&t))
    }

    fn sort_key(&self, key: &Sort, schema: &DFSchema) -> bool {
        let Ok(t) = key.expr.get_type(schema) else {
            return false;
        };
        let text_order = !is_string(&t) || self.dialect == SqlDialect::Sqlite;
        let nulls = self.dialect != SqlDialect::Mysql
            || key.asc == key.nulls_first
            || !key.expr.nullable(schema).unwrap_or(true);
        !is_literal(&key.expr) && text_order && nulls && self.expr(&key.expr, schema)
    }

    fn aggregate(&self, e: &Expr, schema: &DFSchema) -> bool {
        let e = match e {
            Expr::Alias(Alias { expr, .. }) => expr.as_ref(),
            other => other,
        };
        let Expr::AggregateFunction(AggregateFunction { func, params }) = e else {
            return false;
        };
        if params.filter.is_some() || !params.order_by.is_empty() || params.null_treatment.is_some()
        {
            return false;
        }
        if !params.args.iter().all(|a| self.expr(a, schema)) {
            return false;
        }
        let arg_type = params.args.first().and_then(|a| a.get_type(schema).ok());
        let name = func.name().to_ascii_lowercase();
        match (name.as_str(), arg_type) {
            ("count", None) => !params.distinct,
            ("count", Some(t)) => !params.distinct || self.groupable(&t),
            ("sum", Some(t)) => {
                !params.distinct
                    && (is_integer(&t)
                        || is_float(&t)
                        || (is_decimal(&t) && self.dialect != SqlDialect::Sqlite))
            }
            ("min" | "max", Some(t)) => {
                !matches!(t, DataType::Boolean)
                    && (!is_string(&t) || self.dialect == SqlDialect::Sqlite)
            }
            ("avg", Some(t)) => !params.distinct && is_float(&t),
            _ => false,
        }
    }

    /// Whether the source computes `e` (over rows of `schema`) as DataFusion does.
    pub fn expr(&self, e: &Expr, schema: &DFSchema) -> bool {
        match e {
            Expr::Column(_) => true,
            Expr::Alias(Alias { expr, .. }) => self.expr(expr, schema),
            Expr::Literal(value, _) => self.literal(value),
            Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
                self.binary(left, *op, right, schema)
                    && self.expr(left, schema)
                    && self.expr(right, schema)
            }
            Expr::Not(x) | Expr::IsNull(x) | Expr::IsNotNull(x) => self.expr(x, schema),
            Expr::Negative(x) => {
                x.get_type(schema).is_ok_and(|t| {
                    is_integer(&t)
                        || is_float(&t)
                        || (is_decimal(&t) && self.dialect != SqlDialect::Sqlite)
                }) && self.expr(x, schema)
            }
            Expr::Between(b) => {
                b.expr.get_type(schema).is_ok_and(|t| self.orderable(&t))
                    && self.expr(&b.expr, schema)
                    && self.expr(&b.low, schema)
                    && self.expr(&b.high, schema)
            }
            Expr::InList(list) => {
                list.expr.get_type(schema).is_ok_and(|t| self.groupable(&t))
                    && self.expr(&list.expr, schema)
                    && list.list.iter().all(|item| self.expr(item, schema))
            }
            Expr::Like(like) => {
                self.dialect == SqlDialect::Postgres
                    && !like.case_insensitive
                    && like.escape_char.is_none()
                    && matches!(
                        like.pattern.as_ref(),
                        Expr::Literal(ScalarValue::Utf8(Some(p)), _) if !p.contains('\\')
                    )
                    && self.expr(&like.expr, schema)
            }
            Expr::Case(case) => {
                case.expr.as_ref().is_none_or(|x| {
                    x.get_type(schema).is_ok_and(|t| self.groupable(&t)) && self.expr(x, schema)
                }) && case
                    .when_then_expr
                    .iter()
                    .all(|(w, t)| self.expr(w, schema) && self.expr(t, schema))
                    && case.else_expr.as_ref().is_none_or(|x| self.expr(x, schema))
            }
            Expr::Cast(cast) => {
                cast.expr
                    .get_type(schema)
                    .is_ok_and(|from| self.cast(&from, cast.field.data_type()))
                    && self.expr(&cast.expr, schema)
            }
            Expr::ScalarFunction(f) => {
                let args = f.args.iter().all(|a| self.expr(a, schema));
                match f.name() {
                    "coalesce" => args,
                    "substr" => args && self.substr(&f.args, schema),
                    _ => false,
                }
            }
            _ => false,
        }
    }

    /// `substr(text, start[, length])` from a constant position at least 1 and a constant
    /// length at least 0, where the dialects count characters as DataFusion does (elsewhere
    /// the rules differ: SQLite counts from the end for a negative start, PostgreSQL shortens
    /// the length for a start below 1). `char(n)` values reach both sides without padding.
    /// Not on SQLite: a text column there may hold a BLOB, which `substr` cuts by bytes.
    fn substr(&self, args: &[Expr], schema: &DFSchema) -> bool {
        let constant = |e: &Expr, least: i64| match e {
            Expr::Literal(ScalarValue::Int64(Some(v)), _) => *v >= least,
            _ => false,
        };
        self.dialect != SqlDialect::Sqlite
            && args.first().is_some_and(|text| {
                text.get_type(schema)
                    .is_ok_and(|t| matches!(t, DataType::Utf8))
            })
            && args.get(1).is_some_and(|start| constant(start, 1))
            && args.get(2).is_none_or(|length| constant(length, 0))
            && args.len() <= 3
    }

    fn literal(&self, value: &ScalarValue) -> bool {
        match value {
            ScalarValue::Null
            | ScalarValue::Boolean(_)
            | ScalarValue::Int8(_)
            | ScalarValue::Int16(_)
            | ScalarValue::Int32(_)
            | ScalarValue::Int64(_)
            | ScalarValue::Date32(_) => true,
            ScalarValue::UInt8(_)
            | ScalarValue::UInt16(_)
            | ScalarValue::UInt32(_)
            | ScalarValue::UInt64(_) => self.dialect == SqlDialect::Mysql,
            ScalarValue::Float64(v) => v.is_none_or(f64::is_finite),
            ScalarValue::Decimal128(..) => self.dialect != SqlDialect::Sqlite,
            // MySQL reads backslashes in string literals as escapes.
            ScalarValue::Utf8(s) => {
                self.dialect != SqlDialect::Mysql || s.as_ref().is_none_or(|s| !s.contains('\\'))
            }
            _ => false,
        }
    }

    /// Types whose `<` is the same on the source.
    fn orderable(&self, t: &DataType) -> bool {
        !is_string(t) || self.dialect == SqlDialect::Sqlite
    }

    fn binary(&self, left: &Expr, op: Operator, right: &Expr, schema: &DFSchema) -> bool {
        let (Ok(l), Ok(r)) = (left.get_type(schema), right.get_type(schema)) else {
            return false;
        };
        let numeric = |t: &DataType| {
            is_integer(t) || is_float(t) || (is_decimal(t) && self.dialect != SqlDialect::Sqlite)
        };
        match op {
            Operator::And | Operator::Or => true,
            Operator::Eq | Operator::NotEq => self.groupable(&l) && self.groupable(&r),
            Operator::Lt | Operator::LtEq | Operator::Gt | Operator::GtEq => {
                self.orderable(&l) && self.orderable(&r)
            }
            Operator::Plus | Operator::Minus | Operator::Multiply => numeric(&l) && numeric(&r),
            Operator::Divide | Operator::Modulo => {
                self.dialect == SqlDialect::Postgres && is_integer(&l) && is_integer(&r)
            }
            Operator::IsDistinctFrom | Operator::IsNotDistinctFrom => {
                self.dialect == SqlDialect::Postgres
            }
            Operator::StringConcat => {
                self.dialect != SqlDialect::Mysql && is_string(&l) && is_string(&r)
            }
            _ => false,
        }
    }

    /// Casts that convert exactly, and that the dialect spells.
    fn cast(&self, from: &DataType, to: &DataType) -> bool {
        if from == to {
            return true;
        }
        match (from, to) {
            (f, DataType::Int64) if is_integer(f) => true,
            (f, DataType::Int16 | DataType::Int32) if is_integer(f) => {
                self.dialect != SqlDialect::Mysql && to.primitive_width() > f.primitive_width()
            }
            (f, DataType::Float64) if is_integer(f) || f == &DataType::Float32 => true,
            (f, DataType::Decimal128(p, s)) if is_integer(f) => {
                self.dialect != SqlDialect::Sqlite
                    && i16::from(*p) - i16::from(*s) >= integer_digits(f)
            }
            (DataType::Decimal128(p1, s1), DataType::Decimal128(p2, s2)) => {
                self.dialect != SqlDialect::Sqlite
                    && s2 >= s1
                    && i16::from(*p2) - i16::from(*s2) >= i16::from(*p1) - i16::from(*s1)
            }
            (a, b) if is_string(a) && is_string(b) => true,
            _ => false,
        }
    }
}
