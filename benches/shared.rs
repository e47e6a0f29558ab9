//! Several Quarry engines on one PostgreSQL store and one S3 cache (moto's server, started
//! here on a free port), as several processes run them; every engine has a store
//! connection pool, a cache and a change feed of its own. Printed:
//! - one table's cold fetch: the first query from 4 engines at once against 1 engine
//!   alone, each on a fresh store and cache prefix, alternated and best of `--rounds`;
//!   the table is fetched once either way (checked);
//! - the time a catalog change (`CREATE VIEW` in one engine) takes to reach another
//!   engine's snapshot, median and p99 over `--changes` changes, timed from the start of
//!   the statement to the other engine's reload.
//!
//! Run: `cargo bench --bench shared` (needs `pip install "moto[server]"`).

use std::time::{Duration, Instant};

#[path = "common/s3.rs"]
mod s3;

use quarry::events::Event;
use sqlx::{AssertSqlSafe, Connection, Executor, PgConnection, Row};

const PG_ADMIN: &str = "postgres://postgres@127.0.0.1:5432/postgres";
const SOURCE_DB: &str = "quarry_bench_shared_source";
const BUCKET: &str = "quarry-bench-shared";

#[derive(clap::Parser)]
struct Args {
    /// Rows of the fetched table.
    #[arg(long, default_value_t = 2_000_000)]
    rows: u64,
    /// Rounds of the cold-fetch comparison (best kept).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Catalog changes timed.
    #[arg(long, default_value_t = 100)]
    changes: usize,
    /// Passed by `cargo bench`.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() {
    let args = <Args as clap::Parser>::parse();
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(bench(args));
}

async fn bench(args: Args) {
    let endpoint = s3::start(BUCKET);
    let mut admin = PgConnection::connect(PG_ADMIN).await.unwrap();
    drop_database(&mut admin, SOURCE_DB).await;
    admin
        .execute(AssertSqlSafe(format!("CREATE DATABASE {SOURCE_DB}")))
        .await
        .unwrap();
    let mut source = PgConnection::connect(&db_url(SOURCE_DB)).await.unwrap();
    source
        .execute(AssertSqlSafe(format!(
            "CREATE TABLE big AS SELECT g AS id, md5(g::text) AS name, g * 1.25 AS price
             FROM generate_series(1, {}) g; ANALYZE big;",
            args.rows
        )))
        .await
        .unwrap();
    drop(source);

    let mut best = [f64::MAX, f64::MAX];
    for round in 0..args.rounds {
        // Alternate which runs first, so a trend in the machine's speed favours neither.
        let order: [usize; 2] = if round % 2 == 0 { [1, 4] } else { [4, 1] };
        for engines in order {
            let secs = cold_fetch(&mut admin, &endpoint, round, engines).await;
            let slot = usize::from(engines == 4);
            best[slot] = best[slot].min(secs);
            println!("round {round}: {engines} engine(s), first query {secs:.3} s");
        }
    }
    println!(
        "cold fetch of {} rows: 1 engine {:.3} s, 4 engines at once {:.3} s: {:.2}x (target <= 1.2x)",
        args.rows,
        best[0],
        best[1],
        best[1] / best[0]
    );

    let (median, p99) = propagation(&mut admin, &endpoint, args.changes).await;
    println!(
        "catalog change to another engine over {} changes: median {:.1} ms, p99 {:.1} ms (target < 1 s)",
        args.changes,
        median.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3
    );
    drop_database(&mut admin, SOURCE_DB).await;
}

