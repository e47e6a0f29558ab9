//! Follows the changes other processes commit to a shared store: connections created,
//! changed or dropped, tables rediscovered and views stored reach this process's snapshot
//! without polling, and the sources of changed connections are reopened.

use std::sync::{Arc, Weak};

use tokio::sync::mpsc;

use super::Connections;
use crate::error::Result;
use crate::events::Event;
use crate::store::StoreChange;

/// Starts following the store's changes, if it is shared; the task ends with `connections`.
pub(crate) async fn start(connections: &Arc<Connections>) -> Result<()> {
    let Some(feed) = connections.store.watch().await? else {
        return Ok(());
    };
    tokio::spawn(follow(Arc::downgrade(connections), feed));
    Ok(())
}

async fn follow(connections: Weak<Connections>, mut feed: mpsc::Receiver<StoreChange>) {
    // Failed reloads in a row; while there is one, a reload is still owed.
    let mut failures = 0u32;
    loop {
        let first = if failures == 0 {
            feed.recv().await
        } else {
            let wait = std::time::Duration::from_millis(100 << failures.min(6));
            tokio::select! {
                () = tokio::time::sleep(wait) => Some(StoreChange::Resumed),
                next = feed.recv() => next,
            }
        };
        let Some(first) = first else {
            return;
        };
        // Changes committed together arrive together: one reload for all of them.
        let mut changes = vec![first];
        while let Ok(next) = feed.try_recv() {
            changes.push(next);
        }
        let catalog = failures > 0 || changes.iter().any(|c| *c != StoreChange::CacheEntries);
        let cache = changes.iter().any(|c| *c != StoreChange::Catalog);
        let Some(connections) = connections.upgrade() else {
            return;
        };
        if cache {
            // What this process published may have been purged or replaced elsewhere.
            connections.cache.forget_published();
        }
        if !catalog {
            continue;
        }
        match connections.reload_from_store().await {
            Ok(()) => {
                failures = 0;
                connections.events.send(Event::StoreChangesLoaded);
            }
            Err(e) => {
                failures += 1;
                tracing::warn!(error = %e, "could not reload connections after a store change; retrying");
            }
        }
    }
}
