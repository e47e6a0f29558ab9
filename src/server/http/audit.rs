//! `GET /audit-log`: the connection operations recorded in the store, newest first.

use axum::Json;
use axum::extract::{Query, State};
use serde::Deserialize;
use utoipa::IntoParams;

use super::AppState;
use super::error::ApiResult;
use super::model::ErrorBody;
use crate::audit::AuditRecord;

/// The most rows one call returns.
const MAX_ROWS: i64 = 10_000;

/// How many rows to return.
#[derive(Debug, Deserialize, IntoParams)]
pub struct Limit {
    /// At most this many rows, newest first (default 100, at most 10,000).
    #[param(value_type = Option<i64>)]
    pub limit: Option<String>,
}

/// Read the audit log.
#[utoipa::path(get, path = "/audit-log", tag = "server", params(Limit),
    responses(
        (status = 200, description = "The newest rows first", body = [AuditRecord]),
        (status = 400, description = "A limit out of range", body = ErrorBody),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody),
    ))]
pub async fn audit_log(
    State(app): State<AppState>,
    Query(limit): Query<Limit>,
) -> ApiResult<Json<Vec<AuditRecord>>> {
    // Read by hand, so that a bad value gets the API's JSON error, not the framework's.
    let limit = match limit.limit.as_deref() {
        None => 100,
        Some(text) => text
            .trim()
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=MAX_ROWS).contains(n))
            .ok_or_else(|| {
                crate::Error::Usage(format!(
                    "limit must be a whole number between 1 and {MAX_ROWS}, got '{text}'"
                ))
            })?,
    };
    Ok(Json(app.engine.audit_log(limit).await?))
}
