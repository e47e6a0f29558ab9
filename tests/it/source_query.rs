//! `source_query('conn', 'native SQL')` on PostgreSQL, MariaDB and SQLite: the statement
//! runs on the source in its own dialect, its schema is learnt by preparing it (planning
//! never runs it), its types are those a fetch of the same columns gets, nothing is cached,
//! and writes are refused by the read-only session.

use std::path::PathBuf;

use datafusion::arrow::array::AsArray;
use datafusion::arrow::datatypes::{DataType, Int64Type};
use datafusion::arrow::record_batch::RecordBatch;
use serde_json::json;

use crate::access_modes::{ROWS, Source, error_of};

/// `SELECT * FROM source_query('conn', sql)`, with the statement's quotes doubled.
fn call(connection: &str, sql: &str) -> String {
    format!(
        "SELECT * FROM source_query('{connection}', '{}')",
        sql.replace('\'', "''")
    )
}

async fn rows(source: &Source, sql: &str) -> Vec<RecordBatch> {
    source
        .engine()
        .sql(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .collect()
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// How many rows `events` holds, asked of the source directly.
async fn events_on_source(source: &mut Source) -> i64 {
    let sql = "SELECT count(*) FROM events";
    match source {
        Source::Postgres(fx) => sqlx::query_scalar(sql).fetch_one(&mut fx.admin).await,
        Source::Mysql(fx) => sqlx::query_scalar(sql).fetch_one(&mut fx.admin).await,
        Source::Sqlite { admin, .. } => sqlx::query_scalar(sql).fetch_one(admin).await,
    }
    .unwrap()
}

/// A statement in each source's own dialect, and one that prepares but fails when it runs.
struct Dialect {
    /// Ids 1..=10 joined into one text, in the source's own function.
    native: &'static str,
    /// Prepares, and fails only when run.
    fails_when_run: &'static str,
    /// A write that returns rows, which only the read-only session stops.
    write_with_rows: &'static str,
}

fn dialect(kind: &str) -> Dialect {
    match kind {
        "postgres" => Dialect {
            native: "SELECT string_agg(id::text, ',' ORDER BY id) AS ids, count(*) AS n \
                     FROM events WHERE id <= 10",
            fails_when_run: "SELECT 1 / (v - v) AS x FROM events",
            write_with_rows: "SELECT sneaky_insert() AS id",
        },
        "mysql" => Dialect {
            native: "SELECT GROUP_CONCAT(id ORDER BY id SEPARATOR ',') AS ids, COUNT(*) AS n \
                     FROM events WHERE id <= 10",
            fails_when_run: "SELECT id FROM events WHERE id = (SELECT id FROM events)",
            write_with_rows: "DELETE FROM events WHERE id <= 10 RETURNING id",
        },
        _ => Dialect {
            native: "SELECT group_concat(id, ',') AS ids, count(*) AS n \
                     FROM (SELECT id FROM events WHERE id <= 10 ORDER BY id)",
            fails_when_run: "SELECT abs(-9223372036854775807 - v) AS x FROM events",
            write_with_rows: "DELETE FROM events WHERE id <= 10 RETURNING id",
        },
    }
}

async fn source_query_end_to_end(kind: &str) {
    let mut source = Source::new(kind).await;
    if kind == "postgres" {
        // A write hidden in a function a SELECT calls: only the session can refuse it.
        source
            .exec(
                "CREATE FUNCTION sneaky_insert() RETURNS int LANGUAGE sql AS \
                 'INSERT INTO events VALUES (5000, 0, NULL) RETURNING id'",
            )
            .await;
    }
    source
        .connect("src", json!({"mode": "live", "statement_timeout": "2s"}))
        .await;
    let dialect = dialect(kind);

    // The source's own SQL, answered by the source.
    let batches = rows(&source, &call("src", dialect.native)).await;
    let ids = datafusion::arrow::compute::cast(batches[0].column(0), &DataType::Utf8).unwrap();
    let expected: Vec<String> = (1..=10).map(|i| i.to_string()).collect();
    assert_eq!(ids.as_string::<i32>().value(0), expected.join(","));
    let n = datafusion::arrow::compute::cast(batches[0].column(1), &DataType::Int64).unwrap();
    assert_eq!(n.as_primitive::<Int64Type>().value(0), 10);

    // A table's columns get the types a fetch of that table gets.
    let through_catalog = rows(
        &source,
        &format!("SELECT id, v, s FROM {} LIMIT 1", source.events("src")),
    )
    .await;
    let through_function = rows(&source, &call("src", "SELECT id, v, s FROM events")).await;
    let types = |batches: &[RecordBatch]| -> Vec<DataType> {
        batches[0]
            .schema()
            .fields()
            .iter()
            .map(|f| f.data_type().clone())
            .collect()
    };
    assert_eq!(types(&through_function), types(&through_catalog));
    let total: usize = through_function.iter().map(|b| b.num_rows()).sum();
    assert_eq!(total as i64, ROWS);

    // Quarry's SQL runs above it: filters, projections, aggregates, and joins with tables.
    let sql = format!(
        "SELECT count(*) FROM source_query('src', 'SELECT id, v FROM events') q \
         JOIN {} e ON e.id = q.id WHERE q.v = 3",
        source.events("src")
    );
    let batches = rows(&source, &sql).await;
    let threes = (1..=ROWS).filter(|i| i % 7 == 3).count() as i64;
    assert_eq!(
        batches[0].column(0).as_primitive::<Int64Type>().value(0),
        threes
    );

    // Every query reads the source again, and nothing is cached.
    let count = call("src", "SELECT count(*) AS n FROM events");
    let n = |batches: Vec<RecordBatch>| {
        let n = datafusion::arrow::compute::cast(batches[0].column(0), &DataType::Int64).unwrap();
        n.as_primitive::<Int64Type>().value(0)
    };
    assert_eq!(n(rows(&source, &count).await), ROWS);
    source
        .exec("INSERT INTO events VALUES (1001, 1, 'late')")
        .await;
    assert_eq!(n(rows(&source, &count).await), ROWS + 1);

    // EXPLAIN shows the statement sent.
    let plan = source
        .explain(&call("src", "SELECT id FROM events WHERE id < 5"))
        .await;
    assert!(
        plan.contains("SourceQueryExec: connection=src sql=SELECT id FROM events WHERE id < 5"),
        "{plan}"
    );

    // Planning prepares the statement and does not run it: this one fails only when run.
    let frame = source
        .engine()
        .sql(&call("src", dialect.fails_when_run))
        .await
        .expect("planning does not run the statement");
    assert_eq!(frame.schema().fields().len(), 1);
    let e = frame
        .collect()
        .await
        .expect_err("running it fails")
        .to_string();
    assert!(e.contains("refused a statement"), "{e}");

    // A view over it plans its statement each time it is read.
    rows(
        &source,
        &format!(
            "CREATE VIEW first_ids AS {}",
            call("src", "SELECT id FROM events WHERE id <= 3")
        ),
    )
    .await;
    let batches = rows(&source, "SELECT count(*) FROM first_ids").await;
    assert_eq!(batches[0].column(0).as_primitive::<Int64Type>().value(0), 3);

    // Writes are refused, and the table is as it was.
    let before = events_on_source(&mut source).await;
    let e = error_of(
        source.engine(),
        &call("src", "INSERT INTO events VALUES (2000, 1, 'x')"),
    )
    .await;
    assert!(e.contains("read-only"), "{e}");
    let e = error_of(source.engine(), &call("src", dialect.write_with_rows)).await;
    assert!(
        e.contains("read-only") && e.contains("tried to write"),
        "the session refuses it: {e}"
    );
    assert_eq!(events_on_source(&mut source).await, before);

    assert_eq!(
        source.cache_files(),
        Vec::<PathBuf>::new(),
        "source_query wrote no cache file"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_query_end_to_end_on_postgresql() {
    source_query_end_to_end("postgres").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_query_end_to_end_on_mariadb() {
    source_query_end_to_end("mysql").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_query_end_to_end_on_sqlite() {
    source_query_end_to_end("sqlite").await;
}

/// The connection's `statement_timeout` applies to the statement.
async fn source_query_times_out(kind: &str, slow: &str) {
    let source = Source::new(kind).await;
    source
        .connect("src", json!({"statement_timeout": "300ms"}))
        .await;
    let e = error_of(source.engine(), &call("src", slow)).await;
    assert!(e.contains("timed out"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_query_times_out_on_postgresql() {
    source_query_times_out(
        "postgres",
        "SELECT id FROM events WHERE id < 3 AND pg_sleep(5) IS NOT NULL",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_query_times_out_on_mariadb() {
    source_query_times_out(
        "mysql",
        "SELECT id FROM events WHERE id < 3 AND SLEEP(5) = 0",
    )
    .await;
}

#[tokio::test]
async fn bad_source_query_calls_get_clear_errors() {
    let source = Source::new("sqlite").await;
    source.connect("lite", json!({})).await;
    let engine = source.engine();
    let cases = [
        (
            "SELECT * FROM source_query('lite')".to_owned(),
            "takes 2 arguments, got 1",
        ),
        (
            "SELECT * FROM source_query('lite', 'SELECT ' || '1')".to_owned(),
            "must be text literals",
        ),
        (call("lyte", "SELECT 1"), "did you mean 'lite'"),
        (
            call("lite", "SELECT * FROM events WHERE id = ?"),
            "1 parameter placeholder",
        ),
        (call("lite", "DELETE FROM events"), "returns no rows"),
        (call("lite", "SELEC 1"), "syntax error"),
    ];
    for (sql, expected) in cases {
        let e = error_of(engine, &sql).await;
        assert!(e.contains(expected), "{sql}: {e}");
    }
}
