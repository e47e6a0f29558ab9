//! The metadata store suite, written once and run against both backends: SQLite and a real
//! PostgreSQL database created per test.

use chrono::Utc;
use quarry::store::{
    CacheEntry, ColumnRecord, Constraint, ConstraintKind, ConstraintTarget, MIGRATIONS_TABLE,
    TableRecord, migrations,
};
use quarry::{ConnectionId, Engine};
use serde_json::json;
use sqlx::{AssertSqlSafe, Row};

use crate::support::{Backend, Kind};

macro_rules! store_suite {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $test() {
                    let backend = crate::support::Backend::new(crate::support::Kind::Sqlite).await;
                    super::$test(&backend).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $test() {
                    let backend = crate::support::Backend::new(crate::support::Kind::Postgres).await;
                    super::$test(&backend).await;
                }
            )*
        }
    };
}

store_suite!(
    create_get_and_list,
    duplicate_names_are_refused,
    rename_keeps_the_id,
    update_merges_config_and_keeps_secrets,
    invalid_update_changes_nothing,
    delete_cascades_to_everything_the_connection_owns,
    rediscovery_keeps_the_cache_of_remaining_tables,
    table_options_survive_rediscovery,
    missing_connections_are_reported_by_name,
    bad_names_are_refused_with_the_rule,
    fresh_store_records_its_migrations,
    reopening_keeps_data_and_applies_nothing_twice,
    a_store_from_a_newer_quarry_is_refused,
    an_altered_migration_is_refused,
    secrets_round_trip_and_are_not_stored_in_plaintext,
);

fn pg_config(password: &str) -> serde_json::Value {
    json!({"host": "db.example", "port": 5433, "database": "sales", "user": "reader",
           "password": password})
}

async fn create_get_and_list(b: &Backend) {
    let engine = b.engine().await;
    let sales = engine
        .register_connection("sales", "postgres", pg_config("pw1"))
        .await
        .unwrap();
    let shop = engine
        .register_connection(
            "shop",
            "mariadb",
            json!({"host": "h", "database": "d", "user": "u"}),
        )
        .await
        .unwrap();
    assert!(ConnectionId::looks_valid(sales.id.as_str()));
    assert_eq!(sales.source_type.as_str(), "postgres");
    assert_eq!(shop.source_type.as_str(), "mysql");
    assert_eq!(sales.secret_fields, vec!["password".to_owned()]);
    assert!(shop.secret_fields.is_empty());
    assert!(sales.config.get("password").is_none());
    assert_eq!(sales.config["host"], "db.example");

    let by_id = engine.connection(sales.id.as_str()).await.unwrap();
    let by_name = engine.connection("sales").await.unwrap();
    assert_eq!(by_id, sales);
    assert_eq!(by_name, sales);

    let all = engine.connections().await.unwrap();
    let names: Vec<_> = all.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["sales", "shop"]);
    assert_eq!(all[1], shop);
}

async fn duplicate_names_are_refused(b: &Backend) {
    let engine = b.engine().await;
    engine
        .register_connection("sales", "postgres", pg_config("a"))
        .await
        .unwrap();
    let err = engine
        .register_connection("sales", "postgres", pg_config("b"))
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "a connection named 'sales' already exists; pick another name or drop/rename the existing one"
    );
    assert_eq!(engine.connections().await.unwrap().len(), 1);
}

async fn rename_keeps_the_id(b: &Backend) {
    let engine = b.engine().await;
    let original = engine
        .register_connection("sales", "postgres", pg_config("pw"))
        .await
        .unwrap();
    engine
        .register_connection("other", "postgres", pg_config("pw"))
        .await
        .unwrap();
    let renamed = engine.rename_connection("sales", "revenue").await.unwrap();
    assert_eq!(renamed.id, original.id);
    assert_eq!(renamed.name.as_str(), "revenue");
    assert!(renamed.updated_at >= original.updated_at);
    assert_eq!(engine.connection("revenue").await.unwrap().id, original.id);
    assert!(engine.connection("sales").await.is_err());
    // The secret is bound to the id, so it still opens after the rename.
    let full = engine.source_config("revenue").await.unwrap();
    assert_eq!(password_of(&full).as_deref(), Some("pw"));

    let clash = engine
        .rename_connection("revenue", "other")
        .await
        .unwrap_err();
    assert!(
        clash
            .to_string()
            .contains("a connection named 'other' already exists")
    );
    let bad = engine
        .rename_connection("revenue", "Bad-Name")
        .await
        .unwrap_err();
    assert!(
        bad.to_string()
            .contains("invalid connection name 'Bad-Name'")
    );
    assert_eq!(
        engine
            .connection(original.id.as_str())
            .await
            .unwrap()
            .name
            .as_str(),
        "revenue"
    );
}

