//! `POST /query`: one SQL statement, answered as JSON rows or as an Arrow IPC stream.
//! Results stream batch by batch, so a large result never sits whole in memory.

use axum::Extension;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;
use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::datatypes::{DataType, FieldRef, Int64Type, UInt64Type};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::arrow::json::writer::{
    Encoder, EncoderFactory, EncoderOptions, NullableEncoder, make_encoder,
};
use datafusion::arrow::json::{ArrayWriter, WriterBuilder};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::physical_plan::SendableRecordBatchStream;
use futures::{StreamExt, stream};

use super::AppState;
use super::error::ApiError;
use super::extract::JsonBody;
use super::model::{ColumnInfo, ErrorBody, QueryRequest, QueryResult};
use crate::error::Error;
use crate::server::auth::Caller;

/// The media type of an Arrow IPC stream.
pub const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";
/// The media type of newline-delimited JSON: the columns on the first line, then one row per
/// line as an array of values in column order (names can repeat; positions cannot).
pub const NDJSON: &str = "application/x-ndjson";

type BodyChunk = Result<Bytes, Error>;

/// Run one SQL statement.
#[utoipa::path(post, path = "/query", tag = "query",
    request_body = QueryRequest,
    responses(
        (status = 200, description = "The result",
            content(
                (QueryResult = "application/json"),
                (Vec<u8> = "application/vnd.apache.arrow.stream"),
                (String = "application/x-ndjson"),
            )),
        (status = 400, description = "The body or the SQL is not valid", body = ErrorBody),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 404, description = "A table or column does not exist", body = ErrorBody),
        (status = 409, description = "A connection with that name exists", body = ErrorBody),
        (status = 413, description = "The body is too large", body = ErrorBody),
        (status = 422, description = "A management function was given an invalid value",
            body = ErrorBody),
        (status = 502, description = "A source could not be read", body = ErrorBody),
    ))]
pub async fn query(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    JsonBody(request): JsonBody<QueryRequest>,
) -> Result<Response, ApiError> {
    if request.sql.trim().is_empty() {
        return Err(ApiError::bad_request(
            "request field 'sql' is empty; give one SQL statement",
        ));
    }
    let session = app.sessions.get(&caller)?;
    let frame = session.sql.sql(&request.sql).await?;
    let mut batches = crate::session::execute(frame).await.map_err(Error::from)?;
    let schema: SchemaRef = batches.schema();
    // Wait for the first batch before answering: a fetch that fails (the common failure)
    // then gets its own status instead of a cut-off 200.
    let first = batches.next().await.transpose().map_err(Error::from)?;
    let (body, media) = match Format::wanted(&headers) {
        Format::Arrow => (arrow_body(schema, first, batches)?, ARROW_STREAM),
        Format::Ndjson => (ndjson_body(&schema, first, batches)?, NDJSON),
        Format::Json => (json_body(&schema, first, batches)?, "application/json"),
    };
    let mut response = Response::new(body);
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(media));
    Ok(response)
}

/// How a result is written.
enum Format {
    Json,
    Ndjson,
    Arrow,
}

impl Format {
    /// The first of Arrow and NDJSON the client accepts; else one JSON document.
    fn wanted(headers: &HeaderMap) -> Format {
        let mut media = headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|v| v.split(';').next().map(str::trim));
        media
            .find_map(|m| {
                if m.eq_ignore_ascii_case(ARROW_STREAM) {
                    Some(Format::Arrow)
                } else if m.eq_ignore_ascii_case(NDJSON) {
                    Some(Format::Ndjson)
                } else {
                    None
                }
            })
            .unwrap_or(Format::Json)
    }
}

/// The rest of the batches after `first`, as a stream of results.
fn rest(
    first: Option<RecordBatch>,
    batches: SendableRecordBatchStream,
) -> impl futures::Stream<Item = Result<RecordBatch, Error>> + Send {
    stream::iter(first.map(Ok))
        .chain(batches)
        .map(|batch| batch.map_err(Error::from))
}

