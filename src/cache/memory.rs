//! The memory tier: cache files that queries read, kept decoded as Arrow batches within a
//! byte budget, so later statements skip Parquet decoding (the TPC-H queries ran 1.9x faster
//! on decoded batches than on the files). A resident copy is keyed by its file's path,
//! which names one version of a table: a refreshed table has a new path, so a copy is never
//! stale. The least recently read files leave first when a new one needs room, a retired
//! (purged, refreshed, dropped) file's copy is dropped at once, and loading a table's newer
//! version drops any older copy of it.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use bytes::Bytes;
use datafusion::arrow::array::{ArrayRef, UInt64Array};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::ScalarValue;
use datafusion::functions_aggregate::min_max::{MaxAccumulator, MinAccumulator};
use datafusion::logical_expr::Accumulator;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use datafusion::parquet::errors::ParquetError;
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};

use super::CacheLease;
use super::storage::CacheStorage;
use crate::error::{Error, Result};
use crate::events::{Event, Events, TableName};

type LoadFuture = Shared<BoxFuture<'static, Option<u64>>>;
/// Rows per decoded batch: DataFusion's own batch size (the reader's default is 1024, and
/// small batches cost every operator above the scan per-batch overhead).
const BATCH_ROWS: usize = 8192;
/// Row groups by number, each with its batches.
type DecodedGroups = Vec<(usize, Vec<(RecordBatch, Vec<ColumnRange>)>)>;

/// Decoded copies of hot cache files, within a byte budget.
#[derive(Debug)]
pub struct MemoryTier {
    budget: u64,
    events: Events,
    storage: Arc<CacheStorage>,
    state: Mutex<TierState>,
}

#[derive(Default)]
struct TierState {
    resident: HashMap<PathBuf, Resident>,
    used: u64,
    // A counter standing in for time: the resident copy with the lowest mark leaves first.
    clock: u64,
    loading: HashMap<PathBuf, LoadFuture>,
    // Files that did not fit the whole budget: not decoded again on every scan.
    too_big: HashSet<PathBuf>,
}

impl std::fmt::Debug for TierState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TierState")
            .field("resident", &self.resident.len())
            .field("used", &self.used)
            .field("loading", &self.loading.len())
            .finish()
    }
}

struct Resident {
    file: Arc<ResidentFile>,
    bytes: u64,
    last_read: u64,
}

/// A decoded cache file: its batches in file order, and each batch's value ranges so a
/// scan can skip the batches a filter rules out.
#[derive(Debug)]
pub struct ResidentFile {
    /// The batches, with the table's schema.
    pub batches: Vec<RecordBatch>,
    /// Per column (table order): each batch's minimum, or `None` if not computable.
    pub mins: Vec<Option<ArrayRef>>,
    /// Per column: each batch's maximum.
    pub maxs: Vec<Option<ArrayRef>>,
    /// Per column: each batch's null count (UInt64).
    pub null_counts: Vec<ArrayRef>,
    /// Each batch's row count (UInt64).
    pub row_counts: ArrayRef,
}

impl ResidentFile {
    /// Gathers the per-batch ranges into arrays per column.
    fn new(batches: Vec<RecordBatch>, ranges: Vec<Vec<ColumnRange>>, schema: &SchemaRef) -> Self {
        let columns = schema.fields().len();
        let column = |c: usize, pick: fn(&ColumnRange) -> &ScalarValue| {
            ScalarValue::iter_to_array(ranges.iter().map(|r| pick(&r[c]).clone())).ok()
        };
        ResidentFile {
            mins: (0..columns).map(|c| column(c, |r| &r.min)).collect(),
            maxs: (0..columns).map(|c| column(c, |r| &r.max)).collect(),
            null_counts: (0..columns)
                .map(|c| {
                    Arc::new(UInt64Array::from_iter_values(
                        ranges.iter().map(|r| r[c].nulls),
                    )) as ArrayRef
                })
                .collect(),
            row_counts: Arc::new(UInt64Array::from_iter_values(
                batches.iter().map(|b| b.num_rows() as u64),
            )),
            batches,
        }
    }
}

