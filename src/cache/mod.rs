//! The Parquet cache: one immutable, versioned file per fetched table. A fetch streams
//! source batches into a temp file beside its final place, fsyncs, renames, then commits
//! the entry in the store, so a crash leaves the old state or the new one. Concurrent
//! requests for one table share one fetch; files of replaced versions are deleted once no
//! reader holds them.

mod memory;
mod writer;

pub use memory::{MemoryTier, ResidentFile, extremes};
pub use writer::properties;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use chrono::Utc;
use datafusion::arrow::datatypes::SchemaRef;
use futures::FutureExt;
use futures::future::{BoxFuture, Shared, WeakShared};
use tokio::sync::mpsc;

use crate::connection::Connection;
use crate::error::{Error, Result};
use crate::events::{Event, Events, TableName};
use crate::id::ConnectionId;
use crate::source::{FetchRequest, Source};
use crate::store::MetadataStore;
use crate::table::{CacheEntry, TableRecord, schema_from_json};

/// Name of the cache folder in the data dir.
pub const CACHE_DIR: &str = "cache";
const TEMP_SUFFIX: &str = ".tmp";
/// Batches buffered between a source and the Parquet writer.
const CHANNEL_BATCHES: usize = 4;
/// Rows between two progress events.
const PROGRESS_EVERY: u64 = 100_000;

/// Encodes a schema or table name as one safe path component.
fn path_component(name: &str) -> String {
    use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
    // Letters, digits, `_` and `-` stay; every other byte is %XX (the layout on disk).
    const KEPT: &percent_encoding::AsciiSet = &NON_ALPHANUMERIC.remove(b'_').remove(b'-');
    utf8_percent_encode(name, KEPT).to_string()
}

/// Whether a table's cache entry can be read as it is.
#[derive(Debug)]
pub enum Freshness {
    /// The current entry, within the connection's `max_age`.
    Fresh(CacheEntry),
    /// The current entry is older than `max_age`.
    Stale,
    /// The table is not cached.
    Missing,
}

/// Identifies a table across the cache.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TableKey {
    /// Owning connection.
    pub connection_id: ConnectionId,
    /// Source schema.
    pub schema: String,
    /// Source table.
    pub table: String,
}

type FetchFuture = BoxFuture<'static, Result<CacheEntry, Arc<Error>>>;
type SharedFetch = Shared<FetchFuture>;

/// Holds a cache file open for reading: its file is not deleted while a lease exists.
#[derive(Debug)]
pub struct CacheLease {
    path: PathBuf,
    cache: Arc<CacheState>,
}

impl CacheLease {
    /// The file's absolute path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for CacheLease {
    fn drop(&mut self) {
        self.cache.release(&self.path);
    }
}

/// Reader counts, files waiting for their last reader, and the decoded copies of files.
#[derive(Debug)]
struct CacheState {
    readers: Mutex<HashMap<PathBuf, usize>>,
    retired: Mutex<Vec<PathBuf>>,
    memory: Arc<MemoryTier>,
}

impl CacheState {
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
                remove_file_logged(path);
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
            remove_file_logged(&path);
        }
    }
}

fn remove_file_logged(path: &Path) {
    if let Err(e) = std::fs::remove_file(path)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), error = %e, "could not delete a cache file");
    }
}

/// The cache of one data directory.
#[derive(Debug)]
pub struct Cache {
    data_dir: PathBuf,
    store: Arc<dyn MetadataStore>,
    events: Events,
    state: Arc<CacheState>,
    // Weak, so that when every requester is gone (Ctrl-C) the fetch is dropped, not parked.
    // Keyed also by whether the job may reuse a current entry (ensure) or must fetch (refresh).
    inflight: Mutex<HashMap<(TableKey, bool), WeakShared<FetchFuture>>>,
}

