//! Regression tests for wrong or refused answers, each against a real server: the schema
//! a statement announces, exact decimal literals, lossy casts in comparisons, two
//! DataFusion planning errors, MySQL discovery scoped to its database, and a server that
//! is down reported at once with its real cause.

use std::time::{Duration, Instant};

use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Int64Type};
use futures::TryStreamExt;
use quarry::Engine;
use serde_json::json;

use crate::support::{MySqlSourceFixture, PgSourceFixture, mysql_source_config};

/// A small TPC-H-shaped database: the types and columns the reported queries use.
const TPCH_LIKE: &str = "
CREATE TABLE region (r_regionkey integer NOT NULL PRIMARY KEY, r_name text NOT NULL);
INSERT INTO region VALUES (0, 'AFRICA'), (1, 'AMERICA'), (2, 'ASIA'), (3, 'EUROPE');
CREATE TABLE nation (n_nationkey integer NOT NULL PRIMARY KEY, n_regionkey integer NOT NULL);
INSERT INTO nation SELECT g, g % 4 FROM generate_series(0, 9) g;
CREATE TABLE customer (c_custkey integer NOT NULL PRIMARY KEY, c_nationkey integer NOT NULL,
                       c_acctbal numeric(15,2) NOT NULL);
INSERT INTO customer SELECT g, g % 12, g * 10.25 FROM generate_series(1, 30) g;
CREATE TABLE orders (o_orderkey integer NOT NULL PRIMARY KEY, o_totalprice numeric(15,2) NOT NULL);
INSERT INTO orders SELECT g, 190720.34 + g - 1 FROM generate_series(1, 5) g;
CREATE TABLE lineitem (l_orderkey integer NOT NULL, l_quantity numeric(15,2) NOT NULL,
                       l_discount numeric(15,2) NOT NULL, l_shipinstruct text NOT NULL);
INSERT INTO lineitem SELECT g % 5 + 1, g % 50 + 1, (g % 11) / 100.0,
       (ARRAY['DELIVER IN PERSON', 'NONE', 'TAKE BACK RETURN'])[g % 3 + 1]
FROM generate_series(1, 600) g;
";

async fn tpch_like() -> PgSourceFixture {
    let mut fx = PgSourceFixture::new().await;
    fx.exec(TPCH_LIKE).await;
    fx.engine.discover_connection("pg").await.unwrap();
    fx
}

