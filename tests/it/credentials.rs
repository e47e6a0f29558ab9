//! Secrets given by reference (an environment variable, a file, the OS keyring): each
//! resolves against a real MariaDB server that checks passwords, a missing one gets its
//! message, the store holds only the reference, and a rotated secret is used from the
//! next session on.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use serde_json::{Value, json};
use sqlx::Connection;

use crate::support::{self, Backend, Kind};

/// A MariaDB database and a user of its own with a password, dropped afterwards.
struct PasswordUser {
    database: String,
    user: String,
}

impl PasswordUser {
    async fn create(password: &str) -> Self {
        let database = support::unique_name("quarry_cred");
        let user = database.clone();
        let this = PasswordUser { database, user };
        this.admin(&format!("CREATE DATABASE {}", this.database))
            .await;
        this.admin(&format!(
            "CREATE USER '{}'@'%' IDENTIFIED BY '{password}'",
            this.user
        ))
        .await;
        this.admin(&format!(
            "GRANT SELECT, LOCK TABLES ON {}.* TO '{}'@'%'",
            this.database, this.user
        ))
        .await;
        this.admin(&format!("CREATE TABLE {}.t (x INT)", this.database))
            .await;
        this.admin(&format!("INSERT INTO {}.t VALUES (1), (2)", this.database))
            .await;
        this
    }

    async fn admin(&self, sql: &str) {
        let mut conn = sqlx::MySqlConnection::connect(&support::mysql_admin_url())
            .await
            .expect("the test MariaDB server is reachable (see .ci/run)");
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(&mut conn)
            .await
            .unwrap();
    }

    async fn set_password(&self, password: &str) {
        self.admin(&format!(
            "ALTER USER '{}'@'%' IDENTIFIED BY '{password}'",
            self.user
        ))
        .await;
    }

    fn config(&self, password: Value) -> Value {
        let mut config = support::mysql_source_config(&self.database);
        config["user"] = json!(self.user);
        config["password"] = password;
        config
    }
}

impl Drop for PasswordUser {
    fn drop(&mut self) {
        let (database, user) = (self.database.clone(), self.user.clone());
        support::finish_in_background(async move {
            if let Ok(mut conn) = sqlx::MySqlConnection::connect(&support::mysql_admin_url()).await
            {
                for sql in [
                    format!("DROP DATABASE IF EXISTS {database}"),
                    format!("DROP USER IF EXISTS '{user}'@'%'"),
                ] {
                    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                        .execute(&mut conn)
                        .await;
                }
            }
        });
    }
}

