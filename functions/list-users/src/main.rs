//! Lambda entry point for `list-users`: the state once per environment, then events.

fn main() -> Result<(), lambda_http::Error> {
    users_api::runtime::start(list_users::handle)
}
