//! What the HTTP API reads and writes. The OpenAPI document is generated from these types,
//! so the document and the wire format cannot drift apart.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::access::AccessOptions;
use crate::connection::Connection;
pub use crate::connections::TableFreshness;
use crate::connections::health::LinkStatus;
pub use crate::engine::{DiscoveryOutcome, PurgeOutcome, RefreshOutcome, TestReport};
use crate::table::{CacheEntry, TableRecord};

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// The error itself.
    pub error: ErrorDetail,
}

/// A machine-readable code and a message for people.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// What kind of error: bad_request, validation_failed, unauthenticated, not_found,
    /// conflict, payload_too_large, method_not_allowed, source_unavailable,
    /// resources_exhausted or internal.
    pub code: String,
    /// What was wrong and what to do about it.
    pub message: String,
    /// The connection config key the error concerns, where it concerns one: the key a
    /// validation rule is about, or the one a source's refusal points at (`password` for a
    /// failed login).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// `POST /connections`: a new connection.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateConnection {
    /// The connection's name, also its SQL catalog name: `[a-z_][a-z0-9_]{0,62}`.
    pub name: String,
    /// postgres (or postgresql), mysql (or mariadb), or sqlite.
    pub source_type: String,
    /// The source type's settings, such as host, port, database, user, password or path.
    #[schema(value_type = Object)]
    pub config: Map<String, Value>,
    /// Who sees it: public (the default), private (you and admins) or locked (everyone
    /// sees and queries it, only admins change it).
    pub visibility: Option<String>,
}

/// `PUT /connections/{id}`: a new name, config changes, or both.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateConnection {
    /// The new name.
    pub name: Option<String>,
    /// A JSON merge patch of the config: keys given replace their values, keys set to null
    /// are removed, keys left out (the password too) keep theirs. Changing host, port,
    /// database or path drops the connection's cache.
    #[schema(value_type = Option<Object>)]
    pub config: Option<Map<String, Value>>,
    /// Who sees it: public (everyone), private (its owner and admins) or locked (everyone
    /// sees and queries it, only admins change it). Its owner or an admin sets it.
    pub visibility: Option<String>,
}

/// One source type and the description of its config.
#[derive(Debug, Serialize, ToSchema)]
pub struct SourceTypeInfo {
    /// Its name, as `source_type` takes it.
    pub source_type: String,
    /// The name people know it by.
    pub title: String,
    /// Its config as a JSON Schema (draft 2020-12): `title`, `description` and `default` of
    /// each key, `required` keys, `enum` choices, credentials marked `writeOnly`, and
    /// settings most users leave alone marked `"x-advanced": true`, and the order to show
    /// keys in as `x-order`.
    #[schema(value_type = Object)]
    pub config_schema: Value,
}

/// `POST /connection-tests`: settings to try before they are saved.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfigTest {
    /// postgres (or postgresql), mysql (or mariadb), sqlite or files.
    pub source_type: String,
    /// The settings. With `connection_id`, a JSON merge patch of that connection's config:
    /// credentials left out keep their stored values.
    #[schema(value_type = Object)]
    pub config: Map<String, Value>,
    /// The connection being edited, if any.
    pub connection_id: Option<String>,
    /// The name the connection will have, for the messages.
    pub name: Option<String>,
}

/// A connection's last test.
#[derive(Debug, Serialize, ToSchema)]
pub struct TestState {
    /// untested, ok or failed.
    pub state: String,
    /// When it was last tested (RFC 3339).
    pub last_tested_at: Option<String>,
    /// Round trip of the last successful test.
    pub latency_ms: Option<i64>,
    /// The server version the last successful test saw.
    pub server_version: Option<String>,
    /// Why the last test failed.
    pub error: Option<String>,
}

/// A connection's live status in the server process: `idle` (not open), `connected`,
/// `reconnecting`, `disconnected` or `error`.
#[derive(Debug, Serialize, ToSchema)]
pub struct LiveState {
    /// Where it stands.
    pub state: String,
    /// Since when (RFC 3339).
    pub since: String,
    /// The class of the failure that put it there (`refused`, `authentication`, ...).
    pub error_class: Option<String>,
    /// The failure's message.
    pub error: Option<String>,
}

