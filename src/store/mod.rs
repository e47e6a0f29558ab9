//! The metadata store: connections, encrypted secrets, discovered tables and columns, and
//! cache entries, behind one async trait. SQLite (embedded default) and PostgreSQL (shared
//! by several processes) share one implementation; their differences live in `dialect`.

mod dialect;
mod migrations;
mod shared;
mod single_process;
mod sql;
mod url;

pub use dialect::Dialect;
pub use migrations::{MIGRATIONS_TABLE, Migration, migrations};
pub use shared::{StoreChange, TableLock};
pub use sql::SqlStore;
pub use url::{STORE_FILE, StoreUrl};

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::access::TableOptions;
use crate::connection::SourceType;
use crate::connection::{Connection, ConnectionName, ConnectionStatus};
use crate::error::Result;
use crate::id::ConnectionId;
use crate::refresh::Refreshed;
use crate::secrets::SealedSecret;
pub use crate::table::{
    CacheEntry, ColumnRecord, Constraint, ConstraintKind, ConstraintTarget, TableRecord, TableRef,
};

/// A connection about to be stored. Its secrets are already sealed.
#[derive(Clone, Debug)]
pub struct NewConnection {
    /// The id, generated before sealing since it is the secrets' associated data.
    pub id: ConnectionId,
    /// Validated name.
    pub name: ConnectionName,
    /// Kind of source.
    pub source_type: SourceType,
    /// Validated config without secrets.
    pub config: serde_json::Value,
    /// Sealed credentials.
    pub secrets: Vec<SealedSecret>,
    /// The user creating it.
    pub owner: String,
    /// Who sees it.
    pub visibility: crate::connection::Visibility,
}

/// A server user managed through the API.
#[derive(Clone, PartialEq, Eq)]
pub struct UserRecord {
    /// The name they log in with.
    pub name: String,
    /// What they may do.
    pub role: crate::audit::Role,
    /// The argon2id PHC string of their password.
    pub password_hash: String,
    /// When they were added.
    pub created_at: chrono::DateTime<chrono::Utc>,
}

impl std::fmt::Debug for UserRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserRecord")
            .field("name", &self.name)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

/// A change to a connection's config and secrets.
#[derive(Clone, Debug)]
pub struct ConfigUpdate {
    /// The new full config without secrets.
    pub config: serde_json::Value,
    /// Secrets to add or replace.
    pub set_secrets: Vec<SealedSecret>,
    /// Secret fields to delete.
    pub remove_secrets: Vec<String>,
}

/// A view made with `CREATE VIEW`, kept across sessions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ViewRecord {
    /// Its name in `quarry.views`.
    pub name: String,
    /// Its query, as SQL.
    pub definition: String,
    /// The default catalog its unqualified names resolve in.
    pub default_catalog: String,
    /// The default schema its unqualified names resolve in.
    pub default_schema: String,
    /// When it was made (or last replaced).
    pub created_at: DateTime<Utc>,
}

/// Everything Quarry keeps about connections, behind one async interface.
#[async_trait]
pub trait MetadataStore: Send + Sync + Debug {
    /// Where the store lives, for messages (never shows a password).
    fn describe(&self) -> String;

    /// Whether other processes may use this store at the same time (PostgreSQL): their
    /// changes arrive through [`MetadataStore::watch`], and cache versions they may still
    /// read are kept for a grace period after they are superseded.
    fn is_shared(&self) -> bool {
        false
    }
    /// Waits for the right to make `table`'s next version, held across every process of a
    /// shared store until the lock is dropped.
    async fn lock_table(&self, _table: &TableRef) -> Result<TableLock> {
        Ok(TableLock::local())
    }
    /// The changes committed to a shared store, by any process; `None` when no other
    /// process uses the store.
    async fn watch(&self) -> Result<Option<tokio::sync::mpsc::Receiver<StoreChange>>> {
        Ok(None)
    }

    /// Stores a new connection and its sealed secrets. Fails if the name is taken.
    async fn insert_connection(&self, new: &NewConnection) -> Result<Connection>;
    /// The connection with this id.
    async fn connection(&self, id: &ConnectionId) -> Result<Option<Connection>>;
    /// The connection with this name.
    async fn connection_by_name(&self, name: &ConnectionName) -> Result<Option<Connection>>;
    /// Every connection, ordered by name.
    async fn connections(&self) -> Result<Vec<Connection>>;
    /// Renames a connection, keeping its id. Fails if the new name is taken.
    async fn rename_connection(
        &self,
        id: &ConnectionId,
        name: &ConnectionName,
    ) -> Result<Connection>;
    /// Replaces a connection's config and applies the secret changes, atomically.
    async fn update_connection(
        &self,
        id: &ConnectionId,
        update: &ConfigUpdate,
    ) -> Result<Connection>;
    /// Deletes a connection with its secrets, tables, columns and cache entries.
    /// Returns whether it existed.
    async fn delete_connection(&self, id: &ConnectionId) -> Result<bool>;
    /// A connection's sealed secrets.
    async fn secrets(&self, id: &ConnectionId) -> Result<Vec<SealedSecret>>;

