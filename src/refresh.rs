//! How a cached table is brought up to date ([`RefreshMode`]) and what its last refresh did
//! ([`RefreshStatus`]). A connection sets the defaults in its config (`refresh`,
//! `cursor_column`, `overlap`, `full_every`); a table overrides them with
//! `set_table_options`, which also takes `key`.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// How a refresh of a cached table reads its source.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RefreshMode {
    /// Fetch the whole table again (the default).
    Full,
    /// Fetch the rows at or past the cursor's high-water mark (less `overlap`), drop those
    /// already held, and add the rest as a delta file.
    Append,
    /// Fetch the rows changed since the cursor's high-water mark; each key holds its latest
    /// row.
    Upsert,
}

impl RefreshMode {
    const NAMES: &'static str = "full, append, upsert";

    /// The mode's name.
    pub fn as_str(self) -> &'static str {
        match self {
            RefreshMode::Full => "full",
            RefreshMode::Append => "append",
            RefreshMode::Upsert => "upsert",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "full" => RefreshMode::Full,
            "append" => RefreshMode::Append,
            "upsert" => RefreshMode::Upsert,
            _ => return None,
        })
    }
}

impl fmt::Display for RefreshMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How far below the cursor's high-water mark a refresh reads again: a number in the
/// cursor's units, or a duration (`"10m"`) for date and timestamp cursors.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Overlap {
    /// A number of the cursor's units.
    Value(serde_json::Number),
    /// A duration such as `"10m"`, kept as written.
    Duration(String),
}

impl Overlap {
    /// The duration, when this is one.
    pub fn duration(&self) -> Option<Duration> {
        match self {
            Overlap::Duration(text) => humantime::parse_duration(text.trim()).ok(),
            Overlap::Value(_) => None,
        }
    }
}

impl fmt::Display for Overlap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Overlap::Value(n) => write!(f, "{n}"),
            Overlap::Duration(text) => write!(f, "{text}"),
        }
    }
}

/// When an incremental table's refresh is a full one after all.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum FullEvery {
    /// Every n-th refresh is full.
    Count(u32),
    /// A refresh is full once the last full one is older than this (`"24h"`), kept as
    /// written.
    Age(String),
}

impl FullEvery {
    /// Whether the next refresh must be full, after `since_full` incremental ones since the
    /// last full refresh at `full_at`.
    pub fn due(&self, since_full: i64, full_at: Option<DateTime<Utc>>, now: DateTime<Utc>) -> bool {
        match self {
            FullEvery::Count(n) => since_full + 1 >= i64::from(*n),
            FullEvery::Age(text) => {
                let Ok(age) = humantime::parse_duration(text.trim()) else {
                    return false;
                };
                full_at.is_none_or(|at| {
                    now - at >= chrono::Duration::from_std(age).unwrap_or(chrono::Duration::MAX)
                })
            }
        }
    }
}

/// What a query does with a copy older than `max_age`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnStale {
    /// Refresh it first, and answer from the new copy (the default).
    Wait,
    /// Answer from the stale copy at once, and refresh it in the background.
    Serve,
}

/// What a refresh does when the source table's columns changed since discovery.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnSchemaChange {
    /// Fail, naming the columns added, removed and changed; the old copy stays (the default).
    Fail,
    /// Discover the table again, then fetch it whole.
    Evolve,
}

/// The refresh settings of a connection (defaults) or of one table (overrides).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RefreshSettings {
    /// The refresh mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh: Option<RefreshMode>,
    /// The column whose high-water mark incremental refreshes read from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor_column: Option<String>,
    /// How far below the mark to read again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlap: Option<Overlap>,
    /// The columns that identify a row (default: the primary key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<Vec<String>>,
    /// When a refresh is full after all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full_every: Option<FullEvery>,
    /// How often a long-running process refreshes the cached table, such as `"5m"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_interval: Option<String>,
    /// What a query does with a copy older than `max_age`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_stale: Option<OnStale>,
    /// What a refresh does when the table's columns changed at the source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_schema_change: Option<OnSchemaChange>,
    /// Scheduled refreshes of one connection that may run at once (connections only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent_refreshes: Option<u32>,
}

