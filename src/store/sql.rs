//! The SQL implementation of [`MetadataStore`], shared by the SQLite and PostgreSQL
//! backends through sqlx's `Any` driver: the queries are portable (`$n` parameters, text
//! timestamps, `ON CONFLICT` upserts), so both backends run the very same code.

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, AssertSqlSafe, Connection as _, Row};

use super::{
    CacheEntry, ColumnRecord, ConfigUpdate, Dialect, MetadataStore, NewConnection, StoreChange,
    TableLock, TableRecord, ViewRecord, migrations,
};
use crate::access::TableOptions;
use crate::connection::SourceType;
use crate::connection::{Connection, ConnectionName, ConnectionStatus};
use crate::error::{Error, Result};
use crate::file_set::FileSet;
use crate::id::ConnectionId;
use crate::refresh::{RefreshKind, RefreshStatus, Refreshed};
use crate::secrets::SealedSecret;
use crate::store::StoreUrl;
use crate::table::{ConstraintColumn, TableRef, group_constraints};

/// A metadata store in a SQLite file or a PostgreSQL database.
#[derive(Debug)]
pub struct SqlStore {
    pool: AnyPool,
    dialect: Dialect,
    describe: String,
    /// How to open a connection of its own (a table lock's, the change feed's).
    options: AnyConnectOptions,
    /// The PostgreSQL URL the change feed listens on; `None` for SQLite.
    listen_url: Option<String>,
    /// This process's hold on a SQLite store; `None` for PostgreSQL.
    single: Option<super::single_process::StoreLock>,
}

/// Store timestamps are RFC 3339 UTC text with microseconds: portable, and they sort.
pub(crate) fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn parse_timestamp(text: &str) -> Result<DateTime<Utc>, sqlx::Error> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            sqlx::Error::Decode(format!("bad timestamp '{text}' in the store: {e}").into())
        })
}

fn optional_timestamp(row: &AnyRow, column: &str) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    row.try_get::<Option<String>, _>(column)?
        .map(|t| parse_timestamp(&t))
        .transpose()
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(|db| db.is_unique_violation())
}

fn sqlite_url(path: &Path) -> Result<String> {
    let absolute =
        std::path::absolute(path).map_err(Error::io("cannot resolve the store path", path))?;
    let file_url = url::Url::from_file_path(&absolute).map_err(|()| Error::InvalidStoreUrl {
        url: path.display().to_string(),
        problem: "not a usable file path".into(),
    })?;
    Ok(format!("sqlite://{}?mode=rwc", file_url.path()))
}

const CACHE_COLUMNS: &str = "connection_id, table_schema, table_name, version, path, \
     delta_paths, row_count, byte_size, arrow_schema, fetched_at, is_current, skipped_rows";

fn cache_entry_from_row(row: &AnyRow) -> Result<CacheEntry, sqlx::Error> {
    let id: String = row.try_get("connection_id")?;
    Ok(CacheEntry {
        table: TableRef {
            connection_id: ConnectionId::parse(&id)
                .map_err(|e| sqlx::Error::Decode(e.to_string().into()))?,
            schema: row.try_get("table_schema")?,
            table: row.try_get("table_name")?,
        },
        version: row.try_get("version")?,
        path: row.try_get("path")?,
        deltas: match row.try_get::<Option<String>, _>("delta_paths")? {
            Some(text) => serde_json::from_str(&text).map_err(|e| {
                sqlx::Error::Decode(format!("bad delta paths in the store: {e}").into())
            })?,
            None => Vec::new(),
        },
        row_count: row.try_get("row_count")?,
        byte_size: row.try_get("byte_size")?,
        arrow_schema: row.try_get("arrow_schema")?,
        fetched_at: parse_timestamp(&row.try_get::<String, _>("fetched_at")?)?,
        is_current: row.try_get::<i64, _>("is_current")? != 0,
        skipped_rows: row.try_get("skipped_rows")?,
    })
}

