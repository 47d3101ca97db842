//! `POST /users`: creates a user owned by the caller; 201 with the user, its
//! `Location` and `ETag`. Needs `users/write`. With an `Idempotency-Key`, a
//! repeat gets the first answer instead of a second user.

use lambda_http::http::StatusCode;
use lambda_http::{Body, Error, Request, Response};
use users_api::auth::Scope;
use users_api::idempotency::Idempotency;
use users_api::user::{NewUser, UserPayload};
use users_api::{ApiError, AppState, http};

pub const ROUTE: http::Route = http::Route {
    function: "create-user",
    name: "POST /users",
    method: "POST",
    path: "/users",
    statuses: &[201, 400, 401, 403, 409, 413, 415, 422, 500, 503, 504],
    scope: Scope::Write,
};

pub async fn handle(state: &AppState, request: Request) -> Result<Response<Body>, Error> {
    state.serve(&ROUTE, &request, create(state, &request)).await
}

async fn create(state: &AppState, request: &Request) -> Result<Response<Body>, ApiError> {
    let caller = state.caller(request, ROUTE.scope)?;
    let key = http::idempotency_key(request)?;
    let payload: UserPayload = http::json_body(request, &state.limits)?;
    let user = NewUser::parse(payload, &state.limits)?;
    let keyed = key.map(|key| Idempotency::new(key, ROUTE.method, "/users", request.body()));
    let respond = |user: Option<&_>| http::user_answer(StatusCode::CREATED, user, true);
    let answer = state
        .users
        .create(&caller, &user, keyed.as_ref(), &respond)
        .await?;
    http::respond(answer)
}
