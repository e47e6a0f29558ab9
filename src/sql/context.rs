//! The DataFusion session every Quarry session starts from: connections as catalogs, the
//! management functions, exact decimal literals and the lossy-cast guard.

use std::sync::{Arc, Weak};

use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::prelude::{SessionConfig, SessionContext};

use super::catalog::QuarryCatalogList;
use super::lossy_cast::KeepLossyCasts;
use super::snapshot::SnapshotCell;
use crate::engine::EngineCore;

/// A new session context over the shared `runtime` (memory pool, disk and file caches);
/// its catalogs read `snapshot` and its tables fetch through `core`.
pub(crate) fn new(
    core: &Weak<EngineCore>,
    snapshot: &Arc<SnapshotCell>,
    runtime: &Arc<RuntimeEnv>,
) -> SessionContext {
    let mut config = SessionConfig::new().with_information_schema(true);
    // `o_totalprice = 190720.34` must compare with the exact decimal, as PostgreSQL and
    // MySQL do, not with the nearest double (190720.339999999983616).
    config.options_mut().sql_parser.parse_float_as_decimal = true;
    let context = SessionContext::new_with_config_rt(config, Arc::clone(runtime));
    context.register_catalog_list(Arc::new(QuarryCatalogList::new(
        Arc::clone(snapshot),
        core.clone(),
    )));
    super::functions::register(&context, core);
    context.add_analyzer_rule(Arc::new(KeepLossyCasts));
    context
}
