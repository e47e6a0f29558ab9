//! Pushdown: a table read live is a datafusion-federation SQL table of its connection. The
//! federation rule finds the largest sub-plans that touch only one connection's live
//! tables; [`rules::Rules`] keeps what the source would answer differently local, and the
//! rest goes to the source as one statement in its dialect, run by the source's own
//! readers ([`executor::SourceExecutor`]). `EXPLAIN` shows each statement.

mod executor;
mod live_table;
mod rules;

pub(crate) use live_table::live_table;

use std::any::Any;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::error::Result;
use datafusion::execution::context::QueryPlanner;
use datafusion::logical_expr::{Extension, LogicalPlan, Projection, TableScan};
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
            DefaultPhysicalPlanner::with_extension_planners(vec![Arc::new(FederatedPlanner::new())]);
        planner
            .create_physical_plan(logical_plan, session_state)
            .await
    }
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
    if rules.pushable(&plan) {
        let plan = match plan {
            LogicalPlan::Projection(_) | LogicalPlan::Aggregate(_) => plan,
            other => {
                let columns = other
                    .schema()
                    .columns()
                    .into_iter()
                    .map(datafusion::logical_expr::Expr::Column)
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
    let inputs = plan
        .inputs()
        .into_iter()
        .cloned()
        .map(|input| place(input, rules, planner))
        .collect::<Result<Vec<_>>>()?;
    plan.with_new_exprs(plan.expressions(), inputs)
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
    place(federated.plan().clone(), &rules, &planner)
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
