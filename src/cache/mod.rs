//! The Parquet cache: one immutable, versioned file per fetched table. This file holds the
//! cache's bookkeeping: leases on files being read, one fetch per table however many ask
//! (single flight), purges, the freshness rule and start-up clean-up. A fetch itself
//! (write, complete, publish) is in `fetch`; where files live (local disk or S3) in
//! `storage`; decoded copies in `memory`.

mod compaction;
mod fetch;
mod incremental;
mod memory;
mod retention;
mod storage;
mod writer;

pub use incremental::IncrementalPlan;

pub use memory::{MemoryTier, ResidentFile, extremes};
pub use retention::SHARED_GRACE;
pub use storage::CacheStorage;
pub use writer::properties;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::FutureExt;
use futures::future::{BoxFuture, Shared, WeakShared};

use crate::connection::Connection;
use crate::error::{Error, Result};
use crate::events::{Events, TableName};
use crate::id::ConnectionId;
use crate::source::Source;
use crate::store::MetadataStore;
use crate::table::{CacheEntry, TableRecord, TableRef};

/// Name of the cache folder in the data dir.
pub const CACHE_DIR: &str = "cache";

/// Whether a table's cache entry can be read as it is.
#[derive(Debug)]
pub enum Freshness {
    /// The current entry, within the connection's `max_age`.
    Fresh(CacheEntry),
    /// The current entry, older than `max_age`.
    Stale(CacheEntry),
    /// The table is not cached.
    Missing,
}

/// What a fetch does with the table's current entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FetchMode {
    /// Return the current entry if there is one, else fetch.
    Ensure,
    /// The caller saw no current entry when it looked at `missing_since`: fetch without
    /// reading the store again, or join a fetch of the table already running, or take the
    /// entry one published since (a self-join's second scan runs after the first finished).
    Fill {
        /// Taken before the caller read the store.
        missing_since: Instant,
    },
    /// Fetch a new version, or join a refresh already running.
    Refresh,
}

type FetchFuture = BoxFuture<'static, Result<CacheEntry, Arc<Error>>>;
type SharedFetch = Shared<FetchFuture>;

/// Holds the files of one cache version for reading: none is deleted while a lease exists.
#[derive(Debug)]
pub struct CacheLease {
    paths: Vec<PathBuf>,
    cache: Arc<CacheState>,
}

impl CacheLease {
    /// The base file's path, relative to the cache's storage.
    pub fn path(&self) -> &Path {
        &self.paths[0]
    }

    /// Every file's relative path: the base, then the deltas.
    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    /// A DataFusion table over the leased files, with `schema`.
    pub fn table(
        &self,
        schema: datafusion::arrow::datatypes::SchemaRef,
    ) -> datafusion::error::Result<datafusion::datasource::listing::ListingTable> {
        self.cache.storage.table(&self.paths, schema)
    }
}

impl Drop for CacheLease {
    fn drop(&mut self) {
        for path in &self.paths {
            self.cache.release(path);
        }
    }
}

/// Reader counts, files waiting for their last reader, and the decoded copies of files.
#[derive(Debug)]
struct CacheState {
    storage: Arc<CacheStorage>,
    readers: Mutex<HashMap<PathBuf, usize>>,
    retired: Mutex<Vec<PathBuf>>,
    memory: Arc<MemoryTier>,
    /// The entry this process's last fetch of each table published, and when; dropped when
    /// that entry is purged or replaced.
    published: Mutex<HashMap<TableRef, (CacheEntry, Instant)>>,
    /// One lock per table, held by whatever makes its next version (a fetch, an incremental
    /// refresh, a compaction), so a version is always made from the one before it.
    writers: Mutex<HashMap<TableRef, Arc<tokio::sync::Mutex<()>>>>,
    /// How long a shared store keeps superseded versions and unpublished files.
    grace: std::time::Duration,
}

impl CacheState {
    fn new(storage: Arc<CacheStorage>, memory: Arc<MemoryTier>) -> Self {
        CacheState {
            storage,
            readers: Mutex::default(),
            retired: Mutex::default(),
            memory,
            published: Mutex::default(),
            writers: Mutex::default(),
            grace: SHARED_GRACE,
        }
    }

