//! `PUT /users/{id}`: replaces email and name; 200 with the updated user.

use lambda_http::http::StatusCode;
use lambda_http::{Body, Error, Request, Response};
use users_api::user::{NewUser, UserPayload};
use users_api::{ApiError, AppState, http};

pub async fn handle(state: &AppState, request: Request) -> Result<Response<Body>, Error> {
    http::respond(update(state, &request).await)
}

async fn update(state: &AppState, request: &Request) -> Result<Response<Body>, ApiError> {
    let id = http::path_id(request)?;
    let payload: UserPayload = http::json_body(request, &state.limits)?;
    let user = state
        .users
        .update(id, &NewUser::parse(payload, &state.limits)?)
        .await?;
    http::json_value(StatusCode::OK, &user)
}
