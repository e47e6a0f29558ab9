//! The cache's guarantees, on local disk and again with the cache on the S3 server: one
//! fetch however many ask (single flight), a purge or refresh never deletes a file a reader
//! holds, a fetch failing half-way or abandoned leaves nothing, and start-up removes what a
//! crash left. The source is a fake whose fetch waits on a gate the test opens; the store
//! is a real SQLite file and the storage the real thing.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};
use quarry::arrow::array::Int32Array;
use quarry::arrow::datatypes::{DataType, Field, Schema};
use quarry::arrow::record_batch::RecordBatch;
use quarry::cache::{Cache, CacheStorage, FetchMode};
use quarry::events::Events;
use quarry::source::{FetchRequest, QueryRequest, Source};
use quarry::store::{MetadataStore, NewConnection};
use quarry::table::{CacheEntry, ColumnRecord, TableRecord, schema_to_json};
use quarry::{Connection, ConnectionId, ConnectionName, SourceType, StoreUrl, TableRef};
use tokio::sync::{Semaphore, mpsc};

use crate::s3::Bucket;

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
    async fn test(&self) -> quarry::Result<quarry::TestOutcome> {
        unreachable!("the cache never tests a source")
    }

    async fn discover(&self) -> quarry::Result<Vec<TableRecord>> {
        // A refresh compares the table's columns with the source's: none found here means
        // the check leaves the fetch to say what is wrong.
        Ok(Vec::new())
    }

    async fn query(
        &self,
        _request: &QueryRequest,
        _sink: mpsc::Sender<RecordBatch>,
    ) -> quarry::Result<()> {
        unreachable!("the cache never runs a query")
    }

    async fn describe(&self, _sql: &str) -> quarry::Result<quarry::arrow::datatypes::SchemaRef> {
        unreachable!("the cache never describes a query")
    }

    async fn fetch(
        &self,
        request: &FetchRequest,
        sink: mpsc::Sender<RecordBatch>,
    ) -> quarry::Result<()> {
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

/// Where a fixture's cache files are.
enum Place {
    Local,
    /// Under `cache-root/` in a bucket of its own.
    S3(Bucket),
}

const S3_PREFIX: &str = "cache-root";

struct Fixture {
    /// The PostgreSQL database of a store several processes share (`None`: a SQLite file).
    shared: Option<crate::support::PgDatabase>,
    dir: tempfile::TempDir,
    place: Place,
    store: Arc<dyn MetadataStore>,
    cache: Arc<Cache>,
    connection: Connection,
    table: TableRecord,
}

async fn fixture(on_s3: bool) -> Fixture {
    fixture_on(on_s3, None).await
}

/// A fixture whose store is `shared`'s PostgreSQL database when given.
async fn fixture_on(on_s3: bool, shared: Option<crate::support::PgDatabase>) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let place = if on_s3 {
        Place::S3(Bucket::new().await)
    } else {
        Place::Local
    };
    let url = match &shared {
        Some(db) => StoreUrl::parse(&db.url).unwrap(),
        None => StoreUrl::default_in(dir.path()),
    };
    let store = quarry::store::open(&url).await.unwrap();
    let connection = store
        .insert_connection(&NewConnection {
            id: ConnectionId::generate(),
            name: ConnectionName::parse("fake").unwrap(),
            source_type: SourceType::Sqlite,
            config: serde_json::json!({ "path": "/nowhere.db" }),
            secrets: vec![],
            owner: "local".into(),
            visibility: quarry::connection::Visibility::Public,
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
    let cache = restart(&place, dir.path(), &store).await;
    Fixture {
        shared,
        dir,
        place,
        store,
        cache,
        connection,
        table,
    }
}

/// The cache's storage, as a process starting now opens it.
fn storage(place: &Place, dir: &std::path::Path) -> CacheStorage {
    match place {
        Place::Local => CacheStorage::local(dir),
        Place::S3(bucket) => CacheStorage::open(
            &format!("s3://{}/{S3_PREFIX}", bucket.name),
            &bucket.client_options(),
        )
        .unwrap(),
    }
}

/// A new cache over `store` and the files, after start-up clean-up (a process starting
/// after the last one stopped or crashed).
async fn restart(
    place: &Place,
    dir: &std::path::Path,
    store: &Arc<dyn MetadataStore>,
) -> Arc<Cache> {
    let cache = Cache::new(storage(place, dir), Arc::clone(store), Events::default(), 0);
    cache.collect_garbage().await.unwrap();
    Arc::new(cache)
}

impl Fixture {
    /// Another process on the same shared store and files: a store connection and a cache
    /// of its own, keeping superseded versions for `grace`, after start-up clean-up.
    async fn another_process(&self, grace: std::time::Duration) -> Arc<Cache> {
        let db = self.shared.as_ref().expect("a fixture on a shared store");
        let store = quarry::store::open(&StoreUrl::parse(&db.url).unwrap())
            .await
            .unwrap();
        let cache = Cache::new(
            storage(&self.place, self.dir.path()),
            store,
            Events::default(),
            0,
        )
        .with_grace(grace);
        cache.collect_garbage().await.unwrap();
        Arc::new(cache)
    }

    /// A new cache over the same store and files, after start-up clean-up.
    async fn restart(&self) -> Arc<Cache> {
        restart(&self.place, self.dir.path(), &self.store).await
    }

    /// A source whose gate lets `permits` fetches through, and the table fetched with it.
    async fn fetched(&self, permits: usize) -> (Arc<FakeSource>, CacheEntry) {
        let source = FakeSource::new(false);
        source.gate.add_permits(permits);
        let entry = self
            .cache
            .ensure(&self.connection, source.clone(), &self.table)
            .await
            .unwrap();
        (source, entry)
    }

    /// A new version of the table, fetched with `source`.
    async fn refetched(&self, source: &Arc<FakeSource>) -> CacheEntry {
        self.cache
            .fetch(&self.connection, source.clone(), &self.table)
            .await
            .unwrap()
    }

    async fn current(&self) -> Option<CacheEntry> {
        self.store
            .current_cache_entry(&TableRef::new(&self.connection.id, "main", "t"))
            .await
            .unwrap()
    }

    /// Every file under the cache folder, relative to the storage, sorted; background
    /// deletions are waited for first.
    async fn files(&self) -> Vec<String> {
        self.cache.storage().settle().await;
        let mut found = Vec::new();
        match &self.place {
            Place::Local => {
                let mut pending = vec![self.dir.path().join("cache")];
                while let Some(dir) = pending.pop() {
                    for item in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                        if item.path().is_dir() {
                            pending.push(item.path());
                        } else {
                            let path = item.path();
                            let relative = path.strip_prefix(self.dir.path()).unwrap();
                            found.push(relative.to_string_lossy().into_owned());
                        }
                    }
                }
            }
            Place::S3(bucket) => {
                for key in bucket.keys(S3_PREFIX).await {
                    found.push(key[S3_PREFIX.len() + 1..].to_owned());
                }
            }
        }
        found.sort();
        found
    }

    /// Writes `bytes` at `relative` in the cache's storage, as a crashed process left it.
    async fn leave(&self, relative: &str, bytes: &[u8]) {
        match &self.place {
            Place::Local => {
                let path = self.dir.path().join(relative);
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(path, bytes).unwrap();
            }
            Place::S3(bucket) => {
                bucket
                    .store
                    .put(
                        &Path::from(format!("{S3_PREFIX}/{relative}")),
                        PutPayload::from(bytes.to_vec()),
                    )
                    .await
                    .unwrap();
            }
        }
    }

    /// Multipart uploads left open in the bucket (none on local disk).
    fn open_uploads(&self) -> usize {
        match &self.place {
            Place::Local => 0,
            Place::S3(bucket) => bucket.open_uploads(),
        }
    }
}

/// Runs each case once with the cache on local disk and once on the S3 server.
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        mod on_local_disk {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::fixture(false).await).await;
                }
            )*
        }
        mod on_s3 {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::fixture(true).await).await;
                }
            )*
        }
    };
}

