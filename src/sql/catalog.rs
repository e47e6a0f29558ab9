//! Every connection is a DataFusion catalog: catalog = connection name, schema = source
//! schema, table = source table. Lookups read the in-memory snapshot only; the default
//! `datafusion.public` catalog stays available for the session's own tables.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::{
    CatalogProvider, CatalogProviderList, MemoryCatalogProvider, MemorySchemaProvider,
    SchemaProvider, TableProvider,
};
use datafusion::error::{DataFusionError, Result};

use super::files_table::FilesTable;
use super::lazy_table::LazyTable;
use super::pushdown;
use crate::access::{AccessMode, AutoChoice};
use crate::cache::Freshness;
use datafusion::execution::runtime_env::RuntimeEnv;

use super::system_catalog::{SYSTEM_CATALOG, SystemCatalog};
use crate::connections::Connections;
use crate::connections::snapshot::SnapshotConnection;

/// The session's catalogs: one per connection, plus DataFusion's default.
#[derive(Debug)]
pub struct QuarryCatalogList {
    connections: Arc<Connections>,
    /// For planning stored views in sessions of their own.
    runtime: Arc<RuntimeEnv>,
    default: Arc<MemoryCatalogProvider>,
}

impl QuarryCatalogList {
    /// Catalogs served from the snapshot of `connections`; tables fetch through them.
    pub(crate) fn new(connections: Arc<Connections>, runtime: Arc<RuntimeEnv>) -> Self {
        let default = Arc::new(MemoryCatalogProvider::new());
        default
            .register_schema("public", Arc::new(MemorySchemaProvider::new()))
            .expect("a new memory catalog accepts a schema");
        QuarryCatalogList {
            connections,
            runtime,
            default,
        }
    }
}

impl CatalogProviderList for QuarryCatalogList {
    fn register_catalog(
        &self,
        name: String,
        _catalog: Arc<dyn CatalogProvider>,
    ) -> Option<Arc<dyn CatalogProvider>> {
        tracing::warn!(
            name,
            "catalogs are connections; create a connection instead"
        );
        None
    }

    fn catalog_names(&self) -> Vec<String> {
        let mut names = vec!["datafusion".to_owned(), SYSTEM_CATALOG.to_owned()];
        // A private connection of another user is no catalog of theirs.
        let actor = crate::audit::Actor::current();
        names.extend(
            self.connections
                .snapshot()
                .connections
                .iter()
                .filter(|(_, c)| actor.sees(&c.connection))
                .map(|(name, _)| name.clone()),
        );
        names
    }

    fn catalog(&self, name: &str) -> Option<Arc<dyn CatalogProvider>> {
        if name == "datafusion" {
            return Some(self.default.clone());
        }
        if name == SYSTEM_CATALOG {
            return Some(Arc::new(SystemCatalog::new(
                Arc::clone(&self.connections),
                Arc::clone(&self.runtime),
            )));
        }
        let connection = self.connections.snapshot().connections.get(name)?.clone();
        if !crate::audit::Actor::current().sees(&connection.connection) {
            return None;
        }
        Some(Arc::new(ConnectionCatalog {
            connection,
            runtime: Arc::clone(&self.runtime),
            connections: Arc::clone(&self.connections),
        }))
    }
}

/// One connection as a catalog, fixed to the snapshot it was looked up in.
#[derive(Debug)]
struct ConnectionCatalog {
    connection: Arc<SnapshotConnection>,
    runtime: Arc<RuntimeEnv>,
    connections: Arc<Connections>,
}

impl CatalogProvider for ConnectionCatalog {
    fn schema_names(&self) -> Vec<String> {
        self.connection.schemas.keys().cloned().collect()
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        self.connection.schemas.contains_key(name).then(|| {
            Arc::new(ConnectionSchema {
                connection: self.connection.clone(),
                runtime: Arc::clone(&self.runtime),
                schema: name.to_owned(),
                connections: Arc::clone(&self.connections),
            }) as Arc<dyn SchemaProvider>
        })
    }
}

/// One source schema of a connection.
#[derive(Debug)]
struct ConnectionSchema {
    connection: Arc<SnapshotConnection>,
    /// Where a files table's store is registered for its scans.
    runtime: Arc<RuntimeEnv>,
    schema: String,
    connections: Arc<Connections>,
}

#[async_trait]
impl SchemaProvider for ConnectionSchema {
    fn table_names(&self) -> Vec<String> {
        self.connection
            .schemas
            .get(&self.schema)
            .map(|tables| tables.keys().cloned().collect())
            .unwrap_or_default()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        let Some(table) = self
            .connection
            .schemas
            .get(&self.schema)
            .and_then(|tables| tables.get(name))
        else {
            return Ok(None);
        };
        if table.schema.fields().is_empty() {
            return Err(DataFusionError::Plan(format!(
                "table {}.{}.{} has no stored schema; run discovery again",
                self.connection.connection.name, self.schema, name
            )));
        }
        let connection = &self.connection.connection;
        let lazy = || -> Arc<dyn TableProvider> {
            Arc::new(LazyTable::new(
                connection.clone(),
                table.clone(),
                Arc::clone(&self.connections),
            ))
        };
        let access = &self.connection.access;
        if let Some(set) = &table.record.files {
            let in_place = match table.record.options.mode(access) {
                AccessMode::Cache => false,
                AccessMode::Live => true,
                // Parquet and Arrow are read in place; text is parsed once into the cache.
                AccessMode::Auto => set.format.is_columnar(),
            };
            // The row reader's rules (null strings, skipped rows) apply to copies only.
            if !in_place || set.needs_row_reader() {
                return Ok(Some(lazy()));
            }
            let external = |e| DataFusionError::External(Box::new(e));
            let source = self
                .connections
                .source(connection)
                .await
                .map_err(external)?;
            if let Some(files) = source.files() {
                self.runtime
                    .register_object_store(files.store_url().as_ref(), files.object_store());
            }
            return Ok(Some(Arc::new(FilesTable::new(
                source,
                set.clone(),
                Arc::clone(&table.schema),
            ))));
        }
        let live = |copy_in_background| {
            pushdown::live_table(connection, table, &self.connections, copy_in_background)
        };
        Ok(Some(match table.record.options.mode(access) {
            AccessMode::Cache => lazy(),
            AccessMode::Live => live(false),
            AccessMode::Auto => match access.auto_choice(table.record.byte_estimate) {
                AutoChoice::FetchInline => lazy(),
                choice => {
                    // A fresh copy is read, however large the table.
                    let freshness = self
                        .connections
                        .cache()
                        .fresh_entry(connection, &table.record)
                        .await
                        .map_err(|e| DataFusionError::External(Box::new(e)))?;
                    match freshness {
                        Freshness::Fresh(_) => lazy(),
                        _ => live(choice == AutoChoice::LiveAndCache),
                    }
                }
            },
        }))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.connection
            .schemas
            .get(&self.schema)
            .is_some_and(|tables| tables.contains_key(name))
    }
}
