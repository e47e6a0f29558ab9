//! Decoder of PostgreSQL's binary COPY stream straight into Arrow builders. Each column's
//! wire type is fixed by the cast the fetch query applies (see `types`), so one
//! decoder per Arrow type suffices. Any value the Arrow type cannot hold exactly fails the
//! fetch with the table, column, type and value.

use bytes::{Buf, Bytes, BytesMut};
use datafusion::arrow::array::{
    ArrayBuilder, ArrayRef, BooleanBuilder, Float32Builder, Float64Builder, Int16Builder,
    Int32Builder, Int64Builder, StringBuilder,
};
use datafusion::arrow::datatypes::{
    ArrowNativeType, ArrowNativeTypeOp, DataType, IntervalMonthDayNano, SchemaRef, i256,
};
use datafusion::arrow::record_batch::RecordBatch;

use crate::source::builders::{BatchColumns, ColumnBuilder, DecodeError};

const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";
/// Days and microseconds between the Unix epoch and PostgreSQL's (2000-01-01).
const PG_EPOCH_DAYS: i32 = 10_957;
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// Why a value could not be decoded; the caller adds table and column.
type ValueError = String;

/// The Arrow types a binary COPY column decodes into (see `types::arrow_type`).
fn decodable(column: &ColumnBuilder) -> bool {
    !matches!(
        column,
        ColumnBuilder::Int8(_)
            | ColumnBuilder::UInt8(_)
            | ColumnBuilder::UInt16(_)
            | ColumnBuilder::UInt32(_)
            | ColumnBuilder::UInt64(_)
    )
}

/// Decodes a binary COPY stream into record batches of about `batch_rows` rows.
pub struct CopyDecoder {
    columns: BatchColumns,
    buffer: BytesMut,
    header_done: bool,
    finished: bool,
    batch_rows: usize,
}

impl CopyDecoder {
    /// A decoder producing batches of `schema`; fails for an Arrow type it cannot decode.
    pub fn new(schema: SchemaRef, batch_rows: usize) -> Result<Self, DecodeError> {
        let columns = BatchColumns::new(schema, batch_rows)?;
        if let Some(i) = columns.columns.iter().position(|c| !decodable(c)) {
            return Err(format!(
                "no PostgreSQL decoder for Arrow type {}",
                columns.schema().field(i).data_type()
            )
            .into());
        }
        Ok(CopyDecoder {
            columns,
            buffer: BytesMut::new(),
            header_done: false,
            finished: false,
            batch_rows,
        })
    }

    /// Whether enough rows are buffered for a batch.
    pub fn batch_ready(&self) -> bool {
        self.columns.rows() >= self.batch_rows
    }

    /// Consumes one chunk of the stream. On a value error returns (column index, message).
    pub fn feed(&mut self, chunk: Bytes) -> Result<(), (Option<usize>, ValueError)> {
        if self.buffer.is_empty() {
            // Fast path: PostgreSQL sends one row per message, usually complete.
            let mut data = chunk;
            let used = self.parse(&data)?;
            data.advance(used);
            if !data.is_empty() {
                self.buffer.extend_from_slice(&data);
            }
        } else {
            self.buffer.extend_from_slice(&chunk);
            let data = std::mem::take(&mut self.buffer).freeze();
            let used = self.parse(&data)?;
            self.buffer.extend_from_slice(&data[used..]);
        }
        Ok(())
    }

    /// Parses whole rows from `data`; returns how many bytes were used.
    fn parse(&mut self, data: &[u8]) -> Result<usize, (Option<usize>, ValueError)> {
        let mut pos = 0;
        if !self.header_done {
            if data.len() < SIGNATURE.len() + 8 {
                return Ok(0);
            }
            if &data[..SIGNATURE.len()] != SIGNATURE {
                return Err((
                    None,
                    "the COPY stream does not start with the binary signature".into(),
                ));
            }
            let ext = i32::from_be_bytes(data[15..19].try_into().unwrap()).max(0) as usize;
            if data.len() < 19 + ext {
                return Ok(0);
            }
            pos = 19 + ext;
            self.header_done = true;
        }
        while pos < data.len() && !self.finished {
            let Some(end) =
                row_end(&data[pos..], self.columns.columns.len()).map_err(|e| (None, e))?
            else {
                break;
            };
            let row = &data[pos..pos + end];
            let count = i16::from_be_bytes([row[0], row[1]]);
            if count == -1 {
                self.finished = true;
            } else {
                let mut at = 2;
                for (index, column) in self.columns.columns.iter_mut().enumerate() {
                    let len = i32::from_be_bytes(row[at..at + 4].try_into().unwrap());
                    at += 4;
                    let value = if len < 0 {
                        None
                    } else {
                        let v = &row[at..at + len as usize];
                        at += len as usize;
                        Some(v)
                    };
                    append(column, value).map_err(|e| (Some(index), e))?;
                }
                self.columns.end_row();
            }
            pos += end;
        }
        Ok(pos)
    }