on_both!(
    sixteen_concurrent_requests_share_one_fetch,
    a_purged_file_stays_until_its_lease_is_dropped,
    a_refresh_during_a_scan_keeps_the_old_file_for_the_scan,
    a_fill_takes_an_entry_published_after_it_looked_and_fetches_after_a_purge,
    a_fetch_failing_half_way_leaves_no_entry_and_no_file,
    a_fetch_nobody_waits_for_any_more_is_cancelled,
    start_up_removes_what_a_crash_left_and_keeps_the_current_version,
    start_up_forgets_an_entry_whose_file_is_gone,
    a_version_is_read_back_through_its_lease,
);

async fn sixteen_concurrent_requests_share_one_fetch(fx: Fixture) {
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
    let current = fx.current().await.unwrap();
    assert_eq!(current.row_count, 3);
    assert_eq!(fx.files().await, [current.path]);
}

async fn a_purged_file_stays_until_its_lease_is_dropped(fx: Fixture) {
    let (_source, entry) = fx.fetched(1).await;
    let lease = fx.cache.lease(&entry);
    let outcome = fx.cache.purge(&fx.connection.id, None, None).await.unwrap();
    assert_eq!(outcome.entries_removed, 1);
    assert!(fx.current().await.is_none());
    assert_eq!(
        fx.files().await,
        std::slice::from_ref(&entry.path),
        "a reader still holds it"
    );
    drop(lease);
    assert_eq!(fx.files().await, Vec::<String>::new());
}

