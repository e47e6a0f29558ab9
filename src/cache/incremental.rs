//! Incremental refreshes (`append`, `upsert`): the rows at or past the cursor's high-water
//! mark (less the overlap), and the rows whose cursor is NULL, are fetched into a temp file;
//! then `append` drops the rows the copy already holds (by key, or as whole rows) and adds
//! the rest as one delta file, and `upsert` writes a new base file in which each key holds
//! its latest row. The fetched rows' keys are the only thing held in memory.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::{ArrayRef, BooleanArray};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{OwnedRow, RowConverter, Rows, SortField};
use datafusion::common::ScalarValue;
use datafusion::functions_aggregate::expr_fn::max;
use datafusion::logical_expr::{Expr, lit};
use datafusion::physical_plan::SendableRecordBatchStream;
use datafusion::prelude::{SessionContext, ident};
use futures::StreamExt;
use tokio::sync::mpsc;

use super::CacheLease;
use super::fetch::{FetchJob, now_micros};
use super::storage::Scratch;
use crate::connection::SourceType;
use crate::error::{Error, Result};
use crate::refresh::{FullEvery, Overlap, RefreshKind, RefreshMode, RefreshSettings, Refreshed};
use crate::source::CursorFilter;
use crate::table::{CacheEntry, TableRecord, schema_from_json};

/// Changed rows an incremental refresh holds the keys of in memory (about 100 bytes each)
/// before it falls back to a full refresh, when they are also a quarter of the copy or more.
const MAX_KEPT_ROWS: u64 = 500_000;

/// How far below the mark a refresh reads again, in the cursor's own terms.
#[derive(Clone, Debug, PartialEq)]
enum Reread {
    /// Units of a numeric cursor.
    Units(f64),
    /// Microseconds of a date or timestamp cursor.
    Micros(i64),
}

/// A validated incremental refresh of one table.
#[derive(Clone, Debug, PartialEq)]
pub struct IncrementalPlan {
    mode: RefreshMode,
    cursor: String,
    cursor_type: DataType,
    overlap: Reread,
    /// The columns that identify a row; `None` (append only): the whole row.
    key: Option<Vec<String>>,
    /// When a refresh is full after all.
    pub(super) full_every: Option<FullEvery>,
}

