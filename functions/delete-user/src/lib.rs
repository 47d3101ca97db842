//! `DELETE /users/{id}`: 204 when the user existed, 404 otherwise.

use lambda_http::http::StatusCode;
use lambda_http::{Body, Error, Request, Response};
use users_api::{ApiError, AppState, http};

pub async fn handle(state: &AppState, request: Request) -> Result<Response<Body>, Error> {
    http::respond(delete(state, &request).await)
}

async fn delete(state: &AppState, request: &Request) -> Result<Response<Body>, ApiError> {
    state.users.delete(http::path_id(request)?).await?;
    Ok(http::empty(StatusCode::NO_CONTENT))
}
