//! The DataFusion session every Quarry session starts from: connections as catalogs, the
//! management functions, exact decimal literals, the lossy-cast guard, pushdown of live
//! tables' work to their sources, and without one optimizer rule that changes a decimal
//! sum's type.

use std::sync::Arc;

use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::optimizer::Optimizer;
use datafusion::prelude::{SessionConfig, SessionContext};

use super::catalog::QuarryCatalogList;
use super::lossy_cast::KeepLossyCasts;
use super::source_query::{SourceQueries, SourceQueryFunction};
use crate::connections::Connections;

/// Where a session's statements run: in this process, or on a Ballista cluster (Cargo
/// feature `distributed`).
#[derive(Clone, Debug, Default)]
pub struct Placement {
    /// The cluster cached-table statements go to, if any.
    #[cfg(feature = "distributed")]
    pub ballista: Option<super::distributed::Ballista>,
}

/// A new session context over the shared `runtime` (memory pool, disk and file caches);
/// its catalogs read the snapshot of `connections`, and its tables fetch through them. Its
/// statements run where `placement` says.
pub(crate) fn new(
    connections: &Arc<Connections>,
    runtime: &Arc<RuntimeEnv>,
    placement: &Placement,
) -> SessionContext {
    let mut config = SessionConfig::new().with_information_schema(true);
    // `o_totalprice = 190720.34` must compare with the exact decimal, as PostgreSQL and
    // MySQL do, not with the nearest double (190720.339999999983616).
    config.options_mut().sql_parser.parse_float_as_decimal = true;
    // DataFusion 55 routes a join's or a TopK's dynamic filter to the input column by name:
    // where two joined tables share a column name (`x.id`, `y.id`), the filter meant for one
    // lands on the other and rows that match are dropped (apache/datafusion#25244, #25296;
    // fixed upstream by #25259, after 55.2). Off until a DataFusion with that fix is pinned.
    // This one setting turns off the join, TopK and aggregate filters alike.
    config
        .options_mut()
        .set(
            "datafusion.optimizer.enable_dynamic_filter_pushdown",
            "false",
        )
        .expect("DataFusion has this setting");
    // `source_query` statements are described before planning (see `sql::source_query`).
    let source_queries = Arc::new(SourceQueries::new(Arc::clone(connections)));
    let config = config.with_extension(Arc::clone(&source_queries));
    let (config, planner) = planner(config, placement);
    // The pushdown rule sits among DataFusion's own, and federated sub-plans are planned
    // as statements sent to their sources.
    let mut rules = super::pushdown::optimizer_rules(Optimizer::new().rules);
    // Joins are reordered once filters sit on the tables they read.
    let at = rules
        .iter()
        .position(|r| r.name() == "push_down_filter")
        .map_or(rules.len(), |i| i + 1);
    rules.insert(at, Arc::new(super::join_order::JoinOrder));
    let state = SessionStateBuilder::new()
        .with_config(config)
        .with_runtime_env(Arc::clone(runtime))
        .with_default_features()
        .with_optimizer_rules(rules)
        .with_query_planner(planner)
        .with_physical_optimizer_rule(Arc::new(super::pushdown::AdoptRemoteScans))
        .build();
    let context = SessionContext::new_with_state(state);
    context.register_catalog_list(Arc::new(QuarryCatalogList::new(
        Arc::clone(connections),
        Arc::clone(runtime),
    )));
    super::functions::register(&context, connections);
    context.register_udtf(
        super::source_query::NAME,
        Arc::new(SourceQueryFunction {
            queries: source_queries,
        }),
    );
    context.add_analyzer_rule(Arc::new(KeepLossyCasts));
    context.register_udf(version());
    // This rule rewrites `SUM(x)` beside a single `COUNT(DISTINCT y)` as a SUM of partial
    // SUMs, widening a decimal sum from (25,2) to (35,2) after HAVING's literal was
    // coerced to (25,2): `… HAVING SUM(l_quantity) >= 48.00` then fails with "Invalid
    // comparison operation: Decimal128(35, 2) >= Decimal128(25, 2)". Without it DataFusion
    // counts distinct values with a hash set per group, as DuckDB does. To report upstream
    // (DataFusion 55.2, `single_distinct_to_groupby.rs`); restore it once fixed there.
    context.remove_optimizer_rule("single_distinct_aggregation_to_group_by");
    context
}

/// The session's query planner where `placement` says, and its config for it.
fn planner(
    config: SessionConfig,
    placement: &Placement,
) -> (
    SessionConfig,
    Arc<dyn datafusion::execution::context::QueryPlanner + Send + Sync>,
) {
    #[cfg(feature = "distributed")]
    if let Some(ballista) = &placement.ballista {
        let config = ballista.session_config(config);
        let planner = Arc::new(ballista.planner(&config));
        return (config, planner);
    }
    let _ = placement;
    (config, Arc::new(super::pushdown::PushDownPlanner))
}

/// `version()`: Quarry's version and the DataFusion it runs on (DataFusion's own names
/// only itself).
fn version() -> datafusion::logical_expr::ScalarUDF {
    use datafusion::arrow::datatypes::DataType;
    use datafusion::common::ScalarValue;
    use datafusion::logical_expr::{ColumnarValue, Volatility, create_udf};
    let text = format!(
        "Quarry {} on Apache DataFusion {}, {} on {}",
        env!("CARGO_PKG_VERSION"),
        datafusion::DATAFUSION_VERSION,
        std::env::consts::ARCH,
        std::env::consts::OS,
    );
    create_udf(
        "version",
        vec![],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(move |_args: &[ColumnarValue]| {
            Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(text.clone()))))
        }),
    )
}
