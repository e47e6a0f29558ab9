//! The audit log: every connection operation is a row with who, what, when and the outcome,
//! never a secret; queryable as `quarry.information_schema.audit_log` and `GET /audit-log`.

use axum::http::{Method, StatusCode};
use serde_json::json;

use crate::http::{Api, As};
use crate::support::{Backend, Kind, sqlite_source};

async fn rows(engine: &quarry::Engine) -> Vec<Vec<String>> {
    let batches = engine
        .sql(
            "SELECT actor, action, connection_name, outcome, coalesce(detail, '') \
             FROM quarry.information_schema.audit_log",
        )
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let mut out = Vec::new();
    for batch in &batches {
        for row in 0..batch.num_rows() {
            out.push(
                (0..batch.num_columns())
                    .map(|c| {
                        datafusion::arrow::array::AsArray::as_string::<i32>(batch.column(c))
                            .value(row)
                            .to_owned()
                    })
                    .collect(),
            );
        }
    }
    out.reverse(); // oldest first
    out
}

#[tokio::test]
async fn a_scripted_sequence_of_operations_leaves_one_row_each_in_order_without_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _conn) = sqlite_source(
        dir.path(),
        "CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (1);",
    )
    .await;
    let b = Backend::new(Kind::Sqlite).await;
    let engine = b.engine().await;
    let config = json!({ "path": path }).to_string();
    for sql in [
        format!("SELECT * FROM create_connection('lite', 'sqlite', '{config}')"),
        "SELECT * FROM test_connection('lite')".to_owned(),
        "SELECT * FROM refresh_table('lite.main.t')".to_owned(),
        "SELECT * FROM purge_cache('lite')".to_owned(),
        "SELECT * FROM rename_connection('lite', 'lite2')".to_owned(),
    ] {
        engine.sql(&sql).await.unwrap().collect().await.unwrap();
    }
    // A config change names its keys, never their values.
    engine
        .register_connection(
            "pg",
            "postgres",
            json!({"host": "h", "database": "d", "user": "u", "password": "first-Secret-1"}),
        )
        .await
        .unwrap();
    engine
        .update_connection("pg", json!({"password": "second-Secret-2"}))
        .await
        .unwrap();
    // A failed operation is recorded as failed, under the name it was given.
    assert!(engine.drop_connection("nonesuch").await.is_err());
    engine
        .sql("SELECT * FROM drop_connection('lite2')")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();

    let log = rows(&engine).await;
    let summary: Vec<(&str, &str, &str, &str)> = log
        .iter()
        .map(|r| (r[0].as_str(), r[1].as_str(), r[2].as_str(), r[3].as_str()))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("local", "create", "lite", "ok"),
            ("local", "discover", "lite", "ok"),
            ("local", "test", "lite", "ok"),
            ("local", "refresh", "lite", "ok"),
            ("local", "purge", "lite", "ok"),
            ("local", "rename", "lite", "ok"),
            ("local", "create", "pg", "ok"),
            ("local", "update", "pg", "ok"),
            ("local", "drop", "nonesuch", "failed"),
            ("local", "drop", "lite2", "ok"),
        ],
        "{log:?}"
    );
    assert_eq!(log[3][4], "main.t");
    assert_eq!(log[5][4], "renamed to lite2");
    assert_eq!(log[7][4], "changed password");
    assert!(log[8][4].contains("nonesuch"), "{log:?}");
    let text = format!("{log:?}");
    assert!(!text.contains("Secret-"), "no secret in the log: {text}");
}

#[tokio::test]
async fn operations_through_the_rest_api_and_its_sql_are_recorded_as_the_token_s_user() {
    let api = Api::new().await;
    let (status, list) = api
        .json(Method::GET, "/connections", None, As::Token(&api.token))
        .await;
    assert_eq!(status, StatusCode::OK);
    let id = list[0]["id"].as_str().unwrap().to_owned();
    let (status, _) = api
        .json(
            Method::POST,
            &format!("/connections/{id}/test"),
            None,
            As::Token(&api.token),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = api
        .json(
            Method::POST,
            "/query",
            Some(json!({"sql": "SELECT * FROM purge_cache('pg')"})),
            As::Token(&api.token),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let (status, log) = api
        .json(
            Method::GET,
            "/audit-log?limit=2",
            None,
            As::Token(&api.token),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{log}");
    let log = log.as_array().unwrap();
    assert_eq!(log.len(), 2);
    assert_eq!(
        (log[0]["actor"].as_str(), log[0]["action"].as_str()),
        (Some("quarry"), Some("purge"))
    );
    assert_eq!(
        (
            log[1]["actor"].as_str(),
            log[1]["action"].as_str(),
            log[1]["connection_id"].as_str()
        ),
        (Some("quarry"), Some("test"), Some(id.as_str()))
    );

    let (status, bad) = api
        .json(
            Method::GET,
            "/audit-log?limit=zero",
            None,
            As::Token(&api.token),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
}
