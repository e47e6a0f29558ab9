//! `files` connections over buckets of a local S3-compatible server: moto's server mode
//! (`moto[server]` from PyPI), at `QUARRY_TEST_S3_ENDPOINT` if set, else started here on a
//! free port for this test run. Each test makes its own bucket
//! and removes it after.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;

use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde_json::json;

use crate::files::{
    check_layout, connect, failure, layout_files, rows, sales, sales_parquet, write_files,
};
use crate::support::{ensure_python_packages, python};

#[path = "../../benches/common/s3.rs"]
mod moto;

/// The endpoint of the S3 server the tests use.
static ENDPOINT: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();

/// The S3 server: `QUARRY_TEST_S3_ENDPOINT`, or one started for this test run (moto
/// installed with pip when missing, as the other Python tools are).
async fn endpoint() -> &'static str {
    ENDPOINT
        .get_or_init(|| async {
            if let Ok(endpoint) = std::env::var("QUARRY_TEST_S3_ENDPOINT") {
                return endpoint;
            }
            ensure_python_packages("import moto.server", &["moto[server]"]).await;
            let port = moto::spawn_moto(&python());
            for _ in 0..300 {
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return format!("http://127.0.0.1:{port}");
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            panic!("the S3 server (moto) did not start on port {port}");
        })
        .await
}

/// One raw request to the S3 server (moto takes unsigned bucket requests).
fn request(endpoint: &str, method: &str, path: &str) -> String {
    let address = endpoint.trim_start_matches("http://");
    let mut stream = TcpStream::connect(address).unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

/// A bucket of its own, emptied and removed when dropped.
pub struct Bucket {
    /// Its name.
    pub name: String,
    /// The S3 server's URL.
    pub endpoint: &'static str,
    /// A client of it.
    pub store: Arc<AmazonS3>,
}

impl Bucket {
    /// A new, empty bucket.
    pub async fn new() -> Self {
        let endpoint = endpoint().await;
        let name = format!(
            "quarry-{}",
            nanoid::nanoid!(10, &nanoid::alphabet::SAFE)
                .to_lowercase()
                .replace('_', "-")
        );
        let response = request(endpoint, "PUT", &format!("/{name}"));
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        let store = AmazonS3Builder::new()
            .with_bucket_name(&name)
            .with_endpoint(endpoint)
            .with_allow_http(true)
            .with_region("us-east-1")
            .with_access_key_id("test")
            .with_secret_access_key("test")
            .build()
            .unwrap();
        Bucket {
            name,
            endpoint,
            store: Arc::new(store),
        }
    }

    /// Writes `files` (path, bytes) under `prefix`.
    pub async fn put(&self, prefix: &str, files: &[(String, Vec<u8>)]) {
        for (path, bytes) in files {
            self.store
                .put(
                    &Path::from(format!("{prefix}{path}")),
                    PutPayload::from(bytes.clone()),
                )
                .await
                .unwrap();
        }
    }

    /// The options of a cache URL in this bucket (`CacheStorage::open`).
    pub fn client_options(&self) -> Vec<(String, String)> {
        [
            ("endpoint", self.endpoint),
            ("allow_http", "true"),
            ("region", "us-east-1"),
            ("access_key_id", "test"),
            ("secret_access_key", "test"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    /// The keys under `prefix`, sorted.
    pub async fn keys(&self, prefix: &str) -> Vec<String> {
        use futures::TryStreamExt;
        let listed: Vec<_> = self
            .store
            .list(Some(&Path::from(prefix)))
            .try_collect()
            .await
            .unwrap();
        let mut keys: Vec<String> = listed.into_iter().map(|m| m.location.to_string()).collect();
        keys.sort();
        keys
    }

    /// Multipart uploads begun and neither completed nor aborted.
    pub fn open_uploads(&self) -> usize {
        request(self.endpoint, "GET", &format!("/{}?uploads", self.name))
            .matches("<UploadId>")
            .count()
    }

    /// The connection config of `prefix` in this bucket.
    pub fn config(&self, prefix: &str) -> serde_json::Value {
        json!({
            "url": format!("s3://{}/{prefix}", self.name),
            "endpoint": self.endpoint,
            "region": "us-east-1",
            "access_key_id": "test",
            "secret_access_key": "test-secret",
            "null_string": "NA",
        })
    }
}

impl Drop for Bucket {
    fn drop(&mut self) {
        let store = Arc::clone(&self.store);
        let name = self.name.clone();
        let endpoint = self.endpoint;
        // Emptied on a thread of its own: drop may run inside a runtime.
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                use futures::TryStreamExt;
                let objects: Vec<_> = store.list(None).try_collect().await.unwrap_or_default();
                for object in objects {
                    let _ = store.delete(&object.location).await;
                }
            });
            request(endpoint, "DELETE", &format!("/{name}"));
        })
        .join()
        .unwrap();
    }
}

