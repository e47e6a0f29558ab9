//! Row-at-a-time batch building for sources read through a row API (MySQL/MariaDB,
//! SQLite). A source hands each value as a [`Cell`]; the builder converts it to the
//! column's Arrow type exactly, or says why it cannot.

use datafusion::arrow::datatypes::{SchemaRef, i256};
use datafusion::arrow::record_batch::RecordBatch;

use super::BATCH_ROWS;
use super::builders::{BatchColumns, ColumnBuilder, DecodeError};

/// One value as a source delivers it.
#[derive(Clone, Copy, Debug)]
pub enum Cell<'a> {
    /// SQL NULL.
    Null,
    /// A signed integer.
    Int(i64),
    /// An unsigned integer.
    UInt(u64),
    /// A double.
    Float(f64),
    /// A single.
    Float32(f32),
    /// Text.
    Text(&'a str),
    /// Bytes.
    Bytes(&'a [u8]),
    /// A date, as days since 1970-01-01.
    Date(i32),
    /// A date and time, as microseconds since 1970-01-01 00:00:00.
    Timestamp(i64),
}

impl Cell<'_> {
    /// The value as shown in error messages (bytes as a length).
    fn describe(&self) -> String {
        match self {
            Cell::Null => "NULL".into(),
            Cell::Int(v) => v.to_string(),
            Cell::UInt(v) => v.to_string(),
            Cell::Float(v) => v.to_string(),
            Cell::Float32(v) => v.to_string(),
            Cell::Text(t) if t.chars().count() > 40 => {
                format!("'{}…'", t.chars().take(40).collect::<String>())
            }
            Cell::Text(t) => format!("'{t}'"),
            Cell::Bytes(b) => format!("{} bytes of binary data", b.len()),
            Cell::Date(days) => format!("the date {days} days from 1970-01-01"),
            Cell::Timestamp(micros) => format!("the timestamp {micros} µs from 1970-01-01"),
        }
    }
}

/// Largest integer magnitude a double holds exactly.
const EXACT_DOUBLE_INT: u64 = 1 << 53;

/// Builds record batches of a fixed schema from cells.
pub struct BatchBuilder {
    columns: BatchColumns,
}

impl BatchBuilder {
    /// A builder for `schema`; fails for an Arrow type no row source produces.
    pub fn new(schema: SchemaRef) -> Result<Self, DecodeError> {
        let columns = BatchColumns::new(schema, BATCH_ROWS)?;
        if let Some(i) = columns.columns.iter().position(|c| {
            matches!(
                c,
                ColumnBuilder::Time(_) | ColumnBuilder::Interval(_) | ColumnBuilder::List(..)
            )
        }) {
            let schema = columns.schema();
            return Err(format!(
                "no row decoder for Arrow type {}",
                schema.field(i).data_type()
            )
            .into());
        }
        Ok(BatchBuilder { columns })
    }

    /// Rows appended since the last batch.
    pub fn rows(&self) -> usize {
        self.columns.rows()
    }

    /// Appends `cell` to column `index`; the error describes the value and the problem.
    pub fn append(&mut self, index: usize, cell: Cell<'_>) -> Result<(), DecodeError> {
        append(&mut self.columns.columns[index], cell)
            .map_err(|problem| format!("{}, {problem}", cell.describe()).into())
    }

    /// Counts a finished row.
    pub fn end_row(&mut self) {
        self.columns.end_row();
    }

    /// Takes the rows appended so far as a batch, if there are any.
    pub fn take_batch(&mut self) -> Result<Option<RecordBatch>, DecodeError> {
        self.columns.take_batch()
    }
}

fn int_of(cell: Cell<'_>) -> Result<i128, String> {
    match cell {
        Cell::Int(v) => Ok(i128::from(v)),
        Cell::UInt(v) => Ok(i128::from(v)),
        // A whole number sent as a decimal (MySQL's SUM of integers), converted exactly.
        Cell::Text(text) => text
            .trim()
            .parse::<i128>()
            .map_err(|_| "which is not an integer".to_owned()),
        _ => Err("which is not an integer".into()),
    }
}

