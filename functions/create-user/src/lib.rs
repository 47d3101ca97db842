//! `POST /users`: creates a user owned by the caller; 201 with the user, its
//! `Location` and `ETag`. Needs `users/write`.

use lambda_http::http::{HeaderValue, StatusCode, header};
use lambda_http::{Body, Error, Request, Response};
use users_api::auth::Scope;
use users_api::user::{NewUser, UserPayload};
use users_api::{ApiError, AppState, http};

pub const ROUTE: http::Route = http::Route {
    function: "create-user",
    name: "POST /users",
    method: "POST",
    path: "/users",
    statuses: &[201, 400, 401, 403, 409, 413, 415, 500, 503, 504],
    scope: Scope::Write,
};

pub async fn handle(state: &AppState, request: Request) -> Result<Response<Body>, Error> {
    state.serve(&ROUTE, &request, create(state, &request)).await
}

async fn create(state: &AppState, request: &Request) -> Result<Response<Body>, ApiError> {
    let caller = state.caller(request, ROUTE.scope)?;
    let payload: UserPayload = http::json_body(request, &state.limits)?;
    let user = state
        .users
        .create(&caller, &NewUser::parse(payload, &state.limits)?)
        .await?;
    let mut response = http::json_value(StatusCode::CREATED, &user)?;
    let location = HeaderValue::try_from(format!("/users/{}", user.id))
        .map_err(|error| ApiError::Internal(error.into()))?;
    response.headers_mut().insert(header::LOCATION, location);
    response
        .headers_mut()
        .insert(header::ETAG, http::etag(user.version));
    Ok(response)
}
