//! Access modes end to end on PostgreSQL, MariaDB and SQLite: `live` reads the source on
//! every query and writes no cache file, `cache` copies once, `auto` copies a small table
//! inline and pushes the first query of a large one down while it copies it in the
//! background. Also the bad input of `set_table_options`, and a one-shot run that ends with
//! a background copy in flight.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::Int64Type;
use datafusion::arrow::util::pretty::pretty_format_batches;
use quarry::Engine;
use serde_json::{Value, json};
use sqlx::{Connection, SqliteConnection};

use crate::support::{Backend, Kind, MySqlSourceFixture, PgSourceFixture};

/// One source database with a table `events` of `ROWS` rows, and an engine to reach it.
pub(crate) enum Source {
    Postgres(PgSourceFixture),
    Mysql(MySqlSourceFixture),
    Sqlite {
        backend: Backend,
        engine: Engine,
        admin: SqliteConnection,
        path: String,
    },
}

pub(crate) const ROWS: i64 = 300;

impl Source {
    pub(crate) async fn new(kind: &str) -> Self {
        let table = "CREATE TABLE events (id integer NOT NULL PRIMARY KEY, v integer NOT NULL, \
                     s varchar(20));";
        let rows: Vec<String> = (1..=ROWS)
            .map(|i| format!("({i}, {}, 'event {i}')", i % 7))
            .collect();
        let setup = format!("{table}\nINSERT INTO events VALUES {};", rows.join(", "));
        let mut source = match kind {
            "postgres" => Source::Postgres(PgSourceFixture::new().await),
            "mysql" => Source::Mysql(MySqlSourceFixture::new().await),
            _ => {
                let backend = Backend::new(Kind::Sqlite).await;
                let path = backend.data_dir().join("source.db").display().to_string();
                let admin = SqliteConnection::connect(&format!("sqlite://{path}?mode=rwc"))
                    .await
                    .unwrap();
                let engine = backend.engine().await;
                Source::Sqlite {
                    backend,
                    engine,
                    admin,
                    path,
                }
            }
        };
        source.exec(&setup).await;
        if let Source::Postgres(fx) = &mut source {
            fx.exec("ANALYZE events").await;
        }
        source
    }

    pub(crate) fn engine(&self) -> &Engine {
        match self {
            Source::Postgres(fx) => &fx.engine,
            Source::Mysql(fx) => &fx.engine,
            Source::Sqlite { engine, .. } => engine,
        }
    }

    pub(crate) fn data_dir(&self) -> &Path {
        match self {
            Source::Postgres(fx) => fx.backend.data_dir(),
            Source::Mysql(fx) => fx._backend.data_dir(),
            Source::Sqlite { backend, .. } => backend.data_dir(),
        }
    }

    pub(crate) async fn exec(&mut self, sql: &str) {
        match self {
            Source::Postgres(fx) => fx.exec(sql).await,
            Source::Mysql(fx) => fx.exec(sql).await,
            Source::Sqlite { admin, .. } => {
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
                    .execute(admin)
                    .await
                    .unwrap();
            }
        }
    }

    /// The source type and config of a connection to this database, with `options` added.
    pub(crate) fn config(&self, options: Value) -> (&'static str, Value) {
        let (kind, mut config) = match self {
            Source::Postgres(fx) => ("postgres", crate::support::pg_source_config(&fx.db.name)),
            Source::Mysql(fx) => ("mysql", crate::support::mysql_source_config(&fx.name)),
            Source::Sqlite { path, .. } => ("sqlite", json!({ "path": path })),
        };
        for (key, value) in options.as_object().unwrap() {
            config[key] = value.clone();
        }
        (kind, config)
    }

    /// The schema `events` is in.
    pub(crate) fn schema(&self) -> &str {
        match self {
            Source::Postgres(_) => "public",
            Source::Mysql(fx) => &fx.name,
            Source::Sqlite { .. } => "main",
        }
    }

    /// Adds connection `name` to this database with `options`, discovered.
    pub(crate) async fn connect(&self, name: &str, options: Value) {
        let (kind, config) = self.config(options);
        self.engine()
            .register_connection(name, kind, config)
            .await
            .unwrap();
        self.engine().discover_connection(name).await.unwrap();
    }

