//! Row estimates of the inputs of a join chain: the table's row count from the source's
//! estimate (or the provider's statistics), its unique keys from the declared constraints,
//! and a fixed selectivity per kind of filter, after the textbook defaults (an equality
//! keeps a tenth, a range bound a third). The estimates only rank join orders; they never
//! change an answer.

use std::collections::{BTreeSet, HashMap};

use datafusion::catalog::default_table_source::source_as_provider;
use datafusion::logical_expr::{
    Aggregate, BinaryExpr, Expr, JoinType, LogicalPlan, Operator, Projection, TableScan,
};

use crate::sql::lazy_table::LazyTable;
use crate::table::ConstraintKind;

/// The share of rows `column = value` keeps at most.
const EQUAL: f64 = 0.1;
/// The share of rows one range bound keeps.
const RANGE: f64 = 1.0 / 3.0;

/// The share of rows a join condition other than a key equality keeps.
pub(super) const OTHER_CONDITION: f64 = 1.0 / 3.0;

/// What a join input is expected to hold.
#[derive(Debug, Clone)]
pub(super) struct Estimate {
    /// Rows it returns, after its filters.
    pub rows: f64,
    /// Rows of the table its keys are unique in (before filters): a key's distinct count.
    pub base: f64,
    /// Column sets (by output name) no two of its rows share.
    pub keys: Vec<BTreeSet<String>>,
}

impl Estimate {
    /// Whether `columns` include one of its unique keys.
    pub fn is_unique_on(&self, columns: &BTreeSet<String>) -> bool {
        self.keys.iter().any(|k| k.is_subset(columns))
    }
}

/// The estimate of `plan`, if every table under it has a row count.
pub(super) fn estimate(plan: &LogicalPlan) -> Option<Estimate> {
    match plan {
        LogicalPlan::TableScan(scan) => table(scan),
        LogicalPlan::Filter(filter) => {
            let mut e = estimate(&filter.input)?;
            e.rows *= selectivity(&filter.predicate, &e);
            Some(e)
        }
        LogicalPlan::Projection(projection) => {
            let e = estimate(&projection.input)?;
            Some(project(projection, e))
        }
        LogicalPlan::SubqueryAlias(alias) => estimate(&alias.input),
        LogicalPlan::Sort(sort) => {
            let mut e = estimate(&sort.input)?;
            if let Some(fetch) = sort.fetch {
                e.rows = e.rows.min(fetch as f64);
            }
            Some(e)
        }
        LogicalPlan::Limit(limit) => {
            let mut e = estimate(&limit.input)?;
            if let Ok(datafusion::logical_expr::logical_plan::FetchType::Literal(Some(n))) =
                limit.get_fetch_type()
            {
                e.rows = e.rows.min(n as f64);
            }
            Some(e)
        }
        LogicalPlan::Aggregate(aggregate) => {
            let input = estimate(&aggregate.input)?;
            Some(grouped(aggregate, input))
        }
        LogicalPlan::Join(join) => {
            let (kept, filters) = match join.join_type {
                JoinType::LeftSemi | JoinType::LeftAnti => (&join.left, true),
                JoinType::RightSemi | JoinType::RightAnti => (&join.right, true),
                JoinType::Left => (&join.left, false),
                JoinType::Right => (&join.right, false),
                _ => return None,
            };
            let mut e = estimate(kept)?;
            if filters {
                // A semi or anti join keeps some of its side's rows, each once.
                e.rows *= 0.5;
            } else {
                // An outer join keeps every row, but a row may meet several on the other
                // side: its keys no longer hold.
                e.keys.clear();
            }
            Some(e)
        }
        LogicalPlan::EmptyRelation(_) => Some(Estimate {
            rows: 1.0,
            base: 1.0,
            keys: Vec::new(),
        }),
        LogicalPlan::Values(values) => {
            let rows = values.values.len() as f64;
            Some(Estimate {
                rows,
                base: rows,
                keys: Vec::new(),
            })
        }
        _ => None,
    }
}

/// A table's rows and keys: the source's estimate and constraints for a Quarry table,
/// else the provider's row count.
fn table(scan: &TableScan) -> Option<Estimate> {
    let provider = source_as_provider(&scan.source).ok()?;
    let (rows, keys) = match (provider.as_ref() as &dyn std::any::Any).downcast_ref::<LazyTable>() {
        Some(table) => {
            let record = table.record();
            let rows = record.row_estimate.filter(|n| *n >= 0)? as f64;
            let keys = record
                .constraints
                .iter()
                .filter(|c| matches!(c.kind, ConstraintKind::PrimaryKey | ConstraintKind::Unique))
                .map(|c| c.columns.iter().cloned().collect())
                .collect();
            (rows, keys)
        }
        None => {
            let rows = *provider.statistics()?.num_rows.get_value()? as f64;
            (rows, Vec::new())
        }
    };
    let mut rows = rows.max(1.0);
    let base = rows;
    if let Some(fetch) = scan.fetch {
        rows = rows.min(fetch as f64);
    }
    let present = |k: &BTreeSet<String>| {
        k.iter().all(|name| {
            scan.projected_schema
                .fields()
                .iter()
                .any(|f| f.name() == name)
        })
    };
    let keys: Vec<BTreeSet<String>> = keys.into_iter().filter(present).collect();
    Some(Estimate { rows, base, keys })
}