fn narrow<T: TryFrom<i128>>(cell: Cell<'_>) -> Result<T, String> {
    T::try_from(int_of(cell)?).map_err(|_| "which is out of the column type's range".to_owned())
}

macro_rules! append_int {
    ($builder:expr, $cell:expr) => {{
        $builder.append_value(narrow($cell)?);
        Ok(())
    }};
}

fn append(column: &mut ColumnBuilder, cell: Cell<'_>) -> Result<(), String> {
    if let Cell::Null = cell {
        column.append_null();
        return Ok(());
    }
    match column {
        ColumnBuilder::Bool(b) => match int_of(cell)? {
            0 => b.append_value(false),
            1 => b.append_value(true),
            _ => return Err("which is not a boolean (0 or 1)".into()),
        },
        ColumnBuilder::Int8(b) => return append_int!(b, cell),
        ColumnBuilder::Int16(b) => return append_int!(b, cell),
        ColumnBuilder::Int32(b) => return append_int!(b, cell),
        ColumnBuilder::Int64(b) => return append_int!(b, cell),
        ColumnBuilder::UInt8(b) => return append_int!(b, cell),
        ColumnBuilder::UInt16(b) => return append_int!(b, cell),
        ColumnBuilder::UInt32(b) => return append_int!(b, cell),
        ColumnBuilder::UInt64(b) => return append_int!(b, cell),
        ColumnBuilder::Float32(b) => match cell {
            Cell::Float32(v) => b.append_value(v),
            _ => return Err("which is not a single-precision float".into()),
        },
        ColumnBuilder::Float64(b) => match cell {
            Cell::Float(v) => b.append_value(v),
            Cell::Float32(v) => b.append_value(f64::from(v)),
            Cell::Int(v) if v.unsigned_abs() <= EXACT_DOUBLE_INT => b.append_value(v as f64),
            Cell::Int(_) => return Err("an integer beyond 2^53, which a double would round".into()),
            _ => return Err("which is not a number".into()),
        },
        ColumnBuilder::Decimal128(b, scale) => b.append_value(decimal_of(cell, *scale)?),
        ColumnBuilder::Decimal256(b, scale) => b.append_value(decimal256_of(cell, *scale)?),
        ColumnBuilder::Utf8(b) => match cell {
            Cell::Text(t) => b.append_value(t),
            Cell::Int(v) => b.append_value(v.to_string()),
            Cell::UInt(v) => b.append_value(v.to_string()),
            Cell::Float(v) => b.append_value(float_text(v)),
            Cell::Float32(v) => b.append_value(float_text(f64::from(v))),
            Cell::Bytes(bytes) => b.append_value(
                std::str::from_utf8(bytes)
                    .map_err(|_| "which is not valid UTF-8 text".to_owned())?,
            ),
            Cell::Null | Cell::Date(_) | Cell::Timestamp(_) => {
                return Err("which is not text".into());
            }
        },
        ColumnBuilder::Binary(b) => match cell {
            Cell::Bytes(bytes) => b.append_value(bytes),
            Cell::Text(t) => b.append_value(t.as_bytes()),
            _ => return Err("which is not binary data".into()),
        },
        ColumnBuilder::Date(b) => match cell {
            Cell::Date(days) => b.append_value(days),
            _ => match parse_date_time(text_of(cell)?)? {
                Some((days, 0)) => b.append_value(days),
                Some(_) => return Err("a date with a time of day".into()),
                None => b.append_null(),
            },
        },
        ColumnBuilder::Timestamp(b) => match cell {
            Cell::Timestamp(micros) => b.append_value(micros),
            Cell::Date(days) => b.append_value(i64::from(days) * 86_400_000_000),
            _ => match parse_date_time(text_of(cell)?)? {
                Some((days, micros)) => b.append_value(i64::from(days) * 86_400_000_000 + micros),
                None => b.append_null(),
            },
        },
        // Refused when the builder was made.
        ColumnBuilder::Time(_) | ColumnBuilder::Interval(_) | ColumnBuilder::List(..) => {
            return Err("which no row decoder handles".into());
        }
    }
    Ok(())
}

