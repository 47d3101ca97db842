//! Lambda entry point for `delete-user`: the state once per environment, then events.

fn main() -> Result<(), lambda_http::Error> {
    users_api::runtime::start(delete_user::handle)
}
