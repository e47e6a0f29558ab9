//! Quarry: an embedded federated SQL engine. Every database connection becomes a SQL
//! catalog; tables are fetched lazily into a local Parquet cache and queried with Apache
//! DataFusion.
//!
//! ```no_run
//! # async fn demo() -> quarry::Result<()> {
//! let engine = quarry::Engine::builder().data_dir("/tmp/quarry").build().await?;
//! let batches = engine.sql("SELECT 1 + 1").await?.collect().await?;
//! # Ok(()) }
//! ```

pub mod access;
pub mod audit;
pub mod cache;
#[cfg(feature = "distributed")]
pub mod cluster;
pub mod config;
pub mod connection;
pub mod connections;
mod engine;
pub mod error;
pub mod events;
pub mod file_set;
pub mod id;
pub mod refresh;
#[cfg(feature = "cli")]
pub mod repl;
pub mod secrets;
#[cfg(feature = "server")]
pub mod server;
pub mod session;
pub mod source;
pub mod sql;
pub mod store;
pub mod suggest;
pub mod table;

/// The DataFusion and Arrow Quarry is built on, so embedders need no version pin of their
/// own: `quarry::datafusion::prelude::*`, `quarry::arrow::array::RecordBatch`.
pub use datafusion;
pub use datafusion::arrow;

pub use connection::{Connection, ConnectionName, ConnectionStatus};
pub use engine::Snapshot;
pub use engine::{Config, Engine, EngineBuilder};
pub use engine::{
    ConnectionRef, Created, DiscoveryOutcome, PurgeOutcome, RefreshOutcome, TestReport,
};
pub use error::{Error, FailureClass, Result};
pub use events::{Event, TableName};
pub use id::ConnectionId;
pub use session::Session;
pub use source::{SourceConfig, SourceType, TestOutcome};
pub use store::StoreUrl;
pub use table::TableRef;

/// Compiles the README's code examples as doctests, so they stay true.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
