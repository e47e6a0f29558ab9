//! SQLite source: a read-only pool on the file, discovery from `sqlite_master` and
//! `pragma_table_info`, and a streamed `SELECT` decoded row by row.
//!
//! SQLite stores a storage class per value, not per column, so discovery looks at the
//! classes a column actually holds (one scan per table, which also gives the exact row
//! count). Rules (also in the README):
//! - only integers → Int64; integers and reals → Float64 (an integer beyond 2^53 fails the
//!   fetch rather than round);
//! - any text (without blobs) → Utf8, numbers rendered by SQLite's own CAST to TEXT;
//! - only blobs → Binary; blobs mixed with other classes → Binary, the others as the bytes
//!   of SQLite's text rendering;
//! - an empty or all-NULL column maps by its declared type's affinity (INT → Int64,
//!   REAL/FLOA/DOUB → Float64, BLOB → Binary, NUMERIC-like → Float64, else Utf8).

mod constraints;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use futures::TryStreamExt;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions, SqliteRow};
use sqlx::{
    AssertSqlSafe, Column, Decode, Executor, Row, SqlSafeStr, Sqlite, Statement, TypeInfo, ValueRef,
};
use tokio::sync::mpsc;

use super::builders::DecodeError;
use super::cells::{BatchBuilder, Cell};
use super::describe::{Described, placeholders, unique_names};
use super::discovery::{DiscoveredColumn, TableCollector, attach_constraints};
use super::{
    Endpoint, FetchRequest, QueryRequest, ReadTarget, Source, SqliteConfig, TestOutcome,
    forward_batch,
};
use crate::error::Result;
use crate::table::TableRecord;

const INTEGER: i64 = 1;
const REAL: i64 = 2;
const TEXT: i64 = 4;
const BLOB: i64 = 8;

/// A SQLite database file, opened read-only.
#[derive(Debug)]
pub struct SqliteSource {
    endpoint: Endpoint,
    pool: SqlitePool,
}

impl SqliteSource {
    /// A source for `config`; the file is opened on first use.
    pub fn new(connection: &str, config: &SqliteConfig) -> Result<Self> {
        let options = SqliteConnectOptions::new()
            .filename(&config.path)
            .read_only(true)
            .busy_timeout(config.options.connect_timeout);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(config.options.connect_timeout)
            .connect_lazy_with(options);
        let path = config.path.display().to_string();
        Ok(SqliteSource {
            endpoint: Endpoint {
                connection: connection.to_owned(),
                address: path.clone(),
                user: None,
                database: path,
                tunnel: None,
            },
            pool,
        })
    }
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Maps the storage classes seen in a column (or, if none, its declared type).
pub fn arrow_type(classes: i64, declared: &str) -> DataType {
    match classes {
        0 => {
            let declared = declared.to_ascii_uppercase();
            if declared.contains("INT") {
                DataType::Int64
            } else if ["CHAR", "CLOB", "TEXT"]
                .iter()
                .any(|t| declared.contains(t))
            {
                DataType::Utf8
            } else if declared.contains("BLOB") {
                DataType::Binary
            } else if declared.is_empty() {
                DataType::Utf8
            } else {
                DataType::Float64
            }
        }
        INTEGER => DataType::Int64,
        c if c & (TEXT | BLOB) == 0 => DataType::Float64,
        c if c & BLOB != 0 => DataType::Binary,
        _ => DataType::Utf8,
    }
}

fn select_expression(column: &str, arrow: &DataType) -> String {
    let quoted = quote_ident(column);
    match arrow {
        DataType::Utf8 => format!("CAST({quoted} AS TEXT)"),
        DataType::Binary => format!("CAST({quoted} AS BLOB)"),
        _ => quoted,
    }
}

#[async_trait]
impl Source for SqliteSource {
    async fn test(&self) -> Result<TestOutcome> {
        let start = Instant::now();
        let version: String = sqlx::query_scalar("SELECT sqlite_version()")
            .fetch_one(&self.pool)
            .await
            .map_err(|e| self.endpoint.classify(&e))?;
        // Reading the schema proves the file is a database, not just an openable file.
        sqlx::query("SELECT count(*) FROM sqlite_master")
            .fetch_one(&self.pool)
            .await
            .map_err(|e| self.endpoint.classify(&e))?;
        Ok(TestOutcome {
            server_version: format!("SQLite {version}"),
            latency: start.elapsed().max(Duration::from_micros(1)),
        })
    }

