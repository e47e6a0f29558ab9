//! PostgreSQL source: pooled read-only sessions, discovery from the system catalogs, and
//! fetch through binary `COPY ... TO STDOUT` decoded straight into Arrow.

mod copy;
mod describe;
mod types;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use datafusion::arrow::record_batch::RecordBatch;
use futures::StreamExt;
use secrecy::ExposeSecret;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgSslMode};
use sqlx::{Connection, PgConnection, Row};
use tokio::sync::mpsc;

use crate::error::Result;
use crate::source::discovery::{
    DiscoveredColumn, TableCollector, TableColumnRow, attach_constraints, read_constraint_rows,
};
use crate::source::login::Login;
use crate::source::remote_cancel::{CancelVia, RemoteCancel};
use crate::source::retry::with_backoff;
use crate::source::{
    BATCH_ROWS, Endpoint, FetchRequest, QueryRequest, ReadTarget, ServerConfig, Source, SslMode,
    TestOutcome,
};
use crate::table::TableRecord;
use copy::CopyDecoder;
use types::{PgColumnType, arrow_type, numeric_precision_scale, quote_ident, wire_cast};

const MAX_SESSIONS: u32 = 10;

/// A PostgreSQL database.
#[derive(Debug)]
pub struct PgSource {
    endpoint: Endpoint,
    login: Login,
    pool: PgPool,
    connect_timeout: Duration,
    retry_budget: Duration,
    numeric_as_float64: bool,
}

impl PgSource {
    /// A source for `config`; nothing connects until first use.
    pub fn new(connection: &str, config: &ServerConfig) -> Result<Self> {
        let (login, host, port) = Login::new(connection, config)?;
        let mut options = PgConnectOptions::new()
            .host(&host)
            .port(port)
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
        if let Some(password) = login.given_password() {
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
            .connect_lazy_with(options);
        Ok(PgSource {
            endpoint: Endpoint {
                connection: connection.to_owned(),
                address: format!("{}:{}", config.host, config.port),
                user: Some(config.user.clone()),
                database: config.database.clone(),
                tunnel: login.tunnel(),
            },
            login,
            pool,
            connect_timeout,
            retry_budget: config.options.retry_budget,
            numeric_as_float64: config.numeric_as_float64,
        })
    }

    async fn connect_once(&self) -> Result<PgConnection> {
        let options = self.login.prepare(&self.pool).await?;
        self.endpoint.connect(&*options, self.connect_timeout).await
    }

    async fn probe_if_idle(&self) -> Result<()> {
        let options = self.login.prepare(&self.pool).await?;
        self.endpoint
            .probe_if_idle::<PgConnection>(&self.pool, &*options, self.connect_timeout)
            .await
    }
}

const DISCOVER: &str = r"
SELECT n.nspname::text AS table_schema,
       c.relname::text AS table_name,
       CASE c.relkind WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view'
                      WHEN 'f' THEN 'foreign table' ELSE 'table' END AS table_type,
       CASE WHEN c.relkind IN ('r', 'p', 'm') AND c.reltuples >= 0
            THEN c.reltuples::int8 END AS row_estimate,
       CASE WHEN c.relkind = 'p'
            THEN (SELECT sum(pg_table_size(i.inhrelid))::int8 FROM pg_inherits i
                  WHERE i.inhparent = c.oid)
            WHEN c.relkind IN ('r', 'm') THEN pg_table_size(c.oid) END AS byte_estimate,
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

/// Keys, constraints and indexes: one row per column. An index that backs a constraint is
/// the constraint; an expression index is left out (it names no column), and a partial
/// unique index is a plain index (it makes only some rows unique).
const CONSTRAINTS: &str = r"
SELECT n.nspname::text AS table_schema, c.relname::text AS table_name,
       con.conname::text AS constraint_name,
       CASE con.contype WHEN 'p' THEN 'PRIMARY KEY' WHEN 'u' THEN 'UNIQUE'
                        ELSE 'FOREIGN KEY' END AS constraint_type,
       a.attname::text AS column_name, k.ord AS ordinal_position,
       rn.nspname::text AS referenced_schema, rc.relname::text AS referenced_table,
       ra.attname::text AS referenced_column
FROM pg_constraint con
JOIN pg_class c ON c.oid = con.conrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
CROSS JOIN LATERAL unnest(con.conkey) WITH ORDINALITY AS k(attnum, ord)
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum
LEFT JOIN pg_class rc ON rc.oid = con.confrelid
LEFT JOIN pg_namespace rn ON rn.oid = rc.relnamespace
LEFT JOIN pg_attribute ra ON ra.attrelid = con.confrelid AND ra.attnum = con.confkey[k.ord]
WHERE con.contype IN ('p', 'u', 'f') AND NOT c.relispartition
  AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
  AND n.nspname NOT LIKE 'pg\_temp\_%' AND n.nspname NOT LIKE 'pg\_toast\_temp\_%'
UNION ALL
SELECT n.nspname::text, c.relname::text, ic.relname::text,
       CASE WHEN i.indisunique AND i.indpred IS NULL THEN 'UNIQUE' ELSE 'INDEX' END,
       a.attname::text, k.ord, NULL, NULL, NULL
FROM pg_index i
JOIN pg_class ic ON ic.oid = i.indexrelid
JOIN pg_class c ON c.oid = i.indrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum
WHERE k.ord <= i.indnkeyatts AND i.indexprs IS NULL AND NOT c.relispartition
  AND NOT EXISTS (SELECT 1 FROM pg_constraint con
                  WHERE con.conindid = i.indexrelid AND con.conrelid = i.indrelid)
  AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
  AND n.nspname NOT LIKE 'pg\_temp\_%' AND n.nspname NOT LIKE 'pg\_toast\_temp\_%'";

#[async_trait]
impl Source for PgSource {
    async fn test(&self) -> Result<TestOutcome> {
        with_backoff(
            "testing a PostgreSQL connection",
            self.retry_budget,
            || async {
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
            },
        )
        .await
    }

