//! MySQL/MariaDB source: pooled read-only sessions in UTC, discovery from
//! `information_schema`, and a streamed `SELECT` decoded row by row into Arrow.

mod describe;
mod types;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::record_batch::RecordBatch;
use futures::TryStreamExt;
use secrecy::ExposeSecret;
use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions, MySqlRow, MySqlSslMode};
use sqlx::{AssertSqlSafe, Column, Connection, Executor, MySqlConnection, Row, TypeInfo};
use tokio::sync::mpsc;

use crate::error::Result;
use crate::source::builders::DecodeError;
use crate::source::cells::{BatchBuilder, Cell};
use crate::source::discovery::{
    DiscoveredColumn, TableCollector, TableColumnRow, attach_constraints, read_constraint_rows,
};
use crate::source::login::Login;
use crate::source::remote_cancel::{CancelVia, RemoteCancel};
use crate::source::retry::with_backoff;
use crate::source::{
    Endpoint, FetchRequest, QueryRequest, ReadTarget, ServerConfig, Source, SslMode, TestOutcome,
    forward_batch,
};
use crate::table::TableRecord;
use types::{MySqlColumnType, arrow_type, quote_ident, select_expression};

const MAX_SESSIONS: u32 = 10;

/// A MySQL or MariaDB server.
#[derive(Debug)]
pub struct MySqlSource {
    endpoint: Endpoint,
    login: Login,
    pool: MySqlPool,
    connect_timeout: Duration,
    retry_budget: Duration,
    /// The databases to discover: names or patterns with `*`.
    schemas: Vec<String>,
}

impl MySqlSource {
    /// A source for `config`; nothing connects until first use.
    pub fn new(connection: &str, config: &ServerConfig) -> Result<Self> {
        let (login, host, port) = Login::new(connection, config)?;
        let mut options = MySqlConnectOptions::new()
            .host(&host)
            .port(port)
            .database(&config.database)
            .username(&config.user)
            .charset("utf8mb4")
            .timezone(Some("+00:00".to_owned()))
            .ssl_mode(match config.ssl_mode {
                SslMode::Disable => MySqlSslMode::Disabled,
                SslMode::Prefer => MySqlSslMode::Preferred,
                SslMode::Require => MySqlSslMode::Required,
                SslMode::VerifyCa => MySqlSslMode::VerifyCa,
                SslMode::VerifyFull => MySqlSslMode::VerifyIdentity,
            });
        if let Some(password) = login.given_password() {
            options = options.password(password.expose_secret());
        }
        if let Some(cert) = &config.ssl_root_cert {
            options = options.ssl_ca(cert);
        }
        let statement_timeout = config.options.statement_timeout;
        let connect_timeout = config.options.connect_timeout;
        let pool = MySqlPoolOptions::new()
            .max_connections(MAX_SESSIONS)
            .acquire_timeout(connect_timeout)
            .after_connect(move |conn, _| {
                Box::pin(async move { prepare_session(conn, statement_timeout).await })
            })
            .connect_lazy_with(options);
        Ok(MySqlSource {
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
            schemas: if config.schemas.is_empty() {
                vec![config.database.clone()]
            } else {
                config.schemas.clone()
            },
        })
    }
}

impl MySqlSource {
    async fn connect_once(&self) -> Result<MySqlConnection> {
        let options = self.login.prepare(&self.pool).await?;
        self.endpoint.connect(&*options, self.connect_timeout).await
    }

    async fn probe_if_idle(&self) -> Result<()> {
        let options = self.login.prepare(&self.pool).await?;
        self.endpoint
            .probe_if_idle::<MySqlConnection>(&self.pool, &*options, self.connect_timeout)
            .await
    }
}

