//! Which metadata store to open: a SQLite file (the embedded default) or a PostgreSQL
//! database shared by several processes. A URL is never shown with its password.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Name of the SQLite metadata store file in the data dir.
pub const STORE_FILE: &str = "quarry.db";

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
}
