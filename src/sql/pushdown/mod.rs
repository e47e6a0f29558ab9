//! Pushdown: a table read live is a datafusion-federation SQL table of its connection. The
//! federation rule finds the largest sub-plans that touch only one connection's live
//! tables; [`rules::Rules`] keeps what the source would answer differently local, and the
//! rest goes to the source as one statement in its dialect, run by the source's own
//! readers ([`executor::SourceExecutor`]). `EXPLAIN` shows each statement.

mod decimal_avg;
mod executor;
pub(crate) use executor::remote_rows;
mod live_table;
mod rules;

pub(crate) use live_table::live_table;

use std::any::Any;
use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, TableReference};
use datafusion::error::Result;
use datafusion::execution::context::QueryPlanner;
use datafusion::logical_expr::{
    Aggregate, Expr, Extension, Filter, Limit, LogicalPlan, Projection, Sort, SubqueryAlias,
    TableScan,
};
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_planner::{DefaultPhysicalPlanner, PhysicalPlanner};
use datafusion_federation::sql::{SQLTableSource, VirtualExecutionPlan};
use datafusion_federation::{
    FederatedPlanNode, FederatedPlanner, FederationOptimizerRule, FederationPlanner,
    get_table_source,
};

use self::live_table::LiveTable;
use self::rules::Rules;

/// Whether `scan` reads a live table.
pub(crate) fn is_live_scan(scan: &TableScan) -> bool {
    live_of(scan).is_some()
}

/// The live table `scan` reads, if it reads one.
fn live_of(scan: &TableScan) -> Option<Arc<SQLTableSource>> {
    let source = get_table_source(&scan.source).ok()??;
    let source = Arc::clone(&source) as Arc<dyn Any + Send + Sync>;
    source.downcast::<SQLTableSource>().ok()
}

