//! Reading a request: its verified caller, path id, JSON body, list query,
//! conditional headers and `Idempotency-Key`. Every refusal is an [`ApiError`].

use crate::auth::Caller;
use crate::config::Limits;
use crate::error::ApiError;
use crate::idempotency::IdempotencyKey;
use lambda_http::http::header;
use lambda_http::request::RequestContext;
use lambda_http::{Request, RequestExt};
use serde::de::DeserializeOwned;
use uuid::Uuid;

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
/// The request's `Idempotency-Key`, if it has one; 400 when it is malformed.
pub fn idempotency_key(request: &Request) -> Result<Option<IdempotencyKey>, ApiError> {
    request
        .headers()
        .get(IDEMPOTENCY_KEY)
        .map(|value| IdempotencyKey::parse(value.as_bytes()))
        .transpose()
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
