//! Join order from estimated sizes. DataFusion joins inner-joined tables in the order the
//! query names them and only picks each join's build side. This rule reorders a chain of
//! inner joins greedily, smallest expected result first (greedy operator ordering), so the
//! filtered small tables meet first and their matches shrink the large ones early. Its
//! estimates come from `estimate`; where an input has none, the chain keeps its order.
//!
//! Only inner joins with `ON` conditions are reordered: they commute and associate, so the
//! answer cannot change. The reordered chain is topped with a projection back to the
//! original column order. `SET datafusion.optimizer.join_reordering = false` keeps the
//! written order.

mod estimate;

use std::collections::BTreeSet;
use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, NullEquality, Result};
use datafusion::logical_expr::utils::{conjunction, split_conjunction_owned};
use datafusion::logical_expr::{
    BinaryExpr, Expr, Filter, Join, JoinConstraint, JoinType, LogicalPlan, Operator, Projection,
};
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};

use estimate::{Estimate, estimate};

/// The most inputs a chain is reordered over; longer chains keep their order.
const MAX_INPUTS: usize = 16;

/// The join-order rule (see the module doc).
#[derive(Debug, Default)]
pub(crate) struct JoinOrder;

impl OptimizerRule for JoinOrder {
    fn name(&self) -> &str {
        "quarry_join_order"
    }

    fn supports_rewrite(&self) -> bool {
        true
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        // DataFusion's switch for join reordering turns this off too: the written order.
        if !config.options().optimizer.join_reordering {
            return Ok(Transformed::no(plan));
        }
        // A chain it cannot rebuild keeps its order rather than failing the query.
        optimize(plan.clone()).or_else(|e| {
            tracing::debug!(error = %e, "join order left the plan as it is");
            Ok(Transformed::no(plan))
        })
    }
}

/// Reorders every chain in `plan`, inner chains (inside a chain's inputs) first.
fn optimize(plan: LogicalPlan) -> Result<Transformed<LogicalPlan>> {
    if !is_chain_join(&plan) {
        return plan.map_children(optimize);
    }
    let mut inputs = Vec::new();
    let mut predicates = Vec::new();
    let tree = flatten(&plan, &mut inputs, &mut predicates);
    let mut changed = false;
    let inputs = inputs
        .into_iter()
        .map(|input| {
            let t = input.map_children(optimize)?;
            changed |= t.transformed;
            Ok(t.data)
        })
        .collect::<Result<Vec<_>>>()?;
    let Some(conditions) = predicates
        .into_iter()
        .map(|p| Condition::new(p, &inputs))
        .collect::<Option<Vec<_>>>()
    else {
        // A condition reads a column no input has (an outer reference): left as it is.
        return plan.map_children(optimize);
    };
    if let Some(reordered) = reorder(&inputs, &conditions, &tree) {
        let joined = rebuild(&reordered, &inputs, conditions)?;
        let columns = plan.schema().columns().into_iter().map(Expr::Column);
        let projection = Projection::try_new(columns.collect(), Arc::new(joined))?;
        return Ok(Transformed::yes(LogicalPlan::Projection(projection)));
    }
    if changed {
        return Ok(Transformed::yes(rebuild(&tree, &inputs, conditions)?));
    }
    Ok(Transformed::no(plan))
}

/// An inner join whose order may change.
fn is_chain_join(plan: &LogicalPlan) -> bool {
    matches!(plan, LogicalPlan::Join(j)
        if j.join_type == JoinType::Inner
            && j.join_constraint == JoinConstraint::On
            && j.null_equality == NullEquality::NullEqualsNothing
            && !j.null_aware)
}

/// A join tree over input indexes: the chain's current shape.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Tree {
    Input(usize),
    Join(Box<Tree>, Box<Tree>),
}