impl IncrementalPlan {
    /// The incremental refresh `settings` ask of `record` (`None` for a full one), or an
    /// error saying which setting does not fit the table and what to set instead.
    pub fn new(
        settings: &RefreshSettings,
        record: &TableRecord,
        source_type: SourceType,
        label: &str,
    ) -> Result<Option<Self>> {
        let mode = settings.mode();
        if mode == RefreshMode::Full {
            return Ok(None);
        }
        let bad = |message: String| {
            Error::Usage(format!("refresh '{mode}' does not fit {label}: {message}"))
        };
        let schema = match &record.arrow_schema {
            Some(text) => schema_from_json(text, label)?,
            None => {
                return Err(bad(
                    "the table has no stored schema; run discovery again".into()
                ));
            }
        };
        let columns: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
        let unknown = |name: &str, what: &str| {
            let hint = crate::suggest::closest(name, columns.iter())
                .map(|c| format!(" (did you mean '{c}'?)"))
                .unwrap_or_default();
            bad(format!(
                "{what} '{name}' is not a column of the table{hint}; columns: {}",
                columns.join(", ")
            ))
        };
        let Some(cursor) = settings.cursor_column.clone() else {
            return Err(bad(format!(
                "set 'cursor_column' to a column that only grows, such as an id or a \
                 timestamp{}",
                if mode == RefreshMode::Upsert {
                    " the source sets on every change (updated_at)"
                } else {
                    ""
                }
            )));
        };
        let Ok(field) = schema.field_with_name(&cursor) else {
            return Err(unknown(&cursor, "cursor_column"));
        };
        let cursor_type = field.data_type().clone();
        let numeric = is_numeric(&cursor_type);
        let temporal = matches!(cursor_type, DataType::Date32 | DataType::Timestamp(..));
        if !numeric && !temporal {
            return Err(bad(format!(
                "cursor_column '{cursor}' is {cursor_type}, which a cursor cannot be; use a \
                 number, date or timestamp column"
            )));
        }
        if temporal && source_type == SourceType::Sqlite {
            return Err(bad(format!(
                "cursor_column '{cursor}' is a date or timestamp, which SQLite keeps as text or \
                 numbers that do not compare as dates; use an integer or real column"
            )));
        }
        let overlap = match (&settings.overlap, temporal) {
            (None, false) => Reread::Units(0.0),
            (None, true) => Reread::Micros(0),
            (Some(Overlap::Value(n)), false) => {
                let integer = !matches!(
                    cursor_type,
                    DataType::Float32 | DataType::Float64 | DataType::Decimal128(..)
                );
                match (n.as_f64(), integer) {
                    (Some(v), false) => Reread::Units(v),
                    (Some(v), true) if v.fract() == 0.0 => Reread::Units(v),
                    _ => {
                        return Err(bad(format!(
                            "overlap {n} must be a whole number for the integer cursor '{cursor}'"
                        )));
                    }
                }
            }
            (Some(o @ Overlap::Duration(_)), true) => Reread::Micros(
                o.duration()
                    .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX)),
            ),
            (Some(o), true) => {
                return Err(bad(format!(
                    "overlap {o} must be a duration such as \"10m\" for the {cursor_type} \
                     cursor '{cursor}'"
                )));
            }
            (Some(o), false) => {
                return Err(bad(format!(
                    "overlap {o} must be a number of the cursor's units for the numeric cursor \
                     '{cursor}'"
                )));
            }
        };
        let key = match &settings.key {
            Some(key) => Some(key.clone()),
            None => record.primary_key().map(|k| k.columns.clone()),
        };
        if let Some(key) = &key {
            if let Some(missing) = key.iter().find(|k| !columns.contains(k)) {
                return Err(unknown(missing, "key column"));
            }
        } else if mode == RefreshMode::Upsert {
            return Err(bad(
                "the table has no primary key, and upsert needs one to know which row a change \
                 replaces; set 'key' to the columns that identify a row"
                    .into(),
            ));
        }
        Ok(Some(IncrementalPlan {
            mode,
            cursor,
            cursor_type,
            overlap,
            key,
            full_every: settings.full_every.clone(),
        }))
    }

    /// The lowest cursor value to read again below the mark; `None`: read every row.
    fn lower_bound(&self, mark: &ScalarValue) -> Option<ScalarValue> {
        use ScalarValue as S;
        let units = match self.overlap {
            Reread::Units(u) => u,
            Reread::Micros(_) => 0.0,
        };
        let whole = units as i64;
        let micros = match self.overlap {
            Reread::Micros(m) => m,
            Reread::Units(_) => 0,
        };
        Some(match mark {
            S::Int8(Some(v)) => {
                S::Int8(Some(i8::try_from(i64::from(*v).checked_sub(whole)?).ok()?))
            }
            S::Int16(Some(v)) => {
                S::Int16(Some(i16::try_from(i64::from(*v).checked_sub(whole)?).ok()?))
            }
            S::Int32(Some(v)) => {
                S::Int32(Some(i32::try_from(i64::from(*v).checked_sub(whole)?).ok()?))
            }
            S::Int64(Some(v)) => S::Int64(Some(v.checked_sub(whole)?)),
            S::UInt8(Some(v)) => S::UInt8(Some(v.saturating_sub(whole.try_into().ok()?))),
            S::UInt16(Some(v)) => S::UInt16(Some(v.saturating_sub(whole.try_into().ok()?))),
            S::UInt32(Some(v)) => S::UInt32(Some(v.saturating_sub(whole.try_into().ok()?))),
            S::UInt64(Some(v)) => S::UInt64(Some(v.saturating_sub(whole.try_into().ok()?))),
            S::Float32(Some(v)) => S::Float32(Some(v - units as f32)),
            S::Float64(Some(v)) => S::Float64(Some(v - units)),
            S::Decimal128(Some(v), p, s) => {
                let scaled = (units * 10f64.powi(i32::from(*s))).ceil() as i128;
                S::Decimal128(Some(v.checked_sub(scaled)?), *p, *s)
            }
            S::Date32(Some(d)) => {
                let days = micros.div_euclid(86_400_000_000)
                    + i64::from(micros.rem_euclid(86_400_000_000) > 0);
                S::Date32(Some(i32::try_from(i64::from(*d).checked_sub(days)?).ok()?))
            }
            S::TimestampSecond(Some(v), tz) => S::TimestampSecond(
                Some(v.checked_sub(ceil_div(micros, 1_000_000))?),
                tz.clone(),
            ),
            S::TimestampMillisecond(Some(v), tz) => {
                S::TimestampMillisecond(Some(v.checked_sub(ceil_div(micros, 1_000))?), tz.clone())
            }
            S::TimestampMicrosecond(Some(v), tz) => {
                S::TimestampMicrosecond(Some(v.checked_sub(micros)?), tz.clone())
            }
            S::TimestampNanosecond(Some(v), tz) => {
                S::TimestampNanosecond(Some(v.checked_sub(micros.checked_mul(1_000)?)?), tz.clone())
            }
            _ => return None,
        })
    }
}