/// Runs `sql` as every face does (`sql::results`), checking that each batch carries the
/// schema announced before it ran.
async fn run(engine: &Engine, sql: &str) -> Vec<RecordBatch> {
    let frame = engine
        .sql(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let runnable = quarry::sql::results::Runnable::plan(frame)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let announced = runnable.schema();
    let batches: Vec<RecordBatch> = runnable
        .execute()
        .unwrap()
        .try_collect()
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    for batch in &batches {
        assert_eq!(batch.schema(), announced, "{sql}");
    }
    batches
}

/// The session's `datafusion.execution.batch_size`, as it reads it.
async fn batch_size(session: &quarry::Session) -> String {
    let batches = session
        .sql(
            "SELECT value FROM information_schema.df_settings \
             WHERE name = 'datafusion.execution.batch_size'",
        )
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    batches[0].column(0).as_string::<i32>().value(0).to_owned()
}

/// The tables discovery stored for `connection`.
async fn discovered(engine: &Engine, connection: &str) -> Vec<quarry::store::TableRecord> {
    let id = engine.connection(connection).await.unwrap().id;
    engine.store().tables(&id).await.unwrap()
}

fn single_i64(batches: &[RecordBatch]) -> i64 {
    batches[0].column(0).as_primitive::<Int64Type>().value(0)
}

async fn pg_count(fx: &mut PgSourceFixture, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(&mut fx.admin)
        .await
        .unwrap()
}

#[tokio::test]
async fn the_announced_schema_is_the_schema_of_the_batches() {
    let fx = tpch_like().await;
    // Decimal widened by the CASE, Int32 widened to Int64, and a scalar subquery that
    // becomes an outer join (nullable): each was refused with "target schema is not
    // superset of current schema".
    let widened = run(
        &fx.engine,
        "SELECT SUM(CASE WHEN c_custkey < 10 THEN c_acctbal ELSE 0 END) FROM pg.public.customer",
    )
    .await;
    assert!(matches!(
        widened[0].schema().field(0).data_type(),
        DataType::Decimal128(_, 2)
    ));
    let total = widened[0]
        .column(0)
        .as_primitive::<datafusion::arrow::datatypes::Decimal128Type>();
    // 10.25 * (1 + … + 9) = 461.25
    assert_eq!(total.value(0), 46125);

    let case = run(
        &fx.engine,
        "SELECT CASE WHEN r_regionkey > 0 THEN r_regionkey ELSE 2 END FROM pg.public.region",
    )
    .await;
    assert_eq!(case[0].schema().field(0).data_type(), &DataType::Int64);
    let values: Vec<i64> = case
        .iter()
        .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
        .collect();
    assert_eq!(values, [2, 1, 2, 3]);

    let subquery = run(
        &fx.engine,
        "SELECT (SELECT count(*) FROM pg.public.nation n WHERE n.n_nationkey = c.c_nationkey) \
         FROM pg.public.customer c ORDER BY c.c_custkey LIMIT 12",
    )
    .await;
    let counts: Vec<Option<i64>> = subquery
        .iter()
        .flat_map(|b| {
            b.column(0)
                .as_primitive::<Int64Type>()
                .iter()
                .collect::<Vec<_>>()
        })
        .collect();
    // Customers 1..=9 and 12 have a nation (keys 0..9); 10 and 11 do not.
    assert_eq!(
        counts.iter().map(|c| c.unwrap_or(0)).collect::<Vec<_>>(),
        [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 1]
    );
}

#[tokio::test]
async fn a_decimal_literal_compares_exactly() {
    let mut fx = tpch_like().await;
    let sql = "SELECT count(*) FROM pg.public.orders WHERE o_totalprice = 190720.34";
    assert_eq!(pg_count(&mut fx, &sql.replace("pg.", "")).await, 1);
    assert_eq!(single_i64(&run(&fx.engine, sql).await), 1);
    // Literals on their own: exact decimals, and exponents still floats.
    let batches = run(
        &fx.engine,
        "SELECT 0.1 + 0.2 AS d, 1.5e3 AS e, 0.1 = 0.10 AS same",
    )
    .await;
    let schema = batches[0].schema();
    assert!(matches!(
        schema.field(0).data_type(),
        DataType::Decimal128(_, 1)
    ));
    let d = batches[0]
        .column(0)
        .as_primitive::<datafusion::arrow::datatypes::Decimal128Type>();
    assert_eq!(d.value_as_string(0), "0.3");
    let e = batches[0].column(1);
    let e = datafusion::arrow::compute::cast(e, &DataType::Float64).unwrap();
    assert_eq!(
        e.as_primitive::<datafusion::arrow::datatypes::Float64Type>()
            .value(0),
        1500.0
    );
    assert!(batches[0].column(2).as_boolean().value(0));
    // A float column compared with a decimal literal still compares as float.
    let f = run(
        &fx.engine,
        "SELECT count(*) FROM (VALUES (CAST(0.5 AS DOUBLE)), (CAST(0.25 AS DOUBLE))) t(x) \
         WHERE x > 0.3",
    )
    .await;
    assert_eq!(single_i64(&f), 1);
}

#[tokio::test]
async fn a_lossy_cast_in_a_comparison_is_kept() {
    let mut fx = tpch_like().await;
    // Every discount is below 1, so truncating (DataFusion) and rounding (PostgreSQL)
    // both give 0 for every row.
    let expected = pg_count(&mut fx, "SELECT count(*) FROM lineitem").await;
    assert_eq!(
        pg_count(
            &mut fx,
            "SELECT count(*) FROM lineitem WHERE CAST(l_discount AS BIGINT) = 0"
        )
        .await,
        expected
    );
    for sql in [
        "SELECT count(*) FROM pg.public.lineitem WHERE CAST(l_discount AS BIGINT) = 0",
        "SELECT count(*) FROM pg.public.lineitem WHERE 0 = CAST(l_discount AS INT)",
        "SELECT count(*) FROM pg.public.lineitem WHERE CAST(l_discount AS BIGINT) IN (0)",
        "SELECT count(*) FROM pg.public.lineitem WHERE CAST(l_discount AS DECIMAL(10,0)) = 0",
        "SELECT count(*) FROM pg.public.lineitem WHERE CAST(l_discount AS BIGINT) <= 0",
    ] {
        assert_eq!(single_i64(&run(&fx.engine, sql).await), expected, "{sql}");
    }
    // A cast that loses nothing is still unwrapped (and so still prunes).
    let plan = run(
        &fx.engine,
        "EXPLAIN SELECT count(*) FROM pg.public.lineitem WHERE CAST(l_orderkey AS BIGINT) = 1",
    )
    .await;
    let text = datafusion::arrow::util::pretty::pretty_format_batches(&plan)
        .unwrap()
        .to_string();
    assert!(!text.contains("keep_cast"), "{text}");
}

#[tokio::test]
async fn two_planning_errors_on_valid_sql_are_answered() {
    let mut fx = tpch_like().await;
    // A single COUNT(DISTINCT …) beside the SUM is what made DataFusion fail.
    let having = "SELECT l.l_shipinstruct, count(DISTINCT l.l_orderkey) FROM pg.public.lineitem l \
                  GROUP BY l.l_shipinstruct HAVING SUM(l.l_quantity) >= 48.00 ORDER BY 1";
    let ours = run(&fx.engine, having).await;
    assert_eq!(ours.iter().map(RecordBatch::num_rows).sum::<usize>(), 3);
    // The same from the memory tier, whose scans report column ranges to the optimizer.
    fx.engine
        .load_into_memory("pg", "public", "lineitem")
        .await
        .unwrap()
        .expect("the table fits in memory");
    let ours = run(&fx.engine, having).await;
    assert_eq!(ours.iter().map(RecordBatch::num_rows).sum::<usize>(), 3);
    let expected = pg_count(
        &mut fx,
        "SELECT count(*) FROM (SELECT l_shipinstruct FROM lineitem GROUP BY l_shipinstruct \
         HAVING SUM(l_quantity) >= 48.00) s",
    )
    .await;
    assert_eq!(expected, 3);

    let ambiguous = "WITH d AS (SELECT n_regionkey AS c0, n_regionkey AS c3 FROM pg.public.nation \
                     GROUP BY n_regionkey) SELECT d.c3 AS c0 FROM pg.public.region r \
                     JOIN d ON r.r_regionkey = d.c0 ORDER BY r.r_regionkey, d.c0";
    // DataFusion cannot plan this one: the error says why and what to write instead, and
    // what it suggests works.
    let err = fx.engine.sql(ambiguous).await.unwrap_err().to_string();
    assert!(
        err.contains("ORDER BY names d.c0 while an output column is also called c0"),
        "{err}"
    );
    let rewritten = "WITH d AS (SELECT n_regionkey AS c0, n_regionkey AS c3 FROM pg.public.nation \
                     GROUP BY n_regionkey) SELECT d.c3 AS c0, d.c0 AS k FROM pg.public.region r \
                     JOIN d ON r.r_regionkey = d.c0 ORDER BY r.r_regionkey, k";
    let batches = run(&fx.engine, rewritten).await;
    assert_eq!(crate::support::int32_column(&batches), [0, 1, 2, 3]);
}

#[tokio::test]
async fn a_mysql_connection_discovers_its_own_database_only() {
    let mut fx = MySqlSourceFixture::new().await;
    fx.exec("CREATE TABLE mine (id INT PRIMARY KEY)").await;
    // Another database the same user can see.
    let mut other = MySqlSourceFixture::new().await;
    other.exec("CREATE TABLE theirs (id INT PRIMARY KEY)").await;
    fx.engine.discover_connection("my").await.unwrap();
    let schemas: Vec<String> = discovered(&fx.engine, "my")
        .await
        .into_iter()
        .map(|t| format!("{}.{}", t.schema, t.name))
        .collect();
    assert_eq!(schemas, [format!("{}.mine", fx.name)]);

    // Asking for more: an explicit list, with a pattern.
    let mut config = mysql_source_config(&fx.name);
    config["schemas"] = json!([fx.name, format!("{}*", &other.name[..other.name.len() - 2])]);
    fx.engine
        .register_connection("both", "mysql", config)
        .await
        .unwrap();
    fx.engine.discover_connection("both").await.unwrap();
    let mut both: Vec<String> = discovered(&fx.engine, "both")
        .await
        .into_iter()
        .map(|t| t.name)
        .collect();
    both.sort();
    assert_eq!(both, ["mine", "theirs"]);

    let mut bad = mysql_source_config(&fx.name);
    bad["schemas"] = json!("everything");
    let err = fx
        .engine
        .register_connection("bad", "mysql", bad)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("'schemas' must be a non-empty list"), "{err}");
}