fn has_live_scan(plan: &LogicalPlan) -> bool {
    let mut found = false;
    let _ = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node
            && is_live_scan(scan)
        {
            found = true;
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    found
}

/// The federation rule, run only on plans that read a live table. Where it cannot place a
/// plan (it does not federate `IN` subqueries that survived decorrelation), the plan is left
/// as it is and its live tables are scanned whole, with the filters above them local.
#[derive(Debug, Default)]
pub(crate) struct PushDown {
    federation: FederationOptimizerRule,
}

impl OptimizerRule for PushDown {
    fn name(&self) -> &str {
        "quarry_pushdown"
    }

    fn supports_rewrite(&self) -> bool {
        true
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        if !has_live_scan(&plan) {
            return Ok(Transformed::no(plan));
        }
        match self.federation.rewrite(plan.clone(), config) {
            Ok(rewritten) => Ok(rewritten),
            Err(e) => {
                tracing::debug!(error = %e, "pushdown left the plan as it is");
                Ok(Transformed::no(plan))
            }
        }
    }
}

/// The optimizer rules of a Quarry session: DataFusion's, with the pushdown rule after
/// scalar subqueries became joins (so they can be pushed with the rest).
pub(crate) fn optimizer_rules(
    mut rules: Vec<Arc<dyn OptimizerRule + Send + Sync>>,
) -> Vec<Arc<dyn OptimizerRule + Send + Sync>> {
    let at = rules
        .iter()
        .position(|r| r.name() == "scalar_subquery_to_join")
        .map_or(0, |i| i + 1);
    rules.insert(at, Arc::new(PushDown::default()));
    rules
}

/// Plans federated nodes as statements sent to their source; the rest as DataFusion does.
#[derive(Debug, Default)]
pub(crate) struct PushDownPlanner;

#[async_trait]
impl QueryPlanner for PushDownPlanner {
    async fn create_physical_plan(
        &self,
        logical_plan: &LogicalPlan,
        session_state: &dyn datafusion::catalog::Session,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let planner =
            DefaultPhysicalPlanner::with_extension_planners(vec![
                Arc::new(FederatedPlanner::new()),
            ]);
        match planner
            .create_physical_plan(logical_plan, session_state)
            .await
        {
            Ok(plan) => Ok(plan),
            // A sub-plan the federation crate could not rewrite for its source: the query
            // runs locally over whole-table reads of its live tables instead of failing.
            Err(e) if has_federated_node(logical_plan) => {
                tracing::debug!(error = %e, "pushdown failed to plan; running locally");
                let local = logical_plan
                    .clone()
                    .transform_up(|node| {
                        let inner = match &node {
                            LogicalPlan::Extension(Extension { node: inner }) => inner
                                .as_any()
                                .downcast_ref::<FederatedPlanNode>()
                                .map(|f| f.plan().clone()),
                            _ => None,
                        };
                        Ok(match inner {
                            Some(plan) => Transformed::yes(plan),
                            None => Transformed::no(node),
                        })
                    })?
                    .data;
                DefaultPhysicalPlanner::default()
                    .create_physical_plan(&local, session_state)
                    .await
            }
            Err(e) => Err(e),
        }
    }
}

/// Whether `plan` holds a sub-plan placed on a source.
fn has_federated_node(plan: &LogicalPlan) -> bool {
    let mut found = false;
    let _ = plan.apply(|node| {
        if let LogicalPlan::Extension(Extension { node }) = node
            && node.as_any().is::<FederatedPlanNode>()
        {
            found = true;
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    found
}

/// The last physical optimizer rule: each pushed-down statement becomes a
/// [`executor::RemoteScanExec`] (a rule rather than a planner step, so `EXPLAIN` shows it).
#[derive(Debug, Default)]
pub(crate) struct AdoptRemoteScans;

impl PhysicalOptimizerRule for AdoptRemoteScans {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &datafusion::config::ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        executor::adopt_remote_scans(plan)
    }

    fn name(&self) -> &str {
        "quarry_remote_scans"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// Places `plan` (a federated node's plan, all on one connection): the largest sub-plans
/// the source computes as DataFusion would go to it; the nodes it would not stay local.
fn place(
    plan: LogicalPlan,
    rules: &Rules,
    planner: &Arc<dyn FederationPlanner>,
) -> Result<LogicalPlan> {
    if rules.pushable(&plan) && !has_bare_cross_join(&plan, false) {
        // The statement's columns come in the plan's order only under a projection (the
        // unparser writes an aggregate's keys after its aggregates).
        let plan = match plan {
            LogicalPlan::Projection(_) => plan,
            other => {
                let columns = other
                    .schema()
                    .columns()
                    .into_iter()
                    .map(Expr::Column)
                    .collect();
                LogicalPlan::Projection(Projection::try_new(columns, Arc::new(other))?)
            }
        };
        return Ok(LogicalPlan::Extension(Extension {
            node: Arc::new(FederatedPlanNode::new(plan, Arc::clone(planner))),
        }));
    }
    if let LogicalPlan::TableScan(_) = plan {
        // Not even the scan can go (a type the source's rows cannot carry): read it whole.
        return Ok(plan);
    }
    // Conditions that stay local, above a plan that can go once they are out of it.
    let local_conditions = match &plan {
        LogicalPlan::Filter(filter) => split_filter(filter, rules)?,
        LogicalPlan::Join(_) => lift_left_filter(&plan, rules)?,
        _ => None,
    };
    if let Some((local, pushed)) = local_conditions {
        let placed = place(pushed, rules, planner)?;
        return Ok(LogicalPlan::Filter(Filter::try_new(
            local,
            Arc::new(placed),
        )?));
    }
    if let LogicalPlan::Projection(p) = &plan
        && let Some(narrowed) = narrow_input(p, rules)?
    {
        let placed = place(narrowed, rules, planner)?;
        return Ok(LogicalPlan::Projection(Projection::try_new_with_schema(
            p.expr.clone(),
            Arc::new(placed),
            Arc::clone(&p.schema),
        )?));
    }
    let plan = narrow_exists_side(plan)?;
    let inputs = plan
        .inputs()
        .into_iter()
        .cloned()
        .map(|input| place(input, rules, planner))
        .collect::<Result<Vec<_>>>()?;
    plan.with_new_exprs(plan.expressions(), inputs)
}

/// A semi or anti join whose left side is filtered by conditions that stay local (a scalar
/// subquery, TPC-H Q22's), with those conditions moved above it: the join keeps only left
/// rows, so a condition on them means the same there, and the join can go to the source.
fn lift_left_filter(plan: &LogicalPlan, rules: &Rules) -> Result<Option<(Expr, LogicalPlan)>> {
    use datafusion::logical_expr::JoinType;
    let LogicalPlan::Join(join) = plan else {
        return Ok(None);
    };
    if !matches!(join.join_type, JoinType::LeftSemi | JoinType::LeftAnti) {
        return Ok(None);
    }
    // The filter, under the fence `normalize` may have put around it (an alias of a
    // projection of its columns, named as they are).
    let (fence, filter) = match join.left.as_ref() {
        LogicalPlan::Filter(filter) => (None, filter),
        LogicalPlan::SubqueryAlias(alias) => match alias.input.as_ref() {
            LogicalPlan::Projection(p)
                if p.expr.iter().all(|e| matches!(e, Expr::Column(_)))
                    && p.schema.iter().eq(p.input.schema().iter()) =>
            {
                match p.input.as_ref() {
                    LogicalPlan::Filter(filter)
                        if sole_qualifier(filter.input.schema()).as_ref() == Some(&alias.alias) =>
                    {
                        (Some(alias.alias.clone()), filter)
                    }
                    _ => return Ok(None),
                }
            }
            _ => return Ok(None),
        },
        _ => return Ok(None),
    };
    let left = match split_filter(filter, rules)? {
        Some((local, pushed)) => Some((local, pushed)),
        // No condition can go: the whole filter moves up, over the unfiltered input.
        None if !rules.pushable(&LogicalPlan::Filter(filter.clone()))
            && rules.pushable(&filter.input) =>
        {
            Some((filter.predicate.clone(), filter.input.as_ref().clone()))
        }
        None => None,
    };
    let Some((local, left)) = left else {
        return Ok(None);
    };
    let left = match fence {
        Some(name) => fenced(Arc::new(left), name)?,
        None => left,
    };
    let mut lifted = join.clone();
    lifted.left = Arc::new(left);
    let lifted = LogicalPlan::Join(lifted);
    if !rules.pushable(&lifted) {
        return Ok(None);
    }
    Ok(Some((local, lifted)))
}

/// A semi or anti join that stays local with its right side cut to the columns its
/// condition reads: only they are fetched for it (`EXISTS (SELECT * ...)` asks for all,
/// TPC-H Q22's whole `orders`). Its answer has the left side's columns only.
fn narrow_exists_side(plan: LogicalPlan) -> Result<LogicalPlan> {
    use datafusion::logical_expr::JoinType;
    let LogicalPlan::Join(join) = &plan else {
        return Ok(plan);
    };
    let LogicalPlan::SubqueryAlias(alias) = join.right.as_ref() else {
        return Ok(plan);
    };
    if !matches!(join.join_type, JoinType::LeftSemi | JoinType::LeftAnti) {
        return Ok(plan);
    }
    let mut read: HashSet<&Column> = join.on.iter().flat_map(|(_, r)| r.column_refs()).collect();
    if let Some(filter) = &join.filter {
        read.extend(filter.column_refs());
    }
    // The inner plan's column for each of the alias's columns that the condition reads.
    let columns: Vec<Expr> = alias
        .schema
        .columns()
        .iter()
        .zip(alias.input.schema().columns())
        .filter(|(outer, _)| read.contains(outer))
        .map(|(_, inner)| Expr::Column(inner))
        .collect();
    if columns.is_empty() || columns.len() == alias.schema.fields().len() {
        return Ok(plan);
    }
    let projection = Projection::try_new(columns, Arc::clone(&alias.input))?;
    let right = SubqueryAlias::try_new(
        Arc::new(LogicalPlan::Projection(projection)),
        alias.alias.clone(),
    )?;
    let mut join = join.clone();
    join.right = Arc::new(LogicalPlan::SubqueryAlias(right));
    Ok(LogicalPlan::Join(join))
}

/// A filter that cannot go whole, over an input that can, split: the conditions the source
/// computes as DataFusion does go with the input, the rest (a scalar subquery, a function
/// that stays local) stay above it. `None` if one side would be empty.
fn split_filter(filter: &Filter, rules: &Rules) -> Result<Option<(Expr, LogicalPlan)>> {
    use datafusion::logical_expr::utils::{conjunction, split_conjunction};
    let input = filter.input.as_ref();
    if !rules.pushable(input) || has_bare_cross_join(input, false) {
        return Ok(None);
    }
    let (down, up): (Vec<&Expr>, Vec<&Expr>) = split_conjunction(&filter.predicate)
        .into_iter()
        .partition(|c| rules.expr(c, input.schema()));
    let (Some(down), Some(up)) = (
        conjunction(down.into_iter().cloned()),
        conjunction(up.into_iter().cloned()),
    ) else {
        return Ok(None);
    };
    let pushed = Filter::try_new(down, Arc::clone(&filter.input))?;
    Ok(Some((up, LogicalPlan::Filter(pushed))))
}

/// The input of `p` (a projection that stays local) cut to the columns `p` reads, where the
/// input goes to the source whole: the statement then sends only those columns, not every
/// column of every table it joins (TPC-H Q7 to Q9, whose `extract` stays local).
fn narrow_input(p: &Projection, rules: &Rules) -> Result<Option<LogicalPlan>> {
    let input = p.input.as_ref();
    let joined = matches!(
        input,
        LogicalPlan::Join(_) | LogicalPlan::Filter(_) | LogicalPlan::SubqueryAlias(_)
    );
    if !joined || !rules.pushable(input) || has_bare_cross_join(input, false) {
        return Ok(None);
    }
    let read: HashSet<Column> = p
        .expr
        .iter()
        .flat_map(|e| e.column_refs())
        .cloned()
        .collect();
    let columns: Vec<Expr> = input
        .schema()
        .columns()
        .into_iter()
        .filter(|c| read.contains(c))
        .map(Expr::Column)
        .collect();
    if columns.is_empty() || columns.len() == input.schema().fields().len() {
        return Ok(None);
    }
    Ok(Some(LogicalPlan::Projection(Projection::try_new(
        columns,
        Arc::clone(&p.input),
    )?)))
}

/// Whether `plan` joins without a condition where no filter above gives it one (the filter
/// over a comma join stayed local): pushed, the source would compute the cross product.
fn has_bare_cross_join(plan: &LogicalPlan, under_filter: bool) -> bool {
    let bare =
        matches!(plan, LogicalPlan::Join(join) if join.on.is_empty() && join.filter.is_none());
    if bare && !under_filter {
        return true;
    }
    let filter = matches!(plan, LogicalPlan::Filter(_))
        || (under_filter && matches!(plan, LogicalPlan::Join(_)));
    plan.inputs()
        .into_iter()
        .any(|input| has_bare_cross_join(input, filter))
}

/// The federation crate's hook: re-places the sub-plan it chose for one connection.
pub(super) fn split(plan: LogicalPlan, rules: Rules) -> Result<LogicalPlan> {
    let LogicalPlan::Extension(Extension { node }) = &plan else {
        return Ok(plan);
    };
    let Some(federated) = node.as_any().downcast_ref::<FederatedPlanNode>() else {
        return Ok(plan);
    };
    let planner = Arc::clone(&federated.planner);
    let plan = push_filters_down(federated.plan().clone());
    let plan = normalize(plan)?;
    name_live_tables(&plan);
    place(plan, &rules, &planner)
}

/// `plan` with its filters moved down to the joins and tables they read, as DataFusion's
/// own rule moves them later: the pushdown rule runs before it, while the conditions of a
/// comma join still sit in a filter above a join that cannot go (TPC-H Q17's, above its
/// subquery's join), and the join under it would otherwise go as a cross product or not at
/// all. Left as it was if the rule does not apply.
fn push_filters_down(plan: LogicalPlan) -> LogicalPlan {
    use datafusion::optimizer::eliminate_cross_join::EliminateCrossJoin;
    use datafusion::optimizer::push_down_filter::PushDownFilter;
    // Comma joins become joins on their conditions first, as in DataFusion's own order: a
    // filter moved off a join tree would leave its inner cross joins bare.
    let optimizer = datafusion::optimizer::Optimizer::with_rules(vec![
        Arc::new(EliminateCrossJoin::new()),
        Arc::new(PushDownFilter::new()),
    ]);
    let config = datafusion::optimizer::OptimizerContext::new();
    match optimizer.optimize(plan.clone(), &config, |_, _| {}) {
        Ok(pushed) => pushed,
        Err(e) => {
            tracing::debug!(error = %e, "filters stayed where they were");
            plan
        }
    }
}

/// Tells each live table the name its scans use (see `LiveTable::table_reference`).
fn name_live_tables(plan: &LogicalPlan) {
    let _ = plan.apply(|node| {
        if let LogicalPlan::TableScan(scan) = node
            && let Some(source) = live_of(scan)
            && let Some(live) = source.table.as_any().downcast_ref::<LiveTable>()
        {
            live.named_by(&scan.table_name);
        }
        Ok(TreeNodeRecursion::Continue)
    });
}

/// Rewrites what unparses into SQL that means something else: a constant grouping key
/// (decorrelated subqueries group by `true`) would be positional at the source, so it is
/// computed above the aggregate; an unnamed computed column gets its name as an alias, so an
/// enclosing statement can refer to it.
pub(super) fn normalize(plan: LogicalPlan) -> Result<LogicalPlan> {
    plan.transform_up(|node| {
        // A rewrite that cannot be built leaves its node as it was (it is then unparsed as
        // the federation crate would have).
        let original = node.clone();
        Ok(normalize_node(node).unwrap_or_else(|e| {
            tracing::debug!(error = %e, "a pushdown rewrite did not apply");
            Transformed::no(original)
        }))
    })
    .map(|t| t.data)
}

/// One step of [`normalize`].
fn normalize_node(node: LogicalPlan) -> Result<Transformed<LogicalPlan>> {
    {
        let node = match node {
            LogicalPlan::Projection(p) if is_identity(&p) => {
                return Ok(Transformed::yes(Arc::unwrap_or_clone(p.input)));
            }
            LogicalPlan::Projection(p)
                if matches!(p.input.as_ref(), LogicalPlan::Limit(_))
                    && p.expr.iter().all(|e| matches!(e, Expr::Column(_))) =>
            {
                return pick_under_limit(p);
            }
            LogicalPlan::Projection(p) => match lift_constant_keys(&p)? {
                Some(lifted) => lifted,
                None => skip_passthrough(p),
            },
            LogicalPlan::Join(join) => return fence_filtered_sides(join),
            LogicalPlan::Aggregate(agg) => {
                // The split's projection is a projection over an aggregate like any other:
                // constant keys come out of the aggregate the same way.
                return decimal_avg::split(agg)?.transform_data(|plan| match plan {
                    LogicalPlan::Projection(p) => Ok(match lift_constant_keys(&p)? {
                        Some(lifted) => Transformed::yes(LogicalPlan::Projection(lifted)),
                        None => Transformed::no(LogicalPlan::Projection(p)),
                    }),
                    other => Ok(Transformed::no(other)),
                });
            }
            LogicalPlan::SubqueryAlias(alias)
                if matches!(alias.input.as_ref(), LogicalPlan::Filter(_)) =>
            {
                return lift_filters_over_alias(alias);
            }
            LogicalPlan::SubqueryAlias(alias)
                if matches!(alias.input.as_ref(), LogicalPlan::Aggregate(_)) =>
            {
                // Give the aggregate a projection that the next step names.
                let columns = alias.input.schema().columns().into_iter().map(Expr::Column);
                let projection = Projection::try_new(columns.collect(), Arc::clone(&alias.input))?;
                let named = name_columns(projection)?;
                let plan = SubqueryAlias::try_new(
                    Arc::new(LogicalPlan::Projection(named)),
                    alias.alias.clone(),
                )?;
                return Ok(Transformed::yes(LogicalPlan::SubqueryAlias(plan)));
            }
            other => return Ok(Transformed::no(other)),
        };
        let over_aggregate = matches!(node.input.as_ref(), LogicalPlan::Aggregate(_));
        if node.expr.iter().all(|e| match e {
            Expr::Alias(_) => true,
            Expr::Column(_) => !over_aggregate,
            _ => false,
        }) {
            return Ok(Transformed::no(LogicalPlan::Projection(node)));
        }
        Ok(Transformed::yes(LogicalPlan::Projection(name_columns(
            node,
        )?)))
    }
}

/// Filters between an alias and the table it names, moved above the alias and renamed by
/// it: the unparser writes them in the statement's `WHERE` under the table's own name,
/// which the alias hides (filters moved down through the alias put them there).
fn lift_filters_over_alias(alias: SubqueryAlias) -> Result<Transformed<LogicalPlan>> {
    let mut predicates = Vec::new();
    let mut node = Arc::clone(&alias.input);
    while let LogicalPlan::Filter(filter) = node.as_ref() {
        predicates.push(filter.predicate.clone());
        node = Arc::clone(&filter.input);
    }
    let LogicalPlan::TableScan(scan) = node.as_ref() else {
        return Ok(Transformed::no(LogicalPlan::SubqueryAlias(alias)));
    };
    let table = scan.table_name.clone();
    let renamed = predicates
        .into_iter()
        .map(|p| {
            p.transform(|e| match e {
                Expr::Column(c) if c.relation.as_ref() == Some(&table) => Ok(Transformed::yes(
                    Expr::Column(Column::new(Some(alias.alias.clone()), c.name)),
                )),
                other => Ok(Transformed::no(other)),
            })
            .map(|t| t.data)
        })
        .collect::<Result<Vec<_>>>()?;
    let Some(predicate) = datafusion::logical_expr::utils::conjunction(renamed) else {
        return Ok(Transformed::no(LogicalPlan::SubqueryAlias(alias)));
    };
    let aliased = SubqueryAlias::try_new(node, alias.alias.clone())?;
    Ok(Transformed::yes(LogicalPlan::Filter(Filter::try_new(
        predicate,
        Arc::new(LogicalPlan::SubqueryAlias(aliased)),
    )?)))
}

/// Whether `p` only passes the columns of a sort over a projection through, unchanged: the
/// unparser would make the sort a derived table while `p` still names the columns by the
/// table inside it, which the source refuses ("missing FROM-clause entry", TPC-H Q5, Q13).
/// Elsewhere the unparser needs `p` to write the select list (a join without it would
/// unparse as `SELECT FROM`).
fn is_identity(p: &Projection) -> bool {
    let LogicalPlan::Sort(sort) = p.input.as_ref() else {
        return false;
    };
    // Column-only expressions with the input's schema can only be its columns, in order.
    matches!(sort.input.as_ref(), LogicalPlan::Projection(_))
        && p.expr.iter().all(|e| matches!(e, Expr::Column(_)))
        && p.schema.iter().eq(p.input.schema().iter())
}

/// `p`, which only picks columns of a `LIMIT`, moved under it (and under the sort the limit
/// reads, when the sort's keys are among the columns picked): the unparser makes the limited
/// input a derived table but keeps the table's name on `p`'s columns. An `ORDER BY` is never
/// left in a derived table, where MySQL would drop it.
fn pick_under_limit(p: Projection) -> Result<Transformed<LogicalPlan>> {
    let LogicalPlan::Limit(limit) = p.input.as_ref() else {
        return Ok(Transformed::no(LogicalPlan::Projection(p)));
    };
    let limited = match limit.input.as_ref() {
        LogicalPlan::Sort(sort) => {
            let picked: HashSet<&Column> = p.expr.iter().filter_map(Expr::try_as_col).collect();
            let keys_picked = sort
                .expr
                .iter()
                .all(|key| key.expr.column_refs().iter().all(|c| picked.contains(c)));
            if !keys_picked {
                return Ok(Transformed::no(LogicalPlan::Projection(p)));
            }
            let projection = skip_passthrough(Projection::try_new(
                p.expr.clone(),
                Arc::clone(&sort.input),
            )?);
            LogicalPlan::Sort(Sort {
                expr: sort.expr.clone(),
                input: Arc::new(LogicalPlan::Projection(projection)),
                fetch: sort.fetch,
            })
        }
        other => LogicalPlan::Projection(skip_passthrough(Projection::try_new(
            p.expr.clone(),
            Arc::new(other.clone()),
        )?)),
    };
    Ok(Transformed::yes(LogicalPlan::Limit(Limit {
        skip: limit.skip.clone(),
        fetch: limit.fetch.clone(),
        input: Arc::new(limited),
    })))
}

/// `p` reading its input's input where the input only picks columns: the unparser makes
/// such an inner projection a derived table, under a name `p`'s columns do not carry.
fn skip_passthrough(p: Projection) -> Projection {
    let LogicalPlan::Projection(inner) = p.input.as_ref() else {
        return p;
    };
    if !inner.expr.iter().all(|e| matches!(e, Expr::Column(_))) {
        return pick_from_projection(p);
    }
    match Projection::try_new_with_schema(
        p.expr.clone(),
        Arc::clone(&inner.input),
        Arc::clone(&p.schema),
    ) {
        Ok(skipped) => skipped,
        Err(_) => p,
    }
}

/// `p`, which only picks columns of the projection below it, made of that projection's
/// expressions: two projections in a row unparse into a derived table whose columns `p`
/// would name by the table's name.
fn pick_from_projection(p: Projection) -> Projection {
    let LogicalPlan::Projection(inner) = p.input.as_ref() else {
        return p;
    };
    let picked: Option<Vec<Expr>> = p
        .expr
        .iter()
        .map(|e| {
            let column = e.try_as_col()?;
            let i = inner.schema.index_of_column(column).ok()?;
            Some(inner.expr[i].clone())
        })
        .collect();
    let Some(picked) = picked else {
        return p;
    };
    match Projection::try_new_with_schema(picked, Arc::clone(&inner.input), Arc::clone(&p.schema)) {
        Ok(composed) => composed,
        Err(_) => p,
    }
}

/// `p` with every output named by an alias: computed columns, and the columns of an
/// aggregate below (the source would name `min(x)` its own way, which an enclosing
/// statement could not refer to).
fn name_columns(p: Projection) -> Result<Projection> {
    let over_aggregate = matches!(p.input.as_ref(), LogicalPlan::Aggregate(_));
    let exprs = p
        .expr
        .iter()
        .zip(p.schema.iter())
        .map(|(e, (qualifier, field))| match e {
            Expr::Alias(_) => e.clone(),
            Expr::Column(_) if !over_aggregate => e.clone(),
            other => other
                .clone()
                .alias_qualified(qualifier.cloned(), field.name()),
        })
        .collect();
    Projection::try_new_with_schema(exprs, p.input, p.schema)
}

/// The unparser moves the filters of a join input that is a plain scan into the join's `ON`
/// clause, which for the preserved side of an outer join keeps the rows they should remove,
/// and which a semi or anti join (unparsed as `EXISTS`) drops. A projection over such an
/// input stops that: it becomes a derived table with its `WHERE`, aliased as the table.
fn fence_filtered_sides(
    mut join: datafusion::logical_expr::Join,
) -> Result<Transformed<LogicalPlan>> {
    use datafusion::logical_expr::JoinType;
    let (left, right) = match join.join_type {
        JoinType::Left => (true, false),
        JoinType::Right => (false, true),
        JoinType::Full | JoinType::LeftSemi | JoinType::LeftAnti => (true, true),
        _ => (false, false),
    };
    let mut changed = false;
    for (fence, input) in [(left, &mut join.left), (right, &mut join.right)] {
        if let LogicalPlan::Projection(projection) = input.as_ref()
            && let Some(name) = sole_qualifier(&projection.schema)
        {
            // The unparser names a projected join input `derived_projection` while the join
            // condition keeps naming its table (TPC-H Q11's subquery): alias it as the table.
            *input = Arc::new(LogicalPlan::SubqueryAlias(SubqueryAlias::try_new(
                Arc::clone(input),
                name,
            )?));
            changed = true;
        } else if fence && filtered_scan(input) {
            // Under the name its columns already carry, so references above still resolve.
            let Some(name) = input.schema().iter().next().and_then(|(q, _)| q.cloned()) else {
                continue;
            };
            *input = Arc::new(fenced(Arc::clone(input), name)?);
            changed = true;
        }
    }
    let plan = LogicalPlan::Join(join);
    Ok(if changed {
        Transformed::yes(plan)
    } else {
        Transformed::no(plan)
    })
}

/// `input` as a derived table of all its columns, aliased `name`: the unparser keeps its
/// filters inside, in its own `WHERE`.
fn fenced(input: Arc<LogicalPlan>, name: TableReference) -> Result<LogicalPlan> {
    let columns = input.schema().columns().into_iter().map(Expr::Column);
    let projection = Projection::try_new(columns.collect(), input)?;
    Ok(LogicalPlan::SubqueryAlias(SubqueryAlias::try_new(
        Arc::new(LogicalPlan::Projection(projection)),
        name,
    )?))
}

/// The one table that names every column of `schema`, if there is one.
fn sole_qualifier(schema: &datafusion::common::DFSchema) -> Option<TableReference> {
    let mut qualifiers = schema.iter().map(|(q, _)| q);
    let first = qualifiers.next()??;
    qualifiers.all(|q| q == Some(first)).then(|| first.clone())
}

/// Whether `plan` is aliases and filters over a scan, with a filter somewhere.
fn filtered_scan(plan: &LogicalPlan) -> bool {
    match plan {
        LogicalPlan::SubqueryAlias(alias) => filtered_scan(&alias.input),
        LogicalPlan::Filter(filter) => {
            let mut node = filter.input.as_ref();
            while let LogicalPlan::SubqueryAlias(_) | LogicalPlan::Filter(_) = node {
                node = node.inputs()[0];
            }
            matches!(node, LogicalPlan::TableScan(_))
        }
        LogicalPlan::TableScan(scan) => !scan.filters.is_empty(),
        _ => false,
    }
}

/// `p` over an aggregate grouped by some constants: the same projection, with the
/// constants in it, over the aggregate without them. `None` if there is nothing to lift (or
/// every key is constant: without keys the aggregate would answer one row on no input).
fn lift_constant_keys(p: &Projection) -> Result<Option<Projection>> {
    let LogicalPlan::Aggregate(agg) = p.input.as_ref() else {
        return Ok(None);
    };
    if !agg.group_expr.iter().any(rules::is_literal) || agg.group_expr.iter().all(rules::is_literal)
    {
        return Ok(None);
    }
    let constants: Vec<(Column, Expr)> = agg
        .group_expr
        .iter()
        .enumerate()
        .filter(|(_, key)| rules::is_literal(key))
        .map(|(i, key)| {
            let (qualifier, field) = agg.schema.qualified_field(i);
            (
                Column::new(qualifier.cloned(), field.name()),
                key.clone().unalias(),
            )
        })
        .collect();
    let keys = agg
        .group_expr
        .iter()
        .filter(|e| !rules::is_literal(e))
        .cloned()
        .collect();
    let lifted = Aggregate::try_new(Arc::clone(&agg.input), keys, agg.aggr_expr.clone())?;
    let exprs = p
        .expr
        .iter()
        .zip(p.schema.iter())
        .map(|(e, (qualifier, field))| {
            let replaced = e.clone().transform(|e| match &e {
                Expr::Column(c) => match constants.iter().find(|(k, _)| k == c) {
                    Some((_, constant)) => Ok(Transformed::yes(constant.clone())),
                    None => Ok(Transformed::no(e)),
                },
                _ => Ok(Transformed::no(e)),
            })?;
            Ok(if replaced.transformed && !matches!(e, Expr::Alias(_)) {
                replaced
                    .data
                    .alias_qualified(qualifier.cloned(), field.name())
            } else {
                replaced.data
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Some(Projection::try_new_with_schema(
        exprs,
        Arc::new(LogicalPlan::Aggregate(lifted)),
        Arc::clone(&p.schema),
    )?))
}

/// The live tables a federated plan reads.
fn live_tables(plan: &VirtualExecutionPlan) -> Vec<Arc<LiveTable>> {
    let mut tables = Vec::new();
    let _ = plan.plan().apply(|node| {
        if let LogicalPlan::TableScan(scan) = node
            && let Some(source) = live_of(scan)
            && let Some(table) = source.table.as_any().downcast_ref::<LiveTable>()
        {
            tables.push(Arc::new(table.clone()));
        }
        Ok(TreeNodeRecursion::Continue)
    });
    tables
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::logical_expr::logical_plan::builder::LogicalTableSource;
    use datafusion::logical_expr::{JoinType, LogicalPlanBuilder, col, lit};
    use datafusion::sql::unparser::plan_to_sql;

    fn scan(name: &str) -> LogicalPlanBuilder {
        let schema = Schema::new(vec![
            Field::new("id", DataType::Int32, false),
            Field::new("v", DataType::Int32, true),
        ]);
        let source = LogicalTableSource::new(Arc::new(schema));
        LogicalPlanBuilder::scan(name, Arc::new(source), None).unwrap()
    }

    /// `left` joined to `right` on `keys`, projected to `out`.
    fn joined(
        left: LogicalPlanBuilder,
        right: LogicalPlanBuilder,
        join_type: JoinType,
        keys: (&str, &str),
        out: Vec<Expr>,
    ) -> LogicalPlan {
        left.join(
            right.build().unwrap(),
            join_type,
            (vec![keys.0], vec![keys.1]),
            None,
        )
        .unwrap()
        .project(out)
        .unwrap()
        .build()
        .unwrap()
    }

    fn unparsed(plan: LogicalPlan) -> String {
        plan_to_sql(&normalize(plan).unwrap()).unwrap().to_string()
    }

    #[test]
    fn a_semi_or_anti_join_keeps_the_filters_of_its_sides() {
        for join_type in [JoinType::LeftSemi, JoinType::LeftAnti] {
            let right = scan("b").filter(col("b.v").gt(lit(5))).unwrap();
            let left = scan("a").filter(col("a.v").lt(lit(3))).unwrap();
            let plan = joined(left, right, join_type, ("a.id", "b.id"), vec![col("a.id")]);
            let sql = unparsed(plan);
            assert!(sql.contains("a.v < 3") && sql.contains("b.v > 5"), "{sql}");
        }
    }

    #[test]
    fn a_filter_under_an_alias_is_named_by_the_alias() {
        let right = scan("t").alias("y").unwrap();
        let left = scan("t").filter(col("t.v").gt(lit(5))).unwrap();
        let left = left.alias("x").unwrap();
        let out = vec![col("x.v"), col("y.v")];
        let plan = joined(left, right, JoinType::Inner, ("x.id", "y.id"), out);
        let sql = unparsed(plan);
        assert!(sql.contains("x.v > 5") && !sql.contains("t.v"), "{sql}");
    }

    #[test]
    fn a_projected_join_input_keeps_its_table_name() {
        let right = scan("b")
            .filter(col("b.v").gt(lit(5)))
            .unwrap()
            .project(vec![col("b.id")])
            .unwrap();
        let plan = joined(
            scan("a"),
            right,
            JoinType::Inner,
            ("a.id", "b.id"),
            vec![col("a.v")],
        );
        let sql = unparsed(plan);
        assert!(sql.contains("AS b ON a.id = b.id"), "{sql}");
    }

    #[test]
    fn a_decimal_average_is_a_sum_and_a_count_divided_here() {
        let schema = Schema::new(vec![
            Field::new("g", DataType::Int32, false),
            Field::new("d", DataType::Decimal128(15, 2), true),
        ]);
        let source = LogicalTableSource::new(Arc::new(schema));
        let plan = LogicalPlanBuilder::scan("t", Arc::new(source), None)
            .unwrap()
            .aggregate(
                vec![col("t.g")],
                vec![datafusion::functions_aggregate::expr_fn::avg(col("t.d"))],
            )
            .unwrap()
            .build()
            .unwrap();
        let before = plan.schema().clone();
        let split = normalize(plan).unwrap();
        assert_eq!(split.schema(), &before);
        let LogicalPlan::Projection(p) = &split else {
            panic!("not split: {split}");
        };
        let LogicalPlan::Aggregate(agg) = p.input.as_ref() else {
            panic!("not split: {split}");
        };
        let names: Vec<String> = agg.aggr_expr.iter().map(|e| e.to_string()).collect();
        assert!(
            names[0].starts_with("sum(t.d)") && names[1].starts_with("count(t.d)"),
            "{names:?}"
        );
    }

    #[tokio::test]
    async fn a_split_average_answers_as_datafusion_does() {
        use datafusion::arrow::array::{Decimal128Array, Int32Array, RecordBatch};
        use datafusion::arrow::util::pretty::pretty_format_batches;
        use datafusion::prelude::SessionContext;
        let schema = Arc::new(Schema::new(vec![
            Field::new("g", DataType::Int32, false),
            Field::new("d", DataType::Decimal128(15, 2), true),
        ]));
        // Quotients that truncate and round differently, negative ones, and a group of NULLs.
        let d = Decimal128Array::from(vec![
            Some(100),
            Some(101),
            Some(101),
            Some(-200),
            Some(-1),
            Some(-1),
            None,
            Some(7),
        ])
        .with_precision_and_scale(15, 2)
        .unwrap();
        let g = Int32Array::from(vec![1, 1, 1, 2, 2, 2, 3, 4]);
        let batch =
            RecordBatch::try_new(Arc::clone(&schema), vec![Arc::new(g), Arc::new(d)]).unwrap();
        let ctx = SessionContext::new();
        ctx.register_batch("t", batch).unwrap();
        let frame = ctx
            .sql("SELECT g, avg(d) AS a FROM t GROUP BY g ORDER BY g")
            .await
            .unwrap();
        let plan = frame.logical_plan().clone();
        let direct = ctx
            .execute_logical_plan(plan.clone())
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let split = ctx
            .execute_logical_plan(normalize(plan).unwrap())
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let (direct, split) = (
            pretty_format_batches(&direct).unwrap().to_string(),
            pretty_format_batches(&split).unwrap().to_string(),
        );
        assert!(split.contains("1.006666"), "{split}");
        assert_eq!(direct, split);
    }
}