    async fn discover(&self) -> Result<Vec<TableRecord>> {
        let (rows, constraint_rows) = with_backoff(
            "discovering PostgreSQL tables",
            self.retry_budget,
            || async {
                self.probe_if_idle().await?;
                let classify = |e: sqlx::Error| self.endpoint.classify(&e);
                let mut conn = self.pool.acquire().await.map_err(classify)?;
                let tables = sqlx::query(DISCOVER)
                    .fetch_all(&mut *conn)
                    .await
                    .map_err(classify)?;
                let constraints = sqlx::query(CONSTRAINTS)
                    .fetch_all(&mut *conn)
                    .await
                    .map_err(classify)?;
                Ok((tables, constraints))
            },
        )
        .await?;
        let mut tables = TableCollector::default();
        for row in &rows {
            let read = || -> std::result::Result<_, sqlx::Error> {
                Ok((
                    TableColumnRow::read(row)?,
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
            let (common, nullable, source_type, pg_type) =
                read().map_err(|e| self.endpoint.classify(&e))?;
            let precision_scale = match (pg_type.name.as_str(), pg_type.element.is_none()) {
                ("numeric", true) => numeric_precision_scale(pg_type.typmod)
                    .map_or((None, None), |(p, s)| {
                        (Some(i64::from(p)), Some(i64::from(s)))
                    }),
                _ => (None, None),
            };
            tables.column(
                common.schema,
                common.table,
                &common.table_type,
                (common.row_estimate, common.byte_estimate),
                DiscoveredColumn {
                    name: common.column,
                    position: common.position,
                    source_type,
                    precision_scale,
                    nullable,
                    arrow: arrow_type(&pg_type, self.numeric_as_float64),
                },
            );
        }
        let mut tables = tables.finish();
        let constraints =
            read_constraint_rows(&constraint_rows).map_err(|e| self.endpoint.classify(&e))?;
        attach_constraints(&mut tables, constraints);
        Ok(tables)
    }

    async fn fetch(&self, request: &FetchRequest, sink: mpsc::Sender<RecordBatch>) -> Result<()> {
        let columns = request
            .arrow_schema
            .fields()
            .iter()
            .map(|f| {
                wire_cast(f.data_type())
                    .map(|cast| format!("{}::{cast}", quote_ident(f.name())))
                    .ok_or_else(|| {
                        request.error(
                            None,
                            format!(
                                "column '{}' has an Arrow type ({}) Quarry cannot fetch",
                                f.name(),
                                f.data_type()
                            ),
                        )
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        let select = format!(
            "SELECT {} FROM {}.{}",
            columns.join(", "),
            quote_ident(&request.table.schema),
            quote_ident(&request.table.table)
        );
        let mut first = self.acquire().await?;
        // An incremental read is one statement: its rows are few, and its filter uses an index.
        let ranges = if request.filter.is_some() {
            Vec::new()
        } else {
            self.partition_ranges(&mut first, request).await?
        };
        if ranges.len() <= 1 {
            let statement = format!(
                "COPY ({select}{}) TO STDOUT (FORMAT binary)",
                request.where_clause(crate::source::SqlDialect::Postgres)?
            );
            return copy_into(
                first,
                statement,
                Arc::new(request.clone()),
                self.endpoint.clone(),
                sink,
            )
            .await;
        }
        // Every partition reads the same snapshot, exported by the first session, so the
        // partitions add up to exactly one consistent copy of the table.
        let begin = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY";
        let classify = |e: sqlx::Error| self.endpoint.classify(&e);
        sqlx::raw_sql(begin)
            .execute(&mut *first)
            .await
            .map_err(classify)?;
        let snapshot: String = sqlx::query_scalar("SELECT pg_export_snapshot()")
            .fetch_one(&mut *first)
            .await
            .map_err(classify)?;
        let mut sessions = vec![first];
        for _ in 1..ranges.len() {
            let mut conn = self.acquire().await?;
            sqlx::raw_sql(begin)
                .execute(&mut *conn)
                .await
                .map_err(classify)?;
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "SET TRANSACTION SNAPSHOT '{snapshot}'"
            )))
            .execute(&mut *conn)
            .await
            .map_err(classify)?;
            sessions.push(conn);
        }
        let request = Arc::new(request.clone());
        let tasks: Vec<_> = sessions
            .into_iter()
            .zip(ranges)
            .map(|(conn, (from, to))| {
                let upper = to.map_or(String::new(), |to| format!(" AND ctid < '({to},0)'::tid"));
                let statement = format!(
                    "COPY ({select} WHERE ctid >= '({from},0)'::tid{upper}) TO STDOUT (FORMAT binary)"
                );
                // Own tasks, so partitions decode on all cores.
                tokio::spawn(copy_into(
                    conn,
                    statement,
                    Arc::clone(&request),
                    self.endpoint.clone(),
                    sink.clone(),
                ))
            })
            .collect();
        drop(sink);
        crate::source::join_partitions(tasks, request.as_ref()).await
    }

    async fn query(&self, request: &QueryRequest, sink: mpsc::Sender<RecordBatch>) -> Result<()> {
        // The statement's columns are renamed by position (its own names may repeat) and
        // cast to the wire types the decoder reads for the planned Arrow types.
        let fields = request.arrow_schema.fields();
        let casts = fields
            .iter()
            .enumerate()
            .map(|(i, f)| {
                wire_cast(f.data_type())
                    .map(|cast| format!("q.c{i}::{cast}"))
                    .ok_or_else(|| {
                        request.error(
                            Some(i),
                            format!("an Arrow type ({}) Quarry cannot read", f.data_type()),
                        )
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        let names: Vec<String> = (0..fields.len()).map(|i| format!("c{i}")).collect();
        let statement = format!(
            "COPY (SELECT {} FROM ({}) AS q({})) TO STDOUT (FORMAT binary)",
            casts.join(", "),
            request.sql,
            names.join(", ")
        );
        let mut conn = self.acquire().await?;
        let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| self.endpoint.classify(&e))?;
        // Dropped with this future if the query is cancelled or its client goes away.
        let cancel = RemoteCancel::new(
            CancelVia::Postgres(self.pool.clone()),
            format!("SELECT pg_cancel_backend({pid})"),
        );
        let result = copy_into(
            conn,
            statement,
            Arc::new(request.clone()),
            self.endpoint.clone(),
            sink.clone(),
        )
        .await;
        if !sink.is_closed() {
            cancel.finished();
        }
        result
    }

    async fn describe(&self, sql: &str) -> Result<datafusion::arrow::datatypes::SchemaRef> {
        let mut conn = self.acquire().await?;
        describe::describe(&mut conn, &self.endpoint, sql, self.numeric_as_float64)
            .await?
            .into_schema(&self.endpoint)
    }
}

impl PgSource {
    /// A pooled session for a fetch, closed after it (a COPY left unread stays behind).
    async fn acquire(&self) -> Result<sqlx::pool::PoolConnection<sqlx::Postgres>> {
        let options = self.login.prepare(&self.pool).await?;
        self.endpoint
            .acquire_for_fetch::<PgConnection>(
                "connecting to PostgreSQL",
                &self.pool,
                &*options,
                self.connect_timeout,
                self.retry_budget,
            )
            .await
    }

    /// Page ranges (`[from, to)`, the last open-ended) to read in parallel: one per core (at
    /// most 4) for plain tables large enough to gain from it, else a single range.
    async fn partition_ranges(
        &self,
        conn: &mut PgConnection,
        request: &FetchRequest,
    ) -> Result<Vec<(i64, Option<i64>)>> {
        let row = sqlx::query(
            "SELECT c.relkind::text AS kind,
                    (pg_relation_size(c.oid) / current_setting('block_size')::int8)::int8 AS pages
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = $1 AND c.relname = $2",
        )
        .bind(&request.table.schema)
        .bind(&request.table.table)
        .fetch_optional(&mut *conn)
        .await
        .map_err(|e| self.endpoint.classify(&e))?;
        let Some(row) = row else {
            return Ok(vec![(0, None)]);
        };
        let kind: String = row
            .try_get("kind")
            .map_err(|e| self.endpoint.classify(&e))?;
        let pages: i64 = row
            .try_get("pages")
            .map_err(|e| self.endpoint.classify(&e))?;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let parts = cores.clamp(1, MAX_PARTITIONS) as i64;
        if !matches!(kind.as_str(), "r" | "m") || pages < PARTITION_MIN_PAGES || parts < 2 {
            return Ok(vec![(0, None)]);
        }
        Ok((0..parts)
            .map(|i| {
                let from = pages * i / parts;
                let to = (i + 1 < parts).then(|| pages * (i + 1) / parts);
                (if i == 0 { 0 } else { from }, to)
            })
            .collect())
    }
}

/// Tables smaller than this many pages (64 MiB of 8 KiB pages) are read in one stream.
const PARTITION_MIN_PAGES: i64 = 8192;
/// Most partitions read in parallel.
const MAX_PARTITIONS: usize = 4;

/// Runs one binary COPY on `conn` and sends its rows to `sink` as batches.
async fn copy_into<R: ReadTarget>(
    mut conn: sqlx::pool::PoolConnection<sqlx::Postgres>,
    statement: String,
    request: Arc<R>,
    endpoint: Endpoint,
    sink: mpsc::Sender<RecordBatch>,
) -> Result<()> {
    let mut decoder = CopyDecoder::new(Arc::clone(request.schema()), BATCH_ROWS)
        .map_err(|e| request.error(None, e))?;
    let mut stream = conn
        .copy_out_raw(&statement)
        .await
        .map_err(|e| endpoint.classify(&e))?;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| endpoint.classify(&e))?;
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