    async fn discover(&self) -> Result<Vec<TableRecord>> {
        let classify = |e: sqlx::Error| self.endpoint.classify(&e);
        let objects = sqlx::query(
            "SELECT name, type FROM sqlite_master
             WHERE type IN ('table', 'view') AND name NOT LIKE 'sqlite_%' ORDER BY name",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(classify)?;
        let mut tables = TableCollector::default();
        let mut constraint_rows = Vec::new();
        for object in &objects {
            let name: String = object.try_get("name").map_err(classify)?;
            let kind: String = object.try_get("type").map_err(classify)?;
            let columns = sqlx::query(
                "SELECT name, type, \"notnull\" AS not_null, pk, cid FROM pragma_table_info($1) ORDER BY cid",
            )
            .bind(&name)
            .fetch_all(&self.pool)
            .await
            .map_err(classify)?;
            if kind == "table" {
                // `pk` is the column's 1-based place in the primary key, 0 outside it.
                let mut key = Vec::new();
                for column in &columns {
                    let place: i64 = column.try_get("pk").map_err(classify)?;
                    if place > 0 {
                        key.push((
                            place,
                            column.try_get::<String, _>("name").map_err(classify)?,
                        ));
                    }
                }
                key.sort();
                let key = key.into_iter().map(|(_, column)| column).collect();
                constraint_rows.extend(
                    constraints::constraints(&self.pool, &name, key)
                        .await
                        .map_err(classify)?,
                );
            }
            let mut probes = vec!["count(*) AS row_count".to_owned()];
            for (i, column) in columns.iter().enumerate() {
                let c = quote_ident(&column.try_get::<String, _>("name").map_err(classify)?);
                probes.push(format!(
                    "coalesce(max(typeof({c}) = 'integer'), 0) * {INTEGER}
                     + coalesce(max(typeof({c}) = 'real'), 0) * {REAL}
                     + coalesce(max(typeof({c}) = 'text'), 0) * {TEXT}
                     + coalesce(max(typeof({c}) = 'blob'), 0) * {BLOB} AS c{i}"
                ));
            }
            let stats = sqlx::query(AssertSqlSafe(format!(
                "SELECT {} FROM {}",
                probes.join(", "),
                quote_ident(&name)
            )))
            .fetch_one(&self.pool)
            .await
            .map_err(classify)?;
            let row_estimate = Some(stats.try_get::<i64, _>("row_count").map_err(classify)?);
            // The pages the table holds, where SQLite was built with the dbstat table.
            let byte_estimate: Option<i64> = if kind == "table" {
                sqlx::query_scalar("SELECT sum(pgsize) FROM dbstat WHERE name = $1")
                    .bind(&name)
                    .fetch_one(&self.pool)
                    .await
                    .ok()
                    .flatten()
            } else {
                None
            };
            for (i, column) in columns.iter().enumerate() {
                let declared: String = column.try_get("type").map_err(classify)?;
                let not_null: i64 = column.try_get("not_null").map_err(classify)?;
                let classes: i64 = stats.try_get(i + 1).map_err(classify)?;
                tables.column(
                    "main".into(),
                    name.clone(),
                    &kind,
                    (row_estimate, byte_estimate),
                    DiscoveredColumn {
                        name: column.try_get("name").map_err(classify)?,
                        position: i as i64 + 1,
                        arrow: arrow_type(classes, &declared),
                        source_type: if declared.is_empty() {
                            "ANY".into()
                        } else {
                            declared
                        },
                        precision_scale: (None, None),
                        nullable: not_null == 0,
                    },
                );
            }
        }
        let mut tables = tables.finish();
        attach_constraints(&mut tables, constraint_rows);
        Ok(tables)
    }

    async fn fetch(&self, request: &FetchRequest, sink: mpsc::Sender<RecordBatch>) -> Result<()> {
        let schema = Arc::clone(&request.arrow_schema);
        let columns: Vec<String> = schema
            .fields()
            .iter()
            .map(|f| select_expression(f.name(), f.data_type()))
            .collect();
        let statement = format!(
            "SELECT {} FROM {}{}",
            columns.join(", "),
            quote_ident(&request.table.table),
            request.where_clause(crate::source::SqlDialect::Sqlite)?
        );
        self.stream(statement, request, sink).await
    }

    async fn query(&self, request: &QueryRequest, sink: mpsc::Sender<RecordBatch>) -> Result<()> {
        self.stream(request.sql.clone(), request, sink).await
    }

    async fn describe(&self, sql: &str) -> Result<SchemaRef> {
        let statement = (&self.pool)
            .prepare(AssertSqlSafe(sql.to_owned()).into_sql_str())
            .await
            .map_err(|e| self.endpoint.classify(&e))?;
        let columns = statement.columns();
        let names = unique_names(columns.iter().map(|c| c.name().to_owned()));
        let fields = columns
            .iter()
            .zip(names)
            .map(|(column, name)| Field::new(name, declared_type(column.type_info().name()), true))
            .collect::<Vec<_>>();
        let parameters = placeholders(&statement);
        Described {
            schema: Arc::new(Schema::new(fields)),
            parameters,
        }
        .into_schema(&self.endpoint)
    }
}

/// The Arrow type of a result column of a statement, from its declared type (a table's
/// column) or `NULL` (an expression, whose values' classes are known only once it runs).
/// Text takes any class, rendered as SQLite renders it.
fn declared_type(declared: &str) -> DataType {
    match declared {
        "INTEGER" | "BOOLEAN" => DataType::Int64,
        "REAL" => DataType::Float64,
        "BLOB" => DataType::Binary,
        _ => DataType::Utf8,
    }
}

impl SqliteSource {
    /// Streams the rows of `statement` into `sink`, each value decoded by its storage class.
    async fn stream(
        &self,
        statement: String,
        request: &impl ReadTarget,
        sink: mpsc::Sender<RecordBatch>,
    ) -> Result<()> {
        let schema = Arc::clone(request.schema());
        let mut builder =
            BatchBuilder::new(Arc::clone(&schema)).map_err(|e| request.error(None, e))?;
        let mut rows = sqlx::query(AssertSqlSafe(statement)).fetch(&self.pool);
        while let Some(row) = rows
            .try_next()
            .await
            .map_err(|e| self.endpoint.classify(&e))?
        {
            append_row(&row, schema.fields().len(), &mut builder)
                .map_err(|(i, e)| request.error(Some(i), e))?;
            if !forward_batch(&mut builder, &sink, request, false).await? {
                return Ok(());
            }
        }
        forward_batch(&mut builder, &sink, request, true).await?;
        Ok(())
    }
}

/// Decodes each value by its own storage class.
fn append_row(
    row: &SqliteRow,
    columns: usize,
    builder: &mut BatchBuilder,
) -> std::result::Result<(), (usize, DecodeError)> {
    for i in 0..columns {
        let failed = |e: sqlx::Error| (i, format!("a value that cannot be read ({e})").into());
        let value = row.try_get_raw(i).map_err(failed)?;
        let cell = if value.is_null() {
            Cell::Null
        } else {
            // The storage class, read without allocating (this runs for every value).
            let class = match value.type_info().name() {
                "INTEGER" => "INTEGER",
                "REAL" => "REAL",
                "BLOB" => "BLOB",
                _ => "TEXT",
            };
            match class {
                "INTEGER" => Cell::Int(
                    <i64 as Decode<Sqlite>>::decode(value)
                        .map_err(|e| (i, e.to_string().into()))?,
                ),
                "REAL" => Cell::Float(
                    <f64 as Decode<Sqlite>>::decode(value)
                        .map_err(|e| (i, e.to_string().into()))?,
                ),
                "BLOB" => Cell::Bytes(
                    <&[u8] as Decode<Sqlite>>::decode(value)
                        .map_err(|e| (i, e.to_string().into()))?,
                ),
                _ => Cell::Text(
                    <&str as Decode<Sqlite>>::decode(value)
                        .map_err(|e| (i, e.to_string().into()))?,
                ),
            }
        };
        builder.append(i, cell).map_err(|e| {
            (
                i,
                format!("{e} (the data changed since discovery? run discovery again)").into(),
            )
        })?;
    }
    builder.end_row();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_classes_decide_the_type() {
        assert_eq!(arrow_type(INTEGER, "TEXT"), DataType::Int64);
        assert_eq!(arrow_type(INTEGER | REAL, "NUMERIC"), DataType::Float64);
        assert_eq!(arrow_type(INTEGER | TEXT, "INTEGER"), DataType::Utf8);
        assert_eq!(arrow_type(BLOB | TEXT, ""), DataType::Binary);
        assert_eq!(arrow_type(0, "BIGINT"), DataType::Int64);
        assert_eq!(arrow_type(0, "VARCHAR(10)"), DataType::Utf8);
        assert_eq!(arrow_type(0, "DECIMAL(10,2)"), DataType::Float64);
    }
}
