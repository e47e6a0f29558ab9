//! What a statement reads from the store: its first query of an uncached table reads each
//! store row it needs once. The store is a real SQLite file
//! behind a wrapper that records every call; the source is a real SQLite database.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use datafusion::execution::runtime_env::RuntimeEnv;

use crate::cache::Cache;
use crate::connection::{Connection, ConnectionName, ConnectionStatus};
use crate::connections::Connections;
use crate::connections::snapshot::SnapshotCell;
use crate::error::Result;
use crate::events::Events;
use crate::id::ConnectionId;
use crate::secrets::{KeySource, SealedSecret, SecretCipher};
use crate::store::StoreUrl;
use crate::store::{ConfigUpdate, MetadataStore, NewConnection, ViewRecord};
use crate::table::{CacheEntry, TableRecord, TableRef};

/// A store that records each call with the row it is about.
#[derive(Debug)]
struct Recording {
    inner: Arc<dyn MetadataStore>,
    calls: Mutex<Vec<String>>,
}

impl Recording {
    fn record(&self, call: String) {
        self.calls.lock().unwrap().push(call);
    }

    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.calls.lock().unwrap())
    }
}

fn key(table: &TableRef) -> String {
    format!("{}.{}.{}", table.connection_id, table.schema, table.table)
}