fn password_of(config: &quarry::SourceConfig) -> Option<String> {
    use secrecy::ExposeSecret;
    match config {
        quarry::SourceConfig::Postgres(c) | quarry::SourceConfig::Mysql(c) => {
            c.password.as_ref().map(|p| {
                p.resolve("test", "password")
                    .unwrap()
                    .expose_secret()
                    .to_owned()
            })
        }
        quarry::SourceConfig::Sqlite(_) | quarry::SourceConfig::Files(_) => None,
    }
}

async fn update_merges_config_and_keeps_secrets(b: &Backend) {
    let engine = b.engine().await;
    let created = engine
        .register_connection("sales", "postgres", pg_config("first"))
        .await
        .unwrap();
    let updated = engine
        .update_connection("sales", json!({"port": 6000, "ssl_mode": "require"}))
        .await
        .unwrap();
    assert_eq!(updated.id, created.id);
    assert_eq!(updated.config["port"], 6000);
    assert_eq!(updated.config["host"], "db.example");
    assert_eq!(updated.config["ssl_mode"], "require");
    let full = engine.source_config("sales").await.unwrap();
    assert_eq!(password_of(&full).as_deref(), Some("first"));

    engine
        .update_connection("sales", json!({"password": "second", "ssl_mode": null}))
        .await
        .unwrap();
    let full = engine.source_config("sales").await.unwrap();
    assert_eq!(password_of(&full).as_deref(), Some("second"));
    let stored = engine.connection("sales").await.unwrap();
    assert!(stored.config.get("ssl_mode").is_none());
    assert!(stored.config.get("password").is_none());

    let cleared = engine
        .update_connection("sales", json!({"password": null}))
        .await
        .unwrap();
    assert!(cleared.secret_fields.is_empty());
    assert_eq!(
        password_of(&engine.source_config("sales").await.unwrap()),
        None
    );
}

async fn invalid_update_changes_nothing(b: &Backend) {
    let engine = b.engine().await;
    let before = engine
        .register_connection("sales", "postgres", pg_config("pw"))
        .await
        .unwrap();
    let err = engine
        .update_connection("sales", json!({"port": 70000}))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid postgres connection config: 'port' must be between 1 and 65535, got 70000"
    );
    let err = engine
        .update_connection("sales", json!({"host": null}))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("'host' is required"), "{err}");
    assert_eq!(engine.connection("sales").await.unwrap(), before);
}

fn sample_tables() -> Vec<TableRecord> {
    let column = |name: &str, pos: i64| ColumnRecord {
        name: name.to_owned(),
        ordinal_position: pos,
        source_type: "numeric(38,10)".to_owned(),
        numeric_precision: Some(38),
        numeric_scale: Some(10),
        is_nullable: pos == 2,
        arrow_type: "Decimal128(38, 10)".to_owned(),
    };
    ["orders", "customers"]
        .iter()
        .map(|name| TableRecord {
            schema: "public".to_owned(),
            name: name.to_string(),
            table_type: "table".to_owned(),
            row_estimate: Some(1000),
            byte_estimate: Some(64_000),
            options: Default::default(),
            arrow_schema: Some("{}".to_owned()),
            discovered_at: Utc::now(),
            fetch_count: 0,
            columns: vec![column("id", 1), column("amount", 2)],
            refresh: Default::default(),
            files: None,
            constraints: vec![
                Constraint {
                    name: format!("{name}_pkey"),
                    kind: ConstraintKind::PrimaryKey,
                    columns: vec!["id".into()],
                    references: None,
                },
                Constraint {
                    name: format!("{name}_amount_id_fkey"),
                    kind: ConstraintKind::ForeignKey,
                    columns: vec!["amount".into(), "id".into()],
                    references: Some(ConstraintTarget {
                        schema: "ledger".into(),
                        table: "totals".into(),
                        columns: vec!["total".into(), "ref".into()],
                    }),
                },
            ],
        })
        .collect()
}

