//! Lambda entry point for `update-user`: build the state once, then serve events.

use lambda_http::Error;
use users_api::AppState;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    lambda_http::tracing::init_default_subscriber();
    let state = AppState::from_env().await?;
    let state = &state;
    users_api::runtime::run(state, move |request| update_user::handle(state, request)).await
}
