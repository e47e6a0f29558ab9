//! The in-memory snapshot of connections and their discovered tables that planning reads:
//! catalog lookups never touch the store or a source, and a statement sees one consistent
//! version even while another statement changes connections.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use datafusion::arrow::datatypes::{Schema, SchemaRef};

use crate::access::AccessOptions;
use crate::connection::Connection;
use crate::error::Result;
use crate::source::CommonOptions;
use crate::store::{MetadataStore, ViewRecord};
use crate::table::{TableRecord, schema_from_json};

/// One discovered table, with its Arrow schema parsed once.
#[derive(Debug)]
pub struct SnapshotTable {
    /// The stored record.
    pub record: TableRecord,
    /// Its Arrow schema (empty if discovery stored none).
    pub schema: SchemaRef,
}

/// A connection and its tables by schema and name.
#[derive(Debug)]
pub struct SnapshotConnection {
    /// The connection.
    pub connection: Connection,
    /// How its tables are read, from its config.
    pub access: AccessOptions,
    /// schema → table → table.
    pub schemas: BTreeMap<String, BTreeMap<String, Arc<SnapshotTable>>>,
}

/// Every connection, by name, and the stored views.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// name → connection.
    pub connections: BTreeMap<String, Arc<SnapshotConnection>>,
    /// name → view of `quarry.views`.
    pub views: BTreeMap<String, Arc<ViewRecord>>,
}

impl Snapshot {
    /// The existing tables nearest to the name `parts` (`table`, `schema.table` or
    /// `connection.schema.table`), compared over all the parts given together, fully
    /// qualified; several only when they are equally near.
    pub fn nearest_tables(&self, parts: &[String]) -> Vec<String> {
        let given = parts.join(".").to_lowercase();
        let mut scored: Vec<(usize, String)> = Vec::new();
        // Never a name from a private connection the current user does not see.
        let actor = crate::audit::Actor::current();
        let visible = self
            .connections
            .iter()
            .filter(|(_, found)| actor.sees(&found.connection));
        for (connection, found) in visible {
            for (schema, tables) in &found.schemas {
                for table in tables.keys() {
                    let compared = match parts.len() {
                        1 => table.clone(),
                        2 => format!("{schema}.{table}"),
                        _ => format!("{connection}.{schema}.{table}"),
                    };
                    let distance = strsim::damerau_levenshtein(&given, &compared.to_lowercase());
                    if distance <= (compared.chars().count() / 3).max(2) {
                        scored.push((distance, format!("{connection}.{schema}.{table}")));
                    }
                }
            }
        }
        let Some(best) = scored.iter().map(|(d, _)| *d).min() else {
            return Vec::new();
        };
        let mut names: Vec<String> = scored
            .into_iter()
            .filter(|(d, _)| *d == best)
            .map(|(_, name)| name)
            .collect();
        names.sort();
        names.truncate(3);
        names
    }

    /// Reads a fresh snapshot from the store.
    pub async fn load(store: &dyn MetadataStore) -> Result<Self> {
        let mut connections = BTreeMap::new();
        for connection in store.connections().await? {
            let mut schemas: BTreeMap<String, BTreeMap<String, Arc<SnapshotTable>>> =
                BTreeMap::new();
            for record in store.tables(&connection.id).await? {
                // A table without a readable schema stays listed; reading it says to run
                // discovery again (see `sql::catalog`).
                let label = format!("{}.{}.{}", connection.name, record.schema, record.name);
                let schema = match record.arrow_schema.as_deref() {
                    Some(json) => schema_from_json(json, &label).unwrap_or_else(|e| {
                        tracing::warn!("{e}");
                        Schema::empty()
                    }),
                    None => Schema::empty(),
                };
                schemas.entry(record.schema.clone()).or_default().insert(
                    record.name.clone(),
                    Arc::new(SnapshotTable {
                        schema: Arc::new(schema),
                        record,
                    }),
                );
            }
            connections.insert(
                connection.name.to_string(),
                Arc::new(SnapshotConnection {
                    access: CommonOptions::access_of(connection.source_type, &connection.config),
                    connection,
                    schemas,
                }),
            );
        }
        let views = store
            .views()
            .await?
            .into_iter()
            .map(|view| (view.name.clone(), Arc::new(view)))
            .collect();
        Ok(Snapshot { connections, views })
    }
}

/// The current snapshot, swapped whole on every change.
#[derive(Debug, Default)]
pub struct SnapshotCell {
    current: RwLock<Arc<Snapshot>>,
    // Reloads one at a time, so an older read never replaces a newer one.
    reloading: tokio::sync::Mutex<()>,
}

impl SnapshotCell {
    /// The snapshot as of now.
    pub fn get(&self) -> Arc<Snapshot> {
        Arc::clone(&self.current.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Reloads from the store and publishes the result.
    pub async fn reload(&self, store: &dyn MetadataStore) -> Result<()> {
        let _one_at_a_time = self.reloading.lock().await;
        let fresh = Arc::new(Snapshot::load(store).await?);
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        Ok(())
    }
}