fn full_refresh() -> quarry::refresh::Refreshed {
    quarry::refresh::Refreshed {
        kind: quarry::refresh::RefreshKind::Full,
        rows: 10,
        duration: std::time::Duration::from_millis(5),
        at: Utc::now(),
    }
}

fn cache_entry(id: &ConnectionId, table: &str) -> CacheEntry {
    CacheEntry {
        table: quarry::table::TableRef::new(id, "public", table),
        version: 1,
        path: format!("cache/{id}/public/{table}/1.parquet"),
        deltas: Vec::new(),
        row_count: 10,
        byte_size: 2048,
        arrow_schema: "{}".to_owned(),
        fetched_at: Utc::now(),
        is_current: true,
        skipped_rows: 0,
    }
}

async fn count_rows(b: &Backend, table: &str, id: &ConnectionId) -> i64 {
    let raw = b.raw().await;
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT COUNT(*) AS n FROM {table} WHERE {} = $1",
        if table == "connections" {
            "id"
        } else {
            "connection_id"
        }
    )))
    .bind(id.as_str())
    .fetch_one(raw.pool())
    .await
    .unwrap();
    let n = row.try_get::<i64, _>("n").unwrap();
    raw.close().await;
    n
}

async fn delete_cascades_to_everything_the_connection_owns(b: &Backend) {
    let engine = b.engine().await;
    let doomed = engine
        .register_connection("doomed", "postgres", pg_config("pw"))
        .await
        .unwrap();
    let kept = engine
        .register_connection("kept", "postgres", pg_config("pw"))
        .await
        .unwrap();
    for conn in [&doomed, &kept] {
        engine
            .store()
            .replace_tables(&conn.id, &sample_tables())
            .await
            .unwrap();
        engine
            .store()
            .publish_cache_entry(&cache_entry(&conn.id, "orders"), Some(&full_refresh()))
            .await
            .unwrap();
    }
    let tables = [
        "connections",
        "secrets",
        "source_tables",
        "source_columns",
        "source_constraints",
        "cache_entries",
    ];
    for table in tables {
        assert!(
            count_rows(b, table, &doomed.id).await > 0,
            "{table} is filled"
        );
    }

    let dropped = engine.drop_connection("doomed").await.unwrap();
    assert_eq!(dropped.id, doomed.id);
    for table in tables {
        assert_eq!(
            count_rows(b, table, &doomed.id).await,
            0,
            "{table} of the dropped connection"
        );
        assert!(
            count_rows(b, table, &kept.id).await > 0,
            "{table} of the other connection"
        );
    }
    let again = engine
        .drop_connection(doomed.id.as_str())
        .await
        .unwrap_err();
    assert!(
        again.to_string().contains("no connection named or with id"),
        "{again}"
    );
}

async fn rediscovery_keeps_the_cache_of_remaining_tables(b: &Backend) {
    let engine = b.engine().await;
    let conn = engine
        .register_connection("sales", "postgres", pg_config("pw"))
        .await
        .unwrap();
    let store = engine.store();
    let tables = sample_tables();
    store.replace_tables(&conn.id, &tables).await.unwrap();
    let stored = store.tables(&conn.id).await.unwrap();
    let names: Vec<_> = stored.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["customers", "orders"]);
    assert_eq!(stored[1].columns, tables[0].columns);
    // Keys come back whole: kinds, names, column order and the referenced columns.
    assert_eq!(stored[1].constraints, tables[0].constraints);
    assert_eq!(stored[1].row_estimate, Some(1000));
    let orders = cache_entry(&conn.id, "orders");
    store
        .publish_cache_entry(&orders, Some(&full_refresh()))
        .await
        .unwrap();
    store
        .publish_cache_entry(&cache_entry(&conn.id, "customers"), Some(&full_refresh()))
        .await
        .unwrap();

    // "customers" vanished at the source: it goes, with its cache; orders keeps its entry.
    store.replace_tables(&conn.id, &tables[..1]).await.unwrap();
    let stored = store.tables(&conn.id).await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].name, "orders");
    let entries = store.cache_entries(&conn.id).await.unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].table.table, "orders");
    assert_eq!(entries[0].path, orders.path);
    assert_eq!(entries[0].row_count, 10);
}

