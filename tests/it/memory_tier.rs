//! The memory tier against a real PostgreSQL source: a table read once is decoded into
//! memory in the background, later statements scan it there with identical results, and
//! purging or refreshing the table drops the decoded copy.

use std::time::Duration;

use datafusion::arrow::array::{Array, Int64Array, RecordBatch};
use datafusion::arrow::util::pretty::pretty_format_batches;
use quarry::{Engine, Event};

use crate::support::{PgSourceFixture, plan_statistics};

async fn text(engine: &Engine, sql: &str) -> String {
    let batches = engine
        .sql(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .collect()
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    pretty_format_batches(&batches).unwrap().to_string()
}

/// The memory_bytes information_schema shows for `pg.public.<table>` (None: not cached).
async fn memory_bytes(engine: &Engine, table: &str) -> Option<i64> {
    let batches: Vec<RecordBatch> = engine
        .sql(&format!("SELECT memory_bytes FROM quarry.information_schema.tables WHERE connection_name = 'pg' AND table_name = '{table}'"))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let column = batches[0]
        .column(0)
        .as_any()
        .downcast_ref::<Int64Array>()
        .unwrap();
    column.is_valid(0).then(|| column.value(0))
}

/// Whether a statement's physical plan scans memory (DataFusion's memory source shows its
/// partition sizes) or a Parquet file (its file groups).
async fn scans_memory(engine: &Engine, sql: &str) -> bool {
    let plan = text(engine, &format!("EXPLAIN {sql}")).await;
    match (
        plan.contains("partition_sizes="),
        plan.contains("file_groups="),
    ) {
        (true, false) => true,
        (false, true) => false,
        _ => panic!("neither or both scans in the plan:\n{plan}"),
    }
}

const QUERY: &str = "SELECT shop, count(*) AS n, sum(amount) AS total, max(name) AS last FROM pg.public.orders WHERE id % 3 = 0 GROUP BY shop ORDER BY shop";

async fn orders(fx: &mut PgSourceFixture) {
    fx.exec("CREATE TABLE orders AS SELECT g AS id, (g % 7)::int AS shop, (g * 1.25)::numeric(12,2) AS amount, 'name ' || g AS name FROM generate_series(1, 30000) g").await;
    fx.engine.discover_connection("pg").await.unwrap();
}

/// The orders table, cached and loaded into the memory tier.
async fn orders_in_memory() -> PgSourceFixture {
    let mut fx = PgSourceFixture::new().await;
    orders(&mut fx).await;
    let bytes = fx
        .engine
        .load_into_memory("pg", "public", "orders")
        .await
        .unwrap()
        .expect("the table fits the memory tier");
    assert!(bytes > 0);
    assert_eq!(fx.engine.cache().memory().used(), bytes);
    fx
}

#[tokio::test]
async fn a_table_read_once_is_decoded_into_memory_and_read_from_there() {
    let mut fx = PgSourceFixture::new().await;
    orders(&mut fx).await;
    let mut events = fx.engine.subscribe();
    let fetched = text(&fx.engine, QUERY).await;
    assert_eq!(memory_bytes(&fx.engine, "orders").await, Some(0));
    // The first read of the cached file scans Parquet and starts the load.
    assert!(!scans_memory(&fx.engine, QUERY).await);
    let again = text(&fx.engine, QUERY).await;
    let loaded = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            if let Ok(Event::TableInMemory { table, bytes, .. }) = events.recv().await
                && table.table.table == "orders"
            {
                return bytes;
            }
        }
    })
    .await
    .expect("the table was loaded into memory");
    assert!(loaded > 0);
    assert_eq!(
        memory_bytes(&fx.engine, "orders").await,
        Some(loaded as i64)
    );
    assert!(scans_memory(&fx.engine, QUERY).await);
    let from_memory = text(&fx.engine, QUERY).await;
    assert_eq!(from_memory, again);
    assert_eq!(from_memory, fetched);
    let expected: (i64,) = sqlx::query_as("SELECT count(*) FROM orders WHERE id % 3 = 0")
        .fetch_one(&mut fx.admin)
        .await
        .unwrap();
    let counted = text(
        &fx.engine,
        "SELECT count(*) AS n FROM pg.public.orders WHERE id % 3 = 0",
    )
    .await;
    assert!(counted.contains(&format!("| {} ", expected.0)), "{counted}");
    // Purging the cache drops the decoded copy too.
    text(&fx.engine, "SELECT * FROM purge_cache('pg')").await;
    assert_eq!(fx.engine.cache().memory().used(), 0);
    assert_eq!(memory_bytes(&fx.engine, "orders").await, None);
}

