//! The connections service: creates, changes and drops connections (sealing their
//! secrets), keeps their open sources, tests and discovers them, and fetches, refreshes and
//! purges their tables through the cache. The engine, the SQL layer and the servers all
//! manage connections through it.

mod audited;
pub mod health;
mod reports;
mod schedule;
pub mod snapshot;
pub(crate) mod watch;

pub use reports::{DiscoveryOutcome, PurgeOutcome, RefreshOutcome, TableFreshness, TestReport};
pub use schedule::{RETRIES, ScheduledRefresh};

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use secrecy::ExposeSecret;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::snapshot::{Snapshot, SnapshotCell};
use crate::audit::Actor;
use crate::cache::{Cache, FetchMode};
use crate::connection::{Connection, ConnectionName, ConnectionStatus, SourceType, Visibility};
use crate::error::{Error, Result};
use crate::events::{Event, Events, TableName};
use crate::id::ConnectionId;
use crate::secrets::SecretCipher;
use crate::source::{
    self, Credential, QueryRequest, Source, SourceConfig, TestOutcome, merge_patch, secret_path,
};
use crate::store::{ConfigUpdate, MetadataStore, NewConnection};
use crate::table::{CacheEntry, TableRecord, TableRef};

/// Which connection a call is about: one the caller already read (no store read), its id,
/// or what a user typed (a name, or an id).
#[derive(Clone, Copy, Debug)]
pub enum ConnectionRef<'a> {
    /// A connection the caller holds.
    Connection(&'a Connection),
    /// A connection's id.
    Id(&'a ConnectionId),
    /// A name or an id, as typed.
    NameOrId(&'a str),
}

impl<'a> From<&'a Connection> for ConnectionRef<'a> {
    fn from(connection: &'a Connection) -> Self {
        ConnectionRef::Connection(connection)
    }
}

impl<'a> From<&'a ConnectionId> for ConnectionRef<'a> {
    fn from(id: &'a ConnectionId) -> Self {
        ConnectionRef::Id(id)
    }
}

impl<'a> From<&'a str> for ConnectionRef<'a> {
    fn from(name_or_id: &'a str) -> Self {
        ConnectionRef::NameOrId(name_or_id)
    }
}

impl<'a> From<&'a String> for ConnectionRef<'a> {
    fn from(name_or_id: &'a String) -> Self {
        ConnectionRef::NameOrId(name_or_id)
    }
}

/// Connections, their secrets, open sources and cached tables.
pub struct Connections {
    store: Arc<dyn MetadataStore>,
    cipher: SecretCipher,
    cache: Cache,
    events: Events,
    /// Open sources (and their session pools) by connection, dropped when it changes.
    sources: Mutex<HashMap<ConnectionId, Arc<dyn Source>>>,
    /// Connections and tables as planning sees them.
    snapshot: Arc<SnapshotCell>,
    /// The copies `auto` runs in the background, cancelled by `shutdown`.
    background: BackgroundCopies,
    /// The tables refreshed on a schedule, and when each is next due.
    schedule: schedule::Schedule,
    /// The live status of the connections open in this process.
    health: health::Health,
}

/// Copies of tables into the cache that no statement waits for.
#[derive(Default)]
struct BackgroundCopies {
    tasks: TaskTracker,
    cancel: CancellationToken,
    /// The tables being copied, so a copy is started once.
    running: Mutex<HashSet<TableRef>>,
    /// Woken whenever a copy ends.
    ended: tokio::sync::Notify,
}

impl std::fmt::Debug for Connections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connections")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

/// A connection just created, and what discovering its tables found.
#[derive(Debug)]
pub struct Created {
    /// The stored connection.
    pub connection: Connection,
    /// The discovery's outcome; an error leaves the connection without tables.
    pub discovery: Result<DiscoveryOutcome>,
}