async fn a_refresh_during_a_scan_keeps_the_old_file_for_the_scan(fx: Fixture) {
    let (source, first) = fx.fetched(2).await;
    let scan = fx.cache.lease(&first);
    let second = fx.refetched(&source).await;
    assert!(second.version > first.version);
    assert_eq!(fx.current().await.unwrap().version, second.version);
    let mut both = vec![first.path.clone(), second.path.clone()];
    both.sort();
    assert_eq!(fx.files().await, both);
    // The scan still reads the rows of its version.
    assert_eq!(read(&fx, &scan).await, [1, 2, 3]);
    drop(scan);
    assert_eq!(fx.files().await, [second.path]);
}

/// Two processes on one PostgreSQL store and one bucket: a refresh in one keeps the version
/// the other is reading for the grace period, and a process starting after it deletes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_another_process_reads_outlives_its_refresh_for_the_grace_period() {
    let fx = fixture_on(true, Some(crate::support::PgDatabase::create().await)).await;
    let (source, first) = fx.fetched(2).await;
    let scan = fx.cache.lease(&first);
    let other = fx.another_process(quarry::cache::SHARED_GRACE).await;
    let second = other
        .fetch(&fx.connection, source.clone(), &fx.table)
        .await
        .unwrap();
    assert!(second.version > first.version);
    assert_eq!(fx.current().await.unwrap().version, second.version);
    // Its reader here is all the refreshing process could not know about.
    drop(other);
    assert_eq!(read(&fx, &scan).await, [1, 2, 3]);
    drop(scan);
    let mut both = vec![first.path.clone(), second.path.clone()];
    both.sort();
    assert_eq!(fx.files().await, both, "kept for the grace period");
    // A process starting within the grace period keeps both.
    drop(fx.another_process(quarry::cache::SHARED_GRACE).await);
    assert_eq!(fx.files().await, both);
    // One starting after it (a grace of zero: it has passed) deletes the old version.
    drop(fx.another_process(std::time::Duration::ZERO).await);
    assert_eq!(fx.files().await, std::slice::from_ref(&second.path));
    let versions: Vec<i64> = fx
        .store
        .cache_entries(&fx.connection.id)
        .await
        .unwrap()
        .iter()
        .map(|e| e.version)
        .collect();
    assert_eq!(versions, [second.version]);
}

async fn a_fill_takes_an_entry_published_after_it_looked_and_fetches_after_a_purge(fx: Fixture) {
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
    assert_eq!(fx.files().await, [fourth.path]);
}

async fn a_fetch_failing_half_way_leaves_no_entry_and_no_file(fx: Fixture) {
    if let Place::S3(bucket) = &fx.place {
        // The server reports open uploads: one begun here shows.
        let mut upload = bucket
            .store
            .put_multipart(&Path::from("elsewhere/x"))
            .await
            .unwrap();
        assert_eq!(fx.open_uploads(), 1);
        upload.abort().await.unwrap();
        assert_eq!(fx.open_uploads(), 0);
    }
    let source = FakeSource::new(true);
    source.gate.add_permits(1);
    let err = fx
        .cache
        .ensure(&fx.connection, source.clone(), &fx.table)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("broke off"), "{err}");
    assert!(fx.current().await.is_none());
    assert_eq!(fx.files().await, Vec::<String>::new());
    // On S3 the upload was aborted before the error came back: no parts are left.
    assert_eq!(fx.open_uploads(), 0);
}

