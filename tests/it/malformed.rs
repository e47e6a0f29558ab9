//! Hundreds of malformed inputs — broken SQL, wrong function arguments, bad connection
//! configs, unknown commands, binary junk — each get an error and never a panic, both in
//! the shell's library and through the `quarry` binary.

use quarry::repl::render::Mode;
use quarry::repl::statements::{Splitter, split_script};
use quarry::repl::{Settings, Shell, describe_error};

use crate::support::{Backend, Kind, quarry_piped};

const BROKEN_SQL: &[&str] = &[
    "SELEC 1",
    "SELECT",
    "SELECT * FROM",
    "SELECT 1 +",
    "SELECT (1",
    "SELECT 1)",
    "SELECT 'unterminated",
    "SELECT \"unterminated",
    "SELECT * FROM t WHERE",
    "SELECT * FROM no_such_table",
    "SELECT no_such_column",
    "SELECT * FROM nowhere.public.t",
    "SELECT * FROM quarry.information_schema.nothing",
    "SELECT * FROM quarry.nothing.tables",
    "INSERT INTO",
    "INSERT INTO nothing VALUES (1)",
    "UPDATE x SET",
    "DELETE FROM",
    "CREATE TABLE",
    "CREATE TABLE (a int)",
    "DROP TABLE no_such_table",
    "DROP",
    "ALTER TABLE x",
    "WITH a AS SELECT 1",
    "WITH a AS (SELECT 1) SELECT * FROM b",
    "SELECT 1 UNION",
    "SELECT 1 UNION SELECT 1, 2",
    "SELECT * FROM (SELECT 1) AS",
    "SELECT CAST(1 AS nothing)",
    "SELECT CAST('x' AS INT)",
    "SELECT 1 / 0",
    "SELECT abs()",
    "SELECT abs(1, 2, 3)",
    "SELECT no_such_function(1)",
    "SELECT sum(",
    "SELECT count(*) FROM (VALUES (1)) t GROUP BY",
    "SELECT * FROM (VALUES (1)) t ORDER BY",
    "SELECT * FROM (VALUES (1)) t ORDER BY 5",
    "SELECT * FROM (VALUES (1)) t LIMIT -1",
    "SELECT * FROM (VALUES (1)) t LIMIT 'x'",
    "SELECT a FROM (VALUES (1)) t(a) HAVING",
    "SELECT * FROM (VALUES (1)) a JOIN (VALUES (2)) b ON",
    "SELECT CASE WHEN THEN 1 END",
    "SELECT CASE 1 END",
    "SELECT 1 BETWEEN",
    "SELECT 1 IN",
    "SELECT 1 IN (",
    "SELECT ARRAY[1, 'a'",
    "SELECT [1, 2",
    "SELECT {'a': }",
    "SELECT 1::",
    "SELECT 1 AS",
    "SELECT ((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((1))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))",
    "SET",
    "SET datafusion.no.such.option = 1",
    "SET datafusion.execution.batch_size = 'many'",
    "SHOW no_such_thing",
    "SHOW COLUMNS FROM no_such_table",
    "EXPLAIN",
    "EXPLAIN SELEC 1",
    "COPY",
    "COPY (SELECT 1) TO",
    "PREPARE",
    "EXECUTE no_such_statement",
    "DESCRIBE no_such_table",
    "SELECT * FROM range()",
    "SELECT * FROM range('a')",
    "SELECT 1; SELEC 2",
    "; ; SELEC",
    "😀",
    "SELECT 😀",
    "SELECT * FROM \"\"",
    "SELECT * FROM a.b.c.d.e",
    "CREATE EXTERNAL TABLE t STORED AS PARQUET LOCATION '/no/such/dir/x.parquet'",
    "CREATE VIEW v AS",
    "SELECT repeat('x', -1) || abs('x')",
    "SELECT date '2024-13-45'",
    "SELECT timestamp 'yesterday-ish'",
    "SELECT interval 'forever'",
    "SELECT arrow_cast(1, 'NoSuchType')",
];

