//! Sources: the kinds of databases Quarry reads, their typed connection configs, and the
//! [`Source`] trait each kind implements (test, discover, fetch).

mod builders;
mod cells;
mod config;
pub mod config_schema;
pub mod credential;
mod cursor;
mod describe;
mod discovery;
mod failure;
pub mod files;
mod login;
mod mysql;
mod postgres;
mod remote_cancel;
mod retry;
mod sqlite;
pub mod ssh;
pub mod table_filter;

pub use crate::connection::SourceType;
pub use crate::error::FailureClass;
pub use config::{CommonOptions, ServerConfig, SourceConfig, SqliteConfig, SslMode};
pub(crate) use config::{expand_url, merge_patch, secret_path};
pub use credential::Credential;
pub use cursor::CursorFilter;
pub use failure::Endpoint;
pub use table_filter::TableFilter;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use tokio::sync::mpsc;

use crate::error::{Error, Result};
use crate::table::{TableRecord, TableRef};

/// Rows per Arrow batch handed from a source to the cache writer.
pub const BATCH_ROWS: usize = 16_384;

/// What a successful connection test reports.
#[derive(Clone, Debug, PartialEq)]
pub struct TestOutcome {
    /// The server's version string.
    pub server_version: String,
    /// Time to connect and run a trivial query.
    pub latency: Duration,
}

impl TestOutcome {
    /// The latency in milliseconds, to a hundredth (finer digits are noise).
    pub fn latency_ms(&self) -> f64 {
        (self.latency.as_secs_f64() * 100_000.0).round() / 100.0
    }
}

/// A table to fetch and the Arrow schema the fetch must produce.
#[derive(Clone, Debug)]
pub struct FetchRequest {
    /// The table.
    pub table: TableRef,
    /// `connection.schema.table`, for messages.
    pub label: String,
    /// The schema stored at discovery; the batches must have exactly this schema.
    pub arrow_schema: SchemaRef,
    /// Source type text per column, for messages.
    pub source_types: Vec<String>,
    /// Only the rows at or past a cursor value (an incremental refresh); `None`: every row.
    pub filter: Option<CursorFilter>,
    /// A files table's format and files, as discovered.
    pub files: Option<Arc<crate::file_set::FileSet>>,
    /// Rows the source left out as unparseable (`bad_rows = 'skip'`), added by the fetch.
    pub skipped_rows: Arc<std::sync::atomic::AtomicU64>,
}

/// A statement in a source's own dialect whose rows are read into `arrow_schema`, column by
/// column: the sub-plan of a query pushed down to the source.
#[derive(Clone, Debug)]
pub struct QueryRequest {
    /// The connection's name, for messages.
    pub connection: String,
    /// A `SELECT` in the source's dialect.
    pub sql: String,
    /// The schema the query planned; the rows must convert to it exactly.
    pub arrow_schema: SchemaRef,
}

/// What a decoder reads into: the schema, and how to word an error about a column.
pub(crate) trait ReadTarget: Send + Sync + 'static {
    /// The schema every batch must have.
    fn schema(&self) -> &SchemaRef;
    /// An error about column `column` (or the whole read).
    fn error(&self, column: Option<usize>, message: impl fmt::Display) -> Error;
}

impl ReadTarget for FetchRequest {
    fn schema(&self) -> &SchemaRef {
        &self.arrow_schema
    }
    fn error(&self, column: Option<usize>, message: impl fmt::Display) -> Error {
        FetchRequest::error(self, column, message)
    }
}

impl ReadTarget for QueryRequest {
    fn schema(&self) -> &SchemaRef {
        &self.arrow_schema
    }
    fn error(&self, column: Option<usize>, message: impl fmt::Display) -> Error {
        let message = match column {
            Some(i) => format!(
                "result column {} ({}) holds {message}",
                i + 1,
                self.arrow_schema.field(i).data_type()
            ),
            None => message.to_string(),
        };
        Error::Remote {
            connection: self.connection.clone(),
            message,
            sql: self.sql.clone(),
        }
    }
}

impl FetchRequest {
    /// The `WHERE` clause of this fetch in `dialect` (empty for a whole table).
    pub(crate) fn where_clause(&self, dialect: SqlDialect) -> Result<String> {
        match &self.filter {
            None => Ok(String::new()),
            Some(filter) => filter
                .condition(dialect)
                .map(|c| format!(" WHERE {c}"))
                .ok_or_else(|| {
                    self.error(
                        None,
                        format!(
                            "the cursor value {} of '{}' cannot be sent to this source",
                            filter.from, filter.column
                        ),
                    )
                }),
        }
    }