/// `n / d` rounded up, for `n` ≥ 0: a coarser cursor reads a little more, never less.
fn ceil_div(n: i64, d: i64) -> i64 {
    n / d + i64::from(n % d > 0)
}

fn is_numeric(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
            | DataType::UInt64
            | DataType::Float32
            | DataType::Float64
            | DataType::Decimal128(..)
    )
}

/// The copy's files and the fetched rows' scratch file, each read as a DataFusion table.
struct Sides {
    ctx: SessionContext,
    schema: SchemaRef,
    held: CacheLease,
    fetched: Option<Scratch>,
}

type Frame = datafusion::dataframe::DataFrame;

impl Sides {
    /// The rows the copy holds.
    fn held(&self) -> Result<Frame> {
        let table = self.held.table(Arc::clone(&self.schema))?;
        Ok(self.ctx.read_table(Arc::new(table))?)
    }

    /// The rows the refresh fetched.
    async fn fetched(&self) -> Result<SendableRecordBatchStream> {
        let scratch = self.fetched.as_ref().ok_or_else(|| Error::Fetch {
            table: String::new(),
            message: "the refresh read its fetched rows before fetching them".into(),
        })?;
        let table = scratch.table(Arc::clone(&self.schema))?;
        Ok(self
            .ctx
            .read_table(Arc::new(table))?
            .execute_stream()
            .await?)
    }
}

