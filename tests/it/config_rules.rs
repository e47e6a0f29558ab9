//! Every connection-config rule, each with its own message.

use quarry::{SourceConfig, SourceType};
use serde_json::{Value, json};

fn error(source_type: &str, config: Value) -> String {
    SourceConfig::parse(SourceType::parse(source_type).unwrap(), &config)
        .unwrap_err()
        .to_string()
}

fn server(extra: Value) -> Value {
    let mut base = json!({"host": "localhost", "database": "sales", "user": "reader"});
    for (k, v) in extra.as_object().unwrap() {
        if v.is_null() {
            base.as_object_mut().unwrap().remove(k);
        } else {
            base[k] = v.clone();
        }
    }
    base
}

#[test]
fn a_valid_server_config_gets_defaults() {
    let SourceConfig::Postgres(pg) =
        SourceConfig::parse(SourceType::Postgres, &server(json!({}))).unwrap()
    else {
        panic!("postgres config expected")
    };
    assert_eq!(pg.port, 5432);
    assert_eq!(pg.ssl_mode.as_str(), "prefer");
    assert_eq!(
        pg.options.connect_timeout,
        std::time::Duration::from_secs(10)
    );
    assert_eq!(pg.options.statement_timeout, None);
    let SourceConfig::Mysql(my) = SourceConfig::parse(
        SourceType::Mysql,
        &server(json!({"statement_timeout": "1m 30s", "connect_timeout": 2.5})),
    )
    .unwrap() else {
        panic!("mysql config expected")
    };
    assert_eq!(my.port, 3306);
    assert_eq!(
        my.options.statement_timeout,
        Some(std::time::Duration::from_secs(90))
    );
    assert_eq!(
        my.options.connect_timeout,
        std::time::Duration::from_millis(2500)
    );
}

#[test]
fn the_config_must_be_an_object() {
    assert_eq!(
        error("postgres", json!("host=localhost")),
        "invalid postgres connection config: the config must be a JSON object, such as \
         {\"host\": \"localhost\", \"database\": \"sales\", \"user\": \"reader\"}"
    );
}

#[test]
fn unknown_keys_list_the_valid_keys() {
    assert_eq!(
        error("postgres", server(json!({"hots": "x"}))),
        "invalid postgres connection config: unknown key 'hots' (did you mean 'host'?); valid \
         keys: host, port, database, user, password, ssl_mode, ssl_root_cert, connect_timeout, \
         statement_timeout, retry_budget, max_age, mode, inline_fetch_max, cache_max_bytes, \
         ssh, keepalive_interval, refresh, cursor_column, overlap, full_every, refresh_interval, on_stale, \
         on_schema_change, max_concurrent_refreshes, include, exclude, numeric_as_float64"
    );
    assert_eq!(
        error("sqlite", json!({"file": "/x"})),
        "invalid sqlite connection config: unknown key 'file' (did you mean 'path'?); valid \
         keys: path, connect_timeout, statement_timeout, max_age, mode, inline_fetch_max, \
         cache_max_bytes, refresh, cursor_column, overlap, full_every, refresh_interval, \
         on_stale, on_schema_change, max_concurrent_refreshes, include, exclude"
    );
}

#[test]
fn refresh_defaults_are_checked_with_the_config() {
    for (config, expected) in [
        (
            json!({"refresh": "often"}),
            "'refresh' must be one of full, append, upsert, got \"often\"",
        ),
        (
            json!({"refresh_interval": "500ms"}),
            "'refresh_interval' must be a duration of 1s or more",
        ),
        (
            json!({"on_stale": "later"}),
            "'on_stale' must be one of wait, serve",
        ),
        (
            json!({"max_concurrent_refreshes": 0}),
            "'max_concurrent_refreshes' must be a count from 1 to 64",
        ),
        (
            json!({"overlap": "a while"}),
            "'overlap' must be a number of the cursor's units",
        ),
    ] {
        let message = error("postgres", server(config.clone()));
        assert!(message.contains(expected), "{config}: {message}");
    }
}

#[test]
fn host_database_and_user_are_required() {
    for (key, what) in [
        ("host", "the server's host name or address"),
        ("database", "the database to read"),
        ("user", "the user to log in as"),
    ] {
        assert_eq!(
            error("mysql", server(json!({key: null}))),
            format!("invalid mysql connection config: '{key}' is required: {what}")
        );
        assert_eq!(
            error("postgres", server(json!({key: ""}))),
            format!("invalid postgres connection config: '{key}' must not be empty")
        );
    }
}

#[test]
fn strings_must_be_strings() {
    assert_eq!(
        error("postgres", server(json!({"host": 42}))),
        "invalid postgres connection config: 'host' must be a string, got 42"
    );
}

#[test]
fn a_password_of_the_wrong_type_is_not_echoed() {
    assert_eq!(
        error("postgres", server(json!({"password": 123456}))),
        "invalid postgres connection config: 'password' must be a string or a reference: \
         {\"env\": \"NAME\"}, {\"file\": \"/path\"} or {\"keyring\": {\"service\": \"...\", \"user\": \"...\"}}"
    );
}

