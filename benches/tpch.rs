//! The 22 TPC-H queries through Quarry (warm: every table cached first and decoded into the
//! memory tier, as a first read of each does in the background), through a second engine
//! on the same cache with the memory tier off (Parquet files only), and directly on
//! PostgreSQL, in the same run; per-query times, row counts and geometric means over the
//! queries PostgreSQL finishes within the timeout. Also the planning overhead of a
//! statement on a cached 10-row table, against the same plan over a DataFusion MemTable.
//! Run: `cargo bench --bench tpch -- --scale 1` (`--timeout 60` seconds per query,
//! `--set datafusion.some.option=value` to try a setting).

#[path = "common/tpch.rs"]
mod tpch;
#[path = "common/tpch_queries.rs"]
mod tpch_queries;

use std::time::{Duration, Instant};

use datafusion::arrow::array::RecordBatchReader;
use sqlx::{Connection, Executor, PgConnection};

const PG_ADMIN: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// TPC-H through Quarry: every table cached, then the 22 queries on the memory tier and on
/// the cache files, against PostgreSQL itself.
#[derive(clap::Parser)]
struct Args {
    /// TPC-H scale factor.
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
    /// Seconds a query may take on PostgreSQL before it is given up.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
    /// A DataFusion setting `key=value` to try without a rebuild (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    settings: Vec<String>,
    /// Prints query N's EXPLAIN ANALYZE on memory and on files, then stops.
    #[arg(long, value_name = "N")]
    explain: Option<usize>,
    /// Also runs the queries on decoded Arrow in memory (the ceiling of a memory tier).
    #[arg(long)]
    layouts: bool,
    /// Passed by `cargo bench`.
    #[arg(long, hide = true)]
    bench: bool,
}

