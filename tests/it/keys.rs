//! Keys, constraints and indexes discovered from each real source, kept in the store and
//! shown in `quarry.information_schema.key_column_usage`. The expected rows are read off
//! each test's own DDL.

use datafusion::arrow::record_batch::RecordBatch;
use serde_json::json;
use sqlx::Connection;

use crate::render::value_text;
use crate::support::{Backend, Kind, MySqlSourceFixture, PgSourceFixture, sqlite_source};

/// Every row of the view for `connection`, cells joined with `|` (NULL as empty), with
/// names SQLite generates (`sqlite_autoindex_…`) shown as `auto`.
async fn key_rows(engine: &quarry::Engine, connection: &str) -> Vec<String> {
    let batches: Vec<RecordBatch> = engine
        .sql(&format!(
            "SELECT table_schema, table_name,
                    CASE WHEN constraint_name LIKE 'sqlite_autoindex%' THEN 'auto'
                         ELSE constraint_name END,
                    constraint_type, column_name, ordinal_position,
                    referenced_table_schema, referenced_table_name, referenced_column_name
             FROM quarry.information_schema.key_column_usage
             WHERE connection_name = '{connection}'
             ORDER BY table_name, constraint_type, constraint_name, ordinal_position"
        ))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let mut rows = Vec::new();
    for batch in &batches {
        for row in 0..batch.num_rows() {
            let cells: Vec<String> = batch
                .columns()
                .iter()
                .map(|c| value_text(c.as_ref(), row).unwrap_or_default())
                .collect();
            rows.push(cells.join("|"));
        }
    }
    rows
}

#[tokio::test]
async fn postgres_keys_constraints_and_indexes_are_discovered() {
    let mut fx = PgSourceFixture::new().await;
    fx.exec(
        "CREATE SCHEMA shop;
         CREATE TABLE shop.parent (a int, b int, code text NOT NULL,
             PRIMARY KEY (a, b), CONSTRAINT parent_code UNIQUE (code));
         CREATE TABLE shop.child (id int PRIMARY KEY, pa int, pb int, note text,
             CONSTRAINT child_parent FOREIGN KEY (pb, pa) REFERENCES shop.parent (b, a));
         CREATE INDEX child_note ON shop.child (note, pa);
         CREATE INDEX child_lower ON shop.child (lower(note));
         CREATE UNIQUE INDEX child_some ON shop.child (pb) WHERE pb > 0;
         CREATE UNIQUE INDEX child_note_id ON shop.child (id) INCLUDE (note);
         CREATE TABLE shop.loose (x int);
         CREATE VIEW shop.v AS SELECT * FROM shop.parent;",
    )
    .await;
    fx.engine.discover_connection("pg").await.unwrap();
    assert_eq!(
        key_rows(&fx.engine, "pg").await,
        [
            // Key order is the constraint's, not the table's column order.
            "shop|child|child_parent|FOREIGN KEY|pb|1|shop|parent|b",
            "shop|child|child_parent|FOREIGN KEY|pa|2|shop|parent|a",
            "shop|child|child_note|INDEX|note|1|||",
            "shop|child|child_note|INDEX|pa|2|||",
            // A partial unique index makes only some rows unique.
            "shop|child|child_some|INDEX|pb|1|||",
            "shop|child|child_pkey|PRIMARY KEY|id|1|||",
            // INCLUDE columns are not part of the key.
            "shop|child|child_note_id|UNIQUE|id|1|||",
            "shop|parent|parent_pkey|PRIMARY KEY|a|1|||",
            "shop|parent|parent_pkey|PRIMARY KEY|b|2|||",
            "shop|parent|parent_code|UNIQUE|code|1|||",
        ]
    );
    // Rediscovery replaces them: a dropped constraint is gone.
    fx.exec("ALTER TABLE shop.child DROP CONSTRAINT child_parent; DROP INDEX shop.child_note;")
        .await;
    fx.engine.discover_connection("pg").await.unwrap();
    let rows = key_rows(&fx.engine, "pg").await;
    assert!(
        !rows
            .iter()
            .any(|r| r.contains("child_parent") || r.contains("child_note|")),
        "{rows:?}"
    );
    assert_eq!(rows.len(), 6, "{rows:?}");
}

