//! Calls into the real handlers, as the Lambda runtime would: the five of
//! the API, each response checked against the statuses `openapi.yaml`
//! documents, and the scheduled `invalidate-cache`.

use crate::contract::assert_documented;
use lambda_http::{Body, Request, Response};
use users_api::AppState;
use users_api::service::Consumed;

fn checked(route: &users_api::http::Route, response: Response<Body>) -> Response<Body> {
    assert_documented(route, response.status().as_u16());
    response
}

pub async fn create(state: &AppState, request: Request) -> Response<Body> {
    let response = create_user::handle(state, request)
        .await
        .expect("handlers never return Err");
    checked(&create_user::ROUTE, response)
}

pub async fn find(state: &AppState, request: Request) -> Response<Body> {
    let response = find_user::handle(state, request)
        .await
        .expect("handlers never return Err");
    checked(&find_user::ROUTE, response)
}

pub async fn list(state: &AppState, request: Request) -> Response<Body> {
    let response = list_users::handle(state, request)
        .await
        .expect("handlers never return Err");
    checked(&list_users::ROUTE, response)
}

pub async fn update(state: &AppState, request: Request) -> Response<Body> {
    let response = update_user::handle(state, request)
        .await
        .expect("handlers never return Err");
    checked(&update_user::ROUTE, response)
}

pub async fn delete(state: &AppState, request: Request) -> Response<Body> {
    let response = delete_user::handle(state, request)
        .await
        .expect("handlers never return Err");
    checked(&delete_user::ROUTE, response)
}

/// The five routes, as the functions declare them.
pub const ROUTES: [users_api::http::Route; 5] = [
    create_user::ROUTE,
    find_user::ROUTE,
    list_users::ROUTE,
    update_user::ROUTE,
    delete_user::ROUTE,
];

/// Runs the real `invalidate-cache` handler on the fixture `event` of
/// `events/`, as an invocation whose deadline leaves it `run_for` of work
/// (its deadline is that plus `CHANGES_STOP_BEFORE_DEADLINE_MS` from now).
pub async fn invalidate(state: &AppState, event: &str, run_for: std::time::Duration) -> Consumed {
    let event: serde_json::Value =
        serde_json::from_str(&crate::fixture(event)).expect("fixture JSON");
    let deadline = std::time::SystemTime::now() + run_for + state.changes.stop_before_deadline;
    let mut context = lambda_http::Context::default();
    context.request_id = "invalidate-test".to_owned();
    context.deadline = deadline
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after the epoch")
        .as_millis()
        .try_into()
        .expect("milliseconds fit");
    let event = lambda_http::lambda_runtime::LambdaEvent::new(event, context);
    invalidate_cache::handle(state, event)
        .await
        .expect("the consumer never returns Err")
}
