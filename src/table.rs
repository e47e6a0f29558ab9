//! The records Quarry keeps about a source table, shared by the store, the sources, the
//! cache and events: the one name of a table ([`TableRef`]), a discovered table with its
//! columns, a cache entry, and the one JSON codec of the Arrow schemas they carry.

use chrono::{DateTime, Utc};
use datafusion::arrow::datatypes::Schema;

use crate::access::TableOptions;
use crate::error::{Error, Result};
use crate::id::ConnectionId;

/// A table of a connection: how the store, the cache, events and fetches name it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableRef {
    /// The owning connection.
    pub connection_id: ConnectionId,
    /// Source schema (`main` for SQLite).
    pub schema: String,
    /// Source table.
    pub table: String,
}

impl TableRef {
    /// `schema.table` of `connection_id`.
    pub fn new(
        connection_id: &ConnectionId,
        schema: impl Into<String>,
        table: impl Into<String>,
    ) -> Self {
        TableRef {
            connection_id: connection_id.clone(),
            schema: schema.into(),
            table: table.into(),
        }
    }

    /// Whether this is `record`, the discovered table.
    pub fn is(&self, record: &TableRecord) -> bool {
        self.schema == record.schema && self.table == record.name
    }
}

/// A discovered source table and its columns.
#[derive(Clone, Debug, PartialEq)]
pub struct TableRecord {
    /// Source schema (`main` for SQLite).
    pub schema: String,
    /// Source table name.
    pub name: String,
    /// `table` or `view`.
    pub table_type: String,
    /// The source's row estimate.
    pub row_estimate: Option<i64>,
    /// The source's estimate of the table's size on disk, in bytes.
    pub byte_estimate: Option<i64>,
    /// Options set on this table (`set_table_options`); kept across discoveries.
    pub options: TableOptions,
    /// The Arrow schema a fetch must produce, serialized.
    pub arrow_schema: Option<String>,
    /// When it was discovered.
    pub discovered_at: DateTime<Utc>,
    /// How many times it has been fetched into the cache.
    pub fetch_count: i64,
    /// Its columns in ordinal order.
    pub columns: Vec<ColumnRecord>,
}

impl TableRecord {
    /// This table of `connection_id`.
    pub fn table_ref(&self, connection_id: &ConnectionId) -> TableRef {
        TableRef::new(connection_id, &self.schema, &self.name)
    }

    /// This table's current entry among its connection's `entries`.
    pub fn current_entry<'a>(&self, entries: &'a [CacheEntry]) -> Option<&'a CacheEntry> {
        entries
            .iter()
            .rev()
            .find(|e| e.is_current && e.table.is(self))
    }
}

/// A discovered column.
#[derive(Clone, Debug, PartialEq)]
pub struct ColumnRecord {
    /// Column name.
    pub name: String,
    /// 1-based position.
    pub ordinal_position: i64,
    /// Exact source type text, e.g. `numeric(38,10)`.
    pub source_type: String,
    /// Numeric precision, where the type has one.
    pub numeric_precision: Option<i64>,
    /// Numeric scale, where the type has one.
    pub numeric_scale: Option<i64>,
    /// Whether NULLs are allowed.
    pub is_nullable: bool,
    /// The Arrow type it maps to.
    pub arrow_type: String,
}

/// One immutable, versioned Parquet file holding a full copy of a source table.
#[derive(Clone, Debug, PartialEq)]
pub struct CacheEntry {
    /// The table it copies.
    pub table: TableRef,
    /// Version, increasing per table.
    pub version: i64,
    /// File path relative to the data dir.
    pub path: String,
    /// Rows in the file.
    pub row_count: i64,
    /// File size in bytes.
    pub byte_size: i64,
    /// Arrow schema of the file, serialized.
    pub arrow_schema: String,
    /// When the fetch finished.
    pub fetched_at: DateTime<Utc>,
    /// False once a newer version replaced it (kept until readers are done).
    pub is_current: bool,
}

/// Serializes an Arrow schema for the store.
pub fn schema_to_json(schema: &Schema) -> String {
    serde_json::to_string(schema).expect("an Arrow schema always serializes")
}

/// Reads a schema written by [`schema_to_json`].
pub fn schema_from_json(text: &str, table: &str) -> Result<Schema> {
    serde_json::from_str(text).map_err(|e| Error::Fetch {
        table: table.to_owned(),
        message: format!("the stored schema is unreadable ({e}); run discovery again"),
    })
}