/// One line of `GET /connections`. Holds no config, so no secret.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConnectionSummary {
    /// The connection's id, the only way to address it.
    pub id: String,
    /// Its name, also its SQL catalog name.
    pub name: String,
    /// Its source type.
    pub source_type: String,
    /// Its last test.
    pub status: TestState,
    /// Its live status: checked every keepalive_interval while open.
    pub live: LiveState,
    /// The user who created it (`local` for the shell and library).
    pub owner: String,
    /// public, private or locked.
    pub visibility: String,
    /// How many tables discovery found.
    pub tables: i64,
    /// How many of them are cached.
    pub tables_cached: i64,
    /// When the oldest of its cached copies was fetched (RFC 3339): how fresh its cache is.
    pub oldest_fetch_at: Option<String>,
    /// When it was created (RFC 3339).
    pub created_at: String,
    /// When it was last changed (RFC 3339).
    pub updated_at: String,
}

/// `GET /connections/{id}`: a connection with its config. Credentials are never shown:
/// each is replaced by `<field>_set` (`"password_set": true`).
#[derive(Debug, Serialize, ToSchema)]
pub struct ConnectionDetails {
    /// Everything the list shows.
    #[serde(flatten)]
    pub summary: ConnectionSummary,
    /// The config without credentials.
    #[schema(value_type = Object)]
    pub config: Map<String, Value>,
}

/// What discovery did (also part of the answer to `POST /connections`).
#[derive(Debug, Serialize, ToSchema)]
pub struct DiscoveryResult {
    /// Whether discovery reached the source.
    pub ok: bool,
    /// What changed (all zero when discovery failed).
    #[serde(flatten)]
    pub outcome: DiscoveryOutcome,
    /// Why discovery failed.
    pub error: Option<ErrorDetail>,
}

/// `POST /connections` answer: the connection as created, and how discovery went. The
/// connection exists even when discovery failed.
#[derive(Debug, Serialize, ToSchema)]
pub struct Created {
    /// The new connection.
    pub connection: ConnectionDetails,
    /// Discovery's outcome.
    pub discovery: DiscoveryResult,
}

/// The cached copy of a table.
#[derive(Debug, Serialize, ToSchema)]
pub struct CacheState {
    /// Rows in the cache.
    pub rows: i64,
    /// Bytes on disk.
    pub bytes: i64,
    /// When it was fetched (RFC 3339).
    pub fetched_at: String,
    /// How many times the table has been fetched.
    pub version: i64,
    /// Bytes it holds decoded in the memory tier (0 when it is not there).
    pub memory_bytes: i64,
}

/// One table of `GET /connections/{id}/tables`.
#[derive(Debug, Serialize, ToSchema)]
pub struct TableInfo {
    /// The source schema.
    pub schema: String,
    /// The table's name.
    pub name: String,
    /// BASE TABLE or VIEW.
    pub table_type: String,
    /// The source's row estimate, where it gives one.
    pub row_estimate: Option<i64>,
    /// The source's size estimate in bytes, where it gives one.
    pub byte_estimate: Option<i64>,
    /// How its queries read it: cache, live or auto (its own option, else its connection's).
    pub access_mode: String,
    /// Its own options, such as `{"mode": "live"}`.
    #[schema(value_type = Object)]
    pub options: Value,
    /// How many columns it has.
    pub columns: i64,
    /// Its columns, in order, with their source and Arrow types.
    pub column_types: Vec<TableColumn>,
    /// Whether a cached copy exists.
    pub cached: bool,
    /// The cached copy.
    pub cache: Option<CacheState>,
    /// How fresh the copy is: refresh mode, last refresh, age, next scheduled refresh and
    /// last error.
    pub freshness: TableFreshness,
}

/// A column of a discovered table.
#[derive(Debug, Serialize, ToSchema)]
pub struct TableColumn {
    /// Its name.
    pub name: String,
    /// Its type at the source, such as `numeric(10,2)`.
    pub source_type: String,
    /// The Arrow type Quarry reads it as.
    pub arrow_type: String,
    /// Whether it may hold nulls.
    pub nullable: bool,
}

/// `POST /query`: one SQL statement.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QueryRequest {
    /// The statement, in Quarry's SQL (DataFusion's dialect).
    pub sql: String,
}

/// One column of a query result.
#[derive(Debug, Serialize, ToSchema)]
pub struct ColumnInfo {
    /// Its name.
    pub name: String,
    /// Its Arrow type.
    #[serde(rename = "type")]
    pub data_type: String,
    /// Whether it may hold nulls.
    pub nullable: bool,
}

/// `POST /query` answer as JSON (ask for `application/vnd.apache.arrow.stream` to get an
/// Arrow IPC stream instead).
#[derive(Debug, Serialize, ToSchema)]
pub struct QueryResult {
    /// The result's columns.
    pub columns: Vec<ColumnInfo>,
    /// One object per row, keyed by column name. Integers beyond ±2^53 (9007199254740992),
    /// which JSON parsers read as inexact doubles, are written as strings of their digits.
    #[schema(value_type = Vec<Object>)]
    pub rows: Vec<Map<String, Value>>,
}

