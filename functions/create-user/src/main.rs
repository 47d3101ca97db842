//! Lambda entry point for `create-user`: the state once per environment, then events.

fn main() -> Result<(), lambda_http::Error> {
    users_api::runtime::start(create_user::handle)
}
