//! The Engine facade: opens the metadata store, holds the secret cipher and the DataFusion
//! session, and offers connection management and SQL. It wires parts; logic lives in them.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use datafusion::dataframe::DataFrame;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::sql::parser::Statement;
use secrecy::ExposeSecret;
use serde_json::Value;

use crate::cache::{Cache, PurgeOutcome};
use crate::config::{self, StoreUrl};
use crate::connection::SourceType;
use crate::connection::{Connection, ConnectionName, ConnectionStatus};
use crate::error::{Error, Result};
use crate::events::{Event, Events, TableName};
use crate::id::ConnectionId;
use crate::secrets::{KeySource, SecretCipher, SecretKey};
use crate::session::Session;
use crate::source::{self, Source, SourceConfig, TestOutcome, merge_patch};
use crate::sql::snapshot::SnapshotCell;
use crate::store::{self, ConfigUpdate, MetadataStore, NewConnection};
use crate::table::{CacheEntry, TableRecord};

/// The resolved configuration an engine runs with.
#[derive(Clone, Debug)]
pub struct Config {
    /// The data directory (store file, key file, cache).
    pub data_dir: PathBuf,
    /// The metadata store.
    pub store_url: StoreUrl,
    /// Bytes of cache files the memory tier keeps decoded at most (0: none).
    pub memory_cache: u64,
}

/// Builds an [`Engine`]. Anything not given explicitly is taken from the environment as
/// the CLI does: `QUARRY_HOME` (else `~/.quarry`), `QUARRY_STORE_URL` (else `quarry.db` in
/// the data dir), `QUARRY_SECRET_KEY` (else the key file in the data dir) and
/// `QUARRY_MEMORY_CACHE` (else a quarter of the machine's memory).
#[derive(Default)]
pub struct EngineBuilder {
    data_dir: Option<PathBuf>,
    store_url: Option<String>,
    key_source: Option<KeySource>,
    memory_cache: Option<u64>,
}

impl EngineBuilder {
    /// Uses `dir` as the data directory.
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }

    /// Uses the metadata store at `url` (`postgres://…`, `sqlite://path` or a file path).
    pub fn store_url(mut self, url: impl Into<String>) -> Self {
        self.store_url = Some(url.into());
        self
    }

    /// Encrypts secrets with `key` instead of `QUARRY_SECRET_KEY` or the key file.
    pub fn secret_key(mut self, key: SecretKey) -> Self {
        self.key_source = Some(KeySource::Given(key));
        self
    }

    /// Takes the secret key from `source`.
    pub fn key_source(mut self, source: KeySource) -> Self {
        self.key_source = Some(source);
        self
    }

    /// Keeps at most `bytes` of cache files decoded in memory (0 turns the tier off).
    pub fn memory_cache(mut self, bytes: u64) -> Self {
        self.memory_cache = Some(bytes);
        self
    }

    /// Creates the data directory if needed, opens and migrates the store.
    pub async fn build(self) -> Result<Engine> {
        let data_dir = config::resolve_data_dir(self.data_dir)?;
        std::fs::create_dir_all(&data_dir)
            .map_err(Error::io("cannot create the data directory", &data_dir))?;
        let store_url = match self.store_url.or_else(|| {
            std::env::var(config::STORE_ENV)
                .ok()
                .filter(|u| !u.is_empty())
        }) {
            Some(url) => StoreUrl::parse(&url)?,
            None => StoreUrl::default_in(&data_dir),
        };
        let key_source = match self.key_source {
            Some(source) => source,
            None => KeySource::from_env_or_file(&data_dir)?,
        };
        let memory_cache = match self.memory_cache {
            Some(bytes) => bytes,
            None => match std::env::var(config::MEMORY_CACHE_ENV) {
                Ok(size) if !size.is_empty() => config::parse_memory_budget(&size)?,
                _ => config::default_memory_budget(),
            },
        };
        let store = store::open(&store_url).await?;
        let events = Events::default();
        let cache = Cache::new(&data_dir, Arc::clone(&store), events.clone(), memory_cache);
        cache.collect_garbage().await?;
        let snapshot = Arc::new(SnapshotCell::default());
        snapshot.reload(store.as_ref()).await?;
        let runtime = Arc::new(RuntimeEnv::default());
        let inner = Arc::new_cyclic(|core: &std::sync::Weak<EngineCore>| {
            let session = Session::new(
                crate::sql::context::new(core, &snapshot, &runtime),
                Arc::clone(&snapshot),
                Arc::clone(&store),
            );
            EngineCore {
                config: Config {
                    data_dir,
                    store_url,
                    memory_cache,
                },
                store,
                cipher: SecretCipher::new(key_source),
                session,
                runtime,
                events,
                cache,
                sources: Mutex::default(),
                snapshot,
            }
        });
        Ok(Engine { inner })
    }
}

