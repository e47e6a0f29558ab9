//! Engine events, broadcast to any number of subscribers (the REPL's progress bar, a
//! library user's monitoring). Slow subscribers lose old events, never block a fetch.

use std::time::Duration;

use tokio::sync::broadcast;

use crate::connection::Connection;
use crate::id::ConnectionId;
use crate::table::{TableRecord, TableRef};

/// Something that happened in the engine. Serialized (for the REST API's event stream)
/// with its kind in `type`, in snake case, a table as `connection_id`, `connection_name`,
/// `schema` and `table` members, and durations in milliseconds.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Event {
    /// A connection test finished and recorded a new status.
    ConnectionTested {
        /// The connection.
        connection_id: ConnectionId,
        /// Whether the test succeeded.
        ok: bool,
        /// The classified error of a failed test.
        error: Option<String>,
    },
    /// A connection's live status changed (see `quarry::connections::health`).
    ConnectionStatus {
        /// The connection.
        connection_id: ConnectionId,
        /// Where it stands now.
        status: crate::connection::LinkState,
        /// The class of the failure, if it failed (`refused`, `authentication`, ...).
        error_class: Option<String>,
        /// The failure's message.
        error: Option<String>,
    },
    /// A table fetch into the cache started.
    FetchStarted {
        /// Which table.
        #[serde(flatten)]
        table: TableName,
        /// The source's row estimate, for progress bars.
        row_estimate: Option<i64>,
    },
    /// Rows fetched so far.
    FetchProgress {
        /// Which table.
        #[serde(flatten)]
        table: TableName,
        /// Rows written so far.
        rows: u64,
    },
    /// A fetch finished and its cache entry is published.
    FetchFinished {
        /// Which table.
        #[serde(flatten)]
        table: TableName,
        /// Rows in the new cache file.
        rows: u64,
        /// Its size in bytes.
        bytes: u64,
        /// How long the fetch took.
        #[serde(rename = "elapsed_ms", serialize_with = "millis")]
        elapsed: Duration,
    },
    /// A cached table was decoded into the memory tier: later statements read memory.
    TableInMemory {
        /// Which table.
        #[serde(flatten)]
        table: TableName,
        /// Bytes of decoded batches it holds.
        bytes: u64,
        /// How long decoding took.
        #[serde(rename = "elapsed_ms", serialize_with = "millis")]
        elapsed: Duration,
    },
    /// A fetch failed; nothing was published.
    FetchFailed {
        /// Which table.
        #[serde(flatten)]
        table: TableName,
        /// Why.
        error: String,
    },
    /// The connections, tables and views planning reads were reloaded after a change
    /// committed to a shared store (by another process, or this one).
    StoreChangesLoaded,
    /// A cached table's base and delta files were merged into one file, as a new version.
    CacheCompacted {
        /// Which table.
        #[serde(flatten)]
        table: TableName,
        /// The files merged.
        files: usize,
        /// The new version.
        version: i64,
    },
}

/// A table as an event shows it: which table, and its connection's name when the event
/// was sent (a rename later does not change what was shown).
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub struct TableName {
    /// Which table.
    #[serde(flatten)]
    pub table: TableRef,
    /// The connection's name when the event was sent.
    pub connection_name: String,
}

impl TableName {
    /// The name of `table` of `connection`.
    pub fn of(connection: &Connection, table: &TableRecord) -> Self {
        TableName {
            table: table.table_ref(&connection.id),
            connection_name: connection.name.to_string(),
        }
    }
}

impl std::fmt::Display for TableName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}.{}.{}",
            self.connection_name, self.table.schema, self.table.table
        )
    }
}

fn millis<S: serde::Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_u64(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX))
}

/// The sending side, held by the engine.
#[derive(Clone, Debug)]
pub struct Events {
    sender: broadcast::Sender<Event>,
}

impl Default for Events {
    fn default() -> Self {
        Events {
            sender: broadcast::channel(1024).0,
        }
    }
}

impl Events {
    /// A new receiver of every event sent from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.sender.subscribe()
    }

    /// Sends `event`; having no subscriber is fine.
    pub fn send(&self, event: Event) {
        let _ = self.sender.send(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_serializes_flat_with_its_kind_and_table() {
        let id = ConnectionId::parse("conn_0123456789abcdefghijkl").unwrap();
        let event = Event::FetchFinished {
            table: TableName {
                table: TableRef::new(&id, "public", "orders"),
                connection_name: "sales".into(),
            },
            rows: 3,
            bytes: 1100,
            elapsed: Duration::from_millis(42),
        };
        assert_eq!(
            serde_json::to_value(&event).unwrap(),
            serde_json::json!({
                "type": "fetch_finished",
                "connection_id": "conn_0123456789abcdefghijkl",
                "connection_name": "sales",
                "schema": "public",
                "table": "orders",
                "rows": 3,
                "bytes": 1100,
                "elapsed_ms": 42,
            })
        );
    }
}