#[tokio::main]
async fn main() {
    let args = <Args as clap::Parser>::parse();
    let (scale, timeout) = (args.scale, args.timeout);
    let url = tpch::ensure_postgres(PG_ADMIN, scale).await;
    let dir = tempfile::tempdir().unwrap();
    let engine = tpch::quarry_engine(dir.path(), scale).await;
    let warm = Instant::now();
    for (table, _) in tpch::TABLES {
        engine.cached_table("tpch", "public", table).await.unwrap();
    }
    println!(
        "TPC-H scale {scale}: cached all 8 tables in {:.1} s",
        warm.elapsed().as_secs_f64()
    );
    let load = Instant::now();
    let mut decoded = 0;
    for (table, _) in tpch::TABLES {
        decoded += engine
            .load_into_memory("tpch", "public", table)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{table} does not fit the memory tier"));
    }
    println!(
        "decoded them into the memory tier in {:.1} s: {:.0} MB (budget {:.0} MB)",
        load.elapsed().as_secs_f64(),
        decoded as f64 / 1e6,
        engine.config().memory_cache as f64 / 1e6
    );
    let files = quarry::Engine::builder()
        .data_dir(dir.path())
        .memory_cache(0)
        .build()
        .await
        .unwrap();
    for engine in [&engine, &files] {
        tpch::run(engine, "SET datafusion.catalog.default_catalog = 'tpch'").await;
        for (key, value) in args.settings.iter().filter_map(|kv| kv.split_once('=')) {
            tpch::run(engine, &format!("SET {key} = {value}")).await;
        }
    }

    if let Some(n) = args.explain {
        let sql = tpch_queries::QUERIES[n - 1];
        for (label, engine) in [("memory", &engine), ("files", &files)] {
            let batches = engine
                .sql(&format!("EXPLAIN ANALYZE {sql}"))
                .await
                .unwrap()
                .collect()
                .await
                .unwrap();
            println!(
                "--- {label}\n{}",
                datafusion::arrow::util::pretty::pretty_format_batches(&batches).unwrap()
            );
        }
        return;
    }
    let mut pg = PgConnection::connect(&url).await.unwrap();
    pg.execute(sqlx::AssertSqlSafe(format!(
        "SET statement_timeout = '{timeout}s'"
    )))
    .await
    .unwrap();

    println!(
        "{:>5} {:>11} {:>9} {:>9} {:>9} {:>9} {:>7} {:>7}",
        "query", "postgres s", "quarry s", "speed-up", "files s", "speed-up", "rows", "rows"
    );
    let (mut pg_times, mut quarry_times, mut file_times) = (Vec::new(), Vec::new(), Vec::new());
    for (i, sql) in tpch_queries::QUERIES.iter().enumerate() {
        let start = Instant::now();
        let pg_result = sqlx::raw_sql(sqlx::AssertSqlSafe(*sql))
            .fetch_all(&mut pg)
            .await;
        let pg_time = start.elapsed();
        let start = Instant::now();
        let quarry_rows = tpch::run(&engine, sql).await;
        let quarry_time = start.elapsed().as_secs_f64();
        let start = Instant::now();
        let file_rows = tpch::run(&files, sql).await;
        let file_time = start.elapsed().as_secs_f64();
        assert_eq!(
            quarry_rows,
            file_rows,
            "Q{}: memory and files disagree",
            i + 1
        );
        match pg_result {
            Ok(rows) => {
                let pg_time = pg_time.as_secs_f64();
                pg_times.push(pg_time);
                quarry_times.push(quarry_time);
                file_times.push(file_time);
                println!(
                    "{:>5} {pg_time:>11.3} {quarry_time:>9.3} {:>8.1}x {file_time:>9.3} {:>8.1}x {:>7} {quarry_rows:>7}",
                    i + 1,
                    pg_time / quarry_time,
                    pg_time / file_time,
                    rows.len(),
                );
            }
            Err(e) => println!(
                "{:>5} {:>11} {quarry_time:>9.3} {:>9} {file_time:>9.3} {:>9} ({})",
                i + 1,
                format!(">{timeout}"),
                "",
                "",
                e.to_string().lines().next().unwrap_or_default()
            ),
        }
    }
    let (pg_mean, quarry_mean, file_mean) = (
        tpch::geomean(&pg_times),
        tpch::geomean(&quarry_times),
        tpch::geomean(&file_times),
    );
    println!(
        "geometric mean over {} queries PostgreSQL finished: postgres {pg_mean:.3} s, quarry {quarry_mean:.3} s ({:.1}x faster), quarry on files only {file_mean:.3} s ({:.1}x faster)",
        pg_times.len(),
        pg_mean / quarry_mean,
        pg_mean / file_mean
    );

    // Planning overhead on a cached 10-row table (from a SQLite source), against the same
    // plan over a DataFusion MemTable.
    let small = dir.path().join("small.db");
    let mut sqlite = sqlx::SqliteConnection::connect_with(
        &sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&small)
            .create_if_missing(true),
    )
    .await
    .unwrap();
    sqlite
        .execute("CREATE TABLE ten (id INTEGER NOT NULL, name TEXT); WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 10) INSERT INTO ten SELECT i, 'row ' || i FROM n")
        .await
        .unwrap();
    engine
        .register_connection("small", "sqlite", serde_json::json!({ "path": small }))
        .await
        .unwrap();
    engine.discover_connection("small").await.unwrap();
    engine
        .load_into_memory("small", "main", "ten")
        .await
        .unwrap();
    let plan = |sql: &'static str| {
        let engine = engine.clone();
        async move {
            let mut times = Vec::new();
            for _ in 0..300 {
                let start = Instant::now();
                let frame = engine.sql(sql).await.unwrap();
                let _ = frame.create_physical_plan().await.unwrap();
                times.push(start.elapsed());
            }
            times.sort();
            times[times.len() / 2]
        }
    };
    tpch::run(
        &engine,
        "CREATE TABLE datafusion.public.ten_mem AS SELECT * FROM small.main.ten",
    )
    .await;
    let quarry_plan: Duration = plan("SELECT name FROM small.main.ten WHERE id > 1").await;
    let memory_plan: Duration =
        plan("SELECT name FROM datafusion.public.ten_mem WHERE id > 1").await;
    println!(
        "planning a statement on a cached 10-row table: median {:.3} ms (MemTable baseline {:.3} ms, overhead {:.3} ms)",
        quarry_plan.as_secs_f64() * 1e3,
        memory_plan.as_secs_f64() * 1e3,
        (quarry_plan.as_secs_f64() - memory_plan.as_secs_f64()) * 1e3
    );

    if args.layouts {
        compare_layouts(&engine, dir.path()).await;
    }
}

