//! `files` connections over a local folder and over an S3 bucket of the local S3 server
//! (moto, started by `.ci/run`; `QUARRY_TEST_S3_ENDPOINT`): tables from the layout, hive
//! partitions pruned, CSV (gzip, quotes, a null string), nested NDJSON, folder tables;
//! answers compared with the values written; re-discovery; every bad-file case.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::{Float64Array, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::util::display::array_value_to_string;
use datafusion::parquet::arrow::ArrowWriter;
use quarry::Engine;
use serde_json::{Value, json};

/// Every row of `sql`'s result, each value as text (NULL as "NULL").
pub async fn rows(engine: &Engine, sql: &str) -> Vec<Vec<String>> {
    let batches = engine
        .sql(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .collect()
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let mut rows = Vec::new();
    for batch in &batches {
        for r in 0..batch.num_rows() {
            rows.push(
                batch
                    .columns()
                    .iter()
                    .map(|c| {
                        if c.is_null(r) {
                            "NULL".to_owned()
                        } else {
                            array_value_to_string(c, r).unwrap()
                        }
                    })
                    .collect(),
            );
        }
    }
    rows
}

/// The error `sql` fails with, planning or running.
pub async fn failure(engine: &Engine, sql: &str) -> String {
    match engine.sql(sql).await {
        Err(e) => e.to_string(),
        Ok(frame) => match frame.collect().await {
            Err(e) => e.to_string(),
            Ok(_) => panic!("{sql} succeeded"),
        },
    }
}

/// The sales rows of one year: (id, amount, region).
pub fn sales(year: i64) -> Vec<(i64, f64, &'static str)> {
    (0..50)
        .map(|i| {
            let id = year * 1000 + i;
            (
                id,
                (i as f64) * 1.5 + year as f64,
                ["eu", "us", "apac"][i as usize % 3],
            )
        })
        .collect()
}

/// `batch` as the bytes of a Parquet file.
pub fn parquet_bytes(batch: &RecordBatch) -> Vec<u8> {
    let mut bytes = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut bytes, batch.schema(), None).unwrap();
    writer.write(batch).unwrap();
    writer.close().unwrap();
    bytes
}

/// `rows` as Parquet bytes.
pub fn sales_parquet(rows: &[(i64, f64, &str)]) -> Vec<u8> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("amount", DataType::Float64, true),
        Field::new("region", DataType::Utf8, true),
    ]));
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.1))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.2))),
        ],
    )
    .unwrap();
    parquet_bytes(&batch)
}

/// A gzip-compressed CSV with a header, quoted fields and `NA` for NULL.
pub fn customers_csv_gz() -> Vec<u8> {
    let text = "id,name,city\n1,\"Smith, John\",Paris\n2,\"Said \"\"Hi\"\"\",NA\n3,Lee,Oslo\n";
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(text.as_bytes()).unwrap();
    encoder.finish().unwrap()
}

/// Newline-delimited JSON with nested objects and lists.
pub const EVENTS: &str = concat!(
    r#"{"id": 1, "user": {"name": "ana", "age": 31}, "tags": ["a", "b"]}"#,
    "\n",
    r#"{"id": 2, "user": {"name": "bo", "age": null}, "tags": []}"#,
    "\n",
    r#"{"id": 3, "user": {"name": "cy", "age": 7}, "tags": ["c"]}"#,
    "\n"
);

/// The files every layout test reads, by path under the root.
pub fn layout_files() -> Vec<(String, Vec<u8>)> {
    let mut files = vec![
        (
            "sales/year=2023/part-0.parquet".to_owned(),
            sales_parquet(&sales(2023)),
        ),
        (
            "sales/year=2024/part-0.parquet".to_owned(),
            sales_parquet(&sales(2024)),
        ),
        ("customers.csv.gz".to_owned(), customers_csv_gz()),
        ("events.ndjson".to_owned(), EVENTS.as_bytes().to_vec()),
        ("sales/_SUCCESS".to_owned(), Vec::new()),
    ];
    for day in 1..=3 {
        let mut text = String::from("day,level,count\n");
        for i in 0..10 {
            text.push_str(&format!(
                "{day},{},{}\n",
                ["info", "warn"][i % 2],
                day * 100 + i
            ));
        }
        files.push((format!("logs/day-{day}.csv"), text.into_bytes()));
    }
    files
}

pub fn write_files(root: &Path, files: &[(String, Vec<u8>)]) {
    for (path, bytes) in files {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }
}

/// A temporary folder holding `files` under `data/`, and an engine whose data dir is
/// beside it.
async fn folder(files: &[(String, Vec<u8>)]) -> (tempfile::TempDir, std::path::PathBuf, Engine) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    write_files(&root, files);
    let engine = engine(dir.path()).await;
    (dir, root, engine)
}

