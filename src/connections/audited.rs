//! The connection operations a user can ask for, each recorded in the audit log with who
//! asked ([`Actor::current`]), the connection, when, and how it went. The work itself is
//! in `mod.rs`; a failure to write the audit row is logged, and never fails the operation.

use serde_json::Value;

use super::{ConnectionRef, Connections, DiscoveryOutcome, PurgeOutcome, RefreshOutcome};
use crate::audit::{Actor, AuditAction, AuditRecord};
use crate::connection::{Connection, Visibility};
use crate::error::{Error, Result};
use crate::id::ConnectionId;
use crate::source::TestOutcome;
use crate::table::CacheEntry;

/// The connection an operation is about, as known before it runs.
struct Target {
    id: Option<ConnectionId>,
    name: String,
}

impl Connections {
    /// The connection `which` names, from the snapshot (no store read), for the log.
    fn target(&self, which: ConnectionRef<'_>) -> Target {
        let typed = match which {
            ConnectionRef::Connection(c) => {
                return Target {
                    id: Some(c.id.clone()),
                    name: c.name.to_string(),
                };
            }
            ConnectionRef::Id(id) => id.as_str(),
            ConnectionRef::NameOrId(text) => text,
        };
        let snapshot = self.snapshot();
        let found = snapshot
            .connections
            .values()
            .find(|c| c.connection.name.as_str() == typed || c.connection.id.as_str() == typed);
        match found {
            Some(c) => Target {
                id: Some(c.connection.id.clone()),
                name: c.connection.name.to_string(),
            },
            None => Target {
                id: None,
                name: typed.to_owned(),
            },
        }
    }

    async fn audit(
        &self,
        action: AuditAction,
        target: Target,
        outcome: std::result::Result<Option<String>, &Error>,
    ) {
        let (outcome, detail) = match outcome {
            Ok(detail) => ("ok", detail),
            Err(e) => ("failed", Some(e.to_string())),
        };
        let record = AuditRecord {
            at: chrono::Utc::now(),
            actor: Actor::current().name,
            action: action.as_str().to_owned(),
            connection_id: target.id,
            connection_name: target.name,
            outcome: outcome.to_owned(),
            detail,
        };
        if let Err(e) = self.store.record_audit(&record).await {
            tracing::warn!(error = %e, action = action.as_str(), "could not write the audit log");
        }
    }

    /// The audit log, newest first, at most `limit` rows; admins only.
    pub async fn audit_log(&self, limit: i64) -> Result<Vec<AuditRecord>> {
        if !Actor::current().is_admin() {
            return Err(Error::Forbidden("only admins read the audit log".into()));
        }
        self.store.audit_log(limit).await
    }

    /// The connection `which` names, if the current actor may change it; the operation
    /// then works on it without reading it again.
    async fn changeable(&self, which: ConnectionRef<'_>) -> Result<Connection> {
        let connection = self.resolve(which).await?.into_owned();
        match Actor::current().may_not_change(&connection) {
            Some(why) => Err(Error::Forbidden(why)),
            None => Ok(connection),
        }
    }

