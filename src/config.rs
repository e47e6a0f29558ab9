//! Engine configuration: where the data directory is, which metadata store to use, where
//! the secret key comes from, and how much memory the decoded-cache tier may hold.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Environment variable naming the data directory.
pub const HOME_ENV: &str = "QUARRY_HOME";
/// Environment variable naming the metadata store URL.
pub const STORE_ENV: &str = "QUARRY_STORE_URL";
/// Environment variable sizing the memory tier of decoded cache files.
pub const MEMORY_CACHE_ENV: &str = "QUARRY_MEMORY_CACHE";
/// Percent of the machine's memory the memory tier holds at most by default.
const DEFAULT_MEMORY_PERCENT: u64 = 25;
/// Name of the SQLite metadata store file in the data dir.
pub const STORE_FILE: &str = "quarry.db";

/// The data directory: `explicit` if given, else `$QUARRY_HOME`, else `~/.quarry`.
pub fn resolve_data_dir(explicit: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(dir) = explicit {
        return Ok(dir);
    }
    if let Some(dir) = std::env::var_os(HOME_ENV).filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    std::env::home_dir()
        .filter(|h| !h.as_os_str().is_empty())
        .map(|home| home.join(".quarry"))
        .ok_or(Error::NoDataDir)
}

/// Parses a memory-tier size: a byte count with or without a unit (`4GiB`, `512MB`), a
/// percentage of the machine's memory (`25%`), or `0` to keep nothing decoded.
pub fn parse_memory_budget(text: &str) -> Result<u64> {
    let invalid = || Error::InvalidSetting {
        setting: "memory cache size",
        given: text.to_owned(),
        expected: "give a size such as 4GiB or 512MB, a share of memory such as 25%, or 0 to turn the memory cache off",
    };
    let text = text.trim();
    if let Some(percent) = text.strip_suffix('%') {
        let percent: f64 = percent.trim().parse().map_err(|_| invalid())?;
        if !(0.0..=100.0).contains(&percent) {
            return Err(invalid());
        }
        return Ok((physical_memory() as f64 * percent / 100.0) as u64);
    }
    text.parse::<bytesize::ByteSize>()
        .map(|size| size.as_u64())
        .map_err(|_| invalid())
}

/// The default memory-tier size: a quarter of the machine's memory (or of the container's
/// limit, when it has one).
pub fn default_memory_budget() -> u64 {
    physical_memory() / 100 * DEFAULT_MEMORY_PERCENT
}

fn physical_memory() -> u64 {
    let mut system = sysinfo::System::new();
    system.refresh_memory();
    let total = system.total_memory();
    match system.cgroup_limits() {
        Some(limits) if limits.total_memory > 0 => total.min(limits.total_memory),
        _ => total,
    }
}

/// Which metadata store to open. `Debug` and `Display` never show a password.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// A SQLite file (the embedded default: `quarry.db` in the data dir).
    Sqlite(PathBuf),
    /// A PostgreSQL database, shared by several Quarry processes.
    Postgres(String),
}

impl StoreUrl {
    /// Parses a store URL: `postgres://…`/`postgresql://…`, `sqlite://path`, or a file path.
    pub fn parse(text: &str) -> Result<Self> {
        let invalid = |problem: &str| Error::InvalidStoreUrl {
            url: redact(text),
            problem: problem.to_owned(),
        };
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            url::Url::parse(text).map_err(|e| invalid(&format!("{e}")))?;
            return Ok(StoreUrl::Postgres(text.to_owned()));
        }
        if let Some(path) = text.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err(invalid("the sqlite:// URL names no file"));
            }
            return Ok(StoreUrl::Sqlite(PathBuf::from(path)));
        }
        if text.contains("://") {
            return Err(invalid(
                "unsupported scheme; use postgres://user@host/db, sqlite://path, or a file path",
            ));
        }
        if text.is_empty() {
            return Err(invalid("the URL is empty"));
        }
        Ok(StoreUrl::Sqlite(PathBuf::from(text)))
    }

    /// The embedded default store in `data_dir`.
    pub fn default_in(data_dir: &Path) -> Self {
        StoreUrl::Sqlite(data_dir.join(STORE_FILE))
    }
}

impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreUrl::Sqlite(path) => write!(f, "{}", path.display()),
            StoreUrl::Postgres(url) => f.write_str(&redact(url)),
        }
    }
}

impl fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StoreUrl({self})")
    }
}

/// `url` with any password replaced by `***`.
pub(crate) fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        Ok(parsed) => parsed.to_string(),
        Err(_) if url.contains('@') => "<unparseable URL, hidden>".to_owned(),
        Err(_) => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_urls_parse_and_never_show_passwords() {
        let url = StoreUrl::parse("postgres://quarry:hunter2@db:5432/meta").unwrap();
        assert_eq!(url.to_string(), "postgres://quarry:***@db:5432/meta");
        assert!(!format!("{url:?}").contains("hunter2"));
        assert_eq!(
            StoreUrl::parse("sqlite:///tmp/x.db").unwrap(),
            StoreUrl::Sqlite("/tmp/x.db".into())
        );
        assert_eq!(
            StoreUrl::parse("/tmp/y.db").unwrap(),
            StoreUrl::Sqlite("/tmp/y.db".into())
        );
        let msg = StoreUrl::parse("mysql://root:pw@h/db")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("unsupported scheme"), "{msg}");
        assert!(!msg.contains(":pw@"), "{msg}");
    }

    #[test]
    fn memory_budgets_parse_sizes_and_shares() {
        assert_eq!(parse_memory_budget("0").unwrap(), 0);
        assert_eq!(parse_memory_budget("512MiB").unwrap(), 512 << 20);
        assert_eq!(parse_memory_budget("2 GB").unwrap(), 2_000_000_000);
        assert_eq!(parse_memory_budget("100%").unwrap(), physical_memory());
        assert!(default_memory_budget() > 0);
        for bad in ["lots", "-1GB", "150%", "%", ""] {
            let msg = parse_memory_budget(bad).unwrap_err().to_string();
            assert!(
                msg.contains("memory cache size") && msg.contains("4GiB"),
                "{bad}: {msg}"
            );
        }
    }
}