async fn table_options_survive_rediscovery(b: &Backend) {
    let engine = b.engine().await;
    let conn = engine
        .register_connection("sales", "postgres", pg_config("pw"))
        .await
        .unwrap();
    let store = engine.store();
    let tables = sample_tables();
    store.replace_tables(&conn.id, &tables).await.unwrap();
    let orders = quarry::TableRef::new(&conn.id, "public", "orders");
    let live = quarry::access::TableOptions {
        mode: Some(quarry::access::AccessMode::Live),
        ..Default::default()
    };
    assert!(store.set_table_options(&orders, &live).await.unwrap());
    let missing = quarry::TableRef::new(&conn.id, "public", "nope");
    assert!(!store.set_table_options(&missing, &live).await.unwrap());

    // Discovery runs again, with a new size estimate: the option stays, the estimate moves.
    let mut again = sample_tables();
    again[0].byte_estimate = Some(128_000);
    store.replace_tables(&conn.id, &again).await.unwrap();
    let stored = store.table(&orders).await.unwrap().unwrap();
    assert_eq!(stored.options, live);
    assert_eq!(stored.byte_estimate, Some(128_000));
    let customers = quarry::TableRef::new(&conn.id, "public", "customers");
    let other = store.table(&customers).await.unwrap().unwrap();
    assert_eq!(other.options, quarry::access::TableOptions::default());
}

async fn missing_connections_are_reported_by_name(b: &Backend) {
    let engine = b.engine().await;
    for missing in ["nope", "Not-A-Name", ConnectionId::generate().as_str()] {
        let err = engine.connection(missing).await.unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "no connection named or with id '{missing}'; list connections to see the existing ones"
            )
        );
    }
}

async fn bad_names_are_refused_with_the_rule(b: &Backend) {
    let engine = b.engine().await;
    let err = engine
        .register_connection("Sales", "postgres", pg_config("pw"))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("invalid connection name 'Sales'"), "{err}");
    assert!(err.contains("[a-z_][a-z0-9_]{0,62}"), "{err}");
    assert!(err.contains("try 'sales'"), "{err}");
    let err = engine
        .register_connection("information_schema", "postgres", pg_config("pw"))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("is reserved"), "{err}");
    assert!(engine.connections().await.unwrap().is_empty());
}

async fn applied_migrations(b: &Backend) -> Vec<(i64, String)> {
    let raw = b.raw().await;
    let rows = sqlx::query(AssertSqlSafe(format!(
        "SELECT version, checksum FROM {MIGRATIONS_TABLE} ORDER BY version"
    )))
    .fetch_all(raw.pool())
    .await
    .unwrap();
    raw.close().await;
    rows.iter()
        .map(|r| {
            (
                r.try_get("version").unwrap(),
                r.try_get("checksum").unwrap(),
            )
        })
        .collect()
}

fn dialect(b: &Backend) -> quarry::store::Dialect {
    match b.kind {
        Kind::Sqlite => quarry::store::Dialect::Sqlite,
        Kind::Postgres => quarry::store::Dialect::Postgres,
    }
}

async fn fresh_store_records_its_migrations(b: &Backend) {
    let _engine = b.engine().await;
    let expected: Vec<_> = migrations(dialect(b))
        .iter()
        .map(|m| (m.version, m.checksum.clone()))
        .collect();
    assert_eq!(expected[0].0, 1);
    assert_eq!(expected[0].1.len(), 64);
    assert_eq!(applied_migrations(b).await, expected);
}

async fn reopening_keeps_data_and_applies_nothing_twice(b: &Backend) {
    let first = b.engine().await;
    let conn = first
        .register_connection("sales", "postgres", pg_config("pw"))
        .await
        .unwrap();
    let before = applied_migrations(b).await;
    drop(first);
    let second: Engine = b.engine().await;
    assert_eq!(second.connection("sales").await.unwrap().id, conn.id);
    assert_eq!(applied_migrations(b).await, before);
}

