//! Typed, validated connection configs. Each rule has its own message; credentials are
//! split out so the stored config never holds a secret.

use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use serde_json::{Map, Value};

use super::credential::Credential;
use super::files::FilesConfig;
pub use super::ssh::SshConfig;
use crate::access::AccessOptions;
use crate::connection::SourceType;
use crate::error::{Error, Result};

const SERVER_KEYS: &[&str] = &[
    "host",
    "port",
    "database",
    "user",
    "password",
    "ssl_mode",
    "ssl_root_cert",
    "connect_timeout",
    "statement_timeout",
    "retry_budget",
    "max_age",
    "mode",
    "inline_fetch_max",
    "cache_max_bytes",
    "ssh",
    "keepalive_interval",
];
/// PostgreSQL takes the server keys, the refresh keys and its own.
static POSTGRES_KEYS: std::sync::LazyLock<Vec<&'static str>> = std::sync::LazyLock::new(|| {
    [
        SERVER_KEYS,
        REFRESH_KEYS,
        FILTER_KEYS,
        &["numeric_as_float64"],
    ]
    .concat()
});
/// MySQL takes the server keys, the refresh keys and its own.
static MYSQL_KEYS: std::sync::LazyLock<Vec<&'static str>> =
    std::sync::LazyLock::new(|| [SERVER_KEYS, REFRESH_KEYS, FILTER_KEYS, &["schemas"]].concat());
/// SQLite takes its keys and the refresh keys.
static SQLITE_KEYS: std::sync::LazyLock<Vec<&'static str>> =
    std::sync::LazyLock::new(|| [SQLITE_OWN_KEYS, REFRESH_KEYS, FILTER_KEYS].concat());
const REFRESH_KEYS: &[&str] = crate::refresh::RefreshSettings::CONNECTION_KEYS;
/// Every source type takes the table filter's keys.
const FILTER_KEYS: &[&str] = super::table_filter::KEYS;
const SQLITE_OWN_KEYS: &[&str] = &[
    "path",
    "connect_timeout",
    "statement_timeout",
    "max_age",
    "mode",
    "inline_fetch_max",
    "cache_max_bytes",
];
/// A server's secrets; `ssh.` ones sit inside the `ssh` object.
const SERVER_SECRETS: &[&str] = &["password", "ssh.password", "ssh.key_passphrase"];
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time spent retrying a refused or dropped connection, past the first try: enough for a
/// server that is restarting, short enough that a server that is down is reported soon.
const DEFAULT_RETRY_BUDGET: Duration = Duration::from_secs(2);

impl SourceType {
    /// The config keys this source type accepts.
    pub fn config_keys(self) -> &'static [&'static str] {
        match self {
            SourceType::Postgres => &POSTGRES_KEYS,
            SourceType::Mysql => &MYSQL_KEYS,
            SourceType::Sqlite => &SQLITE_KEYS,
            SourceType::Files => &super::files::CONFIG_KEYS,
        }
    }

    /// The config keys holding credentials, stored encrypted and never shown; a key inside
    /// an object is written `object.key` (`ssh.password`).
    pub fn secret_keys(self) -> &'static [&'static str] {
        match self {
            SourceType::Postgres | SourceType::Mysql => SERVER_SECRETS,
            SourceType::Sqlite => &[],
            SourceType::Files => super::files::SECRET_KEYS,
        }
    }

    /// The config keys that say where the data is: changing one makes the cache stale.
    pub fn location_keys(self) -> &'static [&'static str] {
        match self {
            SourceType::Postgres | SourceType::Mysql => &["host", "port", "database"],
            SourceType::Sqlite => &["path"],
            SourceType::Files => super::files::LOCATION_KEYS,
        }
    }

    fn default_port(self) -> u16 {
        match self {
            SourceType::Mysql => 3306,
            _ => 5432,
        }
    }
}

/// A validated connection config for one source type.
#[derive(Clone, Debug)]
pub enum SourceConfig {
    /// A PostgreSQL server.
    Postgres(ServerConfig),
    /// A MySQL or MariaDB server.
    Mysql(ServerConfig),
    /// A SQLite file.
    Sqlite(SqliteConfig),
    /// A folder, bucket or URL of files.
    Files(FilesConfig),
}

