//! Warm TPC-H against DuckDB, in one run: the 22 queries on Quarry's memory tier (every
//! table cached from PostgreSQL and decoded), on DuckDB over the same cache files
//! (`read_parquet` views) and on DuckDB's own in-memory tables (`CREATE TABLE … AS FROM
//! read_parquet`), all with 2 threads. The runs are interleaved per query (Quarry, DuckDB
//! on Parquet, DuckDB in memory, three times) and the best of each is kept. Every answer is
//! checked against the others, values and all: exact for decimals of one scale, within
//! 1e-9 relative (or 1e-5 absolute) where one side computed a float. Prints each query's
//! ratio, the geometric means, and the memory tier's size against the Parquet files'.
//! Run: `cargo bench --bench warm -- --scale 1` (needs `pip install duckdb`); `--queries
//! 1,6,17` runs some, `--files` adds Quarry with the memory tier off, `--explain N` prints
//! query N's EXPLAIN ANALYZE on the memory tier, `--set key=value` tries a DataFusion setting.

#[path = "common/child.rs"]
mod child;
#[path = "common/tpch.rs"]
mod tpch;
#[path = "common/tpch_queries.rs"]
mod tpch_queries;

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Instant;

use datafusion::arrow::array::{Array, RecordBatch};
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::util::display::array_value_to_string;
use serde_json::Value;

const PG_ADMIN: &str = "postgres://postgres@127.0.0.1:5432/postgres";
const THREADS: usize = 2;

#[derive(clap::Parser)]
struct Args {
    /// TPC-H scale factor.
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
    /// Runs of each query on each side; the best is kept.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Only these queries (comma-separated numbers).
    #[arg(long, value_delimiter = ',')]
    queries: Vec<usize>,
    /// Also Quarry with the memory tier off (cache files only).
    #[arg(long)]
    files: bool,
    /// Prints query N's EXPLAIN ANALYZE on the memory tier, then stops.
    #[arg(long, value_name = "N")]
    explain: Option<usize>,
    /// A DataFusion setting `key=value` to try without a rebuild (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    settings: Vec<String>,
    /// Passed by `cargo bench`.
    #[arg(long, hide = true)]
    bench: bool,
}

/// DuckDB in a Python child: one connection with views over the Parquet files, one with
/// the same tables copied into memory. Each request is a JSON line; the answer is the
/// seconds the statement took (execution materialises the result) and its rows.
const DUCKDB: &str = r#"
import datetime, decimal, json, sys, time
import duckdb
files, threads = json.loads(sys.argv[1]), int(sys.argv[2])
parquet, memory = duckdb.connect(), duckdb.connect()
for c in (parquet, memory):
    c.execute(f"SET threads = {threads}")
    c.execute("SET enable_progress_bar = false")
for table, path in files.items():
    parquet.execute(f"CREATE VIEW {table} AS FROM read_parquet('{path}')")
    memory.execute(f"CREATE TABLE {table} AS FROM read_parquet('{path}')")
def cell(v):
    if isinstance(v, decimal.Decimal):
        return {"decimal": format(v, "f")}
    if isinstance(v, (datetime.date, datetime.datetime)):
        return v.isoformat()
    return v
print("ready", flush=True)
for line in sys.stdin:
    request = json.loads(line)
    c = memory if request["db"] == "memory" else parquet
    start = time.perf_counter()
    result = c.execute(request["sql"])
    seconds = time.perf_counter() - start
    rows = [[cell(v) for v in row] for row in result.fetchall()]
    print(json.dumps({"seconds": seconds, "rows": rows}), flush=True)
"#;

struct DuckDb {
    child: Child,
    input: ChildStdin,
    output: BufReader<ChildStdout>,
}

