//! The connection model: validated names and the stored connection record.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};

use crate::error::{Error, Result};
use crate::id::ConnectionId;

/// Names that would shadow Quarry's or DataFusion's own catalogs and schemas.
pub const RESERVED_NAMES: [&str; 4] = ["quarry", "information_schema", "datafusion", "public"];

const MAX_NAME_LEN: usize = 63;

/// A connection's name: its SQL catalog name, a lowercase identifier `[a-z_][a-z0-9_]{0,62}`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct ConnectionName(String);

impl ConnectionName {
    /// Validates `name` against the naming rule; the error states the rule and what broke it.
    pub fn parse(name: &str) -> Result<Self> {
        let invalid = |problem: String, hint: String| Error::InvalidName {
            name: name.to_owned(),
            problem,
            hint,
        };
        let Some(first) = name.chars().next() else {
            return Err(invalid("the name is empty".into(), String::new()));
        };
        let lowered = name.to_ascii_lowercase();
        let hint = if lowered != name && Self::follows_rule(&lowered) {
            format!("; try '{lowered}'")
        } else {
            String::new()
        };
        if name.chars().count() > MAX_NAME_LEN {
            return Err(invalid(
                format!(
                    "it is {} characters long, the limit is {MAX_NAME_LEN}",
                    name.chars().count()
                ),
                hint,
            ));
        }
        if !(first.is_ascii_lowercase() || first == '_') {
            return Err(invalid(
                format!("it starts with '{first}', not a lowercase letter or '_'"),
                hint,
            ));
        }
        if let Some(bad) = name
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_'))
        {
            return Err(invalid(format!("it contains '{bad}'"), hint));
        }
        if ConnectionId::looks_valid(name) {
            return Err(invalid(
                "it has the shape of a connection id, which would make lookups ambiguous".into(),
                String::new(),
            ));
        }
        if RESERVED_NAMES.contains(&name) {
            return Err(Error::ReservedName {
                name: name.to_owned(),
            });
        }
        Ok(ConnectionName(name.to_owned()))
    }

    fn follows_rule(name: &str) -> bool {
        let mut chars = name.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
            && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            && name.len() <= MAX_NAME_LEN
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ConnectionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A connection as kept in the metadata store. Holds no secret: `config` has the
/// credential fields split out, and `secret_fields` only names them.
#[derive(Clone, Debug, PartialEq)]
pub struct Connection {
    /// The connection's identity.
    pub id: ConnectionId,
    /// Its label and SQL catalog name.
    pub name: ConnectionName,
    /// Which kind of source it points at.
    pub source_type: SourceType,
    /// The validated config without secrets, as a JSON object.
    pub config: serde_json::Value,
    /// Names of the credential fields stored encrypted (e.g. `password`).
    pub secret_fields: Vec<String>,
    /// When the connection was created.
    pub created_at: DateTime<Utc>,
    /// When its name or config last changed.
    pub updated_at: DateTime<Utc>,
    /// Outcome of the last connection test, if any.
    pub status: ConnectionStatus,
    /// The user who created it (`local` for the shell and library).
    pub owner: String,
    /// Who sees it and who may change it.
    pub visibility: Visibility,
}

/// Who sees a connection and who may change it. Its owner and admins always may.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Visibility {
    /// Every user sees and queries it.
    #[default]
    Public,
    /// Only its owner and admins see it: to others it does not exist.
    Private,
    /// Every user sees and queries it; only admins change it.
    Locked,
}

impl Visibility {
    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            Visibility::Public => "public",
            Visibility::Private => "private",
            Visibility::Locked => "locked",
        }
    }

    /// The visibility called `text`.
    pub fn parse(text: &str) -> Result<Self> {
        match text {
            "public" => Ok(Visibility::Public),
            "private" => Ok(Visibility::Private),
            "locked" => Ok(Visibility::Locked),
            other => Err(Error::Usage(format!(
                "unknown visibility '{other}'; use public, private or locked"
            ))),
        }
    }
}

/// Where a connection's server stands, as this process last saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkState {
    /// Nothing is open to the server (not used yet in this process, or changed since).
    Idle,
    /// The last check or use reached the server.
    Connected,
    /// The server dropped or cannot be reached; checks retry with backoff.
    Reconnecting,
    /// Still unreachable after several tries; checked at the keepalive interval.
    Disconnected,
    /// The server refused the login, or a credential or host key is wrong: retrying does
    /// not help until the config or the server changes.
    Error,
}

