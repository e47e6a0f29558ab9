//! Live status: a PostgreSQL connection reached through a TCP proxy the test controls. When
//! the proxy is cut, the keepalive (its clock turned by the test) moves the connection to
//! `reconnecting`, statements fail at once saying so, and when the proxy is restored the
//! next check brings it back to `connected`, without a restart.

use std::net::SocketAddr;
use std::time::Duration;

use chrono::Utc;
use serde_json::json;
use sqlx::{Connection, PgConnection};

use crate::support::proxy::Proxy;
use crate::support::{Backend, Kind, PgDatabase, pg_admin_url, pg_source_config};
use quarry::connections::health::LinkState;
use quarry::events::Event;

async fn sum(engine: &quarry::Engine) -> quarry::Result<i64> {
    crate::support::single_i64(engine, "SELECT sum(x) AS s FROM pg.public.t").await
}

async fn status_in_information_schema(engine: &quarry::Engine) -> String {
    let batches = engine
        .sql("SELECT status FROM quarry.information_schema.connections WHERE name = 'pg'")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    datafusion::arrow::array::AsArray::as_string::<i32>(batches[0].column(0))
        .value(0)
        .to_owned()
}

/// The statuses the events announced so far, in order.
fn statuses(
    events: &mut tokio::sync::broadcast::Receiver<Event>,
) -> Vec<(LinkState, Option<String>)> {
    let mut seen = Vec::new();
    while let Ok(event) = events.try_recv() {
        if let Event::ConnectionStatus {
            status,
            error_class,
            ..
        } = event
        {
            seen.push((status, error_class));
        }
    }
    seen
}

#[tokio::test]
async fn a_cut_server_goes_reconnecting_fails_fast_and_comes_back_when_restored() {
    let db = PgDatabase::create().await;
    let mut admin = PgConnection::connect(&db.url).await.unwrap();
    sqlx::raw_sql("CREATE TABLE t (x int); INSERT INTO t SELECT generate_series(1, 100);")
        .execute(&mut admin)
        .await
        .unwrap();
    let pg = url::Url::parse(&pg_admin_url()).unwrap();
    let target: SocketAddr = format!(
        "{}:{}",
        pg.host_str().unwrap_or("127.0.0.1"),
        pg.port().unwrap_or(5432)
    )
    .parse()
    .unwrap();
    let proxy = Proxy::passing(target).await;

    let b = Backend::new(Kind::Sqlite).await;
    let engine = b.engine().await;
    let mut config = pg_source_config(&db.name);
    config["host"] = json!("127.0.0.1");
    config["port"] = json!(proxy.port());
    config["mode"] = json!("live");
    config["retry_budget"] = json!("0s");
    config["keepalive_interval"] = json!("60s");
    let created = engine
        .create_connection("pg", "postgres", config)
        .await
        .unwrap();
    created.discovery.unwrap();
    let id = created.connection.id;
    let mut events = engine.subscribe();
    assert_eq!(sum(&engine).await.unwrap(), 5050);
    assert_eq!(engine.connection_status(&id).state, LinkState::Connected);
    assert_eq!(status_in_information_schema(&engine).await, "connected");

    let start = Utc::now();
    let at = |secs: u64| start + chrono::Duration::from_std(Duration::from_secs(secs)).unwrap();
    assert!(
        engine.check_connections(at(0)).await.is_empty(),
        "not due yet"
    );

    // The network drops.
    proxy.cut();
    let changed = engine.check_connections(at(61)).await;
    assert_eq!(changed.len(), 1, "{changed:?}");
    assert_eq!(changed[0].1.state, LinkState::Reconnecting, "{changed:?}");
    assert_eq!(status_in_information_schema(&engine).await, "reconnecting");

    // A statement that needs the server fails at once, with the status in the message.
    let failed = sum(&engine).await.unwrap_err().to_string();
    assert!(failed.contains("the server is reconnecting"), "{failed}");

    // Still down at the next, backed-off check: no change, no event.
    assert!(engine.check_connections(at(62)).await.is_empty());

    // The network is back: the next check reconnects.
    proxy.restore();
    let changed = engine.check_connections(at(64)).await;
    assert_eq!(changed.len(), 1, "{changed:?}");
    assert_eq!(changed[0].1.state, LinkState::Connected);
    assert_eq!(status_in_information_schema(&engine).await, "connected");
    assert_eq!(sum(&engine).await.unwrap(), 5050);

    // The events said the same, in order, the outage with its classified error.
    let seen = statuses(&mut events);
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0].0, LinkState::Reconnecting);
    assert!(
        matches!(seen[0].1.as_deref(), Some("reset" | "refused" | "timeout")),
        "{seen:?}"
    );
    assert_eq!(seen[1], (LinkState::Connected, None));
}

#[tokio::test]
async fn quarry_names_itself_to_the_database() {
    let db = PgDatabase::create().await;
    let mut admin = PgConnection::connect(&db.url).await.unwrap();
    sqlx::raw_sql("CREATE TABLE t (x int)")
        .execute(&mut admin)
        .await
        .unwrap();
    let b = Backend::new(Kind::Sqlite).await;
    let engine = b.engine().await;
    let mut config = pg_source_config(&db.name);
    config["mode"] = json!("live");
    engine
        .create_connection("pg", "postgres", config)
        .await
        .unwrap();
    let names = engine
        .sql("SELECT * FROM source_query('pg', 'SELECT application_name FROM pg_stat_activity WHERE pid = pg_backend_pid()')")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let name = datafusion::arrow::array::AsArray::as_string::<i32>(names[0].column(0)).value(0);
    assert_eq!(name, "quarry");
}
