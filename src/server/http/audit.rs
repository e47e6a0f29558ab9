//! `GET /audit-log`: the connection operations recorded in the store, newest first.

use axum::Json;
use axum::extract::{Query, State};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::error::ApiError;
use super::model::ErrorBody;

type ApiResult<T> = std::result::Result<T, ApiError>;

/// The most rows one call returns.
const MAX_ROWS: i64 = 10_000;

/// How many rows to return.
#[derive(Debug, Deserialize, IntoParams)]
pub struct Limit {
    /// At most this many rows, newest first (default 100, at most 10,000).
    #[param(value_type = Option<i64>)]
    pub limit: Option<String>,
}

/// One connection operation: who, what, when and the outcome. Never a config or secret.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditRow {
    /// When (RFC 3339).
    pub at: String,
    /// The user who asked (`local` for the embedded shell and library).
    pub actor: String,
    /// create, update, test, discover, refresh, purge, rename or drop.
    pub action: String,
    /// The connection's id, when it existed.
    pub connection_id: Option<String>,
    /// Its name, or what the caller named it.
    pub connection_name: String,
    /// ok or failed.
    pub outcome: String,
    /// The table, new name, keys changed or error message.
    pub detail: Option<String>,
}

/// Read the audit log.
#[utoipa::path(get, path = "/audit-log", tag = "server", params(Limit),
    responses(
        (status = 200, description = "The newest rows first", body = [AuditRow]),
        (status = 400, description = "A limit out of range", body = ErrorBody),
        (status = 401, description = "No valid credentials", body = ErrorBody),
    ))]
pub async fn audit_log(
    State(app): State<AppState>,
    Query(limit): Query<Limit>,
) -> ApiResult<Json<Vec<AuditRow>>> {
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
    let rows = app.engine.audit_log(limit).await?;
    Ok(Json(
        rows.into_iter()
            .map(|r| AuditRow {
                at: r.at.to_rfc3339(),
                actor: r.actor,
                action: r.action,
                connection_id: r.connection_id.map(|id| id.to_string()),
                connection_name: r.connection_name,
                outcome: r.outcome,
                detail: r.detail,
            })
            .collect(),
    ))
}
