//! What a PostgreSQL store shares between the processes that use it: a lock per table,
//! held by whichever process makes the table's next version, and the feed of committed
//! changes (LISTEN/NOTIFY, sent by the triggers of migration v7) that tells every process
//! to reload what it keeps in memory.

use std::time::Duration;

use sha2::{Digest, Sha256};
use sqlx::any::AnyConnectOptions;
use sqlx::postgres::PgListener;
use sqlx::{AnyConnection, Connection as _};
use tokio::sync::mpsc;

use crate::error::{Error, Result};
use crate::table::TableRef;

/// The channel the store's triggers notify on; the payload names the table changed.
const CHANNEL: &str = "quarry_store";
/// Changes buffered between the feed and its reader; a full buffer waits.
const FEED_BUFFER: usize = 64;
/// The longest wait between two attempts to reconnect the feed.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// A change committed to the store, by any process (this one included).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreChange {
    /// Connections, secrets, tables, columns, constraints or views: what planning reads.
    Catalog,
    /// Cache entries were published, superseded or deleted.
    CacheEntries,
    /// The feed was interrupted and is back: changes may have been missed, so everything
    /// kept in memory is to be reloaded.
    Resumed,
}

impl StoreChange {
    fn of(payload: &str) -> Self {
        match payload {
            "cache_entries" => StoreChange::CacheEntries,
            _ => StoreChange::Catalog,
        }
    }
}

/// The right to make one table's next version. A shared store holds it in PostgreSQL (a
/// session advisory lock on a connection of its own) until this is dropped; a process that
/// dies releases it with its connection, so nothing stays stuck.
#[derive(Debug)]
pub struct TableLock {
    _connection: Option<AnyConnection>,
}

impl TableLock {
    /// A lock that only this process's own per-table lock backs (a store no other process
    /// uses).
    pub fn local() -> Self {
        TableLock { _connection: None }
    }
}

/// The advisory lock key of `table`: a hash, so a collision only makes two tables' writers
/// take turns.
fn lock_key(table: &TableRef) -> i64 {
    let digest = Sha256::new()
        .chain_update(b"quarry table lock\0")
        .chain_update(table.connection_id.as_str())
        .chain_update(b"\0")
        .chain_update(&table.schema)
        .chain_update(b"\0")
        .chain_update(&table.table)
        .finalize();
    i64::from_be_bytes(digest[..8].try_into().expect("8 bytes"))
}

/// Waits for `table`'s lock on a connection of its own. Dropping the wait closes that
/// connection; the server notices within a second and gives up waiting for it.
pub(super) async fn lock_table(
    options: &AnyConnectOptions,
    describe: &str,
    table: &TableRef,
) -> Result<TableLock> {
    let failed = || {
        Error::store(format!(
            "locking a table for its fetch in the store at {describe}"
        ))
    };
    let mut connection = AnyConnection::connect_with(options)
        .await
        .map_err(failed())?;
    // PostgreSQL 14 and later notice a waiter that went away within a second; older
    // servers only when they next write to it.
    if let Err(e) = sqlx::raw_sql("SET client_connection_check_interval = '1s'")
        .execute(&mut connection)
        .await
    {
        tracing::debug!(error = %e, "the store cannot check for waiters that went away");
    }
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(lock_key(table))
        .execute(&mut connection)
        .await
        .map_err(failed())?;
    Ok(TableLock {
        _connection: Some(connection),
    })
}

/// Starts the feed of changes committed to the store at `url`. It runs until the receiver
/// is dropped; a lost connection is reopened (with backoff) and reported as
/// [`StoreChange::Resumed`] once listening again.
pub(super) async fn watch(url: &str, describe: &str) -> Result<mpsc::Receiver<StoreChange>> {
    let listener = listen(url).await.map_err(Error::store(format!(
        "listening for changes to the store at {describe}"
    )))?;
    let (sender, receiver) = mpsc::channel(FEED_BUFFER);
    let (url, describe) = (url.to_owned(), describe.to_owned());
    tokio::spawn(async move {
        let mut listener = Some(listener);
        let mut backoff = Duration::from_millis(100);
        loop {
            let Some(current) = listener.as_mut() else {
                tokio::select! {
                    () = sender.closed() => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                match listen(&url).await {
                    Ok(fresh) => {
                        listener = Some(fresh);
                        backoff = Duration::from_millis(100);
                        if sender.send(StoreChange::Resumed).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(store = %describe, error = %e, "cannot listen for store changes; retrying");
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                }
                continue;
            };
            let received = tokio::select! {
                () = sender.closed() => return,
                received = current.try_recv() => received,
            };
            let change = match received {
                Ok(Some(notification)) => StoreChange::of(notification.payload()),
                // Lost and already reconnected (sqlx reconnects eagerly and listens again).
                Ok(None) => {
                    tracing::warn!(store = %describe, "the store's change feed reconnected; reloading");
                    StoreChange::Resumed
                }
                Err(e) => {
                    tracing::warn!(store = %describe, error = %e, "the store's change feed was lost; reconnecting");
                    listener = None;
                    continue;
                }
            };
            if sender.send(change).await.is_err() {
                return;
            }
        }
    });
    Ok(receiver)
}

async fn listen(url: &str) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect(url).await?;
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::ConnectionId;

    #[test]
    fn lock_keys_tell_tables_apart() {
        let id = ConnectionId::generate();
        let table = |schema: &str, name: &str| TableRef {
            connection_id: id.clone(),
            schema: schema.into(),
            table: name.into(),
        };
        assert_eq!(lock_key(&table("a", "b")), lock_key(&table("a", "b")));
        // The separator keeps ("ab", "c") and ("a", "bc") apart.
        assert_ne!(lock_key(&table("ab", "c")), lock_key(&table("a", "bc")));
    }
}
