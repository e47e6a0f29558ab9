//! Test fixtures: a throw-away data dir, and a uniquely named PostgreSQL database that is
//! dropped when the fixture is.

use std::path::Path;

use quarry::secrets::{KeySource, SecretKey};
use quarry::{Engine, StoreUrl};
use sqlx::{Connection, PgConnection};
use tempfile::TempDir;

/// Admin URL of the test PostgreSQL server.
pub fn pg_admin_url() -> String {
    std::env::var("QUARRY_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

fn unique_name(prefix: &str) -> String {
    let suffix: String = quarry::ConnectionId::generate().as_str()[5..17].to_owned();
    format!("{prefix}_{suffix}")
}

/// A PostgreSQL database created for one test and dropped (forcibly) afterwards.
pub struct PgDatabase {
    pub name: String,
    pub url: String,
}

impl PgDatabase {
    pub async fn create() -> Self {
        let name = unique_name("quarry_test");
        let admin = pg_admin_url();
        let mut conn = PgConnection::connect(&admin)
            .await
            .expect("the test PostgreSQL server is reachable (see .ci/run)");
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .expect("create test database");
        let mut url = url::Url::parse(&admin).unwrap();
        url.set_path(&format!("/{name}"));
        PgDatabase {
            name,
            url: url.to_string(),
        }
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs outside async context; a private runtime on its own thread does the I/O.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                if let Ok(mut conn) = PgConnection::connect(&pg_admin_url()).await {
                    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .execute(&mut conn)
                    .await;
                }
            });
        })
        .join();
    }
}

/// Which metadata store backend a test runs against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Sqlite,
    Postgres,
}

/// A data dir plus a store of one backend, alive as long as the fixture.
pub struct Backend {
    pub kind: Kind,
    pub dir: TempDir,
    pub store_url: String,
    pub key: SecretKey,
    _pg: Option<PgDatabase>,
}

impl Backend {
    pub async fn new(kind: Kind) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (store_url, pg) = match kind {
            Kind::Sqlite => (dir.path().join("quarry.db").display().to_string(), None),
            Kind::Postgres => {
                let db = PgDatabase::create().await;
                (db.url.clone(), Some(db))
            }
        };
        Backend {
            kind,
            dir,
            store_url,
            key: SecretKey::generate(),
            _pg: pg,
        }
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// An engine on this backend with the fixture's key.
    pub async fn engine(&self) -> Engine {
        self.engine_with_key(KeySource::Given(self.key.clone()))
            .await
            .expect("engine opens")
    }

    pub async fn engine_with_key(&self, key: KeySource) -> quarry::Result<Engine> {
        Engine::builder()
            .data_dir(self.data_dir())
            .store_url(&self.store_url)
            .key_source(key)
            .build()
            .await
    }

    pub fn url(&self) -> StoreUrl {
        StoreUrl::parse(&self.store_url).unwrap()
    }

    /// Opens the store directly, for inspecting rows the public API does not show.
    pub async fn raw(&self) -> quarry::store::SqlStore {
        quarry::store::SqlStore::open(&self.url()).await.unwrap()
    }
}

/// A SQLite file the tests can point a sqlite connection at.
pub fn sqlite_file(dir: &Path) -> String {
    let path = dir.join("source.db");
    std::fs::write(&path, b"").unwrap();
    path.display().to_string()
}
