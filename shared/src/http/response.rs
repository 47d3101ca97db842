//! Writing a response: JSON bodies, a write's answer (first or replayed),
//! ETags, and the JSON error every failure becomes.

use crate::error::ApiError;
use crate::idempotency::{Answer, Recorded};
use crate::user::User;
use lambda_http::http::{HeaderValue, StatusCode, header};
use lambda_http::{Body, Response};

/// Response header of an answer replayed from an earlier request's record.
pub const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";

/// The answer to a write that wrote `user`: `status`, the user as JSON, its
/// `ETag`, and its `Location` when `located` (a create).
pub fn user_answer(
    status: StatusCode,
    user: Option<&User>,
    located: bool,
) -> Result<Recorded, ApiError> {
    let user = user.ok_or_else(|| ApiError::Internal("the write returned no user".into()))?;
    Ok(Recorded {
        status: status.as_u16(),
        body: serde_json::to_vec(user).map_err(|error| ApiError::Internal(error.into()))?,
        location: located.then(|| format!("/users/{}", user.id)),
        etag: Some(etag_text(user.version)),
    })
}

/// The answer to a delete: 204, nothing else.
pub fn no_content() -> Recorded {
    Recorded {
        status: StatusCode::NO_CONTENT.as_u16(),
        body: Vec::new(),
        location: None,
        etag: None,
    }
}

/// The response of a write's answer; a replay says so in `Idempotent-Replayed`.
pub fn respond(answer: Answer) -> Result<Response<Body>, ApiError> {
    let Answer { recorded, replayed } = answer;
    let status =
        StatusCode::from_u16(recorded.status).map_err(|error| ApiError::Internal(error.into()))?;
    let mut response = if recorded.body.is_empty() {
        empty(status)
    } else {
        json(status, recorded.body)
    };
    let header_value = |text: String| {
        HeaderValue::try_from(text).map_err(|error| ApiError::Internal(error.into()))
    };
    let headers = response.headers_mut();
    if let Some(location) = recorded.location {
        headers.insert(header::LOCATION, header_value(location)?);
    }
    if let Some(etag) = recorded.etag {
        headers.insert(header::ETAG, header_value(etag)?);
    }
    if replayed {
        headers.insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// The strong validator of a user's representation: its row version.
pub fn etag(version: i64) -> HeaderValue {
    HeaderValue::try_from(etag_text(version)).unwrap_or_else(|_| HeaderValue::from_static("\"0\""))
}

/// `42` -> `"42"`, the ETag of version 42.
fn etag_text(version: i64) -> String {
    format!("\"{version}\"")
}

/// A JSON response from bytes that are already serialized.
pub fn json(status: StatusCode, body: Vec<u8>) -> Response<Body> {
    let body = match String::from_utf8(body) {
        Ok(text) => Body::Text(text),
        Err(error) => Body::Binary(error.into_bytes()),
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// Serializes `value` as a JSON response.
pub fn json_value<T: serde::Serialize>(
    status: StatusCode,
    value: &T,
) -> Result<Response<Body>, ApiError> {
    let body = serde_json::to_vec(value).map_err(|error| ApiError::Internal(error.into()))?;
    Ok(json(status, body))
}

pub fn empty(status: StatusCode) -> Response<Body> {
    let mut response = Response::new(Body::Empty);
    *response.status_mut() = status;
    response
}

/// The JSON error response for `error`. Server-side failures are logged here,
/// with their cause chain, and nowhere else.
pub fn error_response(error: &ApiError) -> Response<Body> {
    let status = StatusCode::from_u16(error.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if status.is_server_error() {
        lambda_http::tracing::error!(code = error.code(), error = %CauseChain(error), "request failed");
    }
    let body = serde_json::json!({ "code": error.code(), "message": error.public_message() });
    json(status, body.to_string().into_bytes())
}

/// Displays an error and its sources, `outer: inner: root`.
struct CauseChain<'a>(&'a (dyn std::error::Error + 'static));

impl std::fmt::Display for CauseChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(error) = source {
            write!(f, ": {error}")?;
            source = error.source();
        }
        Ok(())
    }
}