/// Config of a database server source (PostgreSQL, MySQL/MariaDB).
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Host name or address.
    pub host: String,
    /// TCP port, 1-65535.
    pub port: u16,
    /// Database to read.
    pub database: String,
    /// User to log in as.
    pub user: String,
    /// Password, if any, or where to read it; `Debug` shows a value redacted.
    pub password: Option<Credential>,
    /// TLS policy.
    pub ssl_mode: SslMode,
    /// CA certificate for the verify-* modes.
    pub ssl_root_cert: Option<PathBuf>,
    /// Timeouts shared by every source.
    pub options: CommonOptions,
    /// PostgreSQL only: carry unconstrained `numeric` as float64 instead of exact text.
    pub numeric_as_float64: bool,
    /// MySQL only: the databases (MySQL's schemas) to discover, each a name or a pattern
    /// with `*`; empty means the configured `database` alone.
    pub schemas: Vec<String>,
    /// The SSH tunnel the server is reached through, if any.
    pub ssh: Option<SshConfig>,
}

/// Config of a SQLite file source.
#[derive(Clone, Debug)]
pub struct SqliteConfig {
    /// The database file.
    pub path: PathBuf,
    /// Timeouts shared by every source.
    pub options: CommonOptions,
}

/// Options every source understands.
#[derive(Clone, Debug, PartialEq)]
pub struct CommonOptions {
    /// How long to wait for a connection (default 10 s).
    pub connect_timeout: Duration,
    /// Longest a source statement may run (default: no limit).
    pub statement_timeout: Option<Duration>,
    /// Time spent retrying transient failures (refused, reset, timed out) after the first
    /// try, by test, discovery and fetch alike (default 2 s; `0s`: no retry).
    pub retry_budget: Duration,
    /// A cache entry older than this is fetched again before a statement reads it
    /// (default: never stale).
    pub max_age: Option<Duration>,
    /// How its tables are read: the default mode and `auto`'s size limits.
    pub access: AccessOptions,
}

impl CommonOptions {
    /// The `max_age` of a stored, validated config (`None`: never stale).
    pub fn max_age_of(source_type: SourceType, config: &Value) -> Option<Duration> {
        Fields::new(source_type, config)
            .ok()?
            .duration("max_age")
            .ok()
            .flatten()
    }

    /// The `keepalive_interval` of a stored, validated config (`None`: not given; zero:
    /// off).
    pub fn keepalive_of(source_type: SourceType, config: &Value) -> Option<Duration> {
        Fields::new(source_type, config)
            .ok()?
            .duration_or_zero("keepalive_interval")
            .ok()
            .flatten()
    }

    /// The access options of a stored, validated config (the defaults if unreadable).
    pub fn access_of(source_type: SourceType, config: &Value) -> AccessOptions {
        Fields::new(source_type, config)
            .and_then(|fields| fields.access())
            .unwrap_or_default()
    }
}

/// TLS policy of a server connection, named as libpq names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslMode {
    /// Never use TLS.
    Disable,
    /// Use TLS when the server offers it.
    Prefer,
    /// Require TLS, without checking the certificate.
    Require,
    /// Require TLS and a certificate signed by `ssl_root_cert`.
    VerifyCa,
    /// As `VerifyCa`, and the certificate must name the host.
    VerifyFull,
}

impl SslMode {
    const NAMES: &'static str = "disable, prefer, require, verify-ca, verify-full";

    fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => return None,
        })
    }

    /// The libpq name of the mode.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

impl SourceConfig {
    /// Validates `config` (a JSON object, secrets included) as a config of `source_type`.
    pub fn parse(source_type: SourceType, config: &Value) -> Result<Self> {
        let fields = Fields::new(source_type, config)?;
        let options = CommonOptions {
            connect_timeout: fields
                .duration("connect_timeout")?
                .unwrap_or(DEFAULT_CONNECT_TIMEOUT),
            statement_timeout: fields.duration("statement_timeout")?,
            retry_budget: fields
                .duration_or_zero("retry_budget")?
                .unwrap_or(DEFAULT_RETRY_BUDGET),
            max_age: fields.duration("max_age")?,
            access: fields.access()?,
        };
        fields.duration_or_zero("keepalive_interval")?;
        crate::refresh::RefreshSettings::from_config(config).map_err(|m| fields.error(m))?;
        super::TableFilter::parse(config).map_err(|(key, m)| fields.field_error(key, m))?;
        Ok(match source_type {
            SourceType::Postgres => SourceConfig::Postgres(fields.server(options)?),
            SourceType::Mysql => SourceConfig::Mysql(fields.server(options)?),
            SourceType::Sqlite => SourceConfig::Sqlite(SqliteConfig {
                path: fields.existing_file("path", "the SQLite database file")?,
                options,
            }),
            SourceType::Files => SourceConfig::Files(FilesConfig::parse(&fields, options)?),
        })
    }

