//! Who did what to which connection: the audit log's records, and the actor an operation
//! runs as. A face (the REST API, Flight SQL) runs each call in its user's scope
//! ([`Actor::scope`]); the embedded shell and library act as the local user. The
//! connection service reads the actor where it records an operation, so its methods keep
//! their signatures for every caller.

use std::future::Future;

use chrono::{DateTime, Utc};

use crate::id::ConnectionId;

/// Who an operation runs as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Actor {
    /// The user's name (`local` for the embedded shell and library).
    pub name: String,
}

tokio::task_local! {
    static CURRENT: Actor;
}

impl Actor {
    /// The local user: the embedded shell and the library.
    pub fn local() -> Self {
        Actor {
            name: "local".to_owned(),
        }
    }

    /// A server user.
    pub fn user(name: &str) -> Self {
        Actor {
            name: name.to_owned(),
        }
    }

    /// The actor of the running task: the one a face scoped it to, else the local user.
    pub fn current() -> Self {
        CURRENT
            .try_with(Clone::clone)
            .unwrap_or_else(|_| Actor::local())
    }

    /// Runs `work` as this actor.
    pub async fn scope<F: Future>(self, work: F) -> F::Output {
        CURRENT.scope(self, work).await
    }
}

/// What was done to a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuditAction {
    /// Created.
    Create,
    /// Its config changed.
    Update,
    /// Tested.
    Test,
    /// Its tables discovered.
    Discover,
    /// One table, or all, refreshed.
    Refresh,
    /// Cache purged.
    Purge,
    /// Renamed.
    Rename,
    /// Dropped.
    Drop,
}

impl AuditAction {
    /// Its name in the log.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::Create => "create",
            AuditAction::Update => "update",
            AuditAction::Test => "test",
            AuditAction::Discover => "discover",
            AuditAction::Refresh => "refresh",
            AuditAction::Purge => "purge",
            AuditAction::Rename => "rename",
            AuditAction::Drop => "drop",
        }
    }
}

/// One row of the audit log. Holds no secret: the detail is a name, a table or an error
/// message, never a config.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct AuditRecord {
    /// When it was done.
    pub at: DateTime<Utc>,
    /// Who did it.
    pub actor: String,
    /// What was done.
    pub action: String,
    /// The connection's id, when it existed.
    pub connection_id: Option<ConnectionId>,
    /// The connection's name (or what the caller named it).
    pub connection_name: String,
    /// `ok` or `failed`.
    pub outcome: String,
    /// The table, new name or error message.
    pub detail: Option<String>,
}
