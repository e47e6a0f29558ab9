//! The PostgreSQL source against the real server: connection tests and their failure
//! classes, discovery, exact type mapping, and the cache (single-flight, refresh, purge,
//! invalidation, a fetch killed mid-way).

use std::collections::HashSet;
use std::path::Path;
use std::process::{Command, Stdio};

use quarry::source::FailureClass;
use quarry::{Error, Event};
use serde_json::json;
use sqlx::{AssertSqlSafe, Row};

use crate::render::value_text;
use crate::support::{PgSourceFixture, read_parquet};

fn class_of(e: &Error) -> FailureClass {
    match e {
        Error::Source { class, .. } => *class,
        other => panic!("expected a source error, got {other}"),
    }
}

#[tokio::test]
async fn a_test_reports_version_and_latency_and_records_them() {
    let fx = PgSourceFixture::new().await;
    let mut events = fx.engine.subscribe();
    let outcome = fx.engine.test_connection("pg").await.unwrap();
    assert!(
        outcome.server_version.starts_with("PostgreSQL 1"),
        "{outcome:?}"
    );
    assert!(!outcome.latency.is_zero());
    let conn = fx.engine.connection("pg").await.unwrap();
    assert_eq!(conn.status.test_status.as_deref(), Some("ok"));
    assert_eq!(
        conn.status.server_version,
        Some(outcome.server_version.clone())
    );
    assert!(conn.status.last_tested_at.is_some());
    assert!(conn.status.test_latency_ms.is_some());
    assert!(matches!(
        events.recv().await.unwrap(),
        Event::ConnectionTested { ok: true, .. }
    ));
}

async fn failing_test(fx: &PgSourceFixture, name: &str, config: serde_json::Value) -> Error {
    fx.engine
        .register_connection(name, "postgres", config)
        .await
        .unwrap();
    let err = fx.engine.test_connection(name).await.unwrap_err();
    let conn = fx.engine.connection(name).await.unwrap();
    assert_eq!(conn.status.test_status.as_deref(), Some("failed"));
    assert_eq!(
        conn.status.test_error.as_deref(),
        Some(err.to_string().as_str())
    );
    err
}

#[tokio::test]
async fn a_closed_port_is_reported_as_refused_naming_host_and_port() {
    let fx = PgSourceFixture::new().await;
    let err = failing_test(
        &fx,
        "closed",
        json!({"host": "127.0.0.1", "port": 1, "database": "x", "user": "postgres"}),
    )
    .await;
    assert_eq!(class_of(&err), FailureClass::Refused);
    assert!(
        err.to_string()
            .contains("connection refused by 127.0.0.1:1"),
        "{err}"
    );
}

#[tokio::test]
async fn an_unknown_host_is_named() {
    let fx = PgSourceFixture::new().await;
    let err = failing_test(
        &fx,
        "nohost",
        json!({"host": "no-such-host.invalid", "database": "x", "user": "postgres"}),
    )
    .await;
    assert_eq!(class_of(&err), FailureClass::UnknownHost, "{err}");
    assert!(
        err.to_string()
            .contains("unknown host 'no-such-host.invalid'"),
        "{err}"
    );
}

#[tokio::test]
async fn a_rejected_role_is_an_authentication_failure_naming_the_user() {
    let mut fx = PgSourceFixture::new().await;
    let role = format!("{}_nologin", fx.db.name);
    fx.exec(&format!("CREATE ROLE {role} NOLOGIN PASSWORD 'right'"))
        .await;
    let mut config = crate::support::pg_source_config(&fx.db.name);
    config["user"] = json!(role);
    config["password"] = json!("wrong");
    let err = failing_test(&fx, "badauth", config).await;
    fx.exec(&format!("DROP ROLE {role}")).await;
    assert_eq!(class_of(&err), FailureClass::Authentication, "{err}");
    assert!(
        err.to_string()
            .contains(&format!("authentication failed for user '{role}'")),
        "{err}"
    );
    assert!(!err.to_string().contains("wrong"), "{err}");
}