async fn engine(dir: &Path) -> Engine {
    Engine::builder()
        .data_dir(dir.join("quarry"))
        .build()
        .await
        .unwrap()
}

pub async fn connect(engine: &Engine, name: &str, config: Value) {
    let created = engine
        .create_connection(name, "files", config)
        .await
        .unwrap();
    created.discovery.as_ref().expect("discovery succeeds");
}

/// The checks every layout (local or S3) must pass, on connection `c`.
pub async fn check_layout(engine: &Engine, c: &str) {
    assert_eq!(
        rows(
            engine,
            &format!(
                "SELECT table_name FROM quarry.information_schema.tables
                 WHERE connection_name = '{c}' ORDER BY table_name"
            )
        )
        .await,
        [["customers"], ["events"], ["logs"], ["sales"]]
    );
    // Hive partitions: typed, and pruned to the one folder.
    let expected: f64 = sales(2024).iter().map(|r| r.1).sum();
    let got = rows(
        engine,
        &format!("SELECT sum(amount), count(*), min(year) FROM {c}.main.sales WHERE year = 2024"),
    )
    .await;
    assert_eq!(got, [[format!("{expected:?}"), "50".into(), "2024".into()]]);
    let plan = rows(
        engine,
        &format!("EXPLAIN SELECT sum(amount) FROM {c}.main.sales WHERE year = 2024"),
    )
    .await
    .concat()
    .join("\n");
    assert!(plan.contains("year=2024/part-0.parquet"), "{plan}");
    assert!(
        !plan.contains("year=2023"),
        "the 2023 file is pruned: {plan}"
    );
    let all: Vec<(i64, f64, &str)> = sales(2023).into_iter().chain(sales(2024)).collect();
    let eu: f64 = all.iter().filter(|r| r.2 == "eu").map(|r| r.1).sum();
    assert_eq!(
        rows(
            engine,
            &format!("SELECT sum(amount) FROM {c}.main.sales WHERE region = 'eu'")
        )
        .await,
        [[format!("{eu:?}")]]
    );
    // CSV: gzip, quotes, the null string.
    assert_eq!(
        rows(
            engine,
            &format!("SELECT id, name, city FROM {c}.main.customers ORDER BY id")
        )
        .await,
        [
            ["1", "Smith, John", "Paris"],
            ["2", "Said \"Hi\"", "NULL"],
            ["3", "Lee", "Oslo"]
        ]
    );
    // NDJSON: nested fields.
    assert_eq!(
        rows(
            engine,
            &format!(
                "SELECT id, e.\"user\"['name'], e.\"user\"['age'], array_length(tags)
                 FROM {c}.main.events e ORDER BY id"
            )
        )
        .await,
        [
            ["1", "ana", "31", "2"],
            ["2", "bo", "NULL", "0"],
            ["3", "cy", "7", "1"]
        ]
    );
    // A folder of several files.
    let expected: i64 = (1..=3)
        .flat_map(|d| (0..10).map(move |i| d * 100 + i))
        .sum();
    assert_eq!(
        rows(
            engine,
            &format!("SELECT count(*), sum(count), count(DISTINCT day) FROM {c}.main.logs")
        )
        .await,
        [["30".to_owned(), expected.to_string(), "3".to_owned()]]
    );
}

#[tokio::test]
async fn a_local_folder_is_a_catalog_of_its_files() {
    let (_dir, root, engine) = folder(&layout_files()).await;
    connect(
        &engine,
        "local",
        json!({"url": format!("file://{}", root.display()), "null_string": "NA"}),
    )
    .await;
    check_layout(&engine, "local").await;
    // Parquet is read in place; the CSV was parsed into the cache.
    let cached = rows(
        &engine,
        "SELECT table_name, cached, file_format, file_count FROM quarry.information_schema.tables
         WHERE connection_name = 'local' ORDER BY table_name",
    )
    .await;
    assert_eq!(
        cached,
        [
            ["customers", "true", "csv", "1"],
            ["events", "true", "ndjson", "1"],
            ["logs", "true", "csv", "3"],
            ["sales", "false", "parquet", "2"]
        ]
    );
    // Join planning gets the row counts the Parquet footers hold.
    let session = engine.new_session();
    for sql in ["SET datafusion.explain.show_statistics = true", "SELECT 1"] {
        session.sql(sql).await.unwrap().collect().await.unwrap();
    }
    let explained = session
        .sql("EXPLAIN SELECT id FROM local.main.sales")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let plan = datafusion::arrow::util::pretty::pretty_format_batches(&explained)
        .unwrap()
        .to_string();
    assert!(plan.contains("Rows=Exact(100)"), "{plan}");
}

