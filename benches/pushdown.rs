//! Pushdown on TPC-H, all in one run: a point lookup of `lineitem` (uncached) in `live` and
//! in `auto` mode against PostgreSQL direct; a selective aggregate (Q6) live against
//! PostgreSQL direct; the 22 queries live against PostgreSQL direct (with their answers
//! checked against Quarry's cached answers); the 22 in `auto` once every table is cached
//! against the same in `cache` mode; and the point lookup and Q6 live on MariaDB against a
//! direct MariaDB session.
//! Run: `cargo bench --bench pushdown -- --scale 1` (`--timeout 60` seconds per query,
//! `--skip-mariadb`).

#[path = "common/tpch.rs"]
mod tpch;
#[path = "common/tpch_queries.rs"]
mod tpch_queries;

use std::time::{Duration, Instant};

use datafusion::arrow::util::pretty::pretty_format_batches;
use sqlx::{Connection, Executor, MySqlConnection, PgConnection};

const PG_ADMIN: &str = "postgres://postgres@127.0.0.1:5432/postgres";
const MYSQL_ADMIN: &str = "mysql://root@127.0.0.1:3306";
const POINT: &str = "SELECT * FROM lineitem WHERE l_orderkey = 4000000";

#[derive(clap::Parser)]
struct Args {
    /// TPC-H scale factor.
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
    /// Seconds a query may take on PostgreSQL before it is given up.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
    /// Leaves MariaDB out.
    #[arg(long)]
    skip_mariadb: bool,
    /// Passed by `cargo bench`.
    #[arg(long, hide = true)]
    bench: bool,
}

/// The median of `runs` timings of the async block `body`.
macro_rules! median {
    ($runs:expr, $body:expr) => {{
        let mut times = Vec::new();
        for _ in 0..$runs {
            let start = Instant::now();
            $body;
            times.push(start.elapsed());
        }
        times.sort();
        times[$runs / 2]
    }};
}

/// The statement's answer as text, and its row count (an error's first line instead).
async fn try_answer(engine: &quarry::Engine, sql: &str) -> Result<(String, usize), String> {
    let frame = engine.sql(sql).await.map_err(|e| e.to_string())?;
    let batches = frame.collect().await.map_err(|e| e.to_string())?;
    let rows = batches.iter().map(|b| b.num_rows()).sum();
    Ok((pretty_format_batches(&batches).unwrap().to_string(), rows))
}

