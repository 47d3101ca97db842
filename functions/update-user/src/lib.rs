//! `PUT /users/{id}`: replaces email and name; 200 with the updated user and
//! its new `ETag`. With `If-Match`, only if the user is still at that version
//! (412 otherwise), so two clients cannot silently overwrite each other.
//! Needs `users/write`; another owner's user is 404 without `users/admin`.
//! With an `Idempotency-Key`, a repeat gets the first answer and the version
//! moves once.

use lambda_http::http::StatusCode;
use lambda_http::{Body, Error, Request, Response};
use users_api::auth::Scope;
use users_api::idempotency::Idempotency;
use users_api::user::{NewUser, UserPayload};
use users_api::{ApiError, AppState, http};

pub const ROUTE: http::Route = http::Route {
    function: "update-user",
    name: "PUT /users/{id}",
    method: "PUT",
    path: "/users/{id}",
    statuses: &[
        200, 400, 401, 403, 404, 409, 412, 413, 415, 422, 500, 503, 504,
    ],
    scope: Scope::Write,
};

pub async fn handle(state: &AppState, request: Request) -> Result<Response<Body>, Error> {
    state.serve(&ROUTE, &request, update(state, &request)).await
}

async fn update(state: &AppState, request: &Request) -> Result<Response<Body>, ApiError> {
    let caller = state.caller(request, ROUTE.scope)?;
    let id = http::path_id(request)?;
    let key = http::idempotency_key(request)?;
    let if_match = http::if_match(request);
    let payload: UserPayload = http::json_body(request, &state.limits)?;
    let user = NewUser::parse(payload, &state.limits)?;
    let path = format!("/users/{id}");
    let keyed = key.map(|key| Idempotency::new(key, ROUTE.method, &path, request.body()));
    let respond = |user: Option<&_>| http::user_answer(StatusCode::OK, user, false);
    let answer = state
        .users
        .update(
            &caller,
            id,
            &user,
            if_match.as_deref(),
            keyed.as_ref(),
            &respond,
        )
        .await?;
    http::respond(answer)
}
