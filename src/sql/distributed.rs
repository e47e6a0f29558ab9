//! Queries of cached tables on an Apache DataFusion Ballista cluster. A statement whose
//! tables are all cached goes to the cluster's scheduler with each table planned as a plain
//! Parquet scan of its cache files on the shared object store, where the executors read
//! them; the statement's leases hold those files until its results are read. A statement
//! that reads no cached table (a live table's, a system table's, Quarry's own statements)
//! runs in this process, with live tables' work pushed to their sources as always. One that
//! mixes cached tables with anything else runs here when fallback is on, and is refused
//! otherwise with an error naming what it reads.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use ballista_core::extension::SessionConfigExt;
use ballista_core::planner::BallistaQueryPlanner;
use datafusion::catalog::Session;
use datafusion::common::TableReference;
use datafusion::common::tree_node::{Transformed, TreeNodeRecursion};
use datafusion::datasource::{provider_as_source, source_as_provider};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::context::QueryPlanner;
use datafusion::logical_expr::{LogicalPlan, TableSource};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionConfig;
use datafusion_proto::protobuf::LogicalPlanNode;

use super::lazy_table::{LazyTable, LeaseExec};
use super::pushdown::PushDownPlanner;
use crate::error::{Error, Result as QuarryResult};

/// The port a Ballista scheduler listens on unless its URL says otherwise.
const DEFAULT_SCHEDULER_PORT: u16 = 50050;

/// Where a session's cached-table queries run: a Ballista cluster's scheduler.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ballista {
    /// The scheduler as the user wrote it (`df://host:port`).
    url: String,
    /// The scheduler's gRPC address (`http://host:port`).
    scheduler: String,
    /// Whether a statement the cluster cannot run runs in this process instead of failing.
    pub fallback: bool,
}

impl Ballista {
    /// The cluster whose scheduler is at `url` (`df://host:port`, port 50050 by default).
    pub fn parse(url: &str, fallback: bool) -> QuarryResult<Self> {
        let bad = |problem: String| Error::InvalidBallistaUrl {
            url: url.to_owned(),
            problem: format!("{problem}; write df://host:port"),
        };
        let parsed = url::Url::parse(url).map_err(|e| bad(format!("not a URL ({e})")))?;
        if parsed.scheme() != "df" {
            return Err(bad(format!("the scheme is '{}', not df", parsed.scheme())));
        }
        let host = parsed
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| bad("it names no host".into()))?;
        let port = parsed.port().unwrap_or(DEFAULT_SCHEDULER_PORT);
        Ok(Ballista {
            url: url.to_owned(),
            scheduler: format!("http://{host}:{port}"),
            fallback,
        })
    }

    /// The scheduler's URL as given.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// `config` with Ballista's settings, as the cluster's own sessions have them.
    pub(crate) fn session_config(&self, config: SessionConfig) -> SessionConfig {
        config.upgrade_for_ballista()
    }

    /// The query planner of a session on this cluster, with `config` (already upgraded).
    pub(crate) fn planner(&self, config: &SessionConfig) -> DistributedPlanner {
        DistributedPlanner {
            cluster: BallistaQueryPlanner::with_extension(
                self.scheduler.clone(),
                config.ballista_config(),
                config.ballista_logical_extension_codec(),
            ),
            ballista: self.clone(),
        }
    }
}

/// Plans statements of cached tables on the cluster, the rest here or not at all.
pub(crate) struct DistributedPlanner {
    cluster: BallistaQueryPlanner<LogicalPlanNode>,
    ballista: Ballista,
}

impl std::fmt::Debug for DistributedPlanner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DistributedPlanner")
            .field("ballista", &self.ballista)
            .finish_non_exhaustive()
    }
}

/// What a statement reads, as far as the cluster is concerned.
#[derive(Default)]
struct Reads {
    /// The cached tables, by the name the plan scans them under.
    cached: HashMap<TableReference, Arc<LazyTable>>,
    /// The first thing it reads that the cluster cannot.
    other: Option<String>,
}

