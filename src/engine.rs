//! The Engine facade: opens the metadata store, holds the secret cipher and the DataFusion
//! session, and offers connection management and SQL. It wires parts; logic lives in them.

use std::path::PathBuf;
use std::sync::Arc;

use datafusion::dataframe::DataFrame;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::parser::{DFParser, Statement};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use secrecy::ExposeSecret;
use serde_json::Value;

use crate::config::{self, StoreUrl};
use crate::connection::{Connection, ConnectionName};
use crate::error::{Error, Result};
use crate::id::ConnectionId;
use crate::secrets::{KeySource, SecretCipher, SecretKey};
use crate::source::{SourceConfig, SourceType, merge_patch};
use crate::store::{self, ConfigUpdate, MetadataStore, NewConnection};

/// The resolved configuration an engine runs with.
#[derive(Clone, Debug)]
pub struct Config {
    /// The data directory (store file, key file, cache).
    pub data_dir: PathBuf,
    /// The metadata store.
    pub store_url: StoreUrl,
}

/// Builds an [`Engine`]. Anything not given explicitly is taken from the environment as
/// the CLI does: `QUARRY_HOME` (else `~/.quarry`), `QUARRY_STORE_URL` (else `quarry.db` in
/// the data dir) and `QUARRY_SECRET_KEY` (else the key file in the data dir).
#[derive(Default)]
pub struct EngineBuilder {
    data_dir: Option<PathBuf>,
    store_url: Option<String>,
    key_source: Option<KeySource>,
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
        let store = store::open(&store_url).await?;
        let session =
            SessionContext::new_with_config(SessionConfig::new().with_information_schema(true));
        Ok(Engine {
            inner: Arc::new(Inner {
                config: Config {
                    data_dir,
                    store_url,
                },
                store,
                cipher: SecretCipher::new(key_source),
                session,
            }),
        })
    }
}

/// An embedded Quarry: connections, metadata store and SQL. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    store: Arc<dyn MetadataStore>,
    cipher: SecretCipher,
    session: SessionContext,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("config", &self.config)
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
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

    /// The metadata store.
    pub fn store(&self) -> &Arc<dyn MetadataStore> {
        &self.inner.store
    }

    /// Plans one SQL statement; run the returned frame to execute it.
    pub async fn sql(&self, sql: &str) -> Result<DataFrame> {
        let mut statements = self.parse(sql)?;
        match (statements.pop(), statements.is_empty()) {
            (Some(statement), true) => self.execute(statement).await,
            (None, _) => Err(Error::Sql(datafusion::error::DataFusionError::Plan(
                "no SQL statement was given".into(),
            ))),
            (Some(_), false) => Err(Error::Sql(datafusion::error::DataFusionError::Plan(
                "several statements were given where one is expected; run them one at a time"
                    .into(),
            ))),
        }
    }

    /// Splits a script into statements, in the SQL dialect Quarry speaks.
    pub fn parse(&self, sql: &str) -> Result<Vec<Statement>> {
        Ok(DFParser::parse_sql_with_dialect(sql, &GenericDialect {})?
            .into_iter()
            .collect())
    }

    /// Plans one parsed statement; run the returned frame to execute it.
    pub async fn execute(&self, statement: Statement) -> Result<DataFrame> {
        let state = self.inner.session.state();
        let plan = state.statement_to_plan(statement).await?;
        Ok(self.inner.session.execute_logical_plan(plan).await?)
    }

    /// Creates a connection after validating its name and config; credentials in `config`
    /// are split out and stored encrypted.
    pub async fn create_connection(
        &self,
        name: &str,
        source_type: &str,
        config: Value,
    ) -> Result<Connection> {
        let name = ConnectionName::parse(name)?;
        let source_type = SourceType::parse(source_type)?;
        let (public, secrets) = SourceConfig::split_secrets(source_type, &config)?;
        let id = ConnectionId::generate();
        let secrets = secrets
            .iter()
            .map(|(field, value)| self.inner.cipher.seal(&id, field, value))
            .collect::<Result<_>>()?;
        self.inner
            .store
            .insert_connection(&NewConnection {
                id,
                name,
                source_type,
                config: public,
                secrets,
            })
            .await
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
        found.ok_or_else(|| Error::ConnectionNotFound(name_or_id.to_owned()))
    }

    /// Every connection, ordered by name.
    pub async fn connections(&self) -> Result<Vec<Connection>> {
        self.inner.store.connections().await
    }

    /// Renames a connection; its id, tables and cache stay as they are.
    pub async fn rename_connection(&self, name_or_id: &str, new_name: &str) -> Result<Connection> {
        let new_name = ConnectionName::parse(new_name)?;
        let connection = self.connection(name_or_id).await?;
        self.inner
            .store
            .rename_connection(&connection.id, &new_name)
            .await
    }

    /// Changes a connection's config with a JSON merge patch: keys given replace the old
    /// values, keys set to `null` are removed, others are kept (including the password).
    pub async fn update_connection(&self, name_or_id: &str, patch: Value) -> Result<Connection> {
        let connection = self.connection(name_or_id).await?;
        let source_type = connection.source_type;
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
        self.inner
            .store
            .update_connection(
                &connection.id,
                &ConfigUpdate {
                    config: public,
                    set_secrets,
                    remove_secrets,
                },
            )
            .await
    }

    /// Deletes a connection with its secrets, tables, columns and cache entries; returns it.
    pub async fn drop_connection(&self, name_or_id: &str) -> Result<Connection> {
        let connection = self.connection(name_or_id).await?;
        if !self.inner.store.delete_connection(&connection.id).await? {
            return Err(Error::ConnectionNotFound(name_or_id.to_owned()));
        }
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
}
