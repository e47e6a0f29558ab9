//! Who does what: the actor an operation runs as, with its role, and the audit log's
//! records. A face (the REST API, Flight SQL) runs each call in its user's scope
//! ([`Actor::scope`]); the embedded shell and library act as the local admin. The
//! connection service and the catalogs read the actor where they decide what a user may
//! see and change, and where they record an operation, so their methods keep their
//! signatures for every caller.

use std::future::Future;

use chrono::{DateTime, Utc};

use crate::id::ConnectionId;

/// What a user may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Sees and changes every connection, manages users, reads the audit log.
    Admin,
    /// Sees public and locked connections and their own; changes their own unless locked.
    Member,
}

impl Role {
    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Member => "member",
        }
    }

    /// The role called `text`.
    pub fn parse(text: &str) -> crate::Result<Self> {
        match text {
            "admin" => Ok(Role::Admin),
            "member" => Ok(Role::Member),
            other => Err(crate::Error::Usage(format!(
                "unknown role '{other}'; use admin or member"
            ))),
        }
    }
}

/// Who an operation runs as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Actor {
    /// The user's name (`local` for the embedded shell and library).
    pub name: String,
    /// What they may do.
    pub role: Role,
}

tokio::task_local! {
    static CURRENT: Actor;
}

impl Actor {
    /// The local user: the embedded shell and the library, an admin.
    pub fn local() -> Self {
        Actor {
            name: "local".to_owned(),
            role: Role::Admin,
        }
    }

    /// A server user.
    pub fn user(name: &str, role: Role) -> Self {
        Actor {
            name: name.to_owned(),
            role,
        }
    }

    /// Whether this is an admin.
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// Whether this actor sees `connection`: public and locked ones, its own, all for admins.
    pub fn sees(&self, connection: &crate::connection::Connection) -> bool {
        connection.visibility != crate::connection::Visibility::Private
            || self.is_admin()
            || connection.owner == self.name
    }

    /// Why this actor may not change `connection`, if it may not: only its owner or an
    /// admin changes it, and only an admin once it is locked.
    pub fn may_not_change(&self, connection: &crate::connection::Connection) -> Option<String> {
        use crate::connection::Visibility;
        if self.is_admin() {
            return None;
        }
        if connection.visibility == Visibility::Locked {
            return Some(format!(
                "connection '{}' is locked: only admins change it",
                connection.name
            ));
        }
        if connection.owner != self.name {
            return Some(format!(
                "connection '{}' belongs to {}: only its owner or an admin changes it",
                connection.name, connection.owner
            ));
        }
        None
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
    /// Its visibility set.
    Visibility,
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
            AuditAction::Visibility => "visibility",
        }
    }
}

/// One row of the audit log, as the store keeps it and the REST API sends it. Holds no
/// secret: the detail is a name, a table or an error message, never a config.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct AuditRecord {
    /// When it was done (RFC 3339).
    #[cfg_attr(feature = "server", schema(value_type = String))]
    pub at: DateTime<Utc>,
    /// Who did it (`local` for the embedded shell and library).
    pub actor: String,
    /// create, update, test, discover, refresh, purge, rename, drop or visibility.
    pub action: String,
    /// The connection's id, when it existed.
    #[cfg_attr(feature = "server", schema(value_type = Option<String>))]
    pub connection_id: Option<ConnectionId>,
    /// The connection's name (or what the caller named it).
    pub connection_name: String,
    /// `ok` or `failed`.
    pub outcome: String,
    /// The table, new name, keys changed or error message.
    pub detail: Option<String>,
}