impl DuckDb {
    fn start(files: &serde_json::Map<String, Value>) -> Self {
        let mut child = Command::new("python3")
            .args(["-c", DUCKDB, &Value::Object(files.clone()).to_string()])
            .arg(THREADS.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs");
        let input = child.stdin.take().unwrap();
        let mut output = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        output.read_line(&mut line).unwrap();
        assert_eq!(
            line.trim(),
            "ready",
            "DuckDB did not start (pip install duckdb)"
        );
        DuckDb {
            child,
            input,
            output,
        }
    }

    /// Runs `sql` on the `db` connection ("parquet" or "memory").
    fn run(&mut self, db: &str, sql: &str) -> (f64, Vec<Vec<Value>>) {
        writeln!(self.input, "{}", serde_json::json!({"db": db, "sql": sql})).unwrap();
        let mut line = String::new();
        self.output.read_line(&mut line).unwrap();
        let mut answer: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("DuckDB failed on {sql}: {e} ({line:?})"));
        let rows = serde_json::from_value(answer["rows"].take()).unwrap();
        (answer["seconds"].as_f64().unwrap(), rows)
    }
}

impl Drop for DuckDb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Quarry's answer in the JSON form DuckDB's answers take.
fn rows_of(batches: &[RecordBatch]) -> Vec<Vec<Value>> {
    let mut rows = Vec::new();
    for batch in batches {
        for row in 0..batch.num_rows() {
            rows.push(
                batch
                    .columns()
                    .iter()
                    .map(|column| cell(column.as_ref(), row))
                    .collect(),
            );
        }
    }
    rows
}

fn cell(column: &dyn Array, row: usize) -> Value {
    if column.is_null(row) {
        return Value::Null;
    }
    let text = array_value_to_string(column, row).unwrap();
    match column.data_type() {
        DataType::Decimal32(..)
        | DataType::Decimal64(..)
        | DataType::Decimal128(..)
        | DataType::Decimal256(..) => serde_json::json!({ "decimal": text }),
        t if t.is_integer() || t.is_floating() => text.parse::<serde_json::Number>().map_or_else(
            |_| Value::from(text.parse::<f64>().unwrap_or(f64::NAN)),
            Value::Number,
        ),
        _ => Value::String(text),
    }
}

/// Whether two cells hold the same value: decimals of one scale exactly, numbers computed
/// differently (a float on one side, or decimals of two scales) within 1e-9 relative or
/// 1e-5 absolute.
fn same(a: &Value, b: &Value) -> bool {
    let number = |v: &Value| match v {
        Value::Number(n) => n.as_f64(),
        Value::Object(o) => o.get("decimal")?.as_str()?.parse().ok(),
        _ => None,
    };
    let scale = |v: &Value| {
        let text = v.get("decimal")?.as_str()?;
        Some(text.split_once('.').map_or(0, |(_, f)| f.len()))
    };
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_i64() && y.is_i64() => x == y,
        _ if scale(a).is_some() && scale(a) == scale(b) => a == b,
        _ => match (number(a), number(b)) {
            (Some(x), Some(y)) => {
                (x - y).abs() <= 1e-5 || (x - y).abs() <= 1e-9 * x.abs().max(y.abs())
            }
            _ => a == b,
        },
    }
}

/// Panics unless the two answers hold the same rows in the same order.
fn check(query: usize, what: &str, expected: &[Vec<Value>], actual: &[Vec<Value>]) {
    assert_eq!(
        expected.len(),
        actual.len(),
        "Q{query}: {what} returned {} rows, Quarry {}",
        actual.len(),
        expected.len()
    );
    for (i, (e, a)) in expected.iter().zip(actual).enumerate() {
        let equal = e.len() == a.len() && e.iter().zip(a).all(|(x, y)| same(x, y));
        assert!(
            equal,
            "Q{query}: row {i} differs: Quarry {e:?}, {what} {a:?}"
        );
    }
}

async fn quarry(engine: &quarry::Engine, sql: &str) -> (f64, Vec<RecordBatch>) {
    let start = Instant::now();
    let batches = tpch::collect(engine, sql).await;
    (start.elapsed().as_secs_f64(), batches)
}