    /// The lock of `table`'s writers.
    fn writer(&self, table: &TableRef) -> Arc<tokio::sync::Mutex<()>> {
        Arc::clone(
            self.writers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(table.clone())
                .or_default(),
        )
    }

    /// Holds `paths` for reading until the lease is dropped.
    fn lease(self: &Arc<Self>, paths: Vec<PathBuf>) -> CacheLease {
        for path in &paths {
            self.acquire(path);
        }
        CacheLease {
            paths,
            cache: Arc::clone(self),
        }
    }

    fn lock_published(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<TableRef, (CacheEntry, Instant)>> {
        self.published.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records `entry` as just published.
    fn published(&self, entry: &CacheEntry) {
        self.lock_published()
            .insert(entry.table.clone(), (entry.clone(), Instant::now()));
    }

    /// Forgets `entry` as published, once it is purged or replaced.
    fn unpublished(&self, entry: &CacheEntry) {
        let mut published = self.lock_published();
        if published
            .get(&entry.table)
            .is_some_and(|(e, _)| e.version == entry.version)
        {
            published.remove(&entry.table);
        }
    }

    fn acquire(&self, path: &Path) {
        *self.lock_readers().entry(path.to_owned()).or_default() += 1;
    }

    fn lock_readers(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, usize>> {
        self.readers.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn release(&self, path: &Path) {
        let last = {
            let mut readers = self.lock_readers();
            let count = readers.entry(path.to_owned()).or_default();
            *count = count.saturating_sub(1);
            let last = *count == 0;
            if last {
                readers.remove(path);
            }
            last
        };
        if last {
            let mut retired = self.retired.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(i) = retired.iter().position(|p| p == path) {
                retired.swap_remove(i);
                self.storage.delete(path);
            }
        }
    }

    /// Retires the files of `old` that `kept` (the version replacing it) does not share.
    fn retire_files(&self, old: &CacheEntry, kept: Option<&CacheEntry>) {
        for file in old.files() {
            if kept.is_none_or(|k| !k.files().any(|f| f == file)) {
                self.retire(PathBuf::from(file));
            }
        }
    }

    /// Deletes `path` now, or when its last reader is done; its decoded copy goes now.
    fn retire(&self, path: PathBuf) {
        self.memory.remove(&path);
        let readers = self.lock_readers();
        if readers.get(&path).is_some_and(|n| *n > 0) {
            self.retired
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(path);
        } else {
            drop(readers);
            self.storage.delete(&path);
        }
    }
}

/// The cache of one data directory (its files there, or at a cache URL).
#[derive(Debug)]
pub struct Cache {
    storage: Arc<CacheStorage>,
    store: Arc<dyn MetadataStore>,
    events: Events,
    state: Arc<CacheState>,
    // Weak, so that when every requester is gone (Ctrl-C) the fetch is dropped, not parked.
    // Keyed also by whether the job may reuse a current entry (ensure) or must fetch (refresh).
    inflight: Mutex<HashMap<(TableRef, bool), WeakShared<FetchFuture>>>,
}

/// What a purge removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct PurgeOutcome {
    /// Cache entries removed.
    pub entries_removed: u64,
    /// Bytes of the files removed (or to be removed when their readers finish).
    pub bytes_freed: u64,
}

impl Cache {
    /// The table's current entry, and whether it can be read as it is: one older than the
    /// connection's `max_age` is stale, and its reader fetches a new version first.
    pub async fn fresh_entry(
        &self,
        connection: &Connection,
        record: &TableRecord,
    ) -> Result<Freshness> {
        let current = self
            .store
            .current_cache_entry(&record.table_ref(&connection.id))
            .await?;
        let max_age =
            crate::source::CommonOptions::max_age_of(connection.source_type, &connection.config);
        Ok(match (current, max_age) {
            (None, _) => Freshness::Missing,
            (Some(entry), Some(age))
                if chrono::Utc::now() - entry.fetched_at
                    > chrono::Duration::from_std(age).unwrap_or(chrono::Duration::MAX) =>
            {
                Freshness::Stale(entry)
            }
            (Some(entry), _) => Freshness::Fresh(entry),
        })
    }

    /// The cache with its files in `storage`, committing entries to `store` and keeping up
    /// to `memory_budget` bytes of files decoded in memory.
    pub fn new(
        storage: CacheStorage,
        store: Arc<dyn MetadataStore>,
        events: Events,
        memory_budget: u64,
    ) -> Self {
        let storage = Arc::new(storage);
        let memory = Arc::new(MemoryTier::new(
            memory_budget,
            events.clone(),
            Arc::clone(&storage),
        ));
        Cache {
            storage: Arc::clone(&storage),
            store,
            events,
            state: Arc::new(CacheState::new(storage, memory)),
            inflight: Mutex::default(),
        }
    }

    /// Where the cache's files live.
    pub fn storage(&self) -> &Arc<CacheStorage> {
        &self.storage
    }

    /// The memory tier of decoded cache files.
    pub fn memory(&self) -> &Arc<MemoryTier> {
        &self.state.memory
    }

    /// The local path of a cache entry's base file; `None` when the cache is on S3.
    pub fn local_path(&self, entry: &CacheEntry) -> Option<PathBuf> {
        self.storage.local_path(Path::new(&entry.path))
    }

    /// The bytes of `entry`'s files held decoded in the memory tier (0 when not all are).
    pub fn resident_bytes(&self, entry: &CacheEntry) -> u64 {
        entry
            .files()
            .map(|f| self.state.memory.resident_bytes(Path::new(f)))
            .sum::<Option<u64>>()
            .unwrap_or(0)
    }

    /// Holds `entry`'s files for reading until the lease is dropped.
    pub fn lease(&self, entry: &CacheEntry) -> CacheLease {
        self.state.lease(entry.files().map(PathBuf::from).collect())
    }

    /// Sets how long a shared store keeps superseded versions and files not yet published
    /// ([`SHARED_GRACE`] unless set); a store no other process uses keeps neither.
    pub fn with_grace(mut self, grace: std::time::Duration) -> Self {
        if let Some(state) = Arc::get_mut(&mut self.state) {
            state.grace = grace;
        }
        self
    }

    /// Start-up clean-up: deletes temp files, files no entry references, and superseded
    /// entries (no reader can hold them yet); forgets entries whose files are gone (deleted
    /// by hand, or made under another cache URL), so their tables are fetched again. On a
    /// shared store, what another process may still read or publish is kept for the grace
    /// period (see `retention`). Returns the number of files deleted.
    pub async fn collect_garbage(&self) -> Result<usize> {
        let grace = retention::grace(self.store.as_ref(), &self.state);
        let cutoff = retention::cutoff(grace);
        let entries = self.store.all_cache_entries().await?;
        // Everything superseded before now, on a store no other process uses.
        let expired = self
            .store
            .expired_cache_entries(None, cutoff)
            .await?
            .into_iter()
            .map(|e| (e.table, e.version))
            .collect();
        // Listed after the entries were read: a file committed before its entry is here.
        let present = self.storage.list().await?;
        let plan = retention::plan(entries, &expired, present, cutoff);
        for entry in &plan.forget {
            self.store.delete_cache_entry(entry).await?;
        }
        if plan.forgotten_current > 0 {
            tracing::warn!(
                forgotten = plan.forgotten_current,
                location = %self.storage.location(),
                "cache entries whose files are missing were forgotten; their tables will be fetched again"
            );
        }
        for file in &plan.delete {
            self.storage.delete(file);
        }
        self.storage.settle().await;
        if !plan.delete.is_empty() {
            tracing::info!(deleted = plan.delete.len(), "removed orphaned cache files");
        }
        Ok(plan.delete.len())
    }

    /// The current cache entry of `table`, fetching it first if there is none.
    pub async fn ensure(
        &self,
        connection: &Connection,
        source: Arc<dyn Source>,
        table: &TableRecord,
    ) -> Result<CacheEntry> {
        self.run(connection, source, table, FetchMode::Ensure).await
    }

    /// Fetches a new version of `table`, or joins a refresh of it already running.
    pub async fn fetch(
        &self,
        connection: &Connection,
        source: Arc<dyn Source>,
        table: &TableRecord,
    ) -> Result<CacheEntry> {
        self.run(connection, source, table, FetchMode::Refresh)
            .await
    }

    /// Runs (or joins) one job per table: `Ensure` and `Fill` share one (either may return
    /// an entry the other published), `Refresh` has its own.
    pub async fn run(
        &self,
        connection: &Connection,
        source: Arc<dyn Source>,
        table: &TableRecord,
        mode: FetchMode,
    ) -> Result<CacheEntry> {
        let key = (table.table_ref(&connection.id), mode != FetchMode::Refresh);
        let shared = {
            let mut inflight = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
            // Under the lock: a job records its entry before its requesters remove it here.
            if let FetchMode::Fill { missing_since } = mode
                && let Some((entry, at)) = self.state.lock_published().get(&key.0)
                && *at > missing_since
            {
                return Ok(entry.clone());
            }
            match inflight.get(&key).and_then(WeakShared::upgrade) {
                Some(running) => running,
                None => {
                    let job = self.job(connection, source, table, mode);
                    let shared: SharedFetch = async move { job.run().await.map_err(Arc::new) }
                        .boxed()
                        .shared();
                    if let Some(weak) = shared.downgrade() {
                        inflight.insert(key.clone(), weak);
                    }
                    shared
                }
            }
        };
        let result = shared.clone().await;
        {
            let mut inflight = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
            let finished = inflight
                .get(&key)
                .is_none_or(|weak| weak.upgrade().is_none_or(|f| f.ptr_eq(&shared)));
            if finished {
                inflight.remove(&key);
            }
        }
        result.map_err(Error::Shared)
    }

    fn job(
        &self,
        connection: &Connection,
        source: Arc<dyn Source>,
        table: &TableRecord,
        mode: FetchMode,
    ) -> fetch::FetchJob {
        fetch::FetchJob {
            storage: Arc::clone(&self.storage),
            store: Arc::clone(&self.store),
            events: self.events.clone(),
            state: Arc::clone(&self.state),
            name: TableName::of(connection, table),
            table: table.clone(),
            source,
            mode,
            settings: table.refresh_settings(&connection.config),
            source_type: connection.source_type,
        }
    }

    /// Merges the current version's base and delta files into one file, as a new version
    /// (compaction also runs by itself once deltas pile up). `None`: nothing to merge.
    pub async fn compact(
        &self,
        connection: &Connection,
        source: Arc<dyn Source>,
        table: &TableRecord,
    ) -> Result<Option<CacheEntry>> {
        let job = self.job(connection, source, table, FetchMode::Refresh);
        compaction::compact(&job, None).await
    }

    /// Removes the cache entries of a connection, or of one schema or table of it.
    pub async fn purge(
        &self,
        connection_id: &ConnectionId,
        schema: Option<&str>,
        table: Option<&str>,
    ) -> Result<PurgeOutcome> {
        let mut outcome = PurgeOutcome::default();
        for entry in self.store.cache_entries(connection_id).await? {
            if schema.is_some_and(|s| s != entry.table.schema)
                || table.is_some_and(|t| t != entry.table.table)
            {
                continue;
            }
            self.store.delete_cache_entry(&entry).await?;
            self.state.unpublished(&entry);
            self.state.retire_files(&entry, None);
            outcome.entries_removed += 1;
            outcome.bytes_freed += entry.byte_size.max(0) as u64;
        }
        Ok(outcome)
    }

    /// Forgets which entries this process published: another process may have purged or
    /// replaced them since, so a scan that found none asks the store again.
    pub fn forget_published(&self) {
        self.state.lock_published().clear();
    }

    /// Deletes the files of entries the store already dropped (e.g. with their connection).
    pub fn retire_files(&self, entries: &[CacheEntry]) {
        for entry in entries {
            self.state.unpublished(entry);
            self.state.retire_files(entry, None);
        }
    }
}
