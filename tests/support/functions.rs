//! Calls into the five real handlers, as the Lambda runtime would.

use lambda_http::{Body, Request, Response};
use users_api::AppState;

pub async fn create(state: &AppState, request: Request) -> Response<Body> {
    create_user::handle(state, request)
        .await
        .expect("handlers never return Err")
}

pub async fn find(state: &AppState, request: Request) -> Response<Body> {
    find_user::handle(state, request)
        .await
        .expect("handlers never return Err")
}

pub async fn list(state: &AppState, request: Request) -> Response<Body> {
    list_users::handle(state, request)
        .await
        .expect("handlers never return Err")
}

pub async fn update(state: &AppState, request: Request) -> Response<Body> {
    update_user::handle(state, request)
        .await
        .expect("handlers never return Err")
}

pub async fn delete(state: &AppState, request: Request) -> Response<Body> {
    delete_user::handle(state, request)
        .await
        .expect("handlers never return Err")
}