async fn engine(dir: &std::path::Path) -> quarry::Engine {
    quarry::Engine::builder()
        .data_dir(dir.join("quarry"))
        .build()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_bucket_prefix_is_a_catalog_of_its_files() {
    let bucket = Bucket::new().await;
    bucket.put("exports/", &layout_files()).await;
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path()).await;
    let created = engine
        .create_connection("lake", "files", bucket.config("exports"))
        .await
        .unwrap();
    created.discovery.as_ref().expect("discovery succeeds");
    check_layout(&engine, "lake").await;
    // The secret key is stored sealed, never in the config.
    let stored = engine.connection("lake").await.unwrap();
    let config = stored.config.to_string();
    assert!(
        !config.contains("test-secret") && !config.contains("secret_access_key"),
        "{config}"
    );
    // A remote Parquet table can be cached locally, with the same answers.
    engine
        .sql("SELECT * FROM set_table_options('lake.main.sales', '{\"mode\": \"cache\"}')")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let expected: f64 = sales(2023).iter().chain(&sales(2024)).map(|r| r.1).sum();
    assert_eq!(
        rows(&engine, "SELECT sum(amount) FROM lake.main.sales").await,
        [[format!("{expected:?}")]]
    );
    assert_eq!(
        rows(
            &engine,
            "SELECT cached FROM quarry.information_schema.tables
             WHERE connection_name = 'lake' AND table_name = 'sales'"
        )
        .await,
        [["true"]]
    );
}

#[tokio::test]
async fn an_s3_parquet_table_joins_a_postgres_table_and_a_csv_file() {
    let bucket = Bucket::new().await;
    bucket
        .put(
            "",
            &[(
                "orders/part-0.parquet".to_owned(),
                sales_parquet(&sales(2024)),
            )],
        )
        .await;
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("local");
    std::fs::create_dir_all(&local).unwrap();
    std::fs::write(
        local.join("targets.csv"),
        "region,target\neu,100\nus,200\napac,300\n",
    )
    .unwrap();
    let mut pg = crate::support::PgSourceFixture::new().await;
    pg.exec(
        "CREATE TABLE regions (code text PRIMARY KEY, name text);
         INSERT INTO regions VALUES ('eu', 'Europe'), ('us', 'United States'), ('apac', 'Asia');",
    )
    .await;
    let engine = &pg.engine;
    engine.discover_connection("pg").await.unwrap();
    let mut config = bucket.config("");
    config["url"] = json!(format!("s3://{}", bucket.name));
    engine
        .create_connection("lake", "files", config)
        .await
        .unwrap();
    engine
        .create_connection(
            "local",
            "files",
            json!({"url": local.display().to_string()}),
        )
        .await
        .unwrap();
    let got = rows(
        engine,
        "SELECT r.name, count(*), sum(o.amount), max(t.target)
         FROM lake.main.orders o
         JOIN pg.public.regions r ON r.code = o.region
         JOIN local.main.targets t ON t.region = o.region
         GROUP BY r.name ORDER BY r.name",
    )
    .await;
    let mut expected = Vec::new();
    for (code, name, target) in [
        ("apac", "Asia", 300),
        ("eu", "Europe", 100),
        ("us", "United States", 200),
    ] {
        let amounts: Vec<f64> = sales(2024)
            .iter()
            .filter(|r| r.2 == code)
            .map(|r| r.1)
            .collect();
        expected.push(vec![
            name.to_owned(),
            amounts.len().to_string(),
            format!("{:?}", amounts.iter().sum::<f64>()),
            target.to_string(),
        ]);
    }
    assert_eq!(got, expected);
}

