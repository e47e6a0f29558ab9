//! TPC-H on a Ballista cluster in this process, against local execution, in one run: every
//! table is cached from PostgreSQL into a cache on S3 (moto's server, started here), then
//! the 22 queries run locally (memory tier off: the same Parquet files the executors read),
//! on a cluster of 1 executor and on one of 2 (2 task slots each), interleaved per query,
//! best of `--runs`. Answers are compared. On one 2-core machine this measures Ballista's
//! overhead (stages, shuffle files, gRPC), not a speed-up.
//!
//! Run: `cargo bench --bench ballista -- --scale 1` (needs `pip install "moto[server]"`).

#[path = "common/s3.rs"]
mod s3;
#[path = "common/tpch.rs"]
mod tpch;
#[path = "common/tpch_queries.rs"]
mod tpch_queries;

use std::time::Instant;

use datafusion::arrow::util::pretty::pretty_format_batches;

const PG_ADMIN: &str = "postgres://postgres@127.0.0.1:5432/postgres";
const BUCKET: &str = "quarry-bench-ballista";
const SLOTS: usize = 2;

#[derive(clap::Parser)]
struct Args {
    /// TPC-H scale factor.
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
    /// Runs of each query on each side; the best is kept.
    #[arg(long, default_value_t = 3)]
    runs: usize,
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

async fn engine(
    dir: &std::path::Path,
    endpoint: &str,
    prefix: &str,
    ballista: Option<&str>,
) -> quarry::Engine {
    let mut builder = quarry::Engine::builder()
        .data_dir(dir)
        .memory_cache(0)
        .cache_url(format!("s3://{BUCKET}/{prefix}"));
    for (key, value) in s3::cache_options(endpoint) {
        builder = builder.cache_option(key, value);
    }
    if let Some(url) = ballista {
        builder = builder.ballista(url, false).unwrap();
    }
    builder.build().await.unwrap()
}

/// Seconds to run `sql` to the end, and its result as sorted table lines.
async fn timed(engine: &quarry::Engine, sql: &str) -> (f64, String) {
    let start = Instant::now();
    let batches = tpch::collect(engine, sql).await;
    let secs = start.elapsed().as_secs_f64();
    let text = pretty_format_batches(&batches).unwrap().to_string();
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort_unstable();
    (secs, lines.join("\n"))
}

async fn bench(args: Args) {
    let database = tpch::ensure_postgres(PG_ADMIN, args.scale).await;
    let endpoint = s3::start(BUCKET);
    let prefix = format!("sf{}-{}", args.scale, std::process::id());
    let dir = tempfile::tempdir().unwrap();
    let local = engine(dir.path(), &endpoint, &prefix, None).await;
    let name = url::Url::parse(&database).unwrap().path()[1..].to_owned();
    local
        .create_connection(
            "tpch",
            "postgres",
            serde_json::json!({"host": "127.0.0.1", "database": name, "user": "postgres", "ssl_mode": "disable", "mode": "cache"}),
        )
        .await
        .unwrap();
    for (table, _) in tpch::TABLES {
        local.cached_table("tpch", "public", table).await.unwrap();
    }
    let storage = quarry::cache::CacheStorage::open(
        &format!("s3://{BUCKET}/{prefix}"),
        &s3::cache_options(&endpoint)
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let one = quarry::cluster::start_in_process(&storage, 1, SLOTS)
        .await
        .unwrap();
    let two = quarry::cluster::start_in_process(&storage, 2, SLOTS)
        .await
        .unwrap();
    let sides = [
        ("local", local),
        (
            "1 executor",
            engine(dir.path(), &endpoint, &prefix, Some(&one)).await,
        ),
        (
            "2 executors",
            engine(dir.path(), &endpoint, &prefix, Some(&two)).await,
        ),
    ];
    for (_, engine) in &sides {
        tpch::collect(engine, "USE tpch.public").await;
    }
    let mut best = vec![[f64::MAX; 3]; tpch_queries::QUERIES.len()];
    for (q, sql) in tpch_queries::QUERIES.iter().enumerate() {
        let mut answers: Vec<String> = Vec::new();
        for _ in 0..args.runs {
            for (s, (_, engine)) in sides.iter().enumerate() {
                let (secs, answer) = timed(engine, sql).await;
                best[q][s] = best[q][s].min(secs);
                if answers.len() <= s {
                    answers.push(answer);
                } else {
                    assert_eq!(answers[s], answer, "Q{} changed between runs", q + 1);
                }
            }
        }
        assert_eq!(
            answers[1],
            answers[0],
            "Q{}: 1 executor differs from local",
            q + 1
        );
        assert_eq!(
            answers[2],
            answers[0],
            "Q{}: 2 executors differ from local",
            q + 1
        );
        println!(
            "Q{:<2} local {:.3} s, 1 executor {:.3} s ({:.2}x), 2 executors {:.3} s ({:.2}x)",
            q + 1,
            best[q][0],
            best[q][1],
            best[q][1] / best[q][0],
            best[q][2],
            best[q][2] / best[q][0]
        );
    }
    let column = |s: usize| best.iter().map(|b| b[s]).collect::<Vec<_>>();
    let (local, one, two) = (
        tpch::geomean(&column(0)),
        tpch::geomean(&column(1)),
        tpch::geomean(&column(2)),
    );
    println!(
        "TPC-H scale {} geomean: local {local:.3} s, Ballista 1 executor {one:.3} s ({:.2}x local), 2 executors {two:.3} s ({:.2}x local); answers equal",
        args.scale,
        one / local,
        two / local
    );
}
