//! The Flight SQL server through arrow-flight's own Flight SQL client, as BI tools reach it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::sql::{
    CommandGetDbSchemas, CommandGetExportedKeys, CommandGetImportedKeys, CommandGetPrimaryKeys,
    CommandGetTables, SqlInfo,
};
use arrow_flight::{Action, CancelFlightInfoRequest, FlightInfo};
use datafusion::arrow::array::{AsArray, Int32Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{Int64Type, Schema};
use futures::TryStreamExt;
use prost::Message;
use quarry::server::RunningServer;
use quarry::server::auth::{Authenticator, Users};
use quarry::server::client_sessions::{ClientSessions, DEFAULT_SESSIONS_PER_USER};
use quarry::server::flight::ServeOptions;
use secrecy::SecretString;
use tonic::transport::Channel;

use crate::support::PgSourceFixture;

pub const PASSWORD: &str = "correct horse";

/// A PostgreSQL source with a small table, and a server on a free port in front of it.
pub struct Served {
    pub fixture: PgSourceFixture,
    pub server: RunningServer,
}

impl Served {
    pub async fn start() -> Self {
        let mut fixture = PgSourceFixture::new().await;
        fixture
            .exec(
                "CREATE TABLE items (id integer PRIMARY KEY, name text, price numeric(10,2));
                 INSERT INTO items SELECT g, 'item ' || g, g * 1.25 FROM generate_series(1, 100) g;
                 CREATE TABLE orders (id integer, line integer, item_id integer REFERENCES items,
                     qty integer, PRIMARY KEY (id, line));
                 CREATE VIEW slow AS SELECT 1 AS x FROM (SELECT pg_sleep(60)) s;",
            )
            .await;
        fixture.engine.discover_connection("pg").await.unwrap();
        let server = quarry::server::flight::start(ServeOptions {
            addr: "127.0.0.1:0".parse().unwrap(),
            tls: None,
            auth: Arc::new(Authenticator::new(
                Users::with_password(&SecretString::from(PASSWORD)).unwrap(),
                Duration::from_secs(600),
            )),
            sessions: Arc::new(ClientSessions::new(
                fixture.engine.clone(),
                DEFAULT_SESSIONS_PER_USER,
                Duration::from_secs(600),
            )),
        })
        .await
        .unwrap();
        Served { fixture, server }
    }

    pub fn uri(&self) -> String {
        format!("grpc://{}", self.server.local_addr())
    }

    /// A client that has not logged in.
    pub async fn anonymous(&self) -> FlightSqlServiceClient<Channel> {
        let channel = Channel::from_shared(format!("http://{}", self.server.local_addr()))
            .unwrap()
            .connect()
            .await
            .unwrap();
        FlightSqlServiceClient::new(channel)
    }

    /// A client logged in as `quarry`.
    pub async fn client(&self) -> FlightSqlServiceClient<Channel> {
        let mut client = self.anonymous().await;
        client.handshake("quarry", PASSWORD).await.unwrap();
        client
    }
}

pub async fn fetch(
    client: &mut FlightSqlServiceClient<Channel>,
    info: FlightInfo,
) -> Vec<RecordBatch> {
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    client
        .do_get(ticket)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap()
}

pub async fn query(client: &mut FlightSqlServiceClient<Channel>, sql: &str) -> Vec<RecordBatch> {
    let info = client.execute(sql.into(), None).await.unwrap();
    fetch(client, info).await
}

/// Whether a client error carries the gRPC status `code` (clients print its description).
fn has_code(error: &str, code: tonic::Code) -> bool {
    error.contains(code.description())
}

pub fn rows(batches: &[RecordBatch]) -> usize {
    batches.iter().map(RecordBatch::num_rows).sum()
}

#[tokio::test]
async fn login_gives_a_token_and_everything_else_needs_one() {
    let served = Served::start().await;
    let mut client = served.anonymous().await;
    let error = client
        .handshake("quarry", "wrong")
        .await
        .unwrap_err()
        .to_string();
    assert!(has_code(&error, tonic::Code::Unauthenticated), "{error}");
    assert!(error.contains("wrong user name or password"), "{error}");
    let error = client
        .handshake("nobody", PASSWORD)
        .await
        .unwrap_err()
        .to_string();
    assert!(has_code(&error, tonic::Code::Unauthenticated), "{error}");

    // No token at all, and a made-up one.
    let error = client
        .execute("SELECT 1".into(), None)
        .await
        .unwrap_err()
        .to_string();
    assert!(has_code(&error, tonic::Code::Unauthenticated), "{error}");
    client.set_token("forged".into());
    let error = client.get_catalogs().await.unwrap_err().to_string();
    assert!(
        has_code(&error, tonic::Code::Unauthenticated) && error.contains("expired"),
        "{error}"
    );

    let mut client = served.client().await;
    assert!(client.token().is_some_and(|t| t.len() >= 40));
    let batches = query(&mut client, "SELECT 1 + 1 AS two").await;
    assert_eq!(batches[0].column(0).as_primitive::<Int64Type>().value(0), 2);

    // Basic credentials on the call itself work too.
    let mut basic = served.anonymous().await;
    let credentials = base64::Engine::encode(
        &base64::prelude::BASE64_STANDARD,
        format!("quarry:{PASSWORD}"),
    );
    basic.set_header("authorization", format!("Basic {credentials}"));
    assert_eq!(rows(&query(&mut basic, "SELECT 1").await), 1);
}

#[tokio::test]
async fn a_statement_over_a_postgres_table_streams_its_rows() {
    let served = Served::start().await;
    let mut client = served.client().await;
    let batches = query(
        &mut client,
        "SELECT count(*) AS n, sum(price) AS total, max(name) AS last FROM pg.public.items",
    )
    .await;
    let batch = &batches[0];
    assert_eq!(batch.column(0).as_primitive::<Int64Type>().value(0), 100);
    // 1.25 * (1 + ... + 100) = 6312.50, exact as a decimal.
    let total = batch.column(1);
    assert_eq!(
        datafusion::arrow::util::display::array_value_to_string(total, 0).unwrap(),
        "6312.50"
    );
    assert_eq!(batch.column(2).as_string::<i32>().value(0), "item 99");
}

#[tokio::test]
async fn a_prepared_statement_takes_two_parameters() {
    let served = Served::start().await;
    let mut client = served.client().await;
    let mut prepared = client
        .prepare(
            "SELECT id, name FROM pg.public.items WHERE id > $1 AND name <> $2 ORDER BY id".into(),
            None,
        )
        .await
        .unwrap();
    let parameters = prepared.parameter_schema().unwrap().clone();
    assert_eq!(
        parameters
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect::<Vec<_>>(),
        ["$1", "$2"]
    );
    let values = RecordBatch::try_new(
        std::sync::Arc::new(Schema::new(vec![
            datafusion::arrow::datatypes::Field::new(
                "$1",
                datafusion::arrow::datatypes::DataType::Int32,
                true,
            ),
            datafusion::arrow::datatypes::Field::new(
                "$2",
                datafusion::arrow::datatypes::DataType::Utf8,
                true,
            ),
        ])),
        vec![
            std::sync::Arc::new(Int32Array::from(vec![95])),
            std::sync::Arc::new(StringArray::from(vec!["item 97"])),
        ],
    )
    .unwrap();
    prepared.set_parameters(values).unwrap();
    let info = prepared.execute().await.unwrap();
    let batches = fetch(&mut client, info).await;
    assert_eq!(crate::support::int32_column(&batches), [96, 98, 99, 100]);
    prepared.close().await.unwrap();
}

#[tokio::test]
async fn catalogs_schemas_and_tables_are_listed_without_fetching() {
    let served = Served::start().await;
    let mut client = served.client().await;
    let info = client.get_catalogs().await.unwrap();
    let catalogs = fetch(&mut client, info).await;
    let names: Vec<&str> = catalogs[0]
        .column(0)
        .as_string::<i32>()
        .iter()
        .flatten()
        .collect();
    assert!(
        names.contains(&"pg") && names.contains(&"datafusion"),
        "{names:?}"
    );

    let info = client
        .get_db_schemas(CommandGetDbSchemas {
            catalog: Some("pg".into()),
            db_schema_filter_pattern: None,
        })
        .await
        .unwrap();
    let schemas = fetch(&mut client, info).await;
    let names: Vec<&str> = schemas[0]
        .column(1)
        .as_string::<i32>()
        .iter()
        .flatten()
        .collect();
    assert!(names.contains(&"public"), "{names:?}");

    let info = client
        .get_tables(CommandGetTables {
            catalog: Some("pg".into()),
            db_schema_filter_pattern: Some("pub%".into()),
            table_name_filter_pattern: Some("it_ms".into()),
            table_types: vec![],
            include_schema: true,
        })
        .await
        .unwrap();
    let tables = fetch(&mut client, info).await;
    assert_eq!(rows(&tables), 1);
    let batch = &tables[0];
    assert_eq!(batch.column(2).as_string::<i32>().value(0), "items");
    assert_eq!(batch.column(3).as_string::<i32>().value(0), "TABLE");
    let schema_bytes = batch.column(4).as_binary::<i32>().value(0).to_vec();
    let schema = Schema::try_from(arrow_flight::IpcMessage(schema_bytes.into())).unwrap();
    let columns: Vec<String> = schema
        .fields()
        .iter()
        .map(|f| format!("{}:{}", f.name(), f.data_type()))
        .collect();
    assert_eq!(
        columns,
        ["id:Int32", "name:Utf8", "price:Decimal128(10, 2)"]
    );

    // Listing read the schema from discovery: the table is still not cached.
    let cached = query(
        &mut client,
        "SELECT cached FROM quarry.information_schema.tables WHERE table_name = 'items'",
    )
    .await;
    assert!(!cached[0].column(0).as_boolean().value(0));

    let info = client
        .get_sql_info(vec![
            SqlInfo::FlightSqlServerName,
            SqlInfo::FlightSqlServerReadOnly,
        ])
        .await
        .unwrap();
    assert_eq!(rows(&fetch(&mut client, info).await), 2);
    let info = client.get_table_types().await.unwrap();
    assert_eq!(rows(&fetch(&mut client, info).await), 3);
}

/// Each row of `batches` as its string and integer cells joined with `|` (NULL empty).
fn key_rows(batches: &[RecordBatch]) -> Vec<String> {
    let mut out = Vec::new();
    for batch in batches {
        for row in 0..batch.num_rows() {
            let cells: Vec<String> = batch
                .columns()
                .iter()
                .map(|c| crate::render::value_text(c.as_ref(), row).unwrap_or_default())
                .collect();
            out.push(cells.join("|"));
        }
    }
    out
}

#[tokio::test]
async fn primary_imported_and_exported_keys_come_from_discovery() {
    let served = Served::start().await;
    let mut client = served.client().await;
    let info = client
        .get_primary_keys(CommandGetPrimaryKeys {
            catalog: Some("pg".into()),
            db_schema: None,
            table: "orders".into(),
        })
        .await
        .unwrap();
    let keys = fetch(&mut client, info).await;
    assert_eq!(
        key_rows(&keys),
        [
            "pg|public|orders|id|orders_pkey|1",
            "pg|public|orders|line|orders_pkey|2"
        ]
    );
    // Another catalog narrows to nothing.
    let info = client
        .get_primary_keys(CommandGetPrimaryKeys {
            catalog: Some("elsewhere".into()),
            db_schema: None,
            table: "orders".into(),
        })
        .await
        .unwrap();
    assert_eq!(rows(&fetch(&mut client, info).await), 0);

    // orders.item_id references items.id: orders imports it, items exports it.
    let expected =
        ["pg|public|items|id|pg|public|orders|item_id|1|orders_item_id_fkey|items_pkey|3|3"];
    let info = client
        .get_imported_keys(CommandGetImportedKeys {
            catalog: Some("pg".into()),
            db_schema: Some("public".into()),
            table: "orders".into(),
        })
        .await
        .unwrap();
    let imported = fetch(&mut client, info).await;
    assert_eq!(imported[0].schema().field(0).name(), "pk_catalog_name");
    assert_eq!(key_rows(&imported), expected);
    let info = client
        .get_exported_keys(CommandGetExportedKeys {
            catalog: None,
            db_schema: None,
            table: "items".into(),
        })
        .await
        .unwrap();
    assert_eq!(key_rows(&fetch(&mut client, info).await), expected);
    let info = client
        .get_exported_keys(CommandGetExportedKeys {
            catalog: None,
            db_schema: None,
            table: "orders".into(),
        })
        .await
        .unwrap();
    assert_eq!(rows(&fetch(&mut client, info).await), 0);
}

#[tokio::test]
async fn a_million_rows_stream_in_many_batches() {
    let served = Served::start().await;
    let mut client = served.client().await;
    let info = client
        .execute("SELECT value FROM range(1000000)".into(), None)
        .await
        .unwrap();
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let mut stream = client.do_get(ticket).await.unwrap();
    let (mut count, mut sum, mut batches) = (0usize, 0i64, 0);
    while let Some(batch) = stream.try_next().await.unwrap() {
        batches += 1;
        count += batch.num_rows();
        sum += batch
            .column(0)
            .as_primitive::<Int64Type>()
            .values()
            .iter()
            .sum::<i64>();
    }
    assert_eq!(count, 1_000_000);
    assert_eq!(sum, 999_999 * 1_000_000 / 2);
    assert!(
        batches > 10,
        "{batches} batches: the result was not streamed"
    );
}

#[tokio::test]
async fn errors_carry_the_right_status() {
    let served = Served::start().await;
    let mut client = served.client().await;
    let error = client
        .execute("SELEC 1".into(), None)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        has_code(&error, tonic::Code::InvalidArgument) && error.contains("syntax error"),
        "{error}"
    );
    let error = client
        .execute("SELECT * FROM pg.public.itemz".into(), None)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        has_code(&error, tonic::Code::NotFound) && error.contains("items"),
        "{error}"
    );
    // Management functions work over Flight SQL too.
    let batches = query(
        &mut client,
        "SELECT tables FROM refresh_table('pg.public.items')",
    )
    .await;
    assert_eq!(batches[0].column(0).as_primitive::<Int64Type>().value(0), 1);
}

