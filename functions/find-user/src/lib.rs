//! `GET /users/{id}`: the user, through the cache; `x-cache` says how.

use lambda_http::http::{HeaderValue, StatusCode};
use lambda_http::{Body, Error, Request, Response};
use users_api::{ApiError, AppState, http};

pub async fn handle(state: &AppState, request: Request) -> Result<Response<Body>, Error> {
    http::respond(find(state, &request).await)
}

async fn find(state: &AppState, request: &Request) -> Result<Response<Body>, ApiError> {
    let found = state.users.find(http::path_id(request)?).await?;
    let mut response = http::json(StatusCode::OK, found.body);
    response.headers_mut().insert(
        http::X_CACHE,
        HeaderValue::from_static(found.cache.as_str()),
    );
    Ok(response)
}