async fn answer(engine: &quarry::Engine, sql: &str) -> (String, usize) {
    try_answer(engine, sql).await.unwrap()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// An engine with connection `tpch` to `database` of `source_type` in access `mode`, its
/// default catalog `tpch`.
async fn engine(
    dir: &std::path::Path,
    source_type: &str,
    mut config: serde_json::Value,
    mode: &str,
) -> quarry::Engine {
    let engine = quarry::Engine::builder()
        .data_dir(dir)
        .build()
        .await
        .unwrap();
    config["mode"] = mode.into();
    engine
        .register_connection("tpch", source_type, config)
        .await
        .unwrap();
    engine.discover_connection("tpch").await.unwrap();
    engine
        .sql("SET datafusion.catalog.default_catalog = 'tpch'")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    engine
}

#[tokio::main]
async fn main() {
    let args = <Args as clap::Parser>::parse();
    let (scale, timeout) = (args.scale, args.timeout);
    let url = tpch::ensure_postgres(PG_ADMIN, scale).await;
    let pg_config = serde_json::json!({"host": "127.0.0.1", "database": tpch::database_name(scale), "user": "postgres", "ssl_mode": "disable"});
    let mut pg = PgConnection::connect(&url).await.unwrap();
    pg.execute(sqlx::AssertSqlSafe(format!(
        "SET statement_timeout = '{timeout}s'"
    )))
    .await
    .unwrap();
    let dirs = [(); 3].map(|()| tempfile::tempdir().unwrap());
    let live = engine(dirs[0].path(), "postgres", pg_config.clone(), "live").await;
    let auto = engine(dirs[1].path(), "postgres", pg_config.clone(), "auto").await;
    let cached = engine(dirs[2].path(), "postgres", pg_config.clone(), "cache").await;

    // Point lookup.
    let pg_point = median!(5, {
        sqlx::raw_sql(POINT).fetch_all(&mut pg).await.unwrap();
    });
    let live_point = median!(5, {
        answer(&live, POINT).await;
    });
    let start = Instant::now();
    let (auto_answer, rows) = answer(&auto, POINT).await;
    let auto_first = start.elapsed();
    assert_eq!(
        auto_answer,
        answer(&live, POINT).await.0,
        "auto and live disagree"
    );
    println!("point lookup ({rows} rows), uncached lineitem:");
    println!("  postgres direct     {:>9.1} ms", ms(pg_point));
    println!(
        "  quarry live         {:>9.1} ms  (+{:.1} ms)",
        ms(live_point),
        ms(live_point) - ms(pg_point)
    );
    println!(
        "  quarry auto, first  {:>9.1} ms  (+{:.1} ms; lineitem now copies in the background)",
        ms(auto_first),
        ms(auto_first) - ms(pg_point)
    );

    // Q6 live.
    let q6 = tpch_queries::QUERIES[5];
    let pg_q6 = median!(3, {
        sqlx::raw_sql(q6).fetch_all(&mut pg).await.unwrap();
    });
    let live_q6 = median!(3, {
        answer(&live, q6).await;
    });
    println!(
        "Q6: postgres direct {:.1} ms, quarry live {:.1} ms ({:.2}x postgres)",
        ms(pg_q6),
        ms(live_q6),
        live_q6.as_secs_f64() / pg_q6.as_secs_f64()
    );

    // Caching every table (the cache-mode engine; auto's background copy of lineitem is
    // waited for), then the 22 queries live, cached and in auto.
    let warm = Instant::now();
    for (table, _) in tpch::TABLES {
        cached.cached_table("tpch", "public", table).await.unwrap();
        auto.cached_table("tpch", "public", table).await.unwrap();
    }
    auto.background_copies_done().await;
    println!(
        "cached the 8 tables twice in {:.1} s",
        warm.elapsed().as_secs_f64()
    );
    let auto_point = median!(5, {
        answer(&auto, POINT).await;
    });
    println!("point lookup, auto once cached: {:.1} ms", ms(auto_point));

    println!(
        "{:>5} {:>11} {:>9} {:>8} {:>9} {:>9} {:>8} {:>6}",
        "query", "postgres s", "live s", "live/pg", "cache s", "auto s", "auto/cache", "same"
    );
    let (mut pg_times, mut live_times) = (Vec::new(), Vec::new());
    let (mut cache_times, mut auto_times) = (Vec::new(), Vec::new());
    let mut differ = Vec::new();
    for (i, sql) in tpch_queries::QUERIES.iter().enumerate() {
        let start = Instant::now();
        let pg_result = sqlx::raw_sql(sqlx::AssertSqlSafe(*sql))
            .fetch_all(&mut pg)
            .await;
        let pg_time = start.elapsed().as_secs_f64();
        let start = Instant::now();
        let live_result = try_answer(&live, sql).await;
        let live_time = start.elapsed().as_secs_f64();
        let start = Instant::now();
        let (cached_answer, _) = answer(&cached, sql).await;
        let cache_time = start.elapsed().as_secs_f64();
        let start = Instant::now();
        let (auto_answer, _) = answer(&auto, sql).await;
        let auto_time = start.elapsed().as_secs_f64();
        let (live_answer, live_rows) = match live_result {
            Ok(answer) => answer,
            Err(e) => {
                println!(
                    "{:>5} live failed: {}",
                    i + 1,
                    e.lines().next().unwrap_or_default()
                );
                differ.push(i + 1);
                continue;
            }
        };
        let same = live_answer == cached_answer && auto_answer == cached_answer;
        if !same {
            differ.push(i + 1);
        }
        cache_times.push(cache_time);
        auto_times.push(auto_time);
        match pg_result {
            Ok(rows) => {
                assert_eq!(rows.len(), live_rows, "Q{}: row counts differ", i + 1);
                pg_times.push(pg_time);
                live_times.push(live_time);
                println!(
                    "{:>5} {pg_time:>11.3} {live_time:>9.3} {:>7.2}x {cache_time:>9.3} {auto_time:>9.3} {:>9.2}x {same:>6}",
                    i + 1,
                    live_time / pg_time,
                    auto_time / cache_time,
                );
            }
            Err(e) => println!(
                "{:>5} {:>11} {live_time:>9.3} {:>8} {cache_time:>9.3} {auto_time:>9.3} {:>10} {same:>6} ({})",
                i + 1,
                format!(">{timeout}"),
                "",
                "",
                e.to_string().lines().next().unwrap_or_default()
            ),
        }
    }
    println!(
        "geometric mean over {} queries PostgreSQL finished: postgres {:.3} s, live {:.3} s ({:.2}x postgres)",
        pg_times.len(),
        tpch::geomean(&pg_times),
        tpch::geomean(&live_times),
        tpch::geomean(&live_times) / tpch::geomean(&pg_times)
    );
    println!(
        "all 22 warm: cache {:.3} s, auto {:.3} s ({:.2}x cache)",
        tpch::geomean(&cache_times),
        tpch::geomean(&auto_times),
        tpch::geomean(&auto_times) / tpch::geomean(&cache_times)
    );
    println!(
        "answers equal to the cached ones: {}/22{}",
        22 - differ.len(),
        if differ.is_empty() {
            String::new()
        } else {
            format!(" (differ: {differ:?})")
        }
    );

    if args.skip_mariadb {
        return;
    }
    let name = tpch::ensure_mysql(MYSQL_ADMIN, scale, true).await;
    let mut my = MySqlConnection::connect(&format!("{MYSQL_ADMIN}/{name}"))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let my_live = engine(
        dir.path(),
        "mysql",
        serde_json::json!({"host": "127.0.0.1", "database": name, "user": "root", "ssl_mode": "disable"}),
        "live",
    )
    .await;
    my_live
        .sql(&format!("SET datafusion.catalog.default_schema = '{name}'"))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    for (label, sql) in [("point lookup", POINT), ("Q6", q6)] {
        let direct = median!(3, {
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .fetch_all(&mut my)
                .await
                .unwrap();
        });
        let ours = median!(3, {
            answer(&my_live, sql).await;
        });
        println!(
            "MariaDB {label}: direct {:.1} ms, quarry live {:.1} ms (+{:.1} ms, {:.2}x)",
            ms(direct),
            ms(ours),
            ms(ours) - ms(direct),
            ours.as_secs_f64() / direct.as_secs_f64()
        );
    }
}
