//! One fetch of one table: source batches stream into a new file that is completed in its
//! final place (`storage`) and then committed in the store, so a crash leaves the old state
//! or the new one, and a fetch abandoned part-way leaves no file.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use datafusion::arrow::datatypes::SchemaRef;
use tokio::sync::mpsc;

use super::incremental::IncrementalPlan;
use super::storage::{CacheStorage, Committed, NewFile, Scratch, Sink};
use super::writer;
use super::{CACHE_DIR, CacheState, FetchMode};
use crate::connection::SourceType;
use crate::error::{Error, Result};
use crate::events::{Event, Events, TableName};
use crate::refresh::{RefreshKind, RefreshSettings, Refreshed};
use crate::source::{CursorFilter, FetchRequest, Source};
use crate::store::MetadataStore;
use crate::table::{CacheEntry, TableRecord, schema_from_json};

/// Batches buffered between a source and the Parquet writer.
const CHANNEL_BATCHES: usize = 4;
/// Rows between two progress events.
const PROGRESS_EVERY: u64 = 100_000;

/// Encodes a schema or table name as one safe path component: letters, digits and `_`
/// stay, every other byte is `-XX`. No `%`, which object-store keys and URLs would decode.
fn path_component(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'_' {
            out.push(byte as char);
        } else {
            out.push_str(&format!("-{byte:02X}"));
        }
    }
    out
}

/// One fetch of one table, owning everything it needs so it can outlive its requester.
#[derive(Clone)]
pub(super) struct FetchJob {
    pub(super) storage: Arc<CacheStorage>,
    pub(super) store: Arc<dyn MetadataStore>,
    pub(super) events: Events,
    pub(super) state: Arc<CacheState>,
    pub(super) name: TableName,
    pub(super) table: TableRecord,
    pub(super) source: Arc<dyn Source>,
    pub(super) mode: FetchMode,
    /// The table's refresh settings (its own over its connection's).
    pub(super) settings: RefreshSettings,
    /// Its connection's kind, for what incremental refreshes may send it.
    pub(super) source_type: SourceType,
}

impl FetchJob {
    pub(super) async fn run(self) -> Result<CacheEntry> {
        let requested = now_micros();
        if self.mode == FetchMode::Ensure
            && let Some(entry) = self.store.current_cache_entry(&self.name.table).await?
        {
            return Ok(entry);
        }
        let _writing = self.state.writer(&self.name.table).lock_owned().await;
        let _shared = self.store.lock_table(&self.name.table).await?;
        if self.store.is_shared()
            && let Some(entry) = self.made_meanwhile(requested).await?
        {
            return Ok(entry);
        }
        let label = self.name.to_string();
        self.events.send(Event::FetchStarted {
            table: self.name.clone(),
            row_estimate: self.table.row_estimate,
        });
        let start = Instant::now();
        let result = self.refresh(&label, start).await;
        match &result {
            Ok(entry) => self.events.send(Event::FetchFinished {
                table: self.name.clone(),
                rows: entry.row_count as u64,
                bytes: entry.byte_size as u64,
                elapsed: start.elapsed(),
            }),
            Err(e) => {
                if let Err(record) = self
                    .store
                    .record_refresh_error(&self.name.table, &e.to_string())
                    .await
                {
                    tracing::warn!(table = %label, error = %record, "could not record a failed refresh");
                }
                self.events.send(Event::FetchFailed {
                    table: self.name.clone(),
                    error: e.to_string(),
                })
            }
        }
        result
    }

    /// The version another process of a shared store made while this job waited for the
    /// table's lock, if it is what the job was asked for: any version for a first fetch, one
    /// fetched after the request for a refresh (joined, as a refresh running here would be).
    async fn made_meanwhile(&self, requested: chrono::DateTime<Utc>) -> Result<Option<CacheEntry>> {
        let current = self.store.current_cache_entry(&self.name.table).await?;
        Ok(
            current
                .filter(|entry| self.mode != FetchMode::Refresh || entry.fetched_at >= requested),
        )
    }