impl Tree {
    /// The shape with each join's sides in a fixed order, so mirror images compare equal
    /// (the physical planner picks the build side anyway).
    fn canonical(&self) -> (usize, String) {
        match self {
            Tree::Input(i) => (*i, i.to_string()),
            Tree::Join(a, b) => {
                let (a, b) = (a.canonical(), b.canonical());
                let (first, second) = if a.0 <= b.0 { (a, b) } else { (b, a) };
                (first.0, format!("({} {})", first.1, second.1))
            }
        }
    }
}

/// Splits a chain into its inputs and its conditions, recording its shape.
fn flatten(
    plan: &LogicalPlan,
    inputs: &mut Vec<LogicalPlan>,
    predicates: &mut Vec<(Expr, bool)>,
) -> Tree {
    match plan {
        LogicalPlan::Join(join) if is_chain_join(plan) => {
            let left = flatten(&join.left, inputs, predicates);
            let right = flatten(&join.right, inputs, predicates);
            for (l, r) in &join.on {
                predicates.push((l.clone().eq(r.clone()), true));
            }
            if let Some(filter) = &join.filter {
                let filters = split_conjunction_owned(filter.clone());
                predicates.extend(filters.into_iter().map(|expr| (expr, false)));
            }
            Tree::Join(Box::new(left), Box::new(right))
        }
        _ => {
            inputs.push(plan.clone());
            Tree::Input(inputs.len() - 1)
        }
    }
}

/// The input of `inputs` that has `column`.
fn owner(inputs: &[LogicalPlan], column: &Column) -> Option<usize> {
    inputs.iter().position(|i| i.schema().has_column(column))
}

/// A condition of the chain and the inputs it reads.
struct Condition {
    expr: Expr,
    /// An `ON` pair of the query's joins (a filter's equality stays a filter: DataFusion
    /// chose not to hash on it).
    key: bool,
    reads: BTreeSet<usize>,
    /// For `l = r`: the inputs each side reads.
    sides: Option<(BTreeSet<usize>, BTreeSet<usize>)>,
    /// For `a = b` between columns of two inputs: each side's input and column.
    edge: Option<((usize, String), (usize, String))>,
}

impl Condition {
    /// `None` if it reads a column that no input has.
    fn new((expr, key): (Expr, bool), inputs: &[LogicalPlan]) -> Option<Condition> {
        let reads_of = |e: &Expr| -> Option<BTreeSet<usize>> {
            e.column_refs()
                .into_iter()
                .map(|c| owner(inputs, c))
                .collect()
        };
        let reads = reads_of(&expr)?;
        let (mut sides, mut edge) = (None, None);
        if let Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::Eq,
            right,
        }) = &expr
        {
            sides = Some((reads_of(left)?, reads_of(right)?));
            if let (Expr::Column(a), Expr::Column(b)) = (left.as_ref(), right.as_ref()) {
                let (x, y) = (owner(inputs, a)?, owner(inputs, b)?);
                edge = (x != y).then(|| ((x, a.name.clone()), (y, b.name.clone())));
            }
        }
        Some(Condition {
            expr,
            key,
            reads,
            sides,
            edge,
        })
    }

    /// As an `ON` pair of a join of `left` and `right`: a key equality whose sides each
    /// read only one of them.
    fn on_pair(&self, left: &BTreeSet<usize>, right: &BTreeSet<usize>) -> Option<(Expr, Expr)> {
        let (l, r) = match (&self.expr, &self.sides) {
            (Expr::BinaryExpr(b), Some(sides)) if self.key => ((&b.left, &b.right), sides),
            _ => return None,
        };
        let within =
            |set: &BTreeSet<usize>, side: &BTreeSet<usize>| !set.is_empty() && set.is_subset(side);
        if within(&r.0, left) && within(&r.1, right) {
            Some((*l.0.clone(), *l.1.clone()))
        } else if within(&r.0, right) && within(&r.1, left) {
            Some((*l.1.clone(), *l.0.clone()))
        } else {
            None
        }
    }
}

/// A set of inputs joined so far.
struct Part {
    tree: Tree,
    members: BTreeSet<usize>,
    rows: f64,
}

