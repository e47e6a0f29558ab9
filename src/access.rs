//! How a table is read: from the cache, live from its source, or chosen per query
//! ([`AccessMode`]), with the size limits that choice uses. A connection sets the defaults
//! (`mode`, `inline_fetch_max`, `cache_max_bytes` in its config); a table may override the
//! mode (`set_table_options`).

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::refresh::RefreshSettings;

/// Where a table's rows come from when a query reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccessMode {
    /// The first query copies the table into the cache; later ones read the copy.
    Cache,
    /// Never copied: every query's work on the table goes to the source.
    Live,
    /// A fresh copy is read; a small table without one is copied first; a large one is
    /// read live while it is copied in the background.
    Auto,
}

impl AccessMode {
    const NAMES: &'static str = "cache, live, auto";

    /// Parses `cache`, `live` or `auto`.
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "cache" => AccessMode::Cache,
            "live" => AccessMode::Live,
            "auto" => AccessMode::Auto,
            _ => return None,
        })
    }

    /// The mode's name.
    pub fn as_str(self) -> &'static str {
        match self {
            AccessMode::Cache => "cache",
            AccessMode::Live => "live",
            AccessMode::Auto => "auto",
        }
    }
}

impl fmt::Display for AccessMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Largest table (by the source's size estimate) that `auto` copies before answering.
pub const DEFAULT_INLINE_FETCH_MAX: u64 = 256 << 20;

/// A connection's access settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AccessOptions {
    /// The mode of tables without their own (default `auto`).
    pub mode: AccessMode,
    /// `auto` copies a table of at most this many bytes before answering (default 256 MiB).
    pub inline_fetch_max: u64,
    /// `auto` never copies a table larger than this (default: no limit).
    pub cache_max_bytes: Option<u64>,
}

impl Default for AccessOptions {
    fn default() -> Self {
        AccessOptions {
            mode: AccessMode::Auto,
            inline_fetch_max: DEFAULT_INLINE_FETCH_MAX,
            cache_max_bytes: None,
        }
    }
}

/// What `auto` does with a table that has no fresh copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AutoChoice {
    /// Copy it now and read the copy.
    FetchInline,
    /// Read it live and copy it in the background.
    LiveAndCache,
    /// Read it live; it is too large to copy.
    LiveOnly,
}

impl AccessOptions {
    /// `auto`'s choice for a table of `byte_estimate` bytes without a fresh copy. A table
    /// without an estimate (a view) is copied, as before `auto` existed.
    pub fn auto_choice(&self, byte_estimate: Option<i64>) -> AutoChoice {
        let Some(bytes) = byte_estimate.map(|b| b.max(0) as u64) else {
            return AutoChoice::FetchInline;
        };
        if bytes <= self.inline_fetch_max {
            AutoChoice::FetchInline
        } else if self.cache_max_bytes.is_some_and(|max| bytes > max) {
            AutoChoice::LiveOnly
        } else {
            AutoChoice::LiveAndCache
        }
    }
}

/// Parses a mode given in a config or options object under `key`.
pub fn parse_mode(value: &Value, key: &str) -> std::result::Result<AccessMode, String> {
    match value {
        Value::String(text) => AccessMode::parse(text.trim())
            .ok_or_else(|| format!("'{key}' must be one of {}, got '{text}'", AccessMode::NAMES)),
        other => Err(format!(
            "'{key}' must be one of {}, got {other}",
            AccessMode::NAMES
        )),
    }
}

/// Parses a byte size: a number of bytes, or text such as "256MiB", "1 GB" or "500kB".
pub fn parse_bytes(value: &Value, key: &str) -> std::result::Result<u64, String> {
    let bad = || {
        format!(
            "'{key}' must be a size: bytes as a number, or text such as \"256MiB\" or \
             \"2GB\"; got {value}"
        )
    };
    match value {
        Value::Number(n) => n.as_u64().ok_or_else(bad),
        Value::String(text) => text
            .trim()
            .parse::<bytesize::ByteSize>()
            .map(|size| size.as_u64())
            .map_err(|_| bad()),
        _ => Err(bad()),
    }
}