const BAD_FUNCTION_CALLS: &[&str] = &[
    "SELECT * FROM create_connection()",
    "SELECT * FROM create_connection('a')",
    "SELECT * FROM create_connection('a', 'postgres')",
    "SELECT * FROM create_connection(1, 2, 3)",
    "SELECT * FROM create_connection('a', 'postgres', '{}', 'extra')",
    "SELECT * FROM create_connection('Bad Name', 'sqlite', '{\"path\": \"/x\"}')",
    "SELECT * FROM create_connection('quarry', 'sqlite', '{\"path\": \"/x\"}')",
    "SELECT * FROM create_connection('conn_aaaaaaaaaaaaaaaaaaaaaa', 'sqlite', '{}')",
    "SELECT * FROM create_connection('a', 'oracle', '{}')",
    "SELECT * FROM create_connection('a', '', '{}')",
    "SELECT * FROM create_connection('a', NULL, '{}')",
    "SELECT * FROM create_connection(NULL, 'sqlite', '{}')",
    "SELECT * FROM test_connection()",
    "SELECT * FROM test_connection('nope')",
    "SELECT * FROM test_connection(42)",
    "SELECT * FROM test_connection('a', 'b')",
    "SELECT * FROM discover_connection()",
    "SELECT * FROM discover_connection('nope')",
    "SELECT * FROM refresh_table()",
    "SELECT * FROM refresh_table('nope')",
    "SELECT * FROM refresh_table('a.b')",
    "SELECT * FROM refresh_table('a.b.c')",
    "SELECT * FROM refresh_table('a.b.c.d')",
    "SELECT * FROM refresh_connection()",
    "SELECT * FROM refresh_connection('nope')",
    "SELECT * FROM purge_cache()",
    "SELECT * FROM purge_cache('nope')",
    "SELECT * FROM purge_cache('a', 'b', 'c', 'd')",
    "SELECT * FROM rename_connection('a')",
    "SELECT * FROM rename_connection('nope', 'other')",
    "SELECT * FROM drop_connection()",
    "SELECT * FROM drop_connection('nope')",
    "SELECT * FROM drop_connection('conn_zzzzzzzzzzzzzzzzzzzzzz')",
    "SELECT create_connection('a', 'sqlite', '{}')",
    "SELECT * FROM test_connection(NULL)",
];

const BAD_CONFIGS: &[&str] = &[
    "",
    "{",
    "}",
    "[]",
    "null",
    "42",
    "\"text\"",
    "{\"host\": }",
    "{'host': 'x'}",
    "{\"host\": \"x\",}",
    "{\"host\": 1}",
    "{\"host\": \"\"}",
    "{\"database\": \"x\"}",
    "{\"host\": \"x\", \"database\": \"y\"}",
    "{\"host\": \"x\", \"database\": \"y\", \"user\": \"z\", \"port\": 0}",
    "{\"host\": \"x\", \"database\": \"y\", \"user\": \"z\", \"port\": 70000}",
    "{\"host\": \"x\", \"database\": \"y\", \"user\": \"z\", \"port\": \"five\"}",
    "{\"host\": \"x\", \"database\": \"y\", \"user\": \"z\", \"hots\": \"x\"}",
    "{\"host\": \"x\", \"database\": \"y\", \"user\": \"z\", \"ssl_mode\": \"sometimes\"}",
    "{\"host\": \"x\", \"database\": \"y\", \"user\": \"z\", \"connect_timeout\": -1}",
    "{\"host\": \"x\", \"database\": \"y\", \"user\": \"z\", \"connect_timeout\": \"soon\"}",
    "{\"host\": \"x\", \"database\": \"y\", \"user\": \"z\", \"max_age\": \"old\"}",
    "{\"host\": \"x\", \"database\": \"y\", \"user\": \"z\", \"password\": 5}",
    "{\"host\": \"x\", \"database\": \"y\", \"user\": \"z\", \"numeric_as_float64\": \"yes\"}",
    "{\"path\": \"/no/such/file.db\"}",
    "{\"path\": 7}",
    "{\"path\": \"\"}",
    "{\"path\": \"/tmp\", \"host\": \"x\"}",
    "{\"a\": {\"b\": [1, 2, {\"c\": null}]}}",
    "\u{0}\u{1}\u{2}",
];

const BAD_COMMANDS: &[&str] = &[
    ".",
    "..",
    ".tabels",
    ".tables nope",
    ".tables nope.nope",
    ".schema nope",
    ".schema a.b.c.d",
    ".timer",
    ".timer maybe",
    ".mode xml",
    ".maxrows",
    ".maxrows many",
    ".maxrows -5",
    ".read",
    ".read /no/such/file.sql",
    ".output /no/such/dir/out.txt",
    ".quit now",
    ".help me",
    ".connections all",
    ".open x",
    ".exitt",
    "\\",
    "\\x maybe",
    ".expanded sideways",
    "\\dd",
    "\\q now",
    "\\o /no/such/dir/x",
    "\\i",
    ".😀",
];