/// The chain in greedy order, or `None` where it keeps its order: too short or too long,
/// an input without an estimate, a volatile condition, or the same order found.
fn reorder(inputs: &[LogicalPlan], conditions: &[Condition], tree: &Tree) -> Option<Tree> {
    if inputs.len() < 3
        || inputs.len() > MAX_INPUTS
        || conditions.iter().any(|c| c.expr.is_volatile())
    {
        return None;
    }
    let estimates = inputs.iter().map(estimate).collect::<Option<Vec<_>>>()?;
    let mut parts: Vec<Part> = estimates
        .iter()
        .enumerate()
        .map(|(i, e)| Part {
            tree: Tree::Input(i),
            members: BTreeSet::from([i]),
            rows: e.rows,
        })
        .collect();
    while parts.len() > 1 {
        let mut best: Option<(f64, bool, usize, usize)> = None;
        for a in 0..parts.len() {
            for b in a + 1..parts.len() {
                let (rows, connected) = joined_rows(&parts[a], &parts[b], conditions, &estimates);
                // Joins with a condition first; a cross product only when nothing else is left.
                let better = match best {
                    None => true,
                    Some((r, c, ..)) => (connected, -rows) > (c, -r),
                };
                if better {
                    best = Some((rows, connected, a, b));
                }
            }
        }
        let (rows, _, a, b) = best?;
        let right = parts.remove(b);
        let left = parts.remove(a);
        let members = left.members.union(&right.members).copied().collect();
        parts.insert(
            a,
            Part {
                tree: Tree::Join(Box::new(left.tree), Box::new(right.tree)),
                members,
                rows,
            },
        );
    }
    let reordered = parts.pop()?.tree;
    (reordered.canonical() != tree.canonical()).then_some(reordered)
}

/// Two inputs, one from each side of a join, and the columns each is compared on.
type KeyPair = ((usize, usize), BTreeSet<String>, BTreeSet<String>);

/// The rows expected from joining `a` and `b`, and whether a condition connects them.
/// Each equality between a column of one input and one of another divides the product by
/// the distinct count of the key: the keyed table's rows where one side is unique on its
/// columns, else the square root of the smaller table's rows (a many-to-many guess that
/// errs large). Of several connecting inputs, the most selective pair counts.
fn joined_rows(
    a: &Part,
    b: &Part,
    conditions: &[Condition],
    estimates: &[Estimate],
) -> (f64, bool) {
    let product = a.rows * b.rows;
    let mut pairs: Vec<KeyPair> = Vec::new();
    let mut other_conditions = 0;
    for c in conditions {
        let inside = |p: &Part| c.reads.is_subset(&p.members);
        let across = c
            .reads
            .iter()
            .all(|r| a.members.contains(r) || b.members.contains(r));
        if !across || inside(a) || inside(b) {
            continue;
        }
        match &c.edge {
            Some(((x, cx), (y, cy))) => {
                let ((ia, ca), (ib, cb)) = if a.members.contains(x) {
                    ((*x, cx), (*y, cy))
                } else {
                    ((*y, cy), (*x, cx))
                };
                match pairs.iter_mut().find(|(p, ..)| *p == (ia, ib)) {
                    Some((_, sa, sb)) => {
                        sa.insert(ca.clone());
                        sb.insert(cb.clone());
                    }
                    None => pairs.push((
                        (ia, ib),
                        BTreeSet::from([ca.clone()]),
                        BTreeSet::from([cb.clone()]),
                    )),
                }
            }
            None => other_conditions += 1,
        }
    }
    let filtered = estimate::OTHER_CONDITION.powi(other_conditions);
    if pairs.is_empty() {
        return (product * filtered, other_conditions > 0);
    }
    let rows = pairs
        .iter()
        .map(|((ia, ib), ca, cb)| {
            let (ea, eb) = (&estimates[*ia], &estimates[*ib]);
            let distinct = match (ea.is_unique_on(ca), eb.is_unique_on(cb)) {
                (true, true) => ea.base.max(eb.base),
                (true, false) => ea.base,
                (false, true) => eb.base,
                (false, false) => ea.base.min(eb.base).sqrt(),
            };
            product / distinct.max(1.0)
        })
        .fold(f64::INFINITY, f64::min);
    (rows * filtered, true)
}

