//! Generates TPC-H data with the tpchgen crate and loads it once per scale into PostgreSQL
//! (`COPY ... FROM STDIN`) and MariaDB (multi-row INSERTs). A marker table records a
//! finished load, so later runs at the same scale reuse the data.

#![allow(dead_code)]

use std::fmt::Display;

use sqlx::postgres::PgPoolCopyExt;
use sqlx::{AssertSqlSafe, Connection, MySqlConnection, PgConnection, PgPool};

/// The geometric mean of `values`: how the benches sum up per-query times and ratios.
pub fn geomean(values: &[f64]) -> f64 {
    (values.iter().map(|v| v.ln()).sum::<f64>() / values.len() as f64).exp()
}

/// PostgreSQL DDL of the eight TPC-H tables (column types as in the specification).
pub const TABLES: &[(&str, &str)] = &[
    (
        "nation",
        "n_nationkey int NOT NULL, n_name char(25), n_regionkey int, n_comment varchar(152)",
    ),
    (
        "region",
        "r_regionkey int NOT NULL, r_name char(25), r_comment varchar(152)",
    ),
    (
        "part",
        "p_partkey bigint NOT NULL, p_name varchar(55), p_mfgr char(25), p_brand char(10), p_type varchar(25), p_size int, p_container char(10), p_retailprice decimal(15,2), p_comment varchar(23)",
    ),
    (
        "supplier",
        "s_suppkey bigint NOT NULL, s_name char(25), s_address varchar(40), s_nationkey int, s_phone char(15), s_acctbal decimal(15,2), s_comment varchar(101)",
    ),
    (
        "partsupp",
        "ps_partkey bigint NOT NULL, ps_suppkey bigint NOT NULL, ps_availqty int, ps_supplycost decimal(15,2), ps_comment varchar(199)",
    ),
    (
        "customer",
        "c_custkey bigint NOT NULL, c_name varchar(25), c_address varchar(40), c_nationkey int, c_phone char(15), c_acctbal decimal(15,2), c_mktsegment char(10), c_comment varchar(117)",
    ),
    (
        "orders",
        "o_orderkey bigint NOT NULL, o_custkey bigint, o_orderstatus char(1), o_totalprice decimal(15,2), o_orderdate date, o_orderpriority char(15), o_clerk char(15), o_shippriority int, o_comment varchar(79)",
    ),
    (
        "lineitem",
        "l_orderkey bigint NOT NULL, l_partkey bigint, l_suppkey bigint, l_linenumber int NOT NULL, l_quantity decimal(15,2), l_extendedprice decimal(15,2), l_discount decimal(15,2), l_tax decimal(15,2), l_returnflag char(1), l_linestatus char(1), l_shipdate date, l_commitdate date, l_receiptdate date, l_shipinstruct char(25), l_shipmode char(10), l_comment varchar(44)",
    ),
];

const PRIMARY_KEYS: &[(&str, &str)] = &[
    ("nation", "n_nationkey"),
    ("region", "r_regionkey"),
    ("part", "p_partkey"),
    ("supplier", "s_suppkey"),
    ("partsupp", "ps_partkey, ps_suppkey"),
    ("customer", "c_custkey"),
    ("orders", "o_orderkey"),
    ("lineitem", "l_orderkey, l_linenumber"),
];

/// Database name for a scale factor, e.g. `quarry_tpch_sf0_1`.
pub fn database_name(scale: f64) -> String {
    format!("quarry_tpch_sf{}", scale.to_string().replace('.', "_"))
}

