//! Test fixtures: a throw-away data dir, and a uniquely named PostgreSQL database that is
//! dropped when the fixture is.

pub mod proxy;
pub mod sshd;

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

pub fn unique_name(prefix: &str) -> String {
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
        finish_in_background(async move {
            if let Ok(mut conn) = PgConnection::connect(&pg_admin_url()).await {
                let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .execute(&mut conn)
                .await;
            }
        });
    }
}

/// Runs `work` to completion on a private runtime in its own thread: `Drop` cannot await.
pub fn finish_in_background(work: impl std::future::Future<Output = ()> + Send + 'static) {
    let _ = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(work)
    })
    .join();
}

/// Runs setup SQL (several statements allowed), failing the test with the SQL if it fails.
async fn run_setup<'e, E: sqlx::Executor<'e>>(executor: E, sql: &str) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(executor)
        .await
        .unwrap_or_else(|e| panic!("setup SQL failed: {e}\n{sql}"));
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
        self.builder().key_source(key).build().await
    }

    /// A builder for an engine on this backend with the fixture's key, to set more on.
    pub fn builder(&self) -> quarry::EngineBuilder {
        Engine::builder()
            .data_dir(self.data_dir())
            .store_url(&self.store_url)
            .key_source(KeySource::Given(self.key.clone()))
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
/// A SQLite database `source.db` in `dir` made by `sql`: its path, and a session on it.
pub async fn sqlite_source(dir: &Path, sql: &str) -> (String, sqlx::SqliteConnection) {
    let path = dir.join("source.db");
    let mut conn =
        sqlx::SqliteConnection::connect(&format!("sqlite://{}?mode=rwc", path.display()))
            .await
            .unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(&mut conn)
        .await
        .unwrap();
    (path.display().to_string(), conn)
}

pub fn sqlite_file(dir: &Path) -> String {
    let path = dir.join("source.db");
    std::fs::write(&path, b"").unwrap();
    path.display().to_string()
}

/// A real PostgreSQL database to read from, a Quarry engine (SQLite store) with a
/// connection `pg` to it, and an admin session for setting up tables.
pub struct PgSourceFixture {
    pub db: PgDatabase,
    pub backend: Backend,
    pub engine: Engine,
    pub admin: PgConnection,
}

impl PgSourceFixture {
    pub async fn new() -> Self {
        let db = PgDatabase::create().await;
        let admin = PgConnection::connect(&db.url).await.unwrap();
        let backend = Backend::new(Kind::Sqlite).await;
        let engine = backend.engine().await;
        engine
            .register_connection("pg", "postgres", pg_source_config(&db.name))
            .await
            .unwrap();
        PgSourceFixture {
            db,
            backend,
            engine,
            admin,
        }
    }

    /// Runs setup SQL (several statements allowed) in the source database.
    pub async fn exec(&mut self, sql: &str) {
        run_setup(&mut self.admin, sql).await;
    }
}

/// Config of a quarry connection to database `name` on the test PostgreSQL server.
pub fn pg_source_config(name: &str) -> serde_json::Value {
    let admin = url::Url::parse(&pg_admin_url()).unwrap();
    serde_json::json!({
        "host": admin.host_str().unwrap_or("127.0.0.1"),
        "port": admin.port().unwrap_or(5432),
        "database": name,
        "user": if admin.username().is_empty() { "postgres" } else { admin.username() },
    })
}

/// Reads a whole Parquet file.
pub fn read_parquet(path: &Path) -> Vec<datafusion::arrow::record_batch::RecordBatch> {
    let file = std::fs::File::open(path).unwrap();
    datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}

/// Admin URL of the test MySQL/MariaDB server.
pub fn mysql_admin_url() -> String {
    std::env::var("QUARRY_TEST_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".to_owned())
}

/// A MySQL database created for one test and dropped afterwards, a Quarry engine with a
/// connection `my` to it, and an admin session in that database.
pub struct MySqlSourceFixture {
    pub name: String,
    /// Keeps the engine's data dir alive.
    pub _backend: Backend,
    pub engine: Engine,
    pub admin: sqlx::MySqlConnection,
}

impl MySqlSourceFixture {
    pub async fn new() -> Self {
        let name = unique_name("quarry_test");
        let mut admin = sqlx::MySqlConnection::connect(&mysql_admin_url())
            .await
            .expect("the test MariaDB server is reachable (see .ci/run)");
        for sql in [
            format!("CREATE DATABASE {name} CHARACTER SET utf8mb4"),
            format!("USE {name}"),
        ] {
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&mut admin)
                .await
                .unwrap();
        }
        let backend = Backend::new(Kind::Sqlite).await;
        let engine = backend.engine().await;
        engine
            .register_connection("my", "mysql", mysql_source_config(&name))
            .await
            .unwrap();
        MySqlSourceFixture {
            name,
            _backend: backend,
            engine,
            admin,
        }
    }

    pub async fn exec(&mut self, sql: &str) {
        run_setup(&mut self.admin, sql).await;
    }
}

impl Drop for MySqlSourceFixture {
    fn drop(&mut self) {
        let name = self.name.clone();
        finish_in_background(async move {
            if let Ok(mut conn) = sqlx::MySqlConnection::connect(&mysql_admin_url()).await {
                let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name}"
                )))
                .execute(&mut conn)
                .await;
            }
        });
    }
}