    /// Replaces the discovered tables (and their columns) of a connection.
    async fn replace_tables(&self, id: &ConnectionId, tables: &[TableRecord]) -> Result<()>;
    /// A connection's discovered tables with their columns, ordered by schema and name.
    async fn tables(&self, id: &ConnectionId) -> Result<Vec<TableRecord>>;
    /// One discovered table with its columns.
    async fn table(&self, table: &TableRef) -> Result<Option<TableRecord>>;
    /// Stores the options of a discovered table; false if discovery did not find it.
    async fn set_table_options(&self, table: &TableRef, options: &TableOptions) -> Result<bool>;
    /// Records a successful refresh that published no new version (nothing had changed).
    async fn record_refresh(&self, table: &TableRef, refreshed: &Refreshed) -> Result<()>;
    /// Records a failed refresh; the table's last success stays.
    async fn record_refresh_error(&self, table: &TableRef, error: &str) -> Result<()>;
    /// Sets who sees a connection.
    async fn set_visibility(
        &self,
        id: &ConnectionId,
        visibility: crate::connection::Visibility,
    ) -> Result<Connection>;
    /// The server users managed through the API, by name.
    async fn users(&self) -> Result<Vec<UserRecord>>;
    /// The server user `name`, if one was added.
    async fn user(&self, name: &str) -> Result<Option<UserRecord>>;
    /// Adds a user, or replaces one of the same name.
    async fn put_user(&self, user: &UserRecord) -> Result<()>;
    /// Deletes a user; returns whether one existed.
    async fn delete_user(&self, name: &str) -> Result<bool>;
    /// Appends a row to the audit log.
    async fn record_audit(&self, record: &crate::audit::AuditRecord) -> Result<()>;
    /// The audit log, newest first, at most `limit` rows.
    async fn audit_log(&self, limit: i64) -> Result<Vec<crate::audit::AuditRecord>>;
    /// Records the outcome of a connection test.
    async fn record_test(&self, id: &ConnectionId, status: &ConnectionStatus) -> Result<()>;

    /// The version number the next fetch of a table gets.
    async fn next_cache_version(&self, table: &TableRef) -> Result<i64>;
    /// Makes `entry` the table's current version and, unless it is a compaction (`None`),
    /// counts the fetch and records the refresh that made it, atomically. Returns the
    /// entries it superseded.
    async fn publish_cache_entry(
        &self,
        entry: &CacheEntry,
        refreshed: Option<&Refreshed>,
    ) -> Result<Vec<CacheEntry>>;
    /// The current cache entry of a table.
    async fn current_cache_entry(&self, table: &TableRef) -> Result<Option<CacheEntry>>;
    /// Removes one cache entry.
    async fn delete_cache_entry(&self, entry: &CacheEntry) -> Result<()>;
    /// A connection's cache entries.
    async fn cache_entries(&self, id: &ConnectionId) -> Result<Vec<CacheEntry>>;
    /// Every cache entry in the store, for start-up clean-up.
    async fn all_cache_entries(&self) -> Result<Vec<CacheEntry>>;
    /// The entries of `table` (of every table when `None`) superseded before `before`.
    async fn expired_cache_entries(
        &self,
        table: Option<&TableRef>,
        before: DateTime<Utc>,
    ) -> Result<Vec<CacheEntry>>;

    /// Every stored view, ordered by name.
    async fn views(&self) -> Result<Vec<ViewRecord>>;
    /// Stores a view; with `replace`, one of the same name is replaced, else it is an error.
    async fn put_view(&self, view: &ViewRecord, replace: bool) -> Result<()>;
    /// Deletes a view; returns whether it existed.
    async fn delete_view(&self, name: &str) -> Result<bool>;
}

/// Opens (creating and migrating as needed) the store at `url`.
pub async fn open(url: &StoreUrl) -> Result<Arc<dyn MetadataStore>> {
    Ok(Arc::new(SqlStore::open(url).await?))
}