impl LinkState {
    /// Its name, as information_schema, the API and events show it.
    pub fn as_str(self) -> &'static str {
        match self {
            LinkState::Idle => "idle",
            LinkState::Connected => "connected",
            LinkState::Reconnecting => "reconnecting",
            LinkState::Disconnected => "disconnected",
            LinkState::Error => "error",
        }
    }
}

/// The outcome of the last connection test.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ConnectionStatus {
    /// When the connection was last tested.
    pub last_tested_at: Option<DateTime<Utc>>,
    /// `ok` or `failed`, absent before the first test.
    pub test_status: Option<String>,
    /// Round-trip time of the last successful test.
    pub test_latency_ms: Option<i64>,
    /// The classified error of the last failed test.
    pub test_error: Option<String>,
    /// Server version reported by the last successful test.
    pub server_version: Option<String>,
}

/// The kind of source a connection points at.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum SourceType {
    /// A PostgreSQL database.
    Postgres,
    /// A MySQL or MariaDB database.
    Mysql,
    /// A SQLite database file.
    Sqlite,
    /// A folder, bucket or URL of Parquet, CSV, JSON and Arrow files.
    Files,
}

impl SourceType {
    /// Every source type, in the order they are listed to users.
    pub const ALL: [SourceType; 4] = [
        SourceType::Postgres,
        SourceType::Mysql,
        SourceType::Sqlite,
        SourceType::Files,
    ];

    /// The canonical name, as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceType::Postgres => "postgres",
            SourceType::Mysql => "mysql",
            SourceType::Sqlite => "sqlite",
            SourceType::Files => "files",
        }
    }

    /// The name people know it by, as forms title it.
    pub fn title(self) -> &'static str {
        match self {
            SourceType::Postgres => "PostgreSQL",
            SourceType::Mysql => "MySQL / MariaDB",
            SourceType::Sqlite => "SQLite",
            SourceType::Files => "Files (folder, S3 bucket or URL)",
        }
    }

    /// Parses a source type; `postgresql` and `mariadb` are accepted as aliases.
    pub fn parse(text: &str) -> Result<Self> {
        match text.to_ascii_lowercase().as_str() {
            "postgres" | "postgresql" => Ok(SourceType::Postgres),
            "mysql" | "mariadb" => Ok(SourceType::Mysql),
            "sqlite" => Ok(SourceType::Sqlite),
            "files" | "file" => Ok(SourceType::Files),
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

    fn message(name: &str) -> String {
        ConnectionName::parse(name).unwrap_err().to_string()
    }

    #[test]
    fn valid_names_are_accepted() {
        let longest = format!("a{}", "b".repeat(62));
        for good in ["sales", "_x", "pg_15", "a", longest.as_str()] {
            assert_eq!(ConnectionName::parse(good).unwrap().as_str(), good);
        }
    }

    #[test]
    fn every_broken_rule_names_itself_and_states_the_rule() {
        let rule = "[a-z_][a-z0-9_]{0,62}";
        let too_long = "a".repeat(64);
        let cases = [
            ("", "the name is empty"),
            ("1sales", "it starts with '1'"),
            ("sales-db", "it contains '-'"),
            ("sales db", "it contains ' '"),
            ("ventes_é", "it contains 'é'"),
            (
                too_long.as_str(),
                "it is 64 characters long, the limit is 63",
            ),
        ];
        for (name, problem) in cases {
            let msg = message(name);
            assert!(msg.contains(problem), "{name:?}: {msg}");
            assert!(msg.contains(rule), "{name:?}: {msg}");
        }
    }

    #[test]
    fn uppercase_names_get_a_lowercase_suggestion() {
        let msg = message("Sales");
        assert!(msg.contains("it starts with 'S'"), "{msg}");
        assert!(msg.contains("try 'sales'"), "{msg}");
    }

    #[test]
    fn names_shaped_like_ids_are_refused() {
        let id = ConnectionId::generate();
        let msg = message(id.as_str());
        assert!(msg.contains("shape of a connection id"), "{msg}");
    }

    #[test]
    fn reserved_names_are_refused() {
        for name in RESERVED_NAMES {
            let msg = message(name);
            assert!(msg.contains("is reserved"), "{msg}");
            assert!(msg.contains("quarry, information_schema, datafusion, public"));
        }
    }

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
            "unknown source type 'oracle'; valid source types: postgres, mysql, sqlite, files"
        );
    }
}