#[tokio::test]
async fn a_missing_database_is_named() {
    let fx = PgSourceFixture::new().await;
    let err = failing_test(
        &fx,
        "nodb",
        crate::support::pg_source_config("quarry_no_such_db"),
    )
    .await;
    assert_eq!(class_of(&err), FailureClass::NoDatabase, "{err}");
    assert!(
        err.to_string()
            .contains("database 'quarry_no_such_db' does not exist"),
        "{err}"
    );
}

#[tokio::test]
async fn a_silent_server_times_out_naming_the_timeout() {
    let fx = PgSourceFixture::new().await;
    // Accepts TCP connections (the kernel does) but never answers the startup packet.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let started = std::time::Instant::now();
    let err = failing_test(
        &fx,
        "silent",
        json!({"host": "127.0.0.1", "port": port, "database": "x", "user": "postgres",
               "connect_timeout": "200ms", "ssl_mode": "disable"}),
    )
    .await;
    assert_eq!(class_of(&err), FailureClass::Timeout, "{err}");
    assert!(err.to_string().contains("timed out after 200ms"), "{err}");
    // Retried with backoff: 5 tries of 200 ms plus 1.5 s of delays, well under 10 s.
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}

#[tokio::test]
async fn a_bad_root_certificate_is_a_tls_failure() {
    let fx = PgSourceFixture::new().await;
    let cert = fx.backend.data_dir().join("not-a-ca.pem");
    std::fs::write(&cert, "this is not a certificate\n").unwrap();
    let mut config = crate::support::pg_source_config(&fx.db.name);
    config["ssl_mode"] = json!("verify-full");
    config["ssl_root_cert"] = json!(cert.to_str().unwrap());
    let err = failing_test(&fx, "badtls", config).await;
    assert_eq!(class_of(&err), FailureClass::Tls, "{err}");
    assert!(err.to_string().contains("TLS"), "{err}");
}

const TYPES_TABLE: &str = r#"
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN positive_int AS int CHECK (VALUE > 0);
CREATE TABLE types (
    id int PRIMARY KEY,
    b bool, i2 int2, i4 int4, i8 int8, f4 float4, f8 float8,
    n38 numeric(38,10), n10 numeric(10,0), n60 numeric(60,20), n_any numeric,
    t text, vc varchar(20), ch char(5), "Mixed Case" text, by bytea,
    d date, tm time, ttz timetz, ts timestamp, tstz timestamptz, iv interval,
    u uuid, j json, jb jsonb, m mood, ai int[], at text[], af float8[],
    o oid, ip inet, money_c money, pos positive_int
);
INSERT INTO types (id) VALUES (1);
INSERT INTO types VALUES (2,
    false, -32768, -2147483648, -9223372036854775808, -3.4028235e38, -1.7976931348623157e308,
    -9999999999999999999999999999.9999999999, -9999999999,
    -9999999999999999999999999999999999999999.99999999999999999999,
    -1234567890123456789012345678901234567890,
    '', '', 'a', 'x', '\x',
    '4713-01-01 BC', '00:00:00', '00:00:00+14', '1969-07-20 20:17:40.000001', '1900-01-01 00:00:00+05:30',
    '-178000000 years -11 mons -30 days -12:34:56.789',
    '00000000-0000-0000-0000-000000000000', '[]', '{}', 'sad', '{}', '{}', '{}',
    0, '0.0.0.0', -92233720368547758.08, 1);
INSERT INTO types VALUES (3,
    true, 32767, 2147483647, 9223372036854775807, 3.4028235e38, 1.7976931348623157e308,
    9999999999999999999999999999.9999999999, 9999999999,
    9999999999999999999999999999999999999999.99999999999999999999,
    1234567890123456789012345678901234567890.123456789,
    'héllo wörld ✓ 🎉 中文 "quoted" \ backslash', 'ünïcödé', 'abc  ', 'y', '\x00ff10',
    '294276-12-31', '24:00:00', '23:59:59.999999-15:59', '2262-04-11 23:47:16.854775', '9999-12-31 23:59:59.999999+00',
    '1 year 2 mons 3 days 04:05:06.000007',
    'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{"a": [1, 2.5, null], "b": "é"}', '{"z": 1, "a": {"n": null}}',
    'happy', '{1,NULL,-3}', '{"a",NULL,"with \"quote\"","comma,here"}', '{NaN,Infinity,-Infinity,0.1}',
    4294967295, '2001:db8::1/64', 92233720368547758.07, 2147483647);
