//! The SQL layer against real servers: connections as catalogs, lazy tables fetched on
//! first read, cache hits after, cross-source joins, and planning that never fetches.

use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::util::pretty::pretty_format_batches;
use futures::TryStreamExt;

use crate::support::{MySqlSourceFixture, PgSourceFixture, mysql_source_config, plan_statistics};

async fn rows(engine: &quarry::Engine, sql: &str) -> Vec<RecordBatch> {
    engine
        .sql(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .collect()
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

fn text(batches: &[RecordBatch]) -> String {
    pretty_format_batches(batches).unwrap().to_string()
}

async fn fetch_count(engine: &quarry::Engine, connection: &str, schema: &str, table: &str) -> i64 {
    let id = engine.connection(connection).await.unwrap().id;
    engine
        .store()
        .table(&quarry::table::TableRef::new(&id, schema, table))
        .await
        .unwrap()
        .unwrap()
        .fetch_count
}

#[tokio::test]
async fn the_first_query_fetches_and_later_ones_read_the_cache() {
    let mut fx = PgSourceFixture::new().await;
    fx.exec("CREATE TABLE orders AS SELECT g AS id, (g % 7)::int AS shop, g * 2.5 AS amount FROM generate_series(1, 10000) g").await;
    fx.engine.discover_connection("pg").await.unwrap();
    // Planning alone fetches nothing.
    rows(&fx.engine, "EXPLAIN SELECT * FROM pg.public.orders").await;
    assert_eq!(fetch_count(&fx.engine, "pg", "public", "orders").await, 0);
    let sql = "SELECT count(*) AS n, sum(id) AS s FROM pg.public.orders WHERE shop = 3";
    let expected: (i64, i64) =
        sqlx::query_as("SELECT count(*), sum(id)::int8 FROM orders WHERE shop = 3")
            .fetch_one(&mut fx.admin)
            .await
            .unwrap();
    for _ in 0..2 {
        let result = text(&rows(&fx.engine, sql).await);
        assert!(result.contains(&format!("| {} ", expected.0)), "{result}");
        assert!(result.contains(&format!("| {} ", expected.1)), "{result}");
    }
    assert_eq!(
        fetch_count(&fx.engine, "pg", "public", "orders").await,
        1,
        "the second query hit the cache"
    );
}

#[tokio::test]
async fn a_cached_table_tells_the_optimizer_its_row_count() {
    use datafusion::common::stats::Precision;
    let mut fx = PgSourceFixture::new().await;
    fx.exec("CREATE TABLE items AS SELECT g AS id FROM generate_series(1, 1234) g")
        .await;
    fx.engine.discover_connection("pg").await.unwrap();
    fx.engine
        .cached_table("pg", "public", "items")
        .await
        .unwrap();
    // Join planning (which side builds the hash table) runs on these statistics.
    let stats = plan_statistics(&fx.engine, "SELECT id FROM pg.public.items").await;
    assert_eq!(stats.num_rows, Precision::Exact(1234), "{stats:?}");
    // With exact statistics the optimizer answers min/max/count from the footer as
    // constants; the schema announced (the physical plan's) is the batches' schema.
    let frame = fx
        .engine
        .sql("SELECT count(*) AS n, min(id) AS low FROM pg.public.items")
        .await
        .unwrap();
    let runnable = quarry::sql::results::Runnable::plan(frame).await.unwrap();
    let announced = runnable.schema();
    let batches: Vec<RecordBatch> = runnable.execute().unwrap().try_collect().await.unwrap();
    assert_eq!(batches[0].schema(), announced);
    assert_eq!(
        batches[0]
            .column(1)
            .as_primitive::<datafusion::arrow::datatypes::Int32Type>()
            .value(0),
        1
    );
}

#[tokio::test]
async fn concurrent_first_queries_share_one_fetch() {
    let mut fx = PgSourceFixture::new().await;
    fx.exec("CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 50000) g")
        .await;
    fx.engine.discover_connection("pg").await.unwrap();
    let queries = (0..16).map(|_| {
        let engine = fx.engine.clone();
        tokio::spawn(async move {
            let batches = engine
                .sql("SELECT sum(id) AS s FROM pg.public.t")
                .await
                .unwrap()
                .collect()
                .await
                .unwrap();
            pretty_format_batches(&batches).unwrap().to_string()
        })
    });
    for result in futures::future::join_all(queries).await {
        assert!(result.unwrap().contains("| 1250025000 |"));
    }
    assert_eq!(fetch_count(&fx.engine, "pg", "public", "t").await, 1);
}

#[tokio::test]
async fn a_join_across_postgres_and_mariadb_is_exact() {
    let mut pg = PgSourceFixture::new().await;
    pg.exec("CREATE TABLE customers (id int, name text); INSERT INTO customers VALUES (1, 'Ada'), (2, 'Grace'), (3, 'Linus');").await;
    let mut my = MySqlSourceFixture::new().await;
    my.exec("CREATE TABLE orders (id INT, customer_id INT, total DECIMAL(10,2)); INSERT INTO orders VALUES (10, 1, 5.50), (11, 1, 4.50), (12, 3, 1.25);").await;
    pg.engine
        .register_connection("shop", "mysql", mysql_source_config(&my.name))
        .await
        .unwrap();
    pg.engine.discover_connection("pg").await.unwrap();
    pg.engine.discover_connection("shop").await.unwrap();
    let sql = format!(
        "SELECT c.name, sum(o.total) AS spent, count(*) AS orders
         FROM pg.public.customers c JOIN shop.{}.orders o ON o.customer_id = c.id
         GROUP BY c.name ORDER BY c.name",
        my.name
    );
    let result = text(&rows(&pg.engine, &sql).await);
    let lines: Vec<_> = result
        .lines()
        .filter(|l| l.starts_with("| ") && !l.contains("name"))
        .collect();
    assert_eq!(lines.len(), 2, "{result}");
    assert!(
        lines[0].contains("Ada") && lines[0].contains("10.00") && lines[0].contains("| 2 "),
        "{result}"
    );
    assert!(
        lines[1].contains("Linus") && lines[1].contains("1.25") && lines[1].contains("| 1 "),
        "{result}"
    );
}

#[tokio::test]
async fn new_renamed_and_dropped_connections_are_seen_by_the_next_statement() {
    let mut fx = PgSourceFixture::new().await;
    fx.exec("CREATE TABLE t (x int); INSERT INTO t VALUES (42);")
        .await;
    fx.engine.discover_connection("pg").await.unwrap();
    assert!(text(&rows(&fx.engine, "SELECT x FROM pg.public.t").await).contains("42"));
    fx.engine.rename_connection("pg", "renamed").await.unwrap();
    assert!(text(&rows(&fx.engine, "SELECT x FROM renamed.public.t").await).contains("42"));
    assert!(fx.engine.sql("SELECT x FROM pg.public.t").await.is_err());
    let tables = text(&rows(&fx.engine, "SELECT table_catalog, table_schema, table_name FROM information_schema.tables WHERE table_catalog = 'renamed' AND table_schema = 'public'").await);
    assert!(
        tables.contains("| renamed       | public       | t          |"),
        "{tables}"
    );
    fx.engine.drop_connection("renamed").await.unwrap();
    let err = fx
        .engine
        .sql("SELECT x FROM renamed.public.t")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("renamed"), "{err}");
}

async fn one_row(engine: &quarry::Engine, sql: &str) -> String {
    let batches = rows(engine, sql).await;
    assert_eq!(
        batches.iter().map(|b| b.num_rows()).sum::<usize>(),
        1,
        "{sql}"
    );
    text(&batches)
}

#[tokio::test]
async fn connections_are_managed_with_sql_alone() {
    let mut fx = PgSourceFixture::new().await;
    fx.exec("CREATE TABLE items (id int, name text); INSERT INTO items VALUES (1, 'one');")
        .await;
    let config = crate::support::pg_source_config(&fx.db.name).to_string();
    let created = one_row(&fx.engine, &format!("SELECT name, source_type, tables_discovered, discovery_status FROM create_connection('viasql', 'postgres', '{config}')")).await;
    assert!(
        created.contains("| viasql | postgres    | 1                 | ok               |"),
        "{created}"
    );
    let tested = one_row(
        &fx.engine,
        "SELECT ok, error FROM test_connection('viasql')",
    )
    .await;
    assert!(tested.contains("| true |"), "{tested}");

    // Planning a management function does nothing.
    rows(
        &fx.engine,
        "EXPLAIN SELECT * FROM drop_connection('viasql')",
    )
    .await;
    assert!(
        fx.engine.connection("viasql").await.is_ok(),
        "EXPLAIN dropped the connection"
    );

    assert!(text(&rows(&fx.engine, "SELECT name FROM viasql.public.items").await).contains("one"));
    fx.exec("INSERT INTO items VALUES (2, 'two')").await;
    let before = text(&rows(&fx.engine, "SELECT count(*) AS n FROM viasql.public.items").await);
    assert!(
        before.contains("| 1 |"),
        "not visible before refresh: {before}"
    );
    let refreshed = one_row(
        &fx.engine,
        "SELECT tables, rows FROM refresh_table('viasql.public.items')",
    )
    .await;
    assert!(refreshed.contains("| 1      | 2    |"), "{refreshed}");
    let after = text(&rows(&fx.engine, "SELECT count(*) AS n FROM viasql.public.items").await);
    assert!(after.contains("| 2 |"), "visible after refresh: {after}");

    let purged = one_row(
        &fx.engine,
        "SELECT entries_removed FROM purge_cache('viasql')",
    )
    .await;
    assert!(purged.contains("| 1               |"), "{purged}");
    rows(&fx.engine, "SELECT * FROM viasql.public.items").await;
    assert_eq!(
        fetch_count(&fx.engine, "viasql", "public", "items").await,
        3
    );

    let discovered = one_row(&fx.engine, "SELECT * FROM discover_connection('viasql')").await;
    assert!(
        discovered.contains("| 0            | 0              | 0              |"),
        "{discovered}"
    );
    one_row(
        &fx.engine,
        "SELECT * FROM rename_connection('viasql', 'again')",
    )
    .await;
    assert!(
        text(
            &rows(
                &fx.engine,
                "SELECT name FROM again.public.items ORDER BY id"
            )
            .await
        )
        .contains("two")
    );
    one_row(&fx.engine, "SELECT * FROM drop_connection('again')").await;
    assert!(fx.engine.connection("again").await.is_err());
    assert!(
        fx.engine
            .sql("SELECT * FROM again.public.items")
            .await
            .is_err()
    );
}

#[tokio::test]
async fn wrong_arguments_show_the_signature() {
    let fx = PgSourceFixture::new().await;
    for (sql, expected) in [
        (
            "SELECT * FROM drop_connection()",
            "drop_connection takes 1 argument, got 0; usage: SELECT * FROM drop_connection(name_or_id)",
        ),
        (
            "SELECT * FROM purge_cache(1)",
            "argument 1 of purge_cache must be a text literal, got Int64(1); usage: SELECT * FROM purge_cache(name_or_id [, schema [, table]])",
        ),
        (
            "SELECT * FROM refresh_table('pg.orders')",
            "refresh_table takes 'connection.schema.table', got 'pg.orders'",
        ),
        (
            "SELECT * FROM create_connection('x', 'postgres', '{not json')",
            "config_json is neither JSON nor a URL",
        ),
    ] {
        let err = match fx.engine.sql(sql).await {
            Ok(frame) => frame.collect().await.map(|_| ()).unwrap_err().to_string(),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(expected), "{sql}: {err}");
    }
    let err = fx
        .engine
        .sql("SELECT * FROM create_connection('Bad', 'postgres', '{}')")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("invalid connection name 'Bad'"), "{err}");
}

