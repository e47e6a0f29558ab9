//! Secret keys: the key file, and what happens when the key changes.

use std::os::unix::fs::PermissionsExt;

use quarry::secrets::{KEY_FILE, KeySource, SecretKey};
use serde_json::json;

use crate::support::{Backend, Kind};

fn config() -> serde_json::Value {
    json!({"host": "h", "database": "d", "user": "u", "password": "hunter2-but-longer"})
}

#[tokio::test]
async fn the_key_file_is_created_on_first_use_with_mode_0600() {
    let b = Backend::new(Kind::Sqlite).await;
    let key_path = b.data_dir().join(KEY_FILE);
    let file_key = || KeySource::File(key_path.clone());
    let engine = b.engine_with_key(file_key()).await.unwrap();
    assert!(
        !key_path.exists(),
        "no key is made before a secret needs one"
    );
    let conn = engine
        .register_connection("sales", "postgres", config())
        .await
        .unwrap();
    let mode = std::fs::metadata(&key_path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let text = std::fs::read_to_string(&key_path).unwrap();
    assert!(SecretKey::from_base64(&text, "key file").is_ok());
    drop(engine);

    // A new engine reads the same key file and opens the secret.
    let engine = b.engine_with_key(file_key()).await.unwrap();
    let shown = format!(
        "{:?}",
        engine.source_config(conn.id.as_str()).await.unwrap()
    );
    assert!(
        shown.contains("password: Some(Credential::Value([redacted]))"),
        "{shown}"
    );
    assert_eq!(
        std::fs::read_to_string(&key_path).unwrap(),
        text,
        "the key is kept"
    );
}

#[tokio::test]
async fn a_key_file_readable_by_others_is_refused_with_the_fix() {
    let b = Backend::new(Kind::Sqlite).await;
    let key_path = b.data_dir().join(KEY_FILE);
    let engine = b
        .engine_with_key(KeySource::File(key_path.clone()))
        .await
        .unwrap();
    engine
        .register_connection("sales", "postgres", config())
        .await
        .unwrap();
    drop(engine);
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let engine = b
        .engine_with_key(KeySource::File(key_path.clone()))
        .await
        .unwrap();
    let err = engine.source_config("sales").await.unwrap_err().to_string();
    assert!(
        err.contains("has mode 644, readable by other users"),
        "{err}"
    );
    assert!(
        err.contains(&format!("chmod 600 {}", key_path.display())),
        "{err}"
    );
}

#[tokio::test]
async fn a_different_key_names_the_connection_and_the_likely_cause() {
    let b = Backend::new(Kind::Sqlite).await;
    let engine = b.engine().await;
    let conn = engine
        .register_connection("sales", "postgres", config())
        .await
        .unwrap();
    drop(engine);
    let other = SecretKey::generate();
    let engine = b
        .engine_with_key(KeySource::Given(other.clone()))
        .await
        .unwrap();
    let err = engine.source_config("sales").await.unwrap_err().to_string();
    assert!(
        err.starts_with(&format!(
            "cannot decrypt the secrets of connection 'sales' ({})",
            conn.id
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "encrypted with key {} but the current key is {}",
            b.key.id(),
            other.id()
        )),
        "{err}"
    );
    assert!(
        err.contains("Likely cause: QUARRY_SECRET_KEY or the key file changed"),
        "{err}"
    );
    assert!(!err.contains("hunter2"));
}

#[tokio::test]
async fn a_missing_key_file_is_not_silently_replaced_when_reading() {
    let b = Backend::new(Kind::Sqlite).await;
    let key_path = b.data_dir().join(KEY_FILE);
    let engine = b
        .engine_with_key(KeySource::File(key_path.clone()))
        .await
        .unwrap();
    engine
        .register_connection("sales", "postgres", config())
        .await
        .unwrap();
    drop(engine);
    std::fs::remove_file(&key_path).unwrap();
    let engine = b
        .engine_with_key(KeySource::File(key_path.clone()))
        .await
        .unwrap();
    let err = engine.source_config("sales").await.unwrap_err().to_string();
    assert!(
        err.contains("QUARRY_SECRET_KEY is not set and the key file"),
        "{err}"
    );
    assert!(!key_path.exists(), "reading never creates a new key");
}

#[tokio::test]
async fn connections_without_secrets_need_no_key() {
    let b = Backend::new(Kind::Sqlite).await;
    let key_path = b.data_dir().join(KEY_FILE);
    let engine = b
        .engine_with_key(KeySource::File(key_path.clone()))
        .await
        .unwrap();
    engine
        .register_connection(
            "open",
            "mysql",
            json!({"host": "h", "database": "d", "user": "u"}),
        )
        .await
        .unwrap();
    assert!(engine.source_config("open").await.is_ok());
    assert!(!key_path.exists());
}