fn write_secret(path: &Path, secret: &str) {
    std::fs::write(path, format!("{secret}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// Every byte of the store's files (the database and its journal) under `dir`, to search
/// for a secret.
fn store_bytes(dir: &Path) -> Vec<u8> {
    support::walk(dir)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("quarry.db"))
        .flat_map(|p| std::fs::read(p).unwrap_or_default())
        .collect()
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// The stored config and the number of sealed secrets of connection `name`, read from the
/// store's tables directly.
async fn stored(b: &Backend, name: &str) -> (Value, i64) {
    let raw = b.raw().await;
    let row: (String, String) =
        sqlx::query_as("SELECT id, config FROM connections WHERE name = $1")
            .bind(name)
            .fetch_one(raw.pool())
            .await
            .unwrap();
    let sealed: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM secrets WHERE connection_id = $1")
        .bind(&row.0)
        .fetch_one(raw.pool())
        .await
        .unwrap();
    raw.close().await;
    (serde_json::from_str(&row.1).unwrap(), sealed)
}

#[tokio::test]
async fn a_password_file_resolves_is_stored_as_its_path_and_is_read_again_at_each_session() {
    let user = PasswordUser::create("first-secret-pw").await;
    let b = Backend::new(Kind::Sqlite).await;
    let engine = b.engine().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mysql-password");
    write_secret(&file, "first-secret-pw");

    let created = engine
        .create_connection("my", "mysql", user.config(json!({ "file": file })))
        .await
        .unwrap();
    let outcome = created
        .discovery
        .expect("discovery logs in with the file's password");
    assert_eq!(outcome.tables_added, 1, "{outcome:?}");
    assert!(engine.test_connection("my").await.is_ok());

    // The store keeps the reference and no sealed secret; the password is nowhere in it.
    let (config, sealed) = stored(&b, "my").await;
    assert_eq!(config["password"], json!({ "file": file }));
    assert_eq!(sealed, 0);
    assert!(!contains(&store_bytes(b.data_dir()), "first-secret-pw"));

    // Rotation: the server's password changes; until the file follows, a new session fails
    // to log in, and once it does, the next session logs in. Nothing is reopened.
    user.set_password("second-secret-pw").await;
    let stale = engine.test_connection("my").await.unwrap_err();
    assert_eq!(
        stale.failure_class(),
        Some(quarry::FailureClass::Authentication),
        "{stale}"
    );
    write_secret(&file, "second-secret-pw");
    engine
        .test_connection("my")
        .await
        .expect("the rotated file is read");
    let sum = engine
        .sql(&format!("SELECT sum(x) AS s FROM my.{}.t", user.database))
        .await
        .unwrap()
        .collect()
        .await
        .expect("a fetch logs in with the rotated password");
    assert_eq!(sum[0].num_rows(), 1);

    // A file others can read is refused, with the fix.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let open = engine.test_connection("my").await.unwrap_err().to_string();
    assert!(open.contains("readable by other users"), "{open}");
    assert!(
        open.contains(&format!("chmod 600 {}", file.display())),
        "{open}"
    );

    // A missing file is named.
    std::fs::remove_file(&file).unwrap();
    let missing = engine.test_connection("my").await.unwrap_err();
    assert_eq!(
        missing.failure_class(),
        Some(quarry::FailureClass::Credential)
    );
    assert!(
        missing
            .to_string()
            .contains(&format!("comes from the file {}", file.display())),
        "{missing}"
    );
}

/// Runs `script` (sh) in a session keyring of its own, as a login session has one
/// (`keyctl session -`, from keyutils): the kernel keyring the `keyring` crate uses on
/// Linux, headless.
fn in_session_keyring(home: &Path, script: &str) -> (bool, String) {
    let out = std::process::Command::new("keyctl")
        .args(["session", "-", "sh", "-ec", script])
        .env("QUARRY_HOME", home)
        .env("QUARRY", env!("CARGO_BIN_EXE_quarry"))
        .env_remove("QUARRY_STORE_URL")
        .env_remove("QUARRY_SECRET_KEY")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("keyctl (Debian's keyutils, see .ci/run) runs");
    (
        out.status.success(),
        support::text(&out.stdout) + &support::text(&out.stderr),
    )
}

#[test]
fn a_keyring_password_resolves_is_stored_as_its_entry_and_a_missing_entry_is_named() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let user = runtime.block_on(PasswordUser::create("keyring-secret-pw"));
    let home = tempfile::tempdir().unwrap();
    let service = format!("quarry-test-{}", user.database);
    let reference = json!({ "keyring": { "service": service, "user": "reader" } });
    let config = user.config(reference.clone()).to_string();
    std::fs::write(
        home.path().join("create.sql"),
        format!("SELECT name FROM create_connection('kr', 'mysql', '{config}');"),
    )
    .unwrap();
    let description = format!("keyring-rs:reader@{service}");
    let script = format!(
        r#"
echo keyring-secret-pw | "$QUARRY" keyring set {service} reader
"$QUARRY" -f "$QUARRY_HOME/create.sql"
"$QUARRY" -c "SELECT ok AS first FROM test_connection('kr')"
echo ROTATE
$ROTATE_PASSWORD
echo keyring-second-pw | "$QUARRY" keyring set {service} reader
"$QUARRY" -c "SELECT ok AS second FROM test_connection('kr')"
keyctl revoke "$(keyctl search @s user '{description}')"
"$QUARRY" -c "SELECT ok, error FROM test_connection('kr')"
"#
    );
    // The server's password changes in the middle of the script, by the MariaDB client.
    let admin = url::Url::parse(&support::mysql_admin_url()).unwrap();
    let rotate = format!(
        "mariadb -h {} -P {} -u {} {} -e \"ALTER USER '{}'@'%' IDENTIFIED BY 'keyring-second-pw'\"",
        admin.host_str().unwrap_or("127.0.0.1"),
        admin.port().unwrap_or(3306),
        if admin.username().is_empty() {
            "root"
        } else {
            admin.username()
        },
        admin
            .password()
            .map(|p| format!("-p{p}"))
            .unwrap_or_default(),
        user.user
    );
    let script = script.replace("$ROTATE_PASSWORD", &rotate);
    let (_, out) = in_session_keyring(home.path(), &script);
    assert!(
        support::has_row(&out, &["true"]),
        "the first test logs in: {out}"
    );
    let second = out.split("ROTATE").nth(1).unwrap_or_default();
    assert!(
        support::has_row(second, &["true"]),
        "the rotated entry is read: {out}"
    );
    assert!(
        out.contains(&format!("keyring entry service '{service}', user 'reader'")),
        "a revoked entry is named: {out}"
    );

    // The store holds the reference, not the password.
    let db = store_bytes(home.path());
    assert!(contains(&db, &service));
    assert!(!contains(&db, "keyring-secret-pw") && !contains(&db, "keyring-second-pw"));
}

#[test]
fn an_environment_variable_resolves_in_each_new_process_and_a_missing_one_is_named() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let user = runtime.block_on(PasswordUser::create("env-secret-pw"));
    let home = tempfile::tempdir().unwrap();
    let variable = format!("QUARRY_TEST_PW_{}", user.database.to_uppercase());
    let config = user.config(json!({ "env": variable })).to_string();
    let run = |sql: &str, value: Option<&str>| {
        let mut command = support::quarry_command(home.path());
        command.args(["-c", sql]).stdin(std::process::Stdio::null());
        match value {
            Some(value) => command.env(&variable, value),
            None => command.env_remove(&variable),
        };
        let out = command.output().unwrap();
        (
            out.status.success(),
            support::text(&out.stdout) + &support::text(&out.stderr),
        )
    };

    let (ok, out) = run(
        &format!("SELECT name FROM create_connection('envpw', 'mysql', '{config}')"),
        Some("env-secret-pw"),
    );
    assert!(ok, "{out}");
    let test = "SELECT ok, error FROM test_connection('envpw')";
    let passes = "SELECT ok FROM test_connection('envpw')";
    let (_, out) = run(passes, Some("env-secret-pw"));
    assert!(support::has_row(&out, &["true"]), "{out}");

    // Not set in the next process: its name is in the message.
    let (_, out) = run(test, None);
    assert!(
        out.contains(&format!(
            "comes from the environment variable {variable}, which is not set"
        )),
        "{out}"
    );

    // Rotated: the next process logs in with the new value.
    runtime.block_on(user.set_password("env-second-pw"));
    let (_, out) = run(passes, Some("env-second-pw"));
    assert!(support::has_row(&out, &["true"]), "{out}");

    // The store holds the variable's name only.
    let db = store_bytes(home.path());
    assert!(contains(&db, &variable));
    assert!(!contains(&db, "env-secret-pw") && !contains(&db, "env-second-pw"));
}

#[tokio::test]
async fn replacing_a_stored_password_with_a_reference_removes_the_sealed_one() {
    let user = PasswordUser::create("sealed-then-file").await;
    let b = Backend::new(Kind::Sqlite).await;
    let engine = b.engine().await;
    engine
        .register_connection("swap", "mysql", user.config(json!("sealed-then-file")))
        .await
        .unwrap();
    assert_eq!(stored(&b, "swap").await.1, 1, "a value is sealed");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pw");
    write_secret(&file, "sealed-then-file");
    engine
        .update_connection("swap", json!({ "password": { "file": file } }))
        .await
        .unwrap();
    let (config, sealed) = stored(&b, "swap").await;
    assert_eq!(
        sealed, 0,
        "the sealed value is gone once a reference replaces it"
    );
    assert_eq!(config["password"], json!({ "file": file }));
    engine.test_connection("swap").await.unwrap();
}