/// Makes a session read-only and applies the statement timeout (named differently by
/// MariaDB and MySQL).
async fn prepare_session(
    conn: &mut MySqlConnection,
    statement_timeout: Option<Duration>,
) -> std::result::Result<(), sqlx::Error> {
    conn.execute("SET SESSION TRANSACTION READ ONLY").await?;
    if let Some(timeout) = statement_timeout {
        let version: String = sqlx::query_scalar("SELECT CAST(VERSION() AS CHAR)")
            .fetch_one(&mut *conn)
            .await?;
        let set = if version.contains("MariaDB") {
            format!("SET SESSION max_statement_time = {}", timeout.as_secs_f64())
        } else {
            format!("SET SESSION max_execution_time = {}", timeout.as_millis())
        };
        conn.execute(AssertSqlSafe(set)).await?;
    }
    Ok(())
}

/// `query` (`DISCOVER` or `CONSTRAINTS`) for `patterns` database names or patterns
/// (`LIKE` patterns, bound once per `{schemas}`).
fn discover_query(query: &str, patterns: usize) -> String {
    let matches = vec!["c.TABLE_SCHEMA LIKE ? ESCAPE '!'"; patterns].join(" OR ");
    query.replace("{schemas}", &format!("({matches})"))
}

/// A database name or a pattern with `*` as a `LIKE` pattern that escapes with `!`.
fn like_pattern(name: &str) -> String {
    let mut pattern = String::with_capacity(name.len());
    for ch in name.chars() {
        match ch {
            '*' => pattern.push('%'),
            '%' | '_' | '!' => {
                pattern.push('!');
                pattern.push(ch);
            }
            _ => pattern.push(ch),
        }
    }
    pattern
}

const DISCOVER: &str = r"
SELECT CAST(c.TABLE_SCHEMA AS CHAR) AS table_schema,
       CAST(c.TABLE_NAME AS CHAR) AS table_name,
       CAST(t.TABLE_TYPE AS CHAR) AS table_type,
       CAST(t.TABLE_ROWS AS SIGNED) AS row_estimate,
       CAST(t.DATA_LENGTH AS SIGNED) AS byte_estimate,
       CAST(c.COLUMN_NAME AS CHAR) AS column_name,
       CAST(c.ORDINAL_POSITION AS SIGNED) AS ordinal_position,
       CAST(c.IS_NULLABLE AS CHAR) AS is_nullable,
       CAST(c.DATA_TYPE AS CHAR) AS data_type,
       CAST(c.COLUMN_TYPE AS CHAR) AS column_type,
       CAST(c.NUMERIC_PRECISION AS SIGNED) AS numeric_precision,
       CAST(c.NUMERIC_SCALE AS SIGNED) AS numeric_scale
FROM information_schema.COLUMNS c
JOIN information_schema.TABLES t
  ON t.TABLE_SCHEMA = c.TABLE_SCHEMA AND t.TABLE_NAME = c.TABLE_NAME
WHERE c.TABLE_SCHEMA NOT IN ('information_schema', 'mysql', 'performance_schema', 'sys')
  AND {schemas}
ORDER BY c.TABLE_SCHEMA, c.TABLE_NAME, c.ORDINAL_POSITION";

/// Keys, constraints and indexes: one row per column. A foreign key's own index is listed
/// too, as an index of the same name. A unique index on a column prefix still makes the
/// whole column unique. Functional indexes name no column and are left out.
const CONSTRAINTS: &str = r"
SELECT CAST(c.TABLE_SCHEMA AS CHAR) AS table_schema, CAST(c.TABLE_NAME AS CHAR) AS table_name,
       CAST(c.INDEX_NAME AS CHAR) AS constraint_name,
       CAST(CASE WHEN c.INDEX_NAME = 'PRIMARY' THEN 'PRIMARY KEY'
                 WHEN c.NON_UNIQUE = 0 THEN 'UNIQUE' ELSE 'INDEX' END AS CHAR) AS constraint_type,
       CAST(c.COLUMN_NAME AS CHAR) AS column_name,
       CAST(c.SEQ_IN_INDEX AS SIGNED) AS ordinal_position,
       CAST(NULL AS CHAR) AS referenced_schema, CAST(NULL AS CHAR) AS referenced_table,
       CAST(NULL AS CHAR) AS referenced_column