/// Refreshes `current` incrementally under the table's writer lock, which the caller holds.
pub(super) async fn refresh(
    job: &FetchJob,
    plan: &IncrementalPlan,
    current: CacheEntry,
    label: &str,
    start: Instant,
) -> Result<CacheEntry> {
    let (schema, stored) = job.schema(label)?;
    if current.arrow_schema != stored {
        // The copy was made with other columns: only a full fetch makes them agree.
        return job.fetch_and_publish(label, start).await;
    }
    let mut sides = Sides {
        // One partition: the copy is read one row group at a time, so memory stays that of
        // a fetch (the writer, on its own thread, is the other core's work).
        ctx: job.storage.session(1),
        schema: Arc::clone(&schema),
        held: job
            .state
            .lease(current.files().map(PathBuf::from).collect()),
        fetched: None,
    };
    let mark = high_water_mark(sides.held()?, &plan.cursor).await?;
    let filter = mark
        .as_ref()
        .and_then(|m| plan.lower_bound(m))
        .map(|from| CursorFilter {
            column: plan.cursor.clone(),
            from,
        });
    let version = job.store.next_cache_version(&job.name.table).await?;

    // The changed rows, in a scratch file that is never committed (removed when dropped).
    let (fetched_file, file) = job.scratch(&format!("{version}.fetched"))?;
    let request = job.request(label, &schema, filter.clone());
    let fetched_rows = job.fetch_into(file, fetched_file.path(), &request).await?;
    if fetched_rows > MAX_KEPT_ROWS && fetched_rows > current.row_count.max(0) as u64 / 4 {
        // So many changed rows that a full refresh costs about as much, and holds no keys
        // in memory (every row at the mark is read again: a copy whose rows share one
        // cursor value, as after a bulk load, gets here once).
        drop(fetched_file);
        return job.fetch_and_publish(label, start).await;
    }
    sides.fetched = Some(fetched_file);

    let (mut target, file) = job.new_file(&format!("{version}.parquet")).await?;
    let (sender, receiver) = mpsc::channel(4);
    let writer = job.spawn_writer(file, target.relative(), &schema, receiver, |_| {});
    let produced = match (&plan.key, plan.mode) {
        (Some(key), RefreshMode::Append) => append_by_key(&sides, key, &sender).await,
        (None, _) => {
            let window = match &filter {
                Some(f) => sides.held()?.filter(
                    ident(&plan.cursor)
                        .gt_eq(lit(f.from.clone()))
                        .or(ident(&plan.cursor).is_null()),
                )?,
                None => sides.held()?,
            };
            append_by_row(&sides, window, &sender).await
        }
        (Some(key), RefreshMode::Upsert | RefreshMode::Full) => upsert(&sides, key, &sender).await,
    };
    drop(sender);
    let written = writer.await.map_err(|e| Error::Fetch {
        table: label.to_owned(),
        message: format!("the Parquet writer stopped unexpectedly: {e}"),
    })?;
    produced?;
    let written = match written {
        Ok(rows) => rows,
        Err(e) => return Err(target.explain(e).await),
    };
    sides.fetched = None;

    let (kind, changed) = match plan.mode {
        RefreshMode::Upsert => (RefreshKind::Upsert, fetched_rows as i64),
        _ => (RefreshKind::Append, written as i64),
    };
    let refreshed = |at| Refreshed {
        kind,
        rows: changed,
        duration: start.elapsed(),
        at,
    };
    if kind == RefreshKind::Append && written == 0 {
        // Nothing new: the copy stays as it is, and the refresh is recorded.
        drop(target);
        job.store
            .record_refresh(&job.name.table, &refreshed(now_micros()))
            .await?;
        return Ok(current);
    }
    let file = target.commit().await?;
    let fetched_at = now_micros();
    let entry = match kind {
        RefreshKind::Append => CacheEntry {
            version,
            deltas: current
                .deltas
                .iter()
                .cloned()
                .chain([file.relative.clone()])
                .collect(),
            row_count: current.row_count + written as i64,
            byte_size: current.byte_size + file.bytes,
            fetched_at,
            ..current
        },
        _ => CacheEntry {
            version,
            path: file.relative.clone(),
            deltas: Vec::new(),
            row_count: written as i64,
            byte_size: file.bytes,
            fetched_at,
            ..current
        },
    };
    let entry = job
        .publish(entry, Some(&refreshed(fetched_at)), &file)
        .await?;
    if super::compaction::due(&job.storage, &entry).await {
        super::compaction::start(job.clone(), entry.version);
    }
    Ok(entry)
}

/// `append` by key: the fetched rows whose key the copy does not hold.
async fn append_by_key(
    sides: &Sides,
    key: &[String],
    sink: &mpsc::Sender<RecordBatch>,
) -> Result<u64> {
    let converter = converter(&sides.schema, key)?;
    let fetched_keys = keys_of(sides.fetched().await?, &converter, &sides.schema, key).await?;
    let mut held_keys = HashSet::new();
    let mut stream = sides
        .held()?
        .select(key.iter().map(ident).collect::<Vec<Expr>>())?
        .execute_stream()
        .await?;
    while let Some(batch) = stream.next().await {
        let rows = converter
            .convert_columns(batch?.columns())
            .map_err(arrow_error)?;
        for row in rows.iter() {
            let row = row.owned();
            if fetched_keys.contains(&row) {
                held_keys.insert(row);
            }
        }
    }
    let keep = |rows: &Rows| -> Vec<bool> {
        rows.iter()
            .map(|r| !held_keys.contains(&r.owned()))
            .collect()
    };
    send_filtered(
        sides.fetched().await?,
        &sides.schema,
        Some(key),
        &converter,
        keep,
        sink,
    )
    .await
}

