//! `invalidate-cache`, started every minute by a schedule (any event will
//! do): applies the change records, which every committed change to a user
//! leaves whoever wrote it, until shortly before its invocation's deadline,
//! so that one run is nearly always listening. Answers what it did.
//! docs/cache.md, "Writers outside the API".

use lambda_http::lambda_runtime::LambdaEvent;
use lambda_http::{Error, tracing};
use users_api::AppState;
use users_api::runtime::run_until;
use users_api::service::Consumed;

pub async fn handle(
    state: &AppState,
    event: LambdaEvent<serde_json::Value>,
) -> Result<Consumed, Error> {
    let until = run_until(&event.context, state.changes.stop_before_deadline);
    let consumed = state
        .users
        .consume_changes(until, &state.changes, &state.telemetry)
        .await;
    tracing::info!(
        applied = consumed.applied,
        voided = consumed.voided,
        batches = consumed.batches,
        failures = consumed.failures,
        max_lag_ms = consumed.max_lag_ms,
        "change records applied"
    );
    Ok(consumed)
}