#[tokio::test]
async fn a_missing_bucket_and_a_dead_endpoint_are_classified() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path()).await;
    let bucket = Bucket::new().await;
    let mut config = bucket.config("x");
    config["url"] = json!("s3://quarry-no-such-bucket/x");
    engine
        .register_connection("missing", "files", config)
        .await
        .unwrap();
    let error = engine
        .test_connection("missing")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("the bucket or folder may not exist"),
        "{error}"
    );
    let failed = engine.discover_connection("missing").await.unwrap_err();
    assert!(
        matches!(
            failed,
            quarry::Error::Source {
                class: quarry::source::FailureClass::NoDatabase,
                ..
            }
        ),
        "{failed:?}"
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut config = bucket.config("x");
    config["endpoint"] = json!(format!("http://127.0.0.1:{port}"));
    config["retry_budget"] = json!("0s");
    engine
        .register_connection("dead", "files", config)
        .await
        .unwrap();
    let failed = engine.discover_connection("dead").await.unwrap_err();
    assert!(
        matches!(
            failed,
            quarry::Error::Source {
                class: quarry::source::FailureClass::Refused,
                ..
            }
        ),
        "{failed:?}"
    );
    assert!(
        failed.to_string().contains("check the endpoint"),
        "{failed}"
    );
    engine
        .register_connection("fine", "files", bucket.config(""))
        .await
        .unwrap();
    let outcome = engine.test_connection("fine").await.unwrap();
    assert!(
        outcome.server_version.starts_with("S3 bucket s3://"),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn a_removed_object_fails_the_fetch_with_its_name() {
    let bucket = Bucket::new().await;
    bucket
        .put("", &[("a.csv".to_owned(), b"x\n1\n".to_vec())])
        .await;
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path()).await;
    engine
        .create_connection("b", "files", bucket.config(""))
        .await
        .unwrap();
    bucket.store.delete(&Path::from("a.csv")).await.unwrap();
    let error = failure(&engine, "SELECT * FROM b.main.a").await;
    assert!(
        error.contains("file 'a.csv' was removed after discovery"),
        "{error}"
    );
}

/// An engine over `dir` whose cache lives in `bucket` under `prefix`.
async fn engine_caching_in(dir: &std::path::Path, bucket: &Bucket, prefix: &str) -> quarry::Engine {
    let mut builder = quarry::Engine::builder()
        .data_dir(dir.join("quarry"))
        .cache_url(format!("s3://{}/{prefix}", bucket.name));
    for (key, value) in bucket.client_options() {
        builder = builder.cache_option(key, value);
    }
    builder.build().await.unwrap()
}

/// The keys under `prefix` in `bucket`, sorted.
async fn keys(bucket: &Bucket, prefix: &str) -> Vec<String> {
    bucket.keys(prefix).await
}

#[tokio::test]
async fn the_cache_can_live_in_a_bucket() {
    let bucket = Bucket::new().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    write_files(&data, &layout_files());
    let engine = engine_caching_in(dir.path(), &bucket, "team/cache").await;
    assert_eq!(
        engine.config().cache_location,
        format!("s3://{}/team/cache", bucket.name)
    );
    connect(
        &engine,
        "local",
        json!({ "url": data.to_string_lossy(), "null_string": "NA" }),
    )
    .await;
    // CSV and NDJSON tables are parsed into the cache: their copies are objects in the
    // bucket, and nothing is written to the data dir's cache folder.
    check_layout(&engine, "local").await;
    let copies = keys(&bucket, "team/cache/cache").await;
    assert_eq!(copies.len(), 3, "customers, events, logs: {copies:?}");
    assert!(copies.iter().all(|k| k.ends_with(".parquet")), "{copies:?}");
    assert!(!dir.path().join("quarry/cache").exists());
    // The memory tier loads a copy from the bucket.
    let bytes = engine
        .load_into_memory("local", "main", "customers")
        .await
        .unwrap();
    assert!(bytes.is_some_and(|b| b > 0), "{bytes:?}");
    let customers = rows(&engine, "SELECT count(*) FROM local.main.customers").await;
    drop(engine);

    // A new process reads the same copies: nothing is fetched again.
    let engine = engine_caching_in(dir.path(), &bucket, "team/cache").await;
    let mut events = engine.subscribe();
    assert_eq!(
        rows(&engine, "SELECT count(*) FROM local.main.customers").await,
        customers
    );
    assert_eq!(keys(&bucket, "team/cache/cache").await, copies);
    while let Ok(event) = events.try_recv() {
        assert!(
            !matches!(event, quarry::Event::FetchStarted { .. }),
            "fetched again: {event:?}"
        );
    }
    // A purge deletes the copies from the bucket.
    engine
        .sql("SELECT * FROM purge_cache('local')")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    engine.cache().storage().settle().await;
    assert_eq!(
        keys(&bucket, "team/cache/cache").await,
        Vec::<String>::new()
    );
}

#[tokio::test]
async fn a_cache_url_that_cannot_work_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let build = |url: &str| {
        quarry::Engine::builder()
            .data_dir(dir.path().join("quarry"))
            .cache_url(url)
            .build()
    };
    let err = build("gs://bucket/cache").await.unwrap_err().to_string();
    assert!(
        err.contains("invalid cache URL 'gs://bucket/cache'") && err.contains("s3://bucket/prefix"),
        "{err}"
    );
    let err = build("s3:///cache").await.unwrap_err().to_string();
    assert!(err.contains("names no bucket"), "{err}");
    let err = build("s3://bucket/my%20cache")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("the prefix may hold letters"), "{err}");
    let err = build("s3://AKIA:hunter2@bucket/cache")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("credentials do not go in the URL") && !err.contains("hunter2"),
        "{err}"
    );

    // A bucket that does not exist fails at start-up, naming the cache URL.
    let bucket = Bucket::new().await;
    let data = dir.path().join("data");
    write_files(&data, &layout_files());
    let mut builder = quarry::Engine::builder()
        .data_dir(dir.path().join("quarry"))
        .cache_url(format!("s3://{}-missing/cache", bucket.name));
    for (key, value) in bucket.client_options() {
        builder = builder.cache_option(key, value);
    }
    let err = builder.build().await.unwrap_err().to_string();
    assert!(
        err.contains(&format!("the cache at s3://{}-missing/cache", bucket.name))
            && err.contains("check the cache URL"),
        "{err}"
    );
}
