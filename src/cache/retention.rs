//! How long replaced versions and unpublished files stay. On a store only this process
//! uses, a superseded version goes when its last reader here is done, and start-up
//! clean-up deletes every file no current version references. On a shared store, another
//! process may still be reading a superseded version, or be about to publish a file it just
//! wrote: both are kept for a grace period, and only then deleted, by whichever process
//! sweeps first.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use super::CacheState;
use crate::error::Result;
use crate::store::MetadataStore;
use crate::table::{CacheEntry, TableRef};

/// How long a shared store keeps a superseded version, and how old a file no version
/// references must be before start-up clean-up deletes it: longer than any scan of an old
/// version, and than any fetch between writing its file and publishing it.
pub const SHARED_GRACE: Duration = Duration::from_secs(60 * 60);

/// The grace period on `store`: none on a store no other process uses.
pub(super) fn grace(store: &dyn MetadataStore, state: &CacheState) -> Duration {
    if store.is_shared() {
        state.grace
    } else {
        Duration::ZERO
    }
}

/// The moment before which a change is past the grace period.
pub(super) fn cutoff(grace: Duration) -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now() - chrono::Duration::from_std(grace).unwrap_or(chrono::Duration::MAX)
}

/// Deletes the versions of `table` (of every table when `None`) superseded longer ago than
/// the grace period, and retires their files that no remaining version shares.
pub(super) async fn sweep(
    store: &dyn MetadataStore,
    state: &CacheState,
    table: Option<&TableRef>,
) -> Result<()> {
    let expired = store
        .expired_cache_entries(table, cutoff(state.grace))
        .await?;
    if expired.is_empty() {
        return Ok(());
    }
    for entry in &expired {
        store.delete_cache_entry(entry).await?;
    }
    // Read after the deletes: a version published meanwhile is among the remaining.
    let mut remaining: HashSet<String> = HashSet::new();
    let mut connections: Vec<_> = expired.iter().map(|e| &e.table.connection_id).collect();
    connections.dedup();
    for connection in connections {
        for entry in store.cache_entries(connection).await? {
            remaining.extend(entry.files().map(str::to_owned));
        }
    }
    for entry in &expired {
        state.unpublished(entry);
        for file in entry.files() {
            if !remaining.contains(file) {
                state.retire(PathBuf::from(file));
            }
        }
    }
    tracing::info!(
        versions = expired.len(),
        "deleted superseded cache versions past their grace period"
    );
    Ok(())
}

/// What start-up clean-up keeps and deletes, given every entry in the store, those past
/// the grace period among the superseded ones, and the files found with their last change.
pub(super) struct Plan {
    /// Entries to delete from the store.
    pub(super) forget: Vec<CacheEntry>,
    /// How many of those were current (their files are missing).
    pub(super) forgotten_current: usize,
    /// Files to delete.
    pub(super) delete: Vec<PathBuf>,
}

/// Plans start-up clean-up. A current version whose files are all present is kept; a
/// superseded one is kept while in its grace period; every other entry is forgotten. A file
/// no kept entry references is deleted once it is older than `cutoff` (at once on a private
/// store, whose cutoff is now).
pub(super) fn plan(
    entries: Vec<CacheEntry>,
    expired: &HashSet<(TableRef, i64)>,
    present: Vec<super::storage::Listed>,
    cutoff: chrono::DateTime<chrono::Utc>,
) -> Plan {
    let found: HashSet<&PathBuf> = present.iter().map(|l| &l.path).collect();
    let mut keep: HashSet<PathBuf> = HashSet::new();
    let mut forget = Vec::new();
    let mut forgotten_current = 0;
    for entry in entries {
        let files: Vec<PathBuf> = entry.files().map(PathBuf::from).collect();
        let kept = if entry.is_current {
            files.iter().all(|f| found.contains(f))
        } else {
            !expired.contains(&(entry.table.clone(), entry.version))
        };
        if kept {
            keep.extend(files);
        } else {
            forgotten_current += usize::from(entry.is_current);
            forget.push(entry);
        }
    }
    let delete = present
        .into_iter()
        .filter(|l| !keep.contains(&l.path) && l.modified.is_none_or(|m| m < cutoff))
        .map(|l| l.path)
        .collect();
    Plan {
        forget,
        forgotten_current,
        delete,
    }
}

#[cfg(test)]
mod tests {
    use super::super::storage::Listed;
    use super::*;
    use crate::id::ConnectionId;

    fn entry(table: &TableRef, version: i64, current: bool) -> CacheEntry {
        CacheEntry {
            table: table.clone(),
            version,
            path: format!("cache/t/{version}.parquet"),
            deltas: Vec::new(),
            row_count: 1,
            byte_size: 1,
            arrow_schema: String::new(),
            fetched_at: chrono::Utc::now(),
            is_current: current,
            skipped_rows: 0,
        }
    }

    fn listed(path: &str, age: i64) -> Listed {
        Listed {
            path: PathBuf::from(path),
            modified: Some(chrono::Utc::now() - chrono::Duration::seconds(age)),
        }
    }

    #[test]
    fn a_shared_store_keeps_superseded_versions_and_new_files_for_the_grace_period() {
        let table = TableRef {
            connection_id: ConnectionId::generate(),
            schema: "s".into(),
            table: "t".into(),
        };
        let entries = vec![
            entry(&table, 1, false), // past its grace period
            entry(&table, 2, false), // still in it
            entry(&table, 3, true),
        ];
        let expired = HashSet::from([(table.clone(), 1)]);
        let present = vec![
            listed("cache/t/1.parquet", 7200),
            listed("cache/t/2.parquet", 7200),
            listed("cache/t/3.parquet", 10),
            listed("cache/t/4.parquet", 10), // another process's, not yet published
            listed("cache/t/.9.tmp", 7200),  // left by a process that died long ago
        ];
        let plan = plan(
            entries,
            &expired,
            present,
            chrono::Utc::now() - chrono::Duration::seconds(3600),
        );
        assert_eq!(
            plan.forget.iter().map(|e| e.version).collect::<Vec<_>>(),
            [1]
        );
        assert_eq!(plan.forgotten_current, 0);
        let mut deleted = plan.delete;
        deleted.sort();
        assert_eq!(
            deleted,
            [
                PathBuf::from("cache/t/.9.tmp"),
                PathBuf::from("cache/t/1.parquet")
            ]
        );
    }

    #[test]
    fn a_current_version_with_a_missing_file_is_forgotten() {
        let table = TableRef {
            connection_id: ConnectionId::generate(),
            schema: "s".into(),
            table: "t".into(),
        };
        let plan = plan(
            vec![entry(&table, 1, true)],
            &HashSet::new(),
            vec![listed("cache/t/0.parquet", 0)],
            chrono::Utc::now() + chrono::Duration::seconds(1),
        );
        assert_eq!(plan.forgotten_current, 1);
        assert_eq!(plan.delete, [PathBuf::from("cache/t/0.parquet")]);
    }
}