/// Deterministic binary junk: control bytes, invalid UTF-8 turned into replacement
/// characters, stray quotes and operators.
fn junk(count: usize) -> Vec<String> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..count)
        .map(|i| {
            let len = 1 + i % 40;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    (state % 256) as u8
                })
                .collect();
            // Always something that is not whitespace or a comment.
            format!("\u{1}{}", String::from_utf8_lossy(&bytes))
        })
        .collect()
}

fn corpus() -> Vec<String> {
    let mut inputs: Vec<String> = BROKEN_SQL.iter().map(|s| format!("{s};")).collect();
    inputs.extend(BAD_FUNCTION_CALLS.iter().map(|s| format!("{s};")));
    for source_type in ["postgres", "mysql", "sqlite"] {
        inputs.extend(BAD_CONFIGS.iter().map(|config| {
            format!(
                "SELECT * FROM create_connection('c', '{source_type}', '{}');",
                config.replace('\'', "''")
            )
        }));
    }
    inputs.extend(BAD_COMMANDS.iter().map(|s| s.to_string()));
    inputs.extend(junk(60));
    inputs
}

#[test]
fn the_corpus_is_large_enough() {
    assert!(corpus().len() >= 200, "{}", corpus().len());
}

#[tokio::test]
async fn every_malformed_input_gets_an_error_and_no_panic() {
    let backend = Backend::new(Kind::Sqlite).await;
    let engine = backend.engine().await;
    let settings = Settings {
        mode: Mode::Table,
        max_rows: None,
        timer: false,
    };
    let mut shell = Shell::with_output(engine, settings, Box::new(std::io::sink()));
    let mut accepted = Vec::new();
    for input in corpus() {
        let mut errors = Vec::new();
        for piece in split_script(&input) {
            // An unfinished quote swallows the rest; whatever is left is still run.
            if let Err(e) = shell.run(&piece.input).await {
                errors.push(describe_error(&e));
            }
        }
        if errors.is_empty() {
            accepted.push(input.clone());
        }
        for error in errors {
            assert!(error.starts_with("Error: "), "{input:?}: {error}");
            let lines: Vec<&str> = error.lines().collect();
            assert!(lines.len() <= 2, "{input:?}: {error}");
            assert!(
                lines.len() < 2 || lines[1].starts_with("Hint: "),
                "{input:?}: {error}"
            );
            for dump in ["panicked", "backtrace", "ParserError(", "Some(", "{ "] {
                assert!(!error.contains(dump), "{input:?} shows {dump:?}: {error}");
            }
        }
    }
    assert!(accepted.is_empty(), "no error for {accepted:#?}");
    // The shell still works after all of that.
    shell
        .run(&split_script("SELECT 1;")[0].input)
        .await
        .expect("a good statement runs after the corpus");
}

#[test]
fn the_binary_reports_each_malformed_input_and_keeps_going() {
    let dir = tempfile::tempdir().unwrap();
    // One input per line of a piped script. Inputs that leave a quote or comment open
    // would swallow the lines after them, so they come last.
    let (closed, open): (Vec<String>, Vec<String>) = corpus()
        .into_iter()
        .map(|input| input.replace('\n', " "))
        .partition(|line| {
            let mut splitter = Splitter::default();
            splitter.push_line(line);
            !splitter.is_pending()
        });
    let expected = closed.len();
    let script: String = closed
        .iter()
        .chain(&open)
        .map(|line| format!("{line}\n"))
        .collect();
    let mut input = script.into_bytes();
    // Invalid UTF-8 as raw bytes, not only as replacement characters.
    input.extend_from_slice(b"SELECT '\xff\xfe';\n\xc3\x28;\n");
    let out = quarry_piped(dir.path(), &["--keep-going"], input);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    // psql style: the script (standard input), the line, then the error.
    let is_error = |line: &str| {
        line.strip_prefix("quarry:<stdin>:")
            .and_then(|rest| rest.split_once(": error: "))
            .is_some_and(|(number, _)| number.parse::<usize>().is_ok())
    };
    let errors = stderr.lines().filter(|l| is_error(l)).count();
    assert!(expected >= 150, "only {expected} self-contained inputs");
    assert!(
        errors >= expected,
        "{errors} errors for {expected} inputs:\n{stderr}"
    );
    for line in stderr.lines() {
        assert!(
            is_error(line) || line.starts_with("Hint: "),
            "unexpected stderr line {line:?}"
        );
    }
}
