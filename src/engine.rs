//! The Engine facade: opens the metadata store, holds the secret cipher and the DataFusion
//! session, and offers connection management and SQL. It wires parts; logic lives in them.

use std::path::PathBuf;
use std::sync::Arc;

use datafusion::dataframe::DataFrame;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::sql::parser::Statement;

use crate::cache::{Cache, CacheStorage};
use crate::config;
use crate::connections::Connections;
pub use crate::connections::snapshot::Snapshot;
use crate::connections::snapshot::SnapshotCell;
pub use crate::connections::{
    ConnectionRef, Created, DiscoveryOutcome, PurgeOutcome, RefreshOutcome, TestReport,
};
use crate::error::{Error, Result};
use crate::events::Events;
use crate::secrets::{KeySource, SecretCipher, SecretKey};
use crate::session::Session;
use crate::sql::context::Placement;
use crate::store;
use crate::store::StoreUrl;

/// The resolved configuration an engine runs with.
#[derive(Clone, Debug)]
pub struct Config {
    /// The data directory (store file, key file, cache).
    pub data_dir: PathBuf,
    /// The metadata store.
    pub store_url: StoreUrl,
    /// Bytes of cache files the memory tier keeps decoded at most (0: none).
    pub memory_cache: u64,
    /// Where the cache's Parquet files are: a folder in the data dir, or the cache URL.
    pub cache_location: String,
}

/// Builds an [`Engine`]. Anything not given explicitly is taken from the environment as
/// the CLI does: `QUARRY_HOME` (else `~/.quarry`), `QUARRY_STORE_URL` (else `quarry.db` in
/// the data dir), `QUARRY_SECRET_KEY` (else the key file in the data dir),
/// `QUARRY_MEMORY_CACHE` (else a quarter of the machine's memory) and `QUARRY_CACHE_URL`
/// (else the cache is in the data dir).
#[derive(Default)]
pub struct EngineBuilder {
    data_dir: Option<PathBuf>,
    store_url: Option<String>,
    key_source: Option<KeySource>,
    memory_cache: Option<u64>,
    cache_url: Option<String>,
    cache_options: Vec<(String, String)>,
    shared_grace: Option<std::time::Duration>,
    #[cfg(feature = "distributed")]
    ballista: Option<crate::sql::distributed::Ballista>,
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

    /// Keeps the Parquet cache at `url` (`s3://bucket/prefix`) instead of the data dir.
    /// The S3 client reads the `AWS_*` environment variables, then [`Self::cache_option`]s.
    pub fn cache_url(mut self, url: impl Into<String>) -> Self {
        self.cache_url = Some(url.into());
        self
    }

    /// On a store several processes share, keeps superseded cache versions (another process
    /// may still read one) and files not yet published for `grace` before deleting them
    /// ([`crate::cache::SHARED_GRACE`] unless set).
    pub fn shared_grace(mut self, grace: std::time::Duration) -> Self {
        self.shared_grace = Some(grace);
        self
    }

    /// Sends statements that read only cached tables to the Ballista cluster whose scheduler
    /// is at `url` (`df://host:port`); with `fallback`, a statement the cluster cannot run
    /// (it reads a live table, say) runs here instead of failing. The cluster's executors
    /// read the cache's files, so the cache must be on object storage they share
    /// ([`Self::cache_url`]).
    #[cfg(feature = "distributed")]
    pub fn ballista(mut self, url: &str, fallback: bool) -> Result<Self> {
        self.ballista = Some(crate::sql::distributed::Ballista::parse(url, fallback)?);
        Ok(self)
    }