async fn a_fetch_nobody_waits_for_any_more_is_cancelled(fx: Fixture) {
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
    assert_eq!(fx.files().await, Vec::<String>::new());
    // The abandoned upload is aborted once the fetch's last part is dropped, which may be
    // just after the source's fetch ended.
    for _ in 0..200 {
        fx.cache.storage().settle().await;
        if fx.open_uploads() == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert_eq!(fx.open_uploads(), 0);
}

async fn start_up_removes_what_a_crash_left_and_keeps_the_current_version(fx: Fixture) {
    let (source, first) = fx.fetched(2).await;
    let folder = first.path.rsplit_once('/').unwrap().0.to_owned();
    // A crash left: a file completed but never committed, a temp file of a write cut off,
    // and a superseded version's file a reader held.
    let orphan = format!("{folder}/99.parquet");
    let temp = format!("{folder}/.100.parquet.abc.tmp");
    fx.leave(&orphan, b"not committed").await;
    fx.leave(&temp, b"half written").await;
    let held = fx.cache.lease(&first);
    let second = fx.refetched(&source).await;
    std::mem::forget(held);
    let mut left = vec![first.path.clone(), second.path.clone(), orphan, temp];
    left.sort();
    assert_eq!(fx.files().await, left);

    let restarted = fx.restart().await;
    assert_eq!(fx.files().await, std::slice::from_ref(&second.path));
    assert_eq!(fx.current().await.unwrap().version, second.version);
    // The kept version reads as before.
    let lease = restarted.lease(&second);
    assert_eq!(read(&fx, &lease).await, [1, 2, 3]);
}

async fn start_up_forgets_an_entry_whose_file_is_gone(fx: Fixture) {
    let (source, entry) = fx.fetched(2).await;
    // Deleted behind Quarry's back (or the cache URL changed between runs).
    match &fx.place {
        Place::Local => std::fs::remove_file(fx.dir.path().join(&entry.path)).unwrap(),
        Place::S3(bucket) => bucket
            .store
            .delete(&Path::from(format!("{S3_PREFIX}/{}", entry.path)))
            .await
            .unwrap(),
    }
    let restarted = fx.restart().await;
    assert!(fx.current().await.is_none(), "the entry is forgotten");
    // The table is fetched again on its next read.
    let again = restarted
        .ensure(&fx.connection, source.clone(), &fx.table)
        .await
        .unwrap();
    assert!(again.version > entry.version);
    assert_eq!(fx.files().await, [again.path]);
}

async fn a_version_is_read_back_through_its_lease(fx: Fixture) {
    let (_source, entry) = fx.fetched(1).await;
    let lease = fx.cache.lease(&entry);
    assert_eq!(read(&fx, &lease).await, [1, 2, 3]);
    // The memory tier loads it from the same storage.
    let memory = Arc::new(quarry::cache::MemoryTier::new(
        1 << 20,
        Events::default(),
        Arc::clone(fx.cache.storage()),
    ));
    let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int32, true)]));
    let name = quarry::TableName {
        table: TableRef::new(&fx.connection.id, "main", "t"),
        connection_name: "fake".into(),
    };
    let bytes = memory.load(&lease, schema, name).await;
    assert!(bytes.is_some_and(|b| b > 0), "{bytes:?}");
    let resident = memory.get(lease.path()).unwrap();
    assert_eq!(values(&resident.batches), [1, 2, 3]);
}

/// The values of a leased version, read by DataFusion from the cache's storage.
async fn read(fx: &Fixture, lease: &quarry::cache::CacheLease) -> Vec<i32> {
    let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int32, true)]));
    let ctx = fx.cache.storage().session(1);
    let batches = ctx
        .read_table(Arc::new(lease.table(schema).unwrap()))
        .unwrap()
        .collect()
        .await
        .unwrap();
    values(&batches)
}

/// The int column's values across `batches`.
fn values(batches: &[RecordBatch]) -> Vec<i32> {
    batches
        .iter()
        .flat_map(|b| {
            let column = b.column(0).as_any().downcast_ref::<Int32Array>().unwrap();
            column.values().to_vec()
        })
        .collect()
}
