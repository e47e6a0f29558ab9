//! Several `quarry serve` processes on one PostgreSQL metadata store and one cache on the S3
//! server, as a team runs them behind a load balancer: a table is fetched once whichever
//! process asks, a connection made through one is seen by the others without a restart, and
//! a process killed in the middle of a fetch leaves nothing stuck or behind.

use std::process::Stdio;
use std::time::{Duration, Instant};

use arrow_flight::sql::client::FlightSqlServiceClient;
use base64::Engine as _;
use futures::TryStreamExt;
use quarry::arrow::array::Int64Array;
use quarry::arrow::record_batch::RecordBatch;
use sqlx::{Connection, PgConnection, Row};
use tonic::transport::Channel;

use crate::flight::listening_addresses;
use crate::http::http_call as http;
use crate::s3::Bucket;
use crate::support::{PgDatabase, Running, pg_source_config, quarry_command};

const PASSWORD: &str = "shared store test";
/// The cache's prefix in the bucket.
const PREFIX: &str = "team-cache";
/// The longest a test waits for another process to see a change. The bench measures the
/// time it takes (`cargo bench --bench shared`); this only bounds a hang.
const PROPAGATION_DEADLINE: Duration = Duration::from_secs(10);

/// A store database, a bucket, a source database with `items` (100 rows), and the processes.
struct Team {
    store: PgDatabase,
    source: PgDatabase,
    bucket: Bucket,
    key: String,
    homes: tempfile::TempDir,
}

/// One `quarry serve` process and its two addresses.
struct Process {
    child: Running,
    http: String,
    flight: String,
}

impl Team {
    async fn new() -> Self {
        let source = PgDatabase::create().await;
        let mut admin = PgConnection::connect(&source.url).await.unwrap();
        sqlx::raw_sql(
            "CREATE TABLE items (id integer PRIMARY KEY, name text);
             INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 100) g;
             ANALYZE items;",
        )
        .execute(&mut admin)
        .await
        .unwrap();
        let key: [u8; 32] = std::array::from_fn(|i| (i as u8).wrapping_mul(37).wrapping_add(11));
        Team {
            store: PgDatabase::create().await,
            source,
            bucket: Bucket::new().await,
            key: base64::engine::general_purpose::STANDARD.encode(key),
            homes: tempfile::tempdir().unwrap(),
        }
    }

    /// Starts process number `n` (each has a data dir of its own, as on its own machine).
    fn start(&self, n: usize) -> Process {
        let home = self.homes.path().join(format!("process-{n}"));
        let mut child = quarry_command(&home)
            .args([
                "serve",
                "--flight-addr",
                "127.0.0.1:0",
                "--http-addr",
                "127.0.0.1:0",
                "--store",
                &self.store.url,
                "--cache-url",
                &format!("s3://{}/{PREFIX}", self.bucket.name),
            ])
            .env("QUARRY_SECRET_KEY", &self.key)
            .env("QUARRY_SERVER_PASSWORD", PASSWORD)
            .env("AWS_ENDPOINT", self.bucket.endpoint)
            .env("AWS_ALLOW_HTTP", "true")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let addrs = listening_addresses(&mut child, 2);
        Process {
            http: addrs[0].clone(),
            flight: addrs[1].clone(),
            child: Running(child),
        }
    }

    /// Creates connection `shop` to the source through `process`'s REST API (which
    /// discovers its tables).
    async fn create_shop(&self, process: &Process) {
        let login = http(&process.http, "POST", "/login", &basic(), "").await;
        assert_eq!(login.0, 200, "{}", login.1);
        let token: serde_json::Value = serde_json::from_str(&login.1).unwrap();
        let body = serde_json::json!({
            "name": "shop",
            "source_type": "postgres",
            "config": pg_source_config(&self.source.name),
        });
        let created = http(
            &process.http,
            "POST",
            "/connections",
            &format!("Bearer {}", token["token"].as_str().unwrap()),
            &body.to_string(),
        )
        .await;
        assert_eq!(created.0, 201, "{}", created.1);
    }

    /// The store's account of `items`: how many fetches it counted, and its versions as
    /// (version, current).
    async fn items_in_store(&self) -> (i64, Vec<(i64, bool)>) {
        let mut store = PgConnection::connect(&self.store.url).await.unwrap();
        let fetches: i64 =
            sqlx::query("SELECT fetch_count FROM source_tables WHERE table_name = 'items'")
                .fetch_one(&mut store)
                .await
                .unwrap()
                .get(0);
        let versions = sqlx::query(
            "SELECT version, is_current FROM cache_entries WHERE table_name = 'items'
             ORDER BY version",
        )
        .fetch_all(&mut store)
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get::<i64, _>(0), row.get::<i64, _>(1) == 1))
        .collect();
        (fetches, versions)
    }

    /// The backend holding each granted table lock in the store database.
    async fn table_lock_holders(&self) -> Vec<i32> {
        let mut admin = PgConnection::connect(&self.store.url).await.unwrap();
        sqlx::query(
            "SELECT l.pid FROM pg_locks l JOIN pg_database d ON d.oid = l.database
             WHERE l.locktype = 'advisory' AND l.granted AND d.datname = $1",
        )
        .bind(&self.store.name)
        .fetch_all(&mut admin)
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
    }

    /// Waits until a table lock is granted to a backend other than those in `not`.
    async fn table_lock_taken(&self, not: &[i32]) -> i32 {
        let start = Instant::now();
        loop {
            if let Some(pid) = self
                .table_lock_holders()
                .await
                .into_iter()
                .find(|p| !not.contains(p))
            {
                return pid;
            }
            assert!(
                start.elapsed() < PROPAGATION_DEADLINE,
                "no process took the table's lock"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn basic() -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("quarry:{PASSWORD}"))
    )
}