#[tokio::test]
async fn information_schema_shows_cache_state_and_never_secrets() {
    let mut fx = PgSourceFixture::new().await;
    fx.exec("CREATE TABLE t (id bigint NOT NULL, amount numeric(12,2)); INSERT INTO t VALUES (1, 2.50), (2, 3.75); ANALYZE t;").await;
    let mut config = crate::support::pg_source_config(&fx.db.name);
    config["password"] = serde_json::json!("pw-never-shown-71");
    fx.engine
        .register_connection("withpw", "postgres", config)
        .await
        .unwrap();
    fx.engine.discover_connection("pg").await.unwrap();
    let tables = "SELECT connection_name, table_name, cached, cache_rows, fetch_count FROM quarry.information_schema.tables WHERE connection_name = 'pg' AND table_name = 't'";
    let before = one_row(&fx.engine, tables).await;
    assert!(
        before.contains("| pg              | t          | false  |            | 0           |"),
        "{before}"
    );
    rows(&fx.engine, "SELECT * FROM pg.public.t").await;
    let after = one_row(&fx.engine, tables).await;
    assert!(
        after.contains("| pg              | t          | true   | 2          | 1           |"),
        "{after}"
    );
    let columns = text(&rows(&fx.engine, "SELECT column_name, ordinal_position, source_type, arrow_type, is_nullable FROM quarry.information_schema.columns WHERE connection_name = 'pg' AND table_name = 't' ORDER BY ordinal_position").await);
    assert!(
        columns.contains(
            "| id          | 1                | bigint        | Int64             | false       |"
        ),
        "{columns}"
    );
    assert!(
        columns.contains(
            "| amount      | 2                | numeric(12,2) | Decimal128(12, 2) | true        |"
        ),
        "{columns}"
    );
    let connections = text(
        &rows(
            &fx.engine,
            "SELECT * FROM quarry.information_schema.connections",
        )
        .await,
    );
    assert!(
        connections.contains("withpw") && connections.contains("postgres"),
        "{connections}"
    );
    assert!(!connections.contains("pw-never-shown-71"), "{connections}");
    // DataFusion's own information_schema and SHOW TABLES see every catalog, fetching nothing.
    let shown = text(&rows(&fx.engine, "SHOW TABLES").await);
    assert!(
        shown.contains("withpw") || shown.contains("| pg "),
        "{shown}"
    );
}

