//! Calls into the five real handlers, as the Lambda runtime would. Every
//! response is checked against the statuses `openapi.yaml` documents.

use crate::contract::assert_documented;
use lambda_http::{Body, Request, Response};
use users_api::AppState;

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
