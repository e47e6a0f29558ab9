//! The `quarry` binary, run as a user runs it.

use std::process::Output;

use crate::support::{cells, has_row, quarry, quarry_piped, text};

#[test]
fn dash_c_prints_the_result_as_a_table() {
    let dir = tempfile::tempdir().unwrap();
    let out = quarry(dir.path(), &["-c", "SELECT 1 + 1 AS two, 'x' AS label"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    // Names, then types, then the row.
    assert_eq!(
        cells(&stdout),
        [["two", "label"], ["Int64", "Utf8"], ["2", "x"]],
        "{stdout}"
    );
    // Columns are aligned: every table line has the same width.
    let lines: Vec<_> = stdout.lines().collect();
    let widths: Vec<_> = lines.iter().map(|l| l.chars().count()).collect();
    assert!(widths.iter().all(|w| *w == widths[0]), "{stdout}");
}

#[test]
fn a_bad_statement_fails_with_the_error_on_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let out = quarry(dir.path(), &["-c", "SELECT * FROM no_such_table"]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.starts_with("Error: "), "{stderr}");
    assert!(stderr.contains("no_such_table"), "{stderr}");
    assert!(out.stdout.is_empty());
}

#[test]
fn a_bad_memory_cache_size_is_refused_with_the_forms_it_takes() {
    let dir = tempfile::tempdir().unwrap();
    let out = quarry(dir.path(), &["--memory-cache", "lots", "-c", "SELECT 1"]);
    // A wrong value is a usage error, as the README says.
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("invalid memory cache size 'lots'"),
        "{stderr}"
    );
    assert!(
        stderr.contains("4GiB") && stderr.contains("25%"),
        "{stderr}"
    );
    let out = quarry(
        dir.path(),
        &["--memory-cache", "0", "-c", "SELECT 1 AS one"],
    );
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
}

#[test]
fn a_syntax_error_fails_without_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let out = quarry(dir.path(), &["-c", "SELEC 1"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.starts_with("Error: "), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn statements_run_in_order_and_the_data_dir_comes_from_quarry_home() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("nested/home");
    let out = quarry(
        &home,
        &[
            "-c",
            "CREATE TABLE t AS VALUES (41); SELECT column1 + 1 AS answer FROM t",
        ],
    );
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert!(
        has_row(&text(&out.stdout), &["42"]),
        "{}",
        text(&out.stdout)
    );
    assert!(
        home.join("quarry.db").is_file(),
        "the store is created in QUARRY_HOME"
    );
}

#[test]
fn data_dir_flag_wins_over_quarry_home() {
    let dir = tempfile::tempdir().unwrap();
    let flag_dir = dir.path().join("flag");
    let env_dir = dir.path().join("env");
    let out = quarry(
        &env_dir,
        &["--data-dir", flag_dir.to_str().unwrap(), "-c", "SELECT 1"],
    );
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert!(flag_dir.join("quarry.db").is_file());
    assert!(!env_dir.exists());
}

#[test]
fn a_bad_store_url_is_explained() {
    let dir = tempfile::tempdir().unwrap();
    let out = quarry(
        dir.path(),
        &["--store", "mysql://root:topsecret@h/db", "-c", "SELECT 1"],
    );
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("invalid metadata store URL"), "{stderr}");
    assert!(stderr.contains("unsupported scheme"), "{stderr}");
    assert!(!stderr.contains("topsecret"), "{stderr}");
}

#[test]
fn a_bad_cache_url_is_explained_without_the_secret() {
    let dir = tempfile::tempdir().unwrap();
    let out = quarry(
        dir.path(),
        &["--cache-url", "gs://bucket/cache", "-c", "SELECT 1"],
    );
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("invalid cache URL 'gs://bucket/cache'")
            && stderr.contains("s3://bucket/prefix"),
        "{stderr}"
    );
    let out = quarry(
        dir.path(),
        &[
            "--cache-url",
            "s3://AKIA:topsecret@bucket/cache",
            "-c",
            "SELECT 1",
        ],
    );
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("credentials do not go in the URL"),
        "{stderr}"
    );
    assert!(!stderr.contains("topsecret"), "{stderr}");
}

#[test]
fn an_unreachable_store_names_the_cause_without_the_password() {
    let dir = tempfile::tempdir().unwrap();
    // Port 1 on loopback: nothing listens there, so the connection is refused at once.
    let out = quarry(
        dir.path(),
        &[
            "--store",
            "postgres://quarry:topsecret@127.0.0.1:1/meta",
            "-c",
            "SELECT 1",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("while connecting to the store at postgres://quarry:***@127.0.0.1:1/meta"),
        "{stderr}"
    );
    assert!(stderr.contains("Connection refused"), "{stderr}");
    assert!(!stderr.contains("topsecret"), "{stderr}");
}

#[tokio::test]
async fn connections_made_with_sql_persist_across_runs() {
    use sqlx::Connection;
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("shop.db");
    let mut conn =
        sqlx::SqliteConnection::connect(&format!("sqlite://{}?mode=rwc", source.display()))
            .await
            .unwrap();
    sqlx::raw_sql("CREATE TABLE items (id INTEGER, name TEXT); INSERT INTO items VALUES (1, 'tea'), (2, 'cake');")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    let home = dir.path().join("home");
    let config = serde_json::json!({"path": source}).to_string();
    let create = format!(
        "SELECT name, tables_discovered FROM create_connection('shop', 'sqlite', '{config}'); \
         SELECT count(*) AS n FROM shop.main.items"
    );
    let out = quarry(&home, &["-c", &create]);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(has_row(&stdout, &["shop", "1"]), "{stdout}");
    assert!(has_row(&stdout, &["2"]), "{stdout}");
    // A second process finds the connection and its cache.
    let out = quarry(
        &home,
        &[
            "-c",
            "SELECT cached, cache_rows FROM quarry.information_schema.tables; SELECT name FROM shop.main.items ORDER BY id",
        ],
    );
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(has_row(&stdout, &["true", "2"]), "{stdout}");
    assert!(
        has_row(&stdout, &["tea"]) && has_row(&stdout, &["cake"]),
        "{stdout}"
    );
}

fn quarry_with_stdin(data_dir: &std::path::Path, args: &[&str], stdin: &str) -> Output {
    quarry_piped(data_dir, args, stdin.as_bytes().to_vec())
}

const SCRIPT_WITH_AN_ERROR: &str = "\
CREATE TABLE log AS VALUES ('first');
SELECT * FROM missing_table;
SELECT 'after the error' AS marker;
";

#[test]
fn a_piped_script_stops_at_the_first_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = quarry_with_stdin(dir.path(), &[], SCRIPT_WITH_AN_ERROR);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("missing_table"), "{stderr}");
    assert!(!text(&out.stdout).contains("after the error"));
}