impl Connections {
    /// The service over `store`, sealing secrets with `cipher`; `snapshot` is loaded.
    pub(crate) fn new(
        store: Arc<dyn MetadataStore>,
        cipher: SecretCipher,
        cache: Cache,
        events: Events,
        snapshot: Arc<SnapshotCell>,
    ) -> Self {
        Connections {
            store,
            cipher,
            cache,
            events,
            sources: Mutex::default(),
            snapshot,
            background: BackgroundCopies::default(),
            schedule: schedule::Schedule::default(),
            health: health::Health::default(),
        }
    }

    /// The discovered tables of `connection`, with their columns, by schema and name.
    pub async fn tables(&self, connection: &Connection) -> Result<Vec<TableRecord>> {
        self.store.tables(&connection.id).await
    }

    /// One discovered table, if discovery found it.
    pub async fn table(&self, table: &TableRef) -> Result<Option<TableRecord>> {
        self.store.table(table).await
    }

    /// The cache entries of `connection`'s tables.
    pub async fn cache_entries(&self, connection: &Connection) -> Result<Vec<CacheEntry>> {
        self.store.cache_entries(&connection.id).await
    }

    /// The cell planning reads the snapshot from.
    pub(crate) fn snapshot_cell(&self) -> &Arc<SnapshotCell> {
        &self.snapshot
    }

    /// Re-reads the snapshot planning uses, after a change to connections or tables.
    async fn reload_snapshot(&self) -> Result<()> {
        self.snapshot.reload(self.store.as_ref()).await
    }

    /// Reloads the snapshot after a change committed to a shared store, and closes the open
    /// sources of connections changed or dropped there (they reopen with the new config).
    async fn reload_from_store(&self) -> Result<()> {
        let before = self.snapshot();
        self.reload_snapshot().await?;
        let after = self.snapshot();
        let now: HashMap<&ConnectionId, &Connection> = after
            .connections
            .values()
            .map(|c| (&c.connection.id, &c.connection))
            .collect();
        for old in before.connections.values() {
            let old = &old.connection;
            if now
                .get(&old.id)
                .is_none_or(|new| new.updated_at != old.updated_at)
            {
                self.forget_source(&old.id);
            }
        }
        Ok(())
    }

