//! The MySQL/MariaDB source against the real server: tests and failure classes, discovery,
//! and exact type mapping, including unsigned integers and zero dates.

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{DataType, Float32Type, Float64Type};
use quarry::Error;
use quarry::source::FailureClass;
use serde_json::json;
use sqlx::{AssertSqlSafe, Row};

use crate::render::value_text;
use crate::support::{MySqlSourceFixture, mysql_source_config, read_parquet};

fn class_of(e: &Error) -> FailureClass {
    match e {
        Error::Source { class, .. } => *class,
        other => panic!("expected a source error, got {other}"),
    }
}

#[tokio::test]
async fn a_test_reports_the_server_version() {
    let fx = MySqlSourceFixture::new().await;
    let outcome = fx.engine.test_connection("my").await.unwrap();
    assert!(
        outcome.server_version.starts_with("MariaDB ")
            || outcome.server_version.starts_with("MySQL ")
    );
    assert_eq!(
        fx.engine
            .connection("my")
            .await
            .unwrap()
            .status
            .test_status
            .as_deref(),
        Some("ok")
    );
}

#[tokio::test]
async fn a_wrong_password_is_an_authentication_failure_naming_the_user() {
    let mut fx = MySqlSourceFixture::new().await;
    let user = format!("{}_u", &fx.name[..20]);
    fx.exec(&format!("CREATE USER '{user}'@'%' IDENTIFIED BY 'right-one'; CREATE USER '{user}'@'localhost' IDENTIFIED BY 'right-one'")).await;
    let mut config = mysql_source_config(&fx.name);
    config["user"] = json!(user);
    config["password"] = json!("wrong-one");
    fx.engine
        .register_connection("bad", "mysql", config)
        .await
        .unwrap();
    let err = fx.engine.test_connection("bad").await.unwrap_err();
    fx.exec(&format!(
        "DROP USER '{user}'@'%'; DROP USER '{user}'@'localhost'"
    ))
    .await;
    assert_eq!(class_of(&err), FailureClass::Authentication, "{err}");
    assert!(
        err.to_string()
            .contains(&format!("authentication failed for user '{user}'")),
        "{err}"
    );
    assert!(!err.to_string().contains("wrong-one"));
}

#[tokio::test]
async fn a_missing_database_and_a_closed_port_are_classified() {
    let fx = MySqlSourceFixture::new().await;
    fx.engine
        .register_connection("nodb", "mysql", mysql_source_config("quarry_no_such_db"))
        .await
        .unwrap();
    let err = fx.engine.test_connection("nodb").await.unwrap_err();
    assert_eq!(class_of(&err), FailureClass::NoDatabase, "{err}");
    assert!(
        err.to_string()
            .contains("database 'quarry_no_such_db' does not exist"),
        "{err}"
    );
    let mut closed = mysql_source_config(&fx.name);
    closed["port"] = json!(1);
    fx.engine
        .register_connection("closed", "mysql", closed)
        .await
        .unwrap();
    let err = fx.engine.test_connection("closed").await.unwrap_err();
    assert_eq!(class_of(&err), FailureClass::Refused, "{err}");
    assert!(err.to_string().contains(":1;"), "{err}");
}

const TYPES_TABLE: &str = r#"
SET SESSION sql_mode = 'ALLOW_INVALID_DATES';
SET SESSION time_zone = '+02:00';
CREATE TABLE types (
    id INT PRIMARY KEY,
    ti TINYINT, tiu TINYINT UNSIGNED, si SMALLINT, siu SMALLINT UNSIGNED,
    mi MEDIUMINT, miu MEDIUMINT UNSIGNED, i INT, iu INT UNSIGNED, bi BIGINT, biu BIGINT UNSIGNED,
    d38 DECIMAL(38,10), d10 DECIMAL(10,0), d60 DECIMAL(60,20), f FLOAT, db DOUBLE,
    dt DATE, dtm DATETIME(6), ts TIMESTAMP(6) NULL, tm TIME(6), yr YEAR, bt BIT(8), bt64 BIT(64),
    st SET('a','b','c'), en ENUM('x','y'), j JSON, t TEXT, vc VARCHAR(50), ch CHAR(5),
    bin VARBINARY(10), bl BLOB
) CHARACTER SET utf8mb4;
INSERT INTO types (id) VALUES (1);
INSERT INTO types VALUES (2, -128, 0, -32768, 0, -8388608, 0, -2147483648, 0, -9223372036854775808, 0,
    -9999999999999999999999999999.9999999999, -9999999999,
    -9999999999999999999999999999999999999999.99999999999999999999, -3.40282e38, -1.7976931348623157e308,
    '1000-01-01', '1000-01-01 00:00:00.000000', '1970-01-01 02:00:01.000000', '-838:59:59.000000', 1901,
    b'00000000', 0, '', 'x', '[]', '', '', '', x'', x'');