#[tokio::test]
async fn a_server_that_is_down_is_reported_at_once_as_refused() {
    let fx = PgSourceFixture::new().await;
    // A port nothing listens on: bind one, note it, close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut config = crate::support::pg_source_config(&fx.db.name);
    config["port"] = json!(port);
    fx.engine
        .register_connection("down", "postgres", config.clone())
        .await
        .unwrap();
    let start = Instant::now();
    let err = fx.engine.discover_connection("down").await.unwrap_err();
    let took = start.elapsed();
    let message = err.to_string();
    assert!(message.contains("refused"), "{message}");
    assert!(!message.contains("timed out"), "{message}");
    assert!(message.contains("retry_budget"), "{message}");
    // The default budget is 2 s of waiting; the pool's own wait would be 10 s a try.
    assert!(took < Duration::from_secs(8), "took {took:?}: {message}");

    // No budget: one try.
    config["retry_budget"] = json!("0s");
    fx.engine
        .register_connection("down_now", "postgres", config)
        .await
        .unwrap();
    let err = fx
        .engine
        .discover_connection("down_now")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("refused") && !err.contains("tried"), "{err}");
}

#[tokio::test]
async fn sessions_keep_their_settings_and_temporary_tables_apart() {
    let fx = tpch_like().await;
    let a = fx.engine.new_session();
    let b = fx.engine.new_session();
    for (session, sql) in [
        (&a, "SET datafusion.execution.batch_size = 1"),
        (&a, "CREATE TEMPORARY VIEW mine AS SELECT 1 AS x"),
        (&b, "CREATE TABLE theirs AS SELECT 2 AS y"),
    ] {
        session.sql(sql).await.unwrap().collect().await.unwrap();
    }
    assert_eq!(batch_size(&a).await, "1");
    assert_eq!(batch_size(&b).await, "8192");
    assert!(a.sql("SELECT * FROM theirs").await.is_err());
    assert!(b.sql("SELECT * FROM mine").await.is_err());
    assert!(fx.engine.sql("SELECT * FROM mine").await.is_err());
    // Both still see every connection.
    let counted = b
        .sql("SELECT count(*) FROM pg.public.region")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(single_i64(&counted), 4);
}