impl ResidentFile {
    /// The files of one version read as one: batches in file order, ranges alongside.
    fn concat(files: &[Arc<ResidentFile>]) -> Option<ResidentFile> {
        use datafusion::arrow::compute::concat;
        let first = files.first()?;
        let per_column = |pick: fn(&ResidentFile) -> &Vec<Option<ArrayRef>>| {
            (0..pick(first).len())
                .map(|c| {
                    let arrays = files
                        .iter()
                        .map(|f| pick(f)[c].as_deref())
                        .collect::<Option<Vec<_>>>()?;
                    concat(&arrays).ok()
                })
                .collect::<Vec<_>>()
        };
        let null_counts = (0..first.null_counts.len())
            .map(|c| {
                concat(
                    &files
                        .iter()
                        .map(|f| f.null_counts[c].as_ref())
                        .collect::<Vec<_>>(),
                )
            })
            .collect::<std::result::Result<Vec<_>, _>>()
            .ok()?;
        Some(ResidentFile {
            batches: files
                .iter()
                .flat_map(|f| f.batches.iter().cloned())
                .collect(),
            mins: per_column(|f| &f.mins),
            maxs: per_column(|f| &f.maxs),
            null_counts,
            row_counts: concat(
                &files
                    .iter()
                    .map(|f| f.row_counts.as_ref())
                    .collect::<Vec<_>>(),
            )
            .ok()?,
        })
    }
}

/// One column's range in one batch (nulls when it cannot be computed).
struct ColumnRange {
    min: ScalarValue,
    max: ScalarValue,
    nulls: u64,
}

/// The ranges of every column of `batch`.
fn ranges(batch: &RecordBatch) -> Vec<ColumnRange> {
    batch
        .columns()
        .iter()
        .map(|array| {
            let (min, max) = extremes(array);
            ColumnRange {
                min,
                max,
                nulls: array.null_count() as u64,
            }
        })
        .collect()
}

/// The smallest and largest value in `array` (typed nulls when they cannot be computed).
pub fn extremes(array: &ArrayRef) -> (ScalarValue, ScalarValue) {
    let extreme = |mut acc: Box<dyn Accumulator>| {
        acc.update_batch(std::slice::from_ref(array))
            .and_then(|()| acc.evaluate())
            .ok()
    };
    let unknown = || ScalarValue::try_from(array.data_type()).unwrap_or(ScalarValue::Null);
    let min = MinAccumulator::try_new(array.data_type())
        .ok()
        .and_then(|a| extreme(Box::new(a)))
        .unwrap_or_else(unknown);
    let max = MaxAccumulator::try_new(array.data_type())
        .ok()
        .and_then(|a| extreme(Box::new(a)))
        .unwrap_or_else(unknown);
    (min, max)
}

