//! Join order from the sources' row estimates, against a real PostgreSQL: a chain of inner
//! joins written with the large table first is joined to the filtered small table first,
//! and its answers are PostgreSQL's, cached and in memory alike.

use std::collections::BTreeSet;

use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::logical_expr::LogicalPlan;
use sqlx::Row;

use crate::support::PgSourceFixture;

const TABLES: &str = "
CREATE TABLE sales (id int PRIMARY KEY, store_id int NOT NULL, item_id int NOT NULL, amount numeric(10,2) NOT NULL);
INSERT INTO sales SELECT g, g % 40, g % 25, (g % 97) * 1.25 FROM generate_series(1, 4000) g;
CREATE TABLE stores (id int PRIMARY KEY, city text NOT NULL);
INSERT INTO stores SELECT g, 'city ' || (g % 8) FROM generate_series(0, 39) g;
CREATE TABLE items (id int PRIMARY KEY, kind text NOT NULL);
INSERT INTO items SELECT g, 'kind ' || (g % 5) FROM generate_series(0, 24) g;
ANALYZE sales; ANALYZE stores; ANALYZE items;";

/// Written as a user would: the large table first, the filtered one last.
const QUERY: &str = "SELECT i.kind, count(*) AS n, sum(s.amount) AS total \
    FROM {sales} s JOIN {items} i ON s.item_id = i.id JOIN {stores} t ON s.store_id = t.id \
    WHERE t.city = 'city 3' GROUP BY i.kind ORDER BY i.kind";

fn query(qualify: impl Fn(&str) -> String) -> String {
    QUERY
        .replace("{sales}", &qualify("sales"))
        .replace("{items}", &qualify("items"))
        .replace("{stores}", &qualify("stores"))
}

/// The tables under each join of `plan`, innermost join first.
fn joins(plan: &LogicalPlan) -> Vec<BTreeSet<String>> {
    let mut found = Vec::new();
    plan.apply(|node| {
        if let LogicalPlan::Join(_) = node {
            let mut tables = BTreeSet::new();
            node.apply(|n| {
                if let LogicalPlan::TableScan(scan) = n {
                    tables.insert(scan.table_name.table().to_owned());
                }
                Ok(TreeNodeRecursion::Continue)
            })?;
            found.push(tables);
        }
        Ok(TreeNodeRecursion::Continue)
    })
    .unwrap();
    found.sort_by_key(BTreeSet::len);
    found
}

/// Every row of `sql`'s answer in Quarry, as text.
async fn quarry_rows(fx: &PgSourceFixture, sql: &str) -> Vec<Vec<String>> {
    let batches = fx.engine.sql(sql).await.unwrap().collect().await.unwrap();
    let mut rows = Vec::new();
    for batch in &batches {
        let formatters: Vec<_> = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &FormatOptions::default()).unwrap())
            .collect();
        for row in 0..batch.num_rows() {
            rows.push(
                formatters
                    .iter()
                    .map(|f| f.value(row).to_string())
                    .collect(),
            );
        }
    }
    rows
}

#[tokio::test]
async fn a_chain_written_large_table_first_joins_the_filtered_table_first() {
    let mut fx = PgSourceFixture::new().await;
    fx.exec(TABLES).await;
    fx.engine.discover_connection("pg").await.unwrap();
    let sql = query(|t| format!("pg.public.{t}"));

    let plan = fx
        .engine
        .sql(&sql)
        .await
        .unwrap()
        .into_optimized_plan()
        .unwrap();
    // As written, sales meets items first; stores (5 of 40 rows kept) makes the smaller
    // first result.
    assert_eq!(
        joins(&plan)[0],
        BTreeSet::from(["sales".to_owned(), "stores".to_owned()]),
        "{}",
        plan.display_indent()
    );

    let expected: Vec<Vec<String>> =
        sqlx::query(sqlx::AssertSqlSafe(query(|t| t.to_owned()).replace(
            "count(*) AS n, sum(s.amount) AS total",
            "count(*)::text AS n, sum(s.amount)::text AS total",
        )))
        .fetch_all(&mut fx.admin)
        .await
        .unwrap()
        .iter()
        .map(|r| (0..3).map(|i| r.get::<String, _>(i)).collect())
        .collect();
    assert_eq!(expected.len(), 5);
    // The first run fetches into the cache; later ones read it (or its copy in memory).
    for _ in 0..3 {
        assert_eq!(quarry_rows(&fx, &sql).await, expected);
    }
}