/// A Flight SQL client of `process`, logged in.
async fn client(process: &Process) -> FlightSqlServiceClient<Channel> {
    let channel = Channel::from_shared(format!("http://{}", process.flight))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = FlightSqlServiceClient::new(channel);
    client.handshake("quarry", PASSWORD).await.unwrap();
    client
}

/// Runs `sql` through Flight SQL; the error as text if it fails.
async fn run(
    client: &mut FlightSqlServiceClient<Channel>,
    sql: &str,
) -> Result<Vec<RecordBatch>, String> {
    let info = client
        .execute(sql.into(), None)
        .await
        .map_err(|e| e.to_string())?;
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    client
        .do_get(ticket)
        .await
        .map_err(|e| e.to_string())?
        .try_collect()
        .await
        .map_err(|e| e.to_string())
}

/// The one Int64 value of a one-row result.
fn single(batches: &[RecordBatch]) -> i64 {
    let batch = batches.iter().find(|b| b.num_rows() > 0).unwrap();
    batch
        .column(0)
        .as_any()
        .downcast_ref::<Int64Array>()
        .unwrap()
        .value(0)
}

/// Waits until `process` can plan a query of `shop.public.items`: the connection made
/// elsewhere has reached it. Returns how long that took after `since`.
async fn sees_shop(process: &Process, since: Instant) -> Duration {
    let mut client = client(process).await;
    loop {
        match run(
            &mut client,
            "SELECT count(*) FROM information_schema.tables
             WHERE table_catalog = 'shop' AND table_name = 'items'",
        )
        .await
        {
            Ok(batches) if single(&batches) == 1 => return since.elapsed(),
            Ok(_) => {}
            Err(e) => panic!("{e}"),
        }
        assert!(
            since.elapsed() < PROPAGATION_DEADLINE,
            "the connection made through another process did not arrive"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_made_through_one_process_is_queryable_through_another() {
    let team = Team::new().await;
    let (a, b) = (team.start(1), team.start(2));
    let mut through_b = client(&b).await;
    // B started before the connection existed: nothing to read yet.
    let before = run(&mut through_b, "SELECT count(*) FROM shop.public.items").await;
    assert!(before.is_err_and(|e| e.contains("shop")));
    let made = Instant::now();
    team.create_shop(&a).await;
    let took = sees_shop(&b, made).await;
    eprintln!("the new connection reached the other process in {took:?}");
    let counted = run(&mut through_b, "SELECT count(*) FROM shop.public.items")
        .await
        .unwrap();
    assert_eq!(single(&counted), 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_first_queries_over_three_processes_fetch_the_table_once() {
    let team = Team::new().await;
    let processes = [team.start(1), team.start(2), team.start(3)];
    let made = Instant::now();
    team.create_shop(&processes[0]).await;
    for process in &processes[1..] {
        sees_shop(process, made).await;
    }
    let mut clients = Vec::new();
    for i in 0..16 {
        clients.push(client(&processes[i % processes.len()]).await);
    }
    let counts = futures::future::join_all(clients.iter_mut().map(|client| async move {
        single(
            &run(client, "SELECT count(*) FROM shop.public.items")
                .await
                .unwrap(),
        )
    }))
    .await;
    assert_eq!(counts, [100; 16]);
    assert_eq!(team.items_in_store().await, (1, vec![(1, true)]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_killed_in_the_middle_of_a_fetch_leaves_nothing_stuck_or_behind() {
    let team = Team::new().await;
    let (mut a, b) = (team.start(1), team.start(2));
    let made = Instant::now();
    team.create_shop(&a).await;
    sees_shop(&b, made).await;
    // The gate: while the test holds this lock, a fetch of `items` waits at the source.
    let mut gate = PgConnection::connect(&team.source.url).await.unwrap();
    sqlx::raw_sql("BEGIN; LOCK TABLE items IN ACCESS EXCLUSIVE MODE")
        .execute(&mut gate)
        .await
        .unwrap();
    let mut through_a = client(&a).await;
    let stuck =
        tokio::spawn(
            async move { run(&mut through_a, "SELECT count(*) FROM shop.public.items").await },
        );
    let a_holder = team.table_lock_taken(&[]).await;
    a.child.0.kill().unwrap();
    a.child.0.wait().unwrap();
    assert!(
        stuck.await.unwrap().is_err(),
        "a query of a killed process cannot succeed"
    );
    let mut through_b = client(&b).await;
    let taken_over =
        tokio::spawn(
            async move { run(&mut through_b, "SELECT count(*) FROM shop.public.items").await },
        );
    // B takes the table over once the store notices A is gone; then the gate opens.
    team.table_lock_taken(&[a_holder]).await;
    sqlx::raw_sql("ROLLBACK").execute(&mut gate).await.unwrap();
    assert_eq!(single(&taken_over.await.unwrap().unwrap()), 100);
    let (fetches, versions) = team.items_in_store().await;
    assert_eq!(fetches, 1);
    let [(version, true)] = versions[..] else {
        panic!("one current version expected: {versions:?}")
    };
    // A process starting now cleans up: only the published file is in the bucket.
    drop(team.start(3));
    let keys = team.bucket.keys(PREFIX).await;
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(
        keys[0].ends_with(&format!("/{version}.parquet")),
        "{keys:?}"
    );
}

#[tokio::test]
async fn a_second_process_on_a_sqlite_store_is_told_to_share_a_postgresql_one() {
    let home = tempfile::tempdir().unwrap();
    let alone = crate::support::quarry(home.path(), &["-c", "SELECT 1"]);
    assert!(alone.status.success());
    let said = crate::support::text(&alone.stderr);
    assert!(!said.contains("another Quarry process"), "{said}");
    // This test's engine holds the store while the second process starts.
    let _first = quarry::Engine::builder()
        .data_dir(home.path())
        .build()
        .await
        .unwrap();
    let second = crate::support::quarry(home.path(), &["-c", "SELECT 1"]);
    assert!(second.status.success());
    let said = crate::support::text(&second.stderr);
    assert!(
        said.contains("another Quarry process is using this metadata store")
            && said.contains("--store postgres://"),
        "{said}"
    );
}

/// Waits for `engine`'s next reload after a store change.
async fn next_reload(events: &mut tokio::sync::broadcast::Receiver<quarry::Event>) {
    let wait = async {
        loop {
            match events.recv().await {
                Ok(quarry::Event::StoreChangesLoaded) => return,
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => panic!("{e}"),
            }
        }
    };
    tokio::time::timeout(PROPAGATION_DEADLINE, wait)
        .await
        .expect("no reload after the store changed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_change_feed_reconnects_reloads_and_follows_again() {
    let store = PgDatabase::create().await;
    let homes = tempfile::tempdir().unwrap();
    let engine = |n: usize| {
        quarry::Engine::builder()
            .data_dir(homes.path().join(format!("engine-{n}")))
            .store_url(&store.url)
            .build()
    };
    let (a, b) = (engine(1).await.unwrap(), engine(2).await.unwrap());
    let mut events = b.subscribe();
    // The server drops the listening connections, as a restart or a network cut would.
    let mut admin = PgConnection::connect(&crate::support::pg_admin_url())
        .await
        .unwrap();
    let dropped: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = $1 AND query LIKE 'LISTEN %') AS t",
    )
    .bind(&store.name)
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert_eq!(dropped, 2, "each engine listens on one connection");
    // Changes made while it was down were not announced: it reloads once it listens again.
    next_reload(&mut events).await;
    // And it follows the changes after that.
    a.sql("CREATE VIEW made_after AS SELECT 1 AS x")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    while !b.snapshot().views.contains_key("made_after") {
        next_reload(&mut events).await;
    }
}
