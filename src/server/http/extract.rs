//! What handlers take from a request, with rejections in the API's error format: JSON
//! bodies (size-limited, unknown fields refused, errors naming the field) and path
//! parameters.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// The largest request body accepted; connection configs and SQL are far smaller.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// A JSON request body of type `T`.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, _state: &S) -> Result<Self, ApiError> {
        let bytes = axum::body::to_bytes(request.into_body(), MAX_BODY_BYTES)
            .await
            .map_err(|_| too_large())?;
        parse(&bytes).map(JsonBody)
    }
}

/// Path parameters of type `T`. A path that cannot be decoded addresses nothing: 404.
pub struct PathParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for PathParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(params)| PathParams(params))
            .map_err(|e| ApiError::not_found(format!("no such address: {}", e.body_text())))
    }
}

fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!(
            "the request body is larger than {} KiB; send a smaller one",
            MAX_BODY_BYTES / 1024
        ),
    )
}

/// Parses `bytes` as a `T`, naming the field at fault when it does not fit.
fn parse<T: DeserializeOwned>(bytes: &Bytes) -> Result<T, ApiError> {
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        None => {
            return Err(ApiError::bad_request(
                "the request body is empty; send a JSON object",
            ));
        }
        // serde would also read a struct from an array of its fields in order.
        Some(b'{') => {}
        Some(_) => {
            return Err(ApiError::bad_request(
                "the request body must be a JSON object ({...})",
            ));
        }
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let problem = strip_position(&inner.to_string());
        if inner.is_syntax() || inner.is_eof() {
            ApiError::bad_request(format!("the request body is not valid JSON: {problem}"))
        } else if path == "." {
            ApiError::bad_request(format!("invalid request body: {problem}"))
        } else {
            ApiError::bad_request(format!("request field '{path}': {problem}"))
        }
    })?;
    deserializer.end().map_err(|e| {
        ApiError::bad_request(format!("unexpected data after the JSON object: {e}"))
    })?;
    Ok(value)
}

/// serde_json ends messages with " at line L column C": noise for a one-line body.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::http::model::CreateConnection;

    fn message(body: &str) -> String {
        parse::<CreateConnection>(&Bytes::from(body.to_owned()))
            .unwrap_err()
            .detail()
            .message
    }

    #[test]
    fn errors_name_the_field() {
        let m = message(r#"{"name": 5, "source_type": "sqlite", "config": {}}"#);
        assert!(
            m.contains("'name'") && m.contains("expected a string"),
            "{m}"
        );
        let m = message(r#"{"name": "a", "source_type": "sqlite", "config": {}, "x": 1}"#);
        assert!(m.contains("unknown field `x`"), "{m}");
        let m = message(r#"{"name": "a", "config": {}}"#);
        assert!(m.contains("missing field `source_type`"), "{m}");
        let m = message(r#"{"name": "a""#);
        assert!(m.contains("not valid JSON"), "{m}");
        assert!(message("").contains("empty"));
        let array = message(r#"["a", "sqlite", {}]"#);
        assert!(array.contains("must be a JSON object"), "{array}");
    }
}