    /// Whether the stream's trailer was seen.
    pub fn finished(&self) -> bool {
        self.finished
    }

    /// Takes the rows decoded so far as a batch, if there are any.
    pub fn take_batch(&mut self) -> Result<Option<RecordBatch>, DecodeError> {
        self.columns.take_batch()
    }
}

/// Length of the complete row at the start of `data`, or `None` if more bytes are needed.
fn row_end(data: &[u8], columns: usize) -> Result<Option<usize>, String> {
    if data.len() < 2 {
        return Ok(None);
    }
    let count = i16::from_be_bytes([data[0], data[1]]);
    if count == -1 {
        return Ok(Some(2));
    }
    if count as usize != columns {
        return Err(format!(
            "the source sent {count} columns where {columns} were expected"
        ));
    }
    let mut pos = 2;
    for _ in 0..columns {
        if data.len() < pos + 4 {
            return Ok(None);
        }
        let len = i32::from_be_bytes(data[pos..pos + 4].try_into().unwrap());
        pos += 4;
        if len > 0 {
            pos += len as usize;
        }
    }
    Ok((pos <= data.len()).then_some(pos))
}

fn be<const N: usize>(value: &[u8], what: &str) -> Result<[u8; N], ValueError> {
    value
        .try_into()
        .map_err(|_| format!("a {what} value of {} bytes, expected {N}", value.len()))
}

/// Decodes one wire value into `column`'s builder.
fn append(column: &mut ColumnBuilder, value: Option<&[u8]>) -> Result<(), ValueError> {
    let Some(v) = value else {
        column.append_null();
        return Ok(());
    };
    match column {
        ColumnBuilder::Bool(b) => b.append_value(be::<1>(v, "bool")?[0] != 0),
        ColumnBuilder::Int16(b) => b.append_value(i16::from_be_bytes(be(v, "int2")?)),
        ColumnBuilder::Int32(b) => b.append_value(i32::from_be_bytes(be(v, "int4")?)),
        ColumnBuilder::Int64(b) => b.append_value(i64::from_be_bytes(be(v, "int8")?)),
        ColumnBuilder::Float32(b) => b.append_value(f32::from_be_bytes(be(v, "float4")?)),
        ColumnBuilder::Float64(b) => b.append_value(f64::from_be_bytes(be(v, "float8")?)),
        ColumnBuilder::Decimal128(b, scale) => {
            b.append_value(numeric_to_decimal::<i128>(v, *scale)?)
        }
        ColumnBuilder::Decimal256(b, scale) => {
            b.append_value(numeric_to_decimal::<i256>(v, *scale)?)
        }
        ColumnBuilder::Utf8(b) => b.append_value(
            std::str::from_utf8(v).map_err(|_| "text that is not valid UTF-8".to_owned())?,
        ),
        ColumnBuilder::Binary(b) => b.append_value(v),
        ColumnBuilder::Date(b) => {
            let days = i32::from_be_bytes(be(v, "date")?);
            // ±infinity are the extreme values; keep them as the extremes of Date32.
            b.append_value(match days {
                i32::MAX | i32::MIN => days,
                d => d
                    .checked_add(PG_EPOCH_DAYS)
                    .ok_or_else(|| format!("date {d} days from 2000-01-01 is out of range"))?,
            })
        }
        ColumnBuilder::Time(b) => b.append_value(i64::from_be_bytes(be(v, "time")?)),
        ColumnBuilder::Timestamp(b) => {
            let micros = i64::from_be_bytes(be(v, "timestamp")?);
            b.append_value(match micros {
                i64::MAX | i64::MIN => micros,
                m => m
                    .checked_add(PG_EPOCH_MICROS)
                    .ok_or_else(|| format!("timestamp {m} µs from 2000-01-01 is out of range"))?,
            })
        }
        ColumnBuilder::Interval(b) => {
            let v: [u8; 16] = be(v, "interval")?;
            let micros = i64::from_be_bytes(v[0..8].try_into().unwrap());
            let days = i32::from_be_bytes(v[8..12].try_into().unwrap());
            let months = i32::from_be_bytes(v[12..16].try_into().unwrap());
            let nanos = micros.checked_mul(1000).ok_or_else(|| {
                format!(
                    "an interval with {micros} µs, beyond the ±292 years of nanoseconds Arrow holds"
                )
            })?;
            b.append_value(IntervalMonthDayNano::new(months, days, nanos))
        }
        ColumnBuilder::Int8(_)
        | ColumnBuilder::UInt8(_)
        | ColumnBuilder::UInt16(_)
        | ColumnBuilder::UInt32(_)
        | ColumnBuilder::UInt64(_) => {
            // Refused when the decoder was made (`decodable`).
            return Err("a value of a type no PostgreSQL decoder handles".into());
        }
        ColumnBuilder::List(b, item) => {
            append_array(v, item)?;
            let values = item.finish();
            // Move the decoded elements into the list's child builder.
            append_values(b.values(), &values)?;
            b.append(true);
        }
    }
    Ok(())
}