/// Keys renamed through a projection; a key whose columns do not all pass is dropped.
fn project(projection: &Projection, mut e: Estimate) -> Estimate {
    let mut renamed: HashMap<&str, String> = HashMap::new();
    for (expr, field) in projection.expr.iter().zip(projection.schema.fields()) {
        let column = match expr {
            Expr::Column(c) => c,
            Expr::Alias(alias) => match alias.expr.as_ref() {
                Expr::Column(c) => c,
                _ => continue,
            },
            _ => continue,
        };
        renamed.insert(column.name.as_str(), field.name().clone());
    }
    e.keys = e
        .keys
        .iter()
        .filter_map(|k| k.iter().map(|c| renamed.get(c.as_str()).cloned()).collect())
        .collect();
    e
}

/// A grouping is unique on its group columns and holds at most its input's rows.
fn grouped(aggregate: &Aggregate, input: Estimate) -> Estimate {
    let group: Option<BTreeSet<String>> = aggregate
        .group_expr
        .iter()
        .map(|g| match g {
            Expr::Column(c) => Some(c.name.clone()),
            _ => None,
        })
        .collect();
    let rows = if aggregate.group_expr.is_empty() {
        1.0
    } else {
        input.rows
    };
    let mut keys = Vec::new();
    if let Some(group) = group {
        // The groups are a key, and so is an input key among the group columns.
        keys.extend(input.keys.iter().filter(|k| k.is_subset(&group)).cloned());
        keys.push(group);
    }
    Estimate {
        rows,
        base: rows,
        keys,
    }
}

/// The share of rows `predicate` keeps, by the kind of comparison.
pub(super) fn selectivity(predicate: &Expr, e: &Estimate) -> f64 {
    let s = match predicate {
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => match op {
            Operator::And => selectivity(left, e) * selectivity(right, e),
            Operator::Or => {
                let (a, b) = (selectivity(left, e), selectivity(right, e));
                a + b - a * b
            }
            Operator::Eq => equal(left, right, e).unwrap_or(EQUAL),
            Operator::NotEq => 1.0 - EQUAL,
            Operator::Lt | Operator::LtEq | Operator::Gt | Operator::GtEq => RANGE,
            _ => 0.5,
        },
        Expr::Between(between) if between.negated => 1.0 - RANGE * RANGE,
        Expr::Between(_) => RANGE * RANGE,
        Expr::InList(list) => {
            let one = match list.expr.as_ref() {
                Expr::Column(c) => one_value(&c.name, e),
                _ => EQUAL,
            };
            let s = (one * list.list.len() as f64).min(1.0);
            if list.negated { 1.0 - s } else { s }
        }
        Expr::Like(like) | Expr::SimilarTo(like) => {
            if like.negated {
                1.0 - EQUAL
            } else {
                EQUAL
            }
        }
        Expr::Not(inner) => 1.0 - selectivity(inner, e),
        Expr::IsNull(_) => 0.05,
        Expr::IsNotNull(_) => 0.95,
        Expr::Literal(datafusion::common::ScalarValue::Boolean(Some(b)), _) => {
            if *b {
                1.0
            } else {
                0.0
            }
        }
        _ => 0.5,
    };
    s.clamp(0.0, 1.0)
}

/// `column = value`: see `one_value`.
fn equal(left: &Expr, right: &Expr, e: &Estimate) -> Option<f64> {
    let column = match (left, right) {
        (Expr::Column(c), Expr::Literal(..)) | (Expr::Literal(..), Expr::Column(c)) => c,
        _ => return None,
    };
    Some(one_value(&column.name, e))
}

/// The share of rows holding one value of `column`: one row of a key, else a tenth (no
/// distinct counts are known; a tenth errs towards the written order).
fn one_value(column: &str, e: &Estimate) -> f64 {
    if unique_column(column, e) {
        1.0 / e.base
    } else {
        EQUAL
    }
}

fn unique_column(name: &str, e: &Estimate) -> bool {
    e.keys.iter().any(|k| k.len() == 1 && k.contains(name))
}