impl RefreshSettings {
    /// The keys a connection's config takes.
    pub const CONNECTION_KEYS: &'static [&'static str] = &[
        "refresh",
        "cursor_column",
        "overlap",
        "full_every",
        "refresh_interval",
        "on_stale",
        "on_schema_change",
        "max_concurrent_refreshes",
    ];
    /// The keys a table's options take.
    pub const TABLE_KEYS: &'static [&'static str] = &[
        "refresh",
        "cursor_column",
        "overlap",
        "key",
        "full_every",
        "refresh_interval",
        "on_stale",
        "on_schema_change",
    ];

    /// Sets `key` to `value` (JSON; `null` clears it). `Ok(false)`: not a refresh key.
    pub fn set(&mut self, key: &str, value: &Value) -> Result<bool, String> {
        let clear = value.is_null();
        match key {
            "refresh" => {
                self.refresh = (!clear).then(|| parse_refresh(value)).transpose()?;
            }
            "cursor_column" => {
                self.cursor_column = (!clear)
                    .then(|| match value {
                        Value::String(s) if !s.is_empty() => Ok(s.clone()),
                        other => Err(format!(
                            "'cursor_column' must be a column name, got {other}"
                        )),
                    })
                    .transpose()?;
            }
            "overlap" => {
                self.overlap = (!clear).then(|| parse_overlap(value)).transpose()?;
            }
            "key" => {
                self.key = (!clear).then(|| parse_key(value)).transpose()?;
            }
            "full_every" => {
                self.full_every = (!clear).then(|| parse_full_every(value)).transpose()?;
            }
            "refresh_interval" => {
                self.refresh_interval = (!clear)
                    .then(|| match value {
                        Value::String(text)
                            if humantime::parse_duration(text.trim())
                                .is_ok_and(|d| d >= Duration::from_secs(1)) =>
                        {
                            Ok(text.clone())
                        }
                        other => Err(format!(
                            "'refresh_interval' must be a duration of 1s or more such as \"5m\", \
                             got {other}"
                        )),
                    })
                    .transpose()?;
            }
            "on_stale" => {
                self.on_stale = (!clear)
                    .then(|| match value.as_str().map(str::trim) {
                        Some("wait") => Ok(OnStale::Wait),
                        Some("serve") => Ok(OnStale::Serve),
                        _ => Err(format!(
                            "'on_stale' must be one of wait, serve, got {value}"
                        )),
                    })
                    .transpose()?;
            }
            "on_schema_change" => {
                self.on_schema_change = (!clear)
                    .then(|| match value.as_str().map(str::trim) {
                        Some("fail") => Ok(OnSchemaChange::Fail),
                        Some("evolve") => Ok(OnSchemaChange::Evolve),
                        _ => Err(format!(
                            "'on_schema_change' must be one of fail, evolve, got {value}"
                        )),
                    })
                    .transpose()?;
            }
            "max_concurrent_refreshes" => {
                self.max_concurrent_refreshes = (!clear)
                    .then(|| {
                        value
                            .as_u64()
                            .filter(|n| (1..=64).contains(n))
                            .map(|n| n as u32)
                            .ok_or_else(|| {
                                format!(
                                    "'max_concurrent_refreshes' must be a count from 1 to 64, \
                                     got {value}"
                                )
                            })
                    })
                    .transpose()?;
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Reads the refresh keys of a connection config (unknown keys are checked elsewhere).
    pub fn from_config(config: &Value) -> Result<Self, String> {
        let mut settings = RefreshSettings::default();
        if let Some(map) = config.as_object() {
            for key in Self::CONNECTION_KEYS {
                if let Some(value) = map.get(*key) {
                    settings.set(key, value)?;
                }
            }
        }
        Ok(settings)
    }

    /// These settings, with what they leave unset taken from `defaults`.
    pub fn or(&self, defaults: &RefreshSettings) -> RefreshSettings {
        RefreshSettings {
            refresh: self.refresh.or(defaults.refresh),
            cursor_column: self
                .cursor_column
                .clone()
                .or_else(|| defaults.cursor_column.clone()),
            overlap: self.overlap.clone().or_else(|| defaults.overlap.clone()),
            key: self.key.clone().or_else(|| defaults.key.clone()),
            full_every: self
                .full_every
                .clone()
                .or_else(|| defaults.full_every.clone()),
            refresh_interval: self
                .refresh_interval
                .clone()
                .or_else(|| defaults.refresh_interval.clone()),
            on_stale: self.on_stale.or(defaults.on_stale),
            on_schema_change: self.on_schema_change.or(defaults.on_schema_change),
            max_concurrent_refreshes: self
                .max_concurrent_refreshes
                .or(defaults.max_concurrent_refreshes),
        }
    }

    /// The refresh interval, if one is set.
    pub fn interval(&self) -> Option<Duration> {
        self.refresh_interval
            .as_deref()
            .and_then(|text| humantime::parse_duration(text.trim()).ok())
    }

    /// The mode (full when unset).
    pub fn mode(&self) -> RefreshMode {
        self.refresh.unwrap_or(RefreshMode::Full)
    }
}

fn parse_refresh(value: &Value) -> Result<RefreshMode, String> {
    value
        .as_str()
        .and_then(|s| RefreshMode::parse(s.trim()))
        .ok_or_else(|| {
            format!(
                "'refresh' must be one of {}, got {value}",
                RefreshMode::NAMES
            )
        })
}

fn parse_overlap(value: &Value) -> Result<Overlap, String> {
    match value {
        Value::Number(n) if n.as_f64().is_some_and(|f| f >= 0.0) => Ok(Overlap::Value(n.clone())),
        Value::String(text) if humantime::parse_duration(text.trim()).is_ok() => {
            Ok(Overlap::Duration(text.clone()))
        }
        other => Err(format!(
            "'overlap' must be a number of the cursor's units (0 or more) or a duration such \
             as \"10m\", got {other}"
        )),
    }
}

fn parse_key(value: &Value) -> Result<Vec<String>, String> {
    let bad = || format!("'key' must be a column name or a list of them, got {value}");
    match value {
        Value::String(s) if !s.is_empty() => Ok(vec![s.clone()]),
        Value::Array(items) if !items.is_empty() => items
            .iter()
            .map(|v| v.as_str().filter(|s| !s.is_empty()).map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(bad),
        _ => Err(bad()),
    }
}

fn parse_full_every(value: &Value) -> Result<FullEvery, String> {
    match value {
        Value::Number(n) => n
            .as_u64()
            .filter(|n| *n >= 1)
            .and_then(|n| u32::try_from(n).ok())
            .map(FullEvery::Count)
            .ok_or_else(|| format!("'full_every' as a count must be 1 or more, got {n}")),
        Value::String(text) if humantime::parse_duration(text.trim()).is_ok() => {
            Ok(FullEvery::Age(text.clone()))
        }
        other => Err(format!(
            "'full_every' must be a count of refreshes (every n-th is full) or a duration \
             such as \"24h\", got {other}"
        )),
    }
}

/// What a refresh did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RefreshKind {
    /// The whole table was fetched.
    Full,
    /// New rows were appended as a delta file.
    Append,
    /// Changed rows replaced their keys' old rows.
    Upsert,
}

impl RefreshKind {
    /// The kind's name.
    pub fn as_str(self) -> &'static str {
        match self {
            RefreshKind::Full => "full",
            RefreshKind::Append => "append",
            RefreshKind::Upsert => "upsert",
        }
    }

    /// The kind named `text` by [`RefreshKind::as_str`].
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "full" => RefreshKind::Full,
            "append" => RefreshKind::Append,
            "upsert" => RefreshKind::Upsert,
            _ => return None,
        })
    }
}