#[test]
fn keep_going_runs_the_rest_and_still_fails() {
    let dir = tempfile::tempdir().unwrap();
    let out = quarry_with_stdin(dir.path(), &["--keep-going"], SCRIPT_WITH_AN_ERROR);
    assert_eq!(out.status.code(), Some(1));
    assert!(has_row(&text(&out.stdout), &["after the error"]));
    assert_eq!(
        text(&out.stderr)
            .lines()
            .filter(|l| l.starts_with("quarry:<stdin>:2: error: "))
            .count(),
        1
    );
}

#[test]
fn dash_f_runs_a_script_file_and_exits_zero_when_all_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("report.sql");
    std::fs::write(
        &script,
        "-- a comment; with a semicolon\nCREATE TABLE t (x INT) AS VALUES (1), (2);\n\
         SELECT sum(x) AS total\n  FROM t;\n",
    )
    .unwrap();
    let out = quarry(
        &dir.path().join("home"),
        &["-f", script.to_str().unwrap(), "--format", "csv"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "total\n3\n");

    let out = quarry(dir.path(), &["-f", "/no/such/script.sql"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("/no/such/script.sql"), "{stderr}");
}

#[test]
fn dash_f_stops_at_the_first_error_unless_told_to_keep_going() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("s.sql");
    std::fs::write(&script, SCRIPT_WITH_AN_ERROR).unwrap();
    let path = script.to_str().unwrap();
    let out = quarry(&dir.path().join("a"), &["-f", path]);
    assert_eq!(out.status.code(), Some(1));
    assert!(!text(&out.stdout).contains("after the error"));
    let out = quarry(&dir.path().join("b"), &["-f", path, "--keep-going"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).contains("after the error"));
}

const TYPED_ROWS: &str =
    "SELECT * FROM (VALUES (1, 'a,b', 1.5), (2, NULL, NULL)) AS t(id, label, score) ORDER BY id";

#[test]
fn format_csv_quotes_and_leaves_nulls_empty() {
    let dir = tempfile::tempdir().unwrap();
    let out = quarry(dir.path(), &["-c", TYPED_ROWS, "--format", "csv"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "id,label,score\n1,\"a,b\",1.5\n2,,\n");
}

#[test]
fn format_json_writes_one_array_with_nulls() {
    let dir = tempfile::tempdir().unwrap();
    let out = quarry(dir.path(), &["-c", TYPED_ROWS, "--format", "json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        value,
        serde_json::json!([
            {"id": 1, "label": "a,b", "score": 1.5},
            {"id": 2, "label": null, "score": null}
        ])
    );
}

#[test]
fn format_ndjson_writes_one_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = quarry(dir.path(), &["-c", TYPED_ROWS, "--format", "ndjson"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let rows: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        rows,
        [
            serde_json::json!({"id": 1, "label": "a,b", "score": 1.5}),
            serde_json::json!({"id": 2, "label": null, "score": null})
        ]
    );
}

#[test]
fn format_table_names_types_and_shows_null_apart_from_text() {
    let dir = tempfile::tempdir().unwrap();
    let sql = "SELECT * FROM (VALUES (1, 'a,b'), (2, NULL), (3, '')) AS t(id, label) ORDER BY id";
    let out = quarry(dir.path(), &["-c", sql, "--format", "table"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert_eq!(
        cells(&stdout),
        [
            ["id", "label"],
            ["Int64", "Utf8"],
            ["1", "a,b"],
            ["2", "NULL"],
            ["3", ""]
        ],
        "{stdout}"
    );
}

#[test]
fn an_unknown_format_is_refused_with_the_choices() {
    let dir = tempfile::tempdir().unwrap();
    let out = quarry(dir.path(), &["-c", "SELECT 1", "--format", "xml"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("table") && stderr.contains("ndjson"),
        "{stderr}"
    );
}

#[test]
fn help_shows_every_option_with_examples() {
    let dir = tempfile::tempdir().unwrap();
    let out = quarry(dir.path(), &["--help"]);
    assert!(out.status.success());
    let stdout = text(&out.stdout);
    for option in [
        "--command",
        "--file",
        "--keep-going",
        "--format",
        "--data-dir",
        "--store",
        "--cache-url",
    ] {
        assert!(stdout.contains(option), "{option} missing from:\n{stdout}");
    }
    assert!(stdout.contains("Examples:"), "{stdout}");
}
