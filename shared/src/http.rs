//! Turning API Gateway requests into typed input and results into responses.
//!
//! Works the same for HTTP API (payload v2) and REST API (payload v1) events,
//! and for `cargo lambda watch`, whose requests may lack path parameters: the
//! id is then taken from the last segment of the path. Every error becomes a
//! JSON body `{"code": ..., "message": ...}`; server errors are logged with
//! their cause chain and answered with our own message only.

use crate::auth::{Caller, Scope};
use crate::config::Limits;
use crate::error::ApiError;
use crate::idempotency::{Answer, IdempotencyKey, Recorded};
use crate::user::User;
use lambda_http::http::{HeaderValue, StatusCode, header};
use lambda_http::request::RequestContext;
use lambda_http::{Body, Request, RequestExt, Response};
use serde::de::DeserializeOwned;
use uuid::Uuid;

/// What a function serves: its route and every status it can answer with.
/// `openapi.yaml`, `template.yaml` and the local router must say the same;
/// `tests/it/contract.rs` checks they do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub function: &'static str,
    /// `METHOD path`, as logged: the route template, never the raw path.
    pub name: &'static str,
    pub method: &'static str,
    pub path: &'static str,
    pub statuses: &'static [u16],
    /// The OAuth scope a caller needs (`security` of the operation).
    pub scope: Scope,
}

/// Response header telling where a `find` answer came from: `hit`, `miss` or `bypass`.
pub const X_CACHE: &str = "x-cache";

/// The local-only headers that name the caller (`AUTH_LOCAL_HEADERS`).
pub const X_LOCAL_SUB: &str = "x-local-sub";
pub const X_LOCAL_SCOPES: &str = "x-local-scopes";

/// The caller API Gateway verified: the `sub` claim and the scopes of the
/// authorizer context (payload 2.0: `authorizer.jwt.scopes` and the `scope`
/// claim; 1.0, a Cognito authorizer: the `scope` claim of
/// `authorizer.claims`). Without a context, 401; unless `local_headers`
/// (`AUTH_LOCAL_HEADERS`, never deployed) lets [`X_LOCAL_SUB`] and
/// [`X_LOCAL_SCOPES`] name one.
pub fn caller(request: &Request, local_headers: bool) -> Result<Caller, ApiError> {
    let verified = match request.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(context)) => context
            .authorizer
            .as_ref()
            .and_then(|authorizer| authorizer.jwt.as_ref())
            .map(|jwt| {
                let scope_claim = jwt.claims.get("scope").map(String::as_str);
                let listed = jwt.scopes.iter().flatten().map(String::as_str);
                let sub = jwt.claims.get("sub").map(String::as_str);
                Caller::new(
                    sub.unwrap_or_default(),
                    listed.chain(scope_claim.unwrap_or_default().split_whitespace()),
                )
            }),
        Some(RequestContext::ApiGatewayV1(context)) => context
            .authorizer
            .fields
            .get("claims")
            .and_then(serde_json::Value::as_object)
            .map(|claims| {
                let claim = |name| claims.get(name).and_then(serde_json::Value::as_str);
                Caller::new(
                    claim("sub").unwrap_or_default(),
                    claim("scope").unwrap_or_default().split_whitespace(),
                )
            }),
        _ => None,
    };
    // A context whose subject is empty is no caller, whatever the headers say.
    let caller = match verified {
        Some(caller) => caller,
        None if local_headers => {
            let header = |name| {
                request
                    .headers()
                    .get(name)
                    .and_then(|value| value.to_str().ok())
            };
            header(X_LOCAL_SUB).and_then(|sub| {
                Caller::new(
                    sub,
                    header(X_LOCAL_SCOPES)
                        .unwrap_or_default()
                        .split_whitespace(),
                )
            })
        }
        None => None,
    };
    caller.ok_or(ApiError::Unauthorized)
}

/// Request header naming one write of one caller; see [`idempotency_key`].
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// Response header of an answer replayed from an earlier request's record.
pub const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";

/// The request's `Idempotency-Key`, if it has one; 400 when it is malformed.
pub fn idempotency_key(request: &Request) -> Result<Option<IdempotencyKey>, ApiError> {
    request
        .headers()
        .get(IDEMPOTENCY_KEY)
        .map(|value| IdempotencyKey::parse(value.as_bytes()))
        .transpose()
}

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