/// What a purge removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
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
            .current_cache_entry(&connection.id, &record.schema, &record.name)
            .await?;
        let max_age =
            crate::source::CommonOptions::max_age_of(connection.source_type, &connection.config);
        Ok(match (current, max_age) {
            (None, _) => Freshness::Missing,
            (Some(entry), Some(age))
                if chrono::Utc::now() - entry.fetched_at
                    > chrono::Duration::from_std(age).unwrap_or(chrono::Duration::MAX) =>
            {
                Freshness::Stale
            }
            (Some(entry), _) => Freshness::Fresh(entry),
        })
    }

    /// The cache under `data_dir`, committing entries to `store` and keeping up to
    /// `memory_budget` bytes of files decoded in memory.
    pub fn new(
        data_dir: &Path,
        store: Arc<dyn MetadataStore>,
        events: Events,
        memory_budget: u64,
    ) -> Self {
        let memory = Arc::new(MemoryTier::new(memory_budget, events.clone()));
        Cache {
            data_dir: data_dir.to_owned(),
            store,
            events,
            state: Arc::new(CacheState {
                readers: Mutex::default(),
                retired: Mutex::default(),
                memory,
            }),
            inflight: Mutex::default(),
        }
    }

    /// The memory tier of decoded cache files.
    pub fn memory(&self) -> &Arc<MemoryTier> {
        &self.state.memory
    }

    /// The absolute path of a cache entry's file.
    pub fn absolute(&self, entry: &CacheEntry) -> PathBuf {
        self.data_dir.join(&entry.path)
    }

    /// Holds `entry`'s file for reading until the lease is dropped.
    pub fn lease(&self, entry: &CacheEntry) -> CacheLease {
        let path = self.absolute(entry);
        self.state.acquire(&path);
        CacheLease {
            path,
            cache: Arc::clone(&self.state),
        }
    }

    /// Start-up clean-up: deletes temp files, files no entry references, and superseded
    /// entries (no reader can hold them yet). Returns the number of files deleted.
    pub async fn collect_garbage(&self) -> Result<usize> {
        let entries = self.store.all_cache_entries().await?;
        let mut keep = std::collections::HashSet::new();
        for entry in &entries {
            if entry.is_current {
                keep.insert(self.absolute(entry));
            } else {
                self.store.delete_cache_entry(entry).await?;
            }
        }
        let root = self.data_dir.join(CACHE_DIR);
        let mut deleted = 0;
        let mut pending = vec![root];
        while let Some(dir) = pending.pop() {
            let Ok(listing) = std::fs::read_dir(&dir) else {
                continue;
            };
            for item in listing.flatten() {
                let path = item.path();
                if item.file_type().is_ok_and(|t| t.is_dir()) {
                    pending.push(path);
                } else if !keep.contains(&path) {
                    remove_file_logged(&path);
                    deleted += 1;
                }
            }
        }
        if deleted > 0 {
            tracing::info!(deleted, "removed orphaned cache files");
        }
        Ok(deleted)
    }

    /// The current cache entry of `table`, fetching it first if there is none.
    pub async fn ensure(
        &self,
        connection: &Connection,
        source: Arc<dyn Source>,
        table: &TableRecord,
    ) -> Result<CacheEntry> {
        if let Some(entry) = self
            .store
            .current_cache_entry(&connection.id, &table.schema, &table.name)
            .await?
        {
            return Ok(entry);
        }
        self.run(connection, source, table, true).await
    }

    /// Fetches a new version of `table`, or joins a refresh of it already running.
    pub async fn fetch(
        &self,
        connection: &Connection,
        source: Arc<dyn Source>,
        table: &TableRecord,
    ) -> Result<CacheEntry> {
        self.run(connection, source, table, false).await
    }

    /// Runs (or joins) one job per table and mode; `reuse` lets the job return a current
    /// entry published after the caller looked, instead of fetching again.
    async fn run(
        &self,
        connection: &Connection,
        source: Arc<dyn Source>,
        table: &TableRecord,
        reuse: bool,
    ) -> Result<CacheEntry> {
        let key = (
            TableKey {
                connection_id: connection.id.clone(),
                schema: table.schema.clone(),
                table: table.name.clone(),
            },
            reuse,
        );
        let shared = {
            let mut inflight = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
            match inflight.get(&key).and_then(WeakShared::upgrade) {
                Some(running) => running,
                None => {
                    let job = FetchJob {
                        data_dir: self.data_dir.clone(),
                        store: Arc::clone(&self.store),
                        events: self.events.clone(),
                        state: Arc::clone(&self.state),
                        name: TableName::of(connection, table),
                        table: table.clone(),
                        source,
                        reuse,
                    };
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

    /// Removes the cache entries of a connection, or of one schema or table of it.
    pub async fn purge(
        &self,
        connection_id: &ConnectionId,
        schema: Option<&str>,
        table: Option<&str>,
    ) -> Result<PurgeOutcome> {
        let mut outcome = PurgeOutcome::default();
        for entry in self.store.cache_entries(connection_id).await? {
            if schema.is_some_and(|s| s != entry.table_schema)
                || table.is_some_and(|t| t != entry.table_name)
            {
                continue;
            }
            self.store.delete_cache_entry(&entry).await?;
            self.state.retire(self.absolute(&entry));
            outcome.entries_removed += 1;
            outcome.bytes_freed += entry.byte_size.max(0) as u64;
        }
        Ok(outcome)
    }

    /// Deletes the files of entries the store already dropped (e.g. with their connection).
    pub fn retire_files(&self, entries: &[CacheEntry]) {
        for entry in entries {
            self.state.retire(self.absolute(entry));
        }
    }
}

/// One fetch of one table, owning everything it needs so it can outlive its requester.
struct FetchJob {
    data_dir: PathBuf,
    store: Arc<dyn MetadataStore>,
    events: Events,
    state: Arc<CacheState>,
    name: TableName,
    table: TableRecord,
    source: Arc<dyn Source>,
    reuse: bool,
}

/// Deletes the temp file unless the fetch published it. The file is created before the
/// writer thread starts and the thread writes through its handle, so a fetch dropped
/// part-way (every requester went away) leaves nothing: the thread finishes writing an
/// unlinked file.
struct TempFile(Option<PathBuf>);

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            remove_file_logged(&path);
        }
    }
}

