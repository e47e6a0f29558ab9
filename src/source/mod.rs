//! Sources: the kinds of databases Quarry reads, and their typed connection configs.

mod config;

pub(crate) use config::merge_patch;
pub use config::{CommonOptions, ServerConfig, SourceConfig, SqliteConfig, SslMode};

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// The kind of source a connection points at.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum SourceType {
    /// A PostgreSQL database.
    Postgres,
    /// A MySQL or MariaDB database.
    Mysql,
    /// A SQLite database file.
    Sqlite,
}

impl SourceType {
    /// Every source type, in the order they are listed to users.
    pub const ALL: [SourceType; 3] = [SourceType::Postgres, SourceType::Mysql, SourceType::Sqlite];

    /// The canonical name, as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceType::Postgres => "postgres",
            SourceType::Mysql => "mysql",
            SourceType::Sqlite => "sqlite",
        }
    }

    /// Parses a source type; `postgresql` and `mariadb` are accepted as aliases.
    pub fn parse(text: &str) -> Result<Self> {
        match text.to_ascii_lowercase().as_str() {
            "postgres" | "postgresql" => Ok(SourceType::Postgres),
            "mysql" | "mariadb" => Ok(SourceType::Mysql),
            "sqlite" => Ok(SourceType::Sqlite),
            _ => Err(Error::UnknownSourceType {
                given: text.to_owned(),
                valid: Self::ALL.map(Self::as_str).join(", "),
            }),
        }
    }
}

impl fmt::Display for SourceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SourceType {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_types_parse_with_aliases() {
        assert_eq!(
            SourceType::parse("PostgreSQL").unwrap(),
            SourceType::Postgres
        );
        assert_eq!(SourceType::parse("mariadb").unwrap(), SourceType::Mysql);
        for t in SourceType::ALL {
            assert_eq!(SourceType::parse(t.as_str()).unwrap(), t);
        }
    }

    #[test]
    fn unknown_source_type_lists_the_valid_ones() {
        let msg = SourceType::parse("oracle").unwrap_err().to_string();
        assert_eq!(
            msg,
            "unknown source type 'oracle'; valid source types: postgres, mysql, sqlite"
        );
    }
}
