//! The consumer of the change records: the guarantee for writers outside the
//! API (docs/cache.md, "Writers outside the API"). Every committed change to
//! a user leaves a record (`store/changes.rs`); this voids the user's key
//! with a write's release semantics, then deletes the record.
//!
//! It runs until the time it is given (its invocation's deadline, less a
//! margin), woken by the notification each change sends at its commit and
//! looking again every `CHANGES_RESCAN_MS` in any case, for records that a
//! consumer which died before its commit gave back. When Postgres or Redis
//! fails it keeps the records, logs, backs off and tries again.

use super::UserService;
use crate::config::ChangesConfig;
use crate::error::ApiError;
use crate::hooks::Point;
use crate::store::ChangeListener;
use crate::telemetry::{Outbox, Unit};
use lambda_http::tracing;
use std::future::Future;
use std::time::{Duration, Instant};

/// The metrics' `Function` dimension.
const FUNCTION: &str = "invalidate-cache";
/// How often the age of the oldest record still to apply is reported.
const BACKLOG_REPORT: Duration = Duration::from_secs(10);
/// The first and the longest wait after a failure.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MOST: Duration = Duration::from_secs(2);

/// What one run did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Consumed {
    /// Change records applied and deleted.
    pub applied: u64,
    /// Keys voided (a user changed twice in one batch is voided once).
    pub voided: u64,
    /// Batches claimed and committed.
    pub batches: u64,
    /// Attempts that failed (Postgres or Redis) and were retried.
    pub failures: u64,
    /// The longest time from a change's statement to its key being voided.
    pub max_lag_ms: u64,
    /// What the auditor beside it did (`audit.rs`).
    pub audit: super::Audited,
}

impl UserService {
    /// Applies change records until `until` (see the module's docs), writing
    /// their metrics to `metrics`: per batch `InvalidationLag` (the longest
    /// in the batch, from the change's statement to its key voided, in ms)
    /// and `ChangesApplied`; every few seconds `OldestChangeAge` (0 when none
    /// waits).
    pub async fn consume_changes(
        &self,
        until: Instant,
        config: &ChangesConfig,
        metrics: &Outbox,
    ) -> Consumed {
        let mut consumed = Consumed::default();
        let mut listener: Option<ChangeListener> = None;
        let mut backoff = BACKOFF_FIRST;
        let mut next_report = Instant::now();
        while Instant::now() < until {
            if listener.is_none() {
                // Listen before looking, so that no commit falls between the two.
                match bounded(until, self.store.listen_for_changes()).await {
                    Some(Ok(listening)) => listener = Some(listening),
                    Some(Err(error)) => log_failure("listen for changes", &error),
                    None => break,
                }
            }
            let drained = self.drain(until, config, metrics, &mut consumed).await;
            if Instant::now() >= next_report {
                self.report_backlog(until, metrics).await;
                next_report = Instant::now() + BACKLOG_REPORT;
            }
            if let Err(error) = drained {
                consumed.failures += 1;
                log_failure("apply changes", &error);
                // Retry after the backoff, not on the next notification.
                sleep_until((Instant::now() + backoff).min(until)).await;
                backoff = (backoff * 2).min(BACKOFF_MOST);
                continue;
            }
            backoff = BACKOFF_FIRST;
            let wake = (Instant::now() + config.rescan).min(until);
            match listener.as_mut() {
                Some(listening) => {
                    tokio::select! {
                        alive = listening.changed() => if !alive { listener = None },
                        () = sleep_until(wake) => {}
                    }
                }
                // Without a listener (it could not connect), look every rescan.
                None => sleep_until(wake).await,
            }
        }
        self.report_backlog(until + Duration::from_secs(1), metrics)
            .await;
        consumed
    }

    /// Claims, applies and deletes batches until none is left or `until`.
    async fn drain(
        &self,
        until: Instant,
        config: &ChangesConfig,
        metrics: &Outbox,
        consumed: &mut Consumed,
    ) -> Result<(), ApiError> {
        while Instant::now() < until {
            let mut batch = self.store.claim_changes(config.batch_size).await?;
            if batch.changes.is_empty() {
                return Ok(());
            }
            self.hooks.pass(Point::BeforeVoid).await;
            let users = batch.users();
            self.cache
                .void(&users)
                .await
                .map_err(|error| ApiError::unavailable("the cache", error))?;
            let voided_after = batch.claimed_at.elapsed();
            let lag = batch
                .changes
                .iter()
                .map(|change| change.age_at_claim + voided_after)
                .max()
                .unwrap_or_default();
            let applied = batch.changes.len() as u64;
            batch.commit().await?;
            if config.audit.per_second > 0 {
                // Look again once they should have stayed voided for D.
                self.recent
                    .push(&users, Instant::now() + config.audit.bound);
            }
            consumed.applied += applied;
            consumed.voided += users.len() as u64;
            consumed.batches += 1;
            let lag_ms = u64::try_from(lag.as_millis()).unwrap_or(u64::MAX);
            consumed.max_lag_ms = consumed.max_lag_ms.max(lag_ms);
            metrics.write_metrics(
                FUNCTION,
                &[
                    (
                        "InvalidationLag",
                        lag.as_secs_f64() * 1000.0,
                        Unit::Milliseconds,
                    ),
                    ("ChangesApplied", applied as f64, Unit::Count),
                ],
            );
        }
        Ok(())
    }

    /// Writes `OldestChangeAge`; a failure to read it is left to the next
    /// report (the apply loop logs Postgres failures).
    async fn report_backlog(&self, until: Instant, metrics: &Outbox) {
        if let Some(Ok(oldest)) = bounded(until, self.store.oldest_change_age()).await {
            let age = oldest.unwrap_or_default();
            metrics.write_metrics(
                FUNCTION,
                &[(
                    "OldestChangeAge",
                    age.as_secs_f64() * 1000.0,
                    Unit::Milliseconds,
                )],
            );
        }
    }
}

/// `work`, or `None` when `until` comes first.
async fn bounded<T>(until: Instant, work: impl Future<Output = T>) -> Option<T> {
    tokio::time::timeout_at(until.into(), work).await.ok()
}

async fn sleep_until(at: Instant) {
    tokio::time::sleep_until(at.into()).await;
}

fn log_failure(operation: &str, error: &ApiError) {
    tracing::warn!(
        operation,
        error = %error,
        cause = %super::cause(error),
        "change records kept, retrying"
    );
}