/// `append` without a key: a fetched row is new unless the copy holds as many equal rows;
/// only the rows of `window` (at or past the bound, or with a NULL cursor) can be equal.
async fn append_by_row(
    sides: &Sides,
    window: Frame,
    sink: &mpsc::Sender<RecordBatch>,
) -> Result<u64> {
    let all: Vec<String> = sides
        .schema
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let converter = converter(&sides.schema, &all)?;
    let mut allowance: HashMap<OwnedRow, i64> = HashMap::new();
    let mut stream = sides.fetched().await?;
    while let Some(batch) = stream.next().await {
        let rows = converter
            .convert_columns(batch?.columns())
            .map_err(arrow_error)?;
        for row in rows.iter() {
            *allowance.entry(row.owned()).or_default() += 1;
        }
    }
    let mut stream = window.execute_stream().await?;
    while let Some(batch) = stream.next().await {
        let rows = converter
            .convert_columns(batch?.columns())
            .map_err(arrow_error)?;
        for row in rows.iter() {
            if let Some(n) = allowance.get_mut(&row.owned()) {
                *n -= 1;
            }
        }
    }
    let keep = |rows: &Rows| -> Vec<bool> {
        rows.iter()
            .map(|r| match allowance.get_mut(&r.owned()) {
                Some(n) if *n > 0 => {
                    *n -= 1;
                    true
                }
                _ => false,
            })
            .collect()
    };
    send_filtered(
        sides.fetched().await?,
        &sides.schema,
        None,
        &converter,
        keep,
        sink,
    )
    .await
}

/// `upsert`: the held rows of keys not fetched, then every fetched row.
async fn upsert(sides: &Sides, key: &[String], sink: &mpsc::Sender<RecordBatch>) -> Result<u64> {
    let converter = converter(&sides.schema, key)?;
    let fetched_keys = keys_of(sides.fetched().await?, &converter, &sides.schema, key).await?;
    let keep = |rows: &Rows| -> Vec<bool> {
        rows.iter()
            .map(|r| !fetched_keys.contains(&r.owned()))
            .collect()
    };
    let held = sides.held()?.execute_stream().await?;
    let kept = send_filtered(held, &sides.schema, Some(key), &converter, keep, sink).await?;
    let all = |rows: &Rows| vec![true; rows.num_rows()];
    let added = send_filtered(
        sides.fetched().await?,
        &sides.schema,
        Some(key),
        &converter,
        all,
        sink,
    )
    .await?;
    Ok(kept + added)
}

/// The largest cursor value the copy holds; `None` when every one is NULL (or none).
async fn high_water_mark(
    held: datafusion::dataframe::DataFrame,
    cursor: &str,
) -> Result<Option<ScalarValue>> {
    let batches = held
        .aggregate(vec![], vec![max(ident(cursor)).alias("mark")])?
        .collect()
        .await?;
    let Some(batch) = batches.first().filter(|b| b.num_rows() > 0) else {
        return Ok(None);
    };
    let mark = ScalarValue::try_from_array(batch.column(0), 0)?;
    Ok((!mark.is_null()).then_some(mark))
}

/// Encodes the `key` columns of a batch as comparable byte rows.
fn converter(schema: &SchemaRef, key: &[String]) -> Result<RowConverter> {
    let fields = key
        .iter()
        .map(|k| {
            schema
                .field_with_name(k)
                .map(|f| SortField::new(f.data_type().clone()))
                .map_err(arrow_error)
        })
        .collect::<Result<Vec<_>>>()?;
    RowConverter::new(fields).map_err(|e| {
        Error::Usage(format!(
            "rows of this table cannot be compared ({e}); set 'key' to the columns that \
             identify a row"
        ))
    })
}

