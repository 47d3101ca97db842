//! Lambda entry point for `update-user`: the state once per environment, then events.

fn main() -> Result<(), lambda_http::Error> {
    users_api::runtime::start(update_user::handle)
}
