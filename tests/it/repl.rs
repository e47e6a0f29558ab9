//! The interactive shell, driven through a pseudo-terminal as a person would use it.

use std::path::{Path, PathBuf};
use std::process::Command;

use rexpect::reader::Options;
use rexpect::session::{PtySession, spawn_with_options};

use crate::support::{PgDatabase, cells, has_row, quarry_command};

const PROMPT: &str = "quarry> ";

fn command(home: &Path) -> Command {
    let mut command = quarry_command(home);
    command.env("TERM", "xterm");
    command
}

/// Creates a connection with `quarry -c`, before the shell starts.
fn create_connection(home: &Path, name: &str, source_type: &str, config: &serde_json::Value) {
    let out = command(home)
        .args([
            "-c",
            &format!("SELECT * FROM create_connection('{name}', '{source_type}', '{config}')"),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn shell(home: &Path) -> PtySession {
    let mut session = spawn_with_options(
        command(home),
        Options::new()
            .timeout_ms(Some(60_000))
            .strip_ansi_escape_codes(true),
    )
    .expect("the shell starts in a pseudo-terminal");
    session.exp_string(PROMPT).expect("the first prompt");
    session
}

/// A data dir with a connection `demo` to a copy of the shipped demo database.
fn home_with_demo(dir: &Path) -> PathBuf {
    let home = dir.join("home");
    let demo = dir.join("demo.db");
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/examples/demo.db"),
        &demo,
    )
    .unwrap();
    create_connection(
        &home,
        "demo",
        "sqlite",
        &serde_json::json!({ "path": demo }),
    );
    home
}

/// A fresh prompt: rustyline's redraws of the line being edited start with `\r`, a new
/// prompt follows a line break.
const FRESH_PROMPT: &str = "\n\r+quarry> ";

/// Sends one line and returns everything printed until the next prompt.
fn run(session: &mut PtySession, line: &str) -> String {
    session.send_line(line).unwrap();
    let (before, _) = session.exp_regex(FRESH_PROMPT).unwrap();
    before
}

fn quit(mut session: PtySession) {
    session.send_line(".quit").unwrap();
    session.exp_eof().expect("the shell exits on .quit");
}

#[test]
fn tab_completes_a_table_name_from_its_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let mut session = shell(&home_with_demo(dir.path()));
    session
        .send("SELECT count(*) AS n FROM demo.main.cust")
        .unwrap();
    session.send("\t").unwrap();
    let output = run(&mut session, ";");
    // Eight customers: the table name was completed to `customers` and the query ran.
    assert!(output.contains("demo.main.customers"), "{output}");
    assert!(has_row(&output, &["8"]), "{output}");
    assert!(output.contains("1 row"), "{output}");
    quit(session);
}

#[test]
fn a_statement_spans_lines_until_its_semicolon() {
    let dir = tempfile::tempdir().unwrap();
    let mut session = shell(dir.path());
    // Typed line by line, as a person does: each later line gets its own prompt.
    session.send_line("SELECT").unwrap();
    session.exp_string("   ...> ").unwrap();
    session.send_line("  41 + 1 AS answer,").unwrap();
    session.exp_string("   ...> ").unwrap();
    session.send_line("  'a;b' AS text").unwrap();
    session.exp_string("   ...> ").unwrap();
    // Nothing ran yet: the statement is not complete.
    let output = run(&mut session, ";");
    assert!(has_row(&output, &["42", "a;b"]), "{output}");
    assert!(output.contains("1 row"), "{output}");
    quit(session);
}

#[test]
fn dot_tables_lists_the_tables_and_mode_csv_writes_csv() {
    let dir = tempfile::tempdir().unwrap();
    let mut session = shell(&home_with_demo(dir.path()));
    let output = run(&mut session, ".tables");
    for table in ["customers", "orders", "products"] {
        assert!(
            cells(&output)
                .iter()
                .any(|row| row[..3] == ["demo", "main", table]),
            "{output}"
        );
    }
    assert!(output.contains("3 rows"), "{output}");
    run(&mut session, ".mode csv");
    let output = run(
        &mut session,
        "SELECT id, name FROM demo.main.products WHERE id <= 2 ORDER BY id;",
    );
    assert!(
        output.contains("id,name\r\n1,Espresso beans\r\n2,Filter papers\r\n"),
        "{output}"
    );
    quit(session);
}

#[test]
fn large_results_show_the_first_rows_and_the_total() {
    let dir = tempfile::tempdir().unwrap();
    let mut session = shell(dir.path());
    run(&mut session, ".maxrows 3");
    let output = run(&mut session, "SELECT value FROM range(100) ORDER BY value;");
    assert!(output.contains("100 rows (3 shown"), "{output}");
    // The header (name, then type) and three rows.
    let rows = cells(&output);
    assert_eq!(rows.len(), 5, "{output}");
    assert_eq!(rows[2..], [["0"], ["1"], ["2"]], "{output}");
    quit(session);
}

#[test]
fn history_is_kept_across_runs() {
    let dir = tempfile::tempdir().unwrap();
    let mut session = shell(dir.path());
    run(&mut session, "SELECT 6 * 7 AS remembered;");
    quit(session);
    let history = std::fs::read_to_string(dir.path().join("history.txt")).unwrap();
    assert!(history.contains("SELECT 6 * 7 AS remembered;"), "{history}");
    // A new run recalls it with the up arrow (twice: `.quit` came last).
    let mut session = shell(dir.path());
    session.send("\x1b[A\x1b[A").unwrap();
    let output = run(&mut session, "");
    assert!(has_row(&output, &["42"]), "{output}");
    quit(session);
}

#[test]
fn errors_are_one_line_and_the_shell_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut session = shell(dir.path());
    let output = run(&mut session, "SELEC 1;");
    let errors: Vec<_> = output.lines().filter(|l| l.contains("Error:")).collect();
    assert_eq!(errors.len(), 1, "{output}");
    assert!(errors[0].contains("Error: syntax error"), "{output}");
    let output = run(&mut session, ".tabels");
    assert!(output.contains("did you mean .tables?"), "{output}");
    let output = run(&mut session, "SELECT 'still here' AS alive;");
    assert!(has_row(&output, &["still here"]), "{output}");
    quit(session);
}