#[tokio::test]
async fn a_refreshed_table_drops_its_old_copy_and_shows_new_rows() {
    let mut fx = orders_in_memory().await;
    let before = fx.engine.cache().memory().used();
    assert!(before > 0);
    assert_eq!(
        memory_bytes(&fx.engine, "orders").await,
        Some(before as i64)
    );
    let count = "SELECT count(*) AS n FROM pg.public.orders WHERE id > 0";
    assert!(scans_memory(&fx.engine, count).await);
    assert!(text(&fx.engine, count).await.contains("| 30000 "));
    fx.exec("INSERT INTO orders VALUES (30001, 1, 1.00, 'new')")
        .await;
    // Still the cached version until a refresh.
    assert!(text(&fx.engine, count).await.contains("| 30000 "));
    text(
        &fx.engine,
        "SELECT * FROM refresh_table('pg.public.orders')",
    )
    .await;
    assert_eq!(
        fx.engine.cache().memory().used(),
        0,
        "the old version's copy is gone"
    );
    assert!(text(&fx.engine, count).await.contains("| 30001 "));
    fx.engine
        .load_into_memory("pg", "public", "orders")
        .await
        .unwrap();
    assert!(scans_memory(&fx.engine, count).await);
    assert!(text(&fx.engine, count).await.contains("| 30001 "));
    let newest = text(
        &fx.engine,
        "SELECT name FROM pg.public.orders WHERE id = 30001",
    )
    .await;
    assert!(newest.contains("| new "), "{newest}");
}

#[tokio::test]
async fn a_zero_memory_cache_reads_the_files() {
    let mut fx = PgSourceFixture::new().await;
    orders(&mut fx).await;
    let engine = fx.backend.builder().memory_cache(0).build().await.unwrap();
    assert_eq!(engine.config().memory_cache, 0);
    assert_eq!(
        engine
            .load_into_memory("pg", "public", "orders")
            .await
            .unwrap(),
        None
    );
    let from_file = text(&engine, QUERY).await;
    assert!(!scans_memory(&engine, QUERY).await);
    assert_eq!(engine.cache().memory().used(), 0);
    assert_eq!(memory_bytes(&engine, "orders").await, Some(0));
    // The same rows as an engine that reads them from memory.
    fx.engine
        .load_into_memory("pg", "public", "orders")
        .await
        .unwrap();
    assert!(scans_memory(&fx.engine, QUERY).await);
    assert_eq!(text(&fx.engine, QUERY).await, from_file);
}

#[tokio::test]
async fn a_table_in_memory_tells_the_optimizer_its_row_count_and_column_ranges() {
    use datafusion::common::ScalarValue;
    use datafusion::common::stats::Precision;
    let fx = orders_in_memory().await;
    let sql = "SELECT id FROM pg.public.orders";
    assert!(scans_memory(&fx.engine, sql).await);
    let stats = plan_statistics(&fx.engine, sql).await;
    // Join planning needs row counts and column ranges; the memory source alone has no ranges.
    assert_eq!(stats.num_rows, Precision::Exact(30000), "{stats:?}");
    let id = &stats.column_statistics[0];
    assert_eq!(
        id.min_value.get_value(),
        Some(&ScalarValue::Int32(Some(1))),
        "{stats:?}"
    );
    assert_eq!(
        id.max_value.get_value(),
        Some(&ScalarValue::Int32(Some(30000))),
        "{stats:?}"
    );
}