FROM information_schema.STATISTICS c
WHERE c.COLUMN_NAME IS NOT NULL
  AND c.TABLE_SCHEMA NOT IN ('information_schema', 'mysql', 'performance_schema', 'sys')
  AND {schemas}
UNION ALL
SELECT CAST(c.TABLE_SCHEMA AS CHAR), CAST(c.TABLE_NAME AS CHAR), CAST(c.CONSTRAINT_NAME AS CHAR),
       CAST('FOREIGN KEY' AS CHAR), CAST(c.COLUMN_NAME AS CHAR), CAST(c.ORDINAL_POSITION AS SIGNED),
       CAST(c.REFERENCED_TABLE_SCHEMA AS CHAR), CAST(c.REFERENCED_TABLE_NAME AS CHAR),
       CAST(c.REFERENCED_COLUMN_NAME AS CHAR)
FROM information_schema.KEY_COLUMN_USAGE c
WHERE c.REFERENCED_TABLE_NAME IS NOT NULL
  AND c.TABLE_SCHEMA NOT IN ('information_schema', 'mysql', 'performance_schema', 'sys')
  AND {schemas}";

#[async_trait]
impl Source for MySqlSource {
    async fn test(&self) -> Result<TestOutcome> {
        with_backoff("testing a MySQL connection", self.retry_budget, || async {
            let start = Instant::now();
            let mut conn = self.connect_once().await?;
            let version: String = sqlx::query_scalar("SELECT CAST(VERSION() AS CHAR)")
                .fetch_one(&mut conn)
                .await
                .map_err(|e| self.endpoint.classify(&e))?;
            let latency = start.elapsed();
            let _ = conn.close().await;
            let server_version = if version.contains("MariaDB") {
                format!("MariaDB {version}")
            } else {
                format!("MySQL {version}")
            };
            Ok(TestOutcome {
                server_version,
                latency,
            })
        })
        .await
    }