#[test]
fn the_port_must_be_in_range() {
    for bad in [json!(0), json!(65536), json!(-1)] {
        assert_eq!(
            error("postgres", server(json!({"port": bad.clone()}))),
            format!(
                "invalid postgres connection config: 'port' must be between 1 and 65535, got {bad}"
            )
        );
    }
    // A string holding the number is taken, as environment variables give it.
    assert!(SourceConfig::parse(SourceType::Postgres, &server(json!({"port": "5432"}))).is_ok());
    for bad in ["fifty", "0", "65536", ""] {
        assert_eq!(
            error("postgres", server(json!({"port": bad}))),
            format!(
                "invalid postgres connection config: 'port' must be an integer between 1 and \
                 65535, got \"{bad}\""
            )
        );
    }
    assert!(SourceConfig::parse(SourceType::Postgres, &server(json!({"port": 65535}))).is_ok());
    assert!(SourceConfig::parse(SourceType::Postgres, &server(json!({"port": 1}))).is_ok());
}

#[test]
fn ssl_mode_must_be_a_known_mode() {
    assert_eq!(
        error("postgres", server(json!({"ssl_mode": "strict"}))),
        "invalid postgres connection config: 'ssl_mode' must be one of disable, prefer, require, \
         verify-ca, verify-full, got 'strict'"
    );
    for ok in ["disable", "prefer", "require"] {
        assert!(
            SourceConfig::parse(SourceType::Postgres, &server(json!({"ssl_mode": ok}))).is_ok()
        );
    }
}

#[test]
fn verify_modes_need_a_root_certificate() {
    for mode in ["verify-ca", "verify-full"] {
        assert_eq!(
            error("mysql", server(json!({"ssl_mode": mode}))),
            format!(
                "invalid mysql connection config: ssl_mode '{mode}' needs 'ssl_root_cert', the \
                 path of the CA certificate to verify the server with"
            )
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("ca.pem");
    std::fs::write(&cert, "-----BEGIN CERTIFICATE-----\n").unwrap();
    let config =
        server(json!({"ssl_mode": "verify-full", "ssl_root_cert": cert.to_str().unwrap()}));
    assert!(SourceConfig::parse(SourceType::Postgres, &config).is_ok());
}

#[test]
fn the_root_certificate_must_exist() {
    assert_eq!(
        error(
            "postgres",
            server(json!({"ssl_mode": "verify-ca", "ssl_root_cert": "/nonexistent/ca.pem"}))
        ),
        "invalid postgres connection config: 'ssl_root_cert' file '/nonexistent/ca.pem' does not \
         exist or cannot be read"
    );
}

#[test]
fn sqlite_needs_an_existing_file() {
    assert_eq!(
        error("sqlite", json!({})),
        "invalid sqlite connection config: 'path' is required: the SQLite database file"
    );
    assert_eq!(
        error("sqlite", json!({"path": "/nonexistent/app.db"})),
        "invalid sqlite connection config: 'path' file '/nonexistent/app.db' does not exist or \
         cannot be read"
    );
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(
        error("sqlite", json!({"path": dir.path().to_str().unwrap()})),
        format!(
            "invalid sqlite connection config: 'path' must name a file, but '{}' is a directory",
            dir.path().display()
        )
    );
    let file = crate::support::sqlite_file(dir.path());
    assert!(SourceConfig::parse(SourceType::Sqlite, &json!({"path": file})).is_ok());
}

#[test]
fn timeouts_must_be_positive_durations() {
    assert_eq!(
        error("postgres", server(json!({"connect_timeout": "soon"}))),
        "invalid postgres connection config: 'connect_timeout' must be a positive duration: \
         seconds as a number, or text such as \"30s\", \"500ms\" or \"2m\"; got \"soon\""
    );
    assert_eq!(
        error("postgres", server(json!({"statement_timeout": -5}))),
        "invalid postgres connection config: 'statement_timeout' must be a positive duration: \
         seconds as a number, or text such as \"30s\", \"500ms\" or \"2m\"; got -5"
    );
    assert_eq!(
        error("mysql", server(json!({"connect_timeout": 0}))),
        "invalid mysql connection config: 'connect_timeout' must be greater than zero"
    );
}

#[test]
fn unknown_source_types_are_listed() {
    assert_eq!(
        SourceType::parse("oracle").unwrap_err().to_string(),
        "unknown source type 'oracle'; valid source types: postgres, mysql, sqlite, files"
    );
}

#[test]
fn numeric_as_float64_is_a_postgres_boolean() {
    assert_eq!(
        error("postgres", server(json!({"numeric_as_float64": "yes"}))),
        "invalid postgres connection config: 'numeric_as_float64' must be true or false, got \"yes\""
    );
    assert!(
        error("mysql", server(json!({"numeric_as_float64": true})))
            .contains("unknown key 'numeric_as_float64'")
    );
    let SourceConfig::Postgres(pg) = SourceConfig::parse(
        SourceType::Postgres,
        &server(json!({"numeric_as_float64": true})),
    )
    .unwrap() else {
        panic!("postgres config expected")
    };
    assert!(pg.numeric_as_float64);
}
