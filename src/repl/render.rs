//! Writes query results: aligned tables (column types in the header, NULL shown as such,
//! long values cut to the terminal's width, the first N rows of large results), CSV, JSON,
//! newline-delimited JSON and one line per value. Results stream: only the rows a table
//! shows are kept in memory.

use std::io::Write;

use comfy_table::{Cell, ContentArrangement, Table};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::physical_plan::SendableRecordBatchStream;
use futures::StreamExt;

use crate::error::{Error, Result};

/// How results are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Mode {
    /// Aligned table.
    #[default]
    Table,
    /// Comma-separated values with a header line.
    Csv,
    /// One JSON array of objects.
    Json,
    /// One JSON object per line.
    Ndjson,
    /// One `column = value` line per value, rows separated by a blank line.
    Line,
}

impl Mode {
    /// Every mode, as `.mode` and `--format` spell them.
    pub const NAMES: &'static str = "table, csv, json, ndjson, line";

    /// The mode called `name`.
    pub fn parse(name: &str) -> Option<Mode> {
        Some(match name.to_ascii_lowercase().as_str() {
            "table" | "box" => Mode::Table,
            "csv" => Mode::Csv,
            "json" => Mode::Json,
            "ndjson" | "jsonl" => Mode::Ndjson,
            "line" => Mode::Line,
            _ => return None,
        })
    }
}

/// What the result looked like, for the line after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rendered {
    /// Rows in the result.
    pub rows: u64,
    /// Rows written (fewer than `rows` when a table was cut at its row limit).
    pub shown: u64,
    /// Whether the statement returns columns at all (DDL and SET do not).
    pub has_columns: bool,
}

/// How a result is written.
#[derive(Debug, Clone, Copy)]
pub struct RenderOptions {
    /// Output mode.
    pub mode: Mode,
    /// Rows a table shows at most; the rest are counted.
    pub max_rows: Option<usize>,
    /// Dim NULLs and fit the table to the terminal's width.
    pub terminal: bool,
}

const NULL: &str = "NULL";
/// Narrower terminals get tables at their natural width (the terminal wraps them).
const MIN_FIT_WIDTH: u16 = 20;

fn output_error(e: impl std::fmt::Display) -> Error {
    Error::Io {
        context: "cannot write the result".into(),
        path: "the output".into(),
        source: std::io::Error::other(e.to_string()),
    }
}

/// Writes every batch of `stream` to `out` in the chosen mode.
pub async fn render(
    mut stream: SendableRecordBatchStream,
    out: &mut dyn Write,
    options: RenderOptions,
) -> Result<Rendered> {
    let schema = stream.schema();
    let has_columns = !schema.fields().is_empty();
    let mut rows = 0u64;
    let mut shown = 0u64;
    let mut writer = Writer::new(options, &schema, out)?;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        rows += batch.num_rows() as u64;
        shown += writer.write(&batch)? as u64;
    }
    writer.finish()?;
    Ok(Rendered {
        rows,
        shown,
        has_columns,
    })
}

/// The per-mode writer.
enum Writer<'a> {
    Table {
        schema: SchemaRef,
        kept: Vec<RecordBatch>,
        room: usize,
        terminal: bool,
        out: &'a mut dyn Write,
    },
    Csv {
        writer: Box<datafusion::arrow::csv::Writer<&'a mut dyn Write>>,
        schema: SchemaRef,
        wrote: bool,
    },
    Json(datafusion::arrow::json::ArrayWriter<&'a mut dyn Write>),
    Ndjson(datafusion::arrow::json::LineDelimitedWriter<&'a mut dyn Write>),
    Line {
        first: bool,
        out: &'a mut dyn Write,
    },
}

impl<'a> Writer<'a> {
    fn new(options: RenderOptions, schema: &SchemaRef, out: &'a mut dyn Write) -> Result<Self> {
        Ok(match options.mode {
            Mode::Table => Writer::Table {
                schema: schema.clone(),
                kept: Vec::new(),
                room: options.max_rows.unwrap_or(usize::MAX),
                terminal: options.terminal,
                out,
            },
            // The header comes with the first batch (or at the end), not before the
            // statement has run: a fetch's progress bar must not land between the two.
            Mode::Csv => Writer::Csv {
                writer: Box::new(
                    datafusion::arrow::csv::WriterBuilder::new()
                        .with_header(true)
                        .with_null(String::new())
                        .build(out),
                ),
                schema: schema.clone(),
                wrote: false,
            },
            // NULLs are written as `null`, not left out, so every object has every column.
            Mode::Json => Writer::Json(
                datafusion::arrow::json::WriterBuilder::new()
                    .with_explicit_nulls(true)
                    .build(out),
            ),
            Mode::Ndjson => Writer::Ndjson(
                datafusion::arrow::json::WriterBuilder::new()
                    .with_explicit_nulls(true)
                    .build(out),
            ),
            Mode::Line => Writer::Line { first: true, out },
        })
    }

    /// Writes (or keeps) one batch; returns how many of its rows will be shown.
    fn write(&mut self, batch: &RecordBatch) -> Result<usize> {
        match self {
            Writer::Table { kept, room, .. } => {
                let take = batch.num_rows().min(*room);
                if take > 0 {
                    kept.push(batch.slice(0, take));
                    *room -= take;
                }
                Ok(take)
            }
            Writer::Csv { writer, wrote, .. } => {
                *wrote = true;
                writer
                    .write(batch)
                    .map_err(output_error)
                    .map(|_| batch.num_rows())
            }
            Writer::Json(writer) => writer
                .write(batch)
                .map_err(output_error)
                .map(|_| batch.num_rows()),
            Writer::Ndjson(writer) => writer
                .write(batch)
                .map_err(output_error)
                .map(|_| batch.num_rows()),
            Writer::Line { first, out } => {
                write_lines(batch, first, out)?;
                Ok(batch.num_rows())
            }
        }
    }

    fn finish(self) -> Result<()> {
        match self {
            Writer::Table {
                schema,
                kept,
                terminal,
                out,
                ..
            } => {
                if !schema.fields().is_empty() {
                    let table = table(&schema, &kept, terminal)?;
                    writeln!(out, "{table}").map_err(output_error)?;
                }
            }
            Writer::Csv {
                mut writer,
                schema,
                wrote,
            } => {
                // The header, even when no row came.
                if !wrote && !schema.fields().is_empty() {
                    writer
                        .write(&RecordBatch::new_empty(schema))
                        .map_err(output_error)?;
                }
                // Every `write` flushes, so nothing is left to lose here.
                let _ = writer.into_inner();
            }
            Writer::Json(mut writer) => {
                writer.finish().map_err(output_error)?;
                writeln!(writer.into_inner()).map_err(output_error)?;
            }
            Writer::Ndjson(mut writer) => writer.finish().map_err(output_error)?,
            Writer::Line { .. } => {}
        }
        Ok(())
    }
}

fn formatters<'b>(
    batch: &'b RecordBatch,
    options: &'b FormatOptions<'b>,
) -> Result<Vec<ArrayFormatter<'b>>> {
    batch
        .columns()
        .iter()
        .map(|column| ArrayFormatter::try_new(column.as_ref(), options))
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| Error::Sql(e.into()))
}

