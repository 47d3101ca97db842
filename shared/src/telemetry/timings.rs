//! What one request spent in Postgres and Redis, how the cache answered it
//! and who called, recorded where it happens (the store, the cache, the
//! service, the caller's check) and collected by [`measure`] around the
//! request.
//!
//! Task-local, so requests running at once in one process never mix.

use super::CacheStatus;
use std::cell::{Cell, RefCell};
use std::time::Duration;

tokio::task_local! {
    static CURRENT: Timings;
}

#[derive(Default)]
struct Timings {
    postgres: Cell<Option<Duration>>,
    redis: Cell<Option<Duration>>,
    cache: Cell<Option<CacheStatus>>,
    subject: RefCell<Option<String>>,
}

/// What [`measure`] collected for one request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Measured {
    /// Time spent in Postgres calls, if any were made.
    pub postgres: Option<Duration>,
    /// Time spent in Redis calls, if any were made.
    pub redis: Option<Duration>,
    /// How the cache answered a `find`; `None` for the other routes.
    pub cache: Option<CacheStatus>,
    /// The verified caller's subject (the token's `sub`), once known.
    pub subject: Option<String>,
}

/// Runs `work` (one request) and returns what it recorded.
pub async fn measure<F: std::future::Future>(work: F) -> (F::Output, Measured) {
    CURRENT
        .scope(Timings::default(), async {
            let output = work.await;
            let measured = CURRENT.with(|t| Measured {
                postgres: t.postgres.get(),
                redis: t.redis.get(),
                cache: t.cache.get(),
                subject: t.subject.take(),
            });
            (output, measured)
        })
        .await
}

/// Adds `spent` to the current request's Postgres time (no-op outside [`measure`]).
pub fn record_postgres(spent: Duration) {
    let _ = CURRENT.try_with(|t| add(&t.postgres, spent));
}

/// Adds `spent` to the current request's Redis time (no-op outside [`measure`]).
pub fn record_redis(spent: Duration) {
    let _ = CURRENT.try_with(|t| add(&t.redis, spent));
}

/// Records how the cache answered the current request.
pub fn record_cache(status: CacheStatus) {
    let _ = CURRENT.try_with(|t| t.cache.set(Some(status)));
}

/// Records the current request's verified caller.
pub fn record_subject(subject: &str) {
    let _ = CURRENT.try_with(|t| *t.subject.borrow_mut() = Some(subject.to_owned()));
}

fn add(total: &Cell<Option<Duration>>, spent: Duration) {
    total.set(Some(total.get().unwrap_or_default() + spent));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_request_collects_only_what_it_recorded_itself() {
        // Arrange
        let one = async {
            record_postgres(Duration::from_millis(2));
            record_postgres(Duration::from_millis(3));
            record_cache(CacheStatus::Miss);
            record_subject("ada");
        };
        let other = async { record_redis(Duration::from_millis(1)) };

        // Act
        let ((_, first), (_, second)) = tokio::join!(measure(one), measure(other));
        record_redis(Duration::from_secs(9));

        // Assert
        assert_eq!(
            first,
            Measured {
                postgres: Some(Duration::from_millis(5)),
                redis: None,
                cache: Some(CacheStatus::Miss),
                subject: Some("ada".to_owned()),
            }
        );
        assert_eq!(
            second,
            Measured {
                redis: Some(Duration::from_millis(1)),
                ..Measured::default()
            }
        );
    }
}