    /// The source type of this config.
    pub fn source_type(&self) -> SourceType {
        match self {
            SourceConfig::Postgres(_) => SourceType::Postgres,
            SourceConfig::Mysql(_) => SourceType::Mysql,
            SourceConfig::Sqlite(_) => SourceType::Sqlite,
            SourceConfig::Files(_) => SourceType::Files,
        }
    }

    /// Validates `config` and splits it into the JSON object to store (no secrets) and the
    /// credential values to encrypt, by field name.
    pub fn split_secrets(
        source_type: SourceType,
        config: &Value,
    ) -> Result<(Value, Vec<(String, SecretString)>)> {
        let parsed = Self::parse(source_type, config)?;
        let mut public = config.as_object().cloned().unwrap_or_default();
        // Files are stored by absolute path: a relative one would change meaning with the
        // working directory of the next run.
        let files = match &parsed {
            SourceConfig::Sqlite(sqlite) => vec![("path", Some(&sqlite.path))],
            SourceConfig::Postgres(server) | SourceConfig::Mysql(server) => {
                vec![("ssl_root_cert", server.ssl_root_cert.as_ref())]
            }
            SourceConfig::Files(files) => {
                public.insert("url".into(), Value::String(files.url.to_string()));
                vec![]
            }
        };
        for (key, path) in files {
            if let Some(path) = path {
                public.insert(key.into(), Value::String(path.display().to_string()));
            }
        }
        // A value is sealed; a reference (an object) is not a secret and stays as given.
        let mut secrets = Vec::new();
        for key in source_type.secret_keys() {
            if let Some(Value::String(secret)) = secret_path::take(&mut public, key) {
                secrets.push((key.to_string(), SecretString::from(secret)));
            }
        }
        Ok((Value::Object(public), secrets))
    }
}

/// Applies `patch` to `base` as a JSON merge patch (RFC 7396) of a flat object: a key set to
/// `null` is removed, any other value replaces the old one.
pub(crate) fn merge_patch(base: &Value, patch: &Value, source_type: SourceType) -> Result<Value> {
    let Some(changes) = patch.as_object() else {
        return Err(not_an_object(source_type));
    };
    let mut merged = base.as_object().cloned().unwrap_or_default();
    for (key, value) in changes {
        if value.is_null() {
            merged.remove(key);
        } else {
            merged.insert(key.clone(), value.clone());
        }
    }
    Ok(Value::Object(merged))
}

/// The key other tools name `key` (libpq's `dbname`, JDBC's `username`, ...).
fn known_alias(key: &str) -> Option<&'static str> {
    Some(match key.to_ascii_lowercase().as_str() {
        "dbname" | "db" | "database_name" | "schema_name" => "database",
        "username" | "user_name" | "login" => "user",
        "pass" | "passwd" | "pwd" => "password",
        "hostname" | "server" | "addr" | "address" => "host",
        "file" | "filename" | "filepath" => "path",
        _ => return None,
    })
}

