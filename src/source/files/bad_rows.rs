//! Text files read row by row, where each row can fail on its own: with `bad_rows = 'skip'`
//! a row that does not parse is left out and counted; otherwise the first one fails the
//! fetch with its file, line and column. The fast path (DataFusion's readers) fails a whole
//! file without saying where; this reader also finds the place when it does.

use std::io::{BufRead, BufReader, Read};
use std::sync::Arc;
use std::sync::mpsc as std_mpsc;

use bytes::Bytes;
use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, StringBuilder};
use datafusion::arrow::compute::{CastOptions, cast_with_options, filter_record_batch};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::ScalarValue;
use futures::StreamExt;
use tokio::sync::mpsc;

use crate::file_set::{BadRows, FileFormat, FileSet};

/// Rows per batch this reader sends.
const ROWS: usize = 8_192;

/// Where a row went wrong.
#[derive(Debug)]
pub struct BadRow {
    /// 1-based line in the (decompressed) file.
    pub line: u64,
    /// The column, when one is to blame.
    pub column: Option<String>,
    /// What was wrong.
    pub problem: String,
}

/// What reading one file came to.
pub enum Outcome {
    /// Every row was sent, but these were skipped.
    Done { skipped: u64 },
    /// A row failed (`bad_rows = 'fail'`).
    Bad(BadRow),
    /// The sink closed: the fetch was abandoned.
    Abandoned,
}

/// Reads `file` of `set` into batches of `schema` (file columns, then partition columns)
/// sent to `sink`, a row at a time. `bytes` streams the file's (decompressed) content.
pub async fn read(
    set: &FileSet,
    schema: SchemaRef,
    partition_values: Vec<ScalarValue>,
    bytes: futures::stream::BoxStream<'static, std::io::Result<Bytes>>,
    sink: mpsc::Sender<RecordBatch>,
) -> std::io::Result<Outcome> {
    let (sender, receiver) = std_mpsc::sync_channel::<std::io::Result<Bytes>>(4);
    let set = set.clone();
    let policy = set.bad_rows;
    let parse = tokio::task::spawn_blocking(move || {
        let reader = BufReader::with_capacity(1 << 20, ChannelReader::new(receiver));
        let mut rows = RowBatcher {
            schema,
            partition_values,
            sink,
            policy,
            skipped: 0,
        };
        match set.format {
            FileFormat::Csv => rows.csv(&set, reader),
            FileFormat::Json => rows.json_array(reader),
            _ => rows.ndjson(reader),
        }
    });
    let mut bytes = bytes;
    while let Some(chunk) = bytes.next().await {
        let failed = chunk.is_err();
        if sender.send(chunk).is_err() || failed {
            break;
        }
    }
    drop(sender);
    parse
        .await
        .map_err(|e| std::io::Error::other(format!("the row reader stopped: {e}")))?
}

/// A blocking `Read` over chunks an async task sends.
struct ChannelReader {
    receiver: std_mpsc::Receiver<std::io::Result<Bytes>>,
    current: Bytes,
}

