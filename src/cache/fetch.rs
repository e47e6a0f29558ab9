//! One fetch of one table: source batches stream into a temp file beside the final place,
//! which is fsynced, renamed and then committed in the store, so a crash leaves the old
//! state or the new one, and a fetch abandoned part-way leaves no file.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use datafusion::arrow::datatypes::SchemaRef;
use tokio::sync::mpsc;

use super::{CACHE_DIR, CacheState, FetchMode};
use super::{remove_file_logged, writer};
use crate::error::{Error, Result};
use crate::events::{Event, Events, TableName};
use crate::source::{FetchRequest, Source};
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
pub(super) struct FetchJob {
    pub(super) data_dir: PathBuf,
    pub(super) store: Arc<dyn MetadataStore>,
    pub(super) events: Events,
    pub(super) state: Arc<CacheState>,
    pub(super) name: TableName,
    pub(super) table: TableRecord,
    pub(super) source: Arc<dyn Source>,
    pub(super) mode: FetchMode,
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
        let table = &self.name.table;
        let version = self.store.next_cache_version(table).await?;
        let relative = PathBuf::from(CACHE_DIR)
            .join(table.connection_id.as_str())
            .join(path_component(&table.schema))
            .join(path_component(&table.table));
        let dir = self.data_dir.join(&relative);
        std::fs::create_dir_all(&dir).map_err(Error::io("cannot create the cache folder", &dir))?;
        let file_name = format!("{version}.parquet");
        let final_path = dir.join(&file_name);
        let temp_path = dir.join(format!(".{file_name}.{}{TEMP_SUFFIX}", nanoid::nanoid!(10)));
        let file = std::fs::File::create_new(&temp_path)
            .map_err(Error::io("cannot create the cache file", &temp_path))?;
        let mut temp = TempFile(Some(temp_path.clone()));

        let request = FetchRequest {
            table: table.clone(),
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
            table: table.clone(),
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
        self.state.published(&entry);
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
mod unit {
    use super::*;

    #[test]
    fn path_components_are_safe() {
        assert_eq!(path_component("public"), "public");
        assert_eq!(path_component("../etc"), "%2E%2E%2Fetc");
        assert_eq!(path_component("Ünï code"), "%C3%9Cn%C3%AF%20code");
    }
}
