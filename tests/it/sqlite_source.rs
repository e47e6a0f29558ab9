//! The SQLite source: discovery by storage class and exact values, mixed classes included.

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{DataType, Float64Type};
use serde_json::json;
use sqlx::{AssertSqlSafe, Row};

use crate::render::value_text;
use crate::support::{Backend, Kind, read_parquet, sqlite_source as source_file};

const MIXED: &str = r"
CREATE TABLE mixed (
    id INTEGER PRIMARY KEY, ints BIGINT, nums NUMERIC, anything, texty INTEGER, blobs BLOB, blobby TEXT,
    empty_int INT, empty_text VARCHAR(10)
);
INSERT INTO mixed VALUES (1, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
INSERT INTO mixed VALUES (2, -9223372036854775808, 1, 'text', 42, x'00ff', 'plain', NULL, NULL);
INSERT INTO mixed VALUES (3, 9223372036854775807, 2.5, 1e300, 'not a number', x'', x'c3a9', NULL, NULL);
INSERT INTO mixed VALUES (4, 0, -0.1, 7, 9007199254740992, x'10', 12.5, NULL, NULL);
INSERT INTO mixed VALUES (5, 1, 9007199254740992, x'41', 'héllo ✓ 🎉', NULL, 3, NULL, NULL);
";

#[tokio::test]
async fn mixed_storage_classes_follow_the_stated_rules_exactly() {
    let backend = Backend::new(Kind::Sqlite).await;
    let (path, mut source) = source_file(backend.data_dir(), MIXED).await;
    let engine = backend.engine().await;
    engine
        .register_connection("lite", "sqlite", json!({"path": path}))
        .await
        .unwrap();
    let outcome = engine.test_connection("lite").await.unwrap();
    assert!(outcome.server_version.starts_with("SQLite 3."));
    engine.discover_connection("lite").await.unwrap();
    let id = engine.connection("lite").await.unwrap().id;
    let table = engine
        .store()
        .table(&quarry::table::TableRef::new(&id, "main", "mixed"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(table.row_estimate, Some(5));
    let types: Vec<_> = table
        .columns
        .iter()
        .map(|c| c.arrow_type.as_str())
        .collect();
    assert_eq!(
        types,
        [
            "Int64", "Int64", "Float64", "Binary", "Utf8", "Binary", "Binary", "Int64", "Utf8"
        ]
    );
    let entry = engine.cached_table("lite", "main", "mixed").await.unwrap();
    let batches = read_parquet(&engine.cache().local_path(&entry).unwrap());
    let mut checked = 0;
    for batch in &batches {
        for row in 0..batch.num_rows() {
            let id: i64 = value_text(batch.column(0).as_ref(), row)
                .unwrap()
                .parse()
                .unwrap();
            for (col, column) in table.columns.iter().enumerate().skip(1) {
                let array = batch.column(col);
                let quoted = format!("\"{}\"", column.name);
                let context = format!("row {id} column {} as {}", column.name, column.arrow_type);
                if array.data_type() == &DataType::Float64 {
                    let ours = (!array.is_null(row))
                        .then(|| array.as_primitive::<Float64Type>().value(row));
                    let same: i64 = sqlx::query(AssertSqlSafe(format!(
                        "SELECT {quoted} IS ? AS same FROM mixed WHERE id = ?"
                    )))
                    .bind(ours)
                    .bind(id)
                    .fetch_one(&mut source)
                    .await
                    .unwrap()
                    .try_get("same")
                    .unwrap();
                    assert_eq!(same, 1, "{context}: cached {ours:?}");
                } else {
                    let expr = match array.data_type() {
                        DataType::Binary => format!("hex({quoted})"),
                        _ => format!("CAST({quoted} AS TEXT)"),
                    };
                    let theirs: Option<String> = sqlx::query(AssertSqlSafe(format!(
                        "SELECT CASE WHEN {quoted} IS NULL THEN NULL ELSE {expr} END AS v FROM mixed WHERE id = ?"
                    )))
                    .bind(id)
                    .fetch_one(&mut source)
                    .await
                    .unwrap()
                    .try_get("v")
                    .unwrap();
                    let ours = value_text(array.as_ref(), row).map(|t| match array.data_type() {
                        DataType::Binary => t.trim_start_matches("\\x").to_uppercase(),
                        _ => t,
                    });
                    assert_eq!(ours, theirs, "{context}");
                }
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 5 * 8);
}

#[tokio::test]
async fn an_integer_a_double_would_round_fails_the_fetch() {
    let backend = Backend::new(Kind::Sqlite).await;
    let (path, _source) = source_file(
        backend.data_dir(),
        "CREATE TABLE t (x NUMERIC); INSERT INTO t VALUES (0.5), (9007199254740993);",
    )
    .await;
    let engine = backend.engine().await;
    engine
        .register_connection("lite", "sqlite", json!({"path": path}))
        .await
        .unwrap();
    engine.discover_connection("lite").await.unwrap();
    let err = engine
        .cached_table("lite", "main", "t")
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "cannot fetch lite.main.t: column 'x' (NUMERIC) holds 9007199254740993, an integer beyond \
         2^53, which a double would round (the data changed since discovery? run discovery again)"
    );
}