impl Reads {
    fn of(plan: &LogicalPlan) -> Result<Self> {
        let mut reads = Reads::default();
        plan.apply_with_subqueries(|node| {
            match node {
                LogicalPlan::TableScan(scan) => {
                    let lazy = source_as_provider(&scan.source).ok().and_then(|p| {
                        (p as Arc<dyn std::any::Any + Send + Sync>)
                            .downcast::<LazyTable>()
                            .ok()
                    });
                    match lazy {
                        Some(lazy) => {
                            reads.cached.insert(scan.table_name.clone(), lazy);
                        }
                        None => {
                            reads
                                .other
                                .get_or_insert_with(|| format!("the table {}", scan.table_name));
                        }
                    }
                }
                // Pushed-down work of live tables, and Quarry's own statements.
                LogicalPlan::Extension(_) => {
                    reads
                        .other
                        .get_or_insert_with(|| "a live table's pushed-down query".to_owned());
                }
                _ => {}
            }
            Ok(TreeNodeRecursion::Continue)
        })?;
        Ok(reads)
    }
}

#[async_trait]
impl QueryPlanner for DistributedPlanner {
    async fn create_physical_plan(
        &self,
        plan: &LogicalPlan,
        state: &dyn Session,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let reads = Reads::of(plan)?;
        // Live tables, system tables and Quarry's own statements are this process's.
        if reads.cached.is_empty() {
            return PushDownPlanner.create_physical_plan(plan, state).await;
        }
        if let Some(what) = reads.other {
            if self.ballista.fallback {
                tracing::debug!(reads = %what, "running here: the cluster cannot read it");
                return PushDownPlanner.create_physical_plan(plan, state).await;
            }
            return Err(DataFusionError::Plan(format!(
                "this statement cannot run on the Ballista cluster at {}: besides cached \
                 tables it reads {what}, which only this process can read (live tables, \
                 files read in place and system tables are read here). Cache that table \
                 too (access mode 'cache'), or start Quarry with --ballista-fallback to run \
                 such statements here",
                self.ballista.url
            )));
        }
        let mut sources: HashMap<TableReference, Arc<dyn TableSource>> = HashMap::new();
        let mut leases = Vec::new();
        for (name, lazy) in &reads.cached {
            let (files, lease) = lazy.cached_files().await?;
            sources.insert(name.clone(), provider_as_source(Arc::new(files)));
            leases.push(lease);
        }
        let on_files = plan
            .clone()
            .transform_up_with_subqueries(|node| match node {
                LogicalPlan::TableScan(mut scan) => match sources.get(&scan.table_name) {
                    Some(source) => {
                        scan.source = Arc::clone(source);
                        Ok(Transformed::yes(LogicalPlan::TableScan(scan)))
                    }
                    None => Ok(Transformed::no(LogicalPlan::TableScan(scan))),
                },
                other => Ok(Transformed::no(other)),
            })?
            .data;
        let mut physical = self.cluster.create_physical_plan(&on_files, state).await?;
        // The files stay until the cluster's results are read.
        for lease in leases {
            physical = Arc::new(LeaseExec::new(physical, lease));
        }
        Ok(physical)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheduler_urls_parse_with_a_default_port() {
        let cluster = Ballista::parse("df://scheduler.internal", false).unwrap();
        assert_eq!(cluster.scheduler, "http://scheduler.internal:50050");
        let cluster = Ballista::parse("df://127.0.0.1:6000", true).unwrap();
        assert_eq!(cluster.scheduler, "http://127.0.0.1:6000");
        assert!(cluster.fallback);
        for bad in ["http://host:1", "df://", "nonsense"] {
            let message = Ballista::parse(bad, false).unwrap_err().to_string();
            assert!(message.contains("df://host:port"), "{bad}: {message}");
        }
    }
}
