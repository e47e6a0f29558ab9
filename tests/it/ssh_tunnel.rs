//! PostgreSQL through an SSH tunnel, against a real OpenSSH server: queries pass through
//! it, host keys are checked against known_hosts, a refused login says so, and the tunnel
//! reopens after the SSH server restarts.

use serde_json::{Value, json};
use sqlx::{Connection, PgConnection};

use crate::support::sshd::{self, Sshd};
use crate::support::{Backend, Kind, PgDatabase, pg_source_config};

async fn source_db() -> PgDatabase {
    let db = PgDatabase::create().await;
    let mut admin = PgConnection::connect(&db.url).await.unwrap();
    sqlx::raw_sql("CREATE TABLE t (x int); INSERT INTO t SELECT generate_series(1, 100);")
        .execute(&mut admin)
        .await
        .unwrap();
    db
}

/// A live connection (every query goes to the server) to `db` through `ssh`.
fn config(db: &PgDatabase, ssh: Value) -> Value {
    let mut config = pg_source_config(&db.name);
    config["ssh"] = ssh;
    config["mode"] = json!("live");
    config["retry_budget"] = json!("0s");
    config
}

async fn sum(engine: &quarry::Engine, name: &str) -> quarry::Result<i64> {
    crate::support::single_i64(engine, &format!("SELECT sum(x) AS s FROM {name}.public.t")).await
}

