//! `invalidate-cache`, started every minute by a schedule (any event will
//! do): applies the change records, which every committed change to a user
//! leaves whoever wrote it, until shortly before its invocation's deadline,
//! so that one run is nearly always listening; beside it, until the same
//! time, the auditor samples the cache against Postgres and repairs what it
//! finds. Answers what both did. docs/cache.md, "Writers outside the API"
//! and "Auditor".

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
    let users = &state.users;
    let (mut consumed, audited) = tokio::join!(
        users.consume_changes(until, &state.changes, &state.telemetry),
        users.audit(until, &state.changes.audit, &state.telemetry),
    );
    // One line a run: the consumer's counts, then the auditor's (zero when
    // it is off).
    tracing::info!(
        applied = consumed.applied,
        voided = consumed.voided,
        batches = consumed.batches,
        failures = consumed.failures,
        max_lag_ms = consumed.max_lag_ms,
        audit_batches = audited.batches,
        audit_sampled = audited.sampled,
        audit_statements = audited.statements,
        audited = audited.audited,
        inconsistent = audited.inconsistent,
        repaired = audited.repaired,
        pending = audited.pending,
        in_flight = audited.in_flight,
        changed = audited.changed,
        audit_failures = audited.failures,
        "change records applied"
    );
    consumed.audit = audited;
    Ok(consumed)
}