    /// The connections and tables planning sees right now; reading it does no I/O.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.get()
    }

    /// The metadata store.
    pub fn store(&self) -> &Arc<dyn MetadataStore> {
        &self.store
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
        self.create_connection_with(name, source_type, config, Visibility::Public)
            .await
    }

    /// `create_connection`, with who sees the connection from the start.
    pub async fn create_connection_with(
        &self,
        name: &str,
        source_type: &str,
        config: Value,
        visibility: Visibility,
    ) -> Result<Created> {
        let connection = self
            .register_connection_with(name, source_type, config, visibility)
            .await?;
        let discovery = self.discover_connection(&connection).await;
        Ok(Created {
            connection,
            discovery,
        })
    }

    /// The work of the public method of the same name (`audited.rs`), unrecorded.
    async fn register_unaudited(
        &self,
        name: &str,
        source_type: &str,
        config: Value,
        visibility: Visibility,
    ) -> Result<Connection> {
        let name = ConnectionName::parse(name)?;
        let source_type = SourceType::parse(source_type)?;
        let config = source::expand_url(source_type, &config)?;
        let (public, secrets) = SourceConfig::split_secrets(source_type, &config)?;
        let id = ConnectionId::generate();
        let secrets = secrets
            .iter()
            .map(|(field, value)| self.cipher.seal(&id, field, value))
            .collect::<Result<_>>()?;
        let created = self
            .store
            .insert_connection(&NewConnection {
                id,
                name,
                source_type,
                config: public,
                secrets,
                owner: Actor::current().name,
                visibility,
            })
            .await?;
        self.reload_snapshot().await?;
        Ok(created)
    }

    /// The connection `which` refers to, read from the store unless the caller holds it.
    pub async fn connection<'a>(&self, which: impl Into<ConnectionRef<'a>>) -> Result<Connection> {
        Ok(self.resolve(which.into()).await?.into_owned())
    }

    /// The connection `which` names, if the current actor sees it: a private connection of
    /// another user does not exist for them.
    async fn resolve<'a>(&self, which: ConnectionRef<'a>) -> Result<Cow<'a, Connection>> {
        let found = self.resolve_any(which).await?;
        if Actor::current().sees(&found) {
            return Ok(found);
        }
        Err(Error::ConnectionNotFound(match which {
            ConnectionRef::Connection(c) => c.name.to_string(),
            ConnectionRef::Id(id) => id.to_string(),
            ConnectionRef::NameOrId(text) => text.to_owned(),
        }))
    }

    async fn resolve_any<'a>(&self, which: ConnectionRef<'a>) -> Result<Cow<'a, Connection>> {
        match which {
            ConnectionRef::Connection(connection) => Ok(Cow::Borrowed(connection)),
            ConnectionRef::Id(id) => self
                .store
                .connection(id)
                .await?
                .map(Cow::Owned)
                .ok_or_else(|| Error::ConnectionNotFound(id.to_string())),
            ConnectionRef::NameOrId(name_or_id) => {
                self.by_name_or_id(name_or_id).await.map(Cow::Owned)
            }
        }
    }

    /// The connection named `name_or_id`, or with that id.
    async fn by_name_or_id(&self, name_or_id: &str) -> Result<Connection> {
        let store = &self.store;
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
            let actor = Actor::current();
            let visible = snapshot
                .connections
                .iter()
                .filter(|(_, c)| actor.sees(&c.connection))
                .map(|(name, _)| name);
            match crate::suggest::closest(name_or_id, visible) {
                Some(near) => Error::NotFound(format!(
                    "no connection named or with id '{name_or_id}'; did you mean '{near}'?"
                )),
                None => Error::ConnectionNotFound(name_or_id.to_owned()),
            }
        })
    }

    /// Every connection, ordered by name.
    pub async fn connections(&self) -> Result<Vec<Connection>> {
        let actor = Actor::current();
        let mut all = self.store.connections().await?;
        all.retain(|c| actor.sees(c));
        Ok(all)
    }

    /// The work of the public method of the same name (`audited.rs`), unrecorded.
    async fn rename_unaudited<'a>(
        &self,
        which: impl Into<ConnectionRef<'a>>,
        new_name: &str,
    ) -> Result<Connection> {
        let new_name = ConnectionName::parse(new_name)?;
        let connection = self.resolve(which.into()).await?;
        let renamed = self
            .store
            .rename_connection(&connection.id, &new_name)
            .await?;
        self.reload_snapshot().await?;
        Ok(renamed)
    }

    /// The work of the public method of the same name (`audited.rs`), unrecorded.
    async fn update_unaudited<'a>(
        &self,
        which: impl Into<ConnectionRef<'a>>,
        patch: Value,
    ) -> Result<Connection> {
        let connection = self.resolve(which.into()).await?;
        let source_type = connection.source_type;
        let patch = source::expand_url(source_type, &patch)?;
        let merged = merge_patch(&connection.config, &patch, source_type)?;
        let (public, given) = SourceConfig::split_secrets(source_type, &merged)?;
        let set_secrets = given
            .iter()
            .map(|(field, value)| self.cipher.seal(&connection.id, field, value))
            .collect::<Result<_>>()?;
        // A secret set to null goes, and so does one now given by reference.
        let remove_secrets = source_type
            .secret_keys()
            .iter()
            .filter(|field| {
                secret_path::get(&patch, field).is_some_and(Value::is_null)
                    || secret_path::get(&public, field).is_some_and(Credential::is_reference)
            })
            .map(|field| field.to_string())
            .collect();
        let moved = source_type
            .location_keys()
            .iter()
            .any(|key| connection.config.get(*key) != public.get(*key));
        self.forget_source(&connection.id);
        if moved {
            self.cache.purge(&connection.id, None, None).await?;
        }
        let updated = self
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

    /// The work of the public method of the same name (`audited.rs`), unrecorded.
    async fn drop_unaudited<'a>(&self, which: impl Into<ConnectionRef<'a>>) -> Result<Connection> {
        let connection = self.resolve(which.into()).await?.into_owned();
        let entries = self.store.cache_entries(&connection.id).await?;
        if !self.store.delete_connection(&connection.id).await? {
            return Err(Error::ConnectionNotFound(connection.name.to_string()));
        }
        self.forget_source(&connection.id);
        self.cache.retire_files(&entries);
        self.reload_snapshot().await?;
        Ok(connection)
    }

    /// The connection's full config with its credentials decrypted (their `Debug` is
    /// redacted). Sources use it to connect.
    pub async fn source_config<'a>(
        &self,
        which: impl Into<ConnectionRef<'a>>,
    ) -> Result<SourceConfig> {
        let connection = self.resolve(which.into()).await?;
        let full = self.full_config(&connection).await?;
        SourceConfig::parse(connection.source_type, &full)
    }

    /// The connection's stored config with its credentials decrypted into it.
    async fn full_config(&self, connection: &Connection) -> Result<Value> {
        let mut full = connection.config.clone();
        for sealed in self.store.secrets(&connection.id).await? {
            let value = self
                .cipher
                .open(&connection.id, connection.name.as_str(), &sealed)?;
            let value = Value::String(value.expose_secret().to_owned());
            secret_path::set(&mut full, &sealed.field, value);
        }
        Ok(full)
    }

    /// Subscribes to engine events (tests, fetch progress).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// The Parquet cache.
    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    fn forget_source(&self, id: &ConnectionId) {
        self.sources
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        self.health.forget(id);
    }

    /// The open source of `connection` for a statement: fails at once while its server is
    /// known to be down (reconnecting or disconnected).
    pub(crate) async fn source(&self, connection: &Connection) -> Result<Arc<dyn Source>> {
        self.check_link(connection)?;
        self.open_source(connection).await
    }

    /// The open source of `connection`, opening it (lazily connecting) on first use.
    async fn open_source(&self, connection: &Connection) -> Result<Arc<dyn Source>> {
        if let Some(source) = self
            .sources
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&connection.id)
        {
            return Ok(Arc::clone(source));
        }
        let config = self.source_config(connection).await?;
        let opened = source::open(connection.name.as_str(), &config)?;
        self.health.opened(
            &connection.id,
            chrono::Utc::now(),
            health::keepalive_interval(connection),
        );
        Ok(Arc::clone(
            self.sources
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(connection.id.clone())
                .or_insert(opened),
        ))
    }

    /// The work of the public method of the same name (`audited.rs`), unrecorded.
    async fn test_unaudited<'a>(&self, which: impl Into<ConnectionRef<'a>>) -> Result<TestOutcome> {
        let connection = self.resolve(which.into()).await?;
        let outcome = match self.open_source(&connection).await {
            Ok(source) => source.test().await,
            Err(e) => Err(e),
        };
        // A test is a check: it may bring a reconnecting connection back at once.
        if let Some(interval) = health::keepalive_interval(&connection) {
            let result = outcome.as_ref().map(|_| ());
            self.record_link(&connection, chrono::Utc::now(), interval, result);
        }
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
        self.store.record_test(&connection.id, &status).await?;
        self.events.send(Event::ConnectionTested {
            connection_id: connection.id.clone(),
            ok: outcome.is_ok(),
            error: status.test_error.clone(),
        });
        outcome
    }

    /// Connects with a config that is not saved (a form's, before it is saved) and reports
    /// how it went; records nothing. With `base`, `config` is a merge patch of that
    /// connection's config, so that its stored credentials are used unless replaced.
    /// Messages name the connection `name` (else the edited one's name, else "new").
    pub async fn test_config(
        &self,
        source_type: SourceType,
        config: &Value,
        base: Option<&Connection>,
        name: Option<&str>,
    ) -> Result<TestOutcome> {
        let config = source::expand_url(source_type, config)?;
        let (default_name, full) = match base {
            Some(connection) => {
                if connection.source_type != source_type {
                    return Err(Error::config(
                        source_type.as_str(),
                        format!(
                            "connection '{}' is a {} connection; its source type cannot change",
                            connection.name,
                            connection.source_type.as_str()
                        ),
                    ));
                }
                let stored = self.full_config(connection).await?;
                let merged = merge_patch(&stored, &config, source_type)?;
                (connection.name.to_string(), merged)
            }
            None => ("new".to_owned(), config),
        };
        let name = match name.filter(|n| !n.trim().is_empty()) {
            Some(given) => given.to_owned(),
            None => default_name,
        };
        let parsed = SourceConfig::parse(source_type, &full)?;
        source::open(&name, &parsed)?.test().await
    }

    /// The work of the public method of the same name (`audited.rs`), unrecorded.
    async fn discover_unaudited<'a>(
        &self,
        which: impl Into<ConnectionRef<'a>>,
    ) -> Result<DiscoveryOutcome> {
        let connection = self.resolve(which.into()).await?;
        let source = self.source(&connection).await?;
        // The stored config was validated when saved.
        let filter = source::TableFilter::parse(&connection.config).unwrap_or_default();
        let mut found = source.discover().await?;
        found.retain(|t| filter.keeps(&t.schema, &t.name));
        let store = &self.store;
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
                    self.cache
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
            .filter(|e| !found.iter().any(|t| e.table.is(t)))
            .collect();
        store.replace_tables(&connection.id, &found).await?;
        self.cache.retire_files(&removed_entries);
        self.reload_snapshot().await?;
        Ok(outcome)
    }

    async fn table_record(
        &self,
        connection: &Connection,
        schema: &str,
        table: &str,
    ) -> Result<TableRecord> {
        self.store
            .table(&TableRef::new(&connection.id, schema, table))
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
                    snapshot.nearest_tables(&parts),
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
                    crate::suggest::closest(schema, schemas.iter())
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
    pub async fn cached_table<'a>(
        &self,
        which: impl Into<ConnectionRef<'a>>,
        schema: &str,
        table: &str,
    ) -> Result<CacheEntry> {
        let (connection, record) = self.fetchable(which.into(), schema, table).await?;
        self.fetch_table(&connection, &record, FetchMode::Ensure)
            .await
    }

    /// Fetches `record` of `connection` in `mode`, through the connection's open source:
    /// the call of a statement that planned with both in hand reads nothing else first.
    pub async fn fetch_table(
        &self,
        connection: &Connection,
        record: &TableRecord,
        mode: FetchMode,
    ) -> Result<CacheEntry> {
        let source = self.source(connection).await?;
        match self.cache.run(connection, source, record, mode).await {
            Err(e) if e.is_schema_change() && self.evolves(connection, record) => {
                // Discovery takes the new columns (and drops the old copy); then a whole fetch.
                // The connection's own setting asks for it, so whoever's query met the
                // change needs no right to change the connection.
                self.discover_unaudited(connection).await?;
                let record = self
                    .table_record(connection, &record.schema, &record.name)
                    .await?;
                let source = self.source(connection).await?;
                self.cache.run(connection, source, &record, mode).await
            }
            result => result,
        }
    }

    /// Whether `record`'s refreshes follow a schema change (`on_schema_change = evolve`).
    fn evolves(&self, connection: &Connection, record: &TableRecord) -> bool {
        record.refresh_settings(&connection.config).on_schema_change
            == Some(crate::refresh::OnSchemaChange::Evolve)
    }

    /// Runs a statement pushed down to `connection`'s source, streaming its rows into `sink`.
    pub(crate) async fn query(
        &self,
        connection: &Connection,
        request: &QueryRequest,
        sink: mpsc::Sender<datafusion::arrow::record_batch::RecordBatch>,
    ) -> Result<()> {
        let source = self.source(connection).await?;
        source.query(request, sink).await
    }

    /// The schema of the rows of `sql`, a statement in `connection`'s own dialect, learnt
    /// without running it (`source_query`).
    pub(crate) async fn describe_query(
        &self,
        connection: &Connection,
        sql: &str,
    ) -> Result<datafusion::arrow::datatypes::SchemaRef> {
        let source = self.source(connection).await?;
        source.describe(sql).await
    }

    /// Starts copying `record` into the cache without anyone waiting for it, unless a copy
    /// of it is already running here. A failure is logged; the next query starts again.
    pub(crate) fn cache_in_background(
        self: &Arc<Self>,
        connection: &Connection,
        record: &TableRecord,
    ) {
        self.in_background(connection, record, FetchMode::Ensure);
    }

    /// Starts refreshing `record`'s copy without anyone waiting for it (a stale copy being
    /// served), unless a background copy or refresh of it is already running here. A
    /// failure is recorded on the table and sent as an event; the old copy stays.
    pub(crate) fn refresh_in_background(
        self: &Arc<Self>,
        connection: &Connection,
        record: &TableRecord,
    ) {
        self.in_background(connection, record, FetchMode::Refresh);
    }

    fn in_background(
        self: &Arc<Self>,
        connection: &Connection,
        record: &TableRecord,
        mode: FetchMode,
    ) {
        let table = record.table_ref(&connection.id);
        {
            let mut running = self
                .background
                .running
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if self.background.cancel.is_cancelled() || !running.insert(table.clone()) {
                return;
            }
        }
        let (this, connection, record) = (Arc::clone(self), connection.clone(), record.clone());
        let cancel = self.background.cancel.clone();
        self.background.tasks.spawn(async move {
            let label = TableName::of(&connection, &record).to_string();
            tokio::select! {
                result = this.fetch_table(&connection, &record, mode) => {
                    if let Err(e) = result {
                        tracing::warn!(table = %label, error = %e, "background copy failed");
                    }
                }
                () = cancel.cancelled() => {
                    tracing::info!(table = %label, "background copy cancelled");
                }
            }
            this.background
                .running
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&table);
            this.background.ended.notify_waiters();
        });
    }

    /// Cancels the background copies still running and waits until each has cleaned up
    /// (its temp file removed, no entry published). A one-shot run calls this before it
    /// exits; the next run starts the copies again.
    pub async fn shutdown(&self) {
        self.background.cancel.cancel();
        self.background.tasks.close();
        self.background.tasks.wait().await;
        // Deletions and aborted uploads on an object store finish before the process ends.
        self.cache.storage().settle().await;
    }

    /// Waits until the background copies running now have finished (for tests and
    /// benchmarks that read the copy next).
    pub async fn background_copies_done(&self) {
        loop {
            let ended = self.background.ended.notified();
            let idle = self
                .background
                .running
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_empty();
            if idle {
                return;
            }
            ended.await;
        }
    }

    /// Decodes a table's cache file into the memory tier (fetching the table first if it is
    /// not cached), as a statement reading it would in the background. Returns the bytes it
    /// holds there, or `None` when the tier is off or the table does not fit.
    pub async fn load_into_memory<'a>(
        &self,
        which: impl Into<ConnectionRef<'a>>,
        schema: &str,
        table: &str,
    ) -> Result<Option<u64>> {
        let (connection, record) = self.fetchable(which.into(), schema, table).await?;
        let entry = self
            .fetch_table(&connection, &record, FetchMode::Ensure)
            .await?;
        let name = TableName::of(&connection, &record);
        let arrow = Arc::new(crate::table::schema_from_json(
            &entry.arrow_schema,
            &name.to_string(),
        )?);
        let lease = self.cache.lease(&entry);
        Ok(self.cache.memory().load(&lease, arrow, name).await)
    }

    /// The work of the public method of the same name (`audited.rs`), unrecorded.
    async fn refresh_table_unaudited<'a>(
        &self,
        which: impl Into<ConnectionRef<'a>>,
        schema: &str,
        table: &str,
    ) -> Result<CacheEntry> {
        let (connection, record) = self.fetchable(which.into(), schema, table).await?;
        self.fetch_table(&connection, &record, FetchMode::Refresh)
            .await
    }

    /// Merges a table's cached base and delta files into one file, as a new version;
    /// queries already running keep reading the old files. `None`: nothing to merge.
    pub async fn compact_table<'a>(
        &self,
        which: impl Into<ConnectionRef<'a>>,
        schema: &str,
        table: &str,
    ) -> Result<Option<CacheEntry>> {
        let (connection, record) = self.fetchable(which.into(), schema, table).await?;
        let source = self.source(&connection).await?;
        self.cache.compact(&connection, source, &record).await
    }

    /// The work of the public method of the same name (`audited.rs`), unrecorded.
    async fn refresh_connection_unaudited<'a>(
        &self,
        which: impl Into<ConnectionRef<'a>>,
    ) -> Result<RefreshOutcome> {
        let started = std::time::Instant::now();
        let connection = self.resolve(which.into()).await?;
        let mut entries = Vec::new();
        for table in self.store.tables(&connection.id).await? {
            entries.push(
                self.fetch_table(&connection, &table, FetchMode::Refresh)
                    .await?,
            );
        }
        Ok(RefreshOutcome::of(&entries, started))
    }

    /// What a fetch of one table needs: its connection and discovered record.
    async fn fetchable<'a>(
        &self,
        which: ConnectionRef<'a>,
        schema: &str,
        table: &str,
    ) -> Result<(Cow<'a, Connection>, TableRecord)> {
        let connection = match self.resolve(which).await {
            Ok(connection) => connection,
            Err(e) if e.kind() == crate::error::Kind::NotFound => {
                let typed = match which {
                    ConnectionRef::NameOrId(typed) => typed.to_owned(),
                    ConnectionRef::Id(id) => id.to_string(),
                    ConnectionRef::Connection(c) => c.name.to_string(),
                };
                let parts = [typed, schema.to_owned(), table.to_owned()];
                let near = self.snapshot().nearest_tables(&parts);
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
        Ok((connection, record))
    }

    /// Merges `patch` (a JSON object such as `{"mode": "live"}`) into one table's options,
    /// which outlive rediscovery, and returns the table with its new options.
    pub async fn set_table_options<'a>(
        &self,
        which: impl Into<ConnectionRef<'a>>,
        schema: &str,
        table: &str,
        patch: &Value,
    ) -> Result<(Connection, TableRecord)> {
        let (connection, mut record) = self.fetchable(which.into(), schema, table).await?;
        record.options = record.options.patched(patch)?;
        // A refresh setting that does not fit the table is refused now, not at its first
        // refresh.
        let settings = record.refresh_settings(&connection.config);
        let label = TableName::of(&connection, &record).to_string();
        crate::cache::IncrementalPlan::new(&settings, &record, connection.source_type, &label)?;
        let table_ref = TableRef::new(&connection.id, schema, table);
        if !self
            .store
            .set_table_options(&table_ref, &record.options)
            .await?
        {
            // Dropped or rediscovered away between the read and the write.
            return Err(self.no_such_table(&connection, schema, Some(table)));
        }
        self.reload_snapshot().await?;
        Ok((connection.into_owned(), record))
    }

    /// The work of the public method of the same name (`audited.rs`), unrecorded.
    async fn purge_unaudited<'a>(
        &self,
        which: impl Into<ConnectionRef<'a>>,
        schema: Option<&str>,
        table: Option<&str>,
    ) -> Result<PurgeOutcome> {
        let connection = self.resolve(which.into()).await?;
        if let Some(schema) = schema {
            let tables = self.store.tables(&connection.id).await?;
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
        self.cache.purge(&connection.id, schema, table).await
    }
}

/// Whether two discoveries of a table have the same columns and types (and, for files, the
/// same files, sizes and modification times).
fn same_shape(old: &TableRecord, new: &TableRecord) -> bool {
    old.arrow_schema == new.arrow_schema
        && old.column_changes(new).is_empty()
        && old.files == new.files
}