#[tokio::test]
async fn a_query_goes_through_the_tunnel_and_the_tunnel_reopens_after_sshd_restarts() {
    let mut server = Sshd::start();
    let db = source_db().await;
    let b = Backend::new(Kind::Sqlite).await;
    let engine = b.engine().await;
    engine
        .create_connection("bastion", "postgres", config(&db, server.key_config()))
        .await
        .unwrap()
        .discovery
        .expect("discovery runs through the tunnel");
    assert_eq!(sum(&engine, "bastion").await.unwrap(), 5050);

    // The sessions were forwarded by the SSH server to the database's port.
    // (Its session processes write their log lines as they go: wait for the line.)
    let port = url::Url::parse(&db.url).unwrap().port().unwrap_or(5432);
    let forwarded = |log: &str| {
        log.lines().any(|l| {
            l.contains("direct_tcpip") && l.contains(&format!("target 127.0.0.1 port {port}"))
        })
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !forwarded(&server.log()) {
        assert!(std::time::Instant::now() < deadline, "{}", server.log());
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    // The SSH server restarts, dropping the session and every forwarded connection.
    server.restart();
    assert_eq!(
        sum(&engine, "bastion")
            .await
            .expect("the tunnel is reopened"),
        5050
    );

    // While it is down, a query fails with the SSH server's refusal, not a hang.
    server.stop();
    let down = sum(&engine, "bastion").await.unwrap_err();
    assert!(down.to_string().contains("SSH server"), "{down}");
}

#[tokio::test]
async fn a_password_login_works_and_a_wrong_password_or_key_is_an_authentication_error() {
    let server = Sshd::start();
    let db = source_db().await;
    let b = Backend::new(Kind::Sqlite).await;
    let engine = b.engine().await;
    let password_ssh = |password: &str| {
        json!({
            "host": "127.0.0.1",
            "port": server.port(),
            "user": sshd::USER,
            "auth": "password",
            "password": password,
            "known_hosts": server.known_hosts(),
        })
    };
    engine
        .register_connection(
            "by_password",
            "postgres",
            config(&db, password_ssh(sshd::PASSWORD)),
        )
        .await
        .unwrap();
    engine.discover_connection("by_password").await.unwrap();
    assert_eq!(sum(&engine, "by_password").await.unwrap(), 5050);

    engine
        .register_connection(
            "bad_password",
            "postgres",
            config(&db, password_ssh("wrong")),
        )
        .await
        .unwrap();
    let refused = engine.test_connection("bad_password").await.unwrap_err();
    assert_eq!(
        refused.failure_class(),
        Some(quarry::FailureClass::Authentication)
    );
    let text = refused.to_string();
    assert!(
        text.contains(&format!("refused user '{}' with password", sshd::USER)),
        "{text}"
    );

    // A key the server does not accept.
    let other_key = server.dir().join("other_key");
    sshd::keygen(&other_key);
    let mut ssh = server.key_config();
    ssh["key_path"] = json!(other_key);
    engine
        .register_connection("bad_key", "postgres", config(&db, ssh))
        .await
        .unwrap();
    let refused = engine.test_connection("bad_key").await.unwrap_err();
    assert_eq!(
        refused.failure_class(),
        Some(quarry::FailureClass::Authentication)
    );
    assert!(refused.to_string().contains("ssh.key_path"), "{refused}");
}

#[tokio::test]
async fn a_host_key_other_than_the_recorded_one_is_refused_and_an_unknown_one_too() {
    let server = Sshd::start();
    let db = source_db().await;
    let b = Backend::new(Kind::Sqlite).await;
    let engine = b.engine().await;

    // known_hosts records another key for this server.
    let impostor = server.dir().join("impostor");
    sshd::keygen(&impostor);
    let wrong = server.dir().join("wrong_known_hosts");
    std::fs::write(
        &wrong,
        format!(
            "[127.0.0.1]:{} {}",
            server.port(),
            std::fs::read_to_string(impostor.with_extension("pub")).unwrap()
        ),
    )
    .unwrap();
    let mut ssh = server.key_config();
    ssh["known_hosts"] = json!(wrong);
    engine
        .register_connection("changed", "postgres", config(&db, ssh))
        .await
        .unwrap();
    let refused = engine.test_connection("changed").await.unwrap_err();
    assert_eq!(refused.failure_class(), Some(quarry::FailureClass::HostKey));
    let text = refused.to_string();
    assert!(text.contains("differs from the one"), "{text}");
    assert!(text.contains("line 1"), "{text}");

    // A server known_hosts does not list is not trusted on first use.
    let empty = server.dir().join("empty_known_hosts");
    std::fs::write(&empty, "").unwrap();
    let mut ssh = server.key_config();
    ssh["known_hosts"] = json!(empty);
    engine
        .register_connection("unknown", "postgres", config(&db, ssh))
        .await
        .unwrap();
    let refused = engine.test_connection("unknown").await.unwrap_err();
    assert_eq!(refused.failure_class(), Some(quarry::FailureClass::HostKey));
    assert!(refused.to_string().contains("ssh-keyscan"), "{refused}");
    assert_eq!(
        std::fs::read_to_string(&empty).unwrap(),
        "",
        "nothing is learned"
    );
}

#[tokio::test]
async fn the_ssh_config_rules_say_what_is_missing() {
    let b = Backend::new(Kind::Sqlite).await;
    let engine = b.engine().await;
    let base = json!({"host": "db", "database": "d", "user": "u"});
    let with = |ssh: Value| {
        let mut config = base.clone();
        config["ssh"] = ssh;
        config
    };
    for (ssh, expected) in [
        (
            json!({"user": "me"}),
            "'ssh.host' is required when the SSH tunnel is on",
        ),
        (
            json!({"host": "bastion"}),
            "'ssh.user' is required when the SSH tunnel is on",
        ),
        (
            json!({"host": "bastion", "user": "me", "auth": "key"}),
            "'ssh.key_path' is required for key auth",
        ),
        (
            json!({"host": "bastion", "user": "me", "auth": "password"}),
            "'ssh.password' is required for password auth",
        ),
        (
            json!({"host": "bastion", "user": "me", "auth": "kerberos"}),
            "must be key, password or agent",
        ),
        (
            json!({"host": "bastion", "user": "me", "hots": 1}),
            "unknown key 'hots'",
        ),
    ] {
        let err = engine
            .register_connection("tunnelled", "postgres", with(ssh.clone()))
            .await
            .unwrap_err();
        assert!(err.to_string().contains(expected), "{ssh}: {err}");
        assert_eq!(err.field(), Some("ssh"), "{ssh}");
    }
    // Off: the rest of the object is kept but not checked.
    engine
        .register_connection(
            "off",
            "postgres",
            with(json!({"enabled": false, "user": "me"})),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn an_ssh_password_is_sealed_and_never_shown() {
    let b = Backend::new(Kind::Sqlite).await;
    let engine = b.engine().await;
    let config = json!({"host": "db", "database": "d", "user": "u", "ssh": {
        "host": "bastion", "user": "me", "auth": "password", "password": "ssh-secret-pw"}});
    let created = engine
        .register_connection("sealed_ssh", "postgres", config)
        .await
        .unwrap();
    assert_eq!(created.secret_fields, vec!["ssh.password".to_owned()]);
    assert!(!created.config.to_string().contains("ssh-secret-pw"));
    // The source sees it again, inside its ssh object.
    let full = engine.source_config("sealed_ssh").await.unwrap();
    let quarry::SourceConfig::Postgres(server) = full else {
        panic!("a PostgreSQL config")
    };
    let password = server.ssh.unwrap().password.unwrap();
    let value = password.resolve("sealed_ssh", "ssh.password").unwrap();
    assert_eq!(
        secrecy::ExposeSecret::expose_secret(&value),
        "ssh-secret-pw"
    );
}

#[tokio::test]
async fn a_mysql_connection_goes_through_the_tunnel_too() {
    let server = Sshd::start();
    let mut fixture = crate::support::MySqlSourceFixture::new().await;
    fixture
        .exec("CREATE TABLE t (x INT); INSERT INTO t VALUES (1), (2), (3);")
        .await;
    let mut config = crate::support::mysql_source_config(&fixture.name);
    config["ssh"] = server.key_config();
    config["mode"] = json!("live");
    fixture
        .engine
        .create_connection("my_ssh", "mysql", config)
        .await
        .unwrap()
        .discovery
        .expect("discovery runs through the tunnel");
    let total = crate::support::single_i64(
        &fixture.engine,
        &format!("SELECT sum(x) AS s FROM my_ssh.{}.t", fixture.name),
    )
    .await
    .unwrap();
    assert_eq!(total, 6);
    let admin = url::Url::parse(&crate::support::mysql_admin_url()).unwrap();
    let port = admin.port().unwrap_or(3306);
    assert!(
        server
            .log()
            .lines()
            .any(|l| l.contains("direct_tcpip") && l.contains(&format!("port {port}"))),
        "{}",
        server.log()
    );
}