/// Records a successful refresh on its table: the counts of incremental refreshes since the
/// last full one are kept by the store, so concurrent writers never lose one.
async fn set_refreshed(
    conn: &mut sqlx::AnyConnection,
    table: &TableRef,
    refreshed: &Refreshed,
) -> Result<(), sqlx::Error> {
    let full = refreshed.kind == RefreshKind::Full;
    sqlx::query(
        "UPDATE source_tables SET refresh_kind = $1, refreshed_at = $2, refresh_rows = $3,
             refresh_ms = $4,
             full_refreshed_at = CASE WHEN $5 = 1 THEN $2 ELSE full_refreshed_at END,
             refreshes_since_full = CASE WHEN $5 = 1 THEN 0 ELSE refreshes_since_full + 1 END,
             refresh_error = NULL, refresh_error_at = NULL
         WHERE connection_id = $6 AND table_schema = $7 AND table_name = $8",
    )
    .bind(refreshed.kind.as_str())
    .bind(timestamp(refreshed.at))
    .bind(refreshed.rows)
    .bind(refreshed.duration.as_millis() as i64)
    .bind(i64::from(full))
    .bind(table.connection_id.as_str())
    .bind(&table.schema)
    .bind(&table.table)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

const USER_COLUMNS: &str = "name, role, password_hash, created_at";

/// A row of `users` (its `USER_COLUMNS`).
fn user_from_row(row: &AnyRow) -> Result<crate::store::UserRecord> {
    let read = || -> std::result::Result<_, sqlx::Error> {
        Ok((
            row.try_get::<String, _>("name")?,
            row.try_get::<String, _>("role")?,
            row.try_get::<String, _>("password_hash")?,
            parse_timestamp(&row.try_get::<String, _>("created_at")?)?,
        ))
    };
    let (name, role, password_hash, created_at) = read().map_err(Error::store("reading users"))?;
    Ok(crate::store::UserRecord {
        name,
        role: crate::audit::Role::parse(&role)?,
        password_hash,
        created_at,
    })
}

const CONNECTION_COLUMNS: &str = "id, name, source_type, config, created_at, updated_at, owner, visibility, \
     last_tested_at, test_status, test_latency_ms, test_error, server_version";

impl SqlStore {
    /// The tables of connection `id`, or only `only`, with their columns.
    async fn load_tables(
        &self,
        id: &ConnectionId,
        only: Option<&TableRef>,
    ) -> Result<Vec<TableRecord>> {
        let context = match only {
            Some(t) => format!("reading the table {}.{} of {id}", t.schema, t.table),
            None => format!("reading the tables of {id}"),
        };
        // One table is read by its key; the filter is written once for both queries.
        let filter = if only.is_some() {
            "connection_id = $1 AND table_schema = $2 AND table_name = $3"
        } else {
            "connection_id = $1"
        };
        let (schema, table) = only.map_or(("", ""), |t| (t.schema.as_str(), t.table.as_str()));
        let load = async {
            let mut query = sqlx::query(AssertSqlSafe(format!(
                "SELECT table_schema, table_name, column_name, ordinal_position, source_type,
                        numeric_precision, numeric_scale, is_nullable, arrow_type
                 FROM source_columns WHERE {filter}
                 ORDER BY table_schema, table_name, ordinal_position"
            )))
            .bind(id.as_str());
            if only.is_some() {
                query = query.bind(schema).bind(table);
            }
            let column_rows = query.fetch_all(&self.pool).await?;
            let mut columns: HashMap<(String, String), Vec<ColumnRecord>> = HashMap::new();
            for row in &column_rows {
                columns
                    .entry((row.try_get("table_schema")?, row.try_get("table_name")?))
                    .or_default()
                    .push(ColumnRecord {
                        name: row.try_get("column_name")?,
                        ordinal_position: row.try_get("ordinal_position")?,
                        source_type: row.try_get("source_type")?,
                        numeric_precision: row.try_get("numeric_precision")?,
                        numeric_scale: row.try_get("numeric_scale")?,
                        is_nullable: row.try_get::<i64, _>("is_nullable")? != 0,
                        arrow_type: row.try_get("arrow_type")?,
                    });
            }
            let mut query = sqlx::query(AssertSqlSafe(format!(
                "SELECT table_schema, table_name, constraint_type, constraint_name,
                        ordinal_position, column_name, referenced_schema, referenced_table,
                        referenced_column
                 FROM source_constraints WHERE {filter}"
            )))
            .bind(id.as_str());
            if only.is_some() {
                query = query.bind(schema).bind(table);
            }
            let mut constraint_columns = Vec::new();
            for row in query.fetch_all(&self.pool).await? {
                constraint_columns.extend(ConstraintColumn::read(&row)?);
            }
            let mut constraints = group_constraints(constraint_columns);
            let mut query = sqlx::query(AssertSqlSafe(format!(
                "SELECT table_schema, table_name, table_type, row_estimate, byte_estimate,
                        options, arrow_schema, discovered_at, fetch_count, refresh_kind,
                        refreshed_at, refresh_rows, refresh_ms, full_refreshed_at,
                        refreshes_since_full, refresh_error, refresh_error_at, file_set
                 FROM source_tables WHERE {filter}
                 ORDER BY table_schema, table_name"
            )))
            .bind(id.as_str());
            if only.is_some() {
                query = query.bind(schema).bind(table);
            }
            let table_rows = query.fetch_all(&self.pool).await?;
            table_rows
                .iter()
                .map(|row| {
                    let schema: String = row.try_get("table_schema")?;
                    let name: String = row.try_get("table_name")?;
                    Ok(TableRecord {
                        columns: columns
                            .remove(&(schema.clone(), name.clone()))
                            .unwrap_or_default(),
                        constraints: constraints
                            .remove(&(schema.clone(), name.clone()))
                            .unwrap_or_default(),
                        schema,
                        name,
                        table_type: row.try_get("table_type")?,
                        row_estimate: row.try_get("row_estimate")?,
                        byte_estimate: row.try_get("byte_estimate")?,
                        options: TableOptions::from_json(
                            row.try_get::<Option<String>, _>("options")?.as_deref(),
                        ),
                        arrow_schema: row.try_get("arrow_schema")?,
                        discovered_at: parse_timestamp(
                            &row.try_get::<String, _>("discovered_at")?,
                        )?,
                        fetch_count: row.try_get("fetch_count")?,
                        refresh: RefreshStatus {
                            kind: row
                                .try_get::<Option<String>, _>("refresh_kind")?
                                .and_then(|k| RefreshKind::parse(&k)),
                            refreshed_at: optional_timestamp(row, "refreshed_at")?,
                            rows: row.try_get("refresh_rows")?,
                            duration_ms: row.try_get("refresh_ms")?,
                            full_at: optional_timestamp(row, "full_refreshed_at")?,
                            since_full: row.try_get("refreshes_since_full")?,
                            error: row.try_get("refresh_error")?,
                            error_at: optional_timestamp(row, "refresh_error_at")?,
                        },
                        files: row
                            .try_get::<Option<String>, _>("file_set")?
                            .and_then(|text| FileSet::from_json(&text)),
                    })
                })
                .collect::<Result<Vec<_>, sqlx::Error>>()
        };
        load.await.map_err(Error::store(context))
    }

    /// Opens the store at `url`, creating it if needed, and applies pending migrations.
    pub async fn open(url: &StoreUrl) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let describe = url.to_string();
        let mut single = None;
        let (dialect, any_url, listen_url) = match url {
            StoreUrl::Sqlite(path) => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)
                        .map_err(Error::io("cannot create the store's directory", dir))?;
                }
                single = Some(super::single_process::claim(path));
                (Dialect::Sqlite, sqlite_url(path)?, None)
            }
            StoreUrl::Postgres(url) => (Dialect::Postgres, url.clone(), Some(url.clone())),
        };
        let options =
            AnyConnectOptions::from_str(&any_url).map_err(|e| Error::InvalidStoreUrl {
                url: describe.clone(),
                problem: e.to_string(),
            })?;
        // One direct connection first: a pool would hide the cause (refused, auth, missing
        // database) behind "pool timed out".
        let probe = sqlx::AnyConnection::connect_with(&options)
            .await
            .map_err(Error::store(format!(
                "connecting to the store at {describe}"
            )))?;
        let _ = probe.close().await;
        let pool = AnyPoolOptions::new()
            .max_connections(dialect.max_connections())
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options.clone())
            .await
            .map_err(Error::store(format!("opening the store at {describe}")))?;
        if dialect == Dialect::Sqlite {
            // Persistent in the file: readers never block the writer.
            sqlx::raw_sql("PRAGMA journal_mode=WAL")
                .execute(&pool)
                .await
                .map_err(Error::store(format!("enabling WAL on {describe}")))?;
        }
        migrations::apply(&pool, dialect, &describe).await?;
        Ok(SqlStore {
            pool,
            dialect,
            describe,
            options,
            listen_url,
            single,
        })
    }

    /// The backend dialect.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// A transaction that holds the write lock from its first statement. SQLite fails a
    /// deferred transaction at once ("database is locked") when it reads, another
    /// connection writes, and it then tries to write; taking the lock up front makes it
    /// wait its turn instead (busy timeout).
    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, sqlx::Error> {
        self.pool.begin_with(self.dialect.begin_exclusive()).await
    }

    /// The underlying pool, for tests and tooling that inspect the store directly.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Closes the pool, waiting for connections to be returned.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    async fn secret_fields(
        &self,
        id: Option<&ConnectionId>,
    ) -> Result<HashMap<String, Vec<String>>> {
        let rows = match id {
            Some(id) => sqlx::query(
                "SELECT connection_id, field FROM secrets WHERE connection_id = $1 ORDER BY field",
            )
            .bind(id.as_str())
            .fetch_all(&self.pool)
            .await,
            None => {
                sqlx::query("SELECT connection_id, field FROM secrets ORDER BY field")
                    .fetch_all(&self.pool)
                    .await
            }
        }
        .map_err(Error::store("reading secret fields"))?;
        let mut fields: HashMap<String, Vec<String>> = HashMap::new();
        for row in rows {
            let conn: String = row
                .try_get("connection_id")
                .map_err(Error::store("reading secret fields"))?;
            let field: String = row
                .try_get("field")
                .map_err(Error::store("reading secret fields"))?;
            fields.entry(conn).or_default().push(field);
        }
        Ok(fields)
    }

    async fn load_connections(&self, filter: &str, value: Option<&str>) -> Result<Vec<Connection>> {
        let sql = format!("SELECT {CONNECTION_COLUMNS} FROM connections {filter} ORDER BY name");
        let mut query = sqlx::query(AssertSqlSafe(sql));
        if let Some(value) = value {
            query = query.bind(value);
        }
        let rows = query
            .fetch_all(&self.pool)
            .await
            .map_err(Error::store("reading connections"))?;
        let only = match (rows.len(), rows.first()) {
            (1, Some(row)) => Some(ConnectionId::parse(
                &row.try_get::<String, _>("id")
                    .map_err(Error::store("reading connections"))?,
            )?),
            _ => None,
        };
        let mut secret_fields = self.secret_fields(only.as_ref()).await?;
        rows.iter()
            .map(|row| self.connection_from_row(row, &mut secret_fields))
            .collect()
    }

    fn connection_from_row(
        &self,
        row: &AnyRow,
        secret_fields: &mut HashMap<String, Vec<String>>,
    ) -> Result<Connection> {
        let read = || -> Result<_, sqlx::Error> {
            Ok((
                row.try_get::<String, _>("id")?,
                row.try_get::<String, _>("name")?,
                row.try_get::<String, _>("source_type")?,
                row.try_get::<String, _>("config")?,
                (
                    row.try_get::<String, _>("owner")?,
                    row.try_get::<String, _>("visibility")?,
                ),
                parse_timestamp(&row.try_get::<String, _>("created_at")?)?,
                parse_timestamp(&row.try_get::<String, _>("updated_at")?)?,
                ConnectionStatus {
                    last_tested_at: optional_timestamp(row, "last_tested_at")?,
                    test_status: row.try_get("test_status")?,
                    test_latency_ms: row.try_get("test_latency_ms")?,
                    test_error: row.try_get("test_error")?,
                    server_version: row.try_get("server_version")?,
                },
            ))
        };
        let (id, name, source_type, config, (owner, visibility), created_at, updated_at, status) =
            read().map_err(Error::store("reading a connection"))?;
        let config = serde_json::from_str(&config).map_err(|e| Error::Store {
            context: format!("reading the config of connection {id}"),
            source: sqlx::Error::Decode(e.into()),
        })?;
        Ok(Connection {
            secret_fields: secret_fields.remove(&id).unwrap_or_default(),
            id: ConnectionId::parse(&id)?,
            name: ConnectionName::parse(&name)?,
            source_type: SourceType::parse(&source_type)?,
            config,
            created_at,
            updated_at,
            status,
            owner,
            visibility: crate::connection::Visibility::parse(&visibility).unwrap_or_default(),
        })
    }

    async fn load_cache_entries(
        &self,
        filter: &str,
        value: Option<&str>,
    ) -> Result<Vec<CacheEntry>> {
        let sql = format!(
            "SELECT {CACHE_COLUMNS} FROM cache_entries {filter}
             ORDER BY connection_id, table_schema, table_name, version"
        );
        let mut query = sqlx::query(AssertSqlSafe(sql));
        if let Some(value) = value {
            query = query.bind(value);
        }
        query
            .fetch_all(&self.pool)
            .await
            .and_then(|rows| rows.iter().map(cache_entry_from_row).collect())
            .map_err(Error::store("reading cache entries"))
    }

    async fn must_get(&self, id: &ConnectionId) -> Result<Connection> {
        self.connection(id)
            .await?
            .ok_or_else(|| Error::ConnectionNotFound(id.to_string()))
    }
}

