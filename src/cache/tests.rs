//! The cache against a fake source whose fetch waits on a gate the test opens: single
//! flight, purge and refresh under a lease, a fetch failing half-way, and cancellation.
//! The store is a real SQLite file; no server is needed.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use datafusion::arrow::array::Int32Array;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use tokio::sync::{Semaphore, mpsc};

use super::*;
use crate::connection::{ConnectionName, SourceType};
use crate::source::{FetchRequest, TestOutcome};
use crate::store::NewConnection;
use crate::store::StoreUrl;
use crate::table::{ColumnRecord, schema_to_json};

/// A source of one int column: a batch of `1..=3`, sent once the gate gives a permit;
/// with `fail_after_first`, it then fails.
#[derive(Debug)]
struct FakeSource {
    gate: Arc<Semaphore>,
    fetches: AtomicUsize,
    /// Fetches that ended, however (a dropped future counts too).
    ended: Arc<AtomicUsize>,
    fail_after_first: bool,
}

impl FakeSource {
    fn new(fail_after_first: bool) -> Arc<Self> {
        Arc::new(FakeSource {
            gate: Arc::new(Semaphore::new(0)),
            fetches: AtomicUsize::new(0),
            ended: Arc::default(),
            fail_after_first,
        })
    }
}

struct Ended(Arc<AtomicUsize>);

impl Drop for Ended {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[async_trait]
impl Source for FakeSource {
    async fn test(&self) -> Result<TestOutcome> {
        unreachable!("the cache never tests a source")
    }

    async fn discover(&self) -> Result<Vec<TableRecord>> {
        // A refresh compares the table's columns with the source's: none found here means
        // the check leaves the fetch to say what is wrong.
        Ok(Vec::new())
    }

    async fn query(
        &self,
        _request: &crate::source::QueryRequest,
        _sink: mpsc::Sender<RecordBatch>,
    ) -> Result<()> {
        unreachable!("the cache never runs a query")
    }

    async fn describe(&self, _sql: &str) -> Result<datafusion::arrow::datatypes::SchemaRef> {
        unreachable!("the cache never describes a query")
    }

    async fn fetch(&self, request: &FetchRequest, sink: mpsc::Sender<RecordBatch>) -> Result<()> {
        self.fetches.fetch_add(1, Ordering::SeqCst);
        let _ended = Ended(Arc::clone(&self.ended));
        let batch = RecordBatch::try_new(
            Arc::clone(&request.arrow_schema),
            vec![Arc::new(Int32Array::from(vec![1, 2, 3]))],
        )
        .map_err(|e| request.error(None, e))?;
        if sink.send(batch).await.is_err() {
            return Ok(());
        }
        // Waits for the gate, or stops when the cache gives up on the fetch (as real
        // sources do when the sink closes).
        tokio::select! {
            permit = self.gate.acquire() => drop(permit.expect("the gate stays open")),
            () = sink.closed() => return Ok(()),
        }
        if self.fail_after_first {
            return Err(request.error(None, "the fake source broke off"));
        }
        Ok(())
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    root: std::path::PathBuf,
    store: Arc<dyn MetadataStore>,
    cache: Arc<Cache>,
    connection: Connection,
    table: TableRecord,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_owned();
    let store = crate::store::open(&StoreUrl::default_in(&root))
        .await
        .unwrap();
    let connection = store
        .insert_connection(&NewConnection {
            id: ConnectionId::generate(),
            name: ConnectionName::parse("fake").unwrap(),
            source_type: SourceType::Sqlite,
            config: serde_json::json!({ "path": "/nowhere.db" }),
            secrets: vec![],
        })
        .await
        .unwrap();
    let schema = Schema::new(vec![Field::new("x", DataType::Int32, true)]);
    let table = TableRecord {
        schema: "main".into(),
        name: "t".into(),
        table_type: "table".into(),
        row_estimate: Some(3),
        byte_estimate: None,
        options: Default::default(),
        arrow_schema: Some(schema_to_json(&schema)),
        discovered_at: chrono::Utc::now(),
        fetch_count: 0,
        columns: vec![ColumnRecord {
            name: "x".into(),
            ordinal_position: 1,
            source_type: "INTEGER".into(),
            numeric_precision: None,
            numeric_scale: None,
            is_nullable: true,
            arrow_type: "Int32".into(),
        }],
        constraints: Vec::new(),
        refresh: Default::default(),
        files: None,
    };
    store
        .replace_tables(&connection.id, std::slice::from_ref(&table))
        .await
        .unwrap();
    let cache = Arc::new(Cache::new(&root, Arc::clone(&store), Events::default(), 0));
    Fixture {
        _dir: dir,
        root,
        store,
        cache,
        connection,
        table,
    }
}

impl Fixture {
    async fn current(&self) -> Option<CacheEntry> {
        self.store
            .current_cache_entry(&crate::table::TableRef::new(
                &self.connection.id,
                "main",
                "t",
            ))
            .await
            .unwrap()
    }

