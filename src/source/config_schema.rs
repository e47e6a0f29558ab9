//! The description of each source type's config as a JSON Schema (draft 2020-12), served by
//! the REST API so that a form can be built from it: titles, help, defaults, required keys,
//! choices, credentials marked `writeOnly`, settings most users leave alone marked
//! `"x-advanced": true`, and the order to show keys in as `x-order`. Validation stays in `config.rs`; a unit test keeps the two naming
//! the same keys.

use serde_json::{Map, Value, json};

use crate::connection::SourceType;

/// How a form takes a field's value.
#[derive(Clone, Copy)]
enum Kind {
    Text,
    Integer,
    Boolean,
    /// `"30s"`, `"5m"`, or seconds as a number.
    Duration,
    /// `"256MiB"`, or bytes as a number.
    Size,
    /// A file on the server's machine.
    Path,
    /// A credential: written, never read back.
    Secret,
    /// One of the given words.
    Choice(&'static [&'static str]),
    /// A list of names or patterns.
    List,
    /// A JSON object (declared tables).
    Object,
}

/// One config key as a form shows it.
struct Field {
    key: &'static str,
    kind: Kind,
    title: &'static str,
    help: &'static str,
    default: Option<Value>,
    required: bool,
    advanced: bool,
}

const fn field(key: &'static str, kind: Kind, title: &'static str, help: &'static str) -> Field {
    Field {
        key,
        kind,
        title,
        help,
        default: None,
        required: false,
        advanced: true,
    }
}

impl Field {
    /// Shown up front, not folded away.
    fn basic(mut self) -> Self {
        self.advanced = false;
        self
    }

    fn required(mut self) -> Self {
        self.required = true;
        self.advanced = false;
        self
    }

    fn default(mut self, value: Value) -> Self {
        self.default = Some(value);
        self
    }

    fn schema(&self) -> Value {
        let mut schema = Map::new();
        let kind = match self.kind {
            Kind::Text | Kind::Path | Kind::Choice(_) => json!("string"),
            // A value, or a reference: {"env": ...}, {"file": ...}, {"keyring": {...}}.
            Kind::Secret => json!(["string", "object"]),
            Kind::Integer => json!("integer"),
            Kind::Boolean => json!("boolean"),
            Kind::Duration | Kind::Size => json!(["string", "number"]),
            Kind::List => json!("array"),
            Kind::Object => json!("object"),
        };
        schema.insert("type".into(), kind);
        schema.insert("title".into(), json!(self.title));
        schema.insert("description".into(), json!(self.help));
        match self.kind {
            Kind::Choice(words) => {
                schema.insert("enum".into(), json!(words));
            }
            Kind::Secret => {
                schema.insert("writeOnly".into(), json!(true));
                schema.insert("format".into(), json!("password"));
            }
            Kind::Duration => {
                schema.insert("format".into(), json!("duration"));
            }
            Kind::Size => {
                schema.insert("format".into(), json!("size"));
            }
            Kind::Path => {
                schema.insert("format".into(), json!("path"));
            }
            Kind::Integer if self.key == "port" => {
                schema.insert("minimum".into(), json!(1));
                schema.insert("maximum".into(), json!(65535));
            }
            Kind::List => {
                schema.insert("items".into(), json!({ "type": "string" }));
            }
            _ => {}
        }
        if let Some(default) = &self.default {
            schema.insert("default".into(), default.clone());
        }
        if self.advanced {
            schema.insert("x-advanced".into(), json!(true));
        }
        Value::Object(schema)
    }
}

/// The keys of a database server (PostgreSQL, MySQL).
fn server_fields(port: u16) -> Vec<Field> {
    vec![
        field(
            "host",
            Kind::Text,
            "Host",
            "The server's host name or address.",
        )
        .required(),
        field("port", Kind::Integer, "Port", "The server's TCP port.")
            .basic()
            .default(json!(port)),
        field("database", Kind::Text, "Database", "The database to read.").required(),
        field("user", Kind::Text, "User", "The user to log in as.").required(),
        field(
            "password",
            Kind::Secret,
            "Password",
            "Stored encrypted; never shown again.",
        )
        .basic(),
        field(
            "ssl_mode",
            Kind::Choice(&["disable", "prefer", "require", "verify-ca", "verify-full"]),
            "TLS",
            "Whether to use TLS, and how to check the server's certificate.",
        )
        .default(json!("prefer")),
        field(
            "ssl_root_cert",
            Kind::Path,
            "CA certificate",
            "The CA certificate that verify-ca and verify-full check the server against.",
        ),
        field(
            "keepalive_interval",
            Kind::Duration,
            "Keepalive",
            "How often an open connection is checked, so that a dropped server is noticed \
             and reconnected (0s: never).",
        )
        .default(json!("60s")),
        field(
            "ssh",
            Kind::Object,
            "SSH tunnel",
            "Reach the server through an SSH server: {host, port, user, auth (key, password or \
             agent), key_path, key_passphrase, password, known_hosts}. The server's host key \
             must be in known_hosts (default ~/.ssh/known_hosts).",
        ),
    ]
}

