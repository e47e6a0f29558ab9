//! Renders Arrow values as text a database parses back to the same value, so that type
//! fidelity tests can ask the server itself to compare what Quarry cached with its own row.

use chrono::NaiveTime;
use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, Decimal256Type, Float32Type, Float64Type, Int8Type,
    Int16Type, Int32Type, Int64Type, IntervalMonthDayNanoType, IntervalUnit, Time64MicrosecondType,
    TimeUnit, TimestampMicrosecondType, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};

/// Proleptic Gregorian (year, month, day) of a day count from 1970-01-01, for any i64
/// (chrono stops at year 262143; PostgreSQL dates go to 5874897).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Date text with a BC suffix where needed; `time` goes between date and era.
fn date_time_text(days: i64, time: &str) -> String {
    let (year, month, day) = civil_from_days(days);
    let (year, era) = if year <= 0 {
        (1 - year, " BC")
    } else {
        (year, "")
    };
    format!("{year:04}-{month:02}-{day:02}{time}{era}")
}

fn float_text(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "Infinity" } else { "-Infinity" }.into()
    } else {
        format!("{v:e}")
    }
}

/// `row` of `array` as input text, or `None` for NULL.
pub fn value_text(array: &dyn Array, row: usize) -> Option<String> {
    if array.is_null(row) {
        return None;
    }
    Some(match array.data_type() {
        DataType::Boolean => array.as_boolean().value(row).to_string(),
        DataType::Int8 => array.as_primitive::<Int8Type>().value(row).to_string(),
        DataType::Int16 => array.as_primitive::<Int16Type>().value(row).to_string(),
        DataType::Int32 => array.as_primitive::<Int32Type>().value(row).to_string(),
        DataType::Int64 => array.as_primitive::<Int64Type>().value(row).to_string(),
        DataType::UInt8 => array.as_primitive::<UInt8Type>().value(row).to_string(),
        DataType::UInt16 => array.as_primitive::<UInt16Type>().value(row).to_string(),
        DataType::UInt32 => array.as_primitive::<UInt32Type>().value(row).to_string(),
        DataType::UInt64 => array.as_primitive::<UInt64Type>().value(row).to_string(),
        DataType::Float32 => float_text(f64::from(array.as_primitive::<Float32Type>().value(row))),
        DataType::Float64 => float_text(array.as_primitive::<Float64Type>().value(row)),
        DataType::Decimal128(_, _) => array.as_primitive::<Decimal128Type>().value_as_string(row),
        DataType::Decimal256(_, _) => array.as_primitive::<Decimal256Type>().value_as_string(row),
        DataType::Utf8 => array.as_string::<i32>().value(row).to_owned(),
        DataType::Binary => {
            let bytes = array.as_binary::<i32>().value(row);
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            format!("\\x{hex}")
        }
        DataType::Date32 => match array.as_primitive::<Date32Type>().value(row) {
            i32::MAX => "infinity".into(),
            i32::MIN => "-infinity".into(),
            days => date_time_text(i64::from(days), ""),
        },
        DataType::Time64(TimeUnit::Microsecond) => {
            let micros = array.as_primitive::<Time64MicrosecondType>().value(row);
            if micros == 86_400_000_000 {
                "24:00:00".into()
            } else {
                let t = NaiveTime::from_num_seconds_from_midnight_opt(
                    (micros / 1_000_000) as u32,
                    (micros % 1_000_000) as u32 * 1000,
                )
                .unwrap();
                t.format("%H:%M:%S%.6f").to_string()
            }
        }
        DataType::Timestamp(TimeUnit::Microsecond, tz) => {
            let micros = array.as_primitive::<TimestampMicrosecondType>().value(row);
            match micros {
                i64::MAX => "infinity".into(),
                i64::MIN => "-infinity".into(),
                m => {
                    let (days, micros) =
                        (m.div_euclid(86_400_000_000), m.rem_euclid(86_400_000_000));
                    let (secs, frac) = (micros / 1_000_000, micros % 1_000_000);
                    let zone = if tz.is_some() { "+00" } else { "" };
                    let time = format!(
                        " {:02}:{:02}:{:02}.{frac:06}{zone}",
                        secs / 3600,
                        secs / 60 % 60,
                        secs % 60
                    );
                    date_time_text(days, &time)
                }
            }
        }
        DataType::Interval(IntervalUnit::MonthDayNano) => {
            let v = array.as_primitive::<IntervalMonthDayNanoType>().value(row);
            assert_eq!(v.nanoseconds % 1000, 0, "sub-microsecond interval");
            format!(
                "{} months {} days {} microseconds",
                v.months,
                v.days,
                v.nanoseconds / 1000
            )
        }
        DataType::List(_) => {
            let list = array.as_list::<i32>().value(row);
            let items: Vec<String> = (0..list.len())
                .map(|i| match value_text(&list, i) {
                    None => "NULL".into(),
                    Some(text) if list.data_type() == &DataType::Utf8 => {
                        format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
                    }
                    Some(text) => text,
                })
                .collect();
            format!("{{{}}}", items.join(","))
        }
        other => panic!("no test rendering for {other}"),
    })
}