impl ChannelReader {
    fn new(receiver: std_mpsc::Receiver<std::io::Result<Bytes>>) -> Self {
        ChannelReader {
            receiver,
            current: Bytes::new(),
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.receiver.recv() {
                Ok(chunk) => self.current = chunk?,
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current = self.current.slice(n..);
        Ok(n)
    }
}

struct RowBatcher {
    schema: SchemaRef,
    partition_values: Vec<ScalarValue>,
    sink: mpsc::Sender<RecordBatch>,
    policy: BadRows,
    skipped: u64,
}

impl RowBatcher {
    fn file_columns(&self) -> usize {
        self.schema.fields().len() - self.partition_values.len()
    }

    /// Records a bad row: skipped and counted, or the outcome.
    fn bad(&mut self, row: BadRow) -> Option<Outcome> {
        match self.policy {
            BadRows::Skip => {
                self.skipped += 1;
                None
            }
            BadRows::Fail => Some(Outcome::Bad(row)),
        }
    }

    /// Sends the file columns `columns` with the partition columns; false if the sink closed.
    fn send(&self, columns: Vec<ArrayRef>) -> std::io::Result<bool> {
        let rows = columns.first().map_or(0, |c| c.len());
        if rows == 0 {
            return Ok(true);
        }
        let mut columns = columns;
        for value in &self.partition_values {
            columns.push(
                value
                    .to_array_of_size(rows)
                    .map_err(std::io::Error::other)?,
            );
        }
        let batch = RecordBatch::try_new(Arc::clone(&self.schema), columns)
            .map_err(std::io::Error::other)?;
        Ok(self.sink.blocking_send(batch).is_ok())
    }

    fn csv(&mut self, set: &FileSet, reader: impl Read) -> std::io::Result<Outcome> {
        let options = &set.csv;
        let mut csv = csv::ReaderBuilder::new()
            .has_headers(options.header)
            .delimiter(options.delimiter as u8)
            .quote(options.quote as u8)
            .flexible(true)
            .from_reader(reader);
        let width = self.file_columns();
        let null = options.null_string.clone();
        let mut texts: Vec<StringBuilder> = (0..width).map(|_| StringBuilder::new()).collect();
        let mut lines = Vec::with_capacity(ROWS);
        let mut record = csv::ByteRecord::new();
        loop {
            let more = match csv.read_byte_record(&mut record) {
                Ok(more) => more,
                Err(e) => {
                    let line = e.position().map_or(0, |p| p.line());
                    return match e.into_kind() {
                        csv::ErrorKind::Io(e) => Err(e),
                        other => Ok(self
                            .bad(BadRow {
                                line,
                                column: None,
                                problem: format!("{other:?}"),
                            })
                            .unwrap_or(Outcome::Done {
                                skipped: self.skipped,
                            })),
                    };
                }
            };
            if more {
                let line = record.position().map_or(0, |p| p.line());
                if record.len() != width {
                    // Rows before it are checked first, so the first bad row is reported.
                    if self.policy == BadRows::Fail
                        && let Some(outcome) = self.flush(&mut texts, &mut lines)?
                    {
                        return Ok(outcome);
                    }
                    let problem =
                        format!("has {} fields where the table has {width}", record.len());
                    if let Some(outcome) = self.bad(BadRow {
                        line,
                        column: None,
                        problem,
                    }) {
                        return Ok(outcome);
                    }
                    continue;
                }
                for (builder, field) in texts.iter_mut().zip(record.iter()) {
                    match std::str::from_utf8(field) {
                        Ok(text) if text.is_empty() || null.as_deref() == Some(text) => {
                            builder.append_null()
                        }
                        Ok(text) => builder.append_value(text),
                        // Caught below: NULL where the text was not.
                        Err(_) => builder.append_value("\u{fffd}invalid UTF-8"),
                    }
                }
                lines.push(line);
            }
            if (lines.len() == ROWS || !more)
                && let Some(outcome) = self.flush(&mut texts, &mut lines)?
            {
                return Ok(outcome);
            }
            if !more {
                return Ok(Outcome::Done {
                    skipped: self.skipped,
                });
            }
        }
    }

    /// Sends the rows gathered in `texts` (starting at `lines`), typed; `Some` ends the read.
    fn flush(
        &mut self,
        texts: &mut [StringBuilder],
        lines: &mut Vec<u64>,
    ) -> std::io::Result<Option<Outcome>> {
        if lines.is_empty() {
            return Ok(None);
        }
        let columns: Vec<ArrayRef> = texts
            .iter_mut()
            .map(|b| Arc::new(b.finish()) as ArrayRef)
            .collect();
        let outcome = match self.typed(columns, lines)? {
            Ok(columns) => (!self.send(columns)?).then_some(Outcome::Abandoned),
            Err(outcome) => Some(outcome),
        };
        lines.clear();
        Ok(outcome)
    }

    /// Text columns cast to the table's types; a row with a value that does not convert
    /// is bad (the first one is the outcome under `fail`).
    fn typed(
        &mut self,
        texts: Vec<ArrayRef>,
        lines: &[u64],
    ) -> std::io::Result<Result<Vec<ArrayRef>, Outcome>> {
        let options = CastOptions {
            safe: true,
            ..Default::default()
        };
        let mut columns = Vec::with_capacity(texts.len());
        let mut good = vec![true; lines.len()];
        for (i, text) in texts.iter().enumerate() {
            let field = self.schema.field(i).clone();
            let typed = if field.data_type() == &DataType::Utf8 {
                Arc::clone(text)
            } else {
                cast_with_options(text, field.data_type(), &options)
                    .map_err(std::io::Error::other)?
            };
            for row in 0..lines.len() {
                if good[row] && typed.is_null(row) && !text.is_null(row) {
                    good[row] = false;
                    let value = text
                        .as_any()
                        .downcast_ref::<datafusion::arrow::array::StringArray>()
                        .map(|a| a.value(row).to_owned())
                        .unwrap_or_default();
                    let problem = format!("'{value}' is not a valid {}", field.data_type());
                    if let Some(outcome) = self.bad(BadRow {
                        line: lines[row],
                        column: Some(field.name().clone()),
                        problem,
                    }) {
                        return Ok(Err(outcome));
                    }
                }
            }
            columns.push(typed);
        }
        if good.iter().all(|g| *g) {
            return Ok(Ok(columns));
        }
        let schema = Arc::new(datafusion::arrow::datatypes::Schema::new(
            self.schema.fields()[..columns.len()].to_vec(),
        ));
        let batch = RecordBatch::try_new(schema, columns).map_err(std::io::Error::other)?;
        let kept = filter_record_batch(&batch, &BooleanArray::from(good))
            .map_err(std::io::Error::other)?;
        Ok(Ok(kept.columns().to_vec()))
    }

    fn ndjson(&mut self, reader: impl BufRead) -> std::io::Result<Outcome> {
        let mut chunk: Vec<(u64, String)> = Vec::with_capacity(ROWS);
        let mut lines = reader.lines();
        let mut number = 0u64;
        loop {
            let line = lines.next().transpose()?;
            let done = line.is_none();
            if let Some(line) = line {
                number += 1;
                if !line.trim().is_empty() {
                    chunk.push((number, line));
                }
            }
            if chunk.len() == ROWS || (done && !chunk.is_empty()) {
                match self.json_rows(&chunk)? {
                    Ok(true) => {}
                    Ok(false) => return Ok(Outcome::Abandoned),
                    Err(outcome) => return Ok(outcome),
                }
                chunk.clear();
            }
            if done {
                return Ok(Outcome::Done {
                    skipped: self.skipped,
                });
            }
        }
    }

    fn json_array(&mut self, reader: impl Read) -> std::io::Result<Outcome> {
        let rows: Vec<serde_json::Value> = match serde_json::from_reader(reader) {
            Ok(serde_json::Value::Array(rows)) => rows,
            Ok(_) => {
                return Ok(self
                    .bad(BadRow {
                        line: 1,
                        column: None,
                        problem: "the file is not a JSON array of objects".into(),
                    })
                    .unwrap_or(Outcome::Done { skipped: 0 }));
            }
            Err(e) => {
                return Ok(self
                    .bad(BadRow {
                        line: e.line() as u64,
                        column: Some(format!("character {}", e.column())),
                        problem: format!("not valid JSON: {e}"),
                    })
                    .unwrap_or(Outcome::Done { skipped: 0 }));
            }
        };
        // Elements are numbered as lines: the message says "element N".
        let chunk: Vec<(u64, String)> = rows
            .iter()
            .enumerate()
            .map(|(i, row)| (i as u64 + 1, row.to_string()))
            .collect();
        for part in chunk.chunks(ROWS) {
            match self.json_rows(part)? {
                Ok(true) => {}
                Ok(false) => return Ok(Outcome::Abandoned),
                Err(outcome) => return Ok(outcome),
            }
        }
        Ok(Outcome::Done {
            skipped: self.skipped,
        })
    }

    /// Decodes `rows` (line number, text) whole, or one at a time when that fails.
    fn json_rows(&mut self, rows: &[(u64, String)]) -> std::io::Result<Result<bool, Outcome>> {
        let schema = Arc::new(datafusion::arrow::datatypes::Schema::new(
            self.schema.fields()[..self.file_columns()].to_vec(),
        ));
        let decode =
            |texts: &mut dyn Iterator<Item = &String>| -> Result<Option<RecordBatch>, String> {
                let mut decoder = datafusion::arrow::json::ReaderBuilder::new(Arc::clone(&schema))
                    .with_batch_size(ROWS)
                    .build_decoder()
                    .map_err(|e| e.to_string())?;
                for text in texts {
                    decoder.decode(text.as_bytes()).map_err(|e| e.to_string())?;
                    decoder.decode(b"\n").map_err(|e| e.to_string())?;
                }
                decoder.flush().map_err(|e| e.to_string())
            };
        if let Ok(batch) = decode(&mut rows.iter().map(|(_, t)| t)) {
            let columns = batch.map(|b| b.columns().to_vec()).unwrap_or_default();
            return Ok(Ok(self.send(columns)?));
        }
        let mut good = Vec::new();
        for (line, text) in rows {
            match decode(&mut std::iter::once(text)) {
                Ok(Some(batch)) => good.push(batch),
                Ok(None) => {}
                Err(problem) => {
                    if let Some(outcome) = self.bad(BadRow {
                        line: *line,
                        column: None,
                        problem,
                    }) {
                        return Ok(Err(outcome));
                    }
                }
            }
        }
        if good.is_empty() {
            return Ok(Ok(true));
        }
        let batch = datafusion::arrow::compute::concat_batches(&schema, &good)
            .map_err(std::io::Error::other)?;
        Ok(Ok(self.send(batch.columns().to_vec())?))
    }
}