async fn drop_database(admin: &mut PgConnection, name: &str) {
    admin
        .execute(AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .await
        .unwrap();
}

fn db_url(name: &str) -> String {
    format!("postgres://postgres@127.0.0.1:5432/{name}")
}

/// A fresh store database `name`.
async fn fresh_store(admin: &mut PgConnection, name: &str) -> String {
    drop_database(admin, name).await;
    admin
        .execute(AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .await
        .unwrap();
    db_url(name)
}

/// `count` engines on the store at `store` and the cache prefix `prefix`, each on a data
/// dir of its own under `dir`.
async fn engines(
    dir: &std::path::Path,
    store: &str,
    endpoint: &str,
    prefix: &str,
    count: usize,
) -> Vec<quarry::Engine> {
    let mut engines = Vec::new();
    for i in 0..count {
        let mut builder = quarry::Engine::builder()
            .data_dir(dir.join(format!("engine-{i}")))
            .store_url(store)
            .memory_cache(0)
            .cache_url(format!("s3://{BUCKET}/{prefix}"));
        for (key, value) in s3::cache_options(endpoint) {
            builder = builder.cache_option(key, value);
        }
        engines.push(builder.build().await.unwrap());
    }
    engines
}

/// Seconds until `engines` engines have each answered their first query of `big`, asked at
/// once; the connection is made in the first and has reached the others before timing.
async fn cold_fetch(admin: &mut PgConnection, endpoint: &str, round: usize, count: usize) -> f64 {
    let name = format!("quarry_bench_shared_store_{count}");
    let store = fresh_store(admin, &name).await;
    let dir = tempfile::tempdir().unwrap();
    let engines = engines(
        dir.path(),
        &store,
        endpoint,
        &format!("round-{round}-{count}"),
        count,
    )
    .await;
    let mut events: Vec<_> = engines[1..].iter().map(|e| e.subscribe()).collect();
    engines[0]
        .register_connection(
            "shop",
            "postgres",
            serde_json::json!({"host": "127.0.0.1", "database": SOURCE_DB, "user": "postgres", "ssl_mode": "disable"}),
        )
        .await
        .unwrap();
    engines[0].discover_connection("shop").await.unwrap();
    for (engine, events) in engines[1..].iter().zip(&mut events) {
        while engine
            .snapshot()
            .connections
            .get("shop")
            .is_none_or(|c| c.schemas.is_empty())
        {
            wait_for_reload(events).await;
        }
    }
    let start = Instant::now();
    let counts = futures::future::join_all(engines.iter().map(|engine| async move {
        let batches = engine
            .sql("SELECT count(*) FROM shop.public.big")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        batches[0]
            .column(0)
            .as_any()
            .downcast_ref::<quarry::arrow::array::Int64Array>()
            .unwrap()
            .value(0)
    }))
    .await;
    let secs = start.elapsed().as_secs_f64();
    assert!(counts.iter().all(|c| *c > 0), "{counts:?}");
    let mut store_conn = PgConnection::connect(&store).await.unwrap();
    let fetches: i64 =
        sqlx::query("SELECT fetch_count FROM source_tables WHERE table_name = 'big'")
            .fetch_one(&mut store_conn)
            .await
            .unwrap()
            .get(0);
    assert_eq!(fetches, 1, "the table was fetched more than once");
    drop(store_conn);
    for engine in &engines {
        engine.shutdown().await;
    }
    drop(engines);
    drop_database(admin, &name).await;
    secs
}

async fn wait_for_reload(events: &mut tokio::sync::broadcast::Receiver<Event>) {
    loop {
        match tokio::time::timeout(Duration::from_secs(30), events.recv()).await {
            Ok(Ok(Event::StoreChangesLoaded)) => return,
            Ok(Ok(_)) | Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => {}
            Ok(Err(e)) => panic!("events ended: {e}"),
            Err(_) => panic!("no store change arrived within 30 s"),
        }
    }
}

/// The median and p99 of the time a `CREATE VIEW` in one engine takes to reach another's
/// snapshot.
async fn propagation(
    admin: &mut PgConnection,
    endpoint: &str,
    changes: usize,
) -> (Duration, Duration) {
    let name = "quarry_bench_shared_store_feed";
    let store = fresh_store(admin, name).await;
    let dir = tempfile::tempdir().unwrap();
    let engines = engines(dir.path(), &store, endpoint, "feed", 2).await;
    let mut events = engines[1].subscribe();
    let mut took = Vec::with_capacity(changes);
    for i in 0..changes {
        let view = format!("v{i}");
        let start = Instant::now();
        engines[0]
            .sql(&format!("CREATE VIEW {view} AS SELECT {i} AS x"))
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        while !engines[1].snapshot().views.contains_key(&view) {
            wait_for_reload(&mut events).await;
        }
        took.push(start.elapsed());
    }
    took.sort();
    drop(engines);
    drop_database(admin, name).await;
    (
        took[took.len() / 2],
        took[(took.len() * 99).div_ceil(100) - 1],
    )
}