impl MemoryTier {
    /// A tier holding at most `budget` bytes of decoded batches (0 turns it off), read
    /// from the files in `storage`.
    pub fn new(budget: u64, events: Events, storage: Arc<CacheStorage>) -> Self {
        MemoryTier {
            budget,
            events,
            storage,
            state: Mutex::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, TierState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The byte budget.
    pub fn budget(&self) -> u64 {
        self.budget
    }

    /// Bytes of decoded batches held now.
    pub fn used(&self) -> u64 {
        self.lock().used
    }

    /// Bytes held for the file at `path`, if it is resident.
    pub fn resident_bytes(&self, path: &Path) -> Option<u64> {
        self.lock().resident.get(path).map(|r| r.bytes)
    }

    /// The decoded file at `path`, marking it as just read.
    pub fn get(&self, path: &Path) -> Option<Arc<ResidentFile>> {
        let mut state = self.lock();
        state.clock += 1;
        let now = state.clock;
        state.resident.get_mut(path).map(|r| {
            r.last_read = now;
            Arc::clone(&r.file)
        })
    }

    /// Drops the copy of the file at `path` (and any load of it under way).
    pub fn remove(&self, path: &Path) {
        let mut state = self.lock();
        state.loading.remove(path);
        state.too_big.remove(path);
        if let Some(gone) = state.resident.remove(path) {
            state.used -= gone.bytes;
        }
    }

    /// The decoded files of `lease`'s version as one, if every one is resident, marking them
    /// as just read.
    pub fn get_version(&self, lease: &CacheLease) -> Option<Arc<ResidentFile>> {
        let files = lease
            .paths()
            .iter()
            .map(|p| self.get(p))
            .collect::<Option<Vec<_>>>()?;
        match files.as_slice() {
            [one] => Some(Arc::clone(one)),
            many => ResidentFile::concat(many).map(Arc::new),
        }
    }

    /// Starts decoding the leased files into memory unless resident, loading, or too big;
    /// returns at once. The statement that asks keeps reading the files.
    pub fn load_in_background(
        self: &Arc<Self>,
        lease: &CacheLease,
        schema: SchemaRef,
        table: TableName,
    ) {
        for path in lease.paths() {
            if let Some(load) = self.start_load(path, lease.paths(), schema.clone(), table.clone())
            {
                tokio::spawn(load);
            }
        }
    }

    /// Decodes the leased files into memory (or waits for the loads under way) and returns
    /// the bytes they hold, or `None` when the tier is off or they do not fit.
    pub async fn load(
        self: &Arc<Self>,
        lease: &CacheLease,
        schema: SchemaRef,
        table: TableName,
    ) -> Option<u64> {
        let mut total = 0;
        for path in lease.paths() {
            // Spawned, so the load finishes even if this caller stops waiting.
            if let Some(load) = self.start_load(path, lease.paths(), schema.clone(), table.clone())
            {
                tokio::spawn(load);
            }
            let running = self.lock().loading.get(path).cloned();
            total += match running {
                Some(load) => load.await,
                None => self.resident_bytes(path),
            }?;
        }
        Some(total)
    }

    /// Registers a load of the leased file; returns it if this call started it. A local
    /// file is opened now, while the lease guarantees it exists: the open handle keeps its
    /// bytes readable even if the file is retired meanwhile, so a load never delays a
    /// deletion. (An object deleted before its load reads it is simply not loaded: it is
    /// retired, so its copy is unwanted.)
    fn start_load(
        self: &Arc<Self>,
        path: &Path,
        version: &[PathBuf],
        schema: SchemaRef,
        table: TableName,
    ) -> Option<LoadFuture> {
        let path = path.to_owned();
        let mut state = self.lock();
        if self.budget == 0
            || state.resident.contains_key(&path)
            || state.loading.contains_key(&path)
            || state.too_big.contains(&path)
        {
            return None;
        }
        let file = match self.storage.open_file(&path) {
            Ok(file) => file,
            Err(e) => {
                tracing::warn!(%table, error = %e, "could not open a cache file to load it into memory");
                return None;
            }
        };
        // Files of one table share a folder: a file no longer in the version read (left by
        // another process sharing the store, which refreshed the table) is of no more use.
        let older: Vec<PathBuf> = state
            .resident
            .keys()
            .filter(|p| p.parent() == path.parent() && !version.contains(p))
            .cloned()
            .collect();
        for old in older {
            if let Some(gone) = state.resident.remove(&old) {
                state.used -= gone.bytes;
            }
        }
        let tier = Arc::clone(self);
        let key = path.clone();
        let load: LoadFuture = async move {
            let start = Instant::now();
            let budget = tier.budget;
            let decoding = key.clone();
            let decoded = match file.bytes().await {
                Ok(data) => {
                    tokio::task::spawn_blocking(move || decode(data, &decoding, &schema, budget))
                        .await
                        .unwrap_or_else(|e| {
                            Err(Error::CacheFile {
                                path: key.clone(),
                                message: format!("the memory load stopped unexpectedly: {e}"),
                            })
                        })
                }
                Err(e) => Err(e),
            };
            let batches = match decoded {
                Ok(batches) => batches,
                Err(e) => {
                    tracing::warn!(%table, error = %e, "could not load a cache file into memory");
                    tier.lock().loading.remove(&key);
                    return None;
                }
            };
            let bytes = tier.admit(&key, batches)?;
            tier.events.send(Event::TableInMemory {
                table,
                bytes,
                elapsed: start.elapsed(),
            });
            Some(bytes)
        }
        .boxed()
        .shared();
        state.loading.insert(path, load.clone());
        Some(load)
    }

    /// Makes decoded batches resident, evicting the least recently read copies to make
    /// room; `None` (nothing kept) if the file was retired meanwhile or exceeds the budget.
    fn admit(&self, path: &Path, file: Option<ResidentFile>) -> Option<u64> {
        let mut state = self.lock();
        // Removed while it was decoding: the file is retired, its copy is unwanted.
        let _running = state.loading.remove(path)?;
        let Some(file) = file else {
            state.too_big.insert(path.to_owned());
            return None;
        };
        let bytes: u64 = file
            .batches
            .iter()
            .map(|b| b.get_array_memory_size() as u64)
            .sum();
        if bytes > self.budget {
            state.too_big.insert(path.to_owned());
            return None;
        }
        while state.used + bytes > self.budget {
            let Some(oldest) = state
                .resident
                .iter()
                .min_by_key(|(_, r)| r.last_read)
                .map(|(p, _)| p.clone())
            else {
                break;
            };
            if let Some(gone) = state.resident.remove(&oldest) {
                state.used -= gone.bytes;
                tracing::debug!(path = %oldest.display(), bytes = gone.bytes, "evicted from memory");
            }
        }
        state.clock += 1;
        let last_read = state.clock;
        state.used += bytes;
        state.resident.insert(
            path.to_owned(),
            Resident {
                file: Arc::new(file),
                bytes,
                last_read,
            },
        );
        Some(bytes)
    }
}

/// Reads a whole cache file as batches of `schema`, its row groups spread over the cores;
/// `None` once the batches exceed `budget` bytes (decoding stops there).
fn decode(
    data: Bytes,
    path: &Path,
    schema: &SchemaRef,
    budget: u64,
) -> Result<Option<ResidentFile>> {
    let damaged = |message: String| Error::CacheFile {
        path: path.to_owned(),
        message,
    };
    let parquet = |e: ParquetError| damaged(e.to_string());
    let arrow = |e: ArrowError| damaged(e.to_string());
    let groups = ParquetRecordBatchReaderBuilder::try_new(data.clone())
        .map_err(parquet)?
        .metadata()
        .num_row_groups();
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(groups.max(1));
    let total = AtomicU64::new(0);
    let over = || total.load(Ordering::Relaxed) > budget;
    // Thread t decodes row groups t, t + threads, ...; they go back in file order after.
    let decode_groups = |t: usize| -> Result<DecodedGroups> {
        let mut out = Vec::new();
        for group in (t..groups).step_by(threads) {
            if over() {
                break;
            }
            let reader = ParquetRecordBatchReaderBuilder::try_new(data.clone())
                .map_err(parquet)?
                .with_row_groups(vec![group])
                .with_batch_size(BATCH_ROWS)
                .build()
                .map_err(parquet)?;
            let mut batches = Vec::new();
            for batch in reader {
                // The table's schema (field metadata and all), as scans announce it.
                let batch = RecordBatch::try_new(
                    Arc::clone(schema),
                    batch.map_err(arrow)?.columns().to_vec(),
                )
                .map_err(arrow)?;
                total.fetch_add(batch.get_array_memory_size() as u64, Ordering::Relaxed);
                let ranges = ranges(&batch);
                batches.push((batch, ranges));
            }
            out.push((group, batches));
        }
        Ok(out)
    };
    let decode_groups = &decode_groups;
    let per_thread: Vec<Result<DecodedGroups>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|t| scope.spawn(move || decode_groups(t)))
            .collect();
        workers
            .into_iter()
            .map(|w| {
                w.join()
                    .unwrap_or_else(|_| Err(damaged("a thread decoding it panicked".into())))
            })
            .collect()
    });
    let mut read = Vec::new();
    for part in per_thread {
        read.extend(part?);
    }
    if over() {
        return Ok(None);
    }
    read.sort_by_key(|(group, _)| *group);
    let (batches, ranges) = read.into_iter().flat_map(|(_, b)| b).unzip();
    Ok(Some(ResidentFile::new(batches, ranges, schema)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::CacheState;
    use crate::id::ConnectionId;
    use crate::table::TableRef;
    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::parquet::arrow::ArrowWriter;
    use datafusion::parquet::file::properties::WriterProperties;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
        ]))
    }

    /// A cache file at `name` (relative to `dir`, the cache's root) of `rows` rows in row
    /// groups of 100, and a lease on it.
    fn file(dir: &Path, name: &str, rows: i64) -> CacheLease {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let properties = WriterProperties::builder()
            .set_max_row_group_row_count(Some(100))
            .build();
        let mut writer = ArrowWriter::try_new(
            std::fs::File::create(&path).unwrap(),
            schema(),
            Some(properties),
        )
        .unwrap();
        let batch = RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(Int64Array::from_iter_values(0..rows)),
                Arc::new(StringArray::from_iter_values(
                    (0..rows).map(|i| format!("row {i}")),
                )),
            ],
        )
        .unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
        let storage = storage(dir);
        let cache = Arc::new(CacheState::new(
            Arc::clone(&storage),
            Arc::new(MemoryTier::new(0, Events::default(), storage)),
        ));
        let relative = PathBuf::from(name);
        cache.acquire(&relative);
        CacheLease {
            paths: vec![relative],
            cache,
        }
    }

    /// Cache files in `dir`.
    fn storage(dir: &Path) -> Arc<CacheStorage> {
        Arc::new(CacheStorage::local(dir))
    }

    fn table(name: &str) -> TableName {
        TableName {
            table: TableRef::new(&ConnectionId::generate(), "s", name),
            connection_name: "c".into(),
        }
    }

    fn ids(batches: &[RecordBatch]) -> Vec<i64> {
        batches
            .iter()
            .flat_map(|b| {
                let ids = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
                ids.values().to_vec()
            })
            .collect()
    }

    #[tokio::test]
    async fn a_loaded_file_is_resident_in_file_order() {
        let dir = tempfile::tempdir().unwrap();
        let lease = file(dir.path(), "a.parquet", 1000);
        let events = Events::default();
        let mut received = events.subscribe();
        let tier = Arc::new(MemoryTier::new(1 << 30, events, storage(dir.path())));
        let bytes = tier.load(&lease, schema(), table("a")).await.unwrap();
        assert!(bytes > 0);
        assert_eq!(tier.used(), bytes);
        let file = tier.get(lease.path()).unwrap();
        assert_eq!(ids(&file.batches), (0..1000).collect::<Vec<_>>());
        assert_eq!(file.batches[0].schema(), schema());
        // Each batch's id range, in file order, for skipping batches.
        let mins = file.mins[0].as_ref().unwrap();
        let maxs = file.maxs[0].as_ref().unwrap();
        let mins = mins.as_any().downcast_ref::<Int64Array>().unwrap();
        let maxs = maxs.as_any().downcast_ref::<Int64Array>().unwrap();
        for (i, batch) in file.batches.iter().enumerate() {
            let batch_ids = ids(std::slice::from_ref(batch));
            assert_eq!(mins.value(i), batch_ids[0]);
            assert_eq!(maxs.value(i), *batch_ids.last().unwrap());
        }
        match received.try_recv().unwrap() {
            Event::TableInMemory {
                table, bytes: b, ..
            } => {
                assert_eq!((table.table.table.as_str(), b), ("a", bytes));
            }
            other => panic!("unexpected event {other:?}"),
        }
        // Loading again reuses the resident copy.
        assert_eq!(tier.load(&lease, schema(), table("a")).await, Some(bytes));
        assert!(received.try_recv().is_err());
    }

    #[tokio::test]
    async fn a_zero_budget_keeps_nothing_and_a_file_over_budget_is_not_kept() {
        let dir = tempfile::tempdir().unwrap();
        let lease = file(dir.path(), "a.parquet", 1000);
        let off = Arc::new(MemoryTier::new(0, Events::default(), storage(dir.path())));
        assert_eq!(off.load(&lease, schema(), table("a")).await, None);
        assert_eq!(off.used(), 0);
        let small = Arc::new(MemoryTier::new(
            1000,
            Events::default(),
            storage(dir.path()),
        ));
        assert_eq!(small.load(&lease, schema(), table("a")).await, None);
        assert!(small.get(lease.path()).is_none());
        assert_eq!(small.used(), 0);
        assert!(small.lock().too_big.contains(lease.path()));
    }

    #[tokio::test]
    async fn the_least_recently_read_file_leaves_first() {
        let dir = tempfile::tempdir().unwrap();
        // Three tables: each in its own folder.
        let [a, b, c] = ["a", "b", "c"].map(|n| file(dir.path(), &format!("{n}/1.parquet"), 500));
        let probe = Arc::new(MemoryTier::new(
            1 << 30,
            Events::default(),
            storage(dir.path()),
        ));
        let size = probe.load(&a, schema(), table("a")).await.unwrap();
        // Room for two files, not three.
        let tier = Arc::new(MemoryTier::new(
            size * 5 / 2,
            Events::default(),
            storage(dir.path()),
        ));
        tier.load(&a, schema(), table("a")).await.unwrap();
        tier.load(&b, schema(), table("b")).await.unwrap();
        assert!(
            tier.get(a.path()).is_some(),
            "a is now the most recently read"
        );
        tier.load(&c, schema(), table("c")).await.unwrap();
        assert!(tier.get(b.path()).is_none(), "b was read least recently");
        assert!(tier.get(a.path()).is_some());
        assert!(tier.get(c.path()).is_some());
        assert_eq!(tier.used(), size * 2);
    }

    #[tokio::test]
    async fn a_newer_version_of_a_table_replaces_the_older_copy() {
        let dir = tempfile::tempdir().unwrap();
        let (v1, v2) = (
            file(dir.path(), "1.parquet", 100),
            file(dir.path(), "2.parquet", 200),
        );
        let elsewhere = file(dir.path(), "other/1.parquet", 100);
        let tier = Arc::new(MemoryTier::new(
            1 << 30,
            Events::default(),
            storage(dir.path()),
        ));
        tier.load(&v1, schema(), table("t")).await.unwrap();
        let kept = tier.load(&elsewhere, schema(), table("u")).await.unwrap();
        let newer = tier.load(&v2, schema(), table("t")).await.unwrap();
        assert!(tier.get(v1.path()).is_none());
        assert!(
            tier.get(elsewhere.path()).is_some(),
            "another table's copy stays"
        );
        assert_eq!(tier.used(), kept + newer);
    }

    #[tokio::test]
    async fn a_removed_file_frees_its_memory_and_a_load_under_way_keeps_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let lease = file(dir.path(), "a.parquet", 1000);
        let tier = Arc::new(MemoryTier::new(
            1 << 30,
            Events::default(),
            storage(dir.path()),
        ));
        tier.load(&lease, schema(), table("a")).await.unwrap();
        tier.remove(lease.path());
        assert_eq!(tier.used(), 0);
        assert!(tier.get(lease.path()).is_none());
        // Retired between the start of a load and its end: the copy is not kept.
        let load = tier
            .start_load(lease.path(), lease.paths(), schema(), table("a"))
            .unwrap();
        tier.remove(lease.path());
        assert_eq!(load.await, None);
        assert_eq!(tier.used(), 0);
        assert!(tier.get(lease.path()).is_none());
    }
}
