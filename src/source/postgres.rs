//! PostgreSQL source: pooled read-only sessions, discovery from the system catalogs, and
//! fetch through binary `COPY ... TO STDOUT` decoded straight into Arrow.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::Utc;
use datafusion::arrow::datatypes::{Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use futures::StreamExt;
use secrecy::ExposeSecret;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgSslMode};
use sqlx::{Connection, PgConnection, Row};
use tokio::sync::mpsc;

use super::pg_copy::CopyDecoder;
use super::postgres_types::{
    PgColumnType, arrow_type, numeric_precision_scale, quote_ident, wire_cast,
};
use super::retry::with_backoff;
use super::{BATCH_ROWS, Endpoint, FetchRequest, ServerConfig, Source, SslMode, TestOutcome};
use crate::error::Result;
use crate::store::{ColumnRecord, TableRecord};

const MAX_SESSIONS: u32 = 10;

/// A PostgreSQL database.
#[derive(Debug)]
pub struct PgSource {
    endpoint: Endpoint,
    options: PgConnectOptions,
    pool: PgPool,
    connect_timeout: Duration,
}

impl PgSource {
    /// A source for `config`; nothing connects until first use.
    pub fn new(connection: &str, config: &ServerConfig) -> Result<Self> {
        let mut options = PgConnectOptions::new()
            .host(&config.host)
            .port(config.port)
            .database(&config.database)
            .username(&config.user)
            .application_name("quarry")
            .ssl_mode(match config.ssl_mode {
                SslMode::Disable => PgSslMode::Disable,
                SslMode::Prefer => PgSslMode::Prefer,
                SslMode::Require => PgSslMode::Require,
                SslMode::VerifyCa => PgSslMode::VerifyCa,
                SslMode::VerifyFull => PgSslMode::VerifyFull,
            });
        if let Some(password) = &config.password {
            options = options.password(password.expose_secret());
        }
        if let Some(cert) = &config.ssl_root_cert {
            options = options.ssl_root_cert(cert);
        }
        // Read-only sessions; a fixed rendering for anything carried as text.
        let mut settings = vec![
            ("default_transaction_read_only", "on".to_owned()),
            ("TimeZone", "UTC".to_owned()),
            ("DateStyle", "ISO, YMD".to_owned()),
            ("IntervalStyle", "iso_8601".to_owned()),
            ("extra_float_digits", "3".to_owned()),
        ];
        if let Some(timeout) = config.options.statement_timeout {
            settings.push(("statement_timeout", format!("{}", timeout.as_millis())));
        }
        options = options.options(settings);
        let connect_timeout = config.options.connect_timeout;
        let pool = PgPoolOptions::new()
            .max_connections(MAX_SESSIONS)
            .acquire_timeout(connect_timeout)
            .connect_lazy_with(options.clone());
        Ok(PgSource {
            endpoint: Endpoint {
                connection: connection.to_owned(),
                address: format!("{}:{}", config.host, config.port),
                user: Some(config.user.clone()),
                database: config.database.clone(),
            },
            options,
            pool,
            connect_timeout,
        })
    }

    async fn connect_once(&self) -> Result<PgConnection> {
        match tokio::time::timeout(
            self.connect_timeout,
            PgConnection::connect_with(&self.options),
        )
        .await
        {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(e)) => Err(self.endpoint.classify(&e)),
            Err(_) => Err(self.endpoint.timed_out(self.connect_timeout)),
        }
    }
}

const DISCOVER: &str = r"
SELECT n.nspname::text AS table_schema,
       c.relname::text AS table_name,
       CASE c.relkind WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view'
                      WHEN 'f' THEN 'foreign table' ELSE 'table' END AS table_type,
       CASE WHEN c.relkind IN ('r', 'p', 'm') AND c.reltuples >= 0
            THEN c.reltuples::int8 END AS row_estimate,
       a.attname::text AS column_name,
       a.attnum::int8 AS ordinal_position,
       NOT a.attnotnull AS is_nullable,
       format_type(a.atttypid, a.atttypmod) AS source_type,
       bt.typname::text AS type_name,
       bt.typtype::text AS type_kind,
       et.typname::text AS element_name,
       (CASE WHEN t.typtype = 'd' THEN t.typtypmod ELSE a.atttypmod END)::int8 AS typmod
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
JOIN pg_type t ON t.oid = a.atttypid
JOIN pg_type bt ON bt.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END
LEFT JOIN pg_type et ON et.oid = bt.typelem AND bt.typcategory = 'A'
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f')
  AND NOT c.relispartition
  AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
  AND n.nspname NOT LIKE 'pg\_temp\_%' AND n.nspname NOT LIKE 'pg\_toast\_temp\_%'
ORDER BY 1, 2, a.attnum";

#[async_trait]
impl Source for PgSource {
    async fn test(&self) -> Result<TestOutcome> {
        with_backoff("testing a PostgreSQL connection", || async {
            let start = Instant::now();
            let mut conn = self.connect_once().await?;
            let version: String = sqlx::query_scalar("SHOW server_version")
                .fetch_one(&mut conn)
                .await
                .map_err(|e| self.endpoint.classify(&e))?;
            let latency = start.elapsed();
            let _ = conn.close().await;
            Ok(TestOutcome {
                server_version: format!("PostgreSQL {version}"),
                latency,
            })
        })
        .await
    }