/// `config` with a `url` key (`postgres://user:password@host:5432/db?sslmode=require`)
/// spelled out as the keys it stands for. Keys given beside the URL must not contradict it.
pub fn expand_url(source_type: SourceType, config: &Value) -> Result<Value> {
    let Some(map) = config.as_object() else {
        return Err(not_an_object(source_type));
    };
    let Some(url) = map.get("url") else {
        return Ok(config.clone());
    };
    let bad = |message: String| Error::config(source_type.as_str(), message);
    let Value::String(text) = url else {
        return Err(bad(
            "'url' must be a string such as postgres://user@host:5432/db".into(),
        ));
    };
    let schemes: &[&str] = match source_type {
        SourceType::Postgres => &["postgres", "postgresql"],
        SourceType::Mysql => &["mysql", "mariadb"],
        SourceType::Sqlite => &["sqlite", "file"],
        // A files connection's `url` is its own key: where the files are.
        SourceType::Files => return Ok(config.clone()),
    };
    // Never echo the URL: it may hold a password.
    let parsed = url::Url::parse(text).map_err(|e| {
        bad(format!(
            "'url' is not a URL ({e}); write {}://user@host:port/database",
            schemes[0]
        ))
    })?;
    if !schemes.contains(&parsed.scheme()) {
        return Err(bad(format!(
            "'url' has the scheme '{}'; a {} URL starts with {}://",
            parsed.scheme(),
            source_type.as_str(),
            schemes.join(":// or ")
        )));
    }
    let decode = |part: &str| {
        percent_encoding::percent_decode_str(part)
            .decode_utf8()
            .map(|text| text.into_owned())
            .map_err(|_| bad("'url' has a percent-escape that is not UTF-8".into()))
    };
    let mut expanded = Map::new();
    if source_type == SourceType::Sqlite {
        expanded.insert("path".into(), Value::String(decode(parsed.path())?));
    } else {
        if let Some(host) = parsed.host_str().filter(|h| !h.is_empty()) {
            let host = host.trim_start_matches('[').trim_end_matches(']');
            expanded.insert("host".into(), Value::String(host.to_owned()));
        }
        if let Some(port) = parsed.port() {
            expanded.insert("port".into(), Value::from(port));
        }
        let database = parsed.path().trim_start_matches('/');
        if !database.is_empty() {
            expanded.insert("database".into(), Value::String(decode(database)?));
        }
        if !parsed.username().is_empty() {
            expanded.insert("user".into(), Value::String(decode(parsed.username())?));
        }
        if let Some(password) = parsed.password() {
            expanded.insert("password".into(), Value::String(decode(password)?));
        }
    }
    for (key, value) in parsed.query_pairs() {
        let key = match key.as_ref() {
            "sslmode" | "ssl-mode" => "ssl_mode".to_owned(),
            other => other.to_owned(),
        };
        expanded.insert(key, Value::String(value.into_owned()));
    }
    let mut result = map.clone();
    result.remove("url");
    for (key, value) in expanded {
        match result.get(&key) {
            Some(given)
                if given.to_string().trim_matches('"') != value.to_string().trim_matches('"') =>
            {
                return Err(bad(format!(
                    "'{key}' is given both in 'url' and beside it, differently; give it once"
                )));
            }
            _ => {
                result.insert(key, value);
            }
        }
    }
    Ok(Value::Object(result))
}

fn not_an_object(source_type: SourceType) -> Error {
    let example = match source_type {
        SourceType::Sqlite => r#"{"path": "/data/app.db"}"#,
        SourceType::Files => r#"{"url": "s3://bucket/exports"}"#,
        _ => r#"{"host": "localhost", "database": "sales", "user": "reader"}"#,
    };
    Error::config(
        source_type.as_str(),
        format!("the config must be a JSON object, such as {example}"),
    )
}

/// Typed access to a config object's fields, each failure with its own message.
pub(super) struct Fields<'a> {
    source_type: SourceType,
    pub(super) map: &'a Map<String, Value>,
}

impl<'a> Fields<'a> {
    pub(super) fn new(source_type: SourceType, config: &'a Value) -> Result<Self> {
        let map = config
            .as_object()
            .ok_or_else(|| not_an_object(source_type))?;
        check_keys(map, source_type.config_keys())
            .map_err(|(key, message)| Error::config_field(source_type.as_str(), &key, message))?;
        Ok(Fields { source_type, map })
    }

    pub(super) fn error(&self, message: String) -> Error {
        Error::config(self.source_type.as_str(), message)
    }

    /// An error about the key `key`.
    pub(super) fn field_error(&self, key: &str, message: String) -> Error {
        Error::config_field(self.source_type.as_str(), key, message)
    }

    fn is_secret(&self, key: &str) -> bool {
        self.source_type.secret_keys().contains(&key)
    }

    /// A secret field: a value, or a reference to where it is kept.
    pub(super) fn credential(&self, key: &str) -> Result<Option<Credential>> {
        match self.map.get(key) {
            None => Ok(None),
            Some(value) => Credential::parse(key, value).map_err(|m| self.field_error(key, m)),
        }
    }

