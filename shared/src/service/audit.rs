//! The auditor: consistency measured in production (docs/cache.md,
//! "Auditor"). Beside the consumer of the change records, it samples cached
//! users, compares each entry with Postgres, and voids, logs and counts the
//! entries that break the guarantee: a version Postgres superseded, or a
//! user it no longer has (a negative entry for a user it has), with no change
//! record younger than the bound D still waiting to void it. Which ids it
//! samples: [`sample`].
//!
//! Each batch reads the keys, then Postgres in one statement, then the keys
//! again, and judges only entries that held the very same bytes on both
//! reads: docs/cache.md says why no write in flight, fill or voiding can
//! then make it report a consistent cache. It works until the time it is
//! given, a batch a second, each bounded, and backs off when Postgres or
//! Redis fails or is slow.

mod judge;
mod sample;
#[cfg(test)]
mod tests;

pub(crate) use sample::Recent;

use super::UserService;
use crate::cache::Held;
use crate::config::AuditConfig;
use crate::error::ApiError;
use crate::hooks::Point;
use crate::telemetry::{Outbox, Unit};
use judge::{Judgment, judge, log_finding};
use lambda_http::tracing;
use sample::Walk;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// The metrics' `Function` dimension: the auditor runs in the consumer.
const FUNCTION: &str = "invalidate-cache";
/// A batch of `CACHE_AUDIT_PER_SECOND` entries this often.
const PERIOD: Duration = Duration::from_secs(1);
/// The most keys one batch reads, whatever `CACHE_AUDIT_PER_SECOND` says:
/// one statement's array and one burst of `GET`s stay small.
const BATCH_MOST: u32 = 1_000;
/// A batch slower than this backs off, as a failed one does.
const SLOW: Duration = Duration::from_millis(500);
/// The longest a batch may take, and the longest wait after failures.
const BATCH_LIMIT: Duration = Duration::from_secs(5);
const BACKOFF_MOST: Duration = Duration::from_secs(30);

/// What the auditor did in one run.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Audited {
    /// Batches that ran (failed ones included).
    pub batches: u64,
    /// Keys read (a `GET` each; those holding an entry are read again).
    pub sampled: u64,
    /// Postgres statements sent (a walk step, and one per batch that found
    /// entries).
    pub statements: u64,
    /// Entries (users and negative entries) compared with Postgres.
    pub audited: u64,
    /// Of those, entries that broke the guarantee.
    pub inconsistent: u64,
    /// Inconsistent entries voided.
    pub repaired: u64,
    /// Of the audited, entries superseded by a change whose record, younger
    /// than the bound, still waits for the consumer: not findings.
    pub pending: u64,
    /// Sampled keys guarded by writes in progress: not judged.
    pub in_flight: u64,
    /// Entries that changed while Postgres was read: not judged.
    pub changed: u64,
    /// Batches that failed or were slow, after which it backed off.
    pub failures: u64,
}

/// Sums runs (the load driver's) or batches.
impl std::ops::AddAssign for Audited {
    fn add_assign(&mut self, other: Self) {
        self.batches += other.batches;
        self.sampled += other.sampled;
        self.statements += other.statements;
        self.audited += other.audited;
        self.inconsistent += other.inconsistent;
        self.repaired += other.repaired;
        self.pending += other.pending;
        self.in_flight += other.in_flight;
        self.changed += other.changed;
        self.failures += other.failures;
    }
}

impl UserService {
    /// Audits `CACHE_AUDIT_PER_SECOND` entries a second until `until` (see
    /// the module's docs), writing per batch `CacheAudited`,
    /// `CacheInconsistent` and `CacheRepaired` to `metrics`. Returns at once
    /// when the auditor is off.
    pub async fn audit(&self, until: Instant, config: &AuditConfig, metrics: &Outbox) -> Audited {
        let mut audited = Audited::default();
        if config.per_second == 0 {
            return audited;
        }
        let mut walk = Walk::from(Uuid::new_v4());
        let mut wait = PERIOD;
        while Instant::now() < until {
            let started = Instant::now();
            let bounded = (started + BATCH_LIMIT).min(until);
            let batch = self.audit_batch(config, &mut walk, metrics, &mut audited);
            let outcome = tokio::time::timeout_at(bounded.into(), batch).await;
            audited.batches += 1;
            let healthy = match outcome {
                Ok(Ok(())) => started.elapsed() < SLOW,
                Ok(Err(error)) => {
                    log_failure(&error);
                    false
                }
                Err(_) => {
                    if Instant::now() < until {
                        tracing::warn!(limit = ?BATCH_LIMIT, "cache audit batch timed out, backing off");
                    }
                    false
                }
            };
            if healthy {
                wait = PERIOD;
            } else {
                audited.failures += 1;
                wait = (wait * 2).min(BACKOFF_MOST);
            }
            tokio::time::sleep_until((started + wait).min(until).into()).await;
        }
        audited
    }

