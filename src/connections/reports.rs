//! What connection management reports: the outcomes of test, discover, refresh and purge.
//! The SQL functions turn them into their one-row results and the REST API encodes them as
//! its answers, so both faces show the same fields.

use std::time::Instant;

use serde::Serialize;

use crate::error::Result;
use crate::source::TestOutcome;
use crate::table::CacheEntry;

pub use crate::cache::PurgeOutcome;

/// What a connection test found. A source that cannot be reached is a report (`ok` false),
/// not an error.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct TestReport {
    /// Whether the source answered.
    pub ok: bool,
    /// The source's version string.
    pub server_version: Option<String>,
    /// Round trip in milliseconds.
    pub latency_ms: Option<f64>,
    /// Why it failed.
    pub error: Option<String>,
    /// The config key the failure points at (`password` for a refused login), for forms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl TestReport {
    /// The report of a test's outcome.
    pub fn of(outcome: &Result<TestOutcome>) -> Self {
        match outcome {
            Ok(o) => TestReport {
                ok: true,
                server_version: Some(o.server_version.clone()),
                latency_ms: Some(o.latency_ms()),
                error: None,
                field: None,
            },
            Err(e) => TestReport {
                ok: false,
                server_version: None,
                latency_ms: None,
                error: Some(e.to_string()),
                field: e.field().map(str::to_owned),
            },
        }
    }
}

/// What a discovery changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct DiscoveryOutcome {
    /// Tables seen for the first time.
    pub tables_added: u64,
    /// Tables no longer at the source (their cache is removed).
    pub tables_removed: u64,
    /// Tables whose columns changed (their cache is invalidated).
    pub tables_changed: u64,
}

/// What a refresh of a table or a connection fetched.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct RefreshOutcome {
    /// Tables fetched.
    pub tables: i64,
    /// Rows fetched.
    pub rows: i64,
    /// Bytes of cache written.
    pub bytes: i64,
    /// Time taken, in seconds.
    pub seconds: f64,
}

impl RefreshOutcome {
    /// The fetches that published `entries`, begun at `started`.
    pub fn of<'a>(entries: impl IntoIterator<Item = &'a CacheEntry>, started: Instant) -> Self {
        let mut outcome = RefreshOutcome::default();
        for entry in entries {
            outcome.tables += 1;
            outcome.rows += entry.row_count;
            outcome.bytes += entry.byte_size;
        }
        outcome.seconds = started.elapsed().as_secs_f64();
        outcome
    }
}

/// How fresh a table's copy is: its refresh mode, what its last refresh did, the copy's age,
/// its next scheduled refresh and its last refresh error. `information_schema.tables` shows
/// these fields and the REST table listing encodes them.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct TableFreshness {
    /// full, append or upsert.
    pub refresh_mode: String,
    /// What the last successful refresh (or first fetch) was: full, append or upsert.
    pub last_refresh_kind: Option<String>,
    /// When it finished (RFC 3339).
    #[cfg_attr(feature = "server", schema(value_type = Option<String>))]
    #[serde(serialize_with = "rfc3339")]
    pub last_refresh_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Rows it added or changed (every row for a full one).
    pub last_refresh_rows: Option<i64>,
    /// How long it took, in milliseconds.
    pub last_refresh_ms: Option<i64>,
    /// Seconds since the copy's rows were fetched.
    pub age_seconds: Option<i64>,
    /// When the schedule refreshes it next, with a `refresh_interval` and a copy (RFC 3339).
    #[cfg_attr(feature = "server", schema(value_type = Option<String>))]
    #[serde(serialize_with = "rfc3339")]
    pub next_refresh_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The copy's files: its base and its delta files.
    pub cache_files: Option<i64>,
    /// The last refresh's error, cleared by the next success.
    pub last_error: Option<String>,
    /// When that refresh failed (RFC 3339).
    #[cfg_attr(feature = "server", schema(value_type = Option<String>))]
    #[serde(serialize_with = "rfc3339")]
    pub last_error_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// A time as RFC 3339 text, as the REST API writes every time.
fn rfc3339<S: serde::Serializer>(
    at: &Option<chrono::DateTime<chrono::Utc>>,
    serializer: S,
) -> std::result::Result<S::Ok, S::Error> {
    match at {
        Some(at) => serializer.serialize_str(&at.to_rfc3339()),
        None => serializer.serialize_none(),
    }
}
