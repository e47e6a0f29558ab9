//! Apache DataFusion Ballista's scheduler and executor, as `quarry ballista scheduler` and
//! `quarry ballista executor` run them (and the test suite, in one process): Ballista's own
//! processes, with the cache's object store registered so that they can plan and read the
//! Parquet files of cached tables. Nothing here schedules; Ballista does.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ballista_core::extension::SessionConfigExt;
use ballista_core::serde::protobuf::scheduler_grpc_client::SchedulerGrpcClient;
use ballista_executor::executor_process::{ExecutorProcessConfig, start_executor_process};
use ballista_scheduler::cluster::BallistaCluster;
use ballista_scheduler::config::SchedulerConfig;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::prelude::SessionConfig;

use crate::cache::CacheStorage;
use crate::error::{Error, Result};

/// The runtime of the cluster's sessions: the cache's files readable at the URLs Quarry
/// plans them under.
fn runtime(cache: &CacheStorage) -> Arc<RuntimeEnv> {
    let runtime = Arc::new(RuntimeEnv::default());
    cache.register(&runtime);
    runtime
}

fn failed(what: &str) -> impl FnOnce(ballista_core::error::BallistaError) -> Error + '_ {
    move |e| Error::Cluster(format!("{what}: {e}"))
}

/// What a Ballista scheduler needs to know.
#[derive(Clone, Debug)]
pub struct SchedulerOptions {
    /// The address its gRPC service listens on.
    pub bind: SocketAddr,
    /// How long an executor may go without a heartbeat before the scheduler takes it for
    /// dead and runs its tasks elsewhere.
    pub executor_timeout: Duration,
}

/// Runs a Ballista scheduler until the process ends.
pub async fn run_scheduler(options: SchedulerOptions, cache: &CacheStorage) -> Result<()> {
    let runtime = runtime(cache);
    let bind = options.bind;
    let timeout = options.executor_timeout.as_secs().max(1);
    let config = SchedulerConfig {
        bind_host: bind.ip().to_string(),
        bind_port: bind.port(),
        executor_timeout_seconds: timeout,
        // Checked a few times per timeout, so that a dead executor is noticed within
        // about 1.3 timeouts (Ballista checks every 15 s whatever the timeout).
        expire_dead_executor_interval_seconds: (timeout / 3).clamp(1, 15),
        override_session_builder: Some(Arc::new(move |config: SessionConfig| {
            Ok(SessionStateBuilder::new()
                .with_config(config)
                .with_runtime_env(Arc::clone(&runtime))
                .with_default_features()
                .build())
        })),
        ..SchedulerConfig::default()
    };
    let cluster = BallistaCluster::new_from_config(&config)
        .await
        .map_err(failed("starting the Ballista scheduler"))?;
    ballista_scheduler::scheduler_process::start_server(cluster, bind, Arc::new(config))
        .await
        .map_err(failed("running the Ballista scheduler"))
}

/// What a Ballista executor needs to know to join its cluster.
#[derive(Clone, Debug)]
pub struct ExecutorOptions {
    /// The scheduler's host and port.
    pub scheduler: (String, u16),
    /// The address its Arrow Flight service (shuffle data) listens on.
    pub bind: SocketAddr,
    /// The port of its gRPC service.
    pub grpc_port: u16,
    /// Tasks it runs at once.
    pub vcores: usize,
    /// How often it tells the scheduler it is alive; well under the scheduler's executor
    /// timeout.
    pub heartbeat: Duration,
}

/// Runs a Ballista executor until the process ends or it is told to stop.
pub async fn run_executor(options: ExecutorOptions, cache: &CacheStorage) -> Result<()> {
    let runtime = runtime(cache);
    let config = ExecutorProcessConfig {
        bind_host: options.bind.ip().to_string(),
        port: options.bind.port(),
        grpc_port: options.grpc_port,
        scheduler_host: options.scheduler.0,
        scheduler_port: options.scheduler.1,
        vcores: options.vcores,
        executor_heartbeat_interval_seconds: options.heartbeat.as_secs().max(1),
        override_runtime_producer: Some(Arc::new(move |_| Ok(Arc::clone(&runtime)))),
        ..ExecutorProcessConfig::default()
    };
    start_executor_process(Arc::new(config))
        .await
        .map_err(failed("running the Ballista executor"))
}

/// Starts a scheduler and `executors` executors of `vcores` task slots each in this
/// process, over `cache`; returns the scheduler's `df://` URL. For tests and benchmarks:
/// the cluster lives as long as the process.
pub async fn start_in_process(
    cache: &CacheStorage,
    executors: usize,
    vcores: usize,
) -> Result<String> {
    let state = SessionStateBuilder::new()
        .with_config(SessionConfig::new_with_ballista())
        .with_runtime_env(runtime(cache))
        .with_default_features()
        .build();
    let addr = ballista_scheduler::standalone::new_standalone_scheduler_from_state(&state)
        .await
        .map_err(failed("starting the Ballista scheduler"))?;
    let scheduler = format!("http://localhost:{}", addr.port());
    for _ in 0..executors {
        let client = SchedulerGrpcClient::connect(scheduler.clone())
            .await
            .map_err(|e| Error::Cluster(format!("connecting to the scheduler: {e}")))?;
        ballista_executor::new_standalone_executor_from_state(client, vcores, &state)
            .await
            .map_err(failed("starting a Ballista executor"))?;
    }
    Ok(format!("df://localhost:{}", addr.port()))
}
