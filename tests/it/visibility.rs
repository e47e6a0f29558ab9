//! Users, roles and visibility on a shared server, through Flight SQL and the REST API with
//! three users: `quarry` (an admin, given at start), and `alice` and `bob` (members added
//! through the API). A private connection does not exist for another member; a locked one
//! is queried by all and changed by admins only; owners and admins do everything; the audit
//! log records who did what.

use std::sync::Arc;
use std::time::Duration;

use arrow_flight::sql::client::FlightSqlServiceClient;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use futures::TryStreamExt;
use secrecy::SecretString;
use serde_json::{Value, json};
use tonic::transport::Channel;
use tower::ServiceExt;

use crate::flight::rows;
use crate::support::{PgSourceFixture, pg_source_config};
use quarry::server::auth::{Authenticator, Users};
use quarry::server::client_sessions::{ClientSessions, DEFAULT_SESSIONS_PER_USER};
use quarry::server::flight::ServeOptions;

const ADMIN_PASSWORD: &str = "admin-pw-1";

struct Shared {
    _fixture: PgSourceFixture,
    router: axum::Router,
    flight: quarry::server::RunningServer,
}

impl Shared {
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        who: &str,
    ) -> (StatusCode, Value) {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::AUTHORIZATION, basic(who))
            .header(header::CONTENT_TYPE, "application/json")
            .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
            .unwrap();
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    /// `who`'s server-sent event stream.
    async fn events(&self, who: &str) -> EventStream {
        let request = Request::builder()
            .uri("/events")
            .header(header::AUTHORIZATION, basic(who))
            .body(Body::empty())
            .unwrap();
        let response = self.router.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        EventStream {
            body: response.into_body().into_data_stream(),
            buffer: String::new(),
        }
    }

    async fn flight(&self, user: &str, password: &str) -> FlightSqlServiceClient<Channel> {
        let channel = Channel::from_shared(format!("http://{}", self.flight.local_addr()))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client = FlightSqlServiceClient::new(channel);
        client.handshake(user, password).await.unwrap();
        client
    }
}

/// The `Authorization` header of `user:password`.
fn basic(who: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(who)
    )
}

/// An open event stream.
struct EventStream {
    body: axum::body::BodyDataStream,
    buffer: String,
}

impl EventStream {
    /// The next event's data (keep-alive comments skipped); a hang fails after 30 s.
    async fn next_event(&mut self) -> Value {
        use futures::StreamExt;
        tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                if let Some(end) = self.buffer.find("\n\n") {
                    let message: String = self.buffer.drain(..end + 2).collect();
                    let data: Vec<&str> = message
                        .lines()
                        .filter_map(|l| l.strip_prefix("data:"))
                        .map(str::trim_start)
                        .collect();
                    if !data.is_empty() {
                        return serde_json::from_str(&data.join("\n")).unwrap();
                    }
                    continue;
                }
                let chunk = self
                    .body
                    .next()
                    .await
                    .expect("the stream stays open")
                    .unwrap();
                self.buffer.push_str(&String::from_utf8_lossy(&chunk));
            }
        })
        .await
        .expect("an event arrives")
    }
}

async fn catalogs(client: &mut FlightSqlServiceClient<Channel>) -> Vec<String> {
    let info = client.get_catalogs().await.unwrap();
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let batches: Vec<_> = client
        .do_get(ticket)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let mut names = Vec::new();
    for batch in &batches {
        let column = datafusion::arrow::array::AsArray::as_string::<i32>(batch.column(0));
        names.extend(column.iter().flatten().map(str::to_owned));
    }
    names
}

async fn flight_query(
    client: &mut FlightSqlServiceClient<Channel>,
    sql: &str,
) -> Result<usize, String> {
    let info = client
        .execute(sql.into(), None)
        .await
        .map_err(|e| e.to_string())?;
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let batches: Vec<_> = client
        .do_get(ticket)
        .await
        .map_err(|e| e.to_string())?
        .try_collect()
        .await
        .map_err(|e| e.to_string())?;
    Ok(rows(&batches))
}