/// The key columns of `batch`, in key order.
fn key_columns(batch: &RecordBatch, schema: &SchemaRef, key: &[String]) -> Result<Vec<ArrayRef>> {
    key.iter()
        .map(|k| {
            schema
                .index_of(k)
                .map(|i| Arc::clone(batch.column(i)))
                .map_err(arrow_error)
        })
        .collect()
}

/// Every key in `stream`.
async fn keys_of(
    mut stream: SendableRecordBatchStream,
    converter: &RowConverter,
    schema: &SchemaRef,
    key: &[String],
) -> Result<HashSet<OwnedRow>> {
    let mut keys = HashSet::new();
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        let rows = converter
            .convert_columns(&key_columns(&batch, schema, key)?)
            .map_err(arrow_error)?;
        keys.extend(rows.iter().map(|r| r.owned()));
    }
    Ok(keys)
}

/// Sends the rows of `stream` that `keep` picks (it sees each batch's rows by `key`, or
/// whole when `key` is `None`) to the writer, as batches of `schema`; returns their count.
async fn send_filtered(
    mut stream: SendableRecordBatchStream,
    schema: &SchemaRef,
    key: Option<&[String]>,
    converter: &RowConverter,
    mut keep: impl FnMut(&Rows) -> Vec<bool>,
    sink: &mpsc::Sender<RecordBatch>,
) -> Result<u64> {
    let mut sent = 0;
    while let Some(batch) = stream.next().await {
        let batch = RecordBatch::try_new(Arc::clone(schema), batch?.columns().to_vec())
            .map_err(arrow_error)?;
        let columns = match key {
            Some(key) => key_columns(&batch, schema, key)?,
            None => batch.columns().to_vec(),
        };
        let rows = converter.convert_columns(&columns).map_err(arrow_error)?;
        let mask = BooleanArray::from(keep(&rows));
        let kept = filter_record_batch(&batch, &mask).map_err(arrow_error)?;
        if kept.num_rows() == 0 {
            continue;
        }
        sent += kept.num_rows() as u64;
        if sink.send(kept).await.is_err() {
            break;
        }
    }
    Ok(sent)
}

fn arrow_error(e: datafusion::arrow::error::ArrowError) -> Error {
    Error::Sql(e.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(cursor_type: DataType, overlap: Reread) -> IncrementalPlan {
        IncrementalPlan {
            mode: RefreshMode::Append,
            cursor: "c".into(),
            cursor_type,
            overlap,
            key: None,
            full_every: None,
        }
    }

    #[test]
    fn the_bound_is_the_mark_less_the_overlap() {
        let ints = plan(DataType::Int64, Reread::Units(5.0));
        assert_eq!(
            ints.lower_bound(&ScalarValue::Int64(Some(100))),
            Some(ScalarValue::Int64(Some(95)))
        );
        // Past the type's range: every row is read.
        assert_eq!(ints.lower_bound(&ScalarValue::Int8(Some(-126))), None);
        assert_eq!(
            ints.lower_bound(&ScalarValue::UInt32(Some(3))),
            Some(ScalarValue::UInt32(Some(0)))
        );
        let decimal = plan(DataType::Decimal128(10, 2), Reread::Units(0.5));
        assert_eq!(
            decimal.lower_bound(&ScalarValue::Decimal128(Some(1000), 10, 2)),
            Some(ScalarValue::Decimal128(Some(950), 10, 2))
        );
        let time = plan(DataType::Date32, Reread::Micros(3_600_000_000));
        // An hour before a day's start is the day before.
        assert_eq!(
            time.lower_bound(&ScalarValue::Date32(Some(10))),
            Some(ScalarValue::Date32(Some(9)))
        );
        assert_eq!(
            time.lower_bound(&ScalarValue::TimestampMicrosecond(
                Some(7_200_000_000),
                None
            )),
            Some(ScalarValue::TimestampMicrosecond(Some(3_600_000_000), None))
        );
    }
}