/// Calls `emit` with every row of `table` as a CSV line (comments quoted).
pub fn for_each_csv_line(table: &str, scale: f64, mut emit: impl FnMut(&dyn Display)) {
    use tpchgen::csv::*;
    use tpchgen::generators::*;
    match table {
        "nation" => NationGenerator::new(scale, 1, 1)
            .iter()
            .for_each(|r| emit(&NationCsv::new(r))),
        "region" => RegionGenerator::new(scale, 1, 1)
            .iter()
            .for_each(|r| emit(&RegionCsv::new(r))),
        "part" => PartGenerator::new(scale, 1, 1)
            .iter()
            .for_each(|r| emit(&PartCsv::new(r))),
        "supplier" => SupplierGenerator::new(scale, 1, 1)
            .iter()
            .for_each(|r| emit(&SupplierCsv::new(r))),
        "partsupp" => PartSuppGenerator::new(scale, 1, 1)
            .iter()
            .for_each(|r| emit(&PartSuppCsv::new(r))),
        "customer" => CustomerGenerator::new(scale, 1, 1)
            .iter()
            .for_each(|r| emit(&CustomerCsv::new(r))),
        "orders" => OrderGenerator::new(scale, 1, 1)
            .iter()
            .for_each(|r| emit(&OrderCsv::new(r))),
        "lineitem" => LineItemGenerator::new(scale, 1, 1)
            .iter()
            .for_each(|r| emit(&LineItemCsv::new(r))),
        other => panic!("unknown TPC-H table {other}"),
    }
}

/// Streams `table`'s rows as CSV text in chunks of about 1 MiB, generated on a blocking
/// thread, so loading needs little memory whatever the scale.
fn csv_chunks(table: &'static str, scale: f64) -> tokio::sync::mpsc::Receiver<String> {
    let (sender, receiver) = tokio::sync::mpsc::channel(4);
    tokio::task::spawn_blocking(move || {
        use std::fmt::Write;
        let mut buffer = String::with_capacity(1 << 20);
        for_each_csv_line(table, scale, |line| {
            let _ = writeln!(buffer, "{line}");
            if buffer.len() >= 1 << 20 {
                let full = std::mem::replace(&mut buffer, String::with_capacity(1 << 20));
                let _ = sender.blocking_send(full);
            }
        });
        if !buffer.is_empty() {
            let _ = sender.blocking_send(buffer);
        }
    });
    receiver
}

/// Makes sure database `quarry_tpch_sf<scale>` on the PostgreSQL server at `admin_url`
/// holds the TPC-H tables; returns its URL.
pub async fn ensure_postgres(admin_url: &str, scale: f64) -> String {
    let name = database_name(scale);
    let mut url = url::Url::parse(admin_url).unwrap();
    url.set_path(&format!("/{name}"));
    let db_url = url.to_string();
    let mut admin = PgConnection::connect(admin_url)
        .await
        .expect("PostgreSQL is reachable");
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&name)
            .fetch_one(&mut admin)
            .await
            .unwrap();
    if exists {
        let pool = PgPool::connect(&db_url).await.unwrap();
        let loaded: bool =
            sqlx::query_scalar("SELECT to_regclass('quarry_tpch_loaded') IS NOT NULL")
                .fetch_one(&pool)
                .await
                .unwrap();
        pool.close().await;
        if loaded {
            return db_url;
        }
        sqlx::raw_sql(AssertSqlSafe(format!("DROP DATABASE {name} WITH (FORCE)")))
            .execute(&mut admin)
            .await
            .unwrap();
    }
    eprintln!("loading TPC-H scale {scale} into PostgreSQL database {name} (once)...");
    sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .unwrap();
    load_postgres(&db_url, scale).await;
    sqlx::raw_sql("CREATE TABLE quarry_tpch_loaded (at timestamptz DEFAULT now())")
        .execute(&mut PgConnection::connect(&db_url).await.unwrap())
        .await
        .unwrap();
    db_url
}

/// Creates and fills the TPC-H tables at `scale` in the empty database at `db_url`, with
/// their primary keys, analyzed.
pub async fn load_postgres(db_url: &str, scale: f64) {
    let pool = PgPool::connect(db_url).await.unwrap();
    for &(table, columns) in TABLES {
        sqlx::raw_sql(AssertSqlSafe(format!("CREATE TABLE {table} ({columns})")))
            .execute(&pool)
            .await
            .unwrap();
        let mut copy = pool
            .copy_in_raw(&format!("COPY {table} FROM STDIN (FORMAT csv)"))
            .await
            .unwrap();
        let mut chunks = csv_chunks(table, scale);
        while let Some(chunk) = chunks.recv().await {
            copy.send(chunk.as_bytes()).await.unwrap();
        }
        copy.finish().await.unwrap();
    }
    for (table, key) in PRIMARY_KEYS {
        sqlx::raw_sql(AssertSqlSafe(format!(
            "ALTER TABLE {table} ADD PRIMARY KEY ({key})"
        )))
        .execute(&pool)
        .await
        .unwrap();
    }
    sqlx::raw_sql("ANALYZE").execute(&pool).await.unwrap();
    pool.close().await;
}

