//! Schema migrations, embedded in the binary, applied in order, each recorded with a
//! SHA-256 checksum. A store from a newer Quarry, or whose applied migration text differs
//! from this build's, is refused rather than guessed at.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use sha2::{Digest, Sha256};
use sqlx::{AnyPool, AssertSqlSafe, Row};

use super::Dialect;
use crate::error::{Error, Result};

/// The table recording applied migrations.
pub const MIGRATIONS_TABLE: &str = "quarry_migrations";

/// One embedded migration script.
#[derive(Debug)]
pub struct Migration {
    /// Version, starting at 1, without gaps.
    pub version: i64,
    /// The script.
    pub sql: &'static str,
    /// Hex SHA-256 of the script.
    pub checksum: String,
}

fn embedded(scripts: &[&'static str]) -> Vec<Migration> {
    scripts
        .iter()
        .zip(1..)
        .map(|(sql, version)| Migration {
            version,
            sql,
            checksum: Sha256::digest(sql.as_bytes())
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
        })
        .collect()
}

static SQLITE: LazyLock<Vec<Migration>> = LazyLock::new(|| {
    embedded(&[
        include_str!("../../migrations/sqlite/v1.sql"),
        include_str!("../../migrations/sqlite/v2.sql"),
        include_str!("../../migrations/sqlite/v3.sql"),
        include_str!("../../migrations/sqlite/v4.sql"),
        include_str!("../../migrations/sqlite/v5.sql"),
        include_str!("../../migrations/sqlite/v6.sql"),
        include_str!("../../migrations/sqlite/v7.sql"),
        include_str!("../../migrations/sqlite/v8.sql"),
    ])
});
static POSTGRES: LazyLock<Vec<Migration>> = LazyLock::new(|| {
    embedded(&[
        include_str!("../../migrations/postgres/v1.sql"),
        include_str!("../../migrations/postgres/v2.sql"),
        include_str!("../../migrations/postgres/v3.sql"),
        include_str!("../../migrations/postgres/v4.sql"),
        include_str!("../../migrations/postgres/v5.sql"),
        include_str!("../../migrations/postgres/v6.sql"),
        include_str!("../../migrations/postgres/v7.sql"),
        include_str!("../../migrations/postgres/v8.sql"),
    ])
});

/// The migrations this build carries for `dialect`, in order.
pub fn migrations(dialect: Dialect) -> &'static [Migration] {
    match dialect {
        Dialect::Sqlite => &SQLITE,
        Dialect::Postgres => &POSTGRES,
    }
}

/// Brings the store up to date, or refuses it with a message saying why and what to do.
pub(crate) async fn apply(pool: &AnyPool, dialect: Dialect, store: &str) -> Result<()> {
    let failed = |what: &str| Error::store(format!("{what} of the store at {store}"));
    let mut tx = pool
        .begin_with(dialect.begin_exclusive())
        .await
        .map_err(failed("locking for migration"))?;
    if let Some(lock) = dialect.lock_statement() {
        sqlx::query(AssertSqlSafe(lock))
            .execute(&mut *tx)
            .await
            .map_err(failed("locking for migration"))?;
    }
    sqlx::raw_sql(AssertSqlSafe(format!(
        "CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} (
             version    BIGINT PRIMARY KEY NOT NULL,
             checksum   TEXT NOT NULL,
             applied_at TEXT NOT NULL
         )"
    )))
    .execute(&mut *tx)
    .await
    .map_err(failed("creating the migration table"))?;

    let applied: BTreeMap<i64, String> = sqlx::query(AssertSqlSafe(format!(
        "SELECT version, checksum FROM {MIGRATIONS_TABLE} ORDER BY version"
    )))
    .fetch_all(&mut *tx)
    .await
    .map_err(failed("reading the migration history"))?
    .iter()
    .map(|row| Ok((row.try_get("version")?, row.try_get("checksum")?)))
    .collect::<Result<_, sqlx::Error>>()
    .map_err(failed("reading the migration history"))?;

    let known = migrations(dialect);
    let newest_known = known.last().map_or(0, |m| m.version);
    if let Some((&found, _)) = applied
        .iter()
        .next_back()
        .filter(|(v, _)| **v > newest_known)
    {
        return Err(Error::StoreTooNew {
            store: store.to_owned(),
            found,
            known: newest_known,
        });
    }
    for migration in known {
        match applied.get(&migration.version) {
            Some(checksum) if *checksum == migration.checksum => {}
            Some(checksum) => {
                return Err(Error::StoreMigrationChanged {
                    store: store.to_owned(),
                    version: migration.version,
                    found: checksum.clone(),
                    expected: migration.checksum.clone(),
                });
            }
            None => {
                sqlx::raw_sql(AssertSqlSafe(migration.sql))
                    .execute(&mut *tx)
                    .await
                    .map_err(failed(&format!(
                        "applying migration v{}",
                        migration.version
                    )))?;
                sqlx::query(AssertSqlSafe(format!(
                    "INSERT INTO {MIGRATIONS_TABLE} (version, checksum, applied_at) VALUES ($1, $2, $3)"
                )))
                .bind(migration.version)
                .bind(&migration.checksum)
                .bind(super::sql::timestamp(chrono::Utc::now()))
                .execute(&mut *tx)
                .await
                .map_err(failed("recording a migration"))?;
                tracing::info!(
                    version = migration.version,
                    store,
                    "applied store migration"
                );
            }
        }
    }
    tx.commit()
        .await
        .map_err(failed("committing the migration"))
}
