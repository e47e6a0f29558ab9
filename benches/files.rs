//! Files against DuckDB, in the same run: TPC-H as Parquet files in a local folder, the 22
//! queries read in place through a `files` connection and through DuckDB's `read_parquet`
//! (best of 3 each, both warm); then lineitem as one CSV file: Quarry's first query (parse
//! into the cache, in a child process for its peak RSS) against DuckDB's `read_csv`, and
//! queries 1 and 6 on the cached copy against the Parquet file in place; last, the same
//! CSV fetch with the cache on a local S3 server (moto) against the cache on local disk.
//! Run: `cargo bench --bench files -- --scale 1` (needs `pip install duckdb "moto[server]"`);
//! `--s3-cache-only` runs just the last part.

#[path = "common/child.rs"]
mod child;
#[path = "common/tpch.rs"]
mod tpch;
#[path = "common/tpch_queries.rs"]
mod tpch_queries;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

#[derive(clap::Parser)]
struct Args {
    /// TPC-H scale factor.
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
    /// Passed by `cargo bench`.
    #[arg(long, hide = true)]
    bench: bool,
    /// Child mode: fetch the CSV folder in this dir into a new engine's cache.
    #[arg(long, hide = true)]
    child_csv: Option<PathBuf>,
    /// Only the fetch with the cache on S3 against local disk.
    #[arg(long)]
    s3_cache_only: bool,
}

fn main() {
    let args = <Args as clap::Parser>::parse();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    if let Some(dir) = &args.child_csv {
        runtime.block_on(child_csv(dir));
        return;
    }
    if args.s3_cache_only {
        runtime.block_on(async {
            let dir = data(args.scale);
            s3_cache(&dir, &csv_folder(&dir)).await;
        });
        return;
    }
    runtime.block_on(bench(args.scale));
}

/// The bench's data folder, generated when missing.
fn data(scale: f64) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "quarry-files-bench-sf{}",
        scale.to_string().replace('.', "_")
    ));
    let started = Instant::now();
    generate(&dir, scale);
    println!(
        "data ready in {:.1} s at {}",
        started.elapsed().as_secs_f64(),
        dir.display()
    );
    dir
}

/// A folder holding only lineitem's CSV file.
fn csv_folder(dir: &Path) -> PathBuf {
    let csv_dir = dir.join("csv-lineitem");
    if !csv_dir.exists() {
        std::fs::create_dir_all(&csv_dir).unwrap();
        std::fs::hard_link(dir.join("csv/lineitem.csv"), csv_dir.join("lineitem.csv")).unwrap();
    }
    csv_dir
}

/// Writes each TPC-H table as `csv/<table>.csv` (with a header) and, through DuckDB,
/// `parquet/<table>.parquet`; reused when already there.
fn generate(dir: &Path, scale: f64) {
    let csv = dir.join("csv");
    let parquet = dir.join("parquet");
    if parquet.join("done").exists() {
        return;
    }
    std::fs::create_dir_all(&csv).unwrap();
    std::fs::create_dir_all(&parquet).unwrap();
    let mut script = String::from("import duckdb\nc = duckdb.connect()\n");
    for (table, ddl) in tpch::TABLES {
        let columns: Vec<(&str, &str)> = ddl
            .split(", ")
            .map(|c| {
                let c = c.trim().trim_end_matches(" NOT NULL");
                c.split_once(' ').unwrap()
            })
            .collect();
        let path = csv.join(format!("{table}.csv"));
        let mut file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
        let names: Vec<&str> = columns.iter().map(|c| c.0).collect();
        writeln!(file, "{}", names.join(",")).unwrap();
        tpch::for_each_csv_line(table, scale, |line| {
            writeln!(file, "{line}").unwrap();
        });
        file.flush().unwrap();
        let types: Vec<String> = columns
            .iter()
            .map(|(n, t)| {
                let t = if t.starts_with("char(") {
                    format!("var{t}")
                } else {
                    t.to_string()
                };
                format!("'{n}': '{t}'")
            })
            .collect();
        script.push_str(&format!(
            "c.sql(\"COPY (SELECT * FROM read_csv('{}', header=true, columns={{{}}})) TO '{}' (FORMAT parquet)\")\n",
            path.display(),
            types.join(", "),
            parquet.join(format!("{table}.parquet")).display()
        ));
    }
    python(&script);
    std::fs::write(parquet.join("done"), "").unwrap();
}

