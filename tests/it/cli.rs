//! The `quarry` binary, run as a user runs it.

use std::process::{Command, Output, Stdio};

fn quarry(data_dir: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_quarry"))
        .args(args)
        .env("QUARRY_HOME", data_dir)
        .env_remove("QUARRY_STORE_URL")
        .env_remove("QUARRY_SECRET_KEY")
        .stdin(Stdio::null())
        .output()
        .expect("the quarry binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn dash_c_prints_the_result_as_a_table() {
    let dir = tempfile::tempdir().unwrap();
    let out = quarry(dir.path(), &["-c", "SELECT 1 + 1 AS two, 'x' AS label"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let lines: Vec<_> = stdout.lines().collect();
    let header = lines
        .iter()
        .position(|l| l.contains("two"))
        .expect("a header row");
    assert!(lines[header].contains("label"));
    let row: Vec<_> = lines[header + 2].split('|').map(str::trim).collect();
    assert_eq!(row, ["", "2", "x", ""], "{stdout}");
    // Columns are aligned: every table line has the same width.
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
        text(&out.stdout).contains("| 42     |"),
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
    assert!(stdout.contains("| shop | 1                 |"), "{stdout}");
    assert!(stdout.contains("| 2 |"), "{stdout}");
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
    assert!(stdout.contains("| true   | 2          |"), "{stdout}");
    assert!(
        stdout.contains("| tea  |") && stdout.contains("| cake |"),
        "{stdout}"
    );
}