fn arrow_body(
    schema: SchemaRef,
    first: Option<RecordBatch>,
    batches: SendableRecordBatchStream,
) -> Result<Body, Error> {
    let ipc = |e| Error::Usage(format!("cannot encode the result as Arrow IPC: {e}"));
    let mut writer = StreamWriter::try_new(Vec::new(), &schema).map_err(ipc)?;
    let header = Bytes::from(std::mem::take(writer.get_mut()));
    let writer = std::sync::Arc::new(std::sync::Mutex::new(writer));
    let end = std::sync::Arc::clone(&writer);
    let chunks = rest(first, batches).map(move |batch| {
        let mut writer = writer.lock().unwrap_or_else(|e| e.into_inner());
        writer.write(&batch?).map_err(ipc)?;
        Ok(Bytes::from(std::mem::take(writer.get_mut())))
    });
    // The end-of-stream marker tells readers the result is whole.
    let finish = stream::once(async move {
        let mut writer = end.lock().unwrap_or_else(|e| e.into_inner());
        writer.finish().map_err(ipc)?;
        Ok(Bytes::from(std::mem::take(writer.get_mut())))
    });
    Ok(body_of(
        stream::iter([Ok(header)]).chain(chunks).chain(finish),
    ))
}

/// The result's columns as a JSON array of `ColumnInfo`.
fn columns_json(schema: &SchemaRef) -> Result<String, Error> {
    let columns: Vec<ColumnInfo> = schema
        .fields()
        .iter()
        .map(|f| ColumnInfo {
            name: f.name().clone(),
            data_type: f.data_type().to_string(),
            nullable: f.is_nullable(),
        })
        .collect();
    serde_json::to_string(&columns)
        .map_err(|e| Error::Usage(format!("cannot encode the result columns: {e}")))
}

fn ndjson_body(
    schema: &SchemaRef,
    first: Option<RecordBatch>,
    batches: SendableRecordBatchStream,
) -> Result<Body, Error> {
    let head = Bytes::from(format!("{{\"columns\":{}}}\n", columns_json(schema)?));
    let rows = rest(first, batches).map(|batch| batch.and_then(|b| ndjson_rows(&b)));
    Ok(body_of(stream::iter([Ok(head)]).chain(rows)))
}

/// The rows of `batch`, each a JSON array of its values on a line of its own.
fn ndjson_rows(batch: &RecordBatch) -> Result<Bytes, Error> {
    let json = |e| Error::Usage(format!("cannot encode the result as JSON: {e}"));
    let options = EncoderOptions::default()
        .with_explicit_nulls(true)
        .with_encoder_factory(std::sync::Arc::new(ExactNumbers));
    let fields = batch.schema().fields().clone();
    let mut encoders = fields
        .iter()
        .zip(batch.columns())
        .map(|(field, column)| make_encoder(field, column.as_ref(), &options))
        .collect::<Result<Vec<_>, _>>()
        .map_err(json)?;
    let mut out = Vec::new();
    for row in 0..batch.num_rows() {
        out.push(b'[');
        for (i, encoder) in encoders.iter_mut().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            if encoder.is_null(row) {
                out.extend_from_slice(b"null");
            } else {
                encoder.encode(row, &mut out);
            }
        }
        out.extend_from_slice(b"]\n");
    }
    Ok(Bytes::from(out))
}

fn json_body(
    schema: &SchemaRef,
    first: Option<RecordBatch>,
    batches: SendableRecordBatchStream,
) -> Result<Body, Error> {
    let head = Bytes::from(format!(
        "{{\"columns\":{},\"rows\":[",
        columns_json(schema)?
    ));
    let rows = rest(first, batches).scan(false, |wrote_any, batch| {
        let chunk = batch.and_then(|batch| json_rows(&batch, wrote_any));
        futures::future::ready(Some(chunk))
    });
    Ok(body_of(
        stream::iter([Ok(head)])
            .chain(rows)
            .chain(stream::iter([Ok(Bytes::from_static(b"]}"))])),
    ))
}

/// The rows of `batch` as JSON objects separated by commas (one before the first when
/// rows were written already). A missing value is an explicit null.
fn json_rows(batch: &RecordBatch, wrote_any: &mut bool) -> Result<Bytes, Error> {
    if batch.num_rows() == 0 {
        return Ok(Bytes::new());
    }
    let mut out = Vec::new();
    let mut writer: ArrayWriter<&mut Vec<u8>> = WriterBuilder::new()
        .with_explicit_nulls(true)
        .with_encoder_factory(std::sync::Arc::new(ExactIntegers))
        .build(&mut out);
    let json = |e| Error::Usage(format!("cannot encode the result as JSON: {e}"));
    writer.write(batch).map_err(json)?;
    writer.finish().map_err(json)?;
    drop(writer);
    // The writer frames the rows in [ ]; the rows of all batches share one array.
    let inner = &out[1..out.len().saturating_sub(1).max(1)];
    let mut chunk = Vec::with_capacity(inner.len() + 1);
    if *wrote_any {
        chunk.push(b',');
    }
    chunk.extend_from_slice(inner);
    *wrote_any = true;
    Ok(Bytes::from(chunk))
}

