//! Stopping a statement on the server when its reader goes away. Dropping the session only
//! closes the socket, and a server busy computing (a sort, an aggregate, `pg_sleep`) notices
//! that only when it next writes; so a statement whose reader is dropped before it finished
//! is cancelled from a second session: `pg_cancel_backend(pid)` on PostgreSQL, `KILL QUERY id`
//! on MySQL/MariaDB.

/// The pool a cancel goes through.
pub(crate) enum CancelVia {
    Postgres(sqlx::PgPool),
    Mysql(sqlx::MySqlPool),
}

/// Cancels one running statement when dropped, unless [`RemoteCancel::finished`] was called.
pub(crate) struct RemoteCancel {
    via: Option<CancelVia>,
    statement: String,
}

impl RemoteCancel {
    /// A guard that runs `statement` (which cancels the session's statement) on another
    /// session of `via` if dropped before `finished`.
    pub(crate) fn new(via: CancelVia, statement: String) -> Self {
        RemoteCancel {
            via: Some(via),
            statement,
        }
    }

    /// The statement ran to its end (or failed on its own): nothing to cancel.
    pub(crate) fn finished(mut self) {
        self.via = None;
    }
}

impl Drop for RemoteCancel {
    fn drop(&mut self) {
        let Some(via) = self.via.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let statement = std::mem::take(&mut self.statement);
        runtime.spawn(async move {
            let sql = sqlx::AssertSqlSafe(statement.clone());
            let result = match via {
                CancelVia::Postgres(pool) => sqlx::raw_sql(sql).execute(&pool).await.map(|_| ()),
                CancelVia::Mysql(pool) => sqlx::raw_sql(sql).execute(&pool).await.map(|_| ()),
            };
            match result {
                Ok(()) => tracing::debug!(%statement, "cancelled a statement whose reader left"),
                Err(e) => tracing::warn!(%statement, error = %e, "could not cancel a statement"),
            }
        });
    }
}