/// Cache-file layouts tried against the one Quarry writes: each rewrites the eight cached
/// files and runs the 22 queries on them in a plain DataFusion session (so Quarry's own
/// table provider is out of the picture), reporting the geometric mean against Quarry's
/// files read the same way.
async fn compare_layouts(engine: &quarry::Engine, scratch: &std::path::Path) {
    use datafusion::parquet::basic::{Compression, ZstdLevel};
    use datafusion::parquet::file::properties::{EnabledStatistics, WriterProperties};
    let variant = |compression: Compression, rows: usize| {
        WriterProperties::builder()
            .set_compression(compression)
            .set_statistics_enabled(EnabledStatistics::Page)
            .set_max_row_group_row_count(Some(rows))
            .build()
    };
    let zstd1 = Compression::ZSTD(ZstdLevel::try_new(1).unwrap());
    let layouts: Vec<(&str, Option<WriterProperties>)> = vec![
        ("as cached", None),
        (
            "uncompressed",
            Some(variant(Compression::UNCOMPRESSED, 1 << 20)),
        ),
        ("lz4_raw", Some(variant(Compression::LZ4_RAW, 1 << 20))),
        ("snappy", Some(variant(Compression::SNAPPY, 1 << 20))),
        ("zstd1 128k-row groups", Some(variant(zstd1, 1 << 17))),
    ];
    let mut baseline = None;
    for (name, properties) in layouts {
        let ctx = datafusion::prelude::SessionContext::new();
        let mut bytes = 0;
        for (table, _) in tpch::TABLES {
            let entry = engine.cached_table("tpch", "public", table).await.unwrap();
            let cached = engine.config().data_dir.join(&entry.path);
            let path = match &properties {
                None => cached,
                Some(properties) => {
                    let path = scratch.join(format!("{table}.layout.parquet"));
                    rewrite(&cached, &path, properties.clone());
                    path
                }
            };
            bytes += std::fs::metadata(&path).unwrap().len();
            ctx.register_parquet(
                *table,
                path.to_str().unwrap(),
                datafusion::prelude::ParquetReadOptions::default(),
            )
            .await
            .unwrap();
        }
        let mean = time_queries(&ctx).await;
        let base = *baseline.get_or_insert(mean);
        println!(
            "layout {name:>22}: {:>6.0} MB, geometric mean {mean:.3} s, {:.2}x the cached layout's speed",
            bytes as f64 / 1e6,
            base / mean
        );
    }
    // The ceiling for a cache that keeps hot tables decoded: Arrow batches in memory.
    let ctx = datafusion::prelude::SessionContext::new();
    let partitions = ctx.state().config().target_partitions();
    let mut bytes = 0;
    for (table, _) in tpch::TABLES {
        let entry = engine.cached_table("tpch", "public", table).await.unwrap();
        let cached = engine.config().data_dir.join(&entry.path);
        let batches = ctx
            .read_parquet(
                cached.to_str().unwrap(),
                datafusion::prelude::ParquetReadOptions::default(),
            )
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let schema = batches[0].schema();
        let mut split = vec![Vec::new(); partitions];
        for (i, batch) in batches.into_iter().enumerate() {
            bytes += batch.get_array_memory_size();
            split[i % partitions].push(batch);
        }
        let memory = datafusion::datasource::MemTable::try_new(schema, split).unwrap();
        ctx.register_table(*table, std::sync::Arc::new(memory))
            .unwrap();
    }
    let mean = time_queries(&ctx).await;
    println!(
        "layout {:>22}: {:>6.0} MB, geometric mean {mean:.3} s, {:.2}x the cached layout's speed",
        "decoded in memory",
        bytes as f64 / 1e6,
        baseline.unwrap_or(mean) / mean
    );
}

/// Runs the 22 queries once on `ctx` and returns the geometric mean of their times.
async fn time_queries(ctx: &datafusion::prelude::SessionContext) -> f64 {
    let mut times = Vec::new();
    for sql in tpch_queries::QUERIES {
        let start = Instant::now();
        ctx.sql(sql).await.unwrap().collect().await.unwrap();
        times.push(start.elapsed().as_secs_f64());
    }
    tpch::geomean(&times)
}

/// Copies one Parquet file with other writer settings.
fn rewrite(
    from: &std::path::Path,
    to: &std::path::Path,
    properties: datafusion::parquet::file::properties::WriterProperties,
) {
    use datafusion::parquet::arrow::ArrowWriter;
    use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(from).unwrap())
        .unwrap()
        .build()
        .unwrap();
    let mut writer = ArrowWriter::try_new(
        std::fs::File::create(to).unwrap(),
        reader.schema(),
        Some(properties),
    )
    .unwrap();
    for batch in reader {
        writer.write(&batch.unwrap()).unwrap();
    }
    writer.close().unwrap();
}