/// An embedded Quarry: connections, metadata store and SQL. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Engine {
    inner: Arc<EngineCore>,
}

/// The engine's shared state; catalogs hold it weakly so the session does not keep it alive.
pub(crate) struct EngineCore {
    config: Config,
    store: Arc<dyn MetadataStore>,
    cipher: SecretCipher,
    /// The session of `Engine::sql` (the shell's and the library's).
    session: Session,
    /// Shared by every session: memory pool, spill files, file statistics.
    runtime: Arc<RuntimeEnv>,
    events: Events,
    cache: Cache,
    /// Open sources (and their session pools) by connection, dropped when it changes.
    sources: Mutex<HashMap<ConnectionId, Arc<dyn Source>>>,
    /// Connections and tables as planning sees them.
    snapshot: Arc<SnapshotCell>,
}

/// A connection just created, and what discovering its tables found.
#[derive(Debug)]
pub struct Created {
    /// The stored connection.
    pub connection: Connection,
    /// The discovery's outcome; an error leaves the connection without tables.
    pub discovery: Result<DiscoveryOutcome>,
}

/// What a discovery changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DiscoveryOutcome {
    /// Tables seen for the first time.
    pub tables_added: u64,
    /// Tables no longer at the source (their cache is removed).
    pub tables_removed: u64,
    /// Tables whose columns changed (their cache is invalidated).
    pub tables_changed: u64,
}

