//! `GET /users/{id}`: the user, through the cache; `x-cache` says how (and
//! `Age` how old a stale answer is), `ETag` carries the version, and a
//! matching `If-None-Match` gets 304 without a body.
//! Needs `users/read`; another owner's user is 404 without `users/admin`.

use lambda_http::http::{HeaderValue, StatusCode, header};
use lambda_http::{Body, Error, Request, Response};
use users_api::auth::Scope;
use users_api::{ApiError, AppState, http};

pub const ROUTE: http::Route = http::Route {
    function: "find-user",
    name: "GET /users/{id}",
    method: "GET",
    path: "/users/{id}",
    statuses: &[200, 304, 400, 401, 403, 404, 500, 503, 504],
    scope: Scope::Read,
};

pub async fn handle(state: &AppState, request: Request) -> Result<Response<Body>, Error> {
    state.serve(&ROUTE, &request, find(state, &request)).await
}

async fn find(state: &AppState, request: &Request) -> Result<Response<Body>, ApiError> {
    let caller = state.caller(request, ROUTE.scope)?;
    let found = state.users.find(&caller, http::path_id(request)?).await?;
    let mut response = if http::none_match(request, found.version) {
        http::empty(StatusCode::NOT_MODIFIED)
    } else {
        http::json(StatusCode::OK, found.body)
    };
    let headers = response.headers_mut();
    headers.insert(header::ETAG, http::etag(found.version));
    headers.insert(
        http::X_CACHE,
        HeaderValue::from_static(found.cache.as_str()),
    );
    if let Some(age) = found.age {
        headers.insert(header::AGE, HeaderValue::from(age));
    }
    Ok(response)
}
