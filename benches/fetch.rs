//! Cold fetch of TPC-H lineitem into the cache, against the floor of reading the same data
//! from the same server in the same run:
//! - PostgreSQL: draining `COPY lineitem TO STDOUT (FORMAT binary)` through tokio-postgres;
//! - MariaDB: a plain streamed `SELECT * FROM lineitem` discarded with sqlx.
//!
//! Each fetch runs in a child process so its peak RSS is its own.
//! Run: `cargo bench --bench fetch -- --scale 1` (scale 0.1 for a quick look).

#[path = "common/child.rs"]
mod child;
#[path = "common/tpch.rs"]
mod tpch;

use std::time::{Duration, Instant};

use futures::StreamExt;

const PG_ADMIN: &str = "postgres://postgres@127.0.0.1:5432/postgres";
const MYSQL_ADMIN: &str = "mysql://root@127.0.0.1:3306";

/// A cold fetch of TPC-H lineitem from each source, in a child process so that its peak
/// memory is its own, against the source's own fastest export (the floor).
#[derive(clap::Parser)]
struct Args {
    /// TPC-H scale factor.
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
    /// The sources to fetch from, comma-separated.
    #[arg(long, default_value = "postgres,mysql")]
    sources: String,
    /// Internal: fetch from this source in this process.
    #[arg(long, hide = true, requires = "database")]
    child: Option<String>,
    /// Internal: the database the child fetches from.
    #[arg(long, hide = true)]
    database: Option<String>,
    /// Passed by `cargo bench`.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() {
    let args = <Args as clap::Parser>::parse();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    if let (Some(source), Some(database)) = (&args.child, &args.database) {
        runtime.block_on(child_fetch(source, database));
        return;
    }
    let (scale, sources) = (args.scale, args.sources);
    println!("cold fetch of TPC-H lineitem at scale {scale}");
    println!(
        "{:<9} {:>9} {:>10} {:>12} {:>11} {:>9} {:>9} {:>12}",
        "source", "rows", "fetch s", "rows/s", "parquet MB", "peak MB", "floor s", "fetch/floor"
    );
    for source in sources.split(',') {
        let (database, floor) = runtime.block_on(async {
            match source {
                "postgres" => {
                    let url = tpch::ensure_postgres(PG_ADMIN, scale).await;
                    let first = pg_floor(&url).await;
                    (tpch::database_name(scale), first)
                }
                "mysql" => {
                    let name = tpch::ensure_mysql(MYSQL_ADMIN, scale, true).await;
                    let first = mysql_floor(&name).await;
                    (name, first)
                }
                other => panic!("unknown source {other}; use postgres or mysql"),
            }
        });
        // Fetch and floor alternate, twice each, and each keeps its faster run: the machine
        // is noisy, and both sides get the same treatment.
        let first_fetch = run_child(source, &database);
        let second = runtime.block_on(async {
            match source {
                "postgres" => {
                    pg_floor(&format!("postgres://postgres@127.0.0.1:5432/{database}")).await
                }
                _ => mysql_floor(&database).await,
            }
        });
        let second_fetch = run_child(source, &database);
        let peak_kb = first_fetch.peak_kb.max(second_fetch.peak_kb);
        let mut fetch = if second_fetch.seconds < first_fetch.seconds {
            second_fetch
        } else {
            first_fetch
        };
        fetch.peak_kb = peak_kb;
        let floor = floor.min(second);
        println!(
            "{:<9} {:>9} {:>10.2} {:>12.0} {:>11.1} {:>9.1} {:>9.2} {:>12.2}",
            source,
            fetch.rows,
            fetch.seconds,
            fetch.rows as f64 / fetch.seconds,
            fetch.bytes as f64 / 1e6,
            fetch.peak_kb as f64 / 1024.0,
            floor.as_secs_f64(),
            fetch.seconds / floor.as_secs_f64()
        );
    }
}

struct FetchResult {
    rows: u64,
    bytes: u64,
    seconds: f64,
    peak_kb: u64,
}

fn run_child(source: &str, database: &str) -> FetchResult {
    let parts = child::run(&[
        "--child".as_ref(),
        source.as_ref(),
        "--database".as_ref(),
        database.as_ref(),
    ]);
    FetchResult {
        rows: parts[0].parse().unwrap(),
        bytes: parts[1].parse().unwrap(),
        seconds: parts[2].parse().unwrap(),
        peak_kb: parts[3].parse().unwrap(),
    }
}

async fn child_fetch(source: &str, database: &str) {
    let dir = tempfile::tempdir().unwrap();
    let engine = quarry::Engine::builder()
        .data_dir(dir.path())
        .secret_key(quarry::secrets::SecretKey::generate())
        .build()
        .await
        .unwrap();
    let (config, schema) = match source {
        "postgres" => (
            serde_json::json!({"host": "127.0.0.1", "database": database, "user": "postgres", "ssl_mode": "disable"}),
            "public".to_owned(),
        ),
        _ => (
            serde_json::json!({"host": "127.0.0.1", "database": database, "user": "root", "ssl_mode": "disable"}),
            database.to_owned(),
        ),
    };
    engine
        .register_connection("src", source, config)
        .await
        .unwrap();
    engine.discover_connection("src").await.unwrap();
    let start = Instant::now();
    let entry = engine
        .cached_table("src", &schema, "lineitem")
        .await
        .unwrap();
    let seconds = start.elapsed().as_secs_f64();
    println!(
        "RESULT {} {} {seconds} {}",
        entry.row_count,
        entry.byte_size,
        child::peak_rss_kb()
    );
}

async fn pg_floor(url: &str) -> Duration {
    let parsed = url::Url::parse(url).unwrap();
    let config = format!(
        "host={} port={} user={} dbname={}",
        parsed.host_str().unwrap(),
        parsed.port().unwrap_or(5432),
        parsed.username(),
        parsed.path().trim_start_matches('/')
    );
    let (client, connection) = tokio_postgres::connect(&config, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let start = Instant::now();
    let stream = client
        .copy_out("COPY lineitem TO STDOUT (FORMAT binary)")
        .await
        .unwrap();
    let mut stream = std::pin::pin!(stream);
    let mut bytes = 0usize;
    while let Some(chunk) = stream.next().await {
        bytes += chunk.unwrap().len();
    }
    std::hint::black_box(bytes);
    start.elapsed()
}

async fn mysql_floor(database: &str) -> Duration {
    use sqlx::Connection;
    let mut conn = sqlx::MySqlConnection::connect(&format!("{MYSQL_ADMIN}/{database}"))
        .await
        .unwrap();
    let start = Instant::now();
    let mut rows = sqlx::query("SELECT * FROM lineitem").fetch(&mut conn);
    let mut count = 0usize;
    while let Some(row) = rows.next().await {
        std::hint::black_box(row.unwrap());
        count += 1;
    }
    std::hint::black_box(count);
    start.elapsed()
}
