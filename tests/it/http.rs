//! The REST API through its real router (no socket), with a real SQLite store and a real
//! PostgreSQL source: the lifecycle of a connection by id, secrets never shown,
//! authentication, and each class of error.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use base64::Engine as _;
use datafusion::arrow::ipc::reader::StreamReader;
use quarry::server::auth::{Authenticator, Users};
use quarry::server::client_sessions::{ClientSessions, DEFAULT_SESSIONS_PER_USER};
use secrecy::SecretString;
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::support::{PgSourceFixture, pg_source_config};

pub const PASSWORD: &str = "open sesame";
/// A credential that must never appear in any response.
const SECRET: &str = "pg-Secret-7f3a9";

/// Who a call claims to be.
#[derive(Clone, Copy)]
pub enum As<'a> {
    Nobody,
    Token(&'a str),
    Basic(&'a str, &'a str),
}

/// The API on a fresh store with one connection `pg` to a database holding `items` (100
/// rows, some null names) and `tags`.
pub struct Api {
    pub fixture: PgSourceFixture,
    pub auth: Arc<Authenticator>,
    pub sessions: Arc<ClientSessions>,
    router: Router,
    pub token: String,
}

impl Api {
    pub async fn new() -> Self {
        let mut fixture = PgSourceFixture::new().await;
        fixture
            .exec(
                "CREATE TABLE items (id integer PRIMARY KEY, name text, price numeric(10,2));
                 INSERT INTO items SELECT g, CASE WHEN g % 10 = 0 THEN NULL ELSE 'item ' || g END,
                                          g * 1.25 FROM generate_series(1, 100) g;
                 CREATE TABLE tags (tag text);
                 INSERT INTO tags VALUES ('a'), ('b');",
            )
            .await;
        fixture.engine.discover_connection("pg").await.unwrap();
        let users = Users::with_password(&SecretString::from(PASSWORD)).unwrap();
        let auth = Arc::new(
            Authenticator::new(users, Duration::from_secs(600))
                .with_managed_users(fixture.engine.clone()),
        );
        let sessions = Arc::new(ClientSessions::new(
            fixture.engine.clone(),
            DEFAULT_SESSIONS_PER_USER,
            Duration::from_secs(600),
        ));
        let router = quarry::server::http::router(
            fixture.engine.clone(),
            Arc::clone(&auth),
            Arc::clone(&sessions),
        );
        let mut api = Api {
            fixture,
            auth,
            sessions,
            router,
            token: String::new(),
        };
        let (status, body) = api
            .json(Method::POST, "/login", None, As::Basic("quarry", PASSWORD))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        api.token = body["token"].as_str().unwrap().to_owned();
        api
    }

    /// Sends a request and returns the status, headers and raw body.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Body>,
        who: As<'_>,
        accept: Option<&str>,
    ) -> (StatusCode, HeaderMap, Bytes) {
        let mut request = Request::builder().method(method).uri(path);
        match who {
            As::Nobody => {}
            As::Token(token) => {
                request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
            }
            As::Basic(user, password) => {
                let encoded =
                    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
                request = request.header(header::AUTHORIZATION, format!("Basic {encoded}"));
            }
        }
        if let Some(accept) = accept {
            request = request.header(header::ACCEPT, accept);
        }
        let request = request
            .header(header::CONTENT_TYPE, "application/json")
            .body(body.unwrap_or_else(Body::empty))
            .unwrap();
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, headers, bytes)
    }

    /// Sends `body` (JSON) and parses the answer as JSON (Null when empty).
    pub async fn json(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        who: As<'_>,
    ) -> (StatusCode, Value) {
        let body = body.map(|b| Body::from(b.to_string()));
        let (status, _, bytes) = self.send(method, path, body, who, None).await;
        (status, parse(&bytes))
    }

    /// A JSON call with the test's token.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.json(method, path, body, As::Token(&self.token)).await
    }

    /// Creates `shop`, a second connection to the fixture's database with a password;
    /// returns the 201 answer's headers and raw body.
    async fn create_shop(&self) -> (HeaderMap, Bytes) {
        let mut config = pg_source_config(&self.fixture.db.name);
        config["password"] = json!(SECRET);
        let body = json!({"name": "shop", "source_type": "postgres", "config": config});
        let (status, headers, bytes) = self
            .send(
                Method::POST,
                "/connections",
                Some(Body::from(body.to_string())),
                As::Token(&self.token),
                None,
            )
            .await;
        assert_eq!(
            status,
            StatusCode::CREATED,
            "{}",
            String::from_utf8_lossy(&bytes)
        );
        (headers, bytes)
    }

    /// The id of the fixture's connection `pg`.
    pub async fn pg_id(&self) -> String {
        self.fixture
            .engine
            .connection("pg")
            .await
            .unwrap()
            .id
            .to_string()
    }
}

fn parse(bytes: &Bytes) -> Value {
    if bytes.is_empty() {
        return Value::Null;
    }
    serde_json::from_slice(bytes)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(bytes)))
}