/// Builds the join tree `tree` over `inputs`, each condition placed at the lowest join that
/// has every input it reads; conditions that read no input go on top.
fn rebuild(tree: &Tree, inputs: &[LogicalPlan], conditions: Vec<Condition>) -> Result<LogicalPlan> {
    let mut pending = conditions;
    let (plan, _) = build(tree, inputs, &mut pending)?;
    Ok(match conjunction(pending.into_iter().map(|c| c.expr)) {
        Some(predicate) => LogicalPlan::Filter(Filter::try_new(predicate, Arc::new(plan))?),
        None => plan,
    })
}

fn build(
    tree: &Tree,
    inputs: &[LogicalPlan],
    pending: &mut Vec<Condition>,
) -> Result<(LogicalPlan, BTreeSet<usize>)> {
    let (left, right) = match tree {
        Tree::Input(i) => return Ok((inputs[*i].clone(), BTreeSet::from([*i]))),
        Tree::Join(l, r) => (l, r),
    };
    let (left, left_members) = build(left, inputs, pending)?;
    let (right, right_members) = build(right, inputs, pending)?;
    let members: BTreeSet<usize> = left_members.union(&right_members).copied().collect();
    let (here, rest): (Vec<Condition>, Vec<Condition>) = std::mem::take(pending)
        .into_iter()
        .partition(|c| !c.reads.is_empty() && c.reads.is_subset(&members));
    *pending = rest;
    let mut on = Vec::new();
    let mut filters = Vec::new();
    for condition in here {
        match condition.on_pair(&left_members, &right_members) {
            Some(pair) => on.push(pair),
            None => filters.push(condition.expr),
        }
    }
    let join = Join::try_new(
        Arc::new(left),
        Arc::new(right),
        on,
        conjunction(filters),
        JoinType::Inner,
        JoinConstraint::On,
        NullEquality::NullEqualsNothing,
        false,
    )?;
    Ok((LogicalPlan::Join(join), members))
}

#[cfg(test)]
mod tests {
    use async_trait::async_trait;
    use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
    use datafusion::catalog::{Session, TableProvider};
    use datafusion::common::stats::Precision;
    use datafusion::common::{JoinType, Statistics};
    use datafusion::datasource::{TableType, provider_as_source};
    use datafusion::logical_expr::{LogicalPlanBuilder, col, lit};
    use datafusion::optimizer::OptimizerContext;
    use datafusion::physical_plan::ExecutionPlan;

    use super::*;

    /// A table known only by its row count (`None`: no statistics).
    #[derive(Debug)]
    struct Sized(Option<usize>);

    #[async_trait]
    impl TableProvider for Sized {
        fn schema(&self) -> SchemaRef {
            Arc::new(Schema::new(vec![
                Field::new("id", DataType::Int64, false),
                Field::new("other_id", DataType::Int64, false),
                Field::new("v", DataType::Int64, false),
            ]))
        }

        fn table_type(&self) -> TableType {
            TableType::Base
        }

        fn statistics(&self) -> Option<Statistics> {
            let rows = self.0?;
            let mut statistics = Statistics::new_unknown(&self.schema());
            statistics.num_rows = Precision::Exact(rows);
            Some(statistics)
        }

        async fn scan(
            &self,
            _: &dyn Session,
            _: Option<&Vec<usize>>,
            _: &[Expr],
            _: Option<usize>,
        ) -> Result<Arc<dyn ExecutionPlan>> {
            unreachable!("the rule only plans")
        }
    }