INSERT INTO types VALUES (3, 127, 255, 32767, 65535, 8388607, 16777215, 2147483647, 4294967295,
    9223372036854775807, 18446744073709551615,
    9999999999999999999999999999.9999999999, 9999999999,
    9999999999999999999999999999999999999999.99999999999999999999, 3.40282e38, 1.7976931348623157e308,
    '9999-12-31', '9999-12-31 23:59:59.999999', '2038-01-19 05:14:07.999999', '838:59:59.000000', 2155,
    b'11111111', 18446744073709551615, 'a,c', 'y', '{"k": [1, "é"]}',
    'héllo wörld ✓ 🎉 中文', 'ünïcödé', 'abc', x'00ff10', x'deadbeef');
INSERT INTO types (id, dt, dtm, ts, f, db, d10) VALUES
    (4, '0000-00-00', '0000-00-00 00:00:00', '0000-00-00 00:00:00', 0.1, 0.1, 0),
    (5, '2020-00-15', '1969-12-31 23:59:59.5', '1999-12-31 23:00:00', -0, 1e-300, 1),
    (6, '2020-02-31', '2021-04-31 10:00:00', NULL, NULL, NULL, NULL);
"#;

#[tokio::test]
async fn every_common_type_round_trips_exactly() {
    let mut fx = MySqlSourceFixture::new().await;
    fx.exec(TYPES_TABLE).await;
    let outcome = fx.engine.discover_connection("my").await.unwrap();
    assert!(outcome.tables_added >= 1);
    let entry = fx
        .engine
        .cached_table("my", &fx.name, "types")
        .await
        .unwrap();
    assert_eq!(entry.row_count, 6);
    let id = fx.engine.connection("my").await.unwrap().id;
    let table = fx
        .engine
        .store()
        .table(&quarry::table::TableRef::new(&id, &fx.name, "types"))
        .await
        .unwrap()
        .unwrap();
    let batches = read_parquet(&fx.engine.cache().local_path(&entry).unwrap());
    // The comparing session uses yet another zone: TIMESTAMP must render the same instant.
    fx.exec("SET SESSION time_zone = '+00:00'").await;
    let mut checked = 0;
    for batch in &batches {
        for row in 0..batch.num_rows() {
            let id: i32 = value_text(batch.column(0).as_ref(), row)
                .unwrap()
                .parse()
                .unwrap();
            for (col, column) in table.columns.iter().enumerate().skip(1) {
                let array = batch.column(col);
                let quoted = format!("`{}`", column.name);
                let context = format!(
                    "row {id} column {} ({} as {})",
                    column.name, column.source_type, column.arrow_type
                );
                match array.data_type() {
                    DataType::Float32 | DataType::Float64 => {
                        let ours = (!array.is_null(row)).then(|| match array.data_type() {
                            DataType::Float32 => {
                                f64::from(array.as_primitive::<Float32Type>().value(row))
                            }
                            _ => array.as_primitive::<Float64Type>().value(row),
                        });
                        let same: Option<i64> = sqlx::query(AssertSqlSafe(format!(
                            "SELECT CAST({quoted} <=> ? AS SIGNED) AS same FROM types WHERE id = ?"
                        )))
                        .bind(ours)
                        .bind(id)
                        .fetch_one(&mut fx.admin)
                        .await
                        .unwrap()
                        .try_get("same")
                        .unwrap();
                        assert_eq!(same, Some(1), "{context}: cached {ours:?}");
                    }
                    data_type => {
                        let server_expr = match data_type {
                            DataType::Binary => format!("HEX({quoted})"),
                            _ if column.source_type.starts_with("bit") => {
                                format!("CAST({quoted} + 0 AS CHAR)")
                            }
                            _ => format!("CAST({quoted} AS CHAR)"),
                        };
                        let theirs: Option<String> = sqlx::query(AssertSqlSafe(format!(
                            "SELECT {server_expr} AS v FROM types WHERE id = ?"
                        )))
                        .bind(id)
                        .fetch_one(&mut fx.admin)
                        .await
                        .unwrap()
                        .try_get("v")
                        .unwrap();
                        let ours = mysql_text(array.as_ref(), row);
                        // Zero, partly-zero and impossible dates are not dates.
                        let zero_date = theirs.as_deref().is_some_and(|t| {
                            chrono::NaiveDate::parse_from_str(t.get(..10).unwrap_or(t), "%Y-%m-%d")
                                .is_err()
                        });
                        if zero_date
                            && matches!(data_type, DataType::Date32 | DataType::Timestamp(..))
                        {
                            assert_eq!(ours, None, "{context}: a zero date becomes NULL");
                        } else {
                            assert_eq!(ours, theirs, "{context}");
                        }
                    }
                }
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 6 * (table.columns.len() - 1));
}

/// Our value rendered the way MySQL's CAST(... AS CHAR) renders the source value.
fn mysql_text(array: &dyn Array, row: usize) -> Option<String> {
    let text = value_text(array, row)?;
    Some(match array.data_type() {
        DataType::Binary => text.trim_start_matches("\\x").to_uppercase(),
        DataType::Timestamp(..) => text.trim_end_matches("+00").to_owned(),
        _ => text,
    })
}

#[tokio::test]
async fn discovery_keeps_unsigned_and_decimal_types() {
    let mut fx = MySqlSourceFixture::new().await;
    fx.exec(TYPES_TABLE).await;
    fx.exec("CREATE VIEW small AS SELECT id, ti FROM types")
        .await;
    fx.engine.discover_connection("my").await.unwrap();
    let id = fx.engine.connection("my").await.unwrap().id;
    let tables = fx.engine.store().tables(&id).await.unwrap();
    let ours: Vec<_> = tables
        .iter()
        .filter(|t| t.schema == fx.name)
        .map(|t| format!("{}:{}", t.name, t.table_type))
        .collect();
    assert_eq!(ours, ["small:view", "types:table"]);
    assert!(tables.iter().all(|t| {
        !["mysql", "sys", "performance_schema", "information_schema"].contains(&t.schema.as_str())
    }));
    let types = tables.iter().find(|t| t.name == "types").unwrap();
    let arrow = |name: &str| {
        types
            .columns
            .iter()
            .find(|c| c.name == name)
            .unwrap()
            .arrow_type
            .clone()
    };
    assert_eq!(arrow("biu"), "UInt64");
    assert_eq!(arrow("d60"), "Decimal256(60, 20)");
    assert_eq!(arrow("ts"), "Timestamp(µs, \"UTC\")");
    assert_eq!(arrow("tm"), "Utf8");
}

#[tokio::test]
async fn requiring_tls_from_a_server_without_it_is_a_tls_failure() {
    let fx = MySqlSourceFixture::new().await;
    let have_ssl: String = {
        use sqlx::Connection;
        let mut conn = sqlx::MySqlConnection::connect(&crate::support::mysql_admin_url())
            .await
            .unwrap();
        sqlx::query_scalar("SELECT CAST(@@have_ssl AS CHAR)")
            .fetch_one(&mut conn)
            .await
            .unwrap()
    };
    let mut config = mysql_source_config(&fx.name);
    config["ssl_mode"] = json!("require");
    fx.engine
        .register_connection("tls", "mysql", config)
        .await
        .unwrap();
    let result = fx.engine.test_connection("tls").await;
    if have_ssl == "YES" {
        // A server with TLS accepts the requirement; nothing to classify.
        assert!(result.is_ok(), "{result:?}");
    } else {
        let err = result.unwrap_err();
        assert_eq!(class_of(&err), FailureClass::Tls, "{err}");
        assert!(err.to_string().contains("TLS"), "{err}");
    }
}

#[tokio::test]
async fn a_large_table_read_in_key_ranges_is_exact() {
    let mut fx = MySqlSourceFixture::new().await;
    // Over the 64 MiB partitioning threshold, with an integer primary key.
    fx.exec(
        "CREATE TABLE wide (id BIGINT PRIMARY KEY, payload TEXT) ENGINE=InnoDB;
         INSERT INTO wide SELECT seq, REPEAT(MD5(seq), 128) FROM seq_1_to_20000;
         ANALYZE TABLE wide;",
    )
    .await;
    let bytes: i64 = sqlx::query_scalar(
        "SELECT CAST(DATA_LENGTH AS SIGNED) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'wide'",
    )
    .fetch_one(&mut fx.admin)
    .await
    .unwrap();
    assert!(
        bytes >= 64 << 20,
        "the table must be large enough to be partitioned ({bytes} bytes)"
    );
    fx.engine.discover_connection("my").await.unwrap();
    let entry = fx
        .engine
        .cached_table("my", &fx.name, "wide")
        .await
        .unwrap();
    assert_eq!(entry.row_count, 20_000);
    let mut ids = Vec::new();
    for batch in read_parquet(&fx.engine.cache().local_path(&entry).unwrap()) {
        for row in 0..batch.num_rows() {
            ids.push(
                value_text(batch.column(0).as_ref(), row)
                    .unwrap()
                    .parse::<i64>()
                    .unwrap(),
            );
            assert_eq!(
                value_text(batch.column(1).as_ref(), row).unwrap().len(),
                32 * 128
            );
        }
    }
    ids.sort_unstable();
    assert_eq!(
        ids,
        (1..=20_000).collect::<Vec<_>>(),
        "every row exactly once"
    );
}
