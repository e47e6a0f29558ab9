//! MySQL/MariaDB type mapping, used by discovery (column type → Arrow type) and by fetch
//! (Arrow type → the select expression whose wire value the decoder expects).
//!
//! Rules (also in the README):
//! - integer types keep their width and signedness (unsigned → UInt8..UInt64, full range);
//!   BIT(n) → UInt64; YEAR → Int16.
//! - DECIMAL(p,s) → Decimal128(p,s) up to 38 digits, Decimal256(p,s) up to 65.
//! - FLOAT → Float32, DOUBLE → Float64.
//! - DATE → Date32; DATETIME(n) → Timestamp(µs); TIMESTAMP → Timestamp(µs, UTC). Zero and
//!   partly-zero dates ('0000-00-00', '2020-00-15'), and impossible ones allowed by
//!   ALLOW_INVALID_DATES ('2020-02-31'), are not dates: they become NULL.
//! - TIME (a signed duration up to ±838 hours) is carried as text, e.g. '-12:30:00.5'.
//! - BINARY/VARBINARY/BLOB → Binary; text types, ENUM, SET (comma-separated members), JSON
//!   and everything else → Utf8.

use datafusion::arrow::datatypes::{DataType, TimeUnit};

/// What discovery reads about a column from `information_schema.COLUMNS`.
#[derive(Clone, Debug)]
pub struct MySqlColumnType {
    /// `DATA_TYPE`, lowercase (`int`, `decimal`, ...).
    pub data_type: String,
    /// `COLUMN_TYPE` (`int(10) unsigned`, `decimal(38,10)`, ...).
    pub column_type: String,
    /// `NUMERIC_PRECISION`.
    pub precision: Option<i64>,
    /// `NUMERIC_SCALE`.
    pub scale: Option<i64>,
}

/// Maps a discovered column type to the Arrow type Quarry stores it as.
pub fn arrow_type(column: &MySqlColumnType) -> DataType {
    let unsigned = column.column_type.to_ascii_lowercase().contains("unsigned");
    let int =
        |signed: DataType, unsigned_type: DataType| if unsigned { unsigned_type } else { signed };
    match column.data_type.to_ascii_lowercase().as_str() {
        "tinyint" => int(DataType::Int8, DataType::UInt8),
        "smallint" => int(DataType::Int16, DataType::UInt16),
        "mediumint" | "int" | "integer" => int(DataType::Int32, DataType::UInt32),
        "bigint" => int(DataType::Int64, DataType::UInt64),
        "bit" => DataType::UInt64,
        "year" => DataType::Int16,
        "decimal" | "numeric" => {
            let p = column.precision.unwrap_or(10);
            let s = column.scale.unwrap_or(0);
            if (1..=38).contains(&p) {
                DataType::Decimal128(p as u8, s as i8)
            } else {
                DataType::Decimal256(p.clamp(1, 76) as u8, s as i8)
            }
        }
        "float" => DataType::Float32,
        "double" | "real" => DataType::Float64,
        "date" => DataType::Date32,
        "datetime" => DataType::Timestamp(TimeUnit::Microsecond, None),
        "timestamp" => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        "binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" => {
            DataType::Binary
        }
        _ => DataType::Utf8,
    }
}

/// The select expression that delivers `column` (of source type `source_type`) in the form
/// the decoder for `arrow` reads. Most columns are read as they are, in the binary protocol;
/// BIT and non-text types carried as text are converted by the server.
pub fn select_expression(column: &str, arrow: &DataType, source_type: &str) -> String {
    let quoted = quote_ident(column);
    let kind = source_type
        .split(['(', ' '])
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    match arrow {
        DataType::UInt64 if kind == "bit" => format!("CAST({quoted} AS UNSIGNED)"),
        DataType::Utf8 if !TEXT_TYPES.contains(&kind.as_str()) => format!("CAST({quoted} AS CHAR)"),
        _ => quoted,
    }
}

/// Types the binary protocol already sends as text.
const TEXT_TYPES: &[&str] = &[
    "char",
    "varchar",
    "tinytext",
    "text",
    "mediumtext",
    "longtext",
    "enum",
    "set",
    "json",
];

/// Quotes an identifier for MySQL.
pub fn quote_ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(data_type: &str, column_type: &str, p: Option<i64>, s: Option<i64>) -> DataType {
        arrow_type(&MySqlColumnType {
            data_type: data_type.into(),
            column_type: column_type.into(),
            precision: p,
            scale: s,
        })
    }

    #[test]
    fn integers_keep_width_and_sign() {
        assert_eq!(
            col("bigint", "bigint(20) unsigned", None, None),
            DataType::UInt64
        );
        assert_eq!(col("tinyint", "tinyint(4)", None, None), DataType::Int8);
        assert_eq!(col("int", "int(10) unsigned", None, None), DataType::UInt32);
    }

    #[test]
    fn decimals_keep_precision_and_scale() {
        assert_eq!(
            col("decimal", "decimal(38,10)", Some(38), Some(10)),
            DataType::Decimal128(38, 10)
        );
        assert_eq!(
            col("decimal", "decimal(65,30)", Some(65), Some(30)),
            DataType::Decimal256(65, 30)
        );
    }
}
