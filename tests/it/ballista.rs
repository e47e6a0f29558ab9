//! Cached-table queries on a Ballista cluster in this process (Ballista's standalone
//! scheduler and two executors) reading the cache on the S3 server: the 22 TPC-H queries at
//! scale 0.1 give the answers local execution gives; a live table's statement runs here,
//! and one that mixes it with cached tables fails with an error saying so, or runs here
//! when fallback is asked for.

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::util::pretty::pretty_format_batches;
use quarry::Engine;

#[path = "../../benches/common/tpch.rs"]
mod tpch;
#[path = "../../benches/common/tpch_queries.rs"]
mod tpch_queries;

use crate::s3::Bucket;
use crate::support::{PgDatabase, pg_source_config};

const PREFIX: &str = "cluster-cache";

/// An engine on `dir` with the cache in `bucket`, on the cluster at `ballista` if given.
async fn engine(dir: &std::path::Path, bucket: &Bucket, ballista: Option<(&str, bool)>) -> Engine {
    let mut builder = Engine::builder()
        .data_dir(dir)
        .memory_cache(0)
        .cache_url(format!("s3://{}/{PREFIX}", bucket.name));
    for (key, value) in bucket.client_options() {
        builder = builder.cache_option(key, value);
    }
    if let Some((url, fallback)) = ballista {
        builder = builder.ballista(url, fallback).unwrap();
    }
    builder.build().await.unwrap()
}

/// The result as a table, its lines sorted: equal answers compare equal however rows with
/// equal sort keys were ordered.
async fn answer(engine: &Engine, sql: &str) -> Result<String, String> {
    let batches: Vec<RecordBatch> = engine
        .sql(sql)
        .await
        .map_err(|e| e.to_string())?
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    let text = pretty_format_batches(&batches).unwrap().to_string();
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort_unstable();
    Ok(lines.join("\n"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpch_on_a_ballista_cluster_gives_the_local_answers() {
    let source = PgDatabase::create().await;
    tpch::load_postgres(&source.url, 0.1).await;
    let bucket = Bucket::new().await;
    let options = bucket.client_options();
    let storage =
        quarry::cache::CacheStorage::open(&format!("s3://{}/{PREFIX}", bucket.name), &options)
            .unwrap();
    let cluster = quarry::cluster::start_in_process(&storage, 2, 2)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let local = engine(dir.path(), &bucket, None).await;
    let mut config = pg_source_config(&source.name);
    config["mode"] = serde_json::json!("cache");
    local
        .create_connection("tpch", "postgres", config)
        .await
        .unwrap();
    let on_cluster = engine(dir.path(), &bucket, Some((&cluster, false))).await;
    for engine in [&local, &on_cluster] {
        answer(engine, "USE tpch.public").await.unwrap();
    }
    for (i, query) in tpch_queries::QUERIES.iter().enumerate() {
        let expected = answer(&local, query).await.unwrap();
        let got = answer(&on_cluster, query)
            .await
            .unwrap_or_else(|e| panic!("Q{} on the cluster: {e}", i + 1));
        assert_eq!(got, expected, "Q{}", i + 1);
    }
    // Its plan shows the cluster's job, not a local scan.
    let plan = on_cluster
        .sql("SELECT count(*) FROM region")
        .await
        .unwrap()
        .create_physical_plan()
        .await
        .unwrap();
    let shown = datafusion::physical_plan::displayable(plan.as_ref())
        .indent(false)
        .to_string();
    assert!(shown.contains("DistributedQueryExec"), "{shown}");

    // A live table is read by this process only: alone it runs here; joined with a cached
    // table it is refused, or run here with fallback.
    let mut live = pg_source_config(&source.name);
    live["mode"] = serde_json::json!("live");
    local
        .create_connection("live", "postgres", live)
        .await
        .unwrap();
    let on_cluster = engine(dir.path(), &bucket, Some((&cluster, false))).await;
    let alone = answer(&on_cluster, "SELECT count(*) FROM live.public.region")
        .await
        .unwrap();
    assert!(alone.contains("| 5 "), "{alone}");
    let mixed = "SELECT count(*) FROM live.public.region r \
                 JOIN tpch.public.nation n ON n.n_regionkey = r.r_regionkey";
    let refused = answer(&on_cluster, mixed).await.unwrap_err();
    assert!(
        refused.contains("cannot run on the Ballista cluster")
            && refused.contains("--ballista-fallback"),
        "{refused}"
    );
    let with_fallback = engine(dir.path(), &bucket, Some((&cluster, true))).await;
    let counted = answer(&with_fallback, mixed).await.unwrap();
    assert!(counted.contains("| 25 "), "{counted}");
}