/// Config of a quarry connection to database `name` on the test MySQL server.
pub fn mysql_source_config(name: &str) -> serde_json::Value {
    let admin = url::Url::parse(&mysql_admin_url()).unwrap();
    let mut config = serde_json::json!({
        "host": admin.host_str().unwrap_or("127.0.0.1"),
        "port": admin.port().unwrap_or(3306),
        "database": name,
        "user": if admin.username().is_empty() { "root" } else { admin.username() },
    });
    if let Some(password) = admin.password() {
        config["password"] = serde_json::json!(password);
    }
    config
}

/// A child process, killed and reaped when dropped, so a failing test leaves none behind.
pub struct Running(pub std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The trimmed cells of every table row in `output`.
pub fn cells(output: &str) -> Vec<Vec<String>> {
    output
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with('|') && l.ends_with('|') && l.len() > 1)
        .map(|l| {
            l[1..l.len() - 1]
                .split('|')
                .map(|c| c.trim().to_owned())
                .collect()
        })
        .collect()
}

/// Whether a table in `output` has a row exactly `row`.
pub fn has_row(output: &str, row: &[&str]) -> bool {
    cells(output).iter().any(|r| r == row)
}

/// The `quarry` binary on the data dir `home`, with no store or key from the environment.
pub fn quarry_command(home: &std::path::Path) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_quarry"));
    command
        .env("QUARRY_HOME", home)
        .env_remove("QUARRY_STORE_URL")
        .env_remove("QUARRY_SECRET_KEY");
    command
}

/// Runs `quarry args` on `home` with no input and no server password in the environment.
pub fn quarry(home: &std::path::Path, args: &[&str]) -> std::process::Output {
    quarry_command(home)
        .args(args)
        .env_remove("QUARRY_SERVER_PASSWORD")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("the quarry binary runs")
}

/// Output bytes as text (invalid UTF-8 replaced).
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `quarry args` on `home` with `stdin` piped in (written from another thread, so a
/// large script cannot deadlock against the output pipes).
pub fn quarry_piped(home: &std::path::Path, args: &[&str], stdin: Vec<u8>) -> std::process::Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = quarry_command(home)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the quarry binary runs");
    let mut pipe = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || pipe.write_all(&stdin).unwrap());
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    out
}

/// The Python that runs Python test clients: `QUARRY_TEST_PYTHON` or `python3`.
pub fn python() -> String {
    std::env::var("QUARRY_TEST_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Installs `packages` with pip unless `import_check` runs already (`.ci/run` installs
/// them first; this keeps a bare `cargo test` working).
pub async fn ensure_python_packages(import_check: &str, packages: &[&str]) {
    let imports = tokio::process::Command::new(python())
        .args(["-c", import_check])
        .output()
        .await
        .expect("python3 runs (install Python 3 to run the Python client tests)");
    if imports.status.success() {
        return;
    }
    let install = tokio::process::Command::new(python())
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .args(packages)
        .status()
        .await
        .expect("pip runs");
    assert!(install.success(), "pip could not install {packages:?}");
}

/// The statistics DataFusion's optimizer sees for the physical plan of `sql`.
pub async fn plan_statistics(
    engine: &Engine,
    sql: &str,
) -> std::sync::Arc<datafusion::common::Statistics> {
    use datafusion::physical_plan::statistics::{StatisticsArgs, StatisticsContext};
    let plan = engine
        .sql(sql)
        .await
        .unwrap()
        .create_physical_plan()
        .await
        .unwrap();
    StatisticsContext::new()
        .compute(plan.as_ref(), &StatisticsArgs::new())
        .unwrap()
}

/// The first column of `batches`, an Int32 column without NULLs, as one vector.
pub fn int32_column(batches: &[datafusion::arrow::record_batch::RecordBatch]) -> Vec<i32> {
    use datafusion::arrow::array::AsArray;
    batches
        .iter()
        .flat_map(|b| {
            b.column(0)
                .as_primitive::<datafusion::arrow::datatypes::Int32Type>()
                .values()
                .to_vec()
        })
        .collect()
}

/// The first column of `batches`, a string column of any width without NULLs, as text.
pub fn string_column(batches: &[datafusion::arrow::record_batch::RecordBatch]) -> Vec<String> {
    use datafusion::arrow::util::display::array_value_to_string;
    batches
        .iter()
        .flat_map(|b| (0..b.num_rows()).map(|row| array_value_to_string(b.column(0), row).unwrap()))
        .collect()
}

/// Every file under `dir` (none if it does not exist).
pub fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .flat_map(|e| {
            let path = e.path();
            if path.is_dir() {
                walk(&path)
            } else {
                vec![path]
            }
        })
        .collect()
}

/// The one Int64 value a query answers (`SELECT sum(x) ...`), or its error.
pub async fn single_i64(engine: &Engine, sql: &str) -> quarry::Result<i64> {
    let batches = engine.sql(sql).await?.collect().await?;
    Ok(
        datafusion::arrow::array::AsArray::as_primitive::<datafusion::arrow::datatypes::Int64Type>(
            batches[0].column(0),
        )
        .value(0),
    )
}
