//! Lambda entry point for `find-user`: the state once per environment, then events.

fn main() -> Result<(), lambda_http::Error> {
    users_api::runtime::start(find_user::handle)
}
