//! Flight SQL throughput and latency: TPC-H lineitem (cached) streamed to a Flight SQL
//! client from a `quarry serve` child process (rows/s and the server's peak RSS), against
//! draining the same statement in-process; and the median round trip of `SELECT 1` over
//! Flight SQL against the same statement in-process.
//! Run: `cargo bench --bench flight -- --scale 1`.

#[path = "common/tpch.rs"]
mod tpch;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use arrow_flight::sql::client::FlightSqlServiceClient;
use futures::{StreamExt, TryStreamExt};
use tonic::transport::Channel;

const PG_ADMIN: &str = "postgres://postgres@127.0.0.1:5432/postgres";
const PASSWORD: &str = "bench";
const LINEITEM: &str = "SELECT * FROM tpch.public.lineitem";

/// Peak resident set of process `pid`, in MB.
fn peak_rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

async fn client(addr: &str) -> FlightSqlServiceClient<Channel> {
    // Windows and frames large enough for bulk results, as gRPC clients built for data
    // (Go's, with its dynamic window) have; tonic's defaults (64 KiB window, 16 KiB frames)
    // throttle a local stream.
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .initial_stream_window_size(16 << 20)
        .initial_connection_window_size(32 << 20)
        .max_frame_size(4 << 20)
        .connect()
        .await
        .unwrap();
    let mut client = FlightSqlServiceClient::new(channel);
    client.handshake("quarry", PASSWORD).await.unwrap();
    client
}

/// Runs `sql` over Flight SQL; returns the rows received.
async fn flight_rows(client: &mut FlightSqlServiceClient<Channel>, sql: &str) -> usize {
    let info = client.execute(sql.into(), None).await.unwrap();
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let mut stream = client.do_get(ticket).await.unwrap();
    let mut rows = 0;
    while let Some(batch) = stream.try_next().await.unwrap() {
        rows += batch.num_rows();
    }
    rows
}

/// Runs `sql` in-process, draining the stream without keeping it.
async fn local_rows(engine: &quarry::Engine, sql: &str) -> usize {
    let mut stream = engine
        .sql(sql)
        .await
        .unwrap()
        .execute_stream()
        .await
        .unwrap();
    let mut rows = 0;
    while let Some(batch) = stream.next().await {
        rows += batch.unwrap().num_rows();
    }
    rows
}

/// Flight SQL from a `quarry serve` child against the same statements in-process.
#[derive(clap::Parser)]
struct Args {
    /// TPC-H scale factor.
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
    /// Passed by `cargo bench`.
    #[arg(long, hide = true)]
    bench: bool,
}

#[tokio::main]
async fn main() {
    let scale = <Args as clap::Parser>::parse().scale;
    tpch::ensure_postgres(PG_ADMIN, scale).await;
    let dir = tempfile::tempdir().unwrap();
    let engine = tpch::quarry_engine(dir.path(), scale).await;
    engine
        .cached_table("tpch", "public", "lineitem")
        .await
        .unwrap();

    let mut server = Command::new(env!("CARGO_BIN_EXE_quarry"))
        .args(["serve", "--flight-addr", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env("QUARRY_SERVER_PASSWORD", PASSWORD)
        .env_remove("QUARRY_STORE_URL")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut banner = String::new();
    BufReader::new(server.stderr.take().unwrap())
        .read_line(&mut banner)
        .unwrap();
    let addr = banner
        .trim()
        .rsplit("grpc://")
        .next()
        .unwrap_or_default()
        .to_owned();
    let mut flight = client(&addr).await;

    println!(
        "Flight SQL, TPC-H scale {scale}, lineitem cached; server pid {}",
        server.id()
    );
    for round in 1..=3 {
        let start = Instant::now();
        let rows = flight_rows(&mut flight, LINEITEM).await;
        let over_flight = start.elapsed().as_secs_f64();
        let start = Instant::now();
        let local = local_rows(&engine, LINEITEM).await;
        let in_process = start.elapsed().as_secs_f64();
        assert_eq!(rows, local);
        println!(
            "round {round}: {rows} rows over Flight SQL in {over_flight:.2} s = {:.2}M rows/s; in-process {in_process:.2} s = {:.2}M rows/s; Flight/in-process time {:.2}",
            rows as f64 / over_flight / 1e6,
            rows as f64 / in_process / 1e6,
            over_flight / in_process
        );
    }
    println!(
        "server peak RSS (VmHWM) after streaming: {:.0} MB",
        peak_rss_mb(server.id())
    );

    let mut remote = Vec::new();
    let mut local = Vec::new();
    for _ in 0..300 {
        let start = Instant::now();
        flight_rows(&mut flight, "SELECT 1").await;
        remote.push(start.elapsed());
        let start = Instant::now();
        local_rows(&engine, "SELECT 1").await;
        local.push(start.elapsed());
    }
    let (remote, local) = (median(remote), median(local));
    println!(
        "SELECT 1: median round trip over Flight SQL {:.2} ms, in-process {:.2} ms (overhead {:.2} ms)",
        remote.as_secs_f64() * 1e3,
        local.as_secs_f64() * 1e3,
        (remote.as_secs_f64() - local.as_secs_f64()) * 1e3
    );
    let _ = server.kill();
    let _ = server.wait();
}