    /// A fetch error about column `index` (or the whole table).
    pub fn error(&self, column: Option<usize>, message: impl std::fmt::Display) -> Error {
        let message = match column {
            Some(i) => format!(
                "column '{}' ({}) holds {message}",
                self.arrow_schema.field(i).name(),
                self.source_types.get(i).map_or("?", String::as_str)
            ),
            None => message.to_string(),
        };
        Error::Fetch {
            table: self.label.clone(),
            message,
        }
    }
}

/// A database Quarry reads from. Implementations pool their sessions, keep them read-only
/// and apply the connection's timeouts.
#[async_trait]
pub trait Source: Send + Sync + fmt::Debug {
    /// Connects afresh and runs a trivial query.
    async fn test(&self) -> Result<TestOutcome>;
    /// Reads schemas, tables and views, and their columns mapped to Arrow types.
    async fn discover(&self) -> Result<Vec<TableRecord>>;
    /// Streams the whole table as batches of `request.arrow_schema` into `sink`. Stops early,
    /// without error, when the sink is closed.
    async fn fetch(&self, request: &FetchRequest, sink: mpsc::Sender<RecordBatch>) -> Result<()>;
    /// Runs `request.sql` on one pooled, read-only session and streams its rows, converted
    /// exactly to `request.arrow_schema`, into `sink`. Stops early, without error, when the
    /// sink is closed.
    async fn query(&self, request: &QueryRequest, sink: mpsc::Sender<RecordBatch>) -> Result<()>;
    /// The Arrow schema of the rows of `sql`, a statement in the source's own dialect, learnt
    /// by preparing it on a read-only session, not by running it. A statement that returns no
    /// rows or has parameter placeholders is refused.
    async fn describe(&self, sql: &str) -> Result<SchemaRef>;
    /// The files source this is, if it is one: its tables are scanned in place, not queried
    /// with SQL.
    fn files(&self) -> Option<&files::FilesSource> {
        None
    }
}

/// The SQL dialects of the sources.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SqlDialect {
    /// PostgreSQL.
    Postgres,
    /// MySQL and MariaDB.
    Mysql,
    /// SQLite.
    Sqlite,
}

impl SqlDialect {
    /// The dialect sources of `source_type` speak.
    pub fn of(source_type: SourceType) -> Self {
        match source_type {
            SourceType::Postgres => SqlDialect::Postgres,
            SourceType::Mysql => SqlDialect::Mysql,
            SourceType::Sqlite => SqlDialect::Sqlite,
            // Files tables are scanned in place, never sent SQL; quoting follows the standard.
            SourceType::Files => SqlDialect::Postgres,
        }
    }
}

/// Waits for every partition reader of one fetch; the first failure is the fetch's error.
pub(crate) async fn join_partitions(
    readers: Vec<tokio::task::JoinHandle<Result<()>>>,
    request: &impl ReadTarget,
) -> Result<()> {
    let mut result = Ok(());
    for reader in readers {
        let outcome = reader.await.unwrap_or_else(|e| {
            Err(request.error(None, format!("a partition reader stopped: {e}")))
        });
        if result.is_ok() {
            result = outcome;
        }
    }
    result
}

/// Sends the rows built so far to `sink` once there are `BATCH_ROWS` of them (or any, when
/// `last`). Returns false when the sink is closed: the fetch was abandoned.
pub(crate) async fn forward_batch(
    builder: &mut cells::BatchBuilder,
    sink: &mpsc::Sender<RecordBatch>,
    request: &impl ReadTarget,
    last: bool,
) -> Result<bool> {
    if !last && builder.rows() < BATCH_ROWS {
        return Ok(true);
    }
    match builder.take_batch().map_err(|e| request.error(None, e))? {
        Some(batch) => Ok(sink.send(batch).await.is_ok()),
        None => Ok(true),
    }
}

/// Builds the source for `config`; `connection` names it in messages. Connects lazily.
pub fn open(connection: &str, config: &SourceConfig) -> Result<Arc<dyn Source>> {
    match config {
        SourceConfig::Postgres(c) => Ok(Arc::new(postgres::PgSource::new(connection, c)?)),
        SourceConfig::Mysql(c) => Ok(Arc::new(mysql::MySqlSource::new(connection, c)?)),
        SourceConfig::Sqlite(c) => Ok(Arc::new(sqlite::SqliteSource::new(connection, c)?)),
        SourceConfig::Files(c) => Ok(Arc::new(files::FilesSource::new(connection, c)?)),
    }
}
