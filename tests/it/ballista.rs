//! Cached-table queries on a Ballista cluster in this process (Ballista's standalone
//! scheduler and two executors) reading the cache on the S3 server: the 22 TPC-H queries at
//! scale 0.1 give the answers local execution gives; a live table's statement runs here,
//! and one that mixes it with cached tables fails with an error saying so, or runs here
//! when fallback is asked for. Then the cluster as `quarry ballista` processes: they answer
//! a client's queries, and an executor killed in the middle of one costs time, not the
//! answer.

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::util::pretty::pretty_format_batches;
use quarry::Engine;

#[path = "../../benches/common/tpch.rs"]
mod tpch;
#[path = "../../benches/common/tpch_queries.rs"]
mod tpch_queries;

use crate::s3::Bucket;
use crate::support::Running;
use crate::support::proxy::Proxy;
use crate::support::{PgDatabase, pg_source_config};

const PREFIX: &str = "cluster-cache";

/// An engine on `dir` with the cache in `bucket`, on the cluster at `ballista` if given.
async fn engine(dir: &std::path::Path, bucket: &Bucket, ballista: Option<(&str, bool)>) -> Engine {
    let mut builder = Engine::builder()
        .data_dir(dir)
        .memory_cache(0)
        .cache_url(format!("s3://{}/{PREFIX}", bucket.name));
    for (key, value) in bucket.client_options() {
        builder = builder.cache_option(key, value);
    }
    if let Some((url, fallback)) = ballista {
        builder = builder.ballista(url, fallback).unwrap();
    }
    builder.build().await.unwrap()
}