/// The largest integer every JSON parser reads exactly (a double's 53-bit mantissa).
const EXACT_IN_JSON: u64 = 1 << 53;

/// Writes 64-bit integers beyond ±2^53 as strings, so no client rounds them.
#[derive(Debug)]
struct ExactIntegers;

impl EncoderFactory for ExactIntegers {
    fn make_default_encoder<'a>(
        &self,
        _field: &'a FieldRef,
        array: &'a dyn Array,
        _options: &'a EncoderOptions,
    ) -> Result<Option<NullableEncoder<'a>>, ArrowError> {
        let encoder: Box<dyn Encoder + 'a> = match array.data_type() {
            DataType::Int64 => Box::new(IntegerEncoder(
                array.as_primitive::<Int64Type>().values().clone(),
            )),
            DataType::UInt64 => Box::new(IntegerEncoder(
                array.as_primitive::<UInt64Type>().values().clone(),
            )),
            _ => return Ok(None),
        };
        Ok(Some(NullableEncoder::new(encoder, array.nulls().cloned())))
    }
}

/// As `ExactIntegers`, and decimals as strings of their digits (`"15.50"`), which keeps
/// their scale and every digit; for NDJSON, which browsers read.
#[derive(Debug)]
struct ExactNumbers;

impl EncoderFactory for ExactNumbers {
    fn make_default_encoder<'a>(
        &self,
        field: &'a FieldRef,
        array: &'a dyn Array,
        options: &'a EncoderOptions,
    ) -> Result<Option<NullableEncoder<'a>>, ArrowError> {
        let encoder: Box<dyn Encoder + 'a> = match array.data_type() {
            DataType::Decimal32(..)
            | DataType::Decimal64(..)
            | DataType::Decimal128(..)
            | DataType::Decimal256(..) => Box::new(DecimalText(array)),
            _ => return ExactIntegers.make_default_encoder(field, array, options),
        };
        Ok(Some(NullableEncoder::new(encoder, array.nulls().cloned())))
    }
}

/// A decimal as a JSON string of its digits.
struct DecimalText<'a>(&'a dyn Array);

impl Encoder for DecimalText<'_> {
    fn encode(&mut self, idx: usize, out: &mut Vec<u8>) {
        use datafusion::arrow::datatypes::{
            Decimal32Type, Decimal64Type, Decimal128Type, Decimal256Type,
        };
        let text = match self.0.data_type() {
            DataType::Decimal32(..) => self.0.as_primitive::<Decimal32Type>().value_as_string(idx),
            DataType::Decimal64(..) => self.0.as_primitive::<Decimal64Type>().value_as_string(idx),
            DataType::Decimal128(..) => {
                self.0.as_primitive::<Decimal128Type>().value_as_string(idx)
            }
            _ => self.0.as_primitive::<Decimal256Type>().value_as_string(idx),
        };
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
    }
}

struct IntegerEncoder<T: datafusion::arrow::datatypes::ArrowNativeType>(
    datafusion::arrow::buffer::ScalarBuffer<T>,
);

impl<T> Encoder for IntegerEncoder<T>
where
    T: datafusion::arrow::datatypes::ArrowNativeType + std::fmt::Display + Into<i128>,
{
    fn encode(&mut self, idx: usize, out: &mut Vec<u8>) {
        let value = self.0[idx];
        let exact = Into::<i128>::into(value).unsigned_abs() <= u128::from(EXACT_IN_JSON);
        if exact {
            out.extend_from_slice(value.to_string().as_bytes());
        } else {
            out.extend_from_slice(format!("\"{value}\"").as_bytes());
        }
    }
}

/// A streamed body; an error part-way aborts the response, so a client never mistakes a
/// cut-off result for a whole one.
fn body_of(chunks: impl futures::Stream<Item = BodyChunk> + Send + 'static) -> Body {
    Body::from_stream(chunks)
}
