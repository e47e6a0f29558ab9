//! Writes `examples/demo.db`, the small SQLite shop database the README's quickstart
//! queries: `cargo run --example demo_db [path]`. The file is committed, so the quickstart
//! needs no step of its own; run this to rebuild it after changing the data below.

use sqlx::{Connection, SqliteConnection};

const SCHEMA: &str = "
CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL, city TEXT, joined DATE);
CREATE TABLE products (id INTEGER PRIMARY KEY, name TEXT NOT NULL, category TEXT, price REAL);
CREATE TABLE orders (
    id INTEGER PRIMARY KEY,
    customer_id INTEGER NOT NULL REFERENCES customers(id),
    product_id INTEGER NOT NULL REFERENCES products(id),
    quantity INTEGER NOT NULL,
    ordered_at TIMESTAMP NOT NULL
);";

const CUSTOMERS: &[(&str, Option<&str>)] = &[
    ("Ada", Some("London")),
    ("Grace", Some("New York")),
    ("Linus", Some("Helsinki")),
    ("Margaret", Some("Boston")),
    ("Edsger", Some("Rotterdam")),
    ("Barbara", None),
    ("Ken", Some("New York")),
    ("Frances", Some("Paris")),
];

const PRODUCTS: &[(&str, &str, f64)] = &[
    ("Espresso beans", "coffee", 14.5),
    ("Filter papers", "coffee", 3.2),
    ("Green tea", "tea", 8.9),
    ("Earl Grey", "tea", 7.4),
    ("Teapot", "kitchen", 32.0),
    ("Grinder", "kitchen", 89.0),
];

#[tokio::main]
async fn main() -> Result<(), sqlx::Error> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| concat!(env!("CARGO_MANIFEST_DIR"), "/examples/demo.db").to_owned());
    let _ = std::fs::remove_file(&path);
    let mut db = SqliteConnection::connect(&format!("sqlite://{path}?mode=rwc")).await?;
    sqlx::raw_sql(SCHEMA).execute(&mut db).await?;
    for (i, (name, city)) in CUSTOMERS.iter().enumerate() {
        sqlx::query("INSERT INTO customers VALUES (?, ?, ?, ?)")
            .bind(i as i64 + 1)
            .bind(name)
            .bind(city)
            .bind(format!("2024-{:02}-{:02}", i % 12 + 1, i * 3 % 28 + 1))
            .execute(&mut db)
            .await?;
    }
    for (i, (name, category, price)) in PRODUCTS.iter().enumerate() {
        sqlx::query("INSERT INTO products VALUES (?, ?, ?, ?)")
            .bind(i as i64 + 1)
            .bind(name)
            .bind(category)
            .bind(price)
            .execute(&mut db)
            .await?;
    }
    // A fixed pattern rather than random numbers, so every rebuild is the same file content.
    for i in 0..40i64 {
        sqlx::query("INSERT INTO orders VALUES (?, ?, ?, ?, ?)")
            .bind(i + 1)
            .bind(i * 5 % CUSTOMERS.len() as i64 + 1)
            .bind(i * 7 % PRODUCTS.len() as i64 + 1)
            .bind(i % 4 + 1)
            .bind(format!(
                "2025-{:02}-{:02} {:02}:{:02}:00",
                i % 12 + 1,
                i % 28 + 1,
                8 + i % 10,
                i * 13 % 60
            ))
            .execute(&mut db)
            .await?;
    }
    db.close().await?;
    println!("wrote {path}");
    Ok(())
}