async fn a_store_from_a_newer_quarry_is_refused(b: &Backend) {
    drop(b.engine().await);
    let raw = b.raw().await;
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO {MIGRATIONS_TABLE} (version, checksum, applied_at) VALUES (99, 'x', 'now')"
    )))
    .execute(raw.pool())
    .await
    .unwrap();
    raw.close().await;
    let err = b
        .engine_with_key(quarry::secrets::KeySource::Given(b.key.clone()))
        .await
        .unwrap_err()
        .to_string();
    let known = migrations(dialect(b)).len();
    assert!(err.contains("has schema version 99"), "{err}");
    assert!(
        err.contains(&format!("only knows versions up to {known}")),
        "{err}"
    );
    assert!(
        err.contains("written by a newer Quarry. Upgrade Quarry"),
        "{err}"
    );
}

async fn an_altered_migration_is_refused(b: &Backend) {
    drop(b.engine().await);
    let raw = b.raw().await;
    sqlx::query(AssertSqlSafe(format!(
        "UPDATE {MIGRATIONS_TABLE} SET checksum = 'deadbeef' WHERE version = 1"
    )))
    .execute(raw.pool())
    .await
    .unwrap();
    raw.close().await;
    let err = b
        .engine_with_key(quarry::secrets::KeySource::Given(b.key.clone()))
        .await
        .unwrap_err()
        .to_string();
    let expected = &migrations(dialect(b))[0].checksum;
    assert!(
        err.contains("recorded migration v1 with checksum deadbeef"),
        "{err}"
    );
    assert!(
        err.contains(&format!("this Quarry's v1 has checksum {expected}")),
        "{err}"
    );
    assert!(
        err.contains("different build of Quarry or edited by hand"),
        "{err}"
    );
}

const PLAINTEXT: &str = "correct-horse-battery-staple-4f9a";

async fn secrets_round_trip_and_are_not_stored_in_plaintext(b: &Backend) {
    let engine = b.engine().await;
    let conn = engine
        .register_connection("sales", "postgres", pg_config(PLAINTEXT))
        .await
        .unwrap();
    assert_eq!(
        password_of(&engine.source_config("sales").await.unwrap()).as_deref(),
        Some(PLAINTEXT)
    );
    let sealed = engine.store().secrets(&conn.id).await.unwrap();
    assert_eq!(sealed.len(), 1);
    assert_eq!(sealed[0].field, "password");
    assert_eq!(sealed[0].nonce.len(), 12);
    // Nothing that shows a connection or its config reveals the password.
    for shown in [
        format!("{conn:?}"),
        format!("{:?}", engine.source_config("sales").await.unwrap()),
        format!("{sealed:?}"),
        format!("{engine:?}"),
        format!("{:?}", engine.connections().await.unwrap()),
    ] {
        assert!(!shown.contains(PLAINTEXT), "{shown}");
    }
    drop(engine);

    match b.kind {
        Kind::Sqlite => {
            let mut found = false;
            let mut checked = 0;
            for entry in std::fs::read_dir(b.data_dir()).unwrap() {
                let path = entry.unwrap().path();
                let name = path.file_name().unwrap().to_string_lossy().to_string();
                if name.starts_with("quarry.db") {
                    let bytes = std::fs::read(&path).unwrap();
                    checked += bytes.len();
                    found |= bytes
                        .windows(PLAINTEXT.len())
                        .any(|w| w == PLAINTEXT.as_bytes());
                }
            }
            assert!(checked > 0, "the store files were read");
            assert!(
                !found,
                "the plaintext password is in the SQLite store files"
            );
        }
        Kind::Postgres => {
            let raw = b.raw().await;
            for table in ["connections", "secrets"] {
                let rows = sqlx::query(AssertSqlSafe(format!(
                    "SELECT t::text AS row_text FROM {table} t"
                )))
                .fetch_all(raw.pool())
                .await
                .unwrap();
                assert!(!rows.is_empty());
                for row in rows {
                    let text: String = row.try_get("row_text").unwrap();
                    assert!(!text.contains(PLAINTEXT), "{table}: {text}");
                }
            }
            let rows = sqlx::query("SELECT ciphertext FROM secrets")
                .fetch_all(raw.pool())
                .await
                .unwrap();
            for row in rows {
                let bytes: Vec<u8> = row.try_get("ciphertext").unwrap();
                assert!(
                    !bytes
                        .windows(PLAINTEXT.len())
                        .any(|w| w == PLAINTEXT.as_bytes())
                );
            }
            raw.close().await;
        }
    }
}
