//! What a new user meets in the first hour, through the command line and the library: a
//! default schema, scripts that say where they failed, suggestions that exist, views that
//! last, and the small things psql, DuckDB and datafusion-cli users expect.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::support::{Backend, Kind, cells, has_row, quarry, quarry_piped, text};

/// Runs `sql` with `-c`, failing the test when it fails; returns standard output.
fn ok(home: &Path, sql: &str) -> String {
    let out = quarry(home, &["-c", sql]);
    assert!(
        out.status.success(),
        "{sql}\nstdout: {}\nstderr: {}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Runs `sql` with `-c`, expecting it to fail; returns standard error.
fn fails(home: &Path, sql: &str) -> String {
    let out = quarry(home, &["-c", sql]);
    assert_eq!(out.status.code(), Some(1), "{sql}: {}", text(&out.stdout));
    text(&out.stderr)
}

/// A data dir with the connection `demo` to a copy of the shipped demo database (tables
/// customers, orders, products in schema main).
fn home_with(dir: &Path, name: &str) -> PathBuf {
    let home = dir.join("home");
    let copy = dir.join(format!("{name}.db"));
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/examples/demo.db"),
        &copy,
    )
    .unwrap();
    ok(
        &home,
        &format!(
            "SELECT * FROM create_connection('{name}', 'sqlite', '{{\"path\": \"{}\"}}')",
            copy.display()
        ),
    );
    home
}

#[test]
fn use_and_search_path_set_where_unqualified_names_resolve() {
    let dir = tempfile::tempdir().unwrap();
    let home = home_with(dir.path(), "demo");
    // Without a default, the message names the table that exists.
    let stderr = fails(&home, "SELECT count(*) FROM customers");
    assert!(
        stderr.contains("did you mean demo.main.customers?"),
        "{stderr}"
    );
    for set in ["USE demo.main", "USE demo", "SET search_path = 'demo.main'"] {
        let out = ok(
            &home,
            &format!("{set}; SELECT count(*) AS n FROM customers; SHOW search_path"),
        );
        assert!(has_row(&out, &["8"]), "{set}: {out}");
        assert!(has_row(&out, &["demo.main"]), "{set}: {out}");
    }
    // Session tables still work with a connection as the default.
    let out = ok(
        &home,
        "USE demo.main; CREATE TABLE picked AS SELECT id FROM customers WHERE id < 3; \
         SELECT count(*) AS n FROM picked",
    );
    assert!(has_row(&out, &["2"]), "{out}");
    // A wrong name is refused with the nearest existing one.
    let stderr = fails(&home, "USE dmeo.main");
    assert!(stderr.contains("did you mean 'demo'?"), "{stderr}");
    let stderr = fails(&home, "USE demo.mian");
    assert!(stderr.contains("did you mean 'demo.main'?"), "{stderr}");
}

#[tokio::test]
async fn suggestions_name_only_tables_that_exist_across_all_three_parts() {
    use sqlx::Connection;
    let dir = tempfile::tempdir().unwrap();
    let home = home_with(dir.path(), "my");
    // Another connection, whose name is nearer to `my` but which has other tables.
    let other = dir.path().join("tp.db");
    let mut conn =
        sqlx::SqliteConnection::connect(&format!("sqlite://{}?mode=rwc", other.display()))
            .await
            .unwrap();
    sqlx::raw_sql("CREATE TABLE nation (id INTEGER)")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    ok(
        &home,
        &format!(
            "SELECT * FROM create_connection('tp', 'sqlite', '{{\"path\": \"{}\"}}')",
            other.display()
        ),
    );
    ok(&home, "SELECT * FROM rename_connection('my', 'maria')");
    // The connection is gone under its old name; the table lives on under the new one.
    let stderr = fails(&home, "SELECT * FROM my.main.customers");
    assert!(
        stderr.contains("did you mean maria.main.customers?"),
        "{stderr}"
    );
    assert!(!stderr.contains("tp."), "{stderr}");
    let stderr = fails(&home, "SELECT * FROM maria.mian.custmers");
    assert!(
        stderr.contains("did you mean maria.main.customers?"),
        "{stderr}"
    );
    // Management functions suggest too.
    let stderr = fails(&home, "SELECT * FROM refresh_table('maria.main.custmers')");
    assert!(
        stderr.contains("did you mean maria.main.customers?"),
        "{stderr}"
    );
    let stderr = fails(&home, "SELECT * FROM refresh_table('my.main.customers')");
    assert!(
        stderr.contains("did you mean maria.main.customers?"),
        "{stderr}"
    );
    // Purging a table that does not exist is an error, not "0 removed".
    let stderr = fails(
        &home,
        "SELECT * FROM purge_cache('maria', 'main', 'custmers')",
    );
    assert!(
        stderr.contains("did you mean maria.main.customers?"),
        "{stderr}"
    );
    let stderr = fails(&home, "SELECT * FROM purge_cache('maria', 'mian')");
    assert!(stderr.contains("did you mean maria.main?"), "{stderr}");
    let out = ok(
        &home,
        "SELECT entries_removed FROM purge_cache('maria', 'main', 'customers')",
    );
    assert!(has_row(&out, &["0"]), "{out}");
}

#[test]
fn options_go_before_or_after_the_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("env-home");
    let flagged = dir.path().join("flag-home");
    for args in [
        vec!["--data-dir", flagged.to_str().unwrap(), "serve"],
        vec!["serve", "--data-dir", flagged.to_str().unwrap()],
    ] {
        let out = quarry(&home, &args);
        let stderr = text(&out.stderr);
        // Parsed and acted on: the data dir was opened, then serving stopped for want of a
        // password.
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains("no password is set"), "{args:?}: {stderr}");
        assert!(flagged.join("quarry.db").is_file(), "{args:?}");
    }
    assert!(!home.exists());
    // A shell option given with a subcommand would do nothing: refused as usage.
    let out = quarry(&home, &["-c", "SELECT 1", "serve"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("--command is an option of the shell"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn explain_prints_the_plan_tree_one_operator_a_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = ok(
        dir.path(),
        "EXPLAIN SELECT count(*) FROM (VALUES (1), (2)) AS t (x) WHERE x > 1",
    );
    let rows = cells(&out);
    let plan_lines: Vec<&str> = rows.iter().map(|r| r[1].as_str()).collect();
    let projection = plan_lines.iter().position(|l| l.starts_with("Projection"));
    let aggregate = plan_lines.iter().position(|l| l.starts_with("Aggregate"));
    assert!(
        matches!((projection, aggregate), (Some(p), Some(a)) if a == p + 1),
        "{out}"
    );
    // Indented under its parent, in its own table line.
    assert!(
        out.lines()
            .any(|l| l.contains("|   Aggregate:") || l.contains("|   AggregateExec")),
        "{out}"
    );
}

#[test]
fn script_errors_say_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("setup.sql");
    std::fs::write(
        &script,
        "-- setup\nSELECT 1 AS one;\n\nSELECT 2 AS two,\n       3 AS three FROM );\nSELECT 4;\n",
    )
    .unwrap();
    let out = quarry(dir.path(), &["-f", script.to_str().unwrap()]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let first = stderr.lines().next().unwrap_or_default();
    let prefix = format!("quarry:{}:4: error: ", script.display());
    assert!(first.starts_with(&prefix), "{stderr}");
    // The parser's position is the script's: line 5, at the stray ")".
    assert!(first.contains("Line: 5, Column: 24"), "{stderr}");
    // Piped input names standard input; a planning error gets the statement's line.
    let out = quarry_piped(
        dir.path(),
        &[],
        b"SELECT 1;\nSELECT *\n  FROM nowhere;\n".to_vec(),
    );
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with("quarry:<stdin>:2: error: ") && stderr.contains("nowhere"),
        "{stderr}"
    );
}

#[test]
fn a_command_inside_a_statement_runs_as_a_command() {
    let dir = tempfile::tempdir().unwrap();
    let out = quarry_piped(
        dir.path(),
        &[],
        b"SELECT 41 + 1\n.mode csv\n  AS answer;\n".to_vec(),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "answer\n42\n");
}

#[test]
fn shell_commands_show_and_toggle() {
    let dir = tempfile::tempdir().unwrap();
    let home = home_with(dir.path(), "demo");
    // `.mode` alone shows the mode; `\x` toggles one line per value and back.
    let out = ok(
        &home,
        ".mode csv\n.mode\n\\x\nSELECT 1 AS a, 2 AS b;\n\\x\nSELECT 3 AS c;",
    );
    assert_eq!(out, "csv\na = 1\nb = 2\nc\n3\n", "{out}");
    // `.schema` alone shows every table's columns.
    let out = ok(&home, ".mode csv\n.schema");
    for table in ["customers", "orders", "products"] {
        assert!(out.contains(&format!("demo,main,{table},id,")), "{out}");
    }
    // `.tables` shows the view's own column names, so its output can be queried back.
    let out = ok(&home, ".mode csv\n.tables");
    let header = out.lines().next().unwrap_or_default();
    assert_eq!(
        header,
        "connection_name,table_schema,table_name,table_type,row_estimate,cached,cache_rows"
    );
    ok(
        &home,
        &format!("SELECT {header} FROM quarry.information_schema.tables"),
    );
}

#[test]
fn version_show_tables_and_rounded_latency() {
    let dir = tempfile::tempdir().unwrap();
    let home = home_with(dir.path(), "demo");
    let out = ok(&home, "SELECT version() AS v");
    assert!(
        out.contains(&format!("Quarry {}", env!("CARGO_PKG_VERSION")))
            && out.contains("Apache DataFusion"),
        "{out}"
    );
    let out = ok(&home, ".mode csv\nSHOW TABLES");
    let names: Vec<&str> = out.lines().skip(1).collect();
    assert_eq!(
        names,
        [
            "demo,main,customers,BASE TABLE",
            "demo,main,orders,BASE TABLE",
            "demo,main,products,BASE TABLE"
        ],
        "{out}"
    );
    let out = ok(&home, ".mode csv\nSHOW TABLES FROM demo.main LIKE 'o%'");
    assert_eq!(
        out.lines().skip(1).collect::<Vec<_>>(),
        ["demo,main,orders,BASE TABLE"]
    );
    let out = ok(&home, "SHOW TABLES FROM demo.information_schema");
    assert!(out.contains("information_schema"), "{out}");
    let out = ok(
        &home,
        ".mode csv\nSELECT latency_ms FROM test_connection('demo')",
    );
    let latency = out.lines().nth(1).unwrap_or_default();
    let decimals = latency.split_once('.').map_or(0, |(_, d)| d.len());
    assert!(latency.parse::<f64>().is_ok() && decimals <= 2, "{out}");
}

#[test]
fn json_format_writes_one_document_per_statement() {
    let dir = tempfile::tempdir().unwrap();
    let out = quarry(
        dir.path(),
        &[
            "--format",
            "json",
            "-c",
            "SELECT 1 AS a; SELECT 2 AS b, 3 AS c",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let documents: Vec<Value> = serde_json::Deserializer::from_str(&stdout)
        .into_iter::<Value>()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        documents,
        [
            serde_json::json!([{"a": 1}]),
            serde_json::json!([{"b": 2, "c": 3}])
        ]
    );
    let help = text(&quarry(dir.path(), &["--help"]).stdout);
    assert!(help.contains("one JSON document"), "{help}");
}

#[test]
fn views_are_kept_across_runs_and_can_be_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let home = home_with(dir.path(), "demo");
    ok(
        &home,
        "USE demo.main; CREATE VIEW big_spenders AS SELECT c.name, count(*) AS orders \
         FROM orders o JOIN customers c ON c.id = o.customer_id GROUP BY c.name \
         HAVING count(*) > 1",
    );
    // A new process: the view is there, unqualified and qualified, and in
    // information_schema, planned in the schema it was made in.
    let direct = ok(
        &home,
        ".mode csv\nSELECT c.name, count(*) AS orders FROM demo.main.orders o \
         JOIN demo.main.customers c ON c.id = o.customer_id GROUP BY c.name \
         HAVING count(*) > 1 ORDER BY 1",
    );
    let through_view = ok(&home, ".mode csv\nSELECT * FROM big_spenders ORDER BY 1");
    assert_eq!(through_view, direct);
    assert!(direct.lines().count() > 1, "{direct}");
    let out = ok(
        &home,
        ".mode csv\nSELECT count(*) FROM quarry.views.big_spenders; \
         SELECT table_catalog, table_schema, table_name FROM information_schema.views \
         WHERE table_name = 'big_spenders'",
    );
    assert!(out.contains("quarry,views,big_spenders"), "{out}");
    let stderr = fails(&home, "CREATE VIEW big_spenders AS SELECT 1");
    assert!(stderr.contains("exists already"), "{stderr}");
    ok(&home, "DROP VIEW big_spenders");
    let stderr = fails(&home, "SELECT * FROM big_spenders");
    assert!(stderr.contains("big_spenders"), "{stderr}");
    // Tables made with CREATE TABLE stay in the session, and the shell says so.
    let out = quarry(&home, &["-c", "CREATE TABLE scratch AS SELECT 1 AS x"]);
    assert!(
        text(&out.stderr).contains("for this session only"),
        "{}",
        text(&out.stderr)
    );
    fails(&home, "SELECT * FROM scratch");
}

#[tokio::test]
async fn library_sessions_views_and_connections_match_sql() {
    // The re-exported crates are the ones Quarry's types use.
    use quarry::arrow::array::AsArray;
    use quarry::datafusion::arrow::datatypes::Int64Type;
    let backend = Backend::new(Kind::Sqlite).await;
    let engine = backend.engine().await;
    let demo = backend.data_dir().join("demo.db");
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/examples/demo.db"),
        &demo,
    )
    .unwrap();
    // Creating a connection discovers its tables, as SQL and REST do.
    let created = engine
        .create_connection("demo", "sqlite", serde_json::json!({ "path": demo }))
        .await
        .unwrap();
    assert_eq!(created.discovery.as_ref().unwrap().tables_added, 3);
    let session = engine.new_session();
    session
        .sql("USE demo.main")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(session.default_schema().to_string(), "demo.main");
    assert!(engine.default_session().default_schema().is_initial());
    let count = |batches: Vec<quarry::arrow::array::RecordBatch>| {
        batches[0].column(0).as_primitive::<Int64Type>().value(0)
    };
    let batches = session
        .sql("SELECT count(*) FROM customers")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(count(batches), 8);
    session
        .sql("CREATE VIEW paris AS SELECT * FROM customers WHERE city = 'Paris'")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    drop((session, engine));
    // A restarted engine still has the view; another default does not change its meaning.
    let engine = backend.engine().await;
    let batches = engine
        .sql("SELECT count(*) FROM paris")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let expected = engine
        .sql("SELECT count(*) FROM demo.main.customers WHERE city = 'Paris'")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let expected = count(expected);
    assert!(expected >= 1, "the demo has customers in Paris");
    assert_eq!(count(batches), expected);
    engine
        .sql("DROP VIEW paris")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert!(engine.sql("SELECT * FROM paris").await.is_err());
    assert!(backend.engine().await.snapshot().views.is_empty());
}

