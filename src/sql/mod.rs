//! DataFusion glue: connections as catalogs over an in-memory snapshot, lazy tables that
//! fetch into the cache when a query first reads them, and live tables whose work is pushed
//! down to their source.

pub mod catalog;
pub(crate) mod context;
pub mod default_schema;
pub(crate) mod deferred;
pub(crate) mod deferred_statement;
#[cfg(feature = "distributed")]
pub mod distributed;
pub(crate) mod files_table;
pub(crate) mod functions;
pub mod information_schema;
pub(crate) mod join_order;
pub mod lazy_table;
pub(crate) mod lossy_cast;
pub(crate) mod memory_scan;
pub mod names;
pub mod placeholders;
pub(crate) mod pushdown;
pub mod results;
pub mod show_tables;
pub(crate) mod source_query;

pub mod suggest;
pub mod system_catalog;
pub mod views;

#[cfg(test)]
mod store_reads;