/// A table's own options, set with `set_table_options` and kept across discoveries.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TableOptions {
    /// Overrides the connection's mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<AccessMode>,
    /// Overrides the connection's refresh settings.
    #[serde(flatten)]
    pub refresh: RefreshSettings,
}

impl TableOptions {
    fn keys() -> Vec<&'static str> {
        [&["mode"], RefreshSettings::TABLE_KEYS].concat()
    }

    /// `self` changed by `patch`, a JSON object: a key set to `null` is removed.
    pub fn patched(&self, patch: &Value) -> Result<Self> {
        let bad =
            |message: String| Error::Usage(format!("invalid table options {patch}: {message}"));
        let Some(changes) = patch.as_object() else {
            return Err(bad(
                "a JSON object such as {\"mode\": \"live\"} (modes: cache, live, auto)".into(),
            ));
        };
        let mut options = self.clone();
        for (key, value) in changes {
            match key.as_str() {
                "mode" if value.is_null() => options.mode = None,
                "mode" => options.mode = Some(parse_mode(value, "mode").map_err(bad)?),
                other => {
                    if RefreshSettings::TABLE_KEYS.contains(&other)
                        && options.refresh.set(other, value).map_err(bad)?
                    {
                        continue;
                    }
                    let keys: Vec<String> = Self::keys().iter().map(|k| k.to_string()).collect();
                    let hint = crate::suggest::closest(other, keys.iter())
                        .map(|k| format!(" (did you mean '{k}'?)"))
                        .unwrap_or_default();
                    return Err(bad(format!(
                        "unknown key '{other}'{hint}; valid keys: {}",
                        Self::keys().join(", ")
                    )));
                }
            }
        }
        Ok(options)
    }

    /// The stored form (`None` when nothing is set).
    pub fn to_json(&self) -> Option<String> {
        (*self != TableOptions::default())
            .then(|| serde_json::to_string(self).expect("table options always serialize"))
    }

    /// Reads the stored form; what a newer Quarry wrote and this one does not know is
    /// ignored rather than failing every query of the table.
    pub fn from_json(text: Option<&str>) -> Self {
        text.and_then(|t| serde_json::from_str(t).ok())
            .unwrap_or_default()
    }

    /// The mode a table with these options has on a connection with `access`.
    pub fn mode(&self, access: &AccessOptions) -> AccessMode {
        self.mode.unwrap_or(access.mode)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn auto_copies_small_tables_and_reads_large_ones_live() {
        let access = AccessOptions {
            cache_max_bytes: Some(1 << 30),
            ..AccessOptions::default()
        };
        assert_eq!(access.auto_choice(None), AutoChoice::FetchInline);
        assert_eq!(access.auto_choice(Some(256 << 20)), AutoChoice::FetchInline);
        assert_eq!(
            access.auto_choice(Some((256 << 20) + 1)),
            AutoChoice::LiveAndCache
        );
        assert_eq!(
            access.auto_choice(Some((1 << 30) + 1)),
            AutoChoice::LiveOnly
        );
    }

    #[test]
    fn table_options_patch_and_refuse_unknown_keys() {
        let options = TableOptions::default()
            .patched(&json!({"mode": "live"}))
            .unwrap();
        assert_eq!(options.mode, Some(AccessMode::Live));
        assert_eq!(options.to_json().as_deref(), Some(r#"{"mode":"live"}"#));
        let cleared = options.patched(&json!({"mode": null})).unwrap();
        assert_eq!(cleared.to_json(), None);
        let err = options
            .patched(&json!({"mdoe": "live"}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("did you mean 'mode'"), "{err}");
        let err = options
            .patched(&json!({"mode": "sometimes"}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("cache, live, auto"), "{err}");
    }

    #[test]
    fn sizes_parse_as_numbers_or_text() {
        assert_eq!(parse_bytes(&json!(1024), "k").unwrap(), 1024);
        assert_eq!(parse_bytes(&json!("256MiB"), "k").unwrap(), 256 << 20);
        assert!(parse_bytes(&json!("lots"), "k").is_err());
    }
}
