//! The condition an incremental refresh adds to a fetch: the rows at or past a cursor value,
//! and the rows whose cursor is NULL (no mark can tell whether they changed), written as a
//! literal in each source's dialect.

use datafusion::arrow::datatypes::{Decimal128Type, DecimalType};
use datafusion::common::ScalarValue;

use super::SqlDialect;

/// Rows whose `column` is at least `from`, or NULL.
#[derive(Clone, Debug, PartialEq)]
pub struct CursorFilter {
    /// The cursor column.
    pub column: String,
    /// The lowest cursor value read (inclusive: rows equal to the last mark are read again).
    pub from: ScalarValue,
}

impl CursorFilter {
    /// The `WHERE` condition in `dialect`; `None` for a value the dialect cannot be sent.
    pub fn condition(&self, dialect: SqlDialect) -> Option<String> {
        let column = quote(&self.column, dialect);
        let value = literal(&self.from, dialect)?;
        Some(format!("({column} >= {value} OR {column} IS NULL)"))
    }
}

fn quote(name: &str, dialect: SqlDialect) -> String {
    match dialect {
        SqlDialect::Mysql => format!("`{}`", name.replace('`', "``")),
        SqlDialect::Postgres | SqlDialect::Sqlite => format!("\"{}\"", name.replace('"', "\"\"")),
    }
}

/// `value` as a literal of its own type in `dialect`.
fn literal(value: &ScalarValue, dialect: SqlDialect) -> Option<String> {
    use ScalarValue as S;
    let micros = |v: i64, per_second: i64| -> Option<i64> {
        if per_second >= 1_000_000 {
            Some(v / (per_second / 1_000_000))
        } else {
            v.checked_mul(1_000_000 / per_second)
        }
    };
    let timestamp = |us: i64, zoned: bool| -> Option<String> {
        let at = chrono::DateTime::from_timestamp_micros(us)?;
        let text = at.format("%Y-%m-%d %H:%M:%S%.6f");
        Some(match (dialect, zoned) {
            (SqlDialect::Postgres, true) => format!("'{text}+00'::timestamptz"),
            (SqlDialect::Postgres, false) => format!("'{text}'::timestamp"),
            // Sessions run in UTC, so TIMESTAMP columns compare as UTC.
            (SqlDialect::Mysql, _) => format!("TIMESTAMP'{text}'"),
            (SqlDialect::Sqlite, _) => return None,
        })
    };
    Some(match value {
        S::Int8(Some(v)) => v.to_string(),
        S::Int16(Some(v)) => v.to_string(),
        S::Int32(Some(v)) => v.to_string(),
        S::Int64(Some(v)) => v.to_string(),
        S::UInt8(Some(v)) => v.to_string(),
        S::UInt16(Some(v)) => v.to_string(),
        S::UInt32(Some(v)) => v.to_string(),
        S::UInt64(Some(v)) => v.to_string(),
        // `{:?}` writes the shortest text that reads back as the same float.
        S::Float32(Some(v)) if v.is_finite() => format!("{v:?}"),
        S::Float64(Some(v)) if v.is_finite() => format!("{v:?}"),
        S::Decimal128(Some(v), p, s) if dialect != SqlDialect::Sqlite => {
            Decimal128Type::format_decimal(*v, *p, *s)
        }
        S::Date32(Some(days)) if dialect != SqlDialect::Sqlite => {
            let date = chrono::NaiveDate::from_num_days_from_ce_opt(719_163 + *days)?;
            match dialect {
                SqlDialect::Postgres => format!("'{date}'::date"),
                _ => format!("DATE'{date}'"),
            }
        }
        S::TimestampSecond(Some(v), tz) => timestamp(micros(*v, 1)?, tz.is_some())?,
        S::TimestampMillisecond(Some(v), tz) => timestamp(micros(*v, 1_000)?, tz.is_some())?,
        S::TimestampMicrosecond(Some(v), tz) => timestamp(*v, tz.is_some())?,
        S::TimestampNanosecond(Some(v), tz) => {
            // Rounded down: the condition is `>=`, so no row at the mark is left out.
            timestamp(v.div_euclid(1_000), tz.is_some())?
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn condition(from: ScalarValue, dialect: SqlDialect) -> Option<String> {
        CursorFilter {
            column: "up\"dated".into(),
            from,
        }
        .condition(dialect)
    }

    #[test]
    fn literals_keep_their_type_in_each_dialect() {
        assert_eq!(
            condition(ScalarValue::Int64(Some(-5)), SqlDialect::Sqlite).unwrap(),
            r#"("up""dated" >= -5 OR "up""dated" IS NULL)"#
        );
        assert_eq!(
            condition(
                ScalarValue::Decimal128(Some(-12345), 10, 2),
                SqlDialect::Mysql
            )
            .unwrap(),
            "(`up\"dated` >= -123.45 OR `up\"dated` IS NULL)"
        );
        let utc = Some(Arc::from("UTC"));
        assert_eq!(
            condition(
                ScalarValue::TimestampMicrosecond(Some(1_700_000_000_123_456), utc),
                SqlDialect::Postgres
            )
            .unwrap(),
            r#"("up""dated" >= '2023-11-14 22:13:20.123456+00'::timestamptz OR "up""dated" IS NULL)"#
        );
        assert!(
            condition(ScalarValue::Date32(Some(19_000)), SqlDialect::Postgres)
                .unwrap()
                .contains("'2022-01-08'::date")
        );
        assert!(
            condition(ScalarValue::Date32(Some(0)), SqlDialect::Mysql)
                .unwrap()
                .contains("DATE'1970-01-01'")
        );
        assert_eq!(
            condition(ScalarValue::Date32(Some(0)), SqlDialect::Sqlite),
            None
        );
        assert_eq!(
            condition(ScalarValue::Float64(Some(f64::NAN)), SqlDialect::Postgres),
            None
        );
    }
}