#[tokio::test]
async fn ddl_takes_effect_when_executed_not_when_planned() {
    let fx = tpch_like().await;
    let session = fx.engine.new_session();
    let planned = session
        .sql("CREATE TABLE t2 AS SELECT 42 AS v")
        .await
        .unwrap();
    // Planning it again (as a server does to announce a schema) changes nothing either.
    session
        .sql("CREATE TABLE t2 AS SELECT 42 AS v")
        .await
        .unwrap();
    assert!(
        session.sql("SELECT v FROM t2").await.is_err(),
        "planned only"
    );
    planned.collect().await.unwrap();
    let v = session
        .sql("SELECT v FROM t2")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(single_i64(&v), 42);
    let drop = session.sql("DROP TABLE t2").await.unwrap();
    assert!(
        session.sql("SELECT v FROM t2").await.is_ok(),
        "not dropped yet"
    );
    drop.collect().await.unwrap();
    assert!(session.sql("SELECT v FROM t2").await.is_err());
    // A planned SET sets nothing.
    session
        .sql("SET datafusion.execution.batch_size = 3")
        .await
        .unwrap();
    assert_eq!(batch_size(&session).await, "8192");
}

#[tokio::test]
async fn client_sessions_follow_their_token_and_are_capped_per_user() {
    use quarry::server::auth::Caller;
    use quarry::server::client_sessions::ClientSessions;
    use std::sync::Arc;
    let fx = PgSourceFixture::new().await;
    let sessions = ClientSessions::new(fx.engine.clone(), 2, Duration::from_secs(60));
    let later = Instant::now() + Duration::from_secs(60);
    let caller = |user: &str, token: &str, expires: Instant| Caller {
        user: user.into(),
        token: Some((token.into(), expires)),
        role: quarry::audit::Role::Member,
    };
    let first = sessions.get(&caller("ann", "t1", later)).unwrap();
    let again = sessions.get(&caller("ann", "t1", later)).unwrap();
    assert!(Arc::ptr_eq(&first, &again), "one token, one session");
    let second = sessions.get(&caller("ann", "t2", later)).unwrap();
    assert!(!Arc::ptr_eq(&first, &second));
    let refused = sessions.get(&caller("ann", "t3", later)).unwrap_err();
    assert_eq!(refused.kind(), quarry::error::Kind::ResourceExhausted);
    assert!(
        refused.to_string().contains("already has 2 open sessions"),
        "{refused}"
    );
    // Another user is not held back by ann's sessions.
    sessions.get(&caller("bob", "t4", later)).unwrap();
    // A session ends with its token: one that has expired frees ann's place.
    let expired = Instant::now();
    let sessions_of = ClientSessions::new(fx.engine.clone(), 1, Duration::from_secs(60));
    sessions_of.get(&caller("ann", "old", expired)).unwrap();
    let fresh = sessions_of.get(&caller("ann", "new", later));
    assert!(fresh.is_ok(), "the expired session no longer counts");
    assert_eq!(sessions_of.len(), 1);
}