    pub(crate) fn events(&self, connection: &str) -> String {
        format!("{connection}.{}.events", self.schema())
    }

    async fn fetch_count(&self, connection: &str) -> i64 {
        let id = self.engine().connection(connection).await.unwrap().id;
        self.engine()
            .table(&quarry::table::TableRef::new(&id, self.schema(), "events"))
            .await
            .unwrap()
            .unwrap()
            .fetch_count
    }

    /// `count(*)` of the events with `v >= 0` through `connection`.
    pub(crate) async fn count(&self, connection: &str) -> i64 {
        let sql = format!(
            "SELECT count(*) AS n FROM {} WHERE v >= 0",
            self.events(connection)
        );
        let batches = self
            .engine()
            .sql(&sql)
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        batches[0].column(0).as_primitive::<Int64Type>().value(0)
    }

    pub(crate) async fn explain(&self, sql: &str) -> String {
        let batches = self
            .engine()
            .sql(&format!("EXPLAIN {sql}"))
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        pretty_format_batches(&batches).unwrap().to_string()
    }

    /// Every file under the cache directory.
    pub(crate) fn cache_files(&self) -> Vec<PathBuf> {
        crate::support::walk(&self.data_dir().join("cache"))
    }
}

async fn each_mode_end_to_end(kind: &str) {
    let mut source = Source::new(kind).await;
    source.connect("live", json!({"mode": "live"})).await;
    source.connect("cached", json!({"mode": "cache"})).await;
    // The table is a few KiB: over a 1 KiB inline limit, under the default one.
    source
        .connect("big", json!({"inline_fetch_max": 1024}))
        .await;
    source.connect("small", json!({})).await;

    // live: the answer comes from the source, changes with it, and nothing is cached.
    let live_sql = format!(
        "SELECT count(*) FROM {} WHERE v >= 0",
        source.events("live")
    );
    let plan = source.explain(&live_sql).await;
    assert!(plan.contains("RemoteScanExec"), "{plan}");
    assert!(
        plan.contains("events") && plan.contains("count("),
        "the remote SQL: {plan}"
    );
    assert_eq!(source.count("live").await, ROWS);
    source
        .exec("INSERT INTO events VALUES (1001, 1, 'late')")
        .await;
    assert_eq!(
        source.count("live").await,
        ROWS + 1,
        "live sees the new row"
    );
    assert_eq!(source.fetch_count("live").await, 0);
    assert_eq!(
        source.cache_files(),
        Vec::<PathBuf>::new(),
        "live wrote no cache file"
    );

    // cache: the first query copies the table; later ones read the copy.
    assert_eq!(source.count("cached").await, ROWS + 1);
    source
        .exec("INSERT INTO events VALUES (1002, 1, 'later')")
        .await;
    assert_eq!(
        source.count("cached").await,
        ROWS + 1,
        "cache reads its copy"
    );
    assert_eq!(source.fetch_count("cached").await, 1);
    assert_eq!(source.count("live").await, ROWS + 2);

    // auto, small table: fetched inline, as cache does.
    let small_sql = format!(
        "SELECT count(*) FROM {} WHERE v >= 0",
        source.events("small")
    );
    assert!(!source.explain(&small_sql).await.contains("RemoteScanExec"));
    assert_eq!(source.count("small").await, ROWS + 2);
    assert_eq!(source.fetch_count("small").await, 1);

    // auto, large table: the first query goes to the source and copies in the background;
    // once the copy is published the next query reads it.
    let big_sql = format!("SELECT count(*) FROM {} WHERE v >= 0", source.events("big"));
    let plan = source.explain(&big_sql).await;
    assert!(
        plan.contains("RemoteScanExec") && plan.contains("caching"),
        "{plan}"
    );
    assert_eq!(source.count("big").await, ROWS + 2);
    source.engine().background_copies_done().await;
    assert_eq!(source.fetch_count("big").await, 1, "one background copy");
    let plan = source.explain(&big_sql).await;
    assert!(!plan.contains("RemoteScanExec"), "reads the cache: {plan}");
    source
        .exec("INSERT INTO events VALUES (1003, 1, 'latest')")
        .await;
    assert_eq!(source.count("big").await, ROWS + 2, "from the copy");
    assert_eq!(source.fetch_count("big").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_mode_end_to_end_on_postgresql() {
    each_mode_end_to_end("postgres").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_mode_end_to_end_on_mariadb() {
    each_mode_end_to_end("mysql").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_mode_end_to_end_on_sqlite() {
    each_mode_end_to_end("sqlite").await;
}

pub(crate) async fn error_of(engine: &Engine, sql: &str) -> String {
    match engine.sql(sql).await {
        Ok(frame) => match frame.collect().await {
            Ok(_) => panic!("{sql} succeeded"),
            Err(e) => e.to_string(),
        },
        Err(e) => e.to_string(),
    }
}

#[tokio::test]
async fn a_table_option_overrides_the_connection_and_bad_ones_are_refused() {
    let source = Source::new("sqlite").await;
    source.connect("lite", json!({"mode": "cache"})).await;
    let engine = source.engine();

    let set =
        |options: &str| format!("SELECT * FROM set_table_options('lite.main.events', '{options}')");
    let batches = engine
        .sql(&set(r#"{"mode": "live"}"#))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let text = pretty_format_batches(&batches).unwrap().to_string();
    assert!(
        text.contains("lite.main.events") && text.contains("live"),
        "{text}"
    );

    let batches = engine
        .sql(
            "SELECT access_mode, byte_estimate FROM quarry.information_schema.tables \
             WHERE connection_name = 'lite' AND table_name = 'events'",
        )
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(batches[0].column(0).as_string::<i32>().value(0), "live");
    let bytes = batches[0].column(1).as_primitive::<Int64Type>();
    assert!(
        !bytes.is_null(0) && bytes.value(0) > 0,
        "SQLite's dbstat size"
    );

    // The override holds: the table is read live and never copied.
    assert_eq!(source.count("lite").await, ROWS);
    assert_eq!(source.fetch_count("lite").await, 0);
    assert!(source.cache_files().is_empty());

    // Rediscovery keeps it.
    engine.discover_connection("lite").await.unwrap();
    assert_eq!(source.count("lite").await, ROWS);
    assert_eq!(source.fetch_count("lite").await, 0);

    // null goes back to the connection's mode.
    engine
        .sql(&set(r#"{"mode": null}"#))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(source.count("lite").await, ROWS);
    assert_eq!(source.fetch_count("lite").await, 1);

    let e = error_of(
        engine,
        r#"SELECT * FROM set_table_options('lite.main.nope', '{"mode": "live"}')"#,
    )
    .await;
    assert!(e.contains("no table lite.main.nope"), "{e}");
    let e = error_of(engine, &set(r#"{"mode": "fast"}"#)).await;
    assert!(
        e.contains("'mode' must be one of") && e.contains("fast"),
        "{e}"
    );
    let e = error_of(engine, &set(r#"{"mdoe": "live"}"#)).await;
    assert!(e.contains("did you mean 'mode'"), "{e}");
    let e = error_of(engine, &set("live")).await;
    assert!(e.contains("not JSON"), "{e}");
    let e = error_of(
        engine,
        r#"SELECT * FROM set_table_options('events', '{"mode": "live"}')"#,
    )
    .await;
    assert!(e.contains("'connection.schema.table'"), "{e}");

    // A connection with an unknown mode is refused when created.
    let (kind, config) = source.config(json!({"mode": "fast"}));
    let e = engine
        .register_connection("bad", kind, config)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("'mode' must be one of") && e.contains("fast"),
        "{e}"
    );
}

/// A one-shot `quarry -c` whose first query of a large table went to the source ends
/// while the background copy is still waiting on the source: the copy is cancelled and
/// leaves neither a temp file nor a cache entry.
///
/// The gate: `big` is partitioned; the query reads only the first partition (pruned at
/// planning, so PostgreSQL does not lock the second), while the copy reads both and waits
/// on the lock this test holds on the second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_shot_run_cancels_its_background_copy_cleanly() {
    let mut fx = PgSourceFixture::new().await;
    fx.exec(
        "CREATE TABLE big (id integer NOT NULL, v integer NOT NULL) PARTITION BY RANGE (id);
         CREATE TABLE big_a PARTITION OF big FOR VALUES FROM (0) TO (100);
         CREATE TABLE big_b PARTITION OF big FOR VALUES FROM (100) TO (100000);
         INSERT INTO big SELECT g, g * 2 FROM generate_series(1, 5000) g;
         ANALYZE big;",
    )
    .await;
    let home = tempfile::tempdir().unwrap();
    let mut config = crate::support::pg_source_config(&fx.db.name);
    config["inline_fetch_max"] = json!(1024);
    let created = crate::support::quarry(
        home.path(),
        &[
            "-c",
            &format!("SELECT * FROM create_connection('pg', 'postgres', '{config}')"),
        ],
    );
    assert!(
        created.status.success(),
        "{}",
        crate::support::text(&created.stderr)
    );

    let plan = crate::support::quarry(
        home.path(),
        &["-c", "EXPLAIN SELECT v FROM pg.public.big WHERE id = 7"],
    );
    let plan = crate::support::text(&plan.stdout);
    assert!(
        plan.contains("caching pg.public.big in the background"),
        "{plan}"
    );

    let mut gate = sqlx::PgConnection::connect(&fx.db.url).await.unwrap();
    sqlx::raw_sql("BEGIN; LOCK TABLE big_b IN ACCESS EXCLUSIVE MODE")
        .execute(&mut gate)
        .await
        .unwrap();
    let out = crate::support::quarry(
        home.path(),
        &["-c", "SELECT v FROM pg.public.big WHERE id = 7"],
    );
    let stdout = crate::support::text(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        crate::support::text(&out.stderr)
    );
    assert!(crate::support::has_row(&stdout, &["14"]), "{stdout}");
    let leftovers = crate::support::walk(&home.path().join("cache"));
    assert!(
        leftovers.is_empty(),
        "the cancelled copy left {leftovers:?}"
    );

    sqlx::raw_sql("ROLLBACK").execute(&mut gate).await.unwrap();
    let out = crate::support::quarry(
        home.path(),
        &[
            "-c",
            "SELECT cached, fetch_count FROM quarry.information_schema.tables \
             WHERE table_name = 'big'",
        ],
    );
    let stdout = crate::support::text(&out.stdout);
    assert!(
        crate::support::has_row(&stdout, &["false", "0"]),
        "{stdout}"
    );
}

/// A pushed-down statement runs under the connection's `statement_timeout`.
async fn a_live_statement_times_out(kind: &str, slow_view: &str) {
    let mut source = Source::new(kind).await;
    source.exec(slow_view).await;
    source
        .connect(
            "live",
            json!({"mode": "live", "statement_timeout": "300ms"}),
        )
        .await;
    let sql = format!(
        "SELECT count(*) FROM live.{}.slow WHERE id > 0",
        source.schema()
    );
    let plan = source.explain(&sql).await;
    assert!(plan.contains("RemoteScanExec"), "{plan}");
    let e = error_of(source.engine(), &sql).await;
    assert!(e.contains("timed out"), "{e}");
    // The pool's sessions are still good for the next statement.
    assert_eq!(source.count("live").await, ROWS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_statement_times_out_on_postgresql() {
    a_live_statement_times_out(
        "postgres",
        "CREATE VIEW slow AS SELECT id FROM events WHERE id < 3 AND pg_sleep(5) IS NOT NULL",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_statement_times_out_on_mariadb() {
    a_live_statement_times_out(
        "mysql",
        "CREATE VIEW slow AS SELECT id FROM events WHERE id < 3 AND SLEEP(5) = 0",
    )
    .await;
}

/// How many statements on `fx`'s server are still running a read of `slow`.
async fn running_on_server(source: &mut Source) -> i64 {
    match source {
        Source::Postgres(fx) => sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
             AND state = 'active' AND query LIKE 'COPY (%slow%'",
        )
        .fetch_one(&mut fx.admin)
        .await
        .unwrap(),
        Source::Mysql(fx) => sqlx::query_scalar(
            "SELECT count(*) FROM information_schema.PROCESSLIST WHERE DB = DATABASE() \
             AND COMMAND IN ('Query', 'Execute') AND INFO LIKE '%`slow`%' AND INFO NOT LIKE '%PROCESSLIST%'",
        )
        .fetch_one(&mut fx.admin)
        .await
        .unwrap(),
        Source::Sqlite { .. } => unreachable!("SQLite runs in the process"),
    }
}

/// Waits (up to 20 s, far less than the statement's 60 s) until `running` statements run.
async fn until_running(source: &mut Source, running: i64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while running_on_server(source).await != running {
        assert!(Instant::now() < deadline, "still not {running} running");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Dropping a live query (what Ctrl-C, a Flight SQL cancel or a gone client do) stops its
/// statement on the server, not only the local stream.
async fn a_dropped_live_query_stops_on_the_server(kind: &str, slow_view: &str) {
    let mut source = Source::new(kind).await;
    source.exec(slow_view).await;
    source.connect("live", json!({"mode": "live"})).await;
    let sql = format!(
        "SELECT count(*) FROM live.{}.slow WHERE id > 0",
        source.schema()
    );
    let engine = source.engine().clone();
    let query = tokio::spawn(async move { engine.sql(&sql).await.unwrap().collect().await });
    until_running(&mut source, 1).await;
    query.abort();
    assert!(query.await.unwrap_err().is_cancelled());
    until_running(&mut source, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_live_query_stops_on_postgresql() {
    a_dropped_live_query_stops_on_the_server(
        "postgres",
        "CREATE VIEW slow AS SELECT id FROM events WHERE id < 3 AND pg_sleep(60) IS NOT NULL",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_live_query_stops_on_mariadb() {
    a_dropped_live_query_stops_on_the_server(
        "mysql",
        "CREATE VIEW slow AS SELECT id FROM events WHERE id < 3 AND SLEEP(60) = 0",
    )
    .await;
}

/// Shapes whose pushed-down SQL once meant something else, or did not run: columns picked
/// over a `LIMIT` (with and without a sort) and a sum of coerced arithmetic over a join,
/// sorted and limited. Live answers must equal the cached ones.
async fn live_limits_and_coerced_sums_answer_as_the_cache_does(kind: &str) {
    let source = Source::new(kind).await;
    source.connect("live", json!({"mode": "live"})).await;
    source.connect("cached", json!({"mode": "cache"})).await;
    let queries = [
        "SELECT id, s FROM {c}.events ORDER BY id DESC LIMIT 3",
        "SELECT count(*) FROM (SELECT id, v FROM {c}.events LIMIT 5) AS q",
        "SELECT s FROM {c}.events ORDER BY v, id LIMIT 4 OFFSET 2",
        "SELECT a.v, sum(a.id * (1 - b.v)) AS r, count(*) AS n FROM {c}.events a \
         JOIN {c}.events b ON a.id = b.id + 1 WHERE a.v > 1 GROUP BY a.v ORDER BY r DESC, a.v LIMIT 3",
        // TPC-H Q13's shape: a grouped derived table grouped again and sorted on an alias.
        "SELECT c, count(*) AS n FROM (SELECT a.id, count(b.id) AS c FROM {c}.events a \
         LEFT JOIN {c}.events b ON a.id = b.id + 1 AND b.s NOT LIKE '%x%' GROUP BY a.id) AS q \
         GROUP BY c ORDER BY n DESC, c DESC",
        // TPC-H Q5's shape: a join grouped and sorted on an aggregate's alias, no limit.
        "SELECT a.s, sum(a.v * b.v) AS r FROM {c}.events a, {c}.events b WHERE a.id = b.id \
         GROUP BY a.s ORDER BY r DESC, a.s",
    ];
    for query in queries {
        let answer = |connection: &str| {
            let sql = query.replace("{c}", &format!("{connection}.{}", source.schema()));
            let engine = source.engine().clone();
            async move {
                let batches = engine
                    .sql(&sql)
                    .await
                    .unwrap_or_else(|e| panic!("{sql}: {e}"))
                    .collect()
                    .await
                    .unwrap_or_else(|e| panic!("{sql}: {e}"));
                pretty_format_batches(&batches).unwrap().to_string()
            }
        };
        let live = answer("live").await;
        assert_eq!(live, answer("cached").await, "{query}");
        assert!(live.lines().count() > 4, "{query} returned rows: {live}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_limits_and_coerced_sums_on_postgresql() {
    live_limits_and_coerced_sums_answer_as_the_cache_does("postgres").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_limits_and_coerced_sums_on_mariadb() {
    live_limits_and_coerced_sums_answer_as_the_cache_does("mysql").await;
}