    async fn discover(&self) -> Result<Vec<TableRecord>> {
        let (rows, constraint_rows) =
            with_backoff("discovering MySQL tables", self.retry_budget, || async {
                self.probe_if_idle().await?;
                let classify = |e: sqlx::Error| self.endpoint.classify(&e);
                let mut conn = self.pool.acquire().await.map_err(classify)?;
                // Only placeholders are spliced in; the patterns are bound, once per use.
                let mut fetch = async |text: &str, uses: usize| {
                    let sql = discover_query(text, self.schemas.len());
                    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
                    for schema in std::iter::repeat_n(&self.schemas, uses).flatten() {
                        query = query.bind(like_pattern(schema));
                    }
                    query.fetch_all(&mut *conn).await.map_err(classify)
                };
                let tables = fetch(DISCOVER, 1).await?;
                Ok((tables, fetch(CONSTRAINTS, 2).await?))
            })
            .await?;
        let mut tables = TableCollector::default();
        for row in &rows {
            let read = || -> std::result::Result<_, sqlx::Error> {
                Ok((
                    TableColumnRow::read(row)?,
                    row.try_get::<String, _>("is_nullable")? == "YES",
                    MySqlColumnType {
                        data_type: row.try_get("data_type")?,
                        column_type: row.try_get("column_type")?,
                        precision: row.try_get("numeric_precision")?,
                        scale: row.try_get("numeric_scale")?,
                    },
                ))
            };
            let (common, nullable, my_type) = read().map_err(|e| self.endpoint.classify(&e))?;
            let is_view = common.table_type.eq_ignore_ascii_case("VIEW");
            let arrow = arrow_type(&my_type);
            let precision_scale = match arrow {
                DataType::Decimal128(..) | DataType::Decimal256(..) => {
                    (my_type.precision, my_type.scale)
                }
                _ => (None, None),
            };
            tables.column(
                common.schema,
                common.table,
                if is_view { "view" } else { "table" },
                if is_view {
                    (None, None)
                } else {
                    (common.row_estimate, common.byte_estimate)
                },
                DiscoveredColumn {
                    name: common.column,
                    position: common.position,
                    source_type: my_type.column_type,
                    precision_scale,
                    nullable,
                    arrow,
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
        let columns: Vec<String> = request
            .arrow_schema
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let source_type = request.source_types.get(i).map_or("", String::as_str);
                select_expression(f.name(), f.data_type(), source_type)
            })
            .collect();
        let select = format!(
            "SELECT {} FROM {}.{}",
            columns.join(", "),
            quote_ident(&request.table.schema),
            quote_ident(&request.table.table)
        );
        let request = Arc::new(request.clone());
        // An incremental read is one statement: its rows are few, and its filter uses an index.
        let partitioned = match request.filter {
            Some(_) => None,
            None => self.partition_sessions(&request).await?,
        };
        let Some((key, sessions)) = partitioned else {
            let statement = format!(
                "{select}{}",
                request.where_clause(crate::source::SqlDialect::Mysql)?
            );
            let conn = self.acquire().await?;
            return stream_rows(conn, statement, request, self.endpoint.clone(), sink).await;
        };
        let classify = |e: sqlx::Error| self.endpoint.classify(&e);
        let mut sessions = sessions;
        let (low, high): (Option<i64>, Option<i64>) = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT CAST(MIN({key}) AS SIGNED), CAST(MAX({key}) AS SIGNED) FROM {}.{}",
            quote_ident(&request.table.schema),
            quote_ident(&request.table.table)
        )))
        .fetch_one(&mut *sessions[0])
        .await
        .map_err(classify)?;
        let (Some(low), Some(high)) = (low, high) else {
            let conn = sessions.swap_remove(0);
            return stream_rows(conn, select, request, self.endpoint.clone(), sink).await;
        };
        let parts = sessions.len() as i128;
        let span = i128::from(high) - i128::from(low) + 1;
        let tasks: Vec<_> = sessions
            .into_iter()
            .enumerate()
            .map(|(i, conn)| {
                let i = i as i128;
                let from = i128::from(low) + span * i / parts;
                let to = i128::from(low) + span * (i + 1) / parts;
                // The first and last ranges are open so nothing outside [low, high] is missed.
                let mut bounds = Vec::new();
                if i > 0 {
                    bounds.push(format!("{key} >= {from}"));
                }
                if i + 1 < parts {
                    bounds.push(format!("{key} < {to}"));
                }
                let statement = format!("{select} WHERE {}", bounds.join(" AND "));
                tokio::spawn(stream_rows(
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
        let mut conn = self.acquire().await?;
        let id: u64 = sqlx::query_scalar("SELECT CONNECTION_ID()")
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| self.endpoint.classify(&e))?;
        // Dropped with this future if the query is cancelled or its client goes away.
        let cancel = RemoteCancel::new(
            CancelVia::Mysql(self.pool.clone()),
            format!("KILL QUERY {id}"),
        );
        let schema = Arc::clone(&request.arrow_schema);
        let mut builder =
            BatchBuilder::new(Arc::clone(&schema)).map_err(|e| request.error(None, e))?;
        let mut rows = sqlx::query(AssertSqlSafe(request.sql.clone())).fetch(&mut *conn);
        let result = async {
            while let Some(row) = rows
                .try_next()
                .await
                .map_err(|e| self.endpoint.classify(&e))?
            {
                append_result_row(&row, &schema, &mut builder)
                    .map_err(|(i, e)| request.error(Some(i), e))?;
                if !forward_batch(&mut builder, &sink, request, false).await? {
                    return Ok(());
                }
            }
            forward_batch(&mut builder, &sink, request, true).await?;
            Ok(())
        }
        .await;
        if !sink.is_closed() {
            cancel.finished();
        }
        result
    }

    async fn describe(&self, sql: &str) -> Result<datafusion::arrow::datatypes::SchemaRef> {
        let mut conn = self.acquire().await?;
        describe::describe(&mut conn, &self.endpoint, sql)
            .await?
            .into_schema(&self.endpoint)
    }
}

type Session = sqlx::pool::PoolConnection<sqlx::MySql>;

/// Tables smaller than this are read in one stream.
const PARTITION_MIN_BYTES: i64 = 64 << 20;
/// Most partitions read in parallel.
const MAX_PARTITIONS: usize = 4;

impl MySqlSource {
    /// A pooled session for a fetch, closed after it (an abandoned result set stays behind).
    async fn acquire(&self) -> Result<Session> {
        let options = self.login.prepare(&self.pool).await?;
        self.endpoint
            .acquire_for_fetch::<MySqlConnection>(
                "connecting to MySQL",
                &self.pool,
                &*options,
                self.connect_timeout,
                self.retry_budget,
            )
            .await
    }

    /// For a large base table with an integer primary key: the quoted key column and one
    /// session per partition, each in a transaction whose consistent snapshot was taken
    /// while a read lock kept writers out, so all partitions see the same table. `None`
    /// means one stream (small table, no integer key, one core, or no LOCK TABLES right).
    async fn partition_sessions(
        &self,
        request: &FetchRequest,
    ) -> Result<Option<(String, Vec<Session>)>> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let parts = cores.clamp(1, MAX_PARTITIONS);
        if parts < 2 {
            return Ok(None);
        }
        let mut lock = self.acquire().await?;
        let classify = |e: sqlx::Error| self.endpoint.classify(&e);
        let key: Option<(String, String, Option<i64>)> = sqlx::query_as(
            "SELECT CAST(k.COLUMN_NAME AS CHAR), CAST(c.DATA_TYPE AS CHAR), CAST(t.DATA_LENGTH AS SIGNED)
             FROM information_schema.KEY_COLUMN_USAGE k
             JOIN information_schema.COLUMNS c ON c.TABLE_SCHEMA = k.TABLE_SCHEMA
                 AND c.TABLE_NAME = k.TABLE_NAME AND c.COLUMN_NAME = k.COLUMN_NAME
             JOIN information_schema.TABLES t ON t.TABLE_SCHEMA = k.TABLE_SCHEMA
                 AND t.TABLE_NAME = k.TABLE_NAME
             WHERE k.TABLE_SCHEMA = ? AND k.TABLE_NAME = ? AND k.CONSTRAINT_NAME = 'PRIMARY'
                 AND k.ORDINAL_POSITION = 1 AND t.TABLE_TYPE = 'BASE TABLE'",
        )
        .bind(&request.table.schema)
        .bind(&request.table.table)
        .fetch_optional(&mut *lock)
        .await
        .map_err(classify)?;
        let Some((column, data_type, bytes)) = key else {
            return Ok(None);
        };
        let integer = ["tinyint", "smallint", "mediumint", "int", "bigint"]
            .contains(&data_type.to_ascii_lowercase().as_str());
        if !integer || bytes.unwrap_or(0) < PARTITION_MIN_BYTES {
            return Ok(None);
        }
        let table = format!(
            "{}.{}",
            quote_ident(&request.table.schema),
            quote_ident(&request.table.table)
        );
        if sqlx::raw_sql(AssertSqlSafe(format!("LOCK TABLES {table} READ")))
            .execute(&mut *lock)
            .await
            .is_err()
        {
            return Ok(None);
        }
        let mut sessions = Vec::with_capacity(parts);
        let mut failure = None;
        for _ in 0..parts {
            match self.acquire().await {
                Ok(mut conn) => {
                    if let Err(e) =
                        sqlx::raw_sql("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
                            .execute(&mut *conn)
                            .await
                    {
                        failure = Some(classify(e));
                        break;
                    }
                    sessions.push(conn);
                }
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        let _ = sqlx::raw_sql("UNLOCK TABLES").execute(&mut *lock).await;
        match failure {
            Some(e) => Err(e),
            None => Ok(Some((quote_ident(&column), sessions))),
        }
    }
}

/// Streams the rows of `statement` on `conn` into `sink` as batches.
async fn stream_rows(
    mut conn: Session,
    statement: String,
    request: Arc<FetchRequest>,
    endpoint: Endpoint,
    sink: mpsc::Sender<RecordBatch>,
) -> Result<()> {
    let schema = Arc::clone(&request.arrow_schema);
    let mut builder = BatchBuilder::new(Arc::clone(&schema)).map_err(|e| request.error(None, e))?;
    let types: Vec<DataType> = schema
        .fields()
        .iter()
        .map(|f| f.data_type().clone())
        .collect();
    let mut rows = sqlx::query(AssertSqlSafe(statement)).fetch(&mut *conn);
    while let Some(row) = rows.try_next().await.map_err(|e| endpoint.classify(&e))? {
        append_row(&row, &types, &mut builder).map_err(|(i, e)| request.error(Some(i), e))?;
        if !forward_batch(&mut builder, &sink, request.as_ref(), false).await? {
            return Ok(());
        }
    }
    forward_batch(&mut builder, &sink, request.as_ref(), true).await?;
    Ok(())
}

fn append_row(
    row: &MySqlRow,
    types: &[DataType],
    builder: &mut BatchBuilder,
) -> std::result::Result<(), (usize, DecodeError)> {
    // Columns are read by position with the types the select expressions guarantee, so the
    // per-value compatibility checks of `try_get` are skipped.
    for (i, data_type) in types.iter().enumerate() {
        let decode_error =
            |e: sqlx::Error| (i, format!("a value that cannot be decoded ({e})").into());
        let cell = match data_type {
            DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 => row
                .try_get_unchecked::<Option<i64>, _>(i)
                .map_err(decode_error)?
                .map_or(Cell::Null, Cell::Int),
            DataType::UInt8 | DataType::UInt16 | DataType::UInt32 | DataType::UInt64 => row
                .try_get_unchecked::<Option<u64>, _>(i)
                .map_err(decode_error)?
                .map_or(Cell::Null, Cell::UInt),
            DataType::Float32 => row
                .try_get_unchecked::<Option<f32>, _>(i)
                .map_err(decode_error)?
                .map_or(Cell::Null, Cell::Float32),
            DataType::Float64 => row
                .try_get_unchecked::<Option<f64>, _>(i)
                .map_err(decode_error)?
                .map_or(Cell::Null, Cell::Float),
            DataType::Binary => row
                .try_get_unchecked::<Option<&[u8]>, _>(i)
                .map_err(decode_error)?
                .map_or(Cell::Null, Cell::Bytes),
            DataType::Date32 | DataType::Timestamp(..) => {
                match row
                    .try_get_unchecked::<Option<&[u8]>, _>(i)
                    .map_err(decode_error)?
                {
                    None => Cell::Null,
                    Some(raw) => binary_temporal(raw).map_err(|e| (i, e.into()))?,
                }
            }
            _ => row
                .try_get_unchecked::<Option<&str>, _>(i)
                .map_err(decode_error)?
                .map_or(Cell::Null, Cell::Text),
        };
        builder.append(i, cell).map_err(|e| (i, e))?;
    }
    builder.end_row();
    Ok(())
}

/// Appends one row of a pushed-down statement: each value is read by the type the server
/// reports for its column (a `SUM` of integers is a DECIMAL, a comparison an integer), and
/// the builder converts it to the planned type exactly or says why it cannot.
fn append_result_row(
    row: &MySqlRow,
    schema: &datafusion::arrow::datatypes::SchemaRef,
    builder: &mut BatchBuilder,
) -> std::result::Result<(), (usize, DecodeError)> {
    for (i, column) in row.columns().iter().enumerate().take(schema.fields().len()) {
        let decode_error =
            |e: sqlx::Error| (i, format!("a value that cannot be decoded ({e})").into());
        let type_name = column.type_info().name();
        let integer = [
            "TINYINT",
            "SMALLINT",
            "MEDIUMINT",
            "INT",
            "BIGINT",
            "YEAR",
            "BOOLEAN",
        ]
        .iter()
        .any(|t| type_name.split(' ').next() == Some(t));
        let cell = if type_name == "NULL" {
            Cell::Null
        } else if integer && type_name.ends_with("UNSIGNED") {
            row.try_get_unchecked::<Option<u64>, _>(i)
                .map_err(decode_error)?
                .map_or(Cell::Null, Cell::UInt)
        } else if integer {
            row.try_get_unchecked::<Option<i64>, _>(i)
                .map_err(decode_error)?
                .map_or(Cell::Null, Cell::Int)
        } else if type_name == "DOUBLE" {
            row.try_get_unchecked::<Option<f64>, _>(i)
                .map_err(decode_error)?
                .map_or(Cell::Null, Cell::Float)
        } else if type_name == "FLOAT" {
            row.try_get_unchecked::<Option<f32>, _>(i)
                .map_err(decode_error)?
                .map_or(Cell::Null, Cell::Float32)
        } else if ["DATE", "DATETIME", "TIMESTAMP"].contains(&type_name) {
            match row
                .try_get_unchecked::<Option<&[u8]>, _>(i)
                .map_err(decode_error)?
            {
                None => Cell::Null,
                Some(raw) => binary_temporal(raw).map_err(|e| (i, e.into()))?,
            }
        } else if schema.field(i).data_type() == &DataType::Binary {
            row.try_get_unchecked::<Option<&[u8]>, _>(i)
                .map_err(decode_error)?
                .map_or(Cell::Null, Cell::Bytes)
        } else {
            match row
                .try_get_unchecked::<Option<&[u8]>, _>(i)
                .map_err(decode_error)?
            {
                None => Cell::Null,
                Some(raw) => Cell::Text(std::str::from_utf8(raw).map_err(|_| {
                    (
                        i,
                        format!("{type_name} bytes that are not UTF-8 text").into(),
                    )
                })?),
            }
        };
        builder.append(i, cell).map_err(|e| (i, e))?;
    }
    builder.end_row();
    Ok(())
}

/// Decodes a DATE/DATETIME/TIMESTAMP value of the binary protocol: a length byte, then
/// year (u16 LE), month, day, and optionally hour, minute, second and microseconds (u32 LE).
/// Zero, partly-zero and impossible dates ('2020-02-31' under ALLOW_INVALID_DATES) are not
/// dates and become NULL.
fn binary_temporal(raw: &[u8]) -> std::result::Result<Cell<'static>, String> {
    let bad = || format!("a date value of {} bytes that cannot be decoded", raw.len());
    let (&len, body) = raw.split_first().ok_or_else(bad)?;
    let body = body.get(..len as usize).ok_or_else(bad)?;
    if body.len() < 4 {
        return Ok(Cell::Null);
    }
    let year = u16::from_le_bytes([body[0], body[1]]);
    let (month, day) = (body[2], body[3]);
    let real_date = year != 0
        && (1..=12).contains(&month)
        && day != 0
        && (day <= 28
            || chrono::NaiveDate::from_ymd_opt(i32::from(year), u32::from(month), u32::from(day))
                .is_some());
    if !real_date {
        return Ok(Cell::Null);
    }
    let days =
        crate::source::cells::days_from_civil(i32::from(year), u32::from(month), u32::from(day));
    if body.len() == 4 {
        return Ok(Cell::Date(days));
    }
    let (hour, minute, second) = (
        i64::from(body[4]),
        i64::from(*body.get(5).ok_or_else(bad)?),
        i64::from(*body.get(6).ok_or_else(bad)?),
    );
    let micros = match body.get(7..11) {
        Some(m) => i64::from(u32::from_le_bytes([m[0], m[1], m[2], m[3]])),
        None => 0,
    };
    Ok(Cell::Timestamp(
        i64::from(days) * 86_400_000_000
            + ((hour * 60 + minute) * 60 + second) * 1_000_000
            + micros,
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn database_patterns_become_escaped_like_patterns() {
        assert_eq!(super::like_pattern("tpch_sf1"), "tpch!_sf1");
        assert_eq!(super::like_pattern("archive_*"), "archive!_%");
        assert_eq!(super::like_pattern("100%!"), "100!%!!");
    }
}