/// Timeouts and access modes, which every source takes.
fn common_fields() -> Vec<Field> {
    vec![
        field(
            "mode",
            Kind::Choice(&["auto", "cache", "live"]),
            "Access mode",
            "cache: queries read a local copy; live: every query goes to the source; auto: \
             small tables are copied, large ones read live while they are copied.",
        )
        .basic()
        .default(json!("auto")),
        field(
            "connect_timeout",
            Kind::Duration,
            "Connect timeout",
            "How long to wait for a connection.",
        )
        .default(json!("10s")),
        field(
            "statement_timeout",
            Kind::Duration,
            "Statement timeout",
            "The longest a statement may run at the source (default: no limit).",
        ),
        field(
            "max_age",
            Kind::Duration,
            "Maximum age",
            "A cached copy older than this is fetched again before a query reads it.",
        ),
        field(
            "inline_fetch_max",
            Kind::Size,
            "Copy-first limit",
            "In auto mode, tables up to this size are copied before the first query answers.",
        )
        .default(json!("256MiB")),
        field(
            "cache_max_bytes",
            Kind::Size,
            "Largest copy",
            "Tables larger than this are never copied and always read live.",
        ),
    ]
}

/// Retrying, for sources reached over a network.
fn retry_field() -> Field {
    field(
        "retry_budget",
        Kind::Duration,
        "Retry budget",
        "Time spent retrying a refused or dropped connection after the first try (0s: never).",
    )
    .default(json!("2s"))
}

/// How cached copies are refreshed.
fn refresh_fields() -> Vec<Field> {
    vec![
        field(
            "refresh",
            Kind::Choice(&["full", "append", "upsert"]),
            "Refresh mode",
            "full: fetch the table again; append: fetch rows past the cursor; upsert: fetch \
             rows changed since the cursor, keeping each key's latest.",
        )
        .basic()
        .default(json!("full")),
        field(
            "refresh_interval",
            Kind::Duration,
            "Refresh every",
            "How often a running server refreshes its cached tables, such as 5m.",
        )
        .basic(),
        field(
            "cursor_column",
            Kind::Text,
            "Cursor column",
            "The column append and upsert refreshes read past (a timestamp or growing id).",
        ),
        field(
            "overlap",
            Kind::Text,
            "Overlap",
            "How far below the cursor to read again, such as 5m or 100.",
        ),
        field(
            "full_every",
            Kind::Text,
            "Full refresh every",
            "A number of refreshes, or an age such as 1d, after which a refresh is full.",
        ),
        field(
            "on_stale",
            Kind::Choice(&["wait", "serve"]),
            "When stale",
            "wait: refresh first; serve: answer from the old copy and refresh behind.",
        )
        .default(json!("wait")),
        field(
            "on_schema_change",
            Kind::Choice(&["fail", "evolve"]),
            "When columns change",
            "fail: keep the old copy and report; evolve: discover the table again.",
        )
        .default(json!("fail")),
        field(
            "max_concurrent_refreshes",
            Kind::Integer,
            "Refreshes at once",
            "Scheduled refreshes of this connection that may run at the same time.",
        ),
    ]
}

/// How files are parsed.
fn format_fields() -> Vec<Field> {
    vec![
        field(
            "format",
            Kind::Choice(&["parquet", "arrow", "csv", "ndjson", "json"]),
            "Format",
            "The files' format (default: from each file's extension).",
        )
        .basic(),
        field(
            "compression",
            Kind::Choice(&["none", "gzip", "zstd"]),
            "Compression",
            "How CSV and JSON files are compressed (default: from the extension).",
        ),
        field(
            "header",
            Kind::Boolean,
            "Header row",
            "Whether CSV files start with a header.",
        )
        .default(json!(true)),
        field(
            "delimiter",
            Kind::Text,
            "Delimiter",
            "The CSV field separator.",
        )
        .default(json!(",")),
        field("quote", Kind::Text, "Quote", "The CSV quote character.").default(json!("\"")),
        field(
            "null_string",
            Kind::Text,
            "Null text",
            "The CSV text that stands for NULL.",
        ),
        field(
            "sample_rows",
            Kind::Integer,
            "Sample rows",
            "Rows read to infer a CSV or JSON schema.",
        )
        .default(json!(super::files::DEFAULT_SAMPLE_ROWS)),
        field(
            "bad_rows",
            Kind::Choice(&["fail", "skip"]),
            "Bad rows",
            "fail: a row that does not parse fails the read; skip: it is left out and counted.",
        )
        .default(json!("fail")),
    ]
}