/// The `{id}` of `/users/{id}`.
pub fn path_id(request: &Request) -> Result<Uuid, ApiError> {
    // The `_ref` accessors: `path_parameters()` clones the map per call.
    let raw = match request
        .path_parameters_ref()
        .and_then(|parameters| parameters.first("id"))
    {
        Some(id) => id,
        None => request
            .uri()
            .path()
            .rsplit('/')
            .find(|segment| !segment.is_empty())
            .unwrap_or_default(),
    };
    Uuid::try_parse(raw)
        .map_err(|_| ApiError::bad_request("invalid_id", "the user id in the path must be a UUID"))
}

/// The JSON body of a write: declared as JSON (else 415), within the size
/// limit (else 413), and decoding into `T` (else 400).
pub fn json_body<T: DeserializeOwned>(request: &Request, limits: &Limits) -> Result<T, ApiError> {
    let is_json = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .map(|media_type| {
            let media_type = media_type.trim().to_ascii_lowercase();
            media_type == "application/json"
                || (media_type.len() > 5
                    && media_type.starts_with("application/")
                    && media_type.ends_with("+json"))
        })
        .unwrap_or(false);
    if !is_json {
        return Err(ApiError::UnsupportedMediaType);
    }
    let bytes: &[u8] = request.body().as_ref();
    if bytes.len() > limits.max_body_bytes {
        return Err(ApiError::PayloadTooLarge {
            limit: limits.max_body_bytes,
        });
    }
    serde_json::from_slice(bytes).map_err(|error| {
        // serde_json's message names the field and position, never a value of ours.
        ApiError::bad_request("invalid_json", format!("invalid request body: {error}"))
    })
}

/// `?limit=N&cursor=C` of `GET /users`: limit 1..=`LIST_MAX_LIMIT` (default 20).
pub fn list_query(request: &Request, limits: &Limits) -> Result<(Option<Uuid>, u32), ApiError> {
    let query = request.query_string_parameters_ref();
    let first = |name| query.and_then(|query| query.first(name));
    let limit = match first("limit") {
        None => 20.min(limits.list_max_limit),
        Some(raw) => match raw.parse::<u32>() {
            Ok(limit) if (1..=limits.list_max_limit).contains(&limit) => limit,
            _ => {
                return Err(ApiError::bad_request(
                    "invalid_query",
                    format!(
                        "limit must be a whole number from 1 to {}",
                        limits.list_max_limit
                    ),
                ));
            }
        },
    };
    let cursor = match first("cursor") {
        None => None,
        Some(raw) => Some(Uuid::try_parse(raw).map_err(|_| {
            ApiError::bad_request(
                "invalid_cursor",
                "cursor must be a next_cursor value from a previous page",
            )
        })?),
    };
    Ok((cursor, limit))
}

/// The strong validator of a user's representation: its row version.
pub fn etag(version: i64) -> HeaderValue {
    HeaderValue::try_from(etag_text(version)).unwrap_or_else(|_| HeaderValue::from_static("\"0\""))
}

/// `42` -> `"42"`, the ETag of version 42.
fn etag_text(version: i64) -> String {
    format!("\"{version}\"")
}

/// Whether `If-None-Match` names `version` (or is `*`): the client's copy is
/// current and the answer is 304. Weak comparison, as RFC 9110 asks for GET.
pub fn none_match(request: &Request, version: i64) -> bool {
    let Some(header) = request.headers().get(header::IF_NONE_MATCH) else {
        return false;
    };
    let Ok(header) = header.to_str() else {
        return false;
    };
    header.split(',').map(str::trim).any(|tag| {
        tag == "*" || parse_version(tag.strip_prefix("W/").unwrap_or(tag)) == Some(version)
    })
}

/// The versions `If-Match` accepts, `None` when the header is absent or `*`
/// (any existing user). Strong comparison: a weak tag, one we never issued,
/// or a value that is not an ETag list at all matches nothing, so the write
/// answers 412; a condition the client asked for is never ignored.
pub fn if_match(request: &Request) -> Option<Vec<i64>> {
    let header = request.headers().get(header::IF_MATCH)?;
    let header = header.to_str().unwrap_or_default().trim();
    if header == "*" {
        return None;
    }
    Some(
        header
            .split(',')
            .filter_map(|tag| parse_version(tag.trim()))
            .collect(),
    )
}

/// `"42"` -> 42.
fn parse_version(tag: &str) -> Option<i64> {
    tag.strip_prefix('"')?.strip_suffix('"')?.parse().ok()
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