INSERT INTO types (id, f4, f8, n_any, ts, tstz, d) VALUES
    (4, 'NaN', 'NaN', 'NaN', 'infinity', '-infinity', 'infinity'),
    (5, '-Infinity', 'Infinity', '0.000000000000000000000000000000000000000001', '-infinity', 'infinity', '-infinity'),
    (6, '-0', '1e-300', '-0.5', '3000-01-01 00:00:00', '1800-06-15 12:00:00+00', '1600-02-29');
"#;

#[tokio::test]
async fn every_common_type_round_trips_exactly() {
    let mut fx = PgSourceFixture::new().await;
    fx.exec(TYPES_TABLE).await;
    // A non-UTC source default must not move any instant.
    fx.exec(&format!(
        "ALTER DATABASE {} SET timezone TO 'America/St_Johns'",
        fx.db.name
    ))
    .await;
    let outcome = fx.engine.discover_connection("pg").await.unwrap();
    assert_eq!(outcome.tables_added, 1);
    let entry = fx
        .engine
        .cached_table("pg", "public", "types")
        .await
        .unwrap();
    assert_eq!(entry.row_count, 6);
    let batches = read_parquet(&fx.engine.cache().local_path(&entry).unwrap());
    let table = fx
        .engine
        .store()
        .table(&quarry::table::TableRef::new(
            &fx.engine.connection("pg").await.unwrap().id,
            "public",
            "types",
        ))
        .await
        .unwrap()
        .unwrap();

    // Compare in a session with yet another time zone: the server renders both sides.
    sqlx::raw_sql("SET TIME ZONE 'Asia/Kolkata'")
        .execute(&mut fx.admin)
        .await
        .unwrap();
    let mut checked = 0;
    for batch in &batches {
        let ids = batch.column(0);
        for row in 0..batch.num_rows() {
            let id: i32 = value_text(ids.as_ref(), row).unwrap().parse().unwrap();
            for (col, column) in table.columns.iter().enumerate().skip(1) {
                let ours = value_text(batch.column(col).as_ref(), row);
                let sql = format!(
                    "SELECT ({q}::text IS NOT DISTINCT FROM ($1::text::{ty})::text) AS same, {q}::text AS theirs
                     FROM types WHERE id = $2",
                    q = format!("\"{}\"", column.name),
                    ty = column.source_type
                );
                let result = sqlx::query(AssertSqlSafe(sql))
                    .bind(&ours)
                    .bind(id)
                    .fetch_one(&mut fx.admin)
                    .await
                    .unwrap_or_else(|e| {
                        panic!(
                            "row {id} column {} ({}): ours {ours:?}: {e}",
                            column.name, column.source_type
                        )
                    });
                let same: bool = result.try_get("same").unwrap();
                let theirs: Option<String> = result.try_get("theirs").unwrap();
                assert!(
                    same,
                    "row {id} column {} ({} as {}): cached {ours:?}, server {theirs:?}",
                    column.name, column.source_type, column.arrow_type
                );
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 6 * (table.columns.len() - 1));
}

#[tokio::test]
async fn discovery_maps_types_and_skips_system_schemas() {
    let mut fx = PgSourceFixture::new().await;
    fx.exec(TYPES_TABLE).await;
    fx.exec("CREATE SCHEMA sales; CREATE TABLE sales.orders (id bigint NOT NULL, amount numeric(12,2)); CREATE VIEW sales.big AS SELECT * FROM sales.orders WHERE amount > 100;").await;
    fx.engine.discover_connection("pg").await.unwrap();
    let id = fx.engine.connection("pg").await.unwrap().id;
    let tables = fx.engine.store().tables(&id).await.unwrap();
    let names: Vec<_> = tables
        .iter()
        .map(|t| format!("{}.{}:{}", t.schema, t.name, t.table_type))
        .collect();
    assert_eq!(
        names,
        ["public.types:table", "sales.big:view", "sales.orders:table"]
    );
    let orders = &tables[2];
    assert_eq!(orders.columns[0].name, "id");
    assert!(!orders.columns[0].is_nullable);
    assert_eq!(orders.columns[0].arrow_type, "Int64");
    assert_eq!(orders.columns[1].source_type, "numeric(12,2)");
    assert_eq!(
        (
            orders.columns[1].numeric_precision,
            orders.columns[1].numeric_scale
        ),
        (Some(12), Some(2))
    );
    assert_eq!(orders.columns[1].arrow_type, "Decimal128(12, 2)");
    let types = &tables[0];
    let arrow = |name: &str| {
        types
            .columns
            .iter()
            .find(|c| c.name == name)
            .unwrap()
            .arrow_type
            .clone()
    };
    assert_eq!(arrow("n60"), "Decimal256(60, 20)");
    assert_eq!(arrow("n_any"), "Utf8");
    assert_eq!(arrow("tstz"), "Timestamp(µs, \"UTC\")");
    assert_eq!(arrow("ts"), "Timestamp(µs)");
    assert_eq!(arrow("pos"), "Int32");
    assert_eq!(arrow("m"), "Utf8");
    assert!(arrow("ai").starts_with("List(Int32"), "{}", arrow("ai"));
}

async fn seed_orders(fx: &mut PgSourceFixture, rows: i64) {
    fx.exec(&format!(
        "CREATE TABLE orders AS SELECT g AS id, (g * 1.25)::numeric(12,2) AS amount, 'item ' || g AS label
         FROM generate_series(1, {rows}) g; ANALYZE orders"
    ))
    .await;
    fx.engine.discover_connection("pg").await.unwrap();
}

async fn fetch_count(fx: &PgSourceFixture, table: &str) -> i64 {
    let id = fx.engine.connection("pg").await.unwrap().id;
    fx.engine
        .store()
        .table(&quarry::table::TableRef::new(&id, "public", table))
        .await
        .unwrap()
        .unwrap()
        .fetch_count
}

#[tokio::test]
async fn concurrent_first_requests_share_one_fetch() {
    let mut fx = PgSourceFixture::new().await;
    seed_orders(&mut fx, 200_000).await;
    let mut events = fx.engine.subscribe();
    let requests = (0..8).map(|_| {
        let engine = fx.engine.clone();
        tokio::spawn(async move { engine.cached_table("pg", "public", "orders").await.unwrap() })
    });
    let entries = futures::future::join_all(requests).await;
    let versions: HashSet<_> = entries
        .iter()
        .map(|e| e.as_ref().unwrap().version)
        .collect();
    assert_eq!(versions.len(), 1, "every request got the same version");
    assert_eq!(
        fetch_count(&fx, "orders").await,
        1,
        "the source was read once"
    );
    let entry = entries[0].as_ref().unwrap();
    assert_eq!(entry.row_count, 200_000);
    let rows: usize = read_parquet(&fx.engine.cache().local_path(entry).unwrap())
        .iter()
        .map(|b| b.num_rows())
        .sum();
    assert_eq!(rows, 200_000);
    // One fetch: one start with the row estimate, progress, one finish with the totals.
    let (mut started, mut progress, mut finished) = (0, 0, 0);
    while let Ok(event) = events.try_recv() {
        match event {
            Event::FetchStarted {
                table,
                row_estimate,
            } => {
                assert_eq!(table.to_string(), "pg.public.orders");
                assert_eq!(row_estimate, Some(200_000));
                started += 1;
            }
            Event::FetchProgress { rows, .. } => {
                assert!(rows <= 200_000);
                progress += 1;
            }
            Event::FetchFinished { rows, bytes, .. } => {
                assert_eq!((rows, bytes), (200_000, entry.byte_size as u64));
                finished += 1;
            }
            other => panic!("unexpected event {other:?}"),
        }
    }
    assert_eq!((started, finished), (1, 1));
    assert!(progress >= 1);
}

#[tokio::test]
async fn a_refresh_during_a_scan_leaves_that_scan_complete() {
    let mut fx = PgSourceFixture::new().await;
    seed_orders(&mut fx, 1000).await;
    let first = fx
        .engine
        .cached_table("pg", "public", "orders")
        .await
        .unwrap();
    let lease = fx.engine.cache().lease(&first);
    fx.exec("INSERT INTO orders VALUES (1001, 1.00, 'new')")
        .await;
    let second = fx
        .engine
        .refresh_table("pg", "public", "orders")
        .await
        .unwrap();
    assert_eq!(second.version, first.version + 1);
    assert_eq!(second.row_count, 1001);
    assert_eq!(fetch_count(&fx, "orders").await, 2);
    // The running scan still reads the old version, complete.
    let old_path = fx.engine.cache().local_path(&first).unwrap();
    let old_rows: usize = read_parquet(&old_path).iter().map(|b| b.num_rows()).sum();
    assert_eq!(old_rows, 1000);
    drop(lease);
    assert!(
        !old_path.exists(),
        "the old version is deleted after its last reader"
    );
    assert_eq!(
        fx.engine
            .cached_table("pg", "public", "orders")
            .await
            .unwrap(),
        second
    );
}

#[tokio::test]
async fn purge_frees_the_files_and_the_next_request_fetches_again() {
    let mut fx = PgSourceFixture::new().await;
    seed_orders(&mut fx, 500).await;
    let entry = fx
        .engine
        .cached_table("pg", "public", "orders")
        .await
        .unwrap();
    let path = fx.engine.cache().local_path(&entry).unwrap();
    assert!(path.exists());
    let purged = fx.engine.purge_cache("pg", None, None).await.unwrap();
    assert_eq!(purged.entries_removed, 1);
    assert_eq!(
        purged.bytes_freed,
        std::fs::metadata(&path)
            .map(|m| m.len())
            .unwrap_or(entry.byte_size as u64)
    );
    assert!(!path.exists());
    let id = fx.engine.connection("pg").await.unwrap().id;
    assert!(
        fx.engine
            .store()
            .cache_entries(&id)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        fx.engine
            .store()
            .table(&quarry::table::TableRef::new(&id, "public", "orders"))
            .await
            .unwrap()
            .is_some(),
        "the table stays"
    );
    fx.engine
        .cached_table("pg", "public", "orders")
        .await
        .unwrap();
    assert_eq!(fetch_count(&fx, "orders").await, 2);
}

#[tokio::test]
async fn rediscovery_after_alter_table_invalidates_the_cache() {
    let mut fx = PgSourceFixture::new().await;
    seed_orders(&mut fx, 100).await;
    fx.exec("CREATE TABLE other (x int)").await;
    fx.engine.discover_connection("pg").await.unwrap();
    let orders = fx
        .engine
        .cached_table("pg", "public", "orders")
        .await
        .unwrap();
    let other = fx
        .engine
        .cached_table("pg", "public", "other")
        .await
        .unwrap();
    fx.exec(
        "ALTER TABLE orders ADD COLUMN note text; CREATE TABLE fresh (y int); DROP TABLE other;",
    )
    .await;
    let outcome = fx.engine.discover_connection("pg").await.unwrap();
    assert_eq!(
        (
            outcome.tables_added,
            outcome.tables_removed,
            outcome.tables_changed
        ),
        (1, 1, 1)
    );
    let id = fx.engine.connection("pg").await.unwrap().id;
    assert!(
        fx.engine
            .store()
            .cache_entries(&id)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(!fx.engine.cache().local_path(&orders).unwrap().exists());
    assert!(!fx.engine.cache().local_path(&other).unwrap().exists());
    let refetched = fx
        .engine
        .cached_table("pg", "public", "orders")
        .await
        .unwrap();
    let batches = read_parquet(&fx.engine.cache().local_path(&refetched).unwrap());
    assert_eq!(batches[0].schema().field(3).name(), "note");
}

#[tokio::test]
async fn a_value_a_decimal_cannot_hold_fails_the_fetch_naming_it() {
    let mut fx = PgSourceFixture::new().await;
    fx.exec("CREATE TABLE prices (id int, p numeric(10,2)); INSERT INTO prices VALUES (1, 1.5), (2, 'NaN');").await;
    fx.engine.discover_connection("pg").await.unwrap();
    let mut events = fx.engine.subscribe();
    let err = fx
        .engine
        .cached_table("pg", "public", "prices")
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "cannot fetch pg.public.prices: column 'p' (numeric(10,2)) holds NaN, which a decimal cannot hold"
    );
    let id = fx.engine.connection("pg").await.unwrap().id;
    assert!(
        fx.engine
            .store()
            .cache_entries(&id)
            .await
            .unwrap()
            .is_empty()
    );
    let cache_dir = fx.backend.data_dir().join("cache");
    assert_eq!(
        files_under(&cache_dir),
        Vec::<String>::new(),
        "no file is left behind"
    );
    let mut saw_failure = false;
    while let Ok(event) = events.try_recv() {
        saw_failure |= matches!(event, Event::FetchFailed { .. });
    }
    assert!(saw_failure);
}

fn files_under(dir: &Path) -> Vec<String> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(d) = pending.pop() {
        for item in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if item.file_type().unwrap().is_dir() {
                pending.push(item.path());
            } else {
                files.push(item.path().display().to_string());
            }
        }
    }
    files
}