/// Splits a tpchgen CSV line into fields (only comments are quoted, never with quotes inside).
fn csv_fields(line: &str) -> Vec<&str> {
    let mut fields = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    for (i, c) in line.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                fields.push(line[start..i].trim_matches('"'));
                start = i + 1;
            }
            _ => {}
        }
    }
    fields.push(line[start..].trim_matches('"'));
    fields
}

/// Makes sure database `quarry_tpch_sf<scale>` on the MariaDB server at `admin_url` holds
/// the TPC-H tables (lineitem only when `only_lineitem`); returns its name.
pub async fn ensure_mysql(admin_url: &str, scale: f64, only_lineitem: bool) -> String {
    let name = database_name(scale);
    let mut conn = MySqlConnection::connect(admin_url)
        .await
        .expect("MariaDB is reachable");
    let loaded: Option<String> = sqlx::query_scalar(
        "SELECT CAST(TABLE_NAME AS CHAR) FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = 'quarry_tpch_loaded'",
    )
    .bind(&name)
    .fetch_optional(&mut conn)
    .await
    .unwrap();
    if loaded.is_some() {
        return name;
    }
    eprintln!("loading TPC-H scale {scale} into MariaDB database {name} (once)...");
    for sql in [
        format!("DROP DATABASE IF EXISTS {name}"),
        format!("CREATE DATABASE {name}"),
        format!("USE {name}"),
    ] {
        sqlx::raw_sql(AssertSqlSafe(sql))
            .execute(&mut conn)
            .await
            .unwrap();
    }
    for &(table, columns) in TABLES {
        if only_lineitem && table != "lineitem" {
            continue;
        }
        let key = PRIMARY_KEYS.iter().find(|(t, _)| *t == table).unwrap().1;
        let ddl = format!("CREATE TABLE {table} ({columns}, PRIMARY KEY ({key}))");
        sqlx::raw_sql(AssertSqlSafe(ddl))
            .execute(&mut conn)
            .await
            .unwrap();
        let mut chunks = csv_chunks(table, scale);
        while let Some(chunk) = chunks.recv().await {
            let tuples: Vec<String> = chunk
                .lines()
                .map(|line| {
                    let fields: Vec<String> = csv_fields(line)
                        .iter()
                        .map(|f| format!("'{}'", f.replace('\\', "\\\\").replace('\'', "\\'")))
                        .collect();
                    format!("({})", fields.join(","))
                })
                .collect();
            let insert = format!("INSERT INTO {table} VALUES {}", tuples.join(","));
            sqlx::raw_sql(AssertSqlSafe(insert))
                .execute(&mut conn)
                .await
                .unwrap();
        }
    }
    sqlx::raw_sql(
        "ANALYZE TABLE lineitem; CREATE TABLE quarry_tpch_loaded (at timestamp DEFAULT now())",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    name
}

/// A Quarry engine on data dir `dir` with a connection `tpch` to the scale-`scale` database
/// (no password, so no secret key is needed by other processes on the same dir).
pub async fn quarry_engine(dir: &std::path::Path, scale: f64) -> quarry::Engine {
    let engine = quarry::Engine::builder()
        .data_dir(dir)
        .build()
        .await
        .unwrap();
    engine
        .register_connection(
            "tpch",
            "postgres",
            serde_json::json!({"host": "127.0.0.1", "database": database_name(scale), "user": "postgres", "ssl_mode": "disable"}),
        )
        .await
        .unwrap();
    engine.discover_connection("tpch").await.unwrap();
    engine
}

/// Runs `sql` on `engine` to the end; returns the rows of its result.
pub async fn run(engine: &quarry::Engine, sql: &str) -> usize {
    collect(engine, sql)
        .await
        .iter()
        .map(|b| b.num_rows())
        .sum()
}

/// Runs `sql` on `engine` to the end; returns its result.
pub async fn collect(
    engine: &quarry::Engine,
    sql: &str,
) -> Vec<datafusion::arrow::record_batch::RecordBatch> {
    engine
        .sql(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .collect()
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}