    /// Sets who sees a connection and who may change it; its owner or an admin may (a
    /// locked one: an admin).
    pub async fn set_visibility<'a>(
        &self,
        which: impl Into<ConnectionRef<'a>>,
        visibility: Visibility,
    ) -> Result<Connection> {
        let which = which.into();
        let target = self.target(which);
        let result = async {
            let connection = self.changeable(which).await?;
            let changed = self
                .store
                .set_visibility(&connection.id, visibility)
                .await?;
            self.reload_snapshot().await?;
            Ok(changed)
        }
        .await;
        let detail = result
            .as_ref()
            .map(|_| Some(visibility.as_str().to_owned()));
        self.audit(AuditAction::Visibility, target, detail).await;
        result
    }

    /// Stores a connection without contacting its source (validating its name and config;
    /// credentials in `config` are split out and stored encrypted). Its tables appear once
    /// `discover_connection` runs.
    pub async fn register_connection(
        &self,
        name: &str,
        source_type: &str,
        config: Value,
    ) -> Result<Connection> {
        self.register_connection_with(name, source_type, config, Visibility::Public)
            .await
    }

    /// `register_connection`, with who sees the connection from the start.
    pub async fn register_connection_with(
        &self,
        name: &str,
        source_type: &str,
        config: Value,
        visibility: Visibility,
    ) -> Result<Connection> {
        let result = self
            .register_unaudited(name, source_type, config, visibility)
            .await;
        let target = match &result {
            Ok(c) => Target {
                id: Some(c.id.clone()),
                name: c.name.to_string(),
            },
            Err(_) => Target {
                id: None,
                name: name.to_owned(),
            },
        };
        let detail = result
            .as_ref()
            .map(|c| Some(c.source_type.as_str().to_owned()));
        self.audit(AuditAction::Create, target, detail).await;
        result
    }

    /// Renames a connection; its id, tables and cache stay as they are.
    pub async fn rename_connection<'a>(
        &self,
        which: impl Into<ConnectionRef<'a>>,
        new_name: &str,
    ) -> Result<Connection> {
        let which = which.into();
        let target = self.target(which);
        let result = match self.changeable(which).await {
            Ok(connection) => self.rename_unaudited(&connection, new_name).await,
            Err(e) => Err(e),
        };
        let detail = result
            .as_ref()
            .map(|c| Some(format!("renamed to {}", c.name)));
        self.audit(AuditAction::Rename, target, detail).await;
        result
    }

    /// Changes a connection's config with a JSON merge patch: keys given replace the old
    /// values, keys set to `null` are removed, others are kept (including the password).
    /// When the patch moves the connection to other data (host, port, database or path),
    /// its cache is dropped: the files hold the old location's rows. The log names the keys
    /// changed, never their values.
    pub async fn update_connection<'a>(
        &self,
        which: impl Into<ConnectionRef<'a>>,
        patch: Value,
    ) -> Result<Connection> {
        let which = which.into();
        let target = self.target(which);
        let keys = patch
            .as_object()
            .map(|m| m.keys().cloned().collect::<Vec<_>>().join(", "))
            .unwrap_or_default();
        let result = match self.changeable(which).await {
            Ok(connection) => self.update_unaudited(&connection, patch).await,
            Err(e) => Err(e),
        };
        let detail = result.as_ref().map(|_| Some(format!("changed {keys}")));
        self.audit(AuditAction::Update, target, detail).await;
        result
    }

    /// Deletes a connection with its secrets, tables, columns and cache; returns it.
    pub async fn drop_connection<'a>(
        &self,
        which: impl Into<ConnectionRef<'a>>,
    ) -> Result<Connection> {
        let which = which.into();
        let target = self.target(which);
        let result = match self.changeable(which).await {
            Ok(connection) => self.drop_unaudited(&connection).await,
            Err(e) => Err(e),
        };
        self.audit(AuditAction::Drop, target, result.as_ref().map(|_| None))
            .await;
        result
    }

    /// Connects to the source afresh, records the outcome on the connection, and returns it
    /// (a failure is returned as the classified error, after being recorded).
    pub async fn test_connection<'a>(
        &self,
        which: impl Into<ConnectionRef<'a>>,
    ) -> Result<TestOutcome> {
        let which = which.into();
        let target = self.target(which);
        let result = self.test_unaudited(which).await;
        self.audit(AuditAction::Test, target, result.as_ref().map(|_| None))
            .await;
        result
    }

    /// Reads the source's tables and columns into the store: adds new tables, removes
    /// vanished ones with their cache, and invalidates the cache of changed ones.
    pub async fn discover_connection<'a>(
        &self,
        which: impl Into<ConnectionRef<'a>>,
    ) -> Result<DiscoveryOutcome> {
        let which = which.into();
        let target = self.target(which);
        let result = match self.changeable(which).await {
            Ok(connection) => self.discover_unaudited(&connection).await,
            Err(e) => Err(e),
        };
        let detail = result.as_ref().map(|o| {
            Some(format!(
                "{} added, {} removed, {} changed",
                o.tables_added, o.tables_removed, o.tables_changed
            ))
        });
        self.audit(AuditAction::Discover, target, detail).await;
        result
    }

    /// Fetches a new version of a table; queries already running keep reading the old one.
    pub async fn refresh_table<'a>(
        &self,
        which: impl Into<ConnectionRef<'a>>,
        schema: &str,
        table: &str,
    ) -> Result<CacheEntry> {
        let which = which.into();
        let target = self.target(which);
        let result = self.refresh_table_unaudited(which, schema, table).await;
        let detail = format!("{schema}.{table}");
        let outcome = result.as_ref().map(|_| Some(detail));
        self.audit(AuditAction::Refresh, target, outcome).await;
        result
    }

    /// Fetches a new version of every discovered table of a connection, one by one.
    pub async fn refresh_connection<'a>(
        &self,
        which: impl Into<ConnectionRef<'a>>,
    ) -> Result<RefreshOutcome> {
        let which = which.into();
        let target = self.target(which);
        let result = self.refresh_connection_unaudited(which).await;
        self.audit(AuditAction::Refresh, target, result.as_ref().map(|_| None))
            .await;
        result
    }

    /// Drops cache entries of a connection (optionally of one schema or table); the tables
    /// stay, and the next query fetches them again.
    pub async fn purge_cache<'a>(
        &self,
        which: impl Into<ConnectionRef<'a>>,
        schema: Option<&str>,
        table: Option<&str>,
    ) -> Result<PurgeOutcome> {
        let which = which.into();
        let target = self.target(which);
        let result = match self.changeable(which).await {
            Ok(connection) => self.purge_unaudited(&connection, schema, table).await,
            Err(e) => Err(e),
        };
        let scope = match (schema, table) {
            (Some(s), Some(t)) => Some(format!("{s}.{t}")),
            (Some(s), None) => Some(s.to_owned()),
            _ => None,
        };
        self.audit(AuditAction::Purge, target, result.as_ref().map(|_| scope))
            .await;
        result
    }
}