/// Where the files are, and how to reach a bucket.
fn files_fields() -> Vec<Field> {
    vec![
        field(
            "url",
            Kind::Text,
            "URL",
            "Where the files are: a folder, file:///data/exports, s3://bucket/prefix or \
             https://host/file.csv.",
        )
        .required(),
        field(
            "glob",
            Kind::Text,
            "Files",
            "Only files matching this pattern become tables, such as **/*.parquet.",
        )
        .basic(),
        field("region", Kind::Text, "Region", "The bucket's region."),
        field(
            "endpoint",
            Kind::Text,
            "Endpoint",
            "An S3-compatible server's URL (MinIO, R2, ...).",
        ),
        field(
            "access_key_id",
            Kind::Text,
            "Access key id",
            "Leave empty to use the environment's credentials.",
        )
        .basic(),
        field(
            "secret_access_key",
            Kind::Secret,
            "Secret access key",
            "Stored encrypted; never shown again.",
        )
        .basic(),
        field(
            "session_token",
            Kind::Secret,
            "Session token",
            "For temporary credentials.",
        ),
        field(
            "path_style",
            Kind::Boolean,
            "Path-style URLs",
            "Address the bucket in the path (default: on with an endpoint).",
        ),
        field(
            "allow_http",
            Kind::Boolean,
            "Allow HTTP",
            "Allow an http:// endpoint (default: on for an http:// endpoint).",
        ),
        field(
            "tables",
            Kind::Object,
            "Declared tables",
            "Tables by name, each {\"glob\": ..., \"format\": ...}.",
        ),
    ]
}

fn fields(source_type: SourceType) -> Vec<Field> {
    let mut fields = match source_type {
        SourceType::Postgres => server_fields(5432),
        SourceType::Mysql => server_fields(3306),
        SourceType::Sqlite => vec![
            field(
                "path",
                Kind::Path,
                "Database file",
                "The SQLite file, on the server's machine.",
            )
            .required(),
        ],
        SourceType::Files => files_fields(),
    };
    fields.extend(common_fields());
    if matches!(source_type, SourceType::Postgres | SourceType::Mysql) {
        fields.push(retry_field());
    }
    match source_type {
        SourceType::Postgres => fields.push(field(
            "numeric_as_float64",
            Kind::Boolean,
            "numeric as float",
            "Read unconstrained numeric columns as 64-bit floats instead of exact text.",
        )),
        SourceType::Mysql => fields.push(field(
            "schemas",
            Kind::List,
            "Databases",
            "The databases to discover, each a name or a pattern with * (default: the \
             database above).",
        )),
        SourceType::Files => {
            fields.push(retry_field());
            fields.extend(format_fields());
        }
        SourceType::Sqlite => {}
    }
    fields.extend(refresh_fields());
    fields.extend(filter_fields());
    fields
}

/// Which tables discovery keeps.
fn filter_fields() -> Vec<Field> {
    vec![
        field(
            "include",
            Kind::List,
            "Include tables",
            "Patterns of the tables to keep, such as public.* or orders (default: all). A \
             pattern with a dot matches schema.table, one without the table's name.",
        ),
        field(
            "exclude",
            Kind::List,
            "Exclude tables",
            "Patterns of tables to leave out, even when included.",
        ),
    ]
}

/// The JSON Schema of `source_type`'s config.
pub fn json_schema(source_type: SourceType) -> Value {
    let fields = fields(source_type);
    // JSON objects carry no order: `x-order` gives the order a form shows the keys in.
    let properties: Map<String, Value> = fields
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let mut schema = f.schema();
            schema["x-order"] = json!(i);
            (f.key.to_owned(), schema)
        })
        .collect();
    let required: Vec<&str> = fields
        .iter()
        .filter(|f| f.required)
        .map(|f| f.key)
        .collect();
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": source_type.title(),
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": false,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn each_schema_names_exactly_the_keys_validation_accepts_and_marks_its_secrets() {
        for source_type in SourceType::ALL {
            let schema = json_schema(source_type);
            let properties = schema["properties"].as_object().unwrap();
            let described: BTreeSet<&str> = properties.keys().map(String::as_str).collect();
            let accepted: BTreeSet<&str> = source_type.config_keys().iter().copied().collect();
            assert_eq!(described, accepted, "{source_type:?}");
            let write_only: BTreeSet<&str> = properties
                .iter()
                .filter(|(_, p)| p["writeOnly"] == json!(true))
                .map(|(k, _)| k.as_str())
                .collect();
            let secret: BTreeSet<&str> = source_type
                .secret_keys()
                .iter()
                .copied()
                .filter(|key| !key.contains('.'))
                .collect();
            assert_eq!(write_only, secret, "{source_type:?}");
        }
    }

    #[test]
    fn the_defaults_in_the_schemas_are_values_validation_accepts() {
        for source_type in SourceType::ALL {
            let schema = json_schema(source_type);
            for (key, property) in schema["properties"].as_object().unwrap() {
                let Some(default) = property.get("default") else {
                    continue;
                };
                let mut config = match source_type {
                    SourceType::Sqlite => json!({ "path": "Cargo.toml" }),
                    SourceType::Files => json!({ "url": "s3://bucket/prefix" }),
                    _ => json!({ "host": "h", "database": "d", "user": "u" }),
                };
                config[key] = default.clone();
                if key == "refresh" {
                    // Its default, full, needs nothing else; the others need a cursor.
                    assert_eq!(default, "full");
                }
                super::super::SourceConfig::parse(source_type, &config)
                    .unwrap_or_else(|e| panic!("{source_type:?} {key} = {default}: {e}"));
            }
        }
    }
}