#[tokio::test]
async fn rediscovery_reports_added_removed_and_changed_files() {
    let (_dir, root, engine) = folder(&layout_files()).await;
    connect(
        &engine,
        "local",
        json!({"url": root.display().to_string(), "null_string": "NA"}),
    )
    .await;
    assert_eq!(
        rows(&engine, "SELECT count(*) FROM local.main.events").await,
        [["3"]]
    );
    write_files(
        &root,
        &[
            (
                "sales/year=2025/part-0.parquet".to_owned(),
                sales_parquet(&sales(2025)),
            ),
            ("new.csv".to_owned(), b"a\n1\n".to_vec()),
            (
                "events.ndjson".to_owned(),
                format!(
                    "{EVENTS}{}\n",
                    r#"{"id": 4, "user": {"name": "di", "age": 2}, "tags": []}"#
                )
                .into_bytes(),
            ),
        ],
    );
    std::fs::remove_file(root.join("customers.csv.gz")).unwrap();
    let outcome = engine.discover_connection("local").await.unwrap();
    assert_eq!(
        (
            outcome.tables_added,
            outcome.tables_removed,
            outcome.tables_changed
        ),
        (1, 1, 2)
    );
    assert_eq!(
        rows(&engine, "SELECT count(*) FROM local.main.events").await,
        [["4"]],
        "the changed table's copy was invalidated"
    );
    assert_eq!(
        rows(&engine, "SELECT count(*), max(year) FROM local.main.sales").await,
        [["150", "2025"]]
    );
    assert_eq!(rows(&engine, "SELECT a FROM local.main.new").await, [["1"]]);
}

#[tokio::test]
async fn a_bad_csv_row_fails_with_its_place_or_is_skipped_and_counted() {
    let text = "id,amount\n1,2.5\n2,oops\n3,4.0\n4,1,extra\n5,6.5\n";
    // Discovered while the file was good; the bad rows came after.
    let (_dir, root, engine) =
        folder(&[("t.csv".to_owned(), b"id,amount\n1,2.5\n".to_vec())]).await;
    connect(
        &engine,
        "strict",
        json!({"url": root.display().to_string(), "tables": {"t": {"path": "t.csv", "schema": {"amount": "double"}}}}),
    )
    .await;
    write_files(&root, &[("t.csv".to_owned(), text.as_bytes().to_vec())]);
    let error = failure(&engine, "SELECT * FROM strict.main.t").await;
    assert!(
        error.contains("file 't.csv', line 3, column 'amount': 'oops' is not a valid Float64"),
        "{error}"
    );
    assert!(error.contains("bad_rows = 'skip'"), "{error}");
    write_files(
        &root,
        &[("t.csv".to_owned(), b"id,amount\n1,2.5\n".to_vec())],
    );
    connect(
        &engine,
        "lenient",
        json!({"url": root.display().to_string(), "bad_rows": "skip",
               "tables": {"t": {"path": "t.csv", "schema": {"amount": "double"}}}}),
    )
    .await;
    write_files(&root, &[("t.csv".to_owned(), text.as_bytes().to_vec())]);
    assert_eq!(
        rows(&engine, "SELECT id, amount FROM lenient.main.t ORDER BY id").await,
        [["1", "2.5"], ["3", "4.0"], ["5", "6.5"]]
    );
    assert_eq!(
        rows(
            &engine,
            "SELECT skipped_rows FROM quarry.information_schema.tables
             WHERE connection_name = 'lenient' AND table_name = 't'"
        )
        .await,
        [["2"]]
    );
}

#[tokio::test]
async fn a_bad_json_line_fails_with_its_line() {
    let text = format!("{EVENTS}{{\"id\": 4, \"user\": \n");
    let (_dir, root, engine) = folder(&[("e.ndjson".to_owned(), EVENTS.as_bytes().to_vec())]).await;
    connect(&engine, "j", json!({"url": root.display().to_string()})).await;
    // Broken after discovery, so the sample did not see it.
    write_files(&root, &[("e.ndjson".to_owned(), text.into_bytes())]);
    let error = failure(&engine, "SELECT * FROM j.main.e").await;
    assert!(error.contains("file 'e.ndjson', line 4"), "{error}");
}