    /// A string field; never echoes the value of a secret field.
    pub(super) fn string(&self, key: &str) -> Result<Option<String>> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.is_empty() && !self.is_secret(key) => {
                Err(self.field_error(key, format!("'{key}' must not be empty")))
            }
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) if self.is_secret(key) => Err(self.field_error(
                key,
                format!("'{key}' must be a string, got a {}", json_kind(other)),
            )),
            Some(other) => {
                Err(self.field_error(key, format!("'{key}' must be a string, got {other}")))
            }
        }
    }

    pub(super) fn required_string(&self, key: &str, what: &str) -> Result<String> {
        self.string(key)?
            .ok_or_else(|| self.field_error(key, format!("'{key}' is required: {what}")))
    }

    fn port(&self) -> Result<u16> {
        let default = self.source_type.default_port();
        match self.map.get("port") {
            None | Some(Value::Null) => Ok(default),
            Some(Value::Number(n)) => match n.as_i64() {
                Some(p) if (1..=65535).contains(&p) => Ok(p as u16),
                _ => Err(self.field_error(
                    "port",
                    format!("'port' must be between 1 and 65535, got {n}"),
                )),
            },
            // "5432" as environment variables and URLs give it.
            Some(Value::String(text)) => match text.trim().parse::<u16>() {
                Ok(p) if p >= 1 => Ok(p),
                _ => Err(self.field_error(
                    "port",
                    format!("'port' must be an integer between 1 and 65535, got \"{text}\""),
                )),
            },
            Some(other) => Err(self.field_error(
                "port",
                format!("'port' must be an integer between 1 and 65535, got {other}"),
            )),
        }
    }

    /// A `true`/`false` field (also as text, as environment variables and URLs give it).
    pub(super) fn boolean(&self, key: &str) -> Result<Option<bool>> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(Value::String(s)) if s == "true" || s == "false" => Ok(Some(s == "true")),
            Some(other) => {
                Err(self.field_error(key, format!("'{key}' must be true or false, got {other}")))
            }
        }
    }

    fn duration(&self, key: &str) -> Result<Option<Duration>> {
        match self.duration_or_zero(key)? {
            Some(duration) if duration.is_zero() => {
                Err(self.field_error(key, format!("'{key}' must be greater than zero")))
            }
            other => Ok(other),
        }
    }

    /// A duration where zero means "none" (a retry budget of `0s`: never retry).
    fn duration_or_zero(&self, key: &str) -> Result<Option<Duration>> {
        let bad = |got: &Value| {
            self.field_error(
                key,
                format!(
                    "'{key}' must be a positive duration: seconds as a number, or text such as \
                 \"30s\", \"500ms\" or \"2m\"; got {got}"
                ),
            )
        };
        let duration = match self.map.get(key) {
            None | Some(Value::Null) => return Ok(None),
            Some(v @ Value::Number(n)) => n
                .as_f64()
                .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
                .ok_or_else(|| bad(v))?,
            Some(v @ Value::String(s)) => match s.trim().parse::<u64>() {
                Ok(secs) => Duration::from_secs(secs),
                Err(_) => humantime::parse_duration(s.trim()).map_err(|_| bad(v))?,
            },
            Some(other) => return Err(bad(other)),
        };
        Ok(Some(duration))
    }

    fn access(&self) -> Result<AccessOptions> {
        let defaults = AccessOptions::default();
        let present = |key: &str| self.map.get(key).filter(|v| !v.is_null());
        let mode = match present("mode") {
            Some(value) => {
                crate::access::parse_mode(value, "mode").map_err(|m| self.field_error("mode", m))?
            }
            None => defaults.mode,
        };
        let size = |key: &str| {
            present(key)
                .map(|value| {
                    crate::access::parse_bytes(value, key).map_err(|m| self.field_error(key, m))
                })
                .transpose()
        };
        Ok(AccessOptions {
            mode,
            inline_fetch_max: size("inline_fetch_max")?.unwrap_or(defaults.inline_fetch_max),
            cache_max_bytes: size("cache_max_bytes")?,
        })
    }

    fn existing_file(&self, key: &str, what: &str) -> Result<PathBuf> {
        let path = PathBuf::from(self.required_string(key, what)?);
        self.check_file(key, path)
    }

    fn check_file(&self, key: &str, path: PathBuf) -> Result<PathBuf> {
        match std::fs::metadata(&path) {
            // Absolute, so the connection works from any working directory later.
            Ok(meta) if meta.is_file() => Ok(std::fs::canonicalize(&path).unwrap_or(path)),
            Ok(_) => Err(self.field_error(
                key,
                format!(
                    "'{key}' must name a file, but '{}' is a directory",
                    path.display()
                ),
            )),
            Err(_) => Err(self.field_error(
                key,
                format!(
                    "'{key}' file '{}' does not exist or cannot be read",
                    path.display()
                ),
            )),
        }
    }

    fn server(&self, options: CommonOptions) -> Result<ServerConfig> {
        let host = self.required_string("host", "the server's host name or address")?;
        let port = self.port()?;
        let database = self.required_string("database", "the database to read")?;
        let user = self.required_string("user", "the user to log in as")?;
        let password = self.credential("password")?;
        let ssl_mode = match self.string("ssl_mode")? {
            None => SslMode::Prefer,
            Some(mode) => SslMode::parse(&mode).ok_or_else(|| {
                self.field_error(
                    "ssl_mode",
                    format!("'ssl_mode' must be one of {}, got '{mode}'", SslMode::NAMES),
                )
            })?,
        };
        let ssl_root_cert = match self.string("ssl_root_cert")? {
            Some(path) => Some(self.check_file("ssl_root_cert", PathBuf::from(path))?),
            None => None,
        };
        if matches!(ssl_mode, SslMode::VerifyCa | SslMode::VerifyFull) && ssl_root_cert.is_none() {
            return Err(self.field_error(
                "ssl_root_cert",
                format!(
                    "ssl_mode '{}' needs 'ssl_root_cert', the path of the CA certificate to verify \
                 the server with",
                    ssl_mode.as_str()
                ),
            ));
        }
        let numeric_as_float64 = self.boolean("numeric_as_float64")?.unwrap_or(false);
        let schemas =
            match self.map.get("schemas") {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Array(items)) if !items.is_empty() => items
                    .iter()
                    .map(|item| {
                        match item {
                    Value::String(name) if !name.trim().is_empty() => Ok(name.clone()),
                    other => Err(self.field_error("schemas", format!(
                        "each entry of 'schemas' must be a database name or a pattern with *, \
                         got {other}"
                    ))),
                }
                    })
                    .collect::<Result<_>>()?,
                Some(other) => {
                    return Err(self.field_error("schemas", format!(
                    "'schemas' must be a non-empty list of database names or patterns with *, \
                     such as [\"sales\", \"archive_*\"]; got {other}"
                )));
                }
            };
        let ssh = match self.map.get("ssh") {
            None | Some(Value::Null) => None,
            Some(value) => SshConfig::parse(value).map_err(|m| self.field_error("ssh", m))?,
        };
        Ok(ServerConfig {
            ssh,
            numeric_as_float64,
            schemas,
            host,
            port,
            database,
            user,
            password,
            ssl_mode,
            ssl_root_cert,
            options,
        })
    }
}

