//! One fetch of one table: source batches stream into a temp file beside the final place,
//! which is fsynced, renamed and then committed in the store, so a crash leaves the old
//! state or the new one, and a fetch abandoned part-way leaves no file.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use datafusion::arrow::datatypes::SchemaRef;
use tokio::sync::mpsc;

use super::incremental::IncrementalPlan;
use super::{CACHE_DIR, CacheState, FetchMode};
use super::{remove_file_logged, writer};
use crate::connection::SourceType;
use crate::error::{Error, Result};
use crate::events::{Event, Events, TableName};
use crate::refresh::{RefreshKind, RefreshSettings, Refreshed};
use crate::source::{CursorFilter, FetchRequest, Source};
use crate::store::MetadataStore;
use crate::table::{CacheEntry, TableRecord, schema_from_json};

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

/// One fetch of one table, owning everything it needs so it can outlive its requester.
#[derive(Clone)]
pub(super) struct FetchJob {
    pub(super) data_dir: PathBuf,
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

/// A file being written for a new version: its temp path, final path and relative path.
pub(super) struct NewFile {
    relative: String,
    final_path: PathBuf,
    temp: TempFile,
    dir: PathBuf,
}

impl NewFile {
    /// The temp file's path, to read it back before it is committed or dropped.
    pub(super) fn temp_path(&self) -> PathBuf {
        self.temp.0.clone().expect("not committed yet")
    }

    /// Renames the finished temp file to its final name.
    pub(super) fn commit(mut self) -> Result<Committed> {
        let temp = self.temp.0.take().expect("a new file is committed once");
        std::fs::rename(&temp, &self.final_path)
            .map_err(Error::io("cannot publish the cache file", &self.final_path))?;
        sync_dir(&self.dir);
        let bytes = std::fs::metadata(&self.final_path)
            .map_err(Error::io("cannot read the cache file", &self.final_path))?
            .len() as i64;
        Ok(Committed {
            relative: self.relative,
            path: self.final_path,
            bytes,
        })
    }
}

/// A file renamed into place, not yet in any published version.
pub(super) struct Committed {
    /// Its path relative to the data dir, as entries name files.
    pub(super) relative: String,
    /// Its absolute path, deleted if publishing fails.
    pub(super) path: PathBuf,
    /// Its size.
    pub(super) bytes: i64,
}

impl FetchJob {
    pub(super) async fn run(self) -> Result<CacheEntry> {
        if self.mode == FetchMode::Ensure
            && let Some(entry) = self.store.current_cache_entry(&self.name.table).await?
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

    /// A refresh of the kind the table's settings ask for: incremental when it has a copy to
    /// add to and no full refresh is due, else a whole fetch.
    async fn refresh(&self, label: &str, start: Instant) -> Result<CacheEntry> {
        let _writing = self.state.writer(&self.name.table).lock_owned().await;
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

    /// Creates the temp file of `name` (a file name) in the table's cache folder.
    pub(super) fn new_file(&self, name: &str) -> Result<(NewFile, std::fs::File)> {
        let table = &self.name.table;
        let relative = PathBuf::from(CACHE_DIR)
            .join(table.connection_id.as_str())
            .join(path_component(&table.schema))
            .join(path_component(&table.table));
        let dir = self.data_dir.join(&relative);
        std::fs::create_dir_all(&dir).map_err(Error::io("cannot create the cache folder", &dir))?;
        let final_path = dir.join(name);
        let temp_path = dir.join(format!(".{name}.{}{TEMP_SUFFIX}", nanoid::nanoid!(10)));
        let file = std::fs::File::create_new(&temp_path)
            .map_err(Error::io("cannot create the cache file", &temp_path))?;
        Ok((
            NewFile {
                relative: relative.join(name).to_string_lossy().into_owned(),
                final_path,
                temp: TempFile(Some(temp_path)),
                dir,
            },
            file,
        ))
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

    /// Streams the rows of `request` from the source into `file`; returns the row count.
    pub(super) async fn fetch_into(
        &self,
        file: std::fs::File,
        target: &NewFile,
        request: &FetchRequest,
    ) -> Result<u64> {
        let (sender, receiver) = mpsc::channel(CHANNEL_BATCHES);
        let events = self.events.clone();
        let name = self.name.clone();
        let writer =
            self.spawn_writer(file, target, &request.arrow_schema, receiver, move |rows| {
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
        file: std::fs::File,
        target: &NewFile,
        schema: &SchemaRef,
        receiver: mpsc::Receiver<datafusion::arrow::record_batch::RecordBatch>,
        progress: impl Fn(u64) + Send + 'static,
    ) -> tokio::task::JoinHandle<Result<u64>> {
        let write_path = target.temp.0.clone().expect("not committed yet");
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
        new_file: &Path,
    ) -> Result<CacheEntry> {
        let superseded = match self.store.publish_cache_entry(&entry, refreshed).await {
            Ok(superseded) => superseded,
            Err(e) => {
                remove_file_logged(new_file);
                return Err(e);
            }
        };
        self.state.published(&entry);
        for old in superseded {
            self.store.delete_cache_entry(&old).await?;
            self.state.retire_files(&self.data_dir, &old, Some(&entry));
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
        let (target, file) = self.new_file(&format!("{version}.parquet"))?;
        let request = self.request(label, &schema, None);
        let rows = self.fetch_into(file, &target, &request).await?;
        let file = target.commit()?;
        let entry = CacheEntry {
            table: self.name.table.clone(),
            version,
            path: file.relative,
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
        self.publish(entry, Some(&refreshed), &file.path).await
    }
}

/// Now, to the microsecond the store keeps.
pub(super) fn now_micros() -> chrono::DateTime<Utc> {
    chrono::DateTime::from_timestamp_micros(Utc::now().timestamp_micros()).unwrap_or_default()
}

/// Makes a rename durable; failures only weaken crash safety, so they are logged.
fn sync_dir(dir: &Path) {
    if let Err(e) = std::fs::File::open(dir).and_then(|d| d.sync_all()) {
        tracing::warn!(dir = %dir.display(), error = %e, "could not sync the cache folder");
    }
}

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