    /// A refresh of the kind the table's settings ask for: incremental when it has a copy to
    /// add to and no full refresh is due, else a whole fetch.
    async fn refresh(&self, label: &str, start: Instant) -> Result<CacheEntry> {
        if self.mode == FetchMode::Refresh {
            self.check_columns().await?;
        }
        let plan = match self.mode {
            FetchMode::Refresh => {
                IncrementalPlan::new(&self.settings, &self.table, self.source_type, label)?
            }
            _ => None,
        };
        if let Some(plan) = &plan
            && let Some(current) = self.store.current_cache_entry(&self.name.table).await?
        {
            let due = match &plan.full_every {
                // The store's count, not the planning snapshot's: refreshes since it was
                // taken count too.
                Some(every) => {
                    let status = self
                        .store
                        .table(&self.name.table)
                        .await?
                        .map(|t| t.refresh)
                        .unwrap_or_default();
                    every.due(status.since_full, status.full_at, chrono::Utc::now())
                }
                None => false,
            };
            if !due {
                return super::incremental::refresh(self, plan, current, label, start).await;
            }
        }
        self.fetch_and_publish(label, start).await
    }

    /// Fails with [`Error::SchemaChanged`] when the source's columns of the table are no
    /// longer the discovered ones (a refresh would read columns that are not there, or miss
    /// new ones).
    async fn check_columns(&self) -> Result<()> {
        let found = self.source.discover().await?;
        let Some(now) = found
            .iter()
            .find(|t| t.schema == self.table.schema && t.name == self.table.name)
        else {
            // Gone at the source: the fetch says so in the source's words.
            return Ok(());
        };
        let changes = self.table.column_changes(now);
        if changes.is_empty() {
            return Ok(());
        }
        Err(Error::SchemaChanged {
            table: self.name.to_string(),
            connection: self.name.connection_name.clone(),
            changes: changes.join(", "),
        })
    }

    /// The table's stored Arrow schema.
    pub(super) fn schema(&self, label: &str) -> Result<(SchemaRef, &str)> {
        let stored = self
            .table
            .arrow_schema
            .as_deref()
            .ok_or_else(|| Error::Fetch {
                table: label.to_owned(),
                message: "the table has no stored schema; run discovery again".into(),
            })?;
        Ok((Arc::new(schema_from_json(stored, label)?), stored))
    }

    /// The table's cache folder, relative.
    fn folder(&self) -> PathBuf {
        let table = &self.name.table;
        PathBuf::from(CACHE_DIR)
            .join(table.connection_id.as_str())
            .join(path_component(&table.schema))
            .join(path_component(&table.table))
    }

    /// Starts the new file `name` in the table's cache folder.
    pub(super) async fn new_file(&self, name: &str) -> Result<(NewFile, Sink)> {
        self.storage.create(&self.folder(), name).await
    }

    /// A scratch file `name` for the table, never published.
    pub(super) fn scratch(&self, name: &str) -> Result<(Scratch, Sink)> {
        self.storage.scratch(&self.folder(), name)
    }

    /// The request that fetches the table's rows (those `filter` selects, or all).
    pub(super) fn request(
        &self,
        label: &str,
        schema: &SchemaRef,
        filter: Option<CursorFilter>,
    ) -> FetchRequest {
        FetchRequest {
            table: self.name.table.clone(),
            label: label.to_owned(),
            arrow_schema: Arc::clone(schema),
            source_types: self
                .table
                .columns
                .iter()
                .map(|c| c.source_type.clone())
                .collect(),
            filter,
            files: self.table.files.clone().map(Arc::new),
            skipped_rows: Default::default(),
        }
    }

    /// Streams the rows of `request` from the source into `file` (at `path`, for
    /// messages); returns the row count.
    pub(super) async fn fetch_into(
        &self,
        file: Sink,
        path: &Path,
        request: &FetchRequest,
    ) -> Result<u64> {
        let (sender, receiver) = mpsc::channel(CHANNEL_BATCHES);
        let events = self.events.clone();
        let name = self.name.clone();
        let writer = self.spawn_writer(file, path, &request.arrow_schema, receiver, move |rows| {
            events.send(Event::FetchProgress {
                table: name.clone(),
                rows,
            });
        });
        let fetched = self.source.fetch(request, sender).await;
        let written = writer.await.map_err(|e| Error::Fetch {
            table: request.label.clone(),
            message: format!("the Parquet writer stopped unexpectedly: {e}"),
        })?;
        fetched?;
        written
    }

