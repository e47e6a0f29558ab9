//! The web console in headless Chromium (Debian's `chromium`, driven by Playwright from
//! npm) against real `quarry serve` processes, a real PostgreSQL database and the shipped
//! SQLite demo database. The browser steps are in `console/e2e/flow.mjs`; this test sets up
//! the servers and sources, runs it, and keeps its screenshots in
//! `$CARGO_TARGET_DIR/console-artifacts`.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use base64::Engine as _;

use crate::flight::listening_addresses;
use crate::http::http_call;
use crate::support::{PgDatabase, Running, pg_source_config, quarry_command};

const PASSWORD: &str = "console-test-password";

/// The Chromium to drive: `QUARRY_TEST_CHROMIUM`, else Debian's.
fn chromium() -> String {
    let path = std::env::var("QUARRY_TEST_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&path).exists(),
        "the console tests drive Chromium at {path}: install Debian's chromium \
         (`apt-get install chromium`; .ci/run does) or set QUARRY_TEST_CHROMIUM"
    );
    path
}

/// The console's folder, with its npm packages installed (`npm ci`) when missing.
fn console_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("console");
    if !dir.join("node_modules/playwright-core").exists() {
        let status = std::process::Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .status()
            .expect("npm runs (Node.js is needed for the console tests)");
        assert!(status.success(), "npm ci in console/ failed");
    }
    dir
}

/// A `quarry serve` process; killed when dropped.
struct Server {
    http: String,
    _process: Running,
}

impl Server {
    fn start(home: &Path, extra: &[&str]) -> Server {
        let mut child = quarry_command(home)
            .args([
                "serve",
                "--flight-addr",
                "127.0.0.1:0",
                "--http-addr",
                "127.0.0.1:0",
            ])
            .args(extra)
            .env("QUARRY_SERVER_PASSWORD", PASSWORD)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let http = listening_addresses(&mut child, 2).remove(0);
        Server {
            http,
            _process: Running(child),
        }
    }