/// Decodes a one-dimensional binary array into `item`'s builder.
fn append_array(v: &[u8], item: &mut ColumnBuilder) -> Result<(), ValueError> {
    let header = |at: usize| -> Result<i32, ValueError> {
        v.get(at..at + 4)
            .map(|b| i32::from_be_bytes(b.try_into().unwrap()))
            .ok_or_else(|| "a truncated array".to_owned())
    };
    let ndim = header(0)?;
    if ndim == 0 {
        return Ok(());
    }
    if ndim != 1 {
        return Err(format!(
            "a {ndim}-dimensional array; only one-dimensional arrays map to lists"
        ));
    }
    let count = header(12)?;
    let mut at = 20;
    for _ in 0..count {
        let len = header(at)?;
        at += 4;
        if len < 0 {
            append(item, None)?;
        } else {
            let end = at + len as usize;
            let bytes = v
                .get(at..end)
                .ok_or_else(|| "a truncated array".to_owned())?;
            append(item, Some(bytes))?;
            at = end;
        }
    }
    Ok(())
}

/// Appends every value of `values` to the dynamic builder `target` of the same type.
fn append_values(target: &mut Box<dyn ArrayBuilder>, values: &ArrayRef) -> Result<(), ValueError> {
    use datafusion::arrow::array::{Array, AsArray};
    use datafusion::arrow::datatypes::{Float32Type, Float64Type, Int16Type, Int32Type, Int64Type};
    macro_rules! copy_primitive {
        ($builder:ty, $arrow:ty) => {{
            let b = target.as_any_mut().downcast_mut::<$builder>().unwrap();
            b.extend(values.as_primitive::<$arrow>().iter());
        }};
    }
    match values.data_type() {
        DataType::Boolean => {
            let b = target
                .as_any_mut()
                .downcast_mut::<BooleanBuilder>()
                .unwrap();
            b.extend(values.as_boolean().iter());
        }
        DataType::Int16 => copy_primitive!(Int16Builder, Int16Type),
        DataType::Int32 => copy_primitive!(Int32Builder, Int32Type),
        DataType::Int64 => copy_primitive!(Int64Builder, Int64Type),
        DataType::Float32 => copy_primitive!(Float32Builder, Float32Type),
        DataType::Float64 => copy_primitive!(Float64Builder, Float64Type),
        DataType::Utf8 => {
            let b = target.as_any_mut().downcast_mut::<StringBuilder>().unwrap();
            b.extend(values.as_string::<i32>().iter());
        }
        other => return Err(format!("lists of {other} are not supported")),
    }
    debug_assert!(values.len() <= target.len());
    Ok(())
}