impl std::fmt::Debug for EngineCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("config", &self.config)
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// The engine around `core` (for catalogs, which hold the core weakly).
    pub(crate) fn from_core(core: Arc<EngineCore>) -> Self {
        Engine { inner: core }
    }

    /// Re-reads the snapshot planning uses, after a change to connections or tables.
    async fn reload_snapshot(&self) -> Result<()> {
        self.inner.snapshot.reload(self.inner.store.as_ref()).await
    }

    /// Starts building an engine.
    pub fn builder() -> EngineBuilder {
        EngineBuilder::default()
    }

    /// The configuration the engine runs with.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The connections and tables planning sees right now; reading it does no I/O.
    pub fn snapshot(&self) -> Arc<crate::sql::snapshot::Snapshot> {
        self.inner.snapshot.get()
    }

    /// Every catalog statements can name (connections, `datafusion`, `quarry`), for
    /// browsing; reading it does no I/O.
    pub fn catalog_list(&self) -> Arc<dyn datafusion::catalog::CatalogProviderList> {
        self.inner.session.catalog_list()
    }

    /// The names of every function a statement can call, sorted.
    pub fn function_names(&self) -> Vec<String> {
        self.inner.session.function_names()
    }

    /// The engine's own session, which `sql` and `execute` use.
    pub fn default_session(&self) -> &Session {
        &self.inner.session
    }

    /// A new session of its own: settings, temporary tables and views and prepared
    /// statements that no other session sees, over the same connections and cache.
    pub fn new_session(&self) -> Session {
        Session::new(
            crate::sql::context::new(
                &Arc::downgrade(&self.inner),
                &self.inner.snapshot,
                &self.inner.runtime,
            ),
            Arc::clone(&self.inner.snapshot),
            Arc::clone(&self.inner.store),
        )
    }

    /// The metadata store.
    pub fn store(&self) -> &Arc<dyn MetadataStore> {
        &self.inner.store
    }

    /// Plans one SQL statement in the engine's session; run the returned frame to
    /// execute it.
    pub async fn sql(&self, sql: &str) -> Result<DataFrame> {
        self.inner.session.sql(sql).await
    }

    /// Splits a script into statements, in the SQL dialect Quarry speaks.
    pub fn parse(&self, sql: &str) -> Result<Vec<Statement>> {
        self.inner.session.parse(sql)
    }

    /// Plans one parsed statement in the engine's session; run the returned frame to
    /// execute it.
    pub async fn execute(&self, statement: Statement) -> Result<DataFrame> {
        self.inner.session.execute(statement).await
    }

    /// Creates a connection and discovers its tables, as SQL's `create_connection` and
    /// `POST /connections` do. The connection stays when discovery fails; the outcome says
    /// why, and `discover_connection` tries again.
    pub async fn create_connection(
        &self,
        name: &str,
        source_type: &str,
        config: Value,
    ) -> Result<Created> {
        let connection = self.register_connection(name, source_type, config).await?;
        let discovery = self.discover_connection(connection.id.as_str()).await;
        Ok(Created {
            connection,
            discovery,
        })
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
        let name = ConnectionName::parse(name)?;
        let source_type = SourceType::parse(source_type)?;
        let config = source::expand_url(source_type, &config)?;
        let (public, secrets) = SourceConfig::split_secrets(source_type, &config)?;
        let id = ConnectionId::generate();
        let secrets = secrets
            .iter()
            .map(|(field, value)| self.inner.cipher.seal(&id, field, value))
            .collect::<Result<_>>()?;
        let created = self
            .inner
            .store
            .insert_connection(&NewConnection {
                id,
                name,
                source_type,
                config: public,
                secrets,
            })
            .await?;
        self.reload_snapshot().await?;
        Ok(created)
    }

    /// The connection named `name_or_id`, or with that id.
    pub async fn connection(&self, name_or_id: &str) -> Result<Connection> {
        let store = &self.inner.store;
        let found = if ConnectionId::looks_valid(name_or_id) {
            store.connection(&ConnectionId::parse(name_or_id)?).await?
        } else {
            match ConnectionName::parse(name_or_id) {
                Ok(name) => store.connection_by_name(&name).await?,
                Err(_) => None,
            }
        };
        found.ok_or_else(|| {
            let snapshot = self.snapshot();
            match crate::sql::suggest::closest(name_or_id, snapshot.connections.keys()) {
                Some(near) => Error::NotFound(format!(
                    "no connection named or with id '{name_or_id}'; did you mean '{near}'?"
                )),
                None => Error::ConnectionNotFound(name_or_id.to_owned()),
            }
        })
    }

    /// Every connection, ordered by name.
    pub async fn connections(&self) -> Result<Vec<Connection>> {
        self.inner.store.connections().await
    }

    /// Renames a connection; its id, tables and cache stay as they are.
    pub async fn rename_connection(&self, name_or_id: &str, new_name: &str) -> Result<Connection> {
        let new_name = ConnectionName::parse(new_name)?;
        let connection = self.connection(name_or_id).await?;
        let renamed = self
            .inner
            .store
            .rename_connection(&connection.id, &new_name)
            .await?;
        self.reload_snapshot().await?;
        Ok(renamed)
    }

    /// Changes a connection's config with a JSON merge patch: keys given replace the old
    /// values, keys set to `null` are removed, others are kept (including the password).
    /// When the patch moves the connection to other data (host, port, database or path),
    /// its cache is dropped: the files hold the old location's rows.
    pub async fn update_connection(&self, name_or_id: &str, patch: Value) -> Result<Connection> {
        let connection = self.connection(name_or_id).await?;
        let source_type = connection.source_type;
        let patch = source::expand_url(source_type, &patch)?;
        let merged = merge_patch(&connection.config, &patch, source_type)?;
        let (public, given) = SourceConfig::split_secrets(source_type, &merged)?;
        let set_secrets = given
            .iter()
            .map(|(field, value)| self.inner.cipher.seal(&connection.id, field, value))
            .collect::<Result<_>>()?;
        let remove_secrets = source_type
            .secret_keys()
            .iter()
            .filter(|field| patch.get(**field).is_some_and(Value::is_null))
            .map(|field| field.to_string())
            .collect();
        let moved = source_type
            .location_keys()
            .iter()
            .any(|key| connection.config.get(*key) != public.get(*key));
        self.forget_source(&connection.id);
        if moved {
            self.inner.cache.purge(&connection.id, None, None).await?;
        }
        let updated = self
            .inner
            .store
            .update_connection(
                &connection.id,
                &ConfigUpdate {
                    config: public,
                    set_secrets,
                    remove_secrets,
                },
            )
            .await?;
        self.reload_snapshot().await?;
        Ok(updated)
    }

    /// Deletes a connection with its secrets, tables, columns and cache; returns it.
    pub async fn drop_connection(&self, name_or_id: &str) -> Result<Connection> {
        let connection = self.connection(name_or_id).await?;
        let entries = self.inner.store.cache_entries(&connection.id).await?;
        if !self.inner.store.delete_connection(&connection.id).await? {
            return Err(Error::ConnectionNotFound(name_or_id.to_owned()));
        }
        self.forget_source(&connection.id);
        self.inner.cache.retire_files(&entries);
        self.reload_snapshot().await?;
        Ok(connection)
    }

    /// The connection's full config with its credentials decrypted (their `Debug` is
    /// redacted). Sources use it to connect.
    pub async fn source_config(&self, name_or_id: &str) -> Result<SourceConfig> {
        let connection = self.connection(name_or_id).await?;
        let mut full = connection.config.clone();
        for sealed in self.inner.store.secrets(&connection.id).await? {
            let value =
                self.inner
                    .cipher
                    .open(&connection.id, connection.name.as_str(), &sealed)?;
            full[sealed.field.as_str()] = Value::String(value.expose_secret().to_owned());
        }
        SourceConfig::parse(connection.source_type, &full)
    }

    /// Subscribes to engine events (tests, fetch progress).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Event> {
        self.inner.events.subscribe()
    }

    /// The Parquet cache.
    pub fn cache(&self) -> &Cache {
        &self.inner.cache
    }

    fn forget_source(&self, id: &ConnectionId) {
        self.inner
            .sources
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }

    /// The open source of `connection`, opening it (lazily connecting) on first use.
    async fn source(&self, connection: &Connection) -> Result<Arc<dyn Source>> {
        if let Some(source) = self
            .inner
            .sources
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&connection.id)
        {
            return Ok(Arc::clone(source));
        }
        let config = self.source_config(connection.id.as_str()).await?;
        let opened = source::open(connection.name.as_str(), &config)?;
        Ok(Arc::clone(
            self.inner
                .sources
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(connection.id.clone())
                .or_insert(opened),
        ))
    }

    /// Connects to the source afresh, records the outcome on the connection, and returns it
    /// (a failure is returned as the classified error, after being recorded).
    pub async fn test_connection(&self, name_or_id: &str) -> Result<TestOutcome> {
        let connection = self.connection(name_or_id).await?;
        let outcome = match self.source(&connection).await {
            Ok(source) => source.test().await,
            Err(e) => Err(e),
        };
        let status = match &outcome {
            Ok(ok) => ConnectionStatus {
                last_tested_at: Some(chrono::Utc::now()),
                test_status: Some("ok".into()),
                test_latency_ms: Some(ok.latency.as_millis() as i64),
                test_error: None,
                server_version: Some(ok.server_version.clone()),
            },
            Err(e) => ConnectionStatus {
                last_tested_at: Some(chrono::Utc::now()),
                test_status: Some("failed".into()),
                test_latency_ms: None,
                test_error: Some(e.to_string()),
                server_version: None,
            },
        };
        self.inner
            .store
            .record_test(&connection.id, &status)
            .await?;
        self.inner.events.send(Event::ConnectionTested {
            connection_id: connection.id.clone(),
            ok: outcome.is_ok(),
            error: status.test_error.clone(),
        });
        outcome
    }

    /// Reads the source's tables and columns into the store: adds new tables, removes
    /// vanished ones with their cache, and invalidates the cache of changed ones.
    pub async fn discover_connection(&self, name_or_id: &str) -> Result<DiscoveryOutcome> {
        let connection = self.connection(name_or_id).await?;
        let source = self.source(&connection).await?;
        let found = source.discover().await?;
        let store = &self.inner.store;
        let before = store.tables(&connection.id).await?;
        let mut outcome = DiscoveryOutcome::default();
        for old in &before {
            match found
                .iter()
                .find(|t| t.schema == old.schema && t.name == old.name)
            {
                None => outcome.tables_removed += 1,
                Some(new) if !same_shape(old, new) => {
                    outcome.tables_changed += 1;
                    self.inner
                        .cache
                        .purge(&connection.id, Some(&old.schema), Some(&old.name))
                        .await?;
                }
                Some(_) => {}
            }
        }
        outcome.tables_added = found
            .iter()
            .filter(|t| {
                !before
                    .iter()
                    .any(|o| o.schema == t.schema && o.name == t.name)
            })
            .count() as u64;
        let removed_entries: Vec<CacheEntry> = store
            .cache_entries(&connection.id)
            .await?
            .into_iter()
            .filter(|e| {
                !found
                    .iter()
                    .any(|t| t.schema == e.table_schema && t.name == e.table_name)
            })
            .collect();
        store.replace_tables(&connection.id, &found).await?;
        self.inner.cache.retire_files(&removed_entries);
        self.reload_snapshot().await?;
        Ok(outcome)
    }

    async fn table_record(
        &self,
        connection: &Connection,
        schema: &str,
        table: &str,
    ) -> Result<TableRecord> {
        self.inner
            .store
            .table(&connection.id, schema, table)
            .await?
            .ok_or_else(|| self.no_such_table(connection, schema, Some(table)))
    }

    /// The error for a schema or table of `connection` that discovery did not find, with
    /// the nearest existing names.
    fn no_such_table(&self, connection: &Connection, schema: &str, table: Option<&str>) -> Error {
        let snapshot = self.snapshot();
        let (what, near) = match table {
            Some(table) => {
                let parts = [connection.name.to_string(), schema.into(), table.into()];
                (
                    format!("no table {}", parts.join(".")),
                    crate::sql::suggest::nearest_tables(&snapshot, &parts),
                )
            }
            None => {
                let schemas = snapshot
                    .connections
                    .get(connection.name.as_str())
                    .map(|c| c.schemas.keys().cloned().collect::<Vec<_>>())
                    .unwrap_or_default();
                (
                    format!("connection '{}' has no schema '{schema}'", connection.name),
                    crate::sql::suggest::closest(schema, schemas.iter())
                        .map(|s| format!("{}.{s}", connection.name))
                        .into_iter()
                        .collect(),
                )
            }
        };
        let hint = match near.as_slice() {
            [] => format!(
                " was discovered; run discover_connection('{}') if it is new, or check the names",
                connection.name
            ),
            names => format!(" was discovered; did you mean {}?", names.join(" or ")),
        };
        Error::NotFound(format!("{what}{hint}"))
    }

    /// The current cache entry of a table, fetching it from the source if it has none.
    pub async fn cached_table(
        &self,
        name_or_id: &str,
        schema: &str,
        table: &str,
    ) -> Result<CacheEntry> {
        let (connection, record, source) = self.fetchable(name_or_id, schema, table).await?;
        self.inner.cache.ensure(&connection, source, &record).await
    }

    /// Decodes a table's cache file into the memory tier (fetching the table first if it is
    /// not cached), as a statement reading it would in the background. Returns the bytes it
    /// holds there, or `None` when the tier is off or the table does not fit.
    pub async fn load_into_memory(
        &self,
        name_or_id: &str,
        schema: &str,
        table: &str,
    ) -> Result<Option<u64>> {
        let (connection, record, source) = self.fetchable(name_or_id, schema, table).await?;
        let entry = self
            .inner
            .cache
            .ensure(&connection, source, &record)
            .await?;
        let name = TableName::of(&connection, &record);
        let arrow = Arc::new(crate::table::schema_from_json(
            &entry.arrow_schema,
            &name.to_string(),
        )?);
        let lease = self.inner.cache.lease(&entry);
        Ok(self.inner.cache.memory().load(&lease, arrow, name).await)
    }

    /// Fetches a new version of a table; queries already running keep reading the old one.
    pub async fn refresh_table(
        &self,
        name_or_id: &str,
        schema: &str,
        table: &str,
    ) -> Result<CacheEntry> {
        let (connection, record, source) = self.fetchable(name_or_id, schema, table).await?;
        self.inner.cache.fetch(&connection, source, &record).await
    }

    /// Fetches a new version of every discovered table of a connection, one by one.
    pub async fn refresh_connection(&self, name_or_id: &str) -> Result<RefreshOutcome> {
        let connection = self.connection(name_or_id).await?;
        let mut outcome = RefreshOutcome::default();
        for table in self.inner.store.tables(&connection.id).await? {
            let entry = self
                .refresh_table(connection.id.as_str(), &table.schema, &table.name)
                .await?;
            outcome.tables += 1;
            outcome.rows += entry.row_count;
            outcome.bytes += entry.byte_size;
        }
        Ok(outcome)
    }

    /// What a fetch of one table needs: its connection, discovered record and source.
    async fn fetchable(
        &self,
        name_or_id: &str,
        schema: &str,
        table: &str,
    ) -> Result<(Connection, TableRecord, Arc<dyn Source>)> {
        let connection = match self.connection(name_or_id).await {
            Ok(connection) => connection,
            Err(e) if e.kind() == crate::error::Kind::NotFound => {
                let parts = [name_or_id.to_owned(), schema.to_owned(), table.to_owned()];
                let near = crate::sql::suggest::nearest_tables(&self.snapshot(), &parts);
                if near.is_empty() {
                    return Err(e);
                }
                return Err(Error::NotFound(format!(
                    "no table {} was discovered; did you mean {}?",
                    parts.join("."),
                    near.join(" or ")
                )));
            }
            Err(e) => return Err(e),
        };
        let record = self.table_record(&connection, schema, table).await?;
        let source = self.source(&connection).await?;
        Ok((connection, record, source))
    }

    /// Drops cache entries of a connection (optionally of one schema or table); the tables
    /// stay, and the next query fetches them again.
    pub async fn purge_cache(
        &self,
        name_or_id: &str,
        schema: Option<&str>,
        table: Option<&str>,
    ) -> Result<PurgeOutcome> {
        let connection = self.connection(name_or_id).await?;
        if let Some(schema) = schema {
            let tables = self.inner.store.tables(&connection.id).await?;
            let known = tables
                .iter()
                .any(|t| t.schema == schema && table.is_none_or(|name| t.name == name));
            if !known {
                let table_named = tables.iter().any(|t| t.schema == schema);
                return Err(if table_named {
                    self.no_such_table(&connection, schema, table)
                } else {
                    self.no_such_table(&connection, schema, None)
                });
            }
        }
        self.inner.cache.purge(&connection.id, schema, table).await
    }
}

/// What refreshing a connection fetched.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RefreshOutcome {
    /// Tables fetched.
    pub tables: i64,
    /// Rows fetched.
    pub rows: i64,
    /// Bytes of cache written.
    pub bytes: i64,
}

/// Whether two discoveries of a table have the same columns and types.
fn same_shape(old: &TableRecord, new: &TableRecord) -> bool {
    old.arrow_schema == new.arrow_schema
        && old.columns.len() == new.columns.len()
        && old.columns.iter().zip(&new.columns).all(|(a, b)| {
            a.name == b.name && a.source_type == b.source_type && a.is_nullable == b.is_nullable
        })
}