#[tokio::test]
async fn ctrl_c_cancels_a_slow_fetch_and_the_shell_goes_on() {
    use sqlx::Connection;
    let db = PgDatabase::create().await;
    let mut admin = sqlx::PgConnection::connect(&db.url).await.unwrap();
    // A view whose rows take a minute to arrive.
    sqlx::raw_sql("CREATE VIEW slow AS SELECT 1 AS x FROM (SELECT pg_sleep(60)) AS s")
        .execute(&mut admin)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let config = crate::support::pg_source_config(&db.name);
    create_connection(&home, "pg", "postgres", &config);
    let home_for_shell = home.clone();
    tokio::task::spawn_blocking(move || {
        let mut session = shell(&home_for_shell);
        session.send_line("SELECT * FROM pg.public.slow;").unwrap();
        // The progress bar shows the fetch has started.
        session.exp_string("fetching pg.public.slow").unwrap();
        session.send_control('c').unwrap();
        session.exp_string("Cancelled.").unwrap();
        session.exp_regex(FRESH_PROMPT).unwrap();
        let output = run(
            &mut session,
            "SELECT cached FROM quarry.information_schema.tables WHERE table_name = 'slow';",
        );
        assert!(has_row(&output, &["false"]), "{output}");
        let output = run(&mut session, "SELECT 1 + 1 AS two;");
        assert!(has_row(&output, &["2"]), "{output}");
        quit(session);
    })
    .await
    .unwrap();
    // Nothing half-written was published in the cache.
    let cache = home.join("cache");
    let leftovers: Vec<_> = crate::support::walk(&cache)
        .into_iter()
        // Neither a published file nor a temp file of the cancelled fetch.
        .filter(|p| p.extension().is_some_and(|e| e == "parquet" || e == "tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn psql_aliases_work_and_ctrl_d_leaves() {
    let dir = tempfile::tempdir().unwrap();
    let mut session = shell(&home_with_demo(dir.path()));
    let output = run(&mut session, "\\dt demo.main");
    assert!(output.contains("3 rows"), "{output}");
    let output = run(&mut session, "\\d demo.main.products");
    assert!(
        has_row(
            &output,
            &[
                "demo", "main", "products", "price", "Float64", "REAL", "true"
            ]
        ),
        "{output}"
    );
    session.send_control('d').unwrap();
    session.exp_eof().expect("Ctrl-D leaves the shell");
}

#[test]
fn the_prompt_shows_the_default_schema_and_completion_follows_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut session = shell(&home_with_demo(dir.path()));
    session.send_line("USE demo.main;").unwrap();
    session
        .exp_regex("\n\r+quarry demo\\.main> ")
        .expect("the prompt names the default schema");
    // An unqualified table name completes from the default schema.
    session.send("SELECT count(*) AS n FROM cust").unwrap();
    session.send("\t").unwrap();
    session.send_line(";").unwrap();
    let (output, _) = session.exp_regex("\n\r+quarry demo\\.main> ").unwrap();
    assert!(has_row(&output, &["8"]), "{output}");
    quit(session);
}

#[test]
fn lines_typed_ahead_are_all_read() {
    let dir = tempfile::tempdir().unwrap();
    let mut session = shell(dir.path());
    // Sent at once, before the shell has read the first: none may be lost.
    session
        .send("SELECT\r  20 + 1\r  AS a,\r  'x;y' AS b;\rSELECT 2 * 21 AS c;\r")
        .unwrap();
    session.flush().unwrap();
    session.exp_string("x;y").unwrap();
    let (output, _) = session.exp_regex("\n\r+quarry> ").unwrap();
    let output = output + &run(&mut session, "");
    assert!(has_row(&output, &["42"]), "{output}");
    quit(session);
}

#[test]
fn later_lines_of_a_statement_get_a_continuation_prompt() {
    let dir = tempfile::tempdir().unwrap();
    let mut session = shell(dir.path());
    session.send_line("SELECT 6").unwrap();
    session
        .exp_string("   ...> ")
        .expect("a continuation prompt as wide as the first");
    session.send_line("  * 7 AS answer").unwrap();
    session.exp_string("   ...> ").unwrap();
    let output = run(&mut session, ";");
    assert!(has_row(&output, &["42"]), "{output}");
    quit(session);
}