#[tokio::test]
async fn a_scan_in_memory_skips_batches_the_filter_rules_out() {
    let mut fx = orders_in_memory().await;
    let sql = "SELECT count(*) AS n, sum(amount) AS total FROM pg.public.orders WHERE id > 29000";
    let plan = text(&fx.engine, &format!("EXPLAIN ANALYZE {sql}")).await;
    assert!(plan.contains("skips batches by id@0 > 29000"), "{plan}");
    // The ids are in file order, 8192 per batch: only the last batch (5424 rows) is read,
    // and the scan keeps its last 1000 rows.
    assert!(plan.contains("filters rows by id@0 > 29000"), "{plan}");
    assert!(plan.contains("batches_skipped=3"), "{plan}");
    assert!(plan.contains("rows_read=5.42 K"), "{plan}");
    assert!(plan.contains("output_rows=1.00 K"), "{plan}");
    let expected: (i64, String) =
        sqlx::query_as("SELECT count(*), sum(amount)::text FROM orders WHERE id > 29000")
            .fetch_one(&mut fx.admin)
            .await
            .unwrap();
    let result = text(&fx.engine, sql).await;
    assert!(
        result.contains(&format!("| {} ", expected.0))
            && result.contains(&format!("| {} ", expected.1)),
        "{result}"
    );
}

#[tokio::test]
async fn a_join_drops_the_rows_of_a_scan_in_memory_that_it_cannot_match() {
    let mut fx = orders_in_memory().await;
    // Three ids spread over the table: the join's dynamic filter removes every other row
    // in the scan.
    fx.exec("CREATE TABLE picked (id int PRIMARY KEY, note text)")
        .await;
    fx.exec("INSERT INTO picked VALUES (5, 'a'), (15000, 'b'), (29999, 'c')")
        .await;
    fx.engine.discover_connection("pg").await.unwrap();
    // In memory too, so the optimizer knows it is the small side and builds on it.
    fx.engine
        .load_into_memory("pg", "public", "picked")
        .await
        .unwrap()
        .unwrap();
    // Quarry sessions start with dynamic filters off (DataFusion 55 can route them to a
    // same-named column, see `sql::context`); this join's columns are unambiguous.
    text(
        &fx.engine,
        "SET datafusion.optimizer.enable_dynamic_filter_pushdown = true",
    )
    .await;
    let sql = "SELECT p.note, o.amount FROM pg.public.picked p JOIN pg.public.orders o \
               ON o.id = p.id ORDER BY p.note";
    assert!(scans_memory(&fx.engine, sql).await);
    let plan = text(&fx.engine, &format!("EXPLAIN ANALYZE {sql}")).await;
    let scan = plan
        .lines()
        .find(|l| l.contains("partition_sizes=") && l.contains("DynamicFilter"))
        .unwrap_or_else(|| panic!("no memory scan of orders with a join's filter in\n{plan}"));
    assert!(
        scan.contains("filters rows dynamically by DynamicFilter"),
        "{plan}"
    );
    // The third batch (ids 16385 to 24576) holds none of the three; the other three are
    // read and all but three of their rows dropped in the scan.
    assert!(scan.contains("batches_skipped=1,"), "{plan}");
    assert!(scan.contains("rows_read=21.81 K"), "{plan}");
    assert!(scan.contains("output_rows=3,"), "{plan}");
    // The same answer as PostgreSQL's.
    let pairs = "SELECT p.note || '=' || CAST(o.amount AS VARCHAR) AS pair \
                 FROM pg.public.picked p JOIN pg.public.orders o ON o.id = p.id ORDER BY 1";
    let expected: Vec<(String,)> = sqlx::query_as(
        "SELECT p.note || '=' || o.amount::text FROM picked p JOIN orders o ON o.id = p.id ORDER BY 1",
    )
    .fetch_all(&mut fx.admin)
    .await
    .unwrap();
    let expected: Vec<String> = expected.into_iter().map(|(pair,)| pair).collect();
    assert_eq!(expected, ["a=6.25", "b=18750.00", "c=37498.75"]);
    let batches = fx.engine.sql(pairs).await.unwrap().collect().await.unwrap();
    assert_eq!(crate::support::string_column(&batches), expected);
}