/// The result as a table, its lines sorted: equal answers compare equal however rows with
/// equal sort keys were ordered.
async fn answer(engine: &Engine, sql: &str) -> Result<String, String> {
    let batches: Vec<RecordBatch> = engine
        .sql(sql)
        .await
        .map_err(|e| e.to_string())?
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    let text = pretty_format_batches(&batches).unwrap().to_string();
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort_unstable();
    Ok(lines.join("\n"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpch_on_a_ballista_cluster_gives_the_local_answers() {
    let source = PgDatabase::create().await;
    tpch::load_postgres(&source.url, 0.1).await;
    let bucket = Bucket::new().await;
    let options = bucket.client_options();
    let storage =
        quarry::cache::CacheStorage::open(&format!("s3://{}/{PREFIX}", bucket.name), &options)
            .unwrap();
    let cluster = quarry::cluster::start_in_process(&storage, 2, 2)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let local = engine(dir.path(), &bucket, None).await;
    let mut config = pg_source_config(&source.name);
    config["mode"] = serde_json::json!("cache");
    local
        .create_connection("tpch", "postgres", config)
        .await
        .unwrap();
    let on_cluster = engine(dir.path(), &bucket, Some((&cluster, false))).await;
    for engine in [&local, &on_cluster] {
        answer(engine, "USE tpch.public").await.unwrap();
    }
    for (i, query) in tpch_queries::QUERIES.iter().enumerate() {
        let expected = answer(&local, query).await.unwrap();
        let got = answer(&on_cluster, query)
            .await
            .unwrap_or_else(|e| panic!("Q{} on the cluster: {e}", i + 1));
        assert_eq!(got, expected, "Q{}", i + 1);
    }
    // Its plan shows the cluster's job, not a local scan.
    let plan = on_cluster
        .sql("SELECT count(*) FROM region")
        .await
        .unwrap()
        .create_physical_plan()
        .await
        .unwrap();
    let shown = datafusion::physical_plan::displayable(plan.as_ref())
        .indent(false)
        .to_string();
    assert!(shown.contains("DistributedQueryExec"), "{shown}");

    // A live table is read by this process only: alone it runs here; joined with a cached
    // table it is refused, or run here with fallback.
    let mut live = pg_source_config(&source.name);
    live["mode"] = serde_json::json!("live");
    local
        .create_connection("live", "postgres", live)
        .await
        .unwrap();
    let on_cluster = engine(dir.path(), &bucket, Some((&cluster, false))).await;
    let alone = answer(&on_cluster, "SELECT count(*) FROM live.public.region")
        .await
        .unwrap();
    assert!(alone.contains("| 5 "), "{alone}");
    let mixed = "SELECT count(*) FROM live.public.region r \
                 JOIN tpch.public.nation n ON n.n_regionkey = r.r_regionkey";
    let refused = answer(&on_cluster, mixed).await.unwrap_err();
    assert!(
        refused.contains("cannot run on the Ballista cluster")
            && refused.contains("--ballista-fallback"),
        "{refused}"
    );
    let with_fallback = engine(dir.path(), &bucket, Some((&cluster, true))).await;
    let counted = answer(&with_fallback, mixed).await.unwrap();
    assert!(counted.contains("| 25 "), "{counted}");
}

/// A free loopback port.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `quarry` process of the cluster (or its client) with the bucket's credentials.
fn cluster_command(home: &std::path::Path, bucket: &Bucket) -> std::process::Command {
    let mut command = crate::support::quarry_command(home);
    command
        .env("AWS_ENDPOINT", bucket.endpoint)
        .env("AWS_ALLOW_HTTP", "true")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("QUARRY_CACHE_URL", format!("s3://{}/{PREFIX}", bucket.name));
    command
}

/// Waits until something listens on `port` (the process has started its service).
async fn listening(port: u16, process: &mut Running) {
    let start = std::time::Instant::now();
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            process.0.try_wait().unwrap().is_none(),
            "the process exited before listening on {port}"
        );
        assert!(
            start.elapsed() < std::time::Duration::from_secs(60),
            "nothing listens on {port}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// A scheduler process listening on a free port, taking an executor for dead after
/// `executor_timeout` seconds without a heartbeat; returns it with its port.
async fn scheduler(
    home: &std::path::Path,
    bucket: &Bucket,
    executor_timeout: u64,
) -> (Running, u16) {
    let port = free_port();
    let mut process = Running(
        cluster_command(home, bucket)
            .args(["ballista", "scheduler", "--bind"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("--executor-timeout")
            .arg(executor_timeout.to_string())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    listening(port, &mut process).await;
    (process, port)
}

/// An executor process of one task slot joined to the scheduler on `scheduler`, given
/// extra environment (its own S3 endpoint, say).
async fn executor(
    home: &std::path::Path,
    bucket: &Bucket,
    scheduler: u16,
    env: &[(&str, String)],
) -> Running {
    let (flight, grpc) = (free_port(), free_port());
    let mut command = cluster_command(home, bucket);
    command
        .args([
            "ballista",
            "executor",
            "--vcores",
            "1",
            "--heartbeat-interval",
            "1",
        ])
        .arg("--scheduler")
        .arg(format!("127.0.0.1:{scheduler}"))
        .arg("--bind")
        .arg(format!("127.0.0.1:{flight}"))
        .arg("--grpc-port")
        .arg(grpc.to_string())
        .stderr(std::process::Stdio::null());
    for (key, value) in env {
        command.env(key, value);
    }
    let mut process = Running(command.spawn().unwrap());
    listening(flight, &mut process).await;
    process
}

/// A SQLite source of one table `t` holding 1..=1000, in `home`.
async fn thousand_rows(home: &std::path::Path) -> (String, sqlx::SqliteConnection) {
    crate::support::sqlite_source(
        home,
        "CREATE TABLE t (x INTEGER NOT NULL); \
         WITH RECURSIVE g(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM g WHERE x < 1000) \
         INSERT INTO t SELECT x FROM g;",
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quarry_runs_the_scheduler_and_executors_that_answer_its_queries() {
    let bucket = Bucket::new().await;
    let home = tempfile::tempdir().unwrap();
    let (source, _conn) = thousand_rows(home.path()).await;
    let (scheduler_process, scheduler) = scheduler(home.path(), &bucket, 30).await;
    let _executors = [
        executor(home.path(), &bucket, scheduler, &[]).await,
        executor(home.path(), &bucket, scheduler, &[]).await,
    ];
    let config = serde_json::json!({ "path": source, "mode": "cache" });
    let script = format!(
        "SELECT name FROM create_connection('lite', 'sqlite', '{config}');\n\
         SELECT sum(x) AS total, count(*) AS n FROM lite.main.t;\n\
         EXPLAIN ANALYZE SELECT sum(x) FROM lite.main.t;"
    );
    let out = cluster_command(home.path(), &bucket)
        .args([
            "--ballista",
            &format!("df://127.0.0.1:{scheduler}"),
            "-c",
            &script,
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stdout = crate::support::text(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        crate::support::text(&out.stderr)
    );
    assert!(
        crate::support::has_row(&stdout, &["500500", "1000"]),
        "{stdout}"
    );
    // The cluster ran it: its stages and shuffle are in the analyzed plan.
    assert!(stdout.contains("ShuffleWriterExec"), "{stdout}");
    // With the scheduler gone, a cached table's statement fails and says where it went.
    drop(scheduler_process);
    let out = cluster_command(home.path(), &bucket)
        .args(["--ballista", &format!("df://127.0.0.1:{scheduler}"), "-c"])
        .arg("SELECT count(*) FROM lite.main.t")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stderr = crate::support::text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!("127.0.0.1:{scheduler}")),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_executor_killed_mid_query_has_its_task_run_elsewhere_and_the_answer_is_right() {
    let bucket = Bucket::new().await;
    let home = tempfile::tempdir().unwrap();
    let (source, _conn) = thousand_rows(home.path()).await;
    // The table is cached first, by a Quarry process of its own.
    let config = serde_json::json!({ "path": source, "mode": "cache" });
    let out = cluster_command(home.path(), &bucket)
        .arg("-c")
        .arg(format!(
            "SELECT name FROM create_connection('lite', 'sqlite', '{config}');\n\
             SELECT count(*) FROM lite.main.t;"
        ))
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        crate::support::text(&out.stderr)
    );

    // Each executor reads the cache through a proxy that holds its requests: the first
    // executor to make one is running the scan's task.
    let s3 = tokio::net::lookup_host(bucket.endpoint.trim_start_matches("http://"))
        .await
        .unwrap()
        .next()
        .unwrap();
    let proxies = [Proxy::held(s3).await, Proxy::held(s3).await];
    let (_scheduler_process, scheduler) = scheduler(home.path(), &bucket, 3).await;
    let mut executors = Vec::new();
    for proxy in &proxies {
        let endpoint = format!("http://127.0.0.1:{}", proxy.port());
        executors.push(Some(
            executor(
                home.path(),
                &bucket,
                scheduler,
                &[("AWS_ENDPOINT", endpoint)],
            )
            .await,
        ));
    }
    let client = cluster_command(home.path(), &bucket)
        .args(["--ballista", &format!("df://127.0.0.1:{scheduler}"), "-c"])
        .arg("SELECT sum(x) AS total, count(*) AS n FROM lite.main.t")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let running = tokio::select! {
        () = proxies[0].first_connection() => 0,
        () = proxies[1].first_connection() => 1,
    };
    // SIGKILL: the executor says nothing to the scheduler; its heartbeats stop.
    drop(executors[running].take());
    for proxy in &proxies {
        proxy.release();
    }
    let out = tokio::time::timeout(
        std::time::Duration::from_secs(120),
        tokio::task::spawn_blocking(move || client.wait_with_output()),
    )
    .await
    .expect("the query neither finished nor failed within 120 s of losing an executor")
    .unwrap()
    .unwrap();
    let (stdout, stderr) = (
        crate::support::text(&out.stdout),
        crate::support::text(&out.stderr),
    );
    // Ballista runs the lost task again on the other executor: the whole answer, once.
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        crate::support::has_row(&stdout, &["500500", "1000"]),
        "{stdout}"
    );
}
