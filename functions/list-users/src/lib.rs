//! `GET /users?limit=N&cursor=C`: a page of users in creation order (not
//! cached). Needs `users/admin`: every user's email is in it.

use lambda_http::http::StatusCode;
use lambda_http::{Body, Error, Request, Response};
use users_api::auth::Scope;
use users_api::{ApiError, AppState, http};

pub const ROUTE: http::Route = http::Route {
    function: "list-users",
    name: "GET /users",
    method: "GET",
    path: "/users",
    statuses: &[200, 400, 401, 403, 500, 503, 504],
    scope: Scope::Admin,
};

pub async fn handle(state: &AppState, request: Request) -> Result<Response<Body>, Error> {
    state.serve(&ROUTE, &request, list(state, &request)).await
}

async fn list(state: &AppState, request: &Request) -> Result<Response<Body>, ApiError> {
    state.caller(request, ROUTE.scope)?;
    let (cursor, limit) = http::list_query(request, &state.limits)?;
    let page = state.users.list(cursor, limit).await?;
    http::json_value(StatusCode::OK, &page)
}