fn float_text(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "Infinity" } else { "-Infinity" }.into()
    } else {
        v.to_string()
    }
}

fn text_of(cell: Cell<'_>) -> Result<&str, String> {
    match cell {
        Cell::Text(t) => Ok(t),
        Cell::Bytes(b) => std::str::from_utf8(b).map_err(|_| "which is not text".to_owned()),
        _ => Err("which is not a date or time text".into()),
    }
}

/// Parses a decimal text (or integer) to an integer scaled by `scale`, exactly, without
/// allocating (it runs once per value).
fn decimal_of(cell: Cell<'_>, scale: i8) -> Result<i128, String> {
    let too_large = || "which is too large for the column's decimal type".to_owned();
    let text = match cell {
        Cell::Int(_) | Cell::UInt(_) => {
            let factor = 10i128
                .checked_pow(scale.max(0) as u32)
                .ok_or_else(too_large)?;
            return int_of(cell)?.checked_mul(factor).ok_or_else(too_large);
        }
        Cell::Text(t) => t.trim(),
        _ => return Err("which is not a decimal number".into()),
    };
    let (negative, body) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let scale = i32::from(scale.max(0));
    let mut value: i128 = 0;
    let mut fraction_digits: i32 = -1;
    let mut digits = 0;
    for byte in body.bytes() {
        match byte {
            b'0'..=b'9' => {
                if fraction_digits >= scale {
                    if byte != b'0' {
                        return Err(format!("which has more than {scale} decimal places"));
                    }
                    continue;
                }
                value = value
                    .checked_mul(10)
                    .and_then(|v| v.checked_add(i128::from(byte - b'0')))
                    .ok_or_else(too_large)?;
                digits += 1;
                if fraction_digits >= 0 {
                    fraction_digits += 1;
                }
            }
            b'.' if fraction_digits < 0 => fraction_digits = 0,
            _ => return Err("which is not a decimal number".into()),
        }
    }
    if digits == 0 && fraction_digits <= 0 {
        return Err("which is not a decimal number".into());
    }
    let missing = scale - fraction_digits.max(0);
    value = value
        .checked_mul(10i128.checked_pow(missing as u32).ok_or_else(too_large)?)
        .ok_or_else(too_large)?;
    Ok(if negative { -value } else { value })
}

fn decimal256_of(cell: Cell<'_>, scale: i8) -> Result<i256, String> {
    let text = match cell {
        Cell::Int(v) => v.to_string(),
        Cell::UInt(v) => v.to_string(),
        Cell::Text(t) => t.to_owned(),
        _ => return Err("which is not a decimal number".into()),
    };
    let (digits, exponent) = scaled_digits(&text, scale)?;
    let too_large = || "which is too large for the column's decimal type".to_owned();
    let value = i256::from_string(&digits).ok_or_else(too_large)?;
    let factor = i256::from_i128(10)
        .checked_pow(exponent)
        .ok_or_else(too_large)?;
    value.checked_mul(factor).ok_or_else(too_large)
}

/// Splits decimal text into the digits of the value at `scale` and a power of ten still to
/// apply; fails if the text has more fractional digits than `scale` (other than zeros).
fn scaled_digits(text: &str, scale: i8) -> Result<(String, u32), String> {
    let text = text.trim();
    let (negative, body) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (whole, fraction) = body.split_once('.').unwrap_or((body, ""));
    if whole.is_empty() && fraction.is_empty()
        || !whole
            .bytes()
            .chain(fraction.bytes())
            .all(|b| b.is_ascii_digit())
    {
        return Err("which is not a decimal number".into());
    }
    let scale = i32::from(scale);
    let kept = fraction.len().min(scale.max(0) as usize);
    if fraction[kept..].bytes().any(|b| b != b'0') {
        return Err(format!("which has more than {scale} decimal places"));
    }
    let mut digits = String::with_capacity(whole.len() + kept + 1);
    if negative {
        digits.push('-');
    }
    digits.push_str(if whole.is_empty() { "0" } else { whole });
    digits.push_str(&fraction[..kept]);
    Ok((digits, (scale.max(0) as usize - kept) as u32))
}