#[tokio::test]
async fn removed_changed_and_unreadable_files_have_clear_errors() {
    let (_dir, root, engine) = folder(&[
        ("gone.csv".to_owned(), b"a\n1\n".to_vec()),
        ("p.parquet".to_owned(), sales_parquet(&sales(2023))),
    ])
    .await;
    connect(&engine, "f", json!({"url": root.display().to_string()})).await;
    std::fs::remove_file(root.join("gone.csv")).unwrap();
    let error = failure(&engine, "SELECT * FROM f.main.gone").await;
    assert!(
        error.contains("file 'gone.csv' was removed after discovery")
            && error.contains("discover_connection('f')"),
        "{error}"
    );
    // A copy of a Parquet file whose column changed type.
    engine
        .sql("SELECT * FROM set_table_options('f.main.p', '{\"mode\": \"cache\"}')")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("amount", DataType::Utf8, true),
        Field::new("region", DataType::Utf8, true),
    ]));
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![
            Arc::new(StringArray::from(vec!["x"])),
            Arc::new(StringArray::from(vec!["lots"])),
            Arc::new(StringArray::from(vec!["eu"])),
        ],
    )
    .unwrap();
    std::fs::write(root.join("p.parquet"), parquet_bytes(&batch)).unwrap();
    let error = failure(&engine, "SELECT * FROM f.main.p").await;
    assert!(
        error.contains("file 'p.parquet' no longer matches the table's columns"),
        "{error}"
    );
    // A file that is not Parquet at all fails discovery with the table named.
    std::fs::write(root.join("broken.parquet"), b"not parquet").unwrap();
    let error = engine
        .discover_connection("f")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("cannot read the schema of table 'broken'"),
        "{error}"
    );
}

#[tokio::test]
async fn a_parquet_file_read_in_place_that_was_removed_or_rewritten_says_so() {
    let (_dir, root, engine) = folder(&[
        ("p.parquet".to_owned(), sales_parquet(&sales(2023))),
        ("q.parquet".to_owned(), sales_parquet(&sales(2023))),
    ])
    .await;
    connect(&engine, "f", json!({"url": root.display().to_string()})).await;
    // Read once (its footer is cached), then removed.
    assert_eq!(
        rows(&engine, "SELECT count(*) FROM f.main.p").await,
        [["50"]]
    );
    std::fs::remove_file(root.join("p.parquet")).unwrap();
    let error = failure(&engine, "SELECT sum(amount) FROM f.main.p").await;
    assert!(
        error.contains("file 'p.parquet' was removed after discovery")
            && error.contains("discover_connection('f')"),
        "{error}"
    );
    // Rewritten with more rows: the footer is not where discovery saw it.
    let more: Vec<_> = sales(2023).into_iter().chain(sales(2024)).collect();
    std::fs::write(root.join("q.parquet"), sales_parquet(&more)).unwrap();
    let error = failure(&engine, "SELECT sum(amount) FROM f.main.q").await;
    let size = std::fs::metadata(root.join("q.parquet")).unwrap().len();
    assert!(
        error.contains("file 'q.parquet' changed after discovery (")
            && error.contains(&format!(
                " bytes then, {size} now); run discover_connection('f')"
            )),
        "{error}"
    );
    // Discovery again, and the table reads as it is now.
    engine.discover_connection("f").await.unwrap();
    assert_eq!(
        rows(&engine, "SELECT count(*) FROM f.main.q").await,
        [["100"]]
    );
}

#[tokio::test]
async fn bad_configs_are_refused_with_the_rule() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path()).await;
    let refused = |config: Value| {
        let engine = &engine;
        async move {
            engine
                .register_connection("x", "files", config)
                .await
                .unwrap_err()
                .to_string()
        }
    };
    let missing = dir.path().join("missing");
    assert!(
        refused(json!({"url": missing.display().to_string()}))
            .await
            .contains("does not exist")
    );
    let error = refused(json!({"url": "s3://b/p", "regoin": "eu-west-1"})).await;
    assert!(
        error.contains("unknown key 'regoin' (did you mean 'region'?)"),
        "{error}"
    );
    let error = refused(json!({"url": dir.path().display().to_string(), "region": "x"})).await;
    assert!(
        error.contains("'region' applies to s3:// URLs only"),
        "{error}"
    );
    let error = refused(json!({"url": "ftp://host/x"})).await;
    assert!(
        error.contains("file://, s3://, http:// or https://"),
        "{error}"
    );
    let error = refused(json!({"url": "s3://b/p", "access_key_id": "k"})).await;
    assert!(error.contains("go together"), "{error}");
    let error = refused(json!({"url": dir.path().display().to_string(), "format": "xls"})).await;
    assert!(error.contains("'format' must be one of parquet"), "{error}");
    let error = refused(json!({"url": dir.path().display().to_string(),
                               "tables": {"t": {"glob": "*.csv", "delimter": ";"}}}))
    .await;
    assert!(
        error.contains("table 't' in 'tables': unknown key 'delimter' (did you mean 'delimiter'?)"),
        "{error}"
    );
    let error = refused(json!({"url": dir.path().display().to_string(), "glob": "logs/[a-"})).await;
    assert!(
        error.contains("'glob' \"logs/[a-\" is not a glob"),
        "{error}"
    );
}