    /// Sets an S3 option of the cache URL's client (`endpoint`, `region`,
    /// `access_key_id`, `secret_access_key`, `allow_http`, ...).
    pub fn cache_option(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.cache_options.push((key.into(), value.into()));
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
        let storage = match self.cache_url.or_else(|| {
            std::env::var(config::CACHE_URL_ENV)
                .ok()
                .filter(|u| !u.is_empty())
        }) {
            Some(url) => CacheStorage::open(&url, &self.cache_options)?,
            None => CacheStorage::local(&data_dir),
        };
        #[cfg(feature = "distributed")]
        if let Some(ballista) = &self.ballista
            && storage.is_local()
        {
            return Err(Error::InvalidBallistaUrl {
                url: ballista.url().to_owned(),
                problem: "the cluster's executors read the cache's files, so the cache must be \
                          on object storage they share: add --cache-url s3://bucket/prefix"
                    .into(),
            });
        }
        let cache_location = storage.location();
        let store = store::open(&store_url).await?;
        let events = Events::default();
        let cache = Cache::new(storage, Arc::clone(&store), events.clone(), memory_cache)
            .with_grace(self.shared_grace.unwrap_or(crate::cache::SHARED_GRACE));
        cache.collect_garbage().await?;
        let snapshot = Arc::new(SnapshotCell::default());
        snapshot.reload(store.as_ref()).await?;
        let runtime = Arc::new(RuntimeEnv::default());
        cache.storage().register(&runtime);
        let connections = Arc::new(Connections::new(
            store,
            SecretCipher::new(key_source),
            cache,
            events,
            snapshot,
        ));
        crate::connections::watch::start(&connections).await?;
        let placement = Placement {
            #[cfg(feature = "distributed")]
            ballista: self.ballista,
        };
        let session = session_over(&connections, &runtime, &placement);
        Ok(Engine {
            inner: Arc::new(EngineCore {
                config: Config {
                    data_dir,
                    store_url,
                    memory_cache,
                    cache_location,
                },
                connections,
                session,
                runtime,
                placement,
            }),
        })
    }
}

/// An embedded Quarry: connections, metadata store and SQL. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Engine {
    inner: Arc<EngineCore>,
}

/// The engine's shared state.
struct EngineCore {
    config: Config,
    connections: Arc<Connections>,
    /// The session of `Engine::sql` (the shell's and the library's).
    session: Session,
    /// Shared by every session: memory pool, spill files, file statistics.
    runtime: Arc<RuntimeEnv>,
    /// Where sessions run their statements.
    placement: Placement,
}

impl std::fmt::Debug for EngineCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("config", &self.config)
            .field("connections", &self.connections)
            .finish_non_exhaustive()
    }
}

/// A new session over `connections`, sharing `runtime`.
fn session_over(
    connections: &Arc<Connections>,
    runtime: &Arc<RuntimeEnv>,
    placement: &Placement,
) -> Session {
    Session::new(
        crate::sql::context::new(connections, runtime, placement),
        Arc::clone(connections.snapshot_cell()),
        Arc::clone(connections.store()),
    )
}
impl Engine {
    /// Starts building an engine.
    pub fn builder() -> EngineBuilder {
        EngineBuilder::default()
    }

    /// The configuration the engine runs with.
    pub fn config(&self) -> &Config {
        &self.inner.config
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
        session_over(
            &self.inner.connections,
            &self.inner.runtime,
            &self.inner.placement,
        )
    }

    /// Plans one SQL statement in the engine's session; run the returned frame to
    /// execute it.
    pub async fn sql(&self, sql: &str) -> Result<DataFrame> {
        self.inner.session.sql(sql).await
    }

    /// Refreshes tables that have a `refresh_interval` when they are due, in the background,
    /// until `shutdown` (the server and the interactive shell start it).
    pub fn start_refresh_schedule(&self) {
        self.inner.connections.start_refresh_schedule();
    }

    /// Checks the open connections every `keepalive_interval`, in the background, until
    /// `shutdown` (the server and the interactive shell start it).
    pub fn start_keepalive(&self) {
        self.inner.connections.start_keepalive();
    }

    /// Starts the scheduled refreshes due at `now` and returns them: the schedule's clock
    /// turned by hand (tests, tools).
    pub async fn run_scheduled(
        &self,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<crate::connections::ScheduledRefresh>> {
        self.inner.connections.run_scheduled(now).await
    }

    /// Splits a script into statements, in the SQL dialect Quarry speaks.
    pub fn parse(&self, sql: &str) -> Result<Vec<Statement>> {
        self.inner.session.parse(sql)
    }

    /// Plans one parsed statement in the engine's session; run the returned frame to
    /// execute it.
    pub async fn plan(&self, statement: Statement) -> Result<DataFrame> {
        self.inner.session.plan(statement).await
    }
}

/// Connection management is the `Connections` service's, written once: an engine offers
/// its methods (`create_connection`, `test_connection`, `discover_connection`,
/// `cached_table`, `refresh_table`, `purge_cache`, `snapshot`, ...) directly.
impl std::ops::Deref for Engine {
    type Target = Connections;

    fn deref(&self) -> &Connections {
        &self.inner.connections
    }
}