#[async_trait]
impl MetadataStore for Recording {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    async fn insert_connection(&self, new: &NewConnection) -> Result<Connection> {
        self.record(format!("insert_connection {}", new.id));
        self.inner.insert_connection(new).await
    }
    async fn connection(&self, id: &ConnectionId) -> Result<Option<Connection>> {
        self.record(format!("connection {id}"));
        self.inner.connection(id).await
    }
    async fn connection_by_name(&self, name: &ConnectionName) -> Result<Option<Connection>> {
        self.record(format!("connection_by_name {name}"));
        self.inner.connection_by_name(name).await
    }
    async fn connections(&self) -> Result<Vec<Connection>> {
        self.record("connections".into());
        self.inner.connections().await
    }
    async fn rename_connection(
        &self,
        id: &ConnectionId,
        name: &ConnectionName,
    ) -> Result<Connection> {
        self.record(format!("rename_connection {id}"));
        self.inner.rename_connection(id, name).await
    }
    async fn update_connection(
        &self,
        id: &ConnectionId,
        update: &ConfigUpdate,
    ) -> Result<Connection> {
        self.record(format!("update_connection {id}"));
        self.inner.update_connection(id, update).await
    }
    async fn delete_connection(&self, id: &ConnectionId) -> Result<bool> {
        self.record(format!("delete_connection {id}"));
        self.inner.delete_connection(id).await
    }
    async fn secrets(&self, id: &ConnectionId) -> Result<Vec<SealedSecret>> {
        self.record(format!("secrets {id}"));
        self.inner.secrets(id).await
    }
    async fn replace_tables(&self, id: &ConnectionId, tables: &[TableRecord]) -> Result<()> {
        self.record(format!("replace_tables {id}"));
        self.inner.replace_tables(id, tables).await
    }
    async fn tables(&self, id: &ConnectionId) -> Result<Vec<TableRecord>> {
        self.record(format!("tables {id}"));
        self.inner.tables(id).await
    }
    async fn table(&self, table: &TableRef) -> Result<Option<TableRecord>> {
        self.record(format!("table {}", key(table)));
        self.inner.table(table).await
    }
    async fn set_table_options(
        &self,
        table: &TableRef,
        options: &crate::access::TableOptions,
    ) -> Result<bool> {
        self.record(format!("set_table_options {}", key(table)));
        self.inner.set_table_options(table, options).await
    }
    async fn record_refresh(
        &self,
        table: &TableRef,
        refreshed: &crate::refresh::Refreshed,
    ) -> Result<()> {
        self.record(format!("record_refresh {}", key(table)));
        self.inner.record_refresh(table, refreshed).await
    }
    async fn record_refresh_error(&self, table: &TableRef, error: &str) -> Result<()> {
        self.record(format!("record_refresh_error {}", key(table)));
        self.inner.record_refresh_error(table, error).await
    }
    async fn set_visibility(
        &self,
        id: &ConnectionId,
        visibility: crate::connection::Visibility,
    ) -> Result<Connection> {
        self.inner.set_visibility(id, visibility).await
    }
    async fn users(&self) -> Result<Vec<crate::store::UserRecord>> {
        self.inner.users().await
    }
    async fn user(&self, name: &str) -> Result<Option<crate::store::UserRecord>> {
        self.inner.user(name).await
    }
    async fn put_user(&self, user: &crate::store::UserRecord) -> Result<()> {
        self.inner.put_user(user).await
    }
    async fn delete_user(&self, name: &str) -> Result<bool> {
        self.inner.delete_user(name).await
    }
    async fn record_audit(&self, record: &crate::audit::AuditRecord) -> Result<()> {
        self.inner.record_audit(record).await
    }
    async fn audit_log(&self, limit: i64) -> Result<Vec<crate::audit::AuditRecord>> {
        self.inner.audit_log(limit).await
    }
    async fn record_test(&self, id: &ConnectionId, status: &ConnectionStatus) -> Result<()> {
        self.record(format!("record_test {id}"));
        self.inner.record_test(id, status).await
    }
    async fn next_cache_version(&self, table: &TableRef) -> Result<i64> {
        self.record(format!("next_cache_version {}", key(table)));
        self.inner.next_cache_version(table).await
    }
    async fn publish_cache_entry(
        &self,
        entry: &CacheEntry,
        refreshed: Option<&crate::refresh::Refreshed>,
    ) -> Result<Vec<CacheEntry>> {
        self.record(format!("publish_cache_entry {}", key(&entry.table)));
        self.inner.publish_cache_entry(entry, refreshed).await
    }
    async fn current_cache_entry(&self, table: &TableRef) -> Result<Option<CacheEntry>> {
        self.record(format!("current_cache_entry {}", key(table)));
        self.inner.current_cache_entry(table).await
    }
    async fn delete_cache_entry(&self, entry: &CacheEntry) -> Result<()> {
        self.record(format!("delete_cache_entry {}", key(&entry.table)));
        self.inner.delete_cache_entry(entry).await
    }
    async fn cache_entries(&self, id: &ConnectionId) -> Result<Vec<CacheEntry>> {
        self.record(format!("cache_entries {id}"));
        self.inner.cache_entries(id).await
    }
    async fn all_cache_entries(&self) -> Result<Vec<CacheEntry>> {
        self.record("all_cache_entries".into());
        self.inner.all_cache_entries().await
    }
    async fn expired_cache_entries(
        &self,
        table: Option<&TableRef>,
        before: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<CacheEntry>> {
        self.record("expired_cache_entries".into());
        self.inner.expired_cache_entries(table, before).await
    }
    async fn views(&self) -> Result<Vec<ViewRecord>> {
        self.record("views".into());
        self.inner.views().await
    }
    async fn put_view(&self, view: &ViewRecord, replace: bool) -> Result<()> {
        self.record(format!("put_view {}", view.name));
        self.inner.put_view(view, replace).await
    }
    async fn delete_view(&self, name: &str) -> Result<bool> {
        self.record(format!("delete_view {name}"));
        self.inner.delete_view(name).await
    }
}

/// A connection `lite` over a SQLite table `t` of three rows, discovered, with the calls
/// so far forgotten.
async fn setup() -> (
    tempfile::TempDir,
    Arc<Recording>,
    Arc<Connections>,
    ConnectionId,
) {
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("source.db");
    {
        use sqlx::{Connection as _, Executor as _};
        let url = format!("sqlite://{}?mode=rwc", database.display());
        let mut source = sqlx::SqliteConnection::connect(&url).await.unwrap();
        source
            .execute("CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (1), (2), (3);")
            .await
            .unwrap();
    }
    let inner = crate::store::open(&StoreUrl::default_in(dir.path()))
        .await
        .unwrap();
    let recording = Arc::new(Recording {
        inner,
        calls: Mutex::default(),
    });
    let store: Arc<dyn MetadataStore> = recording.clone();
    let events = Events::default();
    let snapshot = Arc::new(SnapshotCell::default());
    snapshot.reload(store.as_ref()).await.unwrap();
    let connections = Arc::new(Connections::new(
        Arc::clone(&store),
        SecretCipher::new(KeySource::File(dir.path().join("key"))),
        Cache::new(
            crate::cache::CacheStorage::local(dir.path()),
            Arc::clone(&store),
            events.clone(),
            0,
        ),
        events,
        snapshot,
    ));
    let created = connections
        .create_connection(
            "lite",
            "sqlite",
            serde_json::json!({ "path": database.display().to_string() }),
        )
        .await
        .unwrap();
    created.discovery.unwrap();
    recording.take();
    (dir, recording, connections, created.connection.id)
}

async fn run(connections: &Arc<Connections>, sql: &str) -> String {
    let context = super::context::new(
        connections,
        &Arc::new(RuntimeEnv::default()),
        &super::context::Placement::default(),
    );
    let batches = context.sql(sql).await.unwrap().collect().await.unwrap();
    datafusion::arrow::util::pretty::pretty_format_batches(&batches)
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_query_reads_each_store_row_it_needs_once() {
    let (_dir, recording, connections, id) = setup().await;
    let shown = run(&connections, "SELECT count(*) AS n FROM lite.main.t").await;
    assert_eq!(shown.lines().nth(3), Some("| 3 |"));
    let table = key(&TableRef::new(&id, "main", "t"));
    // Planning reads the entry (none), the fetch numbers and publishes its version; the
    // connection and its tables come from the snapshot, the open source from the pool.
    assert_eq!(
        recording.take(),
        [
            format!("current_cache_entry {table}"),
            format!("next_cache_version {table}"),
            format!("publish_cache_entry {table}"),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_self_join_of_an_uncached_table_fetches_it_once() {
    let (_dir, recording, connections, id) = setup().await;
    let shown = run(
        &connections,
        "SELECT count(*) AS n FROM lite.main.t a JOIN lite.main.t b ON a.x = b.x",
    )
    .await;
    assert_eq!(shown.lines().nth(3), Some("| 3 |"));
    let table = key(&TableRef::new(&id, "main", "t"));
    let calls = recording.take();
    // Each scan read the entry at planning; one fetch numbered and published a version.
    assert_eq!(
        calls
            .iter()
            .filter(|c| c.starts_with("publish_cache_entry"))
            .count(),
        1,
        "{calls:?}"
    );
    assert!(
        calls.contains(&format!("next_cache_version {table}")),
        "{calls:?}"
    );
}