#[tokio::main(worker_threads = 2)]
async fn main() {
    let args = <Args as clap::Parser>::parse();
    tpch::ensure_postgres(PG_ADMIN, args.scale).await;
    let dir = tempfile::tempdir().unwrap();
    let engine = tpch::quarry_engine(dir.path(), args.scale).await;
    let mut files = serde_json::Map::new();
    let (mut parquet_bytes, mut tier_bytes, mut rows) = (0, 0, 0);
    let load = Instant::now();
    for (table, _) in tpch::TABLES {
        let entry = engine.cached_table("tpch", "public", table).await.unwrap();
        let path: PathBuf = engine.config().data_dir.join(&entry.path);
        parquet_bytes += std::fs::metadata(&path).unwrap().len();
        rows += entry.row_count;
        files.insert(table.to_string(), Value::from(path.display().to_string()));
        tier_bytes += engine
            .load_into_memory("tpch", "public", table)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{table} does not fit the memory tier"));
    }
    println!(
        "TPC-H scale {}: cached and decoded in {:.1} s; memory tier {:.0} MB for {rows} rows \
         ({:.1} bytes per row), Parquet files {:.0} MB ({:.2}x)",
        args.scale,
        load.elapsed().as_secs_f64(),
        tier_bytes as f64 / 1e6,
        tier_bytes as f64 / rows as f64,
        parquet_bytes as f64 / 1e6,
        tier_bytes as f64 / parquet_bytes as f64
    );
    let files_only = match args.files {
        true => Some(
            quarry::Engine::builder()
                .data_dir(dir.path())
                .memory_cache(0)
                .build()
                .await
                .unwrap(),
        ),
        false => None,
    };
    for engine in std::iter::once(&engine).chain(&files_only) {
        tpch::run(engine, "SET datafusion.catalog.default_catalog = 'tpch'").await;
        for (key, value) in args.settings.iter().filter_map(|kv| kv.split_once('=')) {
            tpch::run(engine, &format!("SET {key} = {value}")).await;
        }
    }
    if let Some(n) = args.explain {
        let sql = format!("EXPLAIN ANALYZE {}", tpch_queries::QUERIES[n - 1]);
        let (_, batches) = quarry(&engine, &sql).await;
        println!(
            "{}",
            datafusion::arrow::util::pretty::pretty_format_batches(&batches).unwrap()
        );
        return;
    }

    let mut duckdb = DuckDb::start(&files);
    let queries: Vec<usize> = match args.queries.is_empty() {
        true => (1..=22).collect(),
        false => args.queries.clone(),
    };
    println!(
        "query  quarry_s  duck_parquet_s  duck_memory_s  vs_parquet  vs_memory{}",
        if args.files { "  files_s" } else { "" }
    );
    let mut times: [Vec<f64>; 4] = Default::default();
    for &n in &queries {
        let sql = tpch_queries::QUERIES[n - 1];
        let mut best = [f64::MAX; 4];
        for _ in 0..args.runs {
            let (seconds, batches) = quarry(&engine, sql).await;
            best[0] = best[0].min(seconds);
            let ours = rows_of(&batches);
            for (side, db) in [(1, "parquet"), (2, "memory")] {
                let (seconds, theirs) = duckdb.run(db, sql);
                best[side] = best[side].min(seconds);
                check(n, &format!("DuckDB on {db}"), &ours, &theirs);
            }
            if let Some(files) = &files_only {
                let (seconds, batches) = quarry(files, sql).await;
                best[3] = best[3].min(seconds);
                check(n, "Quarry on files", &ours, &rows_of(&batches));
            }
        }
        println!(
            "q{n:02}    {:8.3}  {:14.3}  {:13.3}  {:9.2}x  {:8.2}x{}",
            best[0],
            best[1],
            best[2],
            best[0] / best[1],
            best[0] / best[2],
            match args.files {
                true => format!("  {:7.3}", best[3]),
                false => String::new(),
            }
        );
        for (all, best) in times.iter_mut().zip(best) {
            all.push(best);
        }
    }
    let [quarry_mean, parquet_mean, memory_mean, files_mean] = times.map(|t| tpch::geomean(&t));
    println!(
        "geometric mean over {} queries: quarry {quarry_mean:.3} s, DuckDB on Parquet \
         {parquet_mean:.3} s ({:.2}x), DuckDB in memory {memory_mean:.3} s ({:.2}x)",
        queries.len(),
        quarry_mean / parquet_mean,
        quarry_mean / memory_mean,
    );
    if args.files {
        println!(
            "quarry on files only (memory tier off): {files_mean:.3} s ({:.2}x DuckDB on Parquet)",
            files_mean / parquet_mean
        );
    }
    println!(
        "answers: all equal; peak RSS of this process {} MB",
        child::peak_rss_kb() >> 10
    );
}