impl fmt::Display for RefreshKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The outcome of a table's last refresh and its last failure, kept in the store.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RefreshStatus {
    /// What the last successful refresh (or first fetch) was.
    pub kind: Option<RefreshKind>,
    /// When it finished.
    pub refreshed_at: Option<DateTime<Utc>>,
    /// Rows it added or changed (all rows for a full one).
    pub rows: Option<i64>,
    /// How long it took, in milliseconds.
    pub duration_ms: Option<i64>,
    /// When the last full fetch finished.
    pub full_at: Option<DateTime<Utc>>,
    /// Incremental refreshes since the last full one.
    pub since_full: i64,
    /// The last refresh's error, cleared by the next success.
    pub error: Option<String>,
    /// When that refresh failed.
    pub error_at: Option<DateTime<Utc>>,
}

/// A successful refresh, as the store records it on its table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refreshed {
    /// What it did.
    pub kind: RefreshKind,
    /// Rows it added or changed (all rows for a full one).
    pub rows: i64,
    /// How long it took.
    pub duration: Duration,
    /// When it finished.
    pub at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn settings_parse_and_refuse_bad_values() {
        let mut s = RefreshSettings::default();
        assert!(s.set("refresh", &json!("append")).unwrap());
        assert!(s.set("overlap", &json!(5)).unwrap());
        assert!(s.set("overlap", &json!("10m")).unwrap());
        assert_eq!(
            s.overlap.as_ref().and_then(Overlap::duration),
            Some(Duration::from_secs(600))
        );
        assert!(s.set("key", &json!(["a", "b"])).unwrap());
        assert!(s.set("full_every", &json!(3)).unwrap());
        assert!(!s.set("mode", &json!("live")).unwrap());
        let err = s.set("refresh", &json!("sometimes")).unwrap_err();
        assert!(err.contains("full, append, upsert"), "{err}");
        assert!(s.set("overlap", &json!(-1)).is_err());
        assert!(s.set("overlap", &json!("soon")).is_err());
        assert!(s.set("full_every", &json!(0)).is_err());
        assert!(s.set("key", &json!([])).is_err());
        assert!(s.set("refresh", &Value::Null).unwrap());
        assert_eq!(s.refresh, None);
        let text = serde_json::to_string(&s).unwrap();
        let back: RefreshSettings = serde_json::from_str(&text).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn full_every_counts_or_ages() {
        let now = Utc::now();
        assert!(!FullEvery::Count(3).due(0, None, now));
        assert!(!FullEvery::Count(3).due(1, None, now));
        assert!(FullEvery::Count(3).due(2, None, now));
        let day = FullEvery::Age("24h".into());
        assert!(!day.due(5, Some(now - chrono::Duration::hours(23)), now));
        assert!(day.due(5, Some(now - chrono::Duration::hours(25)), now));
    }

    #[test]
    fn table_settings_override_connection_defaults() {
        let defaults = RefreshSettings::from_config(&json!({
            "refresh": "append", "cursor_column": "id", "host": "x"
        }))
        .unwrap();
        let table = RefreshSettings {
            cursor_column: Some("created_at".into()),
            ..RefreshSettings::default()
        };
        let merged = table.or(&defaults);
        assert_eq!(merged.mode(), RefreshMode::Append);
        assert_eq!(merged.cursor_column.as_deref(), Some("created_at"));
    }
}