const CHILD_ENV: &str = "QUARRY_TEST_FETCH_CHILD";

/// Not a test of its own: the body of the child process that
/// `a_fetch_killed_mid_way_leaves_no_entry_and_start_up_removes_its_temp_file` kills.
#[tokio::test]
#[ignore = "run by another test as a child process"]
async fn child_fetch_to_be_killed() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    // The connection has no password, so any key will do.
    let (data_dir, store) = spec.split_once('|').unwrap();
    let engine = quarry::Engine::builder()
        .data_dir(data_dir)
        .store_url(store)
        .secret_key(quarry::secrets::SecretKey::generate())
        .build()
        .await
        .unwrap();
    let _ = engine.cached_table("pg", "public", "slow").await;
}

#[tokio::test]
async fn a_fetch_killed_mid_way_leaves_no_entry_and_start_up_removes_its_temp_file() {
    let mut fx = PgSourceFixture::new().await;
    // A view that produces rows slowly, so the fetch is surely running when it is killed.
    fx.exec("CREATE VIEW slow AS SELECT g AS id, pg_sleep(0.01)::text AS pause FROM generate_series(1, 100000) g").await;
    fx.engine.discover_connection("pg").await.unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "postgres_source::child_fetch_to_be_killed",
            "--nocapture",
        ])
        .env(
            CHILD_ENV,
            format!(
                "{}|{}",
                fx.backend.data_dir().display(),
                fx.backend.store_url
            ),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let cache_dir = fx.backend.data_dir().join("cache");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let temp = loop {
        if let Some(t) = files_under(&cache_dir)
            .into_iter()
            .find(|f| f.ends_with(".tmp"))
        {
            break t;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the child never started its fetch"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the child exited before fetching"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        Path::new(&temp).exists(),
        "the killed fetch left its temp file"
    );
    let id = fx.engine.connection("pg").await.unwrap().id;
    assert!(
        fx.engine
            .store()
            .cache_entries(&id)
            .await
            .unwrap()
            .is_empty(),
        "no entry was published"
    );
    // Start-up clean-up.
    let _restarted = fx.backend.engine().await;
    assert!(!Path::new(&temp).exists(), "start-up removed the temp file");
}

#[tokio::test]
async fn a_large_table_read_in_partitions_is_exact() {
    let mut fx = PgSourceFixture::new().await;
    // Over the 64 MiB partitioning threshold: 4 KiB rows, 20000 of them (~80 MiB).
    fx.exec(
        "CREATE TABLE wide (id int, payload text);
         ALTER TABLE wide ALTER payload SET STORAGE PLAIN;
         ALTER TABLE wide SET (autovacuum_enabled = false);
         INSERT INTO wide SELECT g, repeat(md5(g::text), 128) FROM generate_series(1, 20000) g;",
    )
    .await;
    let pages: i64 = sqlx::query_scalar("SELECT pg_relation_size('wide') / 8192")
        .fetch_one(&mut fx.admin)
        .await
        .unwrap();
    assert!(
        pages >= 8192,
        "the table must be large enough to be partitioned ({pages} pages)"
    );
    fx.engine.discover_connection("pg").await.unwrap();
    let entry = fx
        .engine
        .cached_table("pg", "public", "wide")
        .await
        .unwrap();
    assert_eq!(entry.row_count, 20_000);
    let mut ids = Vec::new();
    for batch in read_parquet(&fx.engine.cache().local_path(&entry).unwrap()) {
        let column = batch.column(0);
        for row in 0..batch.num_rows() {
            ids.push(
                value_text(column.as_ref(), row)
                    .unwrap()
                    .parse::<i64>()
                    .unwrap(),
            );
        }
        let payload = batch.column(1);
        let first = value_text(payload.as_ref(), 0).unwrap();
        assert_eq!(first.len(), 32 * 128);
    }
    ids.sort_unstable();
    assert_eq!(
        ids,
        (1..=20_000).collect::<Vec<_>>(),
        "every row exactly once"
    );
}

#[tokio::test]
async fn unconstrained_numeric_can_be_read_as_float64() {
    let mut fx = PgSourceFixture::new().await;
    fx.exec("CREATE TABLE m (x numeric, y numeric(5,2)); INSERT INTO m VALUES (1.5, 1.25), ('NaN', NULL), (NULL, 2);").await;
    let mut config = crate::support::pg_source_config(&fx.db.name);
    config["numeric_as_float64"] = json!(true);
    fx.engine
        .register_connection("pgf", "postgres", config)
        .await
        .unwrap();
    fx.engine.discover_connection("pgf").await.unwrap();
    let id = fx.engine.connection("pgf").await.unwrap().id;
    let table = fx
        .engine
        .store()
        .table(&quarry::table::TableRef::new(&id, "public", "m"))
        .await
        .unwrap()
        .unwrap();
    let types: Vec<_> = table
        .columns
        .iter()
        .map(|c| c.arrow_type.as_str())
        .collect();
    assert_eq!(
        types,
        ["Float64", "Decimal128(5, 2)"],
        "constrained numeric stays exact"
    );
    let entry = fx.engine.cached_table("pgf", "public", "m").await.unwrap();
    let batches = read_parquet(&fx.engine.cache().local_path(&entry).unwrap());
    let values: Vec<_> = (0..3)
        .map(|r| value_text(batches[0].column(0).as_ref(), r))
        .collect();
    assert_eq!(
        values,
        [Some("1.5e0".to_owned()), Some("NaN".to_owned()), None]
    );
}

#[tokio::test]
async fn the_statement_timeout_stops_a_slow_fetch_with_a_timeout_error() {
    let mut fx = PgSourceFixture::new().await;
    fx.exec(
        "CREATE VIEW slow AS SELECT g, pg_sleep(0.2)::text AS pause FROM generate_series(1, 50) g",
    )
    .await;
    let mut config = crate::support::pg_source_config(&fx.db.name);
    config["statement_timeout"] = json!("300ms");
    fx.engine
        .register_connection("pgt", "postgres", config)
        .await
        .unwrap();
    fx.engine.discover_connection("pgt").await.unwrap();
    let err = fx
        .engine
        .cached_table("pgt", "public", "slow")
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("the statement timed out"), "{text}");
    assert!(text.contains("raise statement_timeout"), "{text}");
}