/// Asserts an error response: its status, code, and that the message says `mentions`.
#[track_caller]
fn assert_error(answer: &(StatusCode, Value), status: StatusCode, code: &str, mentions: &str) {
    let (got, body) = answer;
    assert_eq!(*got, status, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(mentions),
        "the message should mention {mentions:?}: {message}"
    );
    assert_eq!(body.as_object().map(|o| o.len()), Some(1), "{body}");
}

fn table<'a>(tables: &'a Value, name: &str) -> &'a Value {
    tables
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == name)
        .unwrap_or_else(|| panic!("no table {name} in {tables}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_lives_its_whole_life_by_id() {
    let api = Api::new().await;
    let (headers, bytes) = api.create_shop().await;
    let created = parse(&bytes);
    let id = created["connection"]["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("conn_") && id.len() == 27, "{id}");
    assert_eq!(
        headers[header::LOCATION],
        format!("/connections/{id}").as_str()
    );
    assert_eq!(created["discovery"]["ok"], true, "{created}");
    assert_eq!(created["discovery"]["tables_added"], 2);
    assert_eq!(created["connection"]["tables"], 2);
    let path = format!("/connections/{id}");

    let (status, shown) = api.call(Method::GET, &path, None).await;
    assert_eq!(status, StatusCode::OK, "{shown}");
    assert_eq!(shown["name"], "shop");
    assert_eq!(shown["source_type"], "postgres");
    assert_eq!(shown["status"]["state"], "untested");
    assert_eq!(shown["config"]["password_set"], true);
    assert_eq!(shown["config"]["database"], api.fixture.db.name.as_str());
    assert!(shown["config"].get("password").is_none(), "{shown}");

    let (_, tables) = api.call(Method::GET, &format!("{path}/tables"), None).await;
    assert_eq!(tables.as_array().unwrap().len(), 2, "{tables}");
    assert_eq!(table(&tables, "items")["cached"], false);
    assert_eq!(table(&tables, "items")["columns"], 3);

    let (status, result) = api
        .call(
            Method::POST,
            "/query",
            Some(
                json!({"sql": "SELECT count(*) AS n, count(name) AS named FROM shop.public.items"}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{result}");
    assert_eq!(result["rows"], json!([{"n": 100, "named": 90}]));
    assert_eq!(result["columns"][0]["name"], "n");
    assert_eq!(result["columns"][0]["type"], "Int64");

    let (_, tables) = api.call(Method::GET, &format!("{path}/tables"), None).await;
    let items = table(&tables, "items");
    assert_eq!(items["cached"], true, "{tables}");
    assert_eq!(items["cache"]["rows"], 100);
    assert_eq!(table(&tables, "tags")["cached"], false);
    // The first fetch is a full refresh of every row, and shows as one.
    let fresh = &items["freshness"];
    assert_eq!(fresh["refresh_mode"], "full", "{fresh}");
    assert_eq!(fresh["last_refresh_kind"], "full", "{fresh}");
    assert_eq!(fresh["last_refresh_rows"], 100, "{fresh}");
    assert_eq!(fresh["cache_files"], 1, "{fresh}");
    assert!(fresh["last_refresh_at"].as_str().is_some(), "{fresh}");
    assert!(fresh["last_error"].is_null(), "{fresh}");
    assert!(fresh["next_refresh_at"].is_null(), "no interval: {fresh}");

    let (status, tested) = api.call(Method::POST, &format!("{path}/test"), None).await;
    assert_eq!(status, StatusCode::OK, "{tested}");
    assert_eq!(tested["ok"], true, "{tested}");
    assert!(
        tested["server_version"]
            .as_str()
            .unwrap()
            .contains("PostgreSQL")
    );
    assert!(tested["latency_ms"].as_f64().unwrap() >= 0.0);
    let (_, listed) = api.call(Method::GET, "/connections", None).await;
    let shop = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id.as_str())
        .unwrap();
    assert_eq!(shop["status"]["state"], "ok", "{shop}");
    assert_eq!(shop["tables"], 2);
    assert_eq!(shop["tables_cached"], 1);

    let (status, refreshed) = api
        .call(Method::POST, &format!("{path}/refresh"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{refreshed}");
    assert_eq!(refreshed["tables"], 2);
    assert_eq!(refreshed["rows"], 102);
    let (_, tables) = api.call(Method::GET, &format!("{path}/tables"), None).await;
    assert_eq!(table(&tables, "tags")["cached"], true);
    assert_eq!(table(&tables, "items")["cache"]["version"], 2, "{tables}");

    let (status, purged) = api
        .call(
            Method::DELETE,
            &format!("{path}/tables/public/items/cache"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{purged}");
    assert!(purged["entries_removed"].as_i64().unwrap() >= 1, "{purged}");
    let (_, tables) = api.call(Method::GET, &format!("{path}/tables"), None).await;
    assert_eq!(table(&tables, "items")["cached"], false);
    assert_eq!(table(&tables, "tags")["cached"], true);
    let (status, purged) = api
        .call(Method::DELETE, &format!("{path}/cache"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{purged}");
    assert_eq!(purged["entries_removed"], 1, "{purged}");

    // Renaming keeps the id, the tables and the address; SQL sees the new catalog name.
    let (status, renamed) = api
        .call(Method::PUT, &path, Some(json!({"name": "store"})))
        .await;
    assert_eq!(status, StatusCode::OK, "{renamed}");
    assert_eq!(
        (renamed["id"].as_str(), renamed["name"].as_str()),
        (Some(id.as_str()), Some("store"))
    );
    let (status, result) = api
        .call(
            Method::POST,
            "/query",
            Some(json!({"sql": "SELECT count(*) AS n FROM store.public.tags"})),
        )
        .await;
    assert_eq!(
        (status, &result["rows"]),
        (StatusCode::OK, &json!([{"n": 2}])),
        "{result}"
    );

    // Pointing the connection elsewhere drops its cache; a new password is kept, unseen.
    let (_, tables) = api.call(Method::GET, &format!("{path}/tables"), None).await;
    assert_eq!(table(&tables, "tags")["cached"], true);
    let (status, moved) = api
        .call(
            Method::PUT,
            &path,
            Some(json!({"config": {"host": "localhost", "password": "another-Secret-1"}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{moved}");
    assert_eq!(moved["config"]["host"], "localhost");
    assert_eq!(moved["config"]["password_set"], true);
    assert!(!moved.to_string().contains("another-Secret-1"));
    let (_, tables) = api.call(Method::GET, &format!("{path}/tables"), None).await;
    assert_eq!(table(&tables, "tags")["cached"], false, "{tables}");
    // A change of something else (a timeout) keeps the cache.
    api.call(
        Method::POST,
        "/query",
        Some(json!({"sql": "SELECT * FROM store.public.tags"})),
    )
    .await;
    let (status, _) = api
        .call(
            Method::PUT,
            &path,
            Some(json!({"config": {"statement_timeout": "60s"}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, tables) = api.call(Method::GET, &format!("{path}/tables"), None).await;
    assert_eq!(table(&tables, "tags")["cached"], true, "{tables}");

    let (status, discovered) = api
        .call(Method::POST, &format!("{path}/discover"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{discovered}");
    assert_eq!(discovered["ok"], true);
    assert_eq!(discovered["tables_removed"], 0);

    let (status, gone) = api.call(Method::DELETE, &path, None).await;
    assert_eq!((status, gone), (StatusCode::NO_CONTENT, Value::Null));
    assert_error(
        &api.call(Method::GET, &path, None).await,
        StatusCode::NOT_FOUND,
        "not_found",
        &id,
    );
    let (_, listed) = api.call(Method::GET, "/connections", None).await;
    assert!(!listed.to_string().contains(&id), "{listed}");
    let gone_id = quarry::ConnectionId::parse(&id).unwrap();
    assert!(
        api.fixture
            .engine
            .store()
            .cache_entries(&gone_id)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_response_ever_shows_a_password() {
    let api = Api::new().await;
    let (_, created) = api.create_shop().await;
    let id = parse(&created)["connection"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut raw = vec![created];
    for path in [
        "/connections".to_owned(),
        format!("/connections/{id}"),
        format!("/connections/{id}/tables"),
    ] {
        let (status, _, bytes) = api
            .send(Method::GET, &path, None, As::Token(&api.token), None)
            .await;
        assert_eq!(status, StatusCode::OK);
        raw.push(bytes);
    }
    let (_, _, listed) = api
        .send(
            Method::GET,
            "/connections",
            None,
            As::Token(&api.token),
            None,
        )
        .await;
    let listed = parse(&listed);
    // The list holds no config at all, so not even the fact that a password is set.
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c.get("config").is_none()),
        "{listed}"
    );
    for bytes in &raw {
        let text = String::from_utf8_lossy(bytes);
        assert!(!text.contains(SECRET), "a password leaked: {text}");
        assert!(
            !text.contains("\"password\""),
            "a password field appears: {text}"
        );
    }
    // Not through SQL either.
    let (_, _, bytes) = api
        .send(
            Method::POST,
            "/query",
            Some(Body::from(
                json!({"sql": "SELECT * FROM quarry.information_schema.connections"}).to_string(),
            )),
            As::Token(&api.token),
            None,
        )
        .await;
    assert!(!String::from_utf8_lossy(&bytes).contains(SECRET));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_without_valid_credentials_get_401() {
    let api = Api::new().await;
    let id = api.pg_id().await;
    let guarded = [
        (Method::GET, "/connections".to_owned()),
        (Method::POST, "/connections".to_owned()),
        (Method::GET, format!("/connections/{id}")),
        (Method::PUT, format!("/connections/{id}")),
        (Method::DELETE, format!("/connections/{id}")),
        (Method::POST, format!("/connections/{id}/test")),
        (Method::POST, format!("/connections/{id}/discover")),
        (Method::POST, format!("/connections/{id}/refresh")),
        (Method::DELETE, format!("/connections/{id}/cache")),
        (
            Method::DELETE,
            format!("/connections/{id}/tables/public/items/cache"),
        ),
        (Method::GET, format!("/connections/{id}/tables")),
        (
            Method::POST,
            format!("/connections/{id}/tables/public/items/refresh"),
        ),
        (Method::POST, "/query".to_owned()),
    ];
    let forged = "x".repeat(43);
    for who in [
        As::Nobody,
        As::Token(&forged),
        As::Basic("quarry", "wrong"),
        As::Basic("eve", PASSWORD),
    ] {
        for (method, path) in &guarded {
            let body = json!({"sql": "SELECT 1"});
            let answer = api.json(method.clone(), path, Some(body), who).await;
            assert_error(&answer, StatusCode::UNAUTHORIZED, "unauthenticated", "");
            // One sentence, no run of spaces from a broken line continuation.
            let message = answer.1["error"]["message"].as_str().unwrap_or_default();
            assert!(!message.contains("  "), "{message:?}");
        }
    }
    let (_, headers, _) = api
        .send(Method::GET, "/connections", None, As::Nobody, None)
        .await;
    assert!(headers.contains_key(header::WWW_AUTHENTICATE));
    // Nothing was deleted or changed by the refused calls.
    assert!(api.fixture.engine.connection(&id).await.is_ok());
    // Both kinds of good credentials work; health and the document need none.
    let (status, _) = api
        .json(
            Method::GET,
            "/connections",
            None,
            As::Basic("quarry", PASSWORD),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, listed) = api.call(Method::GET, "/connections", None).await;
    assert_eq!(
        (status, listed[0]["id"].as_str()),
        (StatusCode::OK, Some(id.as_str()))
    );
    let (status, health) = api.json(Method::GET, "/health", None, As::Nobody).await;
    assert_eq!((status, &health["status"]), (StatusCode::OK, &json!("ok")));
    let (status, doc) = api
        .json(Method::GET, "/openapi.json", None, As::Nobody)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        doc["paths"]["/connections/{id}"]["put"].is_object(),
        "{doc}"
    );
    // A token from the API is a token of the shared authenticator (Flight SQL takes it too).
    let header = format!("Bearer {}", api.token);
    assert_eq!(
        api.auth.user(Some(header.as_bytes())).await.unwrap(),
        "quarry"
    );
}

/// A request that must fail: method, path, body, then the status, code and a word of the
/// message it must get.
type Case<'a> = (
    Method,
    &'a str,
    Option<String>,
    StatusCode,
    &'a str,
    &'a str,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_kind_of_bad_request_gets_its_status() {
    use StatusCode as S;
    let api = Api::new().await;
    let id = api.pg_id().await;
    let config = pg_source_config(&api.fixture.db.name);
    let demo = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/demo.db");
    let (status, created) = api
        .call(
            Method::POST,
            "/connections",
            Some(json!({"name": "other", "source_type": "sqlite", "config": {"path": demo}})),
        )
        .await;
    assert_eq!(status, S::CREATED, "{created}");
    let other = format!(
        "/connections/{}",
        created["connection"]["id"].as_str().unwrap()
    );
    let copy = api.fixture.backend.data_dir().join("copy.db");
    std::fs::copy(demo, &copy).unwrap();
    let pg = format!("/connections/{id}");
    let unknown = "/connections/conn_0000000000000000000000";
    let nope_cache = format!("{pg}/tables/public/nope/cache");
    let nope_refresh = format!("{pg}/tables/public/nope/refresh");
    let create = |name: Value, source_type: &str, config: &Value| {
        json!({"name": name, "source_type": source_type, "config": config}).to_string()
    };
    let huge = format!("{{\"sql\": \"SELECT '{}'\"}}", "x".repeat(2 * 1024 * 1024));
    let raw = |text: &str| Some(text.to_owned());
    #[rustfmt::skip]
    let cases: Vec<Case> = vec![
        // 400: not JSON, empty, not an object, a field of the wrong type, an unknown or
        // missing field, nothing to do, bad SQL.
        (Method::POST, "/connections", raw("{\"name\": "), S::BAD_REQUEST, "bad_request", "not valid JSON"),
        (Method::POST, "/connections", None, S::BAD_REQUEST, "bad_request", "empty"),
        (Method::POST, "/connections", raw("[\"pg2\", \"sqlite\", {}]"), S::BAD_REQUEST, "bad_request", "JSON object"),
        (Method::POST, "/connections", Some(create(json!(7), "postgres", &config)), S::BAD_REQUEST, "bad_request", "'name'"),
        (Method::POST, "/connections", Some(json!({"name": "x", "source_type": "postgres", "config": config, "colour": "red"}).to_string()), S::BAD_REQUEST, "bad_request", "unknown field `colour`"),
        (Method::POST, "/connections", Some(json!({"name": "x", "config": config}).to_string()), S::BAD_REQUEST, "bad_request", "missing field `source_type`"),
        (Method::POST, "/connections", Some(create(json!("x"), "postgres", &json!("host=a"))), S::BAD_REQUEST, "bad_request", "'config'"),
        (Method::PUT, &pg, raw("{}"), S::BAD_REQUEST, "bad_request", "nothing to change"),
        (Method::POST, "/query", raw(r#"{"sql": "SELEC 1"}"#), S::BAD_REQUEST, "bad_request", "syntax error"),
        (Method::POST, "/query", raw(r#"{"sql": " "}"#), S::BAD_REQUEST, "bad_request", "'sql'"),
        (Method::POST, "/query", raw(r#"{"query": "SELECT 1"}"#), S::BAD_REQUEST, "bad_request", "unknown field `query`"),
        // 404: an unknown id, a name where an id belongs, an unknown table or route, a
        // missing table in SQL; 405: a method a route does not have.
        (Method::GET, unknown, None, S::NOT_FOUND, "not_found", "conn_0000000000000000000000"),
        (Method::DELETE, unknown, None, S::NOT_FOUND, "not_found", "conn_0000000000000000000000"),
        (Method::GET, "/connections/pg", None, S::NOT_FOUND, "not_found", "by id"),
        (Method::DELETE, &nope_cache, None, S::NOT_FOUND, "not_found", "public.nope"),
        (Method::POST, &nope_refresh, None, S::NOT_FOUND, "not_found", "public.nope"),
        (Method::GET, "/nowhere", None, S::NOT_FOUND, "not_found", "/nowhere"),
        (Method::POST, "/query", raw(r#"{"sql": "SELECT * FROM pg.public.nope"}"#), S::NOT_FOUND, "not_found", "nope"),
        (Method::PATCH, "/connections", None, S::METHOD_NOT_ALLOWED, "method_not_allowed", "PATCH"),
        // 409: a taken name, on create and on rename (which then changes nothing else).
        (Method::POST, "/connections", Some(create(json!("pg"), "postgres", &config)), S::CONFLICT, "conflict", "'pg'"),
        (Method::PUT, &other, Some(json!({"name": "pg", "config": {"path": copy}}).to_string()), S::CONFLICT, "conflict", "'pg'"),
        // 413: a body over the limit.
        (Method::POST, "/query", Some(huge), S::PAYLOAD_TOO_LARGE, "payload_too_large", "KiB"),
        // 422: values that break a rule.
        (Method::POST, "/connections", Some(create(json!("Bad Name"), "postgres", &config)), S::UNPROCESSABLE_ENTITY, "validation_failed", "invalid connection name"),
        (Method::POST, "/connections", Some(create(json!("x"), "oracle", &config)), S::UNPROCESSABLE_ENTITY, "validation_failed", "unknown source type 'oracle'"),
        (Method::POST, "/connections", Some(create(json!("x"), "postgres", &json!({"hots": "a", "database": "d"}))), S::UNPROCESSABLE_ENTITY, "validation_failed", "host"),
        (Method::PUT, &pg, raw(r#"{"config": {"port": 70000}}"#), S::UNPROCESSABLE_ENTITY, "validation_failed", "port"),
        (Method::PUT, &pg, raw(r#"{"name": "quarry"}"#), S::UNPROCESSABLE_ENTITY, "validation_failed", "reserved"),
    ];
    for (method, path, body, status, code, mentions) in cases {
        let (got, _, bytes) = api
            .send(
                method.clone(),
                path,
                body.map(Body::from),
                As::Token(&api.token),
                None,
            )
            .await;
        let answer = (got, parse(&bytes));
        let context = format!("{method} {path}");
        assert!(answer.0 == status, "{context}: {} {}", answer.0, answer.1);
        assert_error(&answer, status, code, mentions);
    }
    // None of the refused requests created or changed anything.
    let (_, unchanged) = api.call(Method::GET, &other, None).await;
    assert_eq!(unchanged["config"]["path"], demo, "{unchanged}");
    let (_, listed) = api.call(Method::GET, "/connections", None).await;
    let names: Vec<_> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["other", "pg"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_that_is_down_is_a_result_or_a_502_never_a_500() {
    let api = Api::new().await;
    let mut config = pg_source_config("nowhere");
    config["port"] = json!(1);
    config["connect_timeout"] = json!("2s");
    let (status, created) = api
        .call(
            Method::POST,
            "/connections",
            Some(json!({"name": "down", "source_type": "postgres", "config": config})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["discovery"]["ok"], false);
    assert_eq!(
        created["discovery"]["error"]["code"], "source_unavailable",
        "{created}"
    );
    let id = created["connection"]["id"].as_str().unwrap().to_owned();
    let (status, tested) = api
        .call(Method::POST, &format!("/connections/{id}/test"), None)
        .await;
    assert_eq!(
        (status, &tested["ok"]),
        (StatusCode::OK, &json!(false)),
        "{tested}"
    );
    assert!(!tested["error"].as_str().unwrap().is_empty());
    let (_, shown) = api
        .call(Method::GET, &format!("/connections/{id}"), None)
        .await;
    assert_eq!(shown["status"]["state"], "failed", "{shown}");
    let answer = api
        .call(Method::POST, &format!("/connections/{id}/discover"), None)
        .await;
    assert_error(
        &answer,
        StatusCode::BAD_GATEWAY,
        "source_unavailable",
        "down",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_results_come_as_json_or_arrow() {
    let api = Api::new().await;
    let sql = json!({"sql": "SELECT id, name FROM pg.public.items ORDER BY id"}).to_string();
    let (status, headers, bytes) = api
        .send(
            Method::POST,
            "/query",
            Some(Body::from(sql.clone())),
            As::Token(&api.token),
            Some(quarry::server::http::query::ARROW_STREAM),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    assert_eq!(
        headers[header::CONTENT_TYPE],
        quarry::server::http::query::ARROW_STREAM
    );
    let reader = StreamReader::try_new(std::io::Cursor::new(bytes.to_vec()), None).unwrap();
    let schema = reader.schema();
    let batches: Vec<_> = reader.map(Result::unwrap).collect();
    assert_eq!(schema.field(0).name(), "id");
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 100);

    let (status, headers, bytes) = api
        .send(
            Method::POST,
            "/query",
            Some(Body::from(sql)),
            As::Token(&api.token),
            Some("application/json"),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "application/json");
    let result = parse(&bytes);
    let rows = result["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 100);
    assert_eq!(rows[0], json!({"id": 1, "name": "item 1"}));
    // A null is an explicit null, not a missing key.
    assert_eq!(rows[9], json!({"id": 10, "name": null}));

    // A result of many batches is one JSON array holding every row.
    let many = json!({"sql": "SELECT value FROM generate_series(1, 50000)"});
    let (status, result) = api.call(Method::POST, "/query", Some(many)).await;
    assert_eq!(status, StatusCode::OK);
    let values: Vec<i64> = result["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["value"].as_i64().unwrap())
        .collect();
    assert_eq!(values, (1..=50000).collect::<Vec<_>>());
    // An empty result is an empty array with its columns.
    let (_, result) = api
        .call(
            Method::POST,
            "/query",
            Some(json!({"sql": "SELECT 1 AS x WHERE false"})),
        )
        .await;
    assert_eq!(
        result,
        json!({"columns": [{"name": "x", "type": "Int64", "nullable": false}], "rows": []})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writes_wait_for_each_other_instead_of_failing() {
    // Found by schemathesis: with the SQLite store, a discovery and a refresh at the same
    // time made one of them fail with "database is locked" (a 500).
    let api = Api::new().await;
    let id = api.pg_id().await;
    let calls = (0..12).map(|i| {
        let api = &api;
        let path = format!(
            "/connections/{id}/{}",
            if i % 2 == 0 { "discover" } else { "refresh" }
        );
        async move { api.call(Method::POST, &path, None).await }
    });
    for (status, body) in futures::future::join_all(calls).await {
        assert_eq!(status, StatusCode::OK, "{body}");
    }
}

/// One HTTP/1.1 request over a plain socket: the status and the body.
async fn http_request(addr: &str, method: &str, path: &str, authorization: &str) -> (u16, String) {
    http_call(addr, method, path, authorization, "").await
}

/// One HTTP/1.1 request with a JSON `body` over a plain socket: the status and the body.
pub async fn http_call(
    addr: &str,
    method: &str,
    path: &str,
    authorization: &str,
    body: &str,
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: {authorization}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    socket.read_to_string(&mut response).await.unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response.split_once("\r\n\r\n").unwrap().1.to_owned();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_runs_both_servers_on_one_set_of_users_and_tokens() {
    use crate::flight::{listening_addresses, query, rows};
    let dir = tempfile::tempdir().unwrap();
    let mut child = crate::support::quarry_command(dir.path())
        .args([
            "serve",
            "--flight-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
        ])
        .env("QUARRY_SERVER_PASSWORD", PASSWORD)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let addrs = listening_addresses(&mut child, 2);
    let (http, flight) = (&addrs[0], &addrs[1]);
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("quarry:{PASSWORD}"))
    );
    let (status, body) = http_request(http, "POST", "/login", &basic).await;
    assert_eq!(status, 200, "{body}");
    let token = parse(&Bytes::from(body))["token"]
        .as_str()
        .unwrap()
        .to_owned();
    // The token from the HTTP login works over Flight SQL...
    let channel = tonic::transport::Channel::from_shared(format!("http://{flight}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = arrow_flight::sql::client::FlightSqlServiceClient::new(channel);
    client.set_token(token.clone());
    assert_eq!(rows(&query(&mut client, "SELECT 1").await), 1);
    // ...and one from the Flight handshake works over HTTP.
    let flight_token = client.handshake("quarry", PASSWORD).await.unwrap();
    let flight_token = String::from_utf8(flight_token.to_vec()).unwrap();
    let (status, body) = http_request(
        http,
        "GET",
        "/connections",
        &format!("Bearer {flight_token}"),
    )
    .await;
    assert_eq!((status, body.as_str()), (200, "[]"));
    let (status, _) = http_request(http, "GET", "/connections", "Bearer forged").await;
    assert_eq!(status, 401);
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn use_lasts_for_the_token_s_session_only() {
    let api = Api::new().await;
    let (status, body) = api
        .call(
            Method::POST,
            "/query",
            Some(json!({"sql": "USE pg.public"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = api
        .call(
            Method::POST,
            "/query",
            Some(json!({"sql": "SELECT count(*) AS n FROM items"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["rows"][0]["n"], 100, "{body}");
    // Another login is another session, still on datafusion.public.
    let (_, login) = api
        .json(Method::POST, "/login", None, As::Basic("quarry", PASSWORD))
        .await;
    let other = login["token"].as_str().unwrap().to_owned();
    let answer = api
        .json(
            Method::POST,
            "/query",
            Some(json!({"sql": "SELECT count(*) AS n FROM items"})),
            As::Token(&other),
        )
        .await;
    assert_error(
        &answer,
        StatusCode::NOT_FOUND,
        "not_found",
        "did you mean pg.public.items?",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn integers_beyond_2_pow_53_are_strings_in_json() {
    let api = Api::new().await;
    let sql = "SELECT CAST(9007199254740993 AS BIGINT) AS big, \
               CAST(-9007199254740993 AS BIGINT) AS negative, \
               CAST(9007199254740992 AS BIGINT) AS edge, 42 AS small, \
               CAST(18446744073709551615 AS BIGINT UNSIGNED) AS unsigned_max, \
               CAST(NULL AS BIGINT) AS missing";
    let (status, body) = api
        .call(Method::POST, "/query", Some(json!({ "sql": sql })))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let row = &body["rows"][0];
    assert_eq!(row["big"], json!("9007199254740993"), "{body}");
    assert_eq!(row["negative"], json!("-9007199254740993"), "{body}");
    assert_eq!(row["edge"], json!(9007199254740992u64), "{body}");
    assert_eq!(row["small"], json!(42), "{body}");
    assert_eq!(row["unsigned_max"], json!("18446744073709551615"), "{body}");
    assert_eq!(row["missing"], Value::Null, "{body}");
    // The document says so.
    let (_, document) = api
        .json(Method::GET, "/openapi.json", None, As::Nobody)
        .await;
    assert!(
        document.to_string().contains("are written as strings"),
        "{document}"
    );
}

#[tokio::test]
async fn the_event_stream_carries_a_connection_test_to_a_signed_in_client() {
    use futures::StreamExt;
    let api = Api::new().await;
    let (status, _, _) = api
        .send(Method::GET, "/events", None, As::Nobody, None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let request = Request::builder()
        .uri("/events")
        .header(header::AUTHORIZATION, format!("Bearer {}", api.token))
        .body(Body::empty())
        .unwrap();
    let response = api.router.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "text/event-stream"
    );
    let mut body = response.into_body().into_data_stream();
    let id = api.pg_id().await;
    let (status, _) = api
        .call(Method::POST, &format!("/connections/{id}/test"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let mut text = String::new();
    let message = loop {
        let chunk = tokio::time::timeout(Duration::from_secs(30), body.next())
            .await
            .expect("no event within 30 s of the test")
            .expect("the stream ended")
            .unwrap();
        text.push_str(std::str::from_utf8(&chunk).unwrap());
        if let Some(message) = text
            .split("\n\n")
            .find(|m| m.contains("event: connection_tested"))
        {
            break message.to_owned();
        }
    };
    let data = message
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .unwrap();
    let event: Value = serde_json::from_str(data).unwrap();
    assert_eq!(
        event,
        json!({ "type": "connection_tested", "connection_id": id, "ok": true, "error": null })
    );
}

#[tokio::test]
async fn source_types_describe_each_config_for_forms() {
    let api = Api::new().await;
    let (status, body) = api.call(Method::GET, "/source-types", None).await;
    assert_eq!(status, StatusCode::OK);
    let types: Vec<&str> = body
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["source_type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["postgres", "mysql", "sqlite", "files"]);
    let postgres = &body[0]["config_schema"];
    assert_eq!(postgres["required"], json!(["host", "database", "user"]));
    assert_eq!(postgres["properties"]["password"]["writeOnly"], true);
    assert_eq!(postgres["properties"]["port"]["default"], 5432);
    assert_eq!(postgres["properties"]["ssl_mode"]["x-advanced"], true);
    assert_eq!(
        body[1]["config_schema"]["properties"]["port"]["default"],
        3306
    );
}

#[tokio::test]
async fn unsaved_settings_are_tested_and_their_errors_name_the_field() {
    let api = Api::new().await;
    let test = |body: Value| api.call(Method::POST, "/connection-tests", Some(body));
    let mut config = pg_source_config(&api.fixture.db.name);
    // A broken rule: 422, beside its key.
    config["port"] = json!(70000);
    let (status, body) = test(json!({ "source_type": "postgres", "config": config })).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["field"], "port", "{body}");
    let (status, body) =
        test(json!({ "source_type": "postgres", "config": { "hostname": "h" } })).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["field"], "hostname", "{body}");
    // Good settings connect; nothing is saved.
    let (status, body) = test(json!({
        "source_type": "postgres",
        "config": pg_source_config(&api.fixture.db.name),
        "name": "trial",
    }))
    .await;
    assert_eq!(
        (status, &body["ok"]),
        (StatusCode::OK, &json!(true)),
        "{body}"
    );
    let (_, list) = api.call(Method::GET, "/connections", None).await;
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    // A refused login points at the password, and names the connection it will be.
    let mut mysql = crate::support::mysql_source_config("mysql");
    mysql["password"] = json!("not-the-password");
    let (status, body) =
        test(json!({ "source_type": "mysql", "config": mysql, "name": "trial" })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["ok"], false, "{body}");
    assert_eq!(body["field"], "password", "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains("connection 'trial'") && error.contains("authentication failed"),
        "{error}"
    );
    assert!(!error.contains("not-the-password"), "{error}");
    // Editing a connection: the patch is tested over its stored config.
    let id = api.pg_id().await;
    let (status, body) =
        test(json!({ "source_type": "postgres", "config": {}, "connection_id": id })).await;
    assert_eq!(
        (status, &body["ok"]),
        (StatusCode::OK, &json!(true)),
        "{body}"
    );
    let (status, body) = test(json!({
        "source_type": "postgres",
        "config": { "database": "quarry_no_such_database" },
        "connection_id": id,
    }))
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["field"], "database", "{body}");
}

#[tokio::test]
async fn query_results_come_as_ndjson_rows_in_column_order() {
    let api = Api::new().await;
    let body = json!({
        "sql": "SELECT x.id, y.id, x.name, CAST(9007199254740993 AS BIGINT) AS big, x.price \
                FROM pg.public.items x JOIN pg.public.items y ON x.id = y.id + 1 \
                WHERE x.id IN (2, 10) ORDER BY x.id"
    });
    let (status, headers, bytes) = api
        .send(
            Method::POST,
            "/query",
            Some(Body::from(body.to_string())),
            As::Token(&api.token),
            Some("application/x-ndjson"),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    assert_eq!(headers[header::CONTENT_TYPE], "application/x-ndjson");
    let lines: Vec<Value> = std::str::from_utf8(&bytes)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let names: Vec<&str> = lines[0]["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["id", "id", "name", "big", "price"]);
    // Same-named columns keep their own values; a NULL is null; a big integer is exact, and
    // a decimal keeps its scale (items.price is numeric(10,2): id * 1.25).
    assert_eq!(
        lines[1..],
        [
            json!([2, 1, "item 2", "9007199254740993", "2.50"]),
            json!([10, 9, null, "9007199254740993", "12.50"]),
        ]
    );
}

#[tokio::test]
async fn include_and_exclude_patterns_on_a_connection_hold_for_every_discovery() {
    let api = Api::new().await;
    let id = api.pg_id().await;
    let discover = format!("/connections/{id}/discover");
    api.call(Method::POST, &discover, None).await;
    assert_eq!(table_names(&api, &id).await, ["items", "tags"]);
    let (status, body) = api
        .call(
            Method::PUT,
            &format!("/connections/{id}"),
            Some(json!({ "config": { "include": ["public.*"], "exclude": ["tag?"] } })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = api.call(Method::POST, &discover, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["tables_removed"], 1, "{body}");
    assert_eq!(table_names(&api, &id).await, ["items"]);
    // A new table that matches is found; one that does not stays out.
    let mut admin = <sqlx::PgConnection as sqlx::Connection>::connect(&api.fixture.db.url)
        .await
        .unwrap();
    sqlx::raw_sql("CREATE TABLE tagz (x int); CREATE TABLE orders (x int);")
        .execute(&mut admin)
        .await
        .unwrap();
    api.call(Method::POST, &discover, None).await;
    assert_eq!(table_names(&api, &id).await, ["items", "orders"]);
    // A bad pattern is refused beside its key.
    let (status, body) = api
        .call(
            Method::PUT,
            &format!("/connections/{id}"),
            Some(json!({ "config": { "exclude": ["[oops"] } })),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["field"], "exclude", "{body}");
}

/// The names of the tables of connection `id`, sorted.
async fn table_names(api: &Api, id: &str) -> Vec<String> {
    let (_, list) = api
        .call(Method::GET, &format!("/connections/{id}/tables"), None)
        .await;
    let mut names: Vec<String> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect();
    names.sort_unstable();
    names
}