impl FetchJob {
    async fn run(self) -> Result<CacheEntry> {
        if self.reuse
            && let Some(entry) = self
                .store
                .current_cache_entry(
                    &self.name.connection_id,
                    &self.table.schema,
                    &self.table.name,
                )
                .await?
        {
            return Ok(entry);
        }
        let label = self.name.to_string();
        self.events.send(Event::FetchStarted {
            table: self.name.clone(),
            row_estimate: self.table.row_estimate,
        });
        let start = Instant::now();
        let result = self.fetch_and_publish(&label).await;
        match &result {
            Ok(entry) => self.events.send(Event::FetchFinished {
                table: self.name.clone(),
                rows: entry.row_count as u64,
                bytes: entry.byte_size as u64,
                elapsed: start.elapsed(),
            }),
            Err(e) => self.events.send(Event::FetchFailed {
                table: self.name.clone(),
                error: e.to_string(),
            }),
        }
        result
    }

    async fn fetch_and_publish(&self, label: &str) -> Result<CacheEntry> {
        let stored = self
            .table
            .arrow_schema
            .as_deref()
            .ok_or_else(|| Error::Fetch {
                table: label.to_owned(),
                message: "the table has no stored schema; run discovery again".into(),
            })?;
        let schema: SchemaRef = Arc::new(schema_from_json(stored, label)?);
        let id = &self.name.connection_id;
        let version = self
            .store
            .next_cache_version(id, &self.table.schema, &self.table.name)
            .await?;
        let relative = PathBuf::from(CACHE_DIR)
            .join(id.as_str())
            .join(path_component(&self.table.schema))
            .join(path_component(&self.table.name));
        let dir = self.data_dir.join(&relative);
        std::fs::create_dir_all(&dir).map_err(Error::io("cannot create the cache folder", &dir))?;
        let file_name = format!("{version}.parquet");
        let final_path = dir.join(&file_name);
        let temp_path = dir.join(format!(".{file_name}.{}{TEMP_SUFFIX}", nanoid::nanoid!(10)));
        let file = std::fs::File::create_new(&temp_path)
            .map_err(Error::io("cannot create the cache file", &temp_path))?;
        let mut temp = TempFile(Some(temp_path.clone()));

        let request = FetchRequest {
            schema: self.table.schema.clone(),
            table: self.table.name.clone(),
            label: label.to_owned(),
            arrow_schema: Arc::clone(&schema),
            source_types: self
                .table
                .columns
                .iter()
                .map(|c| c.source_type.clone())
                .collect(),
        };
        let (sender, receiver) = mpsc::channel(CHANNEL_BATCHES);
        let events = self.events.clone();
        let name = self.name.clone();
        let write_path = temp_path.clone();
        let writer = tokio::task::spawn_blocking(move || {
            let mut last = 0;
            writer::write_parquet(file, &write_path, schema, receiver, |rows| {
                if rows - last >= PROGRESS_EVERY {
                    last = rows;
                    events.send(Event::FetchProgress {
                        table: name.clone(),
                        rows,
                    });
                }
            })
        });
        let fetched = self.source.fetch(&request, sender).await;
        let written = writer.await.map_err(|e| Error::Fetch {
            table: label.to_owned(),
            message: format!("the Parquet writer stopped unexpectedly: {e}"),
        })?;
        fetched?;
        let rows = written?;

        std::fs::rename(&temp_path, &final_path)
            .map_err(Error::io("cannot publish the cache file", &final_path))?;
        temp.0 = None;
        sync_dir(&dir);
        let bytes = std::fs::metadata(&final_path)
            .map_err(Error::io("cannot read the cache file", &final_path))?
            .len();
        let entry = CacheEntry {
            connection_id: id.clone(),
            table_schema: self.table.schema.clone(),
            table_name: self.table.name.clone(),
            version,
            path: relative.join(&file_name).to_string_lossy().into_owned(),
            row_count: rows as i64,
            byte_size: bytes as i64,
            arrow_schema: stored.to_owned(),
            // The store keeps microseconds; so does the returned entry.
            fetched_at: chrono::DateTime::from_timestamp_micros(Utc::now().timestamp_micros())
                .unwrap_or_default(),
            is_current: true,
        };
        let superseded = match self.store.publish_cache_entry(&entry).await {
            Ok(superseded) => superseded,
            Err(e) => {
                remove_file_logged(&final_path);
                return Err(e);
            }
        };
        for old in superseded {
            self.store.delete_cache_entry(&old).await?;
            self.state.retire(self.data_dir.join(&old.path));
        }
        Ok(entry)
    }
}

/// Makes a rename durable; failures only weaken crash safety, so they are logged.
fn sync_dir(dir: &Path) {
    if let Err(e) = std::fs::File::open(dir).and_then(|d| d.sync_all()) {
        tracing::warn!(dir = %dir.display(), error = %e, "could not sync the cache folder");
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn path_components_are_safe() {
        assert_eq!(path_component("public"), "public");
        assert_eq!(path_component("../etc"), "%2E%2E%2Fetc");
        assert_eq!(path_component("Ünï code"), "%C3%9Cn%C3%AF%20code");
    }
}
