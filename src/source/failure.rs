//! Classifies source failures into what a user can act on, and says which are transient
//! (worth a retry) and which are not (authentication, SQL errors).

use std::time::Duration;

use crate::error::{Error, FailureClass};

/// Where a failing source lives, for messages.
#[derive(Clone, Debug)]
pub struct Endpoint {
    /// The connection's name.
    pub connection: String,
    /// `host:port`, or the file path.
    pub address: String,
    /// The user logging in, if any.
    pub user: Option<String>,
    /// The database, or file.
    pub database: String,
    /// The SSH tunnel the server is reached through: a broken connection is explained by
    /// the tunnel's own failure, when it had one.
    pub tunnel: Option<std::sync::Arc<super::ssh::Tunnel>>,
}

impl Endpoint {
    /// An error of `class` with `message`.
    pub fn error(&self, class: FailureClass, message: impl Into<String>) -> Error {
        Error::Source {
            connection: self.connection.clone(),
            class,
            message: message.into(),
        }
    }

    /// One connection made outside any pool, within `timeout`, its failure classified.
    pub async fn connect<C: sqlx::Connection>(
        &self,
        options: &<C as sqlx::Connection>::Options,
        timeout: Duration,
    ) -> crate::Result<C> {
        match tokio::time::timeout(timeout, C::connect_with(options)).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(e)) => Err(self.classify(&e)),
            Err(_) => Err(self.timed_out(timeout)),
        }
    }

    /// Connects once outside `pool` while it holds no session. A pool retries a refused
    /// connection silently until its timeout and then reports only the timeout; this
    /// reports the server's own answer (refused, bad password) at once.
    pub async fn probe_if_idle<C: sqlx::Connection>(
        &self,
        pool: &sqlx::Pool<C::Database>,
        options: &<C as sqlx::Connection>::Options,
        timeout: Duration,
    ) -> crate::Result<()> {
        if pool.size() == 0 {
            let _ = self.connect::<C>(options, timeout).await?.close().await;
        }
        Ok(())
    }

    /// A pooled session for a fetch (`what`, for logs), retried within `budget`. A result
    /// left unread would have to be drained by the session's next user, so it is closed
    /// rather than returned to the pool.
    pub async fn acquire_for_fetch<C: sqlx::Connection>(
        &self,
        what: &str,
        pool: &sqlx::Pool<C::Database>,
        options: &<C as sqlx::Connection>::Options,
        timeout: Duration,
        budget: Duration,
    ) -> crate::Result<sqlx::pool::PoolConnection<C::Database>> {
        let mut conn = super::retry::with_backoff(what, budget, || async {
            self.probe_if_idle::<C>(pool, options, timeout).await?;
            pool.acquire().await.map_err(|e| self.classify(&e))
        })
        .await?;
        conn.close_on_drop();
        Ok(conn)
    }

    /// The connect timeout passed.
    pub fn timed_out(&self, timeout: Duration) -> Error {
        self.error(
            FailureClass::Timeout,
            format!(
                "timed out after {} connecting to {}; check the address and firewall, or raise \
                 connect_timeout",
                humantime::format_duration(timeout),
                self.address
            ),
        )
    }

    /// Classifies a sqlx error from connecting or querying.
    pub fn classify(&self, e: &sqlx::Error) -> Error {
        let address = &self.address;
        let user = self.user.as_deref().unwrap_or("");
        let database = &self.database;
        if let (sqlx::Error::Io(_), Some(tunnel)) = (e, &self.tunnel)
            && let Some((class, message)) = tunnel.take_failure()
        {
            return self.error(class, message);
        }
        match e {
            sqlx::Error::Io(io) => {
                let text = io.to_string();
                match io.kind() {
                    std::io::ErrorKind::ConnectionRefused => self.error(
                        FailureClass::Refused,
                        format!(
                            "connection refused by {address}; check that the server is running \
                             and accepts TCP connections on that port"
                        ),
                    ),
                    std::io::ErrorKind::TimedOut => self.error(
                        FailureClass::Timeout,
                        format!("timed out talking to {address}: {text}"),
                    ),
                    _ if text.contains("certificate")
                        || text.contains("TLS")
                        || text.contains("tls") =>
                    {
                        self.error(
                            FailureClass::Tls,
                            format!(
                                "TLS with {address} failed: {text}; check ssl_mode and \
                                 ssl_root_cert, or use ssl_mode 'disable' if the server has no TLS"
                            ),
                        )
                    }
                    _ if text.contains("lookup address")
                        || text.contains("Name or service not known")
                        || text.contains("No address associated") =>
                    {
                        let host = address
                            .rsplit_once(':')
                            .map_or(address.as_str(), |(h, _)| h);
                        self.error(
                            FailureClass::UnknownHost,
                            format!("unknown host '{host}': the name does not resolve; check the spelling of 'host'"),
                        )
                    }
                    _ => self.error(
                        FailureClass::Reset,
                        format!("the connection to {address} failed: {text}"),
                    ),
                }
            }
            sqlx::Error::Tls(tls) => self.error(
                FailureClass::Tls,
                format!(
                    "TLS with {address} failed: {tls}; check ssl_mode and ssl_root_cert, or use \
                     ssl_mode 'disable' if the server has no TLS"
                ),
            ),
            sqlx::Error::PoolTimedOut => self.error(
                FailureClass::Timeout,
                format!("timed out waiting for a connection to {address}"),
            ),
            sqlx::Error::Database(db) => {
                // MySQL's SQLSTATE is too coarse (42000 for many things): use its error number.
                let code = match db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>() {
                    Some(mysql) => mysql.number().to_string(),
                    None => db.code().map(|c| c.into_owned()).unwrap_or_default(),
                };
                let message = db.message();
                match code.as_str() {
                    // PostgreSQL invalid_password / invalid_authorization; MySQL access denied.
                    "28P01" | "28000" | "1045" | "1044" => self.error(
                        FailureClass::Authentication,
                        format!(
                            "authentication failed for user '{user}' at {address}; check 'user' \
                             and the password ({message})"
                        ),
                    ),
                    // PostgreSQL invalid_catalog_name; MySQL unknown database.
                    "3D000" | "1049" => self.error(
                        FailureClass::NoDatabase,
                        format!(
                            "database '{database}' does not exist at {address}; check 'database'"
                        ),
                    ),
                    // PostgreSQL query_canceled (statement_timeout); MySQL max_execution_time.
                    "57014" | "3024" | "1969" => self.error(
                        FailureClass::Timeout,
                        format!("the statement timed out: {message}; raise statement_timeout"),
                    ),
                    // PostgreSQL read_only_sql_transaction; MySQL ER_CANT_EXECUTE_IN_READ_ONLY_
                    // TRANSACTION; SQLITE_READONLY.
                    "25006" | "1792" | "8" => self.error(
                        FailureClass::Query,
                        format!(
                            "the statement tried to write, and Quarry's sessions are read-only: \
                             {message}. Quarry never writes to a source; run writes with the \
                             source's own client"
                        ),
                    ),
                    _ => self.error(
                        FailureClass::Query,
                        format!("the server at {address} refused a statement: {message}"),
                    ),
                }
            }
            other => {
                let text = other.to_string();
                if text.contains("TLS") || text.contains("SSL") || text.contains("tls") {
                    self.error(
                        FailureClass::Tls,
                        format!(
                            "TLS with {address} failed: {text}; check ssl_mode and ssl_root_cert"
                        ),
                    )
                } else {
                    self.error(FailureClass::Other, format!("{address}: {text}"))
                }
            }
        }
    }
}
