//! Compaction: a version made of a base file and delta files is rewritten as one file, in
//! the background, as a new version. Readers of the old version keep its files until they
//! finish; a version replaced meanwhile (by a refresh) is left alone.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::record_batch::RecordBatch;
use futures::StreamExt;
use tokio::sync::mpsc;

use super::fetch::FetchJob;
use super::storage::CacheStorage;
use crate::error::{Error, Result};
use crate::events::Event;
use crate::table::CacheEntry;

/// Delta files a version may have before it is compacted.
const MAX_DELTAS: usize = 10;
/// Share of the base file's bytes the deltas may reach before it is compacted (1 in 4).
const MAX_DELTA_SHARE: u64 = 4;

/// Whether `entry` has enough deltas, by count or by share of the base, to compact.
pub(super) async fn due(storage: &CacheStorage, entry: &CacheEntry) -> bool {
    if entry.deltas.is_empty() {
        return false;
    }
    let base = storage.size(Path::new(&entry.path)).await.unwrap_or(0);
    let deltas = (entry.byte_size.max(0) as u64).saturating_sub(base);
    entry.deltas.len() > MAX_DELTAS || deltas * MAX_DELTA_SHARE > base
}

/// Compacts version `version` of the job's table in the background.
pub(super) fn start(job: FetchJob, version: i64) {
    tokio::spawn(async move {
        let label = job.name.to_string();
        if let Err(e) = compact(&job, Some(version)).await {
            tracing::warn!(table = %label, error = %e, "compaction failed; the deltas stay");
        }
    });
}

/// Rewrites the table's current version (only if it is `version`, when given) as one file
/// and publishes it. Returns the new version, or `None` when there was nothing to do.
pub(super) async fn compact(job: &FetchJob, version: Option<i64>) -> Result<Option<CacheEntry>> {
    let table = &job.name.table;
    let _writing = job.state.writer(table).lock_owned().await;
    let _shared = job.store.lock_table(table).await?;
    let Some(current) = job.store.current_cache_entry(table).await? else {
        return Ok(None);
    };
    if current.deltas.is_empty() || version.is_some_and(|v| v != current.version) {
        return Ok(None);
    }
    let label = job.name.to_string();
    let (schema, stored) = job.schema(&label)?;
    if current.arrow_schema != stored {
        return Ok(None);
    }
    let held = job
        .state
        .lease(current.files().map(PathBuf::from).collect());
    let next = job.store.next_cache_version(table).await?;
    let (mut target, file) = job.new_file(&format!("{next}.parquet")).await?;
    let (sender, receiver) = mpsc::channel(4);
    let writer = job.spawn_writer(file, target.relative(), &schema, receiver, |_| {});
    // One partition, so the rows keep their order: base first, then each delta.
    let ctx = job.storage.session(1);
    let read = async {
        let mut stream = ctx
            .read_table(Arc::new(held.table(Arc::clone(&schema))?))?
            .execute_stream()
            .await?;
        while let Some(batch) = stream.next().await {
            let batch = RecordBatch::try_new(Arc::clone(&schema), batch?.columns().to_vec())
                .map_err(|e| Error::Sql(e.into()))?;
            if sender.send(batch).await.is_err() {
                break;
            }
        }
        Ok::<_, Error>(())
    };
    let read = read.await;
    drop(sender);
    let written = writer.await.map_err(|e| Error::Fetch {
        table: label.clone(),
        message: format!("the Parquet writer stopped unexpectedly: {e}"),
    })?;
    read?;
    let rows = match written {
        Ok(rows) => rows as i64,
        Err(e) => return Err(target.explain(e).await),
    };
    if rows != current.row_count {
        return Err(Error::Fetch {
            table: label,
            message: format!(
                "compaction read {rows} rows where the copy holds {}; the copy is kept as it was",
                current.row_count
            ),
        });
    }
    let file = target.commit().await?;
    let files = current.deltas.len() + 1;
    let entry = CacheEntry {
        version: next,
        path: file.relative.clone(),
        deltas: Vec::new(),
        byte_size: file.bytes,
        // The rows are as old as they were: max_age still counts from their refresh.
        ..current
    };
    let entry = job.publish(entry, None, &file).await?;
    job.events.send(Event::CacheCompacted {
        table: job.name.clone(),
        files,
        version: entry.version,
    });
    Ok(Some(entry))
}
