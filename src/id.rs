//! Prefixed nanoid identifiers. A connection's id is its only identity: store rows, cache
//! paths and URLs are keyed by it, never by its (renameable) name.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

pub(crate) const ALPHABET: [char; 36] = [
    '0', '1', '2', '3', '4', '5', '6', '7', '8', '9', 'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i',
    'j', 'k', 'l', 'm', 'n', 'o', 'p', 'q', 'r', 's', 't', 'u', 'v', 'w', 'x', 'y', 'z',
];
const ID_LEN: usize = 22;
const CONNECTION_PREFIX: &str = "conn_";

/// Identifier of a connection: `conn_` followed by 22 characters from `[0-9a-z]`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct ConnectionId(String);

impl ConnectionId {
    /// A fresh random id.
    pub fn generate() -> Self {
        ConnectionId(format!(
            "{CONNECTION_PREFIX}{}",
            nanoid::nanoid!(ID_LEN, &ALPHABET)
        ))
    }

    /// Parses `text` as a connection id, failing with a message that shows the format.
    pub fn parse(text: &str) -> Result<Self> {
        if Self::looks_valid(text) {
            Ok(ConnectionId(text.to_owned()))
        } else {
            Err(Error::InvalidId {
                given: text.to_owned(),
            })
        }
    }

    /// Whether `text` has the exact shape of a connection id.
    pub fn looks_valid(text: &str) -> bool {
        text.strip_prefix(CONNECTION_PREFIX).is_some_and(|rest| {
            rest.len() == ID_LEN
                && rest
                    .bytes()
                    .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
        })
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl serde::Serialize for ConnectionId {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for ConnectionId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

impl AsRef<str> for ConnectionId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_have_the_documented_shape() {
        for _ in 0..200 {
            let id = ConnectionId::generate();
            let rest = id.as_str().strip_prefix("conn_").unwrap();
            assert_eq!(rest.len(), 22);
            assert!(
                rest.chars()
                    .all(|c| c.is_ascii_digit() || c.is_ascii_lowercase())
            );
            assert_eq!(ConnectionId::parse(id.as_str()).unwrap(), id);
        }
    }

    #[test]
    fn generated_ids_differ() {
        assert_ne!(ConnectionId::generate(), ConnectionId::generate());
    }

    #[test]
    fn malformed_ids_are_rejected_with_the_format() {
        for bad in [
            "",
            "conn_",
            "conn_ABCDEFGHIJKLMNOPQRSTUV",
            "conn_abc",
            "con_0123456789abcdefghijkl",
            "conn_0123456789abcdefghijklm",
            "conn_0123456789abcdefghij-l",
            "42",
        ] {
            let err = ConnectionId::parse(bad).unwrap_err().to_string();
            assert!(
                err.contains("'conn_' followed by 22 characters from [0-9a-z]"),
                "{bad}: {err}"
            );
        }
    }
}
