//! Lambda entry point for `invalidate-cache`: the state once per environment, then scheduled events.

fn main() -> Result<(), lambda_http::Error> {
    users_api::runtime::start_scheduled(invalidate_cache::handle)
}