#[tokio::test]
async fn cancel_flight_info_stops_a_running_statement() {
    let served = Served::start().await;
    let mut client = served.client().await;
    let info = client
        .execute("SELECT * FROM pg.public.slow".into(), None)
        .await
        .unwrap();
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let mut events = served.fixture.engine.subscribe();
    let mut reader = client.clone();
    let started = Instant::now();
    let running = tokio::spawn(async move {
        let stream = reader.do_get(ticket).await?;
        stream.try_collect::<Vec<_>>().await
    });
    // Wait until the fetch is under way, then cancel.
    while !matches!(
        events.recv().await,
        Ok(quarry::events::Event::FetchStarted { .. })
    ) {}
    let request = CancelFlightInfoRequest { info: Some(info) };
    let mut replies = client
        .do_action(Action {
            r#type: "CancelFlightInfo".into(),
            body: request.encode_to_vec().into(),
        })
        .await
        .unwrap();
    let reply = replies.message().await.unwrap().unwrap();
    let result = arrow_flight::CancelFlightInfoResult::decode(&*reply.body).unwrap();
    assert_eq!(result.status, arrow_flight::CancelStatus::Cancelled as i32);
    let error = running.await.unwrap().unwrap_err().to_string();
    assert!(has_code(&error, tonic::Code::Cancelled), "{error}");
    assert!(
        started.elapsed() < Duration::from_secs(50),
        "the statement ran to its end"
    );
    // And the server goes on.
    assert_eq!(rows(&query(&mut client, "SELECT 1").await), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_two_clients_query_at_once_for_twenty_seconds() {
    let served = Served::start().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut tasks = Vec::new();
    for client_number in 0..32i64 {
        let mut client = served.client().await;
        tasks.push(tokio::spawn(async move {
            let mut done = 0;
            while Instant::now() < deadline {
                let low = (client_number + done) % 90;
                let sql = format!(
                    "SELECT count(*) AS n, sum(id) AS s FROM pg.public.items WHERE id > {low}"
                );
                let batches = query(&mut client, &sql).await;
                let batch = &batches[0];
                let expected_count = 100 - low;
                let expected_sum = (low + 1..=100).sum::<i64>();
                assert_eq!(
                    batch.column(0).as_primitive::<Int64Type>().value(0),
                    expected_count
                );
                assert_eq!(
                    batch.column(1).as_primitive::<Int64Type>().value(0),
                    expected_sum
                );
                done += 1;
            }
            done
        }));
    }
    let mut total = 0;
    for task in tasks {
        let done = task.await.unwrap();
        assert!(done > 0, "a client never got an answer");
        total += done;
    }
    assert!(total >= 32);
}

/// Reads `quarry serve`'s banner line from its stderr and returns the address it names.
/// The address in the first "listening on" line the server prints.
pub fn listening_address(child: &mut std::process::Child) -> String {
    listening_addresses(child, 1).remove(0)
}

/// The addresses of the first `count` "listening on" lines the server prints.
pub fn listening_addresses(child: &mut std::process::Child, count: usize) -> Vec<String> {
    use std::io::BufRead;
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    (0..count)
        .map(|_| {
            let mut line = String::new();
            stderr.read_line(&mut line).unwrap();
            assert!(line.contains("listening on"), "{line}");
            line.trim().rsplit("://").next().unwrap().to_owned()
        })
        .collect()
}

#[test]
fn serve_refuses_to_start_without_a_password() {
    let dir = tempfile::tempdir().unwrap();
    let out = crate::support::quarry_command(dir.path())
        .args(["serve", "--flight-addr", "127.0.0.1:0"])
        .env_remove("QUARRY_SERVER_PASSWORD")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("QUARRY_SERVER_PASSWORD") && stderr.contains("--users-file"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_users_file_with_hashes_from_hash_password_logs_users_in() {
    let dir = tempfile::tempdir().unwrap();
    let hashed =
        crate::support::quarry_piped(dir.path(), &["hash-password"], b"open sesame\n".to_vec());
    assert!(
        hashed.status.success(),
        "{}",
        String::from_utf8_lossy(&hashed.stderr)
    );
    let hash = String::from_utf8(hashed.stdout).unwrap();
    assert!(
        hash.starts_with("$argon2id$") && !hash.contains("open sesame"),
        "{hash}"
    );
    let users = dir.path().join("users");
    std::fs::write(&users, format!("ann:{}", hash.trim())).unwrap();
    let mut child = crate::support::quarry_command(&dir.path().join("home"))
        .args(["serve", "--flight-addr", "127.0.0.1:0", "--users-file"])
        .arg(&users)
        .env_remove("QUARRY_SERVER_PASSWORD")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let addr = listening_address(&mut child);
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = FlightSqlServiceClient::new(channel);
    let refused = client
        .handshake("ann", "wrong")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        has_code(&refused, tonic::Code::Unauthenticated),
        "{refused}"
    );
    client.handshake("ann", "open sesame").await.unwrap();
    assert_eq!(rows(&query(&mut client, "SELECT 1").await), 1);
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test]
async fn tls_serves_clients_that_trust_the_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let mut child = crate::support::quarry_command(&dir.path().join("home"))
        .args(["serve", "--flight-addr", "127.0.0.1:0", "--tls-cert"])
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .env("QUARRY_SERVER_PASSWORD", PASSWORD)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let addr = listening_address(&mut child);
    let port = addr.rsplit(':').next().unwrap();
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(
            certified.cert.pem(),
        ))
        .domain_name("localhost");
    let channel = Channel::from_shared(format!("https://localhost:{port}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = FlightSqlServiceClient::new(channel);
    client.handshake("quarry", PASSWORD).await.unwrap();
    assert_eq!(rows(&query(&mut client, "SELECT 1").await), 1);
    // A plain-text client cannot talk to it.
    let plain = Channel::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect()
        .await;
    if let Ok(plain) = plain {
        let mut client = FlightSqlServiceClient::new(plain);
        assert!(client.handshake("quarry", PASSWORD).await.is_err());
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn serving_beyond_loopback_without_tls_warns() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = crate::support::quarry_command(dir.path())
        .args(["serve", "--flight-addr", "0.0.0.0:0"])
        .env("QUARRY_SERVER_PASSWORD", PASSWORD)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::BufRead;
    let mut first = String::new();
    std::io::BufReader::new(child.stderr.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        first.starts_with("Warning: serving 0.0.0.0:0 without TLS"),
        "{first}"
    );
}