    /// Every file under the cache folder.
    fn files(&self) -> Vec<std::path::PathBuf> {
        let mut found = Vec::new();
        let mut pending = vec![self.root.join(CACHE_DIR)];
        while let Some(dir) = pending.pop() {
            for item in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                if item.path().is_dir() {
                    pending.push(item.path());
                } else {
                    found.push(item.path());
                }
            }
        }
        found
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_concurrent_requests_share_one_fetch() {
    let fx = fixture().await;
    let source = FakeSource::new(false);
    let mut requests = Vec::new();
    for _ in 0..16 {
        let (cache, connection, table) = (
            Arc::clone(&fx.cache),
            fx.connection.clone(),
            fx.table.clone(),
        );
        let source: Arc<dyn Source> = source.clone();
        requests.push(tokio::spawn(async move {
            cache.ensure(&connection, source, &table).await
        }));
    }
    // Every request is waiting on the one fetch, which waits on the gate.
    while source.fetches.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    source.gate.add_permits(16);
    let mut versions = Vec::new();
    for request in requests {
        versions.push(request.await.unwrap().unwrap().version);
    }
    assert!(versions.iter().all(|v| *v == versions[0]), "{versions:?}");
    assert_eq!(source.fetches.load(Ordering::SeqCst), 1);
    assert_eq!(fx.current().await.unwrap().row_count, 3);
}

#[tokio::test]
async fn a_purged_file_stays_until_its_lease_is_dropped() {
    let fx = fixture().await;
    let source = FakeSource::new(false);
    source.gate.add_permits(1);
    let entry = fx
        .cache
        .ensure(&fx.connection, source.clone(), &fx.table)
        .await
        .unwrap();
    let lease = fx.cache.lease(&entry);
    let outcome = fx.cache.purge(&fx.connection.id, None, None).await.unwrap();
    assert_eq!(outcome.entries_removed, 1);
    assert!(fx.current().await.is_none());
    assert!(lease.path().is_file(), "a reader still holds it");
    drop(lease);
    assert!(!fx.cache.absolute(&entry).exists());
}

#[tokio::test]
async fn a_refresh_during_a_scan_keeps_the_old_file_for_the_scan() {
    let fx = fixture().await;
    let source = FakeSource::new(false);
    source.gate.add_permits(2);
    let first = fx
        .cache
        .ensure(&fx.connection, source.clone(), &fx.table)
        .await
        .unwrap();
    let scan = fx.cache.lease(&first);
    let second = fx
        .cache
        .fetch(&fx.connection, source.clone(), &fx.table)
        .await
        .unwrap();
    assert!(second.version > first.version);
    assert_eq!(fx.current().await.unwrap().version, second.version);
    assert!(scan.path().is_file());
    drop(scan);
    assert!(!fx.cache.absolute(&first).exists());
    assert!(fx.cache.absolute(&second).is_file());
}

#[tokio::test]
async fn a_fill_takes_an_entry_published_after_it_looked_and_fetches_after_a_purge() {
    let fx = fixture().await;
    let source = FakeSource::new(false);
    source.gate.add_permits(3);
    let fill = |missing_since| {
        fx.cache.run(
            &fx.connection,
            source.clone(),
            &fx.table,
            FetchMode::Fill { missing_since },
        )
    };
    // Two scans of one statement saw no entry; the second runs after the first finished.
    let looked = std::time::Instant::now();
    let first = fill(looked).await.unwrap();
    let second = fill(looked).await.unwrap();
    assert_eq!(second.version, first.version);
    assert_eq!(source.fetches.load(Ordering::SeqCst), 1);
    // A purge forgets the entry: a later fill fetches again.
    fx.cache.purge(&fx.connection.id, None, None).await.unwrap();
    let third = fill(std::time::Instant::now()).await.unwrap();
    assert!(third.version > first.version);
    assert_eq!(source.fetches.load(Ordering::SeqCst), 2);
    // A fill that looked after the entry was published does not trust it: its store read
    // found none, so someone removed it (another process's purge); it fetches.
    let fourth = fill(std::time::Instant::now()).await.unwrap();
    assert!(fourth.version > third.version);
    assert_eq!(source.fetches.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_fetch_failing_half_way_leaves_no_entry_and_no_file() {
    let fx = fixture().await;
    let source = FakeSource::new(true);
    source.gate.add_permits(1);
    let err = fx
        .cache
        .ensure(&fx.connection, source.clone(), &fx.table)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("broke off"), "{err}");
    assert!(fx.current().await.is_none());
    assert_eq!(fx.files(), Vec::<std::path::PathBuf>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_nobody_waits_for_any_more_is_cancelled() {
    let fx = fixture().await;
    let source = FakeSource::new(false);
    let (cache, connection, table) = (
        Arc::clone(&fx.cache),
        fx.connection.clone(),
        fx.table.clone(),
    );
    let dyn_source: Arc<dyn Source> = source.clone();
    let request = tokio::spawn(async move { cache.ensure(&connection, dyn_source, &table).await });
    while source.fetches.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    // The only requester goes away while the source waits on the gate.
    request.abort();
    assert!(request.await.unwrap_err().is_cancelled());
    while source.ended.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    assert!(fx.current().await.is_none());
    assert_eq!(fx.files(), Vec::<std::path::PathBuf>::new());
}