/// Refuses the first key of `map` not in `valid`, suggesting the key it may have meant.
pub(super) fn check_keys(
    map: &Map<String, Value>,
    valid: &[&str],
) -> std::result::Result<(), (String, String)> {
    for key in map.keys() {
        if !valid.contains(&key.as_str()) {
            let suggestion = known_alias(key)
                .filter(|k| valid.contains(k))
                .or_else(|| {
                    valid
                        .iter()
                        .filter(|k| strsim::damerau_levenshtein(k, key) <= 2)
                        .min_by_key(|k| strsim::damerau_levenshtein(k, key))
                        .copied()
                })
                .map(|k| format!(" (did you mean '{k}'?)"))
                .unwrap_or_default();
            return Err((
                key.clone(),
                format!(
                    "unknown key '{key}'{suggestion}; valid keys: {}",
                    valid.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Secret keys inside objects: `ssh.password` is the `password` of the `ssh` object.
pub(crate) mod secret_path {
    use serde_json::{Map, Value};

    /// Removes and returns the value at `path` if it is a string (a reference stays).
    pub fn take(map: &mut Map<String, Value>, path: &str) -> Option<Value> {
        let (parent, key) = match path.split_once('.') {
            Some((object, key)) => (map.get_mut(object)?.as_object_mut()?, key),
            None => (map, path),
        };
        match parent.get(key) {
            Some(Value::String(_)) => parent.remove(key),
            _ => None,
        }
    }

    /// The value at `path`, if any.
    pub fn get<'a>(map: &'a Value, path: &str) -> Option<&'a Value> {
        match path.split_once('.') {
            Some((object, key)) => map.get(object)?.get(key),
            None => map.get(path),
        }
    }

    /// Sets `path` to `value`; an `object.key` path whose object is absent is not set (the
    /// secret belongs to a part of the config that was removed).
    pub fn set(map: &mut Value, path: &str, value: Value) {
        match path.split_once('.') {
            Some((object, key)) => {
                if let Some(parent) = map.get_mut(object).and_then(Value::as_object_mut) {
                    parent.insert(key.to_owned(), value);
                }
            }
            None => {
                if let Some(map) = map.as_object_mut() {
                    map.insert(path.to_owned(), value);
                }
            }
        }
    }
}