/// Builds the aligned table of the kept rows.
fn table(schema: &SchemaRef, batches: &[RecordBatch], terminal: bool) -> Result<Table> {
    let mut table = Table::new();
    table.load_preset("||--+-++|    ++++++");
    // Fit to the terminal only when it reports a usable width: some pseudo-terminals
    // say 0 columns, which would squeeze every column to one character.
    if terminal && table.width().is_some_and(|width| width >= MIN_FIT_WIDTH) {
        table.set_content_arrangement(ContentArrangement::Dynamic);
        table.set_truncation_indicator("…");
    }
    table.set_header(schema.fields().iter().map(|field| {
        Cell::new(format!(
            "{}\n{}",
            field.name(),
            type_label(field.data_type())
        ))
    }));
    // EXPLAIN's plans are indented trees, one operator a line: keep their lines.
    let plan = is_plan(schema);
    let options = FormatOptions::default().with_null(NULL);
    for batch in batches {
        let formatters = formatters(batch, &options)?;
        for row in 0..batch.num_rows() {
            let cells = batch
                .columns()
                .iter()
                .zip(&formatters)
                .map(|(column, format)| {
                    if column.is_null(row) {
                        let cell = Cell::new(NULL);
                        if terminal {
                            cell.add_attribute(comfy_table::Attribute::Dim)
                        } else {
                            cell
                        }
                    } else if plan {
                        Cell::new(format.value(row).to_string().replace('\t', "    "))
                    } else {
                        // Control characters would break the table's lines.
                        Cell::new(
                            format
                                .value(row)
                                .to_string()
                                .replace(['\n', '\r', '\t'], " "),
                        )
                    }
                });
            table.add_row(cells);
            if terminal
                && !plan
                && let Some(last) = table.row_mut(table.row_count() - 1)
            {
                last.max_height(1);
            }
        }
    }
    Ok(table)
}

/// Whether `schema` is that of an `EXPLAIN` result: `plan_type` and `plan`.
fn is_plan(schema: &SchemaRef) -> bool {
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    names == ["plan_type", "plan"]
}

/// A column type as the table header shows it.
fn type_label(data_type: &datafusion::arrow::datatypes::DataType) -> String {
    use datafusion::arrow::datatypes::DataType;
    match data_type {
        DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8 => "Utf8".into(),
        DataType::Binary | DataType::BinaryView | DataType::LargeBinary => "Binary".into(),
        other => other.to_string(),
    }
}

/// Writes each row as `column = value` lines, names right-aligned.
fn write_lines(batch: &RecordBatch, first: &mut bool, out: &mut dyn Write) -> Result<()> {
    let options = FormatOptions::default().with_null(NULL);
    let formatters = formatters(batch, &options)?;
    let schema = batch.schema();
    let width = schema
        .fields()
        .iter()
        .map(|f| f.name().chars().count())
        .max()
        .unwrap_or(0);
    for row in 0..batch.num_rows() {
        if !std::mem::take(first) {
            writeln!(out).map_err(output_error)?;
        }
        for (field, format) in schema.fields().iter().zip(&formatters) {
            writeln!(out, "{:>width$} = {}", field.name(), format.value(row))
                .map_err(output_error)?;
        }
    }
    Ok(())
}