async fn upsert_secrets(
    tx: &mut sqlx::AnyConnection,
    id: &ConnectionId,
    secrets: &[SealedSecret],
) -> Result<(), sqlx::Error> {
    for secret in secrets {
        sqlx::query(
            "INSERT INTO secrets (connection_id, field, key_id, nonce, ciphertext)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (connection_id, field) DO UPDATE
             SET key_id = excluded.key_id, nonce = excluded.nonce, ciphertext = excluded.ciphertext",
        )
        .bind(id.as_str())
        .bind(&secret.field)
        .bind(&secret.key_id)
        .bind(&secret.nonce)
        .bind(&secret.ciphertext)
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

#[async_trait]
impl MetadataStore for SqlStore {
    fn describe(&self) -> String {
        self.describe.clone()
    }

    fn is_shared(&self) -> bool {
        self.listen_url.is_some() || self.single.as_ref().is_some_and(|s| s.contended)
    }

    async fn lock_table(&self, table: &TableRef) -> Result<TableLock> {
        match self.dialect {
            // One process per SQLite store: its own per-table lock is enough.
            Dialect::Sqlite => Ok(TableLock::local()),
            Dialect::Postgres => {
                super::shared::lock_table(&self.options, &self.describe, table).await
            }
        }
    }

    async fn watch(&self) -> Result<Option<tokio::sync::mpsc::Receiver<StoreChange>>> {
        match &self.listen_url {
            Some(url) => super::shared::watch(url, &self.describe).await.map(Some),
            None => Ok(None),
        }
    }

    async fn insert_connection(&self, new: &NewConnection) -> Result<Connection> {
        let now = timestamp(Utc::now());
        let insert = async {
            let mut tx = self.begin_write().await?;
            sqlx::query(
                "INSERT INTO connections
                 (id, name, source_type, config, created_at, updated_at, owner, visibility)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(new.id.as_str())
            .bind(new.name.as_str())
            .bind(new.source_type.as_str())
            .bind(new.config.to_string())
            .bind(&now)
            .bind(&now)
            .bind(&new.owner)
            .bind(new.visibility.as_str())
            .execute(&mut *tx)
            .await?;
            upsert_secrets(&mut tx, &new.id, &new.secrets).await?;
            tx.commit().await
        };
        insert.await.map_err(|e| {
            if is_unique_violation(&e) {
                Error::ConnectionExists {
                    name: new.name.to_string(),
                }
            } else {
                Error::store(format!("creating connection '{}'", new.name))(e)
            }
        })?;
        self.must_get(&new.id).await
    }

    async fn connection(&self, id: &ConnectionId) -> Result<Option<Connection>> {
        Ok(self
            .load_connections("WHERE id = $1", Some(id.as_str()))
            .await?
            .pop())
    }

    async fn connection_by_name(&self, name: &ConnectionName) -> Result<Option<Connection>> {
        Ok(self
            .load_connections("WHERE name = $1", Some(name.as_str()))
            .await?
            .pop())
    }

    async fn connections(&self) -> Result<Vec<Connection>> {
        self.load_connections("", None).await
    }

    async fn rename_connection(
        &self,
        id: &ConnectionId,
        name: &ConnectionName,
    ) -> Result<Connection> {
        let result = sqlx::query("UPDATE connections SET name = $1, updated_at = $2 WHERE id = $3")
            .bind(name.as_str())
            .bind(timestamp(Utc::now()))
            .bind(id.as_str())
            .execute(&self.pool)
            .await
            .map_err(|e| {
                if is_unique_violation(&e) {
                    Error::ConnectionExists {
                        name: name.to_string(),
                    }
                } else {
                    Error::store(format!("renaming connection {id}"))(e)
                }
            })?;
        if result.rows_affected() == 0 {
            return Err(Error::ConnectionNotFound(id.to_string()));
        }
        self.must_get(id).await
    }

    async fn update_connection(
        &self,
        id: &ConnectionId,
        update: &ConfigUpdate,
    ) -> Result<Connection> {
        let apply = async {
            let mut tx = self.begin_write().await?;
            let changed =
                sqlx::query("UPDATE connections SET config = $1, updated_at = $2 WHERE id = $3")
                    .bind(update.config.to_string())
                    .bind(timestamp(Utc::now()))
                    .bind(id.as_str())
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
            if changed == 0 {
                return Ok(false);
            }
            upsert_secrets(&mut tx, id, &update.set_secrets).await?;
            for field in &update.remove_secrets {
                sqlx::query("DELETE FROM secrets WHERE connection_id = $1 AND field = $2")
                    .bind(id.as_str())
                    .bind(field)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok(true)
        };
        let found = apply
            .await
            .map_err(Error::store(format!("updating connection {id}")))?;
        if !found {
            return Err(Error::ConnectionNotFound(id.to_string()));
        }
        self.must_get(id).await
    }

    async fn delete_connection(&self, id: &ConnectionId) -> Result<bool> {
        let result = sqlx::query("DELETE FROM connections WHERE id = $1")
            .bind(id.as_str())
            .execute(&self.pool)
            .await
            .map_err(Error::store(format!("deleting connection {id}")))?;
        Ok(result.rows_affected() > 0)
    }

    async fn secrets(&self, id: &ConnectionId) -> Result<Vec<SealedSecret>> {
        let rows = sqlx::query(
            "SELECT field, key_id, nonce, ciphertext FROM secrets WHERE connection_id = $1 ORDER BY field",
        )
        .bind(id.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(Error::store(format!("reading the secrets of {id}")))?;
        rows.iter()
            .map(|row| {
                Ok(SealedSecret {
                    field: row.try_get("field")?,
                    key_id: row.try_get("key_id")?,
                    nonce: row.try_get("nonce")?,
                    ciphertext: row.try_get("ciphertext")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Error::store(format!("reading the secrets of {id}")))
    }

    async fn replace_tables(&self, id: &ConnectionId, tables: &[TableRecord]) -> Result<()> {
        let apply = async {
            let mut tx = self.begin_write().await?;
            let existing: Vec<(String, String)> = sqlx::query(
                "SELECT table_schema, table_name FROM source_tables WHERE connection_id = $1",
            )
            .bind(id.as_str())
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|row| Ok((row.try_get("table_schema")?, row.try_get("table_name")?)))
            .collect::<Result<_, sqlx::Error>>()?;
            for (schema, name) in &existing {
                if !tables
                    .iter()
                    .any(|t| &t.schema == schema && &t.name == name)
                {
                    sqlx::query(
                        "DELETE FROM source_tables
                         WHERE connection_id = $1 AND table_schema = $2 AND table_name = $3",
                    )
                    .bind(id.as_str())
                    .bind(schema)
                    .bind(name)
                    .execute(&mut *tx)
                    .await?;
                }
            }
            for table in tables {
                sqlx::query(
                    "INSERT INTO source_tables (connection_id, table_schema, table_name, table_type,
                         row_estimate, byte_estimate, arrow_schema, discovered_at, fetch_count,
                         file_set)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
                     ON CONFLICT (connection_id, table_schema, table_name) DO UPDATE
                     SET table_type = excluded.table_type, row_estimate = excluded.row_estimate,
                         byte_estimate = excluded.byte_estimate,
                         arrow_schema = excluded.arrow_schema, discovered_at = excluded.discovered_at,
                         file_set = excluded.file_set",
                )
                .bind(id.as_str())
                .bind(&table.schema)
                .bind(&table.name)
                .bind(&table.table_type)
                .bind(table.row_estimate)
                .bind(table.byte_estimate)
                .bind(&table.arrow_schema)
                .bind(timestamp(table.discovered_at))
                .bind(table.fetch_count)
                .bind(table.files.as_ref().map(FileSet::to_json))
                .execute(&mut *tx)
                .await?;
                for discovered in ["source_columns", "source_constraints"] {
                    sqlx::query(AssertSqlSafe(format!(
                        "DELETE FROM {discovered}
                         WHERE connection_id = $1 AND table_schema = $2 AND table_name = $3"
                    )))
                    .bind(id.as_str())
                    .bind(&table.schema)
                    .bind(&table.name)
                    .execute(&mut *tx)
                    .await?;
                }
                for column in &table.columns {
                    sqlx::query(
                        "INSERT INTO source_columns (connection_id, table_schema, table_name,
                             column_name, ordinal_position, source_type, numeric_precision,
                             numeric_scale, is_nullable, arrow_type)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                    )
                    .bind(id.as_str())
                    .bind(&table.schema)
                    .bind(&table.name)
                    .bind(&column.name)
                    .bind(column.ordinal_position)
                    .bind(&column.source_type)
                    .bind(column.numeric_precision)
                    .bind(column.numeric_scale)
                    .bind(i64::from(column.is_nullable))
                    .bind(&column.arrow_type)
                    .execute(&mut *tx)
                    .await?;
                }
                for constraint in &table.constraints {
                    for row in constraint.column_rows(&table.schema, &table.name) {
                        let (ref_schema, ref_table, ref_column) = row.referenced_parts();
                        sqlx::query(
                            "INSERT INTO source_constraints (connection_id, table_schema,
                                 table_name, constraint_type, constraint_name, ordinal_position,
                                 column_name, referenced_schema, referenced_table,
                                 referenced_column)
                             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                        )
                        .bind(id.as_str())
                        .bind(&row.schema)
                        .bind(&row.table)
                        .bind(row.kind.as_str())
                        .bind(&row.name)
                        .bind(row.position)
                        .bind(&row.column)
                        .bind(ref_schema)
                        .bind(ref_table)
                        .bind(ref_column)
                        .execute(&mut *tx)
                        .await?;
                    }
                }
            }
            tx.commit().await
        };
        apply
            .await
            .map_err(Error::store(format!("saving the tables of {id}")))
    }

    async fn tables(&self, id: &ConnectionId) -> Result<Vec<TableRecord>> {
        self.load_tables(id, None).await
    }

    async fn table(&self, table: &TableRef) -> Result<Option<TableRecord>> {
        Ok(self
            .load_tables(&table.connection_id, Some(table))
            .await?
            .pop())
    }

    async fn set_table_options(&self, table: &TableRef, options: &TableOptions) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE source_tables SET options = $1
             WHERE connection_id = $2 AND table_schema = $3 AND table_name = $4",
        )
        .bind(options.to_json())
        .bind(table.connection_id.as_str())
        .bind(&table.schema)
        .bind(&table.table)
        .execute(&self.pool)
        .await
        .map_err(Error::store(format!(
            "setting the options of {}.{}",
            table.schema, table.table
        )))?;
        Ok(done.rows_affected() > 0)
    }

    async fn record_refresh(&self, table: &TableRef, refreshed: &Refreshed) -> Result<()> {
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(Error::store("recording a refresh"))?;
        set_refreshed(&mut conn, table, refreshed)
            .await
            .map_err(Error::store(format!(
                "recording the refresh of {}.{}",
                table.schema, table.table
            )))
    }

    async fn record_refresh_error(&self, table: &TableRef, error: &str) -> Result<()> {
        sqlx::query(
            "UPDATE source_tables SET refresh_error = $1, refresh_error_at = $2
             WHERE connection_id = $3 AND table_schema = $4 AND table_name = $5",
        )
        .bind(error)
        .bind(timestamp(Utc::now()))
        .bind(table.connection_id.as_str())
        .bind(&table.schema)
        .bind(&table.table)
        .execute(&self.pool)
        .await
        .map_err(Error::store(format!(
            "recording the failed refresh of {}.{}",
            table.schema, table.table
        )))?;
        Ok(())
    }

    async fn set_visibility(
        &self,
        id: &ConnectionId,
        visibility: crate::connection::Visibility,
    ) -> Result<Connection> {
        let changed =
            sqlx::query("UPDATE connections SET visibility = $1, updated_at = $2 WHERE id = $3")
                .bind(visibility.as_str())
                .bind(timestamp(Utc::now()))
                .bind(id.as_str())
                .execute(&self.pool)
                .await
                .map_err(Error::store(format!("setting the visibility of {id}")))?;
        if changed.rows_affected() == 0 {
            return Err(Error::ConnectionNotFound(id.to_string()));
        }
        self.must_get(id).await
    }

    async fn users(&self) -> Result<Vec<crate::store::UserRecord>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {USER_COLUMNS} FROM users ORDER BY name"
        )))
        .fetch_all(&self.pool)
        .await
        .map_err(Error::store("reading users"))?;
        rows.iter().map(user_from_row).collect()
    }

    async fn user(&self, name: &str) -> Result<Option<crate::store::UserRecord>> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {USER_COLUMNS} FROM users WHERE name = $1"
        )))
        .bind(name)
        .fetch_optional(&self.pool)
        .await
        .map_err(Error::store(format!("reading user '{name}'")))?;
        row.as_ref().map(user_from_row).transpose()
    }

    async fn put_user(&self, user: &crate::store::UserRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO users (name, role, password_hash, created_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (name) DO UPDATE
             SET role = excluded.role, password_hash = excluded.password_hash",
        )
        .bind(&user.name)
        .bind(user.role.as_str())
        .bind(&user.password_hash)
        .bind(timestamp(user.created_at))
        .execute(&self.pool)
        .await
        .map_err(Error::store(format!("storing user '{}'", user.name)))?;
        Ok(())
    }

    async fn delete_user(&self, name: &str) -> Result<bool> {
        let deleted = sqlx::query("DELETE FROM users WHERE name = $1")
            .bind(name)
            .execute(&self.pool)
            .await
            .map_err(Error::store(format!("deleting user '{name}'")))?;
        Ok(deleted.rows_affected() > 0)
    }

    async fn record_audit(&self, record: &crate::audit::AuditRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO audit_log (at, actor, action, connection_id, connection_name, outcome, detail)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(timestamp(record.at))
        .bind(&record.actor)
        .bind(&record.action)
        .bind(record.connection_id.as_ref().map(|id| id.as_str().to_owned()))
        .bind(&record.connection_name)
        .bind(&record.outcome)
        .bind(&record.detail)
        .execute(&self.pool)
        .await
        .map_err(Error::store("recording an audit log row"))?;
        Ok(())
    }

    async fn audit_log(&self, limit: i64) -> Result<Vec<crate::audit::AuditRecord>> {
        let rows = sqlx::query(
            "SELECT at, actor, action, connection_id, connection_name, outcome, detail
             FROM audit_log ORDER BY id DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(Error::store("reading the audit log"))?;
        rows.iter()
            .map(|row| {
                let read = || -> std::result::Result<_, sqlx::Error> {
                    let at: String = row.try_get("at")?;
                    let id: Option<String> = row.try_get("connection_id")?;
                    Ok((at, id))
                };
                let (at, id) = read().map_err(Error::store("reading the audit log"))?;
                Ok(crate::audit::AuditRecord {
                    at: parse_timestamp(&at).map_err(Error::store("reading the audit log"))?,
                    actor: row
                        .try_get("actor")
                        .map_err(Error::store("reading the audit log"))?,
                    action: row
                        .try_get("action")
                        .map_err(Error::store("reading the audit log"))?,
                    connection_id: id.map(|id| ConnectionId::parse(&id)).transpose()?,
                    connection_name: row
                        .try_get("connection_name")
                        .map_err(Error::store("reading the audit log"))?,
                    outcome: row
                        .try_get("outcome")
                        .map_err(Error::store("reading the audit log"))?,
                    detail: row
                        .try_get("detail")
                        .map_err(Error::store("reading the audit log"))?,
                })
            })
            .collect()
    }

    async fn record_test(&self, id: &ConnectionId, status: &ConnectionStatus) -> Result<()> {
        sqlx::query(
            "UPDATE connections SET last_tested_at = $1, test_status = $2, test_latency_ms = $3,
                 test_error = $4, server_version = COALESCE($5, server_version)
             WHERE id = $6",
        )
        .bind(status.last_tested_at.map(timestamp))
        .bind(&status.test_status)
        .bind(status.test_latency_ms)
        .bind(&status.test_error)
        .bind(&status.server_version)
        .bind(id.as_str())
        .execute(&self.pool)
        .await
        .map_err(Error::store(format!("recording the test of {id}")))?;
        Ok(())
    }

    async fn next_cache_version(&self, table: &TableRef) -> Result<i64> {
        let (id, schema, table) = (&table.connection_id, &table.schema, &table.table);
        let row = sqlx::query(
            "SELECT COALESCE(MAX(version), 0) + 1 AS next FROM cache_entries
             WHERE connection_id = $1 AND table_schema = $2 AND table_name = $3",
        )
        .bind(id.as_str())
        .bind(schema)
        .bind(table)
        .fetch_one(&self.pool)
        .await
        .map_err(Error::store(format!(
            "numbering a cache version of {schema}.{table}"
        )))?;
        // Versions only grow, even past purges, so a path is never reused within a run.
        let from_entries: i64 = row
            .try_get("next")
            .map_err(Error::store("numbering a cache version"))?;
        let from_fetches: i64 = sqlx::query(
            "SELECT fetch_count + 1 AS next FROM source_tables
             WHERE connection_id = $1 AND table_schema = $2 AND table_name = $3",
        )
        .bind(id.as_str())
        .bind(schema)
        .bind(table)
        .fetch_optional(&self.pool)
        .await
        .map_err(Error::store("numbering a cache version"))?
        .map(|r| r.try_get::<i64, _>("next"))
        .transpose()
        .map_err(Error::store("numbering a cache version"))?
        .unwrap_or(1);
        Ok(from_entries.max(from_fetches))
    }

    async fn publish_cache_entry(
        &self,
        entry: &CacheEntry,
        refreshed: Option<&Refreshed>,
    ) -> Result<Vec<CacheEntry>> {
        let publish = async {
            let mut tx = self.begin_write().await?;
            let superseded = sqlx::query(AssertSqlSafe(format!(
                "SELECT {CACHE_COLUMNS} FROM cache_entries
                 WHERE connection_id = $1 AND table_schema = $2 AND table_name = $3 AND is_current = 1"
            )))
            .bind(entry.table.connection_id.as_str())
            .bind(&entry.table.schema)
            .bind(&entry.table.table)
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(cache_entry_from_row)
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
            sqlx::query(
                "UPDATE cache_entries SET is_current = 0, superseded_at = $4
                 WHERE connection_id = $1 AND table_schema = $2 AND table_name = $3
                     AND is_current = 1",
            )
            .bind(entry.table.connection_id.as_str())
            .bind(&entry.table.schema)
            .bind(&entry.table.table)
            .bind(timestamp(Utc::now()))
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO cache_entries (connection_id, table_schema, table_name, version, path,
                     row_count, byte_size, arrow_schema, fetched_at, is_current, delta_paths,
                     skipped_rows)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 1, $10, $11)",
            )
            .bind(entry.table.connection_id.as_str())
            .bind(&entry.table.schema)
            .bind(&entry.table.table)
            .bind(entry.version)
            .bind(&entry.path)
            .bind(entry.row_count)
            .bind(entry.byte_size)
            .bind(&entry.arrow_schema)
            .bind(timestamp(entry.fetched_at))
            .bind(
                (!entry.deltas.is_empty())
                    .then(|| serde_json::to_string(&entry.deltas).expect("paths serialize")),
            )
            .bind(entry.skipped_rows)
            .execute(&mut *tx)
            .await?;
            if let Some(refreshed) = refreshed {
                sqlx::query(
                    "UPDATE source_tables SET fetch_count = fetch_count + 1
                     WHERE connection_id = $1 AND table_schema = $2 AND table_name = $3",
                )
                .bind(entry.table.connection_id.as_str())
                .bind(&entry.table.schema)
                .bind(&entry.table.table)
                .execute(&mut *tx)
                .await?;
                set_refreshed(&mut tx, &entry.table, refreshed).await?;
            }
            tx.commit().await?;
            Ok(superseded)
        };
        publish.await.map_err(Error::store(format!(
            "publishing the cache entry of {}.{}",
            entry.table.schema, entry.table.table
        )))
    }

    async fn current_cache_entry(&self, table: &TableRef) -> Result<Option<CacheEntry>> {
        let (id, schema, table) = (&table.connection_id, &table.schema, &table.table);
        sqlx::query(AssertSqlSafe(format!(
            "SELECT {CACHE_COLUMNS} FROM cache_entries
             WHERE connection_id = $1 AND table_schema = $2 AND table_name = $3 AND is_current = 1
             ORDER BY version DESC LIMIT 1"
        )))
        .bind(id.as_str())
        .bind(schema)
        .bind(table)
        .fetch_optional(&self.pool)
        .await
        .and_then(|row| row.as_ref().map(cache_entry_from_row).transpose())
        .map_err(Error::store(format!(
            "reading the cache entry of {schema}.{table}"
        )))
    }

    async fn delete_cache_entry(&self, entry: &CacheEntry) -> Result<()> {
        sqlx::query(
            "DELETE FROM cache_entries
             WHERE connection_id = $1 AND table_schema = $2 AND table_name = $3 AND version = $4",
        )
        .bind(entry.table.connection_id.as_str())
        .bind(&entry.table.schema)
        .bind(&entry.table.table)
        .bind(entry.version)
        .execute(&self.pool)
        .await
        .map_err(Error::store("deleting a cache entry"))?;
        Ok(())
    }

    async fn cache_entries(&self, id: &ConnectionId) -> Result<Vec<CacheEntry>> {
        self.load_cache_entries("WHERE connection_id = $1", Some(id.as_str()))
            .await
    }

    async fn all_cache_entries(&self) -> Result<Vec<CacheEntry>> {
        self.load_cache_entries("", None).await
    }

    async fn expired_cache_entries(
        &self,
        table: Option<&TableRef>,
        before: DateTime<Utc>,
    ) -> Result<Vec<CacheEntry>> {
        // Entries superseded before v7 recorded no time: they are long expired.
        let mut sql = format!(
            "SELECT {CACHE_COLUMNS} FROM cache_entries
             WHERE is_current = 0 AND (superseded_at IS NULL OR superseded_at < $1)"
        );
        if table.is_some() {
            sql.push_str(" AND connection_id = $2 AND table_schema = $3 AND table_name = $4");
        }
        sql.push_str(" ORDER BY connection_id, table_schema, table_name, version");
        let mut query = sqlx::query(AssertSqlSafe(sql)).bind(timestamp(before));
        if let Some(table) = table {
            query = query
                .bind(table.connection_id.as_str())
                .bind(&table.schema)
                .bind(&table.table);
        }
        query
            .fetch_all(&self.pool)
            .await
            .and_then(|rows| rows.iter().map(cache_entry_from_row).collect())
            .map_err(Error::store("reading superseded cache entries"))
    }

    async fn views(&self) -> Result<Vec<ViewRecord>> {
        let rows = sqlx::query(
            "SELECT name, definition, default_catalog, default_schema, created_at FROM views \
             ORDER BY name",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(Error::store("reading views".to_owned()))?;
        rows.iter()
            .map(|row| {
                Ok(ViewRecord {
                    name: row.try_get("name")?,
                    definition: row.try_get("definition")?,
                    default_catalog: row.try_get("default_catalog")?,
                    default_schema: row.try_get("default_schema")?,
                    created_at: parse_timestamp(&row.try_get::<String, _>("created_at")?)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Error::store("reading views".to_owned()))
    }

    async fn put_view(&self, view: &ViewRecord, replace: bool) -> Result<()> {
        let upsert = if replace {
            " ON CONFLICT (name) DO UPDATE SET definition = excluded.definition, \
             default_catalog = excluded.default_catalog, default_schema = excluded.default_schema, \
             created_at = excluded.created_at"
        } else {
            ""
        };
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO views (name, definition, default_catalog, default_schema, created_at) \
             VALUES ($1, $2, $3, $4, $5){upsert}"
        )))
        .bind(&view.name)
        .bind(&view.definition)
        .bind(&view.default_catalog)
        .bind(&view.default_schema)
        .bind(timestamp(view.created_at))
        .execute(&self.pool)
        .await
        .map_err(|e| {
            if is_unique_violation(&e) {
                Error::ViewExists {
                    name: view.name.clone(),
                }
            } else {
                Error::store(format!("storing view '{}'", view.name))(e)
            }
        })?;
        Ok(())
    }

    async fn delete_view(&self, name: &str) -> Result<bool> {
        let result = sqlx::query("DELETE FROM views WHERE name = $1")
            .bind(name)
            .execute(&self.pool)
            .await
            .map_err(Error::store(format!("dropping view '{name}'")))?;
        Ok(result.rows_affected() > 0)
    }
}
