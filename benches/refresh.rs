//! Incremental refresh of TPC-H lineitem, against a full refresh of the same table in the
//! same run, on a copy of the TPC-H database made for this run (and dropped after it):
//! - `append` after 1% new rows at the source, and `upsert` after 1% of the rows updated,
//!   each as a share of a full refresh's time; every refresh runs in a child process, so
//!   its peak RSS is its own;
//! - the 22 TPC-H queries, warm (every table decoded into the memory tier), after 10 append
//!   refreshes: before compaction and after it, against a freshly fetched copy.
//!
//! Run: `cargo bench --bench refresh -- --scale 1` (scale 0.1 for a quick look).

#[path = "common/child.rs"]
mod child;
#[path = "common/tpch.rs"]
mod tpch;
#[path = "common/tpch_queries.rs"]
mod tpch_queries;

use std::time::Instant;

use sqlx::{AssertSqlSafe, Connection, Executor, PgConnection};

const PG_ADMIN: &str = "postgres://postgres@127.0.0.1:5432/postgres";

#[derive(clap::Parser)]
struct Args {
    /// TPC-H scale factor.
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
    /// Internal: refresh lineitem in this process with these table options (JSON).
    #[arg(long, hide = true, requires = "data_dir")]
    child: Option<String>,
    /// Internal: the child's data dir.
    #[arg(long, hide = true)]
    data_dir: Option<String>,
    /// Internal: the database the child reads.
    #[arg(long, hide = true)]
    database: Option<String>,
    /// Passed by `cargo bench`.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() {
    let args = <Args as clap::Parser>::parse();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    if let (Some(options), Some(dir), Some(database)) =
        (&args.child, &args.data_dir, &args.database)
    {
        runtime.block_on(child_refresh(options, dir, database));
        return;
    }
    runtime.block_on(bench(args.scale));
}

/// A connection `tpch` to `database` on the engine of data dir `dir`.
async fn engine(dir: &std::path::Path, database: &str) -> quarry::Engine {
    let engine = quarry::Engine::builder()
        .data_dir(dir)
        .build()
        .await
        .unwrap();
    if engine.connection("tpch").await.is_err() {
        engine
            .register_connection(
                "tpch",
                "postgres",
                serde_json::json!({"host": "127.0.0.1", "database": database, "user": "postgres", "ssl_mode": "disable"}),
            )
            .await
            .unwrap();
        engine.discover_connection("tpch").await.unwrap();
    }
    engine
}

async fn set_options(engine: &quarry::Engine, options: &serde_json::Value) {
    engine
        .set_table_options("tpch", "public", "lineitem", options)
        .await
        .unwrap();
}

/// Refreshes lineitem with `options` set first; prints its time and the peak RSS.
async fn child_refresh(options: &str, dir: &str, database: &str) {
    let engine = engine(std::path::Path::new(dir), database).await;
    set_options(&engine, &serde_json::from_str(options).unwrap()).await;
    let start = Instant::now();
    let entry = engine
        .refresh_table("tpch", "public", "lineitem")
        .await
        .unwrap();
    let seconds = start.elapsed().as_secs_f64();
    println!(
        "RESULT {seconds} {} {} {}",
        child::peak_rss_kb(),
        entry.row_count,
        entry.files().count()
    );
    engine.shutdown().await;
}

struct Refreshed {
    seconds: f64,
    peak_kb: u64,
    rows: u64,
    files: u64,
}

fn refresh_in_child(
    options: serde_json::Value,
    dir: &std::path::Path,
    database: &str,
) -> Refreshed {
    let options = options.to_string();
    let parts = child::run(&[
        "--child".as_ref(),
        options.as_ref(),
        "--data-dir".as_ref(),
        dir.as_os_str(),
        "--database".as_ref(),
        database.as_ref(),
    ]);
    Refreshed {
        seconds: parts[0].parse().unwrap(),
        peak_kb: parts[1].parse().unwrap(),
        rows: parts[2].parse().unwrap(),
        files: parts[3].parse().unwrap(),
    }
}

fn report(label: &str, r: &Refreshed, full: f64) {
    println!(
        "{label:<28} {:>8.2} s {:>7.1}% of full {:>8.1} MB peak {:>9} rows {:>3} files",
        r.seconds,
        100.0 * r.seconds / full,
        r.peak_kb as f64 / 1024.0,
        r.rows,
        r.files
    );
}