/// Days from 1970-01-01 to a proleptic Gregorian date (no validation beyond arithmetic).
pub fn days_from_civil(year: i32, month: u32, day: u32) -> i32 {
    let year = i64::from(year) - i64::from(month <= 2);
    let era = year.div_euclid(400);
    let yoe = year - era * 400;
    let month = i64::from(month);
    let doy = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (era * 146_097 + doe - 719_468) as i32
}

/// Parses `YYYY-MM-DD[ HH:MM:SS[.ffffff]]` into days since 1970 and microseconds of day.
/// MySQL's zero dates (a zero year, month or day) give `None`: they are not dates.
fn parse_date_time(text: &str) -> Result<Option<(i32, i64)>, String> {
    let bad = || "which is not a date or timestamp".to_owned();
    let (date, time) = text
        .trim()
        .split_once([' ', 'T'])
        .unwrap_or((text.trim(), ""));
    let mut parts = date.splitn(3, '-');
    let mut next =
        || -> Result<i64, String> { parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad) };
    let (year, month, day) = (next()?, next()?, next()?);
    if year == 0 || month == 0 || day == 0 {
        return Ok(None);
    }
    let date =
        chrono::NaiveDate::from_ymd_opt(year as i32, month as u32, day as u32).ok_or_else(bad)?;
    let days =
        (date - chrono::NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid")).num_days() as i32;
    if time.is_empty() {
        return Ok(Some((days, 0)));
    }
    let (hms, fraction) = time.split_once('.').unwrap_or((time, ""));
    let mut hms = hms
        .splitn(3, ':')
        .map(|p| p.parse::<i64>().map_err(|_| bad()));
    let (h, m, s) = (
        hms.next().ok_or_else(bad)??,
        hms.next().ok_or_else(bad)??,
        hms.next().ok_or_else(bad)??,
    );
    if fraction.len() > 6 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return Err("which has more than microsecond precision".into());
    }
    let micros_fraction: i64 = format!("{fraction:0<6}").parse().map_err(|_| bad())?;
    Ok(Some((
        days,
        ((h * 60 + m) * 60 + s) * 1_000_000 + micros_fraction,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_parse_exactly_or_fail() {
        assert_eq!(decimal_of(Cell::Text("-12.5"), 3).unwrap(), -12_500);
        assert_eq!(decimal_of(Cell::Text("0.120"), 2).unwrap(), 12);
        assert!(
            decimal_of(Cell::Text("0.125"), 2)
                .unwrap_err()
                .contains("more than 2")
        );
        assert_eq!(decimal_of(Cell::Int(7), 2).unwrap(), 700);
        assert_eq!(
            decimal256_of(
                Cell::Text("12345678901234567890123456789012345678901234.5"),
                1
            )
            .unwrap(),
            i256::from_string("123456789012345678901234567890123456789012345").unwrap()
        );
    }

    #[test]
    fn zero_dates_are_null_and_times_are_microseconds() {
        assert_eq!(parse_date_time("0000-00-00").unwrap(), None);
        assert_eq!(parse_date_time("2020-00-15 00:00:00").unwrap(), None);
        assert_eq!(parse_date_time("1970-01-02").unwrap(), Some((1, 0)));
        assert_eq!(
            parse_date_time("1969-12-31 23:59:59.5").unwrap(),
            Some((-1, 86_399_500_000))
        );
        assert!(parse_date_time("2020-02-30").is_err());
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(1, 1, 1), -719_162);
    }
}