fn names(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn private_connections_are_invisible_locked_ones_unchangeable_and_the_log_says_who() {
    let mut fixture = PgSourceFixture::new().await;
    fixture
        .exec(
            "CREATE TABLE items (id integer PRIMARY KEY);
             INSERT INTO items SELECT generate_series(1, 100);",
        )
        .await;
    fixture.engine.discover_connection("pg").await.unwrap();
    let auth = Arc::new(
        Authenticator::new(
            Users::with_password(&SecretString::from(ADMIN_PASSWORD)).unwrap(),
            Duration::from_secs(600),
        )
        .with_managed_users(fixture.engine.clone()),
    );
    let sessions = Arc::new(ClientSessions::new(
        fixture.engine.clone(),
        DEFAULT_SESSIONS_PER_USER,
        Duration::from_secs(600),
    ));
    let flight = quarry::server::flight::start(ServeOptions {
        addr: "127.0.0.1:0".parse().unwrap(),
        tls: None,
        auth: Arc::clone(&auth),
        sessions: Arc::clone(&sessions),
    })
    .await
    .unwrap();
    let router = quarry::server::http::router(fixture.engine.clone(), auth, sessions);
    let db = fixture.db.name.clone();
    let s = Shared {
        _fixture: fixture,
        router,
        flight,
    };
    let admin = &format!("quarry:{ADMIN_PASSWORD}");
    let (alice, bob) = ("alice:alice-pw-1", "bob:bob-pw-1");

    // Admins manage users; members may not.
    for (name, password) in [("alice", "alice-pw-1"), ("bob", "bob-pw-1")] {
        let (status, body) = s
            .call(
                Method::POST,
                "/users",
                Some(json!({"name": name, "password": password, "role": "member"})),
                admin,
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let (status, _) = s
        .call(
            Method::POST,
            "/users",
            Some(json!({"name": "carol", "password": "x", "role": "admin"})),
            bob,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Alice creates a private connection.
    let (status, created) = s
        .call(
            Method::POST,
            "/connections",
            Some(json!({"name": "alice_pg", "source_type": "postgres",
                        "config": pg_source_config(&db), "visibility": "private"})),
            alice,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let alice_id = created["connection"]["id"].as_str().unwrap().to_owned();
    assert_eq!(created["connection"]["owner"], "alice");
    assert_eq!(created["connection"]["visibility"], "private");

    // For Bob it does not exist: REST listings, lookups, SQL, information_schema, Flight.
    let (_, list) = s.call(Method::GET, "/connections", None, bob).await;
    assert_eq!(names(&list), vec!["pg"]);
    let (status, _) = s
        .call(Method::GET, &format!("/connections/{alice_id}"), None, bob)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, answer) = s
        .call(
            Method::POST,
            "/query",
            Some(json!({"sql": "SELECT count(*) FROM alice_pg.public.items"})),
            bob,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
    assert!(!answer.to_string().contains("did you mean"), "{answer}");
    let (_, answer) = s
        .call(
            Method::POST,
            "/query",
            Some(json!({"sql": "SELECT name FROM quarry.information_schema.connections"})),
            bob,
        )
        .await;
    assert!(!answer.to_string().contains("alice_pg"), "{answer}");
    let (status, answer) = s
        .call(
            Method::POST,
            "/query",
            Some(json!({"sql": "SELECT * FROM test_connection('alice_pg')"})),
            bob,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
    let mut bob_flight = s.flight("bob", "bob-pw-1").await;
    assert!(
        !catalogs(&mut bob_flight)
            .await
            .contains(&"alice_pg".to_owned())
    );
    let refused = flight_query(&mut bob_flight, "SELECT * FROM alice_pg.public.items")
        .await
        .unwrap_err();
    assert!(
        refused.contains("not found") || refused.contains("does not exist"),
        "{refused}"
    );

    // Bob's event stream carries the events of the connections he sees only: Alice's test
    // of hers is not in it, the admin's test of `pg` is.
    let mut events = s.events(bob).await;
    let (status, _) = s
        .call(
            Method::POST,
            &format!("/connections/{alice_id}/test"),
            None,
            alice,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let pg_id = names_and_ids(&s, admin).await["pg"].clone();
    let (status, _) = s
        .call(
            Method::POST,
            &format!("/connections/{pg_id}/test"),
            None,
            admin,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let first = events.next_event().await;
    assert_eq!(first["type"], "connection_tested", "{first}");
    assert_eq!(first["connection_id"], pg_id.as_str(), "{first}");

    // Alice (its owner) and the admin see and query it.
    let mut alice_flight = s.flight("alice", "alice-pw-1").await;
    assert!(
        catalogs(&mut alice_flight)
            .await
            .contains(&"alice_pg".to_owned())
    );
    assert_eq!(
        flight_query(&mut alice_flight, "SELECT * FROM alice_pg.public.items").await,
        Ok(100)
    );
    let mut admin_flight = s.flight("quarry", ADMIN_PASSWORD).await;
    assert!(
        catalogs(&mut admin_flight)
            .await
            .contains(&"alice_pg".to_owned())
    );

    // The admin locks `pg`: Bob still queries it, but neither member changes it.
    let (status, body) = s
        .call(
            Method::PUT,
            &format!("/connections/{pg_id}"),
            Some(json!({"visibility": "locked"})),
            admin,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        flight_query(&mut bob_flight, "SELECT * FROM pg.public.items").await,
        Ok(100)
    );
    for member in [bob, alice] {
        let (status, body) = s
            .call(
                Method::PUT,
                &format!("/connections/{pg_id}"),
                Some(json!({"name": "renamed"})),
                member,
            )
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        assert!(body.to_string().contains("locked"), "{body}");
    }
    let (status, _) = s
        .call(Method::DELETE, &format!("/connections/{pg_id}"), None, bob)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, answer) = s
        .call(
            Method::POST,
            "/query",
            Some(json!({"sql": "SELECT * FROM drop_connection('pg')"})),
            bob,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");

    // Alice changes her own; the admin drops it.
    let (status, body) = s
        .call(
            Method::PUT,
            &format!("/connections/{alice_id}"),
            Some(json!({"name": "alice_pg2"})),
            alice,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _) = s
        .call(
            Method::DELETE,
            &format!("/connections/{alice_id}"),
            None,
            admin,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    // The audit log: members may not read it; the admin reads who did what.
    let (status, _) = s.call(Method::GET, "/audit-log", None, alice).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, log) = s
        .call(Method::GET, "/audit-log?limit=100", None, admin)
        .await;
    assert_eq!(status, StatusCode::OK, "{log}");
    let mut seen: Vec<(String, String, String, String)> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let text = |k: &str| r[k].as_str().unwrap_or_default().to_owned();
            (
                text("actor"),
                text("action"),
                text("connection_name"),
                text("outcome"),
            )
        })
        .filter(|(actor, ..)| actor != "local")
        .collect();
    seen.reverse();
    let expected: Vec<(String, String, String, String)> = [
        ("alice", "create", "alice_pg", "ok"),
        ("alice", "discover", "alice_pg", "ok"),
        ("alice", "test", "alice_pg", "ok"),
        ("quarry", "test", "pg", "ok"),
        ("quarry", "visibility", "pg", "ok"),
        ("bob", "rename", "pg", "failed"),
        ("alice", "rename", "pg", "failed"),
        ("bob", "drop", "pg", "failed"),
        ("bob", "drop", "pg", "failed"),
        ("alice", "rename", "alice_pg", "ok"),
        ("quarry", "drop", "alice_pg2", "ok"),
    ]
    .iter()
    .map(|(a, b, c, d)| (a.to_string(), b.to_string(), c.to_string(), d.to_string()))
    .collect();
    assert_eq!(seen, expected);
}

/// Connection names to ids, as `who` lists them.
async fn names_and_ids(s: &Shared, who: &str) -> std::collections::HashMap<String, String> {
    let (_, list) = s.call(Method::GET, "/connections", None, who).await;
    list.as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_owned(),
                c["id"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}