async fn bench(scale: f64) {
    let template = tpch::ensure_postgres(PG_ADMIN, scale).await;
    drop(template);
    // A copy of the loaded database for this run: the rows it adds and changes stay here.
    let database = format!("{}_refresh", tpch::database_name(scale));
    let mut admin = PgConnection::connect(PG_ADMIN).await.unwrap();
    admin
        .execute(AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {database} WITH (FORCE)"
        )))
        .await
        .unwrap();
    let copying = Instant::now();
    admin
        .execute(AssertSqlSafe(format!(
            "CREATE DATABASE {database} TEMPLATE {}",
            tpch::database_name(scale)
        )))
        .await
        .unwrap();
    let mut source =
        PgConnection::connect(&format!("postgres://postgres@127.0.0.1:5432/{database}"))
            .await
            .unwrap();
    // The change column upsert reads, one value per order as rows written over time have
    // (a single shared value would make every row sit at the mark).
    source
        .execute(
            "CREATE TABLE lineitem_timed AS SELECT l.*,
                 timestamp '2020-01-01' + l_orderkey * interval '1 second' AS updated_at
             FROM lineitem l;
             DROP TABLE lineitem;
             ALTER TABLE lineitem_timed RENAME TO lineitem;
             ALTER TABLE lineitem ALTER COLUMN updated_at SET DEFAULT '2020-01-01';
             ALTER TABLE lineitem ADD PRIMARY KEY (l_orderkey, l_linenumber);
             CREATE INDEX ON lineitem (updated_at); ANALYZE lineitem;",
        )
        .await
        .unwrap();
    println!(
        "TPC-H scale {scale}: copied into {database} (with updated_at) in {:.1} s",
        copying.elapsed().as_secs_f64()
    );
    let dir = tempfile::tempdir().unwrap();
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM lineitem")
        .fetch_one(&mut source)
        .await
        .unwrap();
    let one_percent = (rows / 100).max(1);

    // The first copy, then a full refresh: the baseline.
    let full_options = serde_json::json!({"refresh": "full"});
    refresh_in_child(full_options.clone(), dir.path(), &database);
    let full = refresh_in_child(full_options.clone(), dir.path(), &database);
    report("full refresh", &full, full.seconds);

    // 1% new rows: whole orders past the largest key.
    let add_orders = |n: i64| {
        format!(
            "INSERT INTO lineitem (l_orderkey, l_partkey, l_suppkey, l_linenumber, l_quantity,
                 l_extendedprice, l_discount, l_tax, l_returnflag, l_linestatus, l_shipdate,
                 l_commitdate, l_receiptdate, l_shipinstruct, l_shipmode, l_comment)
             SELECT l_orderkey + m.k, l_partkey, l_suppkey, l_linenumber, l_quantity,
                 l_extendedprice, l_discount, l_tax, l_returnflag, l_linestatus, l_shipdate,
                 l_commitdate, l_receiptdate, l_shipinstruct, l_shipmode, l_comment
             FROM lineitem, (SELECT max(l_orderkey) AS k FROM lineitem) m
             WHERE l_orderkey <= (SELECT l_orderkey FROM lineitem ORDER BY l_orderkey
                                  OFFSET {n} LIMIT 1)"
        )
    };
    let append_options = serde_json::json!({"refresh": "append", "cursor_column": "l_orderkey"});
    source
        .execute(AssertSqlSafe(add_orders(one_percent)))
        .await
        .unwrap();
    let append = refresh_in_child(append_options.clone(), dir.path(), &database);
    report("append, 1% new rows", &append, full.seconds);

    // 1% of the rows updated.
    let upsert_options = serde_json::json!({"refresh": "upsert", "cursor_column": "updated_at"});
    source
        .execute(
            "UPDATE lineitem SET l_comment = 'changed', updated_at = '2030-01-01'
             WHERE l_orderkey % 100 = 7",
        )
        .await
        .unwrap();
    let upsert = refresh_in_child(upsert_options, dir.path(), &database);
    report("upsert, 1% rows updated", &upsert, full.seconds);

    // Ten appends of 1% each, then warm TPC-H: as they are, compacted, and fetched afresh.
    for _ in 0..10 {
        source
            .execute(AssertSqlSafe(add_orders(one_percent)))
            .await
            .unwrap();
        let r = refresh_in_child(append_options.clone(), dir.path(), &database);
        if r.files <= 1 {
            println!("(compacted early: {} files)", r.files);
        }
    }
    let engine = engine(dir.path(), &database).await;
    let deltas = warm_tpch(&engine).await;
    let compacting = Instant::now();
    let compacted = engine
        .compact_table("tpch", "public", "lineitem")
        .await
        .unwrap();
    let compact_seconds = compacting.elapsed().as_secs_f64();
    let after = warm_tpch(&engine).await;
    set_options(&engine, &full_options).await;
    engine
        .refresh_table("tpch", "public", "lineitem")
        .await
        .unwrap();
    let fresh = warm_tpch(&engine).await;
    println!(
        "warm TPC-H geomean after 10 appends: {} files {deltas:.3} s ({:.2}x the fresh copy); \
         compacted in {compact_seconds:.1} s ({} files) {after:.3} s ({:.2}x); fresh copy {fresh:.3} s",
        deltas.files,
        deltas.mean / fresh.mean,
        compacted.map_or(0, |e| e.files().count()),
        after.mean / fresh.mean,
    );
    engine.shutdown().await;
    drop(source);
    admin
        .execute(AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {database} WITH (FORCE)"
        )))
        .await
        .unwrap();
}

struct Warm {
    mean: f64,
    files: usize,
}

impl std::fmt::Display for Warm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.mean, f)
    }
}

/// Geometric mean of the 22 queries' best of three runs, every table decoded in memory first.
async fn warm_tpch(engine: &quarry::Engine) -> Warm {
    for (table, _) in tpch::TABLES {
        engine
            .load_into_memory("tpch", "public", table)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{table} does not fit the memory tier"));
    }
    let files = engine
        .cache_entries(&engine.connection("tpch").await.unwrap())
        .await
        .unwrap()
        .into_iter()
        .find(|e| e.is_current && e.table.table == "lineitem")
        .map_or(0, |e| e.files().count());
    tpch::run(engine, "SET datafusion.catalog.default_catalog = 'tpch'").await;
    let mut logs = 0.0;
    for sql in tpch_queries::QUERIES {
        let mut best = f64::MAX;
        for _ in 0..3 {
            let start = Instant::now();
            tpch::run(engine, sql).await;
            best = best.min(start.elapsed().as_secs_f64());
        }
        logs += best.ln();
    }
    Warm {
        mean: (logs / tpch_queries::QUERIES.len() as f64).exp(),
        files,
    }
}