#[tokio::test]
async fn max_age_refetches_an_entry_older_than_it() {
    let mut fx = PgSourceFixture::new().await;
    fx.exec("CREATE TABLE t (x int); INSERT INTO t VALUES (1);")
        .await;
    let mut config = crate::support::pg_source_config(&fx.db.name);
    config["max_age"] = serde_json::json!("15m");
    fx.engine
        .register_connection("fresh", "postgres", config)
        .await
        .unwrap();
    fx.engine.discover_connection("fresh").await.unwrap();
    fx.engine.discover_connection("pg").await.unwrap();
    for connection in ["fresh", "pg"] {
        rows(&fx.engine, &format!("SELECT * FROM {connection}.public.t")).await;
        rows(&fx.engine, &format!("SELECT * FROM {connection}.public.t")).await;
        assert_eq!(
            fetch_count(&fx.engine, connection, "public", "t").await,
            1,
            "{connection}: fresh entries are reused"
        );
    }
    fx.exec("INSERT INTO t VALUES (2)").await;
    // Age every entry by an hour, as if fetched long ago.
    let raw = fx.backend.raw().await;
    sqlx::query("UPDATE cache_entries SET fetched_at = '2000-01-01T00:00:00.000000Z'")
        .execute(raw.pool())
        .await
        .unwrap();
    raw.close().await;
    let refreshed = text(&rows(&fx.engine, "SELECT count(*) AS n FROM fresh.public.t").await);
    assert!(refreshed.contains("| 2 |"), "{refreshed}");
    assert_eq!(fetch_count(&fx.engine, "fresh", "public", "t").await, 2);
    let never_stale = text(&rows(&fx.engine, "SELECT count(*) AS n FROM pg.public.t").await);
    assert!(
        never_stale.contains("| 1 |"),
        "without max_age the cache is never stale: {never_stale}"
    );
    assert_eq!(fetch_count(&fx.engine, "pg", "public", "t").await, 1);
}

#[tokio::test]
async fn misspelled_names_get_did_you_mean() {
    let mut fx = PgSourceFixture::new().await;
    fx.exec("CREATE TABLE orders (x int);").await;
    fx.engine.discover_connection("pg").await.unwrap();
    for (sql, hint) in [
        (
            "SELECT * FROM pgg.public.orders",
            "did you mean pg.public.orders?",
        ),
        (
            "SELECT * FROM pg.publik.orders",
            "did you mean pg.public.orders?",
        ),
        (
            "SELECT * FROM pg.public.ordres",
            "did you mean pg.public.orders?",
        ),
    ] {
        let err = fx.engine.sql(sql).await.unwrap_err().to_string();
        assert!(err.contains(hint), "{sql}: {err}");
    }
    let err = fx
        .engine
        .sql("SELECT * FROM pg.public.zzzzzz")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        !err.contains("did you mean"),
        "no close name, no guess: {err}"
    );
}
