//! What `find` does with what the cache answered: [`next_step`], the whole
//! decision, pure. docs/cache.md says why each step is safe; "Freshness,
//! fail-safe and eager refresh" there describes the times it compares.

use crate::cache::{CacheError, Cached, Lease, Lookup};
use tokio::time::Instant;

/// How often a caller waiting for another's fill asks Redis again.
pub(super) const FILL_POLL: std::time::Duration = std::time::Duration::from_millis(3);

/// When a hit refreshes its entry before the entry's freshness ends, so that
/// the other callers never wait for a fill (docs/cache.md says why the
/// threshold is the default).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum EagerRefresh {
    Off,
    /// In the last `percent` of the entry's freshness.
    Threshold {
        percent: u8,
    },
    /// XFetch (Vattani, Chierichetti and Lowenstein, VLDB 2015): when
    /// `now - delta_ms * beta * ln(draw)` reaches the end of freshness, with
    /// `draw` uniform in (0, 1] and `delta_ms` the time a refresh takes.
    XFetch {
        beta: f64,
        delta_ms: f64,
    },
}

impl EagerRefresh {
    /// `CACHE_EAGER_REFRESH_PERCENT`: 0 is off.
    pub fn from_percent(percent: u8) -> Self {
        match percent {
            0 => Self::Off,
            percent => Self::Threshold { percent },
        }
    }

    /// Whether a hit at `now_ms` of an entry stored at `stored_ms` and fresh
    /// until `fresh_until_ms` refreshes it now.
    fn due(self, now_ms: u64, stored_ms: u64, fresh_until_ms: u64, draw: f64) -> bool {
        match self {
            Self::Off => false,
            Self::Threshold { percent } => {
                let span = fresh_until_ms.saturating_sub(stored_ms);
                now_ms.saturating_add(span * u64::from(percent) / 100) >= fresh_until_ms
            }
            Self::XFetch { beta, delta_ms } => {
                now_ms as f64 - delta_ms * beta * draw.ln() >= fresh_until_ms as f64
            }
        }
    }
}

/// The settings the decision depends on.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub eager: EagerRefresh,
    /// `CACHE_FAIL_SAFE_SECONDS` > 0: entries outlive their freshness, and
    /// one past it is refreshed, or answered stale when Postgres fails. Off,
    /// Redis expires an entry when its freshness ends, so whatever is found
    /// counts as fresh (a filler's clock behind this one's aside).
    pub fail_safe: bool,
}

/// The moment of a decision: the monotonic clock for waiting, the wall
/// clock (ms since the epoch) to compare with entries' times, and a random
/// draw in (0, 1] for XFetch.
#[derive(Debug, Clone, Copy)]
pub struct Moment {
    pub now: Instant,
    pub now_ms: u64,
    pub draw: f64,
}

/// Whether a refresh runs while the entry is still fresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Eager: the entry is fresh and answered if the refresh fails.
    Early,
    /// The entry is past its freshness: answered stale if Postgres fails.
    Expired,
}

/// What `find` does next.
#[derive(Debug)]
pub enum Step {
    /// Answer the fresh entry, if the caller may see its owner's user.
    Hit(Cached),
    /// Answer 404 from the negative entry.
    NotFound,
    /// Read Postgres and fill under this lease.
    Fill(Lease),
    /// Take the entry's refresh lease, read Postgres and store the new entry.
    Refresh(Cached, Due),
    /// Another caller refreshes this entry, past its freshness: answer it
    /// as it is rather than wait.
    Stale(Cached),
    /// Another caller is filling: ask Redis again at this instant.
    WaitUntil(Instant),
    /// Read Postgres without filling (a write is in progress, or the wait
    /// for another caller's fill is over).
    ReadThrough,
    /// Redis failed: read Postgres without it.
    Bypass(CacheError),
    /// Replace this unreadable value with a lease, then go on as a miss.
    Replace(Vec<u8>),
}

/// The decision for one cache answer at `at`, given until when this caller
/// may wait for another's fill.
pub fn next_step(
    lookup: Result<Lookup, CacheError>,
    at: Moment,
    give_up_waiting: Instant,
    policy: Policy,
) -> Step {
    match lookup {
        Ok(Lookup::Hit(cached)) => {
            let fresh = !policy.fail_safe || at.now_ms < cached.fresh_until_ms;
            let refreshing = cached
                .refreshing_until_ms
                .is_some_and(|until| at.now_ms < until);
            let due = || {
                policy
                    .eager
                    .due(at.now_ms, cached.stored_ms, cached.fresh_until_ms, at.draw)
            };
            match (fresh, refreshing) {
                (true, false) if due() => Step::Refresh(cached, Due::Early),
                (true, _) => Step::Hit(cached),
                (false, true) => Step::Stale(cached),
                (false, false) => Step::Refresh(cached, Due::Expired),
            }
        }
        Ok(Lookup::NotFound) => Step::NotFound,
        Ok(Lookup::Leased(lease)) => Step::Fill(lease),
        Ok(Lookup::Filling) if at.now < give_up_waiting => {
            Step::WaitUntil((at.now + FILL_POLL).min(give_up_waiting))
        }
        Ok(Lookup::Filling | Lookup::Writing) => Step::ReadThrough,
        Ok(Lookup::Unreadable(value)) => Step::Replace(value),
        Err(error) => Step::Bypass(error),
    }
}

#[cfg(test)]
mod tests;