    async fn discover(&self) -> Result<Vec<TableRecord>> {
        let rows = with_backoff("discovering PostgreSQL tables", || async {
            sqlx::query(DISCOVER)
                .fetch_all(&self.pool)
                .await
                .map_err(|e| self.endpoint.classify(&e))
        })
        .await?;
        let now = Utc::now();
        let mut tables: Vec<TableRecord> = Vec::new();
        let mut fields: Vec<Vec<Field>> = Vec::new();
        for row in &rows {
            let read = || -> std::result::Result<_, sqlx::Error> {
                Ok((
                    row.try_get::<String, _>("table_schema")?,
                    row.try_get::<String, _>("table_name")?,
                    row.try_get::<String, _>("table_type")?,
                    row.try_get::<Option<i64>, _>("row_estimate")?,
                    row.try_get::<String, _>("column_name")?,
                    row.try_get::<i64, _>("ordinal_position")?,
                    row.try_get::<bool, _>("is_nullable")?,
                    row.try_get::<String, _>("source_type")?,
                    PgColumnType {
                        name: row.try_get("type_name")?,
                        kind: row.try_get("type_kind")?,
                        element: row.try_get("element_name")?,
                        typmod: row.try_get::<i64, _>("typmod")? as i32,
                    },
                ))
            };
            let (
                schema,
                name,
                table_type,
                row_estimate,
                column,
                position,
                nullable,
                source_type,
                pg_type,
            ) = read().map_err(|e| self.endpoint.classify(&e))?;
            let is_new_table = tables
                .last()
                .is_none_or(|t| t.schema != schema || t.name != name);
            if is_new_table {
                tables.push(TableRecord {
                    schema,
                    name,
                    table_type,
                    row_estimate,
                    arrow_schema: None,
                    discovered_at: now,
                    fetch_count: 0,
                    columns: Vec::new(),
                });
                fields.push(Vec::new());
            }
            let arrow = arrow_type(&pg_type, false);
            let (precision, scale) = match (pg_type.name.as_str(), pg_type.element.is_none()) {
                ("numeric", true) => numeric_precision_scale(pg_type.typmod)
                    .map_or((None, None), |(p, s)| {
                        (Some(i64::from(p)), Some(i64::from(s)))
                    }),
                _ => (None, None),
            };
            let table = tables.last_mut().expect("pushed above");
            table.columns.push(ColumnRecord {
                name: column.clone(),
                ordinal_position: position,
                source_type,
                numeric_precision: precision,
                numeric_scale: scale,
                is_nullable: nullable,
                arrow_type: arrow.to_string(),
            });
            fields
                .last_mut()
                .expect("pushed above")
                .push(Field::new(column, arrow, nullable));
        }
        for (table, fields) in tables.iter_mut().zip(fields) {
            table.arrow_schema = Some(crate::cache::schema_to_json(&Schema::new(fields)));
        }
        Ok(tables)
    }

    async fn fetch(&self, request: &FetchRequest, sink: mpsc::Sender<RecordBatch>) -> Result<()> {
        let columns = request
            .arrow_schema
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| {
                wire_cast(f.data_type())
                    .map(|cast| format!("{}::{cast}", quote_ident(f.name())))
                    .ok_or_else(|| {
                        request.error(
                            Some(i),
                            format!("an Arrow type ({}) Quarry cannot fetch", f.data_type()),
                        )
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        let statement = format!(
            "COPY (SELECT {} FROM {}.{}) TO STDOUT (FORMAT binary)",
            columns.join(", "),
            quote_ident(&request.schema),
            quote_ident(&request.table)
        );
        let mut decoder = CopyDecoder::new(Arc::clone(&request.arrow_schema), BATCH_ROWS)
            .map_err(|e| request.error(None, e))?;
        let mut conn = with_backoff("connecting to PostgreSQL", || async {
            self.pool
                .acquire()
                .await
                .map_err(|e| self.endpoint.classify(&e))
        })
        .await?;
        // A COPY left unread would have to be drained by the next user of the session:
        // fetch sessions are closed instead of returned to the pool.
        conn.close_on_drop();
        let mut stream = conn
            .copy_out_raw(&statement)
            .await
            .map_err(|e| self.endpoint.classify(&e))?;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| self.endpoint.classify(&e))?;
            decoder
                .feed(chunk)
                .map_err(|(column, message)| request.error(column, message))?;
            if decoder.batch_ready() {
                let batch = decoder.take_batch().map_err(|e| request.error(None, e))?;
                if let Some(batch) = batch
                    && sink.send(batch).await.is_err()
                {
                    return Ok(());
                }
            }
        }
        if !decoder.finished() {
            return Err(request.error(None, "the source ended the COPY stream early"));
        }
        if let Some(batch) = decoder.take_batch().map_err(|e| request.error(None, e))? {
            let _ = sink.send(batch).await;
        }
        Ok(())
    }
}