/// `GET /health` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// Always ok when the server answers.
    pub status: String,
    /// Quarry's version.
    pub version: String,
}

/// `POST /login` answer: a bearer token for later calls, here and over Flight SQL.
#[derive(Debug, Serialize, ToSchema)]
pub struct Token {
    /// The token: send `Authorization: Bearer <token>`.
    pub token: String,
    /// Always Bearer.
    pub token_type: String,
    /// Seconds until it expires.
    pub expires_in: u64,
}

impl TestState {
    fn of(connection: &Connection) -> Self {
        let status = &connection.status;
        TestState {
            state: status
                .test_status
                .clone()
                .unwrap_or_else(|| "untested".into()),
            last_tested_at: status.last_tested_at.map(|t| t.to_rfc3339()),
            latency_ms: status.test_latency_ms,
            server_version: status.server_version.clone(),
            error: status.test_error.clone(),
        }
    }
}

impl ConnectionSummary {
    /// The summary of `connection`, with its table counts.
    pub fn of(
        connection: &Connection,
        live: &LinkStatus,
        tables: &[TableRecord],
        cached: &[CacheEntry],
    ) -> Self {
        ConnectionSummary {
            id: connection.id.to_string(),
            name: connection.name.to_string(),
            source_type: connection.source_type.as_str().to_owned(),
            status: TestState::of(connection),
            live: LiveState {
                state: live.state.as_str().to_owned(),
                since: live.since.to_rfc3339(),
                error_class: live.error_class.map(|c| c.as_str().to_owned()),
                error: live.error.clone(),
            },
            owner: connection.owner.clone(),
            visibility: connection.visibility.as_str().to_owned(),
            tables: tables.len() as i64,
            tables_cached: cached.iter().filter(|e| e.is_current).count() as i64,
            oldest_fetch_at: cached
                .iter()
                .filter(|e| e.is_current)
                .map(|e| e.fetched_at)
                .min()
                .map(|t| t.to_rfc3339()),
            created_at: connection.created_at.to_rfc3339(),
            updated_at: connection.updated_at.to_rfc3339(),
        }
    }
}

impl ConnectionDetails {
    /// `connection` with its config; each credential is shown only as `<field>_set`.
    pub fn of(
        connection: &Connection,
        live: &LinkStatus,
        tables: &[TableRecord],
        cached: &[CacheEntry],
    ) -> Self {
        let mut config = match &connection.config {
            Value::Object(map) => map.clone(),
            _ => Map::new(),
        };
        for field in connection.source_type.secret_keys() {
            // A reference (`{"env": ...}`) is shown as it is stored; the stored config never
            // holds a value, and removing one is belt and braces.
            if field.contains('.') {
                // Inside an object (`ssh.password`): the object is shown without it.
                continue;
            }
            let by_reference = connection.config.get(*field).is_some_and(Value::is_object);
            if !by_reference {
                config.remove(*field);
            }
            let set = by_reference || connection.secret_fields.iter().any(|f| f == field);
            config.insert(format!("{field}_set"), Value::Bool(set));
        }
        ConnectionDetails {
            summary: ConnectionSummary::of(connection, live, tables, cached),
            config,
        }
    }
}

impl TableInfo {
    /// `table` with its current cache entry, if any, read with `access` (its connection's);
    /// `resident` tells the bytes an entry holds in the memory tier.
    pub fn of(
        table: &TableRecord,
        cached: &[CacheEntry],
        access: &AccessOptions,
        freshness: TableFreshness,
        resident: impl Fn(&CacheEntry) -> u64,
    ) -> Self {
        let cache = table.current_entry(cached).map(|e| CacheState {
            rows: e.row_count,
            bytes: e.byte_size,
            fetched_at: e.fetched_at.to_rfc3339(),
            version: e.version,
            memory_bytes: i64::try_from(resident(e)).unwrap_or(i64::MAX),
        });
        TableInfo {
            schema: table.schema.clone(),
            name: table.name.clone(),
            table_type: table.table_type.clone(),
            row_estimate: table.row_estimate,
            byte_estimate: table.byte_estimate,
            access_mode: table.options.mode(access).to_string(),
            options: serde_json::to_value(&table.options).expect("table options always serialize"),
            columns: table.columns.len() as i64,
            column_types: table
                .columns
                .iter()
                .map(|c| TableColumn {
                    name: c.name.clone(),
                    source_type: c.source_type.clone(),
                    arrow_type: c.arrow_type.clone(),
                    nullable: c.is_nullable,
                })
                .collect(),
            cached: cache.is_some(),
            cache,
            freshness,
        }
    }
}
