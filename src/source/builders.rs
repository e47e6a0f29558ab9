//! Typed Arrow builders for a batch of a fixed schema, shared by every source's decoder: a
//! decoder converts each value its own way (PostgreSQL's binary COPY, a row API's cells)
//! and appends it to the column's builder here, which also makes NULLs and batches.

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayBuilder, ArrayRef, BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder,
    Decimal256Builder, Float32Builder, Float64Builder, Int8Builder, Int16Builder, Int32Builder,
    Int64Builder, IntervalMonthDayNanoBuilder, ListBuilder, StringBuilder,
    Time64MicrosecondBuilder, TimestampMicrosecondBuilder, UInt8Builder, UInt16Builder,
    UInt32Builder, UInt64Builder,
};
use datafusion::arrow::datatypes::{DataType, FieldRef, IntervalUnit, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;

/// Why a value or a column could not be decoded; the caller names table and column.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeError(pub String);

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<String> for DecodeError {
    fn from(message: String) -> Self {
        DecodeError(message)
    }
}

impl From<&str> for DecodeError {
    fn from(message: &str) -> Self {
        DecodeError(message.to_owned())
    }
}

/// One column's builder, by the Arrow type it builds.
pub enum ColumnBuilder {
    /// Boolean.
    Bool(BooleanBuilder),
    /// Int8.
    Int8(Int8Builder),
    /// Int16.
    Int16(Int16Builder),
    /// Int32.
    Int32(Int32Builder),
    /// Int64.
    Int64(Int64Builder),
    /// UInt8.
    UInt8(UInt8Builder),
    /// UInt16.
    UInt16(UInt16Builder),
    /// UInt32.
    UInt32(UInt32Builder),
    /// UInt64.
    UInt64(UInt64Builder),
    /// Float32.
    Float32(Float32Builder),
    /// Float64.
    Float64(Float64Builder),
    /// Decimal128 with its scale.
    Decimal128(Decimal128Builder, i8),
    /// Decimal256 with its scale.
    Decimal256(Decimal256Builder, i8),
    /// Utf8.
    Utf8(StringBuilder),
    /// Binary.
    Binary(BinaryBuilder),
    /// Date32.
    Date(Date32Builder),
    /// Time64 in microseconds.
    Time(Time64MicrosecondBuilder),
    /// Timestamp in microseconds, with its zone.
    Timestamp(TimestampMicrosecondBuilder),
    /// Interval (months, days, nanoseconds).
    Interval(IntervalMonthDayNanoBuilder),
    /// A list, and the builder its elements are decoded into before they are moved over.
    List(ListBuilder<Box<dyn ArrayBuilder>>, Box<ColumnBuilder>),
}

impl ColumnBuilder {
    /// A builder of `data_type` with room for `capacity` values.
    pub fn new(data_type: &DataType, capacity: usize) -> Result<Self, DecodeError> {
        let decimal = |e: datafusion::arrow::error::ArrowError| DecodeError(e.to_string());
        Ok(match data_type {
            DataType::Boolean => Self::Bool(BooleanBuilder::with_capacity(capacity)),
            DataType::Int8 => Self::Int8(Int8Builder::with_capacity(capacity)),
            DataType::Int16 => Self::Int16(Int16Builder::with_capacity(capacity)),
            DataType::Int32 => Self::Int32(Int32Builder::with_capacity(capacity)),
            DataType::Int64 => Self::Int64(Int64Builder::with_capacity(capacity)),
            DataType::UInt8 => Self::UInt8(UInt8Builder::with_capacity(capacity)),
            DataType::UInt16 => Self::UInt16(UInt16Builder::with_capacity(capacity)),
            DataType::UInt32 => Self::UInt32(UInt32Builder::with_capacity(capacity)),
            DataType::UInt64 => Self::UInt64(UInt64Builder::with_capacity(capacity)),
            DataType::Float32 => Self::Float32(Float32Builder::with_capacity(capacity)),
            DataType::Float64 => Self::Float64(Float64Builder::with_capacity(capacity)),
            DataType::Decimal128(p, s) => Self::Decimal128(
                Decimal128Builder::with_capacity(capacity)
                    .with_precision_and_scale(*p, *s)
                    .map_err(decimal)?,
                *s,
            ),
            DataType::Decimal256(p, s) => Self::Decimal256(
                Decimal256Builder::with_capacity(capacity)
                    .with_precision_and_scale(*p, *s)
                    .map_err(decimal)?,
                *s,
            ),
            DataType::Utf8 => Self::Utf8(StringBuilder::with_capacity(capacity, capacity * 16)),
            DataType::Binary => Self::Binary(BinaryBuilder::with_capacity(capacity, capacity * 16)),
            DataType::Date32 => Self::Date(Date32Builder::with_capacity(capacity)),
            DataType::Time64(TimeUnit::Microsecond) => {
                Self::Time(Time64MicrosecondBuilder::with_capacity(capacity))
            }
            DataType::Timestamp(TimeUnit::Microsecond, tz) => Self::Timestamp(
                TimestampMicrosecondBuilder::with_capacity(capacity).with_timezone_opt(tz.clone()),
            ),
            DataType::Interval(IntervalUnit::MonthDayNano) => {
                Self::Interval(IntervalMonthDayNanoBuilder::with_capacity(capacity))
            }
            DataType::List(field) => {
                let item = ColumnBuilder::new(field.data_type(), 0)?;
                let values = datafusion::arrow::array::make_builder(field.data_type(), capacity);
                Self::List(
                    ListBuilder::new(values).with_field(FieldRef::clone(field)),
                    Box::new(item),
                )
            }
            other => return Err(format!("no decoder builds Arrow type {other}").into()),
        })
    }

    /// Appends a NULL.
    pub fn append_null(&mut self) {
        match self {
            Self::Bool(b) => b.append_null(),
            Self::Int8(b) => b.append_null(),
            Self::Int16(b) => b.append_null(),
            Self::Int32(b) => b.append_null(),
            Self::Int64(b) => b.append_null(),
            Self::UInt8(b) => b.append_null(),
            Self::UInt16(b) => b.append_null(),
            Self::UInt32(b) => b.append_null(),
            Self::UInt64(b) => b.append_null(),
            Self::Float32(b) => b.append_null(),
            Self::Float64(b) => b.append_null(),
            Self::Decimal128(b, _) => b.append_null(),
            Self::Decimal256(b, _) => b.append_null(),
            Self::Utf8(b) => b.append_null(),
            Self::Binary(b) => b.append_null(),
            Self::Date(b) => b.append_null(),
            Self::Time(b) => b.append_null(),
            Self::Timestamp(b) => b.append_null(),
            Self::Interval(b) => b.append_null(),
            Self::List(b, _) => b.append(false),
        }
    }

    /// Takes the values appended so far as an array.
    pub fn finish(&mut self) -> ArrayRef {
        match self {
            Self::Bool(b) => Arc::new(b.finish()),
            Self::Int8(b) => Arc::new(b.finish()),
            Self::Int16(b) => Arc::new(b.finish()),
            Self::Int32(b) => Arc::new(b.finish()),
            Self::Int64(b) => Arc::new(b.finish()),
            Self::UInt8(b) => Arc::new(b.finish()),
            Self::UInt16(b) => Arc::new(b.finish()),
            Self::UInt32(b) => Arc::new(b.finish()),
            Self::UInt64(b) => Arc::new(b.finish()),
            Self::Float32(b) => Arc::new(b.finish()),
            Self::Float64(b) => Arc::new(b.finish()),
            Self::Decimal128(b, _) => Arc::new(b.finish()),
            Self::Decimal256(b, _) => Arc::new(b.finish()),
            Self::Utf8(b) => Arc::new(b.finish()),
            Self::Binary(b) => Arc::new(b.finish()),
            Self::Date(b) => Arc::new(b.finish()),
            Self::Time(b) => Arc::new(b.finish()),
            Self::Timestamp(b) => Arc::new(b.finish()),
            Self::Interval(b) => Arc::new(b.finish()),
            Self::List(b, _) => Arc::new(b.finish()),
        }
    }
}

/// The builders of one batch of `schema`, and how many rows they hold.
pub struct BatchColumns {
    schema: SchemaRef,
    /// One builder per field of the schema, in order.
    pub columns: Vec<ColumnBuilder>,
    rows: usize,
}

impl BatchColumns {
    /// Builders for `schema`, each with room for `capacity` values.
    pub fn new(schema: SchemaRef, capacity: usize) -> Result<Self, DecodeError> {
        let columns = schema
            .fields()
            .iter()
            .map(|f| ColumnBuilder::new(f.data_type(), capacity))
            .collect::<Result<_, _>>()?;
        Ok(BatchColumns {
            schema,
            columns,
            rows: 0,
        })
    }

    /// The schema of the batches.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Rows appended since the last batch.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Counts a finished row.
    pub fn end_row(&mut self) {
        self.rows += 1;
    }

    /// Takes the rows appended so far as a batch, if there are any.
    pub fn take_batch(&mut self) -> Result<Option<RecordBatch>, DecodeError> {
        if self.rows == 0 {
            return Ok(None);
        }
        self.rows = 0;
        let arrays: Vec<ArrayRef> = self.columns.iter_mut().map(ColumnBuilder::finish).collect();
        RecordBatch::try_new(Arc::clone(&self.schema), arrays)
            .map(Some)
            .map_err(|e| format!("decoded columns do not form a batch: {e}").into())
    }
}