fn python(script: &str) -> String {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python3 failed (pip install duckdb): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn engine(data_dir: &Path, name: &str, url: &Path) -> quarry::Engine {
    engine_from(quarry::Engine::builder().data_dir(data_dir), name, url).await
}

/// The engine `builder` makes, with a files connection `name` to `url`.
async fn engine_from(builder: quarry::EngineBuilder, name: &str, url: &Path) -> quarry::Engine {
    let engine = builder.build().await.unwrap();
    engine
        .create_connection(
            name,
            "files",
            serde_json::json!({"url": url.display().to_string()}),
        )
        .await
        .unwrap()
        .discovery
        .unwrap();
    engine
}

/// Best of three runs of `sql` in `session`, in seconds.
async fn best_of_3(session: &quarry::Session, sql: &str) -> f64 {
    let mut best = f64::MAX;
    for _ in 0..3 {
        let start = Instant::now();
        session
            .sql(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .collect()
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        best = best.min(start.elapsed().as_secs_f64());
    }
    best
}

/// DuckDB's best of three for each of `queries`, over views named as the tables.
fn duckdb_times(views: &str, queries: &[&str]) -> Vec<f64> {
    let mut script = format!(
        "import duckdb, time\nc = duckdb.connect()\nc.execute(\"SET enable_progress_bar = false\")\n{views}\nqueries = {}\n",
        serde_json::to_string(queries).unwrap()
    );
    script.push_str(
        "for q in queries:\n    best = 1e9\n    for _ in range(3):\n        s = time.perf_counter()\n        c.execute(q).fetchall()\n        best = min(best, time.perf_counter() - s)\n    print(best)\n",
    );
    python(&script)
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect()
}

async fn child_csv(dir: &Path) {
    let engine = engine(&dir.join("quarry-csv"), "lake", &dir.join("csv")).await;
    let seconds = first_query(&engine).await;
    println!("RESULT {seconds} {}", child::peak_rss_kb());
}

/// Seconds the first query of lineitem takes: the parse of its CSV into the cache.
async fn first_query(engine: &quarry::Engine) -> f64 {
    let start = Instant::now();
    engine
        .sql("SELECT count(*) FROM lake.main.lineitem")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    start.elapsed().as_secs_f64()
}

async fn bench(scale: f64) {
    let dir = data(scale);

    // 1. The 22 queries on Parquet files in place.
    let parquet = dir.join("parquet");
    let _ = std::fs::remove_dir_all(dir.join("quarry-parquet"));
    let engine = engine(&dir.join("quarry-parquet"), "lake", &parquet).await;
    let session = engine.new_session();
    session
        .sql("USE lake.main")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let mut quarry_times = Vec::new();
    for sql in tpch_queries::QUERIES {
        quarry_times.push(best_of_3(&session, sql).await);
    }
    let views: String = tpch::TABLES
        .iter()
        .map(|(t, _)| {
            format!(
                "c.sql(\"CREATE VIEW {t} AS SELECT * FROM read_parquet('{}')\")\n",
                parquet.join(format!("{t}.parquet")).display()
            )
        })
        .collect();
    let duck_times = duckdb_times(&views, &tpch_queries::QUERIES);
    println!("query  quarry_s  duckdb_s  ratio");
    for (i, (q, d)) in quarry_times.iter().zip(&duck_times).enumerate() {
        println!("q{:02}    {q:8.3}  {d:8.3}  {:5.2}", i + 1, q / d);
    }
    println!(
        "TPC-H SF{scale} Parquet in place: geomean quarry/duckdb = {:.2}x",
        tpch::geomean(&quarry_times) / tpch::geomean(&duck_times)
    );

    // 2. lineitem as one CSV file: the first query parses it into the cache.
    let csv_dir = csv_folder(&dir);
    let size = std::fs::metadata(csv_dir.join("lineitem.csv"))
        .unwrap()
        .len();
    let child_dir = dir.join("child");
    let _ = std::fs::remove_dir_all(&child_dir);
    std::fs::create_dir_all(&child_dir).unwrap();
    std::os::unix::fs::symlink(&csv_dir, child_dir.join("csv")).unwrap();
    let result = child::run(&["--child-csv".as_ref(), child_dir.as_os_str()]);
    let (quarry_csv, peak_kb): (f64, u64) =
        (result[0].parse().unwrap(), result[1].parse().unwrap());
    // DuckDB's count(*) parses only what it counts; writing every column to Parquet is the
    // work Quarry's first query does.
    let csv_path = csv_dir.join("lineitem.csv");
    let duck = duckdb_times(
        "",
        &[
            &format!("SELECT count(*) FROM read_csv('{}')", csv_path.display()),
            &format!(
                "COPY (SELECT * FROM read_csv('{}')) TO '{}' (FORMAT parquet)",
                csv_path.display(),
                dir.join("duckdb-copy.parquet").display()
            ),
        ],
    );
    println!(
        "lineitem CSV ({} MB) first query: quarry {quarry_csv:.2} s (peak RSS {} MB); duckdb \
         read_csv count(*) {:.2} s: {:.2}x; duckdb read_csv to Parquet {:.2} s: {:.2}x",
        size >> 20,
        peak_kb >> 10,
        duck[0],
        quarry_csv / duck[0],
        duck[1],
        quarry_csv / duck[1]
    );

    // 3. Warm queries on the cached CSV copy against the Parquet file in place.
    let cached = engine_reuse(&child_dir.join("quarry-csv")).await;
    let session_cached = cached.new_session();
    session_cached
        .sql("USE lake.main")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let mut ratios = Vec::new();
    for q in [0, 5] {
        let sql = tpch_queries::QUERIES[q];
        let on_copy = best_of_3(&session_cached, sql).await;
        let in_place = best_of_3(&session, sql).await;
        println!(
            "q{:02} on the CSV's cached copy {on_copy:.3} s, on Parquet in place {in_place:.3} s",
            q + 1
        );
        ratios.push(on_copy / in_place);
    }
    println!(
        "warm queries on the CSV's copy / on Parquet in place: geomean {:.2}x",
        tpch::geomean(&ratios)
    );

    // 4. The same fetch with the cache on S3.
    s3_cache(&dir, &csv_dir).await;
}

/// The fetch of lineitem's CSV into the cache, with the cache on local disk (before and
/// after, the faster counts) and on a local S3 server started here (moto).
async fn s3_cache(dir: &Path, csv_dir: &Path) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut server = Command::new("python3")
        .args([
            "-m",
            "moto.server",
            "-H",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("python3 -m moto.server (pip install \"moto[server]\")");
    let endpoint = format!("http://127.0.0.1:{port}");
    let mut up = false;
    for _ in 0..300 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(up, "moto did not start");
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stream,
        "PUT /bench HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    std::io::Read::read_to_string(&mut stream, &mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");

    let fetch = |cache_url: Option<String>, data_dir: PathBuf| {
        let endpoint = endpoint.clone();
        async move {
            let _ = std::fs::remove_dir_all(&data_dir);
            let mut builder = quarry::Engine::builder().data_dir(&data_dir);
            if let Some(url) = cache_url {
                builder = builder
                    .cache_url(url)
                    .cache_option("endpoint", endpoint)
                    .cache_option("allow_http", "true")
                    .cache_option("region", "us-east-1")
                    .cache_option("access_key_id", "bench")
                    .cache_option("secret_access_key", "bench");
            }
            first_query(&engine_from(builder, "lake", csv_dir).await).await
        }
    };
    let local_before = fetch(None, dir.join("quarry-local-cache")).await;
    let on_s3 = fetch(
        Some("s3://bench/quarry-cache".into()),
        dir.join("quarry-s3-cache"),
    )
    .await;
    let local_after = fetch(None, dir.join("quarry-local-cache")).await;
    let local = local_before.min(local_after);
    let _ = server.kill();
    let _ = server.wait();
    println!(
        "lineitem CSV fetch into the cache: on the local S3 server (moto) {on_s3:.2} s, on \
         local disk {local:.2} s (runs {local_before:.2} and {local_after:.2}): {:.2}x",
        on_s3 / local
    );
}

/// The engine a child left in `data_dir`, its connection and copy as they were.
async fn engine_reuse(data_dir: &Path) -> quarry::Engine {
    quarry::Engine::builder()
        .data_dir(data_dir)
        .build()
        .await
        .unwrap()
}
