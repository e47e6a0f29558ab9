//! Errors as the HTTP API returns them: a status and `{"error": {"code", "message"}}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::model::{ErrorBody, ErrorDetail};
use crate::error::{Error, Kind};

/// What a handler returns.
pub type ApiResult<T> = std::result::Result<T, ApiError>;

/// An error response.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    field: Option<String>,
}

impl ApiError {
    /// An error with `status`, `code` and `message`.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
        }
    }

    /// 400: the request is malformed.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 404: nothing is at this address.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The body's `error` member.
    pub fn detail(&self) -> ErrorDetail {
        ErrorDetail {
            code: self.code.to_owned(),
            message: self.message.clone(),
            field: self.field.clone(),
        }
    }
}

impl From<Error> for ApiError {
    fn from(error: Error) -> Self {
        let (status, code) = match error.kind() {
            Kind::BadInput => (StatusCode::BAD_REQUEST, "bad_request"),
            Kind::Invalid => (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"),
            Kind::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            Kind::AlreadyExists => (StatusCode::CONFLICT, "conflict"),
            Kind::Unauthenticated => (StatusCode::UNAUTHORIZED, "unauthenticated"),
            Kind::PermissionDenied => (StatusCode::FORBIDDEN, "forbidden"),
            // The source is the upstream server that failed, not Quarry.
            Kind::Unavailable => (StatusCode::BAD_GATEWAY, "source_unavailable"),
            Kind::ResourceExhausted => (StatusCode::SERVICE_UNAVAILABLE, "resources_exhausted"),
            Kind::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        ApiError {
            field: error.field().map(str::to_owned),
            ..ApiError::new(status, code, error.to_string())
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            Json(ErrorBody {
                error: self.detail(),
            }),
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Basic realm=\"quarry\", Bearer"),
            );
        }
        response
    }
}