/// Converts a binary `numeric` to an integer scaled by `scale` (a decimal's raw value),
/// exactly or not at all.
fn numeric_to_decimal<T: ArrowNativeTypeOp + ArrowNativeType>(
    v: &[u8],
    scale: i8,
) -> Result<T, ValueError> {
    if v.len() < 8 {
        return Err("a truncated numeric".into());
    }
    let ndigits = u16::from_be_bytes([v[0], v[1]]) as usize;
    let weight = i16::from_be_bytes([v[2], v[3]]) as i32;
    let sign = u16::from_be_bytes([v[4], v[5]]);
    match sign {
        0xC000 => return Err("NaN, which a decimal cannot hold".into()),
        0xD000 => return Err("Infinity, which a decimal cannot hold".into()),
        0xF000 => return Err("-Infinity, which a decimal cannot hold".into()),
        _ => {}
    }
    if v.len() < 8 + 2 * ndigits {
        return Err("a truncated numeric".into());
    }
    let overflow = || "a numeric too large for the column's decimal type".to_owned();
    let rounds = || {
        format!(
            "a numeric with more than {scale} decimal places, which the column's decimal type \
             would round"
        )
    };
    let ten = T::usize_as(10);
    let pow10 = |n: i32| ten.pow_checked(n as u32).map_err(|_| overflow());
    // Horner's scheme over base-10000 digit groups, stopping at the column's scale: the
    // running value is in units of 10^last_exponent.
    let mut acc = T::ZERO;
    let mut last_exponent = 0;
    for i in 0..ndigits {
        let digit = u16::from_be_bytes([v[8 + 2 * i], v[9 + 2 * i]]) as usize;
        let exponent = 4 * (weight - i as i32) + scale as i32;
        let (step, contribution) = if exponent >= 0 {
            last_exponent = exponent;
            (4, digit)
        } else {
            let cut = -exponent;
            if cut >= 4 {
                if digit != 0 {
                    return Err(rounds());
                }
                continue;
            }
            let divisor = 10usize.pow(cut as u32);
            if !digit.is_multiple_of(divisor) {
                return Err(rounds());
            }
            last_exponent = 0;
            (4 - cut, digit / divisor)
        };
        acc = acc
            .mul_checked(pow10(step)?)
            .and_then(|a| a.add_checked(T::usize_as(contribution)))
            .map_err(|_| overflow())?;
    }
    acc = acc
        .mul_checked(pow10(last_exponent)?)
        .map_err(|_| overflow())?;
    if sign == 0x4000 {
        acc = acc.neg_checked().map_err(|_| overflow())?;
    }
    Ok(acc)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numeric(weight: i16, negative: bool, dscale: u16, digits: &[u16]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend((digits.len() as u16).to_be_bytes());
        v.extend(weight.to_be_bytes());
        v.extend((if negative { 0x4000u16 } else { 0 }).to_be_bytes());
        v.extend(dscale.to_be_bytes());
        for d in digits {
            v.extend(d.to_be_bytes());
        }
        v
    }

    #[test]
    fn numeric_decodes_exactly_at_the_column_scale() {
        // 12345.678 = [1, 2345, 6780] with weight 1
        let v = numeric(1, false, 3, &[1, 2345, 6780]);
        assert_eq!(numeric_to_decimal::<i128>(&v, 3).unwrap(), 12_345_678);
        assert_eq!(numeric_to_decimal::<i128>(&v, 5).unwrap(), 1_234_567_800);
        assert!(
            numeric_to_decimal::<i128>(&v, 2)
                .unwrap_err()
                .contains("would round")
        );
        let neg = numeric(0, true, 0, &[42]);
        assert_eq!(numeric_to_decimal::<i128>(&neg, 0).unwrap(), -42);
        // 0.0001 = [1] with weight -1
        let small = numeric(-1, false, 4, &[1]);
        assert_eq!(numeric_to_decimal::<i128>(&small, 4).unwrap(), 1);
        // 1e20 = [1] with weight 5
        let big = numeric(5, false, 0, &[1]);
        assert_eq!(
            numeric_to_decimal::<i256>(&big, 20).unwrap(),
            i256::from_i128(10).pow_checked(40).unwrap()
        );
        let zero = numeric(0, false, 2, &[]);
        assert_eq!(numeric_to_decimal::<i128>(&zero, 2).unwrap(), 0);
    }

    #[test]
    fn the_largest_numeric_38_10_fits() {
        // 9999999999999999999999999999.9999999999: groups past the scale are padded.
        let mut groups = vec![9999u16; 9];
        groups.push(9900);
        let v = numeric(6, true, 10, &groups);
        let expected = -(10i128.pow(38) - 1);
        assert_eq!(numeric_to_decimal::<i128>(&v, 10).unwrap(), expected);
    }

    #[test]
    fn numeric_specials_are_refused() {
        let mut nan = numeric(0, false, 0, &[]);
        nan[4..6].copy_from_slice(&0xC000u16.to_be_bytes());
        assert!(
            numeric_to_decimal::<i128>(&nan, 2)
                .unwrap_err()
                .starts_with("NaN")
        );
    }
}
