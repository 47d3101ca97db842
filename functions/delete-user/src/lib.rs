//! `DELETE /users/{id}`: 204 when the user existed, 404 otherwise; with
//! `If-Match`, only if the user is still at that version (412 otherwise).
//! Needs `users/write`; another owner's user is 404 without `users/admin`.
//! With an `Idempotency-Key`, a repeat of a delete that succeeded is 204 again.

use lambda_http::{Body, Error, Request, Response};
use users_api::auth::Scope;
use users_api::idempotency::Idempotency;
use users_api::{ApiError, AppState, http};

pub const ROUTE: http::Route = http::Route {
    function: "delete-user",
    name: "DELETE /users/{id}",
    method: "DELETE",
    path: "/users/{id}",
    statuses: &[204, 400, 401, 403, 404, 409, 412, 422, 500, 503, 504],
    scope: Scope::Write,
};

pub async fn handle(state: &AppState, request: Request) -> Result<Response<Body>, Error> {
    state.serve(&ROUTE, &request, delete(state, &request)).await
}

async fn delete(state: &AppState, request: &Request) -> Result<Response<Body>, ApiError> {
    let caller = state.caller(request, ROUTE.scope)?;
    let id = http::path_id(request)?;
    let key = http::idempotency_key(request)?;
    let if_match = http::if_match(request);
    let path = format!("/users/{id}");
    let keyed = key.map(|key| Idempotency::new(key, ROUTE.method, &path, &[]));
    let respond = |_: Option<&_>| Ok(http::no_content());
    let answer = state
        .users
        .delete(&caller, id, if_match.as_deref(), keyed.as_ref(), &respond)
        .await?;
    http::respond(answer)
}
