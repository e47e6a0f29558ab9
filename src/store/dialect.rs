//! What differs between the SQLite and PostgreSQL stores: migration scripts, how a
//! migration takes its exclusive lock, and pool sizing. All queries are otherwise shared.

/// The SQL backend of a store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// A SQLite file (WAL mode).
    Sqlite,
    /// A PostgreSQL database.
    Postgres,
}

/// Key of the PostgreSQL advisory lock that serialises migrations across processes.
const MIGRATION_LOCK_KEY: i64 = 0x5155_4152_5259; // "QUARRY"

impl Dialect {
    /// The statement that opens a transaction holding the store's write lock from the
    /// start: two processes never migrate one store at once, and concurrent writers wait
    /// for each other instead of failing.
    pub(crate) fn begin_exclusive(self) -> &'static str {
        match self {
            Dialect::Sqlite => "BEGIN IMMEDIATE",
            Dialect::Postgres => "BEGIN",
        }
    }

    /// A statement to run first inside the exclusive transaction, if the dialect needs one.
    pub(crate) fn lock_statement(self) -> Option<String> {
        match self {
            Dialect::Sqlite => None,
            Dialect::Postgres => Some(format!(
                "SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})"
            )),
        }
    }

    /// Pool size: SQLite serialises writers anyway; PostgreSQL is shared by processes.
    pub(crate) fn max_connections(self) -> u32 {
        match self {
            Dialect::Sqlite => 4,
            Dialect::Postgres => 8,
        }
    }
}
