//! The verdict on one sampled entry, and the log line of a finding
//! (docs/cache.md, "Auditor").

use crate::cache::Held;
use crate::store::Sampled;
use lambda_http::tracing;
use std::time::Duration;

/// How an entry compares with its row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Judgment {
    Consistent,
    /// Superseded, but a change record within the bound will void it.
    Pending,
    Inconsistent,
}

/// Judges what a key held against its row; `None` for what is no entry.
pub(super) fn judge(held: Held, row: &Sampled, bound: Duration) -> Option<Judgment> {
    let agrees = match held {
        Held::User { version, .. } => row.version == Some(version),
        Held::NotFound => row.version.is_none(),
        Held::Writing | Held::Nothing => return None,
    };
    Some(if agrees {
        Judgment::Consistent
    } else if row.pending.is_some_and(|age| age < bound) {
        Judgment::Pending
    } else {
        Judgment::Inconsistent
    })
}

/// A finding, by id, versions and age: never the entry's body.
pub(super) fn log_finding(held: Held, row: &Sampled, now_ms: u64) {
    let postgres_version = row
        .version
        .map_or_else(|| "none".to_owned(), |v| v.to_string());
    let pending_ms = row.pending.map(|age| age.as_millis());
    match held {
        Held::User { version, stored_ms } => tracing::warn!(
            user = %row.id,
            entry_version = version,
            postgres_version,
            entry_age_ms = now_ms.saturating_sub(stored_ms),
            pending_ms = ?pending_ms,
            "inconsistent cache entry, voiding it"
        ),
        _ => tracing::warn!(
            user = %row.id,
            entry_version = "none (negative entry)",
            postgres_version,
            entry_age_ms = "unknown",
            pending_ms = ?pending_ms,
            "inconsistent cache entry, voiding it"
        ),
    }
}