    /// A bearer authorization header for the user `quarry`.
    async fn bearer(&self) -> String {
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("quarry:{PASSWORD}"));
        let (status, body) =
            http_call(&self.http, "POST", "/login", &format!("Basic {basic}"), "").await;
        assert_eq!(status, 200, "{body}");
        let token: serde_json::Value = serde_json::from_str(&body).unwrap();
        format!("Bearer {}", token["token"].as_str().unwrap())
    }

    async fn create(&self, auth: &str, name: &str, source_type: &str, config: serde_json::Value) {
        let body =
            serde_json::json!({ "name": name, "source_type": source_type, "config": config });
        let (status, answer) =
            http_call(&self.http, "POST", "/connections", auth, &body.to_string()).await;
        assert_eq!(status, 201, "{answer}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_manages_connections_in_a_real_browser() {
    let chromium = chromium();
    let console = console_dir();
    let db = PgDatabase::create().await;
    let mut admin = <sqlx::PgConnection as sqlx::Connection>::connect(&db.url)
        .await
        .unwrap();
    sqlx::raw_sql(
        "CREATE TABLE customers (id integer PRIMARY KEY, name text NOT NULL);
         CREATE TABLE orders (id integer PRIMARY KEY, customer_id integer, total numeric(10,2));
         CREATE TABLE notes (id integer PRIMARY KEY, body text);
         INSERT INTO customers VALUES (1, 'Ada'), (2, 'Grace');
         INSERT INTO orders VALUES (10, 1, 12.50), (11, 2, 7.25), (12, 1, 3.00);
         ANALYZE;",
    )
    .execute(&mut admin)
    .await
    .unwrap();

    let refused = format!("{}_nologin", db.name);
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE ROLE {refused} NOLOGIN"
    )))
    .execute(&mut admin)
    .await
    .unwrap();
    let pg = pg_source_config(&db.name);
    let expected_join: Vec<(String, String)> = sqlx::query_as(
        "SELECT c.name, sum(o.total)::text FROM customers c JOIN orders o ON o.customer_id = c.id \
         GROUP BY c.name ORDER BY c.name",
    )
    .fetch_all(&mut admin)
    .await
    .unwrap();

    let home = tempfile::tempdir().unwrap();
    let server = Server::start(home.path(), &[]);
    let short_home = tempfile::tempdir().unwrap();
    let short = Server::start(short_home.path(), &["--token-ttl", "1s"]);
    // A stored password: the console must never receive it. (The test server trusts local
    // connections, so any password logs in.)
    let secret = format!("pw-{}", nanoid::nanoid!(16));
    let mut config = pg_source_config(&db.name);
    config["password"] = serde_json::json!(secret);
    let many_home = tempfile::tempdir().unwrap();
    let many = Server::start(many_home.path(), &[]);
    let many_auth = many.bearer().await;
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/demo.db");
    for n in 0..100 {
        many.create(
            &many_auth,
            &format!("demo_{n:03}"),
            "sqlite",
            serde_json::json!({ "path": demo }),
        )
        .await;
    }
    let auth = server.bearer().await;
    server.create(&auth, "shop", "postgres", config).await;
    server
        .create(&auth, "demo", "sqlite", serde_json::json!({ "path": demo }))
        .await;

    let artifacts = Path::new(&std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("target")
            .display()
            .to_string()
    }))
    .join("console-artifacts");
    let out = tokio::process::Command::new("node")
        .arg("e2e/flow.mjs")
        .current_dir(&console)
        .env("QUARRY_URL", format!("http://{}", server.http))
        .env("QUARRY_SHORT_URL", format!("http://{}", short.http))
        .env("QUARRY_MANY_URL", format!("http://{}", many.http))
        .env("QUARRY_PASSWORD", PASSWORD)
        .env("QUARRY_SECRET", &secret)
        .env("CHROMIUM", &chromium)
        .env("ARTIFACTS", &artifacts)
        .env("PG_HOST", pg["host"].as_str().unwrap())
        .env("PG_PORT", pg["port"].to_string())
        .env("PG_DATABASE", &db.name)
        .env("PG_USER", pg["user"].as_str().unwrap())
        .env("PG_REFUSED_USER", &refused)
        .env(
            "EXPECTED_JOIN",
            serde_json::to_string(&expected_join).unwrap(),
        )
        .output()
        .await
        .unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP ROLE {refused}")))
        .execute(&mut admin)
        .await
        .unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{report}\n(screenshots in {})",
        artifacts.display()
    );
    for figure in report.lines().filter(|l| l.starts_with("figure:")) {
        println!("{figure}");
    }
    // The flow ran to its end.
    assert!(
        report.contains("ok: an expired token goes back to sign-in"),
        "{report}"
    );
    // What the console did, the server did: `sales` was created with its password and
    // discovered; `demo` was renamed, then deleted.
    let (_, list) = http_call(&server.http, "GET", "/connections", &auth, "").await;
    let list: Vec<serde_json::Value> = serde_json::from_str(&list).unwrap();
    let mut names: Vec<&str> = list.iter().map(|c| c["name"].as_str().unwrap()).collect();
    names.sort_unstable();
    assert_eq!(names, ["sales", "shop"], "{list:?}");
    let sales = list.iter().find(|c| c["name"] == "sales").unwrap();
    // Two of three tables, by the patterns stored on it, both cached by the import.
    assert_eq!(sales["tables"], 2, "{sales}");
    let path = format!("/connections/{}", sales["id"].as_str().unwrap());
    let (_, details) = http_call(&server.http, "GET", &path, &auth, "").await;
    let details: serde_json::Value = serde_json::from_str(&details).unwrap();
    assert_eq!(details["config"]["password_set"], true, "{details}");
    assert_eq!(details["config"]["user"], pg["user"], "{details}");
    assert_eq!(
        details["config"]["include"],
        serde_json::json!(["public.*"]),
        "{details}"
    );
    assert_eq!(
        details["config"]["exclude"],
        serde_json::json!(["notes"]),
        "{details}"
    );
}