    fn scan(name: &str, rows: Option<usize>) -> LogicalPlanBuilder {
        LogicalPlanBuilder::scan(name, provider_as_source(Arc::new(Sized(rows))), None).unwrap()
    }

    /// `big ⋈ mid ⋈ small` as written, `small` filtered.
    fn chain(small_rows: Option<usize>) -> LogicalPlan {
        let small = scan("small", small_rows)
            .filter(col("small.v").eq(lit(3)))
            .unwrap()
            .build()
            .unwrap();
        scan("big", Some(100_000))
            .join_on(
                scan("mid", Some(1_000)).build().unwrap(),
                JoinType::Inner,
                [col("big.other_id").eq(col("mid.id"))],
            )
            .unwrap()
            .join_on(
                small,
                JoinType::Inner,
                [col("big.id").eq(col("small.other_id"))],
            )
            .unwrap()
            .build()
            .unwrap()
    }

    fn optimized(plan: LogicalPlan) -> Transformed<LogicalPlan> {
        let plan = datafusion::optimizer::Optimizer::with_rules(vec![Arc::new(
            datafusion::optimizer::extract_equijoin_predicate::ExtractEquijoinPredicate::new(),
        )])
        .optimize(plan, &OptimizerContext::new(), |_, _| {})
        .unwrap();
        JoinOrder.rewrite(plan, &OptimizerContext::new()).unwrap()
    }

    /// The tables under each join, innermost first.
    fn joins(plan: &LogicalPlan) -> Vec<BTreeSet<String>> {
        use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
        let mut found = Vec::new();
        plan.apply(|node| {
            if let LogicalPlan::Join(_) = node {
                let mut tables = BTreeSet::new();
                node.apply(|n| {
                    if let LogicalPlan::TableScan(s) = n {
                        tables.insert(s.table_name.table().to_owned());
                    }
                    Ok(TreeNodeRecursion::Continue)
                })?;
                found.push(tables);
            }
            Ok(TreeNodeRecursion::Continue)
        })
        .unwrap();
        found.sort_by_key(BTreeSet::len);
        found
    }

    #[test]
    fn a_filtered_small_table_joins_the_large_one_first() {
        let plan = chain(Some(1_000));
        assert_eq!(
            joins(&plan)[0],
            BTreeSet::from(["big".into(), "mid".into()])
        );
        let reordered = optimized(plan.clone());
        assert!(reordered.transformed);
        assert_eq!(
            joins(&reordered.data)[0],
            BTreeSet::from(["big".into(), "small".into()])
        );
        // The same columns in the same order, from the same tables.
        assert_eq!(reordered.data.schema(), plan.schema());
    }

    #[test]
    fn a_second_pass_keeps_the_order_the_first_chose() {
        let once = optimized(chain(Some(1_000))).data;
        let twice = JoinOrder
            .rewrite(once.clone(), &OptimizerContext::new())
            .unwrap();
        assert!(!twice.transformed, "{}", twice.data.display_indent());
    }

    #[test]
    fn an_input_without_a_row_count_keeps_the_written_order() {
        let kept = optimized(chain(None));
        assert!(!kept.transformed);
        assert_eq!(
            joins(&kept.data)[0],
            BTreeSet::from(["big".into(), "mid".into()])
        );
    }

    #[test]
    fn an_input_joined_by_no_condition_is_joined_last() {
        // `far` shares no condition with the others: a cross product, whatever its size.
        let plan = scan("far", Some(2))
            .cross_join(scan("big", Some(100_000)).build().unwrap())
            .unwrap()
            .join_on(
                scan("mid", Some(1_000)).build().unwrap(),
                JoinType::Inner,
                [col("big.other_id").eq(col("mid.id"))],
            )
            .unwrap()
            .build()
            .unwrap();
        let reordered = optimized(plan);
        assert!(reordered.transformed);
        assert_eq!(
            joins(&reordered.data)[0],
            BTreeSet::from(["big".into(), "mid".into()])
        );
    }
}
