//! PostgreSQL type mapping, used by discovery (source type → Arrow type) and by fetch
//! (Arrow type → the cast in the COPY query, so the wire type always matches the decoder).
//!
//! Rules (also in the README):
//! - bool, int2/4/8, float4/8, bytea, date, time, timestamp, timestamptz (UTC instant),
//!   map exactly; oid maps to int64.
//! - interval is carried as ISO 8601 text (`P1Y2M3DT4H5M6.000007S`): Parquet cannot store
//!   Arrow's month-day-nanosecond intervals, and its own interval type drops microseconds.
//! - numeric(p,s) → Decimal128(p,s) up to 38 digits, Decimal256(p,s) up to 76; wider or
//!   unconstrained numeric is carried as exact text (or float64 with `numeric_as_float`).
//! - date/timestamp ±infinity are carried as the largest/smallest value of the Arrow type.
//! - one-dimensional arrays of bool/int/float/text map to lists; other element types are
//!   lists of text; multi-dimensional arrays fail the fetch.
//! - everything else (text types, uuid, json/jsonb, enums, timetz, inet, money, xml, ...) is
//!   carried as the server's text rendering.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, IntervalUnit, TimeUnit};

/// What discovery reads about a column's type.
#[derive(Clone, Debug)]
pub struct PgColumnType {
    /// `typname` of the type, or of a domain's base type.
    pub name: String,
    /// `typtype` ('b' base, 'e' enum, ...).
    pub kind: String,
    /// For arrays, the element's `typname`.
    pub element: Option<String>,
    /// The type modifier (precision/scale of numeric), -1 when none.
    pub typmod: i32,
}

/// Maps a discovered PostgreSQL column type to the Arrow type Quarry stores it as.
pub fn arrow_type(column: &PgColumnType, numeric_as_float: bool) -> DataType {
    if let Some(element) = &column.element {
        let item = match scalar_type(element) {
            Some(
                t @ (DataType::Boolean
                | DataType::Int16
                | DataType::Int32
                | DataType::Int64
                | DataType::Float32
                | DataType::Float64),
            ) => t,
            _ => DataType::Utf8,
        };
        return DataType::List(Arc::new(Field::new("item", item, true)));
    }
    if column.kind == "e" {
        return DataType::Utf8;
    }
    if column.name == "numeric" {
        return numeric_type(column.typmod, numeric_as_float);
    }
    scalar_type(&column.name).unwrap_or(DataType::Utf8)
}

/// Precision and scale of a `numeric(p,s)` type modifier; `None` when unconstrained.
pub fn numeric_precision_scale(typmod: i32) -> Option<(i32, i32)> {
    if typmod < 4 {
        return None;
    }
    let packed = typmod - 4;
    let precision = (packed >> 16) & 0xffff;
    // The scale is an 11-bit signed number since PostgreSQL 15.
    let scale = ((packed & 0x7ff) ^ 1024) - 1024;
    Some((precision, scale))
}

fn numeric_type(typmod: i32, numeric_as_float: bool) -> DataType {
    match numeric_precision_scale(typmod) {
        Some((p, s)) if (-128..=127).contains(&s) && (1..=38).contains(&p) => {
            DataType::Decimal128(p as u8, s as i8)
        }
        Some((p, s)) if (-128..=127).contains(&s) && p <= 76 => {
            DataType::Decimal256(p as u8, s as i8)
        }
        _ if numeric_as_float => DataType::Float64,
        _ => DataType::Utf8,
    }
}

fn scalar_type(name: &str) -> Option<DataType> {
    Some(match name {
        "bool" => DataType::Boolean,
        "int2" => DataType::Int16,
        "int4" => DataType::Int32,
        "int8" | "oid" => DataType::Int64,
        "float4" => DataType::Float32,
        "float8" => DataType::Float64,
        "bytea" => DataType::Binary,
        "date" => DataType::Date32,
        "time" => DataType::Time64(TimeUnit::Microsecond),
        "timestamp" => DataType::Timestamp(TimeUnit::Microsecond, None),
        "timestamptz" => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        _ => return None,
    })
}

/// The PostgreSQL type a column is cast to in the COPY query so that its binary wire
/// format is the one the decoder for `arrow` expects.
pub fn wire_cast(arrow: &DataType) -> Option<String> {
    Some(match arrow {
        DataType::Boolean => "bool".into(),
        DataType::Int16 => "int2".into(),
        DataType::Int32 => "int4".into(),
        DataType::Int64 => "int8".into(),
        DataType::Float32 => "float4".into(),
        DataType::Float64 => "float8".into(),
        DataType::Decimal128(..) | DataType::Decimal256(..) => "numeric".into(),
        DataType::Utf8 => "text".into(),
        DataType::Binary => "bytea".into(),
        DataType::Date32 => "date".into(),
        DataType::Time64(TimeUnit::Microsecond) => "time".into(),
        DataType::Timestamp(TimeUnit::Microsecond, None) => "timestamp".into(),
        DataType::Timestamp(TimeUnit::Microsecond, Some(_)) => "timestamptz".into(),
        DataType::Interval(IntervalUnit::MonthDayNano) => "interval".into(),
        DataType::List(item) => format!("{}[]", wire_cast(item.data_type())?),
        _ => return None,
    })
}

/// Quotes an identifier for PostgreSQL.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(name: &str, typmod: i32) -> PgColumnType {
        PgColumnType {
            name: name.into(),
            kind: "b".into(),
            element: None,
            typmod,
        }
    }

    fn numeric(p: i32, s: i32) -> i32 {
        ((p << 16) | (s & 0x7ff)) + 4
    }

    #[test]
    fn numeric_keeps_precision_and_scale() {
        assert_eq!(
            arrow_type(&col("numeric", numeric(38, 10)), false),
            DataType::Decimal128(38, 10)
        );
        assert_eq!(
            arrow_type(&col("numeric", numeric(10, 0)), false),
            DataType::Decimal128(10, 0)
        );
        assert_eq!(
            arrow_type(&col("numeric", numeric(60, 20)), false),
            DataType::Decimal256(60, 20)
        );
        assert_eq!(
            arrow_type(&col("numeric", numeric(5, -2)), false),
            DataType::Decimal128(5, -2)
        );
        assert_eq!(
            arrow_type(&col("numeric", numeric(100, 2)), false),
            DataType::Utf8
        );
        assert_eq!(arrow_type(&col("numeric", -1), false), DataType::Utf8);
        assert_eq!(arrow_type(&col("numeric", -1), true), DataType::Float64);
    }

    #[test]
    fn every_mapped_type_has_a_wire_cast() {
        for name in [
            "bool",
            "int2",
            "int4",
            "int8",
            "oid",
            "float4",
            "float8",
            "bytea",
            "date",
            "time",
            "timestamp",
            "timestamptz",
            "interval",
            "uuid",
            "jsonb",
        ] {
            let t = arrow_type(&col(name, -1), false);
            assert!(wire_cast(&t).is_some(), "{name} -> {t}");
        }
        let array = PgColumnType {
            element: Some("int4".into()),
            ..col("_int4", -1)
        };
        assert_eq!(wire_cast(&arrow_type(&array, false)).unwrap(), "int4[]");
        let uuids = PgColumnType {
            element: Some("uuid".into()),
            ..col("_uuid", -1)
        };
        assert_eq!(wire_cast(&arrow_type(&uuids, false)).unwrap(), "text[]");
    }
}
