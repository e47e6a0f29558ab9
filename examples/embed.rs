//! Embeds Quarry in a program: creates a connection to a small SQLite file, subscribes to
//! fetch events, and queries the table (the first query fetches it into the cache).
//!
//! Run: `cargo run --example embed`

// Quarry re-exports the Arrow and DataFusion it is built on.
use quarry::arrow::util::pretty::pretty_format_batches;
use quarry::{Engine, Event};
use sqlx::Connection;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;

    // A small source database to read.
    let source = dir.path().join("shop.db");
    let mut conn =
        sqlx::SqliteConnection::connect(&format!("sqlite://{}?mode=rwc", source.display())).await?;
    sqlx::raw_sql(
        "CREATE TABLE products (id INTEGER PRIMARY KEY, name TEXT, price REAL);
         INSERT INTO products (name, price) VALUES ('tea', 3.5), ('coffee', 4.25), ('cake', 2.0);",
    )
    .execute(&mut conn)
    .await?;
    conn.close().await?;

    let engine = Engine::builder()
        .data_dir(dir.path().join("quarry"))
        .build()
        .await?;

    // Print fetch events as they happen.
    let mut events = engine.subscribe();
    let printer = tokio::spawn(async move {
        while let Ok(event) = events.recv().await {
            match event {
                Event::FetchStarted { table, .. } => println!("fetching {table}"),
                Event::FetchFinished {
                    table,
                    rows,
                    bytes,
                    elapsed,
                } => {
                    println!("fetched {table}: {rows} rows, {bytes} bytes in {elapsed:?}")
                }
                _ => {}
            }
        }
    });

    // Creating a connection also discovers its tables.
    let created = engine
        .create_connection("shop", "sqlite", serde_json::json!({"path": source}))
        .await?;
    let discovered = created.discovery?;
    println!(
        "created connection {} ({}) with {} tables",
        created.connection.name, created.connection.id, discovered.tables_added
    );

    // A session of its own, whose unqualified names resolve in shop.main.
    let session = engine.new_session();
    session.sql("USE shop.main").await?.collect().await?;
    for _ in 0..2 {
        let batches = session
            .sql("SELECT name, price FROM products WHERE price > 3 ORDER BY price")
            .await?
            .collect()
            .await?;
        println!("{}", pretty_format_batches(&batches)?);
    }
    drop(engine);
    printer.abort();
    Ok(())
}