    /// Starts writing the batches `receiver` gets into `file` on a blocking thread.
    pub(super) fn spawn_writer(
        &self,
        file: Sink,
        path: &Path,
        schema: &SchemaRef,
        receiver: mpsc::Receiver<datafusion::arrow::record_batch::RecordBatch>,
        progress: impl Fn(u64) + Send + 'static,
    ) -> tokio::task::JoinHandle<Result<u64>> {
        let write_path = path.to_owned();
        let schema = Arc::clone(schema);
        tokio::task::spawn_blocking(move || {
            let mut last = 0;
            writer::write_parquet(file, &write_path, schema, receiver, |rows| {
                if rows - last >= PROGRESS_EVERY {
                    last = rows;
                    progress(rows);
                }
            })
        })
    }

    /// Makes `entry` current (recording `refreshed` with it; `None` for a compaction, which
    /// changes no rows) and retires the files of the
    /// versions it replaces that it does not share.
    pub(super) async fn publish(
        &self,
        entry: CacheEntry,
        refreshed: Option<&Refreshed>,
        new_file: &Committed,
    ) -> Result<CacheEntry> {
        let superseded = match self.store.publish_cache_entry(&entry, refreshed).await {
            Ok(superseded) => superseded,
            Err(e) => {
                self.storage.delete(Path::new(&new_file.relative));
                return Err(e);
            }
        };
        self.state.published(&entry);
        if self.store.is_shared() {
            // Another process may be reading the versions replaced: they go once their
            // grace period is over.
            super::retention::sweep(self.store.as_ref(), &self.state, Some(&entry.table)).await?;
        } else {
            for old in superseded {
                self.store.delete_cache_entry(&old).await?;
                self.state.retire_files(&old, Some(&entry));
            }
        }
        Ok(entry)
    }

    pub(super) async fn fetch_and_publish(
        &self,
        label: &str,
        start: Instant,
    ) -> Result<CacheEntry> {
        let (schema, stored) = self.schema(label)?;
        let version = self.store.next_cache_version(&self.name.table).await?;
        let (mut target, file) = self.new_file(&format!("{version}.parquet")).await?;
        let request = self.request(label, &schema, None);
        let rows = match self.fetch_into(file, target.relative(), &request).await {
            Ok(rows) => rows,
            Err(e) => return Err(target.explain(e).await),
        };
        let file = target.commit().await?;
        let entry = CacheEntry {
            table: self.name.table.clone(),
            version,
            path: file.relative.clone(),
            deltas: Vec::new(),
            row_count: rows as i64,
            byte_size: file.bytes,
            arrow_schema: stored.to_owned(),
            fetched_at: now_micros(),
            is_current: true,
            skipped_rows: request
                .skipped_rows
                .load(std::sync::atomic::Ordering::Relaxed) as i64,
        };
        let refreshed = Refreshed {
            kind: RefreshKind::Full,
            rows: rows as i64,
            duration: start.elapsed(),
            at: entry.fetched_at,
        };
        self.publish(entry, Some(&refreshed), &file).await
    }
}

/// Now, to the microsecond the store keeps.
pub(super) fn now_micros() -> chrono::DateTime<Utc> {
    chrono::DateTime::from_timestamp_micros(Utc::now().timestamp_micros()).unwrap_or_default()
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn path_components_are_safe() {
        assert_eq!(path_component("public"), "public");
        assert_eq!(path_component("my_table"), "my_table");
        assert_eq!(path_component("../etc"), "-2E-2E-2Fetc");
        assert_eq!(path_component("a-b%"), "a-2Db-25");
        assert_eq!(path_component("Ünï code"), "-C3-9Cn-C3-AF-20code");
    }
}
