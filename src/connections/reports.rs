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
            },
            Err(e) => TestReport {
                ok: false,
                server_version: None,
                latency_ms: None,
                error: Some(e.to_string()),
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