#[tokio::test]
async fn connection_configs_take_urls_string_ports_and_other_tools_key_names() {
    let db = crate::support::PgDatabase::create().await;
    {
        use sqlx::Connection;
        let mut admin = sqlx::PgConnection::connect(&db.url).await.unwrap();
        sqlx::raw_sql("CREATE TABLE t (id int); INSERT INTO t VALUES (1), (2)")
            .execute(&mut admin)
            .await
            .unwrap();
    }
    let backend = Backend::new(Kind::Sqlite).await;
    let engine = backend.engine().await;
    let admin = url::Url::parse(&crate::support::pg_admin_url()).unwrap();
    let (host, port) = (
        admin.host_str().unwrap_or("127.0.0.1").to_owned(),
        admin.port().unwrap_or(5432),
    );
    let user = if admin.username().is_empty() {
        "postgres"
    } else {
        admin.username()
    };
    // A URL, in SQL: the connection is made, discovered, and stored as its parts.
    let url = format!("postgres://{user}@{host}:{port}/{}", db.name);
    let batches = engine
        .sql(&format!(
            "SELECT tables_discovered FROM create_connection('by_url', 'postgres', '{url}')"
        ))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    use quarry::arrow::array::AsArray;
    use quarry::arrow::datatypes::Int64Type;
    assert_eq!(batches[0].column(0).as_primitive::<Int64Type>().value(0), 1);
    let stored = engine.connection("by_url").await.unwrap();
    assert_eq!(stored.config["database"], db.name.as_str());
    assert_eq!(stored.config["port"], port);
    assert!(stored.config.get("url").is_none());
    // A port as a string, as environment variables give it.
    let created = engine
        .create_connection(
            "string_port",
            "postgres",
            serde_json::json!({"host": host, "port": port.to_string(), "database": db.name, "user": user}),
        )
        .await
        .unwrap();
    assert!(created.discovery.is_ok(), "{:?}", created.discovery);
    // libpq's and JDBC's names get the right suggestion.
    for (key, expected) in [("dbname", "database"), ("username", "user")] {
        let err = engine
            .register_connection(
                "aliased",
                "postgres",
                serde_json::json!({"host": "h", key: "x"}),
            )
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("did you mean '{expected}'?")),
            "{err}"
        );
    }
    // A MySQL URL too, against the real MariaDB.
    let mysql = crate::support::MySqlSourceFixture::new().await;
    let admin = url::Url::parse(&crate::support::mysql_admin_url()).unwrap();
    let url = format!(
        "mysql://{}@{}:{}/{}",
        if admin.username().is_empty() {
            "root"
        } else {
            admin.username()
        },
        admin.host_str().unwrap_or("127.0.0.1"),
        admin.port().unwrap_or(3306),
        mysql.name
    );
    let created = engine
        .create_connection("my_url", "mysql", serde_json::json!({ "url": url }))
        .await
        .unwrap();
    assert!(created.discovery.is_ok(), "{:?}", created.discovery);
    assert_eq!(created.connection.config["database"], mysql.name.as_str());
}