#[tokio::test]
async fn mysql_keys_constraints_and_indexes_are_discovered() {
    let mut fx = MySqlSourceFixture::new().await;
    fx.exec(
        "CREATE TABLE parent (a int, b int, code varchar(20) NOT NULL,
             PRIMARY KEY (a, b), UNIQUE KEY parent_code (code));
         CREATE TABLE child (id int PRIMARY KEY, pa int, pb int, note text,
             KEY child_note (note(10), pa),
             CONSTRAINT child_parent FOREIGN KEY (pa, pb) REFERENCES parent (a, b));
         CREATE TABLE loose (x int);
         CREATE VIEW v AS SELECT * FROM parent;",
    )
    .await;
    fx.engine.discover_connection("my").await.unwrap();
    let db = fx.name.clone();
    let expected: Vec<String> = [
        format!("{db}|child|child_parent|FOREIGN KEY|pa|1|{db}|parent|a"),
        format!("{db}|child|child_parent|FOREIGN KEY|pb|2|{db}|parent|b"),
        // MySQL gives a foreign key an index of its own name.
        format!("{db}|child|child_note|INDEX|note|1|||"),
        format!("{db}|child|child_note|INDEX|pa|2|||"),
        format!("{db}|child|child_parent|INDEX|pa|1|||"),
        format!("{db}|child|child_parent|INDEX|pb|2|||"),
        format!("{db}|child|PRIMARY|PRIMARY KEY|id|1|||"),
        format!("{db}|parent|PRIMARY|PRIMARY KEY|a|1|||"),
        format!("{db}|parent|PRIMARY|PRIMARY KEY|b|2|||"),
        format!("{db}|parent|parent_code|UNIQUE|code|1|||"),
    ]
    .into();
    assert_eq!(key_rows(&fx.engine, "my").await, expected);
}

#[tokio::test]
async fn sqlite_keys_constraints_and_indexes_are_discovered() {
    let backend = Backend::new(Kind::Sqlite).await;
    let (path, source) = sqlite_source(
        backend.data_dir(),
        "CREATE TABLE parent (a INTEGER, b INTEGER, code TEXT NOT NULL UNIQUE,
             PRIMARY KEY (a, b));
         CREATE TABLE child (id INTEGER PRIMARY KEY, pa INTEGER, pb INTEGER, note TEXT,
             FOREIGN KEY (pb, pa) REFERENCES parent (b, a));
         CREATE TABLE grandchild (id INTEGER, child_id INTEGER REFERENCES child);
         CREATE INDEX child_note ON child (note, pa);
         CREATE INDEX child_lower ON child (lower(note));
         CREATE UNIQUE INDEX child_some ON child (pb) WHERE pb > 0;
         CREATE VIEW v AS SELECT * FROM parent;",
    )
    .await;
    source.close().await.unwrap();
    let engine = backend.engine().await;
    engine
        .register_connection("lite", "sqlite", json!({"path": path}))
        .await
        .unwrap();
    engine.discover_connection("lite").await.unwrap();
    assert_eq!(
        key_rows(&engine, "lite").await,
        [
            "main|child|child_pb_pa_fkey|FOREIGN KEY|pb|1|main|parent|b",
            "main|child|child_pb_pa_fkey|FOREIGN KEY|pa|2|main|parent|a",
            "main|child|child_note|INDEX|note|1|||",
            "main|child|child_note|INDEX|pa|2|||",
            "main|child|child_some|INDEX|pb|1|||",
            "main|child|child_pkey|PRIMARY KEY|id|1|||",
            // `REFERENCES child` without columns references child's primary key.
            "main|grandchild|grandchild_child_id_fkey|FOREIGN KEY|child_id|1|main|child|id",
            "main|parent|parent_pkey|PRIMARY KEY|a|1|||",
            "main|parent|parent_pkey|PRIMARY KEY|b|2|||",
            "main|parent|auto|UNIQUE|code|1|||",
        ]
    );
}