    /// One batch: the ids to sample, the keys, Postgres, the keys again,
    /// then the verdicts, the repairs and the batch's metrics.
    async fn audit_batch(
        &self,
        config: &AuditConfig,
        walk: &mut Walk,
        metrics: &Outbox,
        total: &mut Audited,
    ) -> Result<(), ApiError> {
        let ids = self.sample_ids(config, walk, total).await?;
        total.sampled += ids.len() as u64;
        let first = self.cache.peek(&ids).await.map_err(cache_failed)?;
        let mut entries = Vec::new();
        for (id, value) in ids.into_iter().zip(first) {
            let Some(value) = value else { continue };
            match Held::of(&value) {
                Held::Writing => total.in_flight += 1,
                Held::Nothing => {}
                held => entries.push((id, value, held)),
            }
        }
        if entries.is_empty() {
            write_metrics(metrics, &Audited::default());
            return Ok(());
        }
        let ids: Vec<Uuid> = entries.iter().map(|(id, ..)| *id).collect();
        self.hooks.pass(Point::BeforeAuditQuery).await;
        total.statements += 1;
        let rows = self.store.sample(&ids).await?;
        let second = self.cache.peek(&ids).await.map_err(cache_failed)?;
        let now_ms = super::find::now_ms();
        let mut batch = Audited::default();
        let mut repairs = Vec::new();
        for ((id, value, held), again) in entries.into_iter().zip(second) {
            let row = rows.iter().find(|row| row.id == id);
            let (Some(row), true) = (row, again.as_deref() == Some(&value[..])) else {
                batch.changed += 1;
                continue;
            };
            batch.audited += 1;
            match judge(held, row, config.bound) {
                Some(Judgment::Consistent) | None => {}
                Some(Judgment::Pending) => batch.pending += 1,
                Some(Judgment::Inconsistent) => {
                    batch.inconsistent += 1;
                    log_finding(held, row, now_ms);
                    repairs.push(id);
                }
            }
        }
        let repaired = if repairs.is_empty() {
            Ok(())
        } else {
            self.cache.void(&repairs).await.map_err(cache_failed)
        };
        if repaired.is_ok() {
            batch.repaired = repairs.len() as u64;
        }
        write_metrics(metrics, &batch);
        *total += batch;
        repaired
    }

    /// The batch's ids: users the consumer voided at least the bound ago
    /// (at most half the batch), the rest from the walk; each once.
    async fn sample_ids(
        &self,
        config: &AuditConfig,
        walk: &mut Walk,
        total: &mut Audited,
    ) -> Result<Vec<Uuid>, ApiError> {
        let size = config.per_second.min(BATCH_MOST);
        let recent_most = (size - size.div_ceil(2)) as usize;
        let mut ids = self.recent.take_due(Instant::now(), recent_most);
        let walked = size - u32::try_from(ids.len()).unwrap_or(size);
        if walked > 0 {
            total.statements += 1;
            ids.extend(walk.step(&self.store, walked).await?);
        }
        ids.sort_unstable();
        ids.dedup();
        Ok(ids)
    }
}

fn cache_failed(error: crate::cache::CacheError) -> ApiError {
    ApiError::unavailable("the cache", error)
}

/// One EMF line per batch: what `docs/deploy.md`'s metric math reads.
fn write_metrics(metrics: &Outbox, batch: &Audited) {
    metrics.write_metrics(
        FUNCTION,
        &[
            ("CacheAudited", batch.audited as f64, Unit::Count),
            ("CacheInconsistent", batch.inconsistent as f64, Unit::Count),
            ("CacheRepaired", batch.repaired as f64, Unit::Count),
        ],
    );
}

fn log_failure(error: &ApiError) {
    tracing::warn!(
        error = %error,
        cause = %super::cause(error),
        "cache audit failed, backing off"
    );
}
