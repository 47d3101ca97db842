//! Test hooks: points where a race test parks the service, and counters (of
//! Postgres reads, for the stampede tests and the bench; of finds that
//! waited for another's flight, for the single-flight tests).
//!
//! They exist only with the `test-hooks` feature, which only `tests/` and
//! `bench/` enable. Without it [`Hooks`] and [`Counter`] are empty and every
//! call on them is a no-op the compiler removes, so call sites carry no `cfg`
//! and a release function contains none of it (`.ci/run` checks).

#[cfg(feature = "test-hooks")]
use std::sync::Arc;

/// Where the service can be parked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Point {
    /// A `find` miss between its Postgres read and its cache fill: where the
    /// classic cache-aside race happens.
    BeforeFill,
    /// An `update` or `delete` between taking its write guard and its
    /// Postgres statement.
    BeforeWrite,
    /// A write with an `Idempotency-Key` just before its transaction commits.
    BeforeCommit,
    /// The consumer of the change records between claiming a batch and
    /// voiding its keys.
    BeforeVoid,
    /// The auditor between its first read of the sampled keys and its
    /// Postgres statement.
    BeforeAuditQuery,
}

/// The pause points of one service instance.
#[derive(Clone, Default)]
pub struct Hooks {
    #[cfg(feature = "test-hooks")]
    pauses: [Option<Arc<PausePoint>>; 5],
}

impl Hooks {
    /// Waits at `point` if a test parked it; returns at once otherwise.
    #[inline(always)]
    pub(crate) async fn pass(&self, point: Point) {
        #[cfg(feature = "test-hooks")]
        if let Some(pause) = &self.pauses[point as usize] {
            pause.pass().await;
        }
        #[cfg(not(feature = "test-hooks"))]
        let _ = point;
    }

    /// Parks every caller that reaches `point` at `pause`.
    #[cfg(feature = "test-hooks")]
    pub fn pause_at(&mut self, point: Point, pause: Arc<PausePoint>) {
        self.pauses[point as usize] = Some(pause);
    }
}

/// A count shared by an instance's clones.
#[derive(Clone, Default)]
pub struct Counter {
    #[cfg(feature = "test-hooks")]
    count: Arc<std::sync::atomic::AtomicU64>,
}

impl Counter {
    #[inline(always)]
    pub(crate) fn bump(&self) {
        #[cfg(feature = "test-hooks")]
        self.count
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    #[cfg(feature = "test-hooks")]
    pub fn get(&self) -> u64 {
        self.count.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// One pause point: the service signals its arrival and waits; the test sees
/// it arrive ([`PausePoint::reached`]), does its work, and lets it go on
/// ([`PausePoint::release`]).
#[cfg(feature = "test-hooks")]
#[derive(Debug)]
pub struct PausePoint {
    reached: tokio::sync::Semaphore,
    released: tokio::sync::Semaphore,
}

#[cfg(feature = "test-hooks")]
impl Default for PausePoint {
    fn default() -> Self {
        Self {
            reached: tokio::sync::Semaphore::new(0),
            released: tokio::sync::Semaphore::new(0),
        }
    }
}

#[cfg(feature = "test-hooks")]
impl PausePoint {
    async fn pass(&self) {
        self.reached.add_permits(1);
        if let Ok(permit) = self.released.acquire().await {
            permit.forget();
        }
    }

    /// Waits until a caller has arrived at the pause point.
    pub async fn reached(&self) {
        if let Ok(permit) = self.reached.acquire().await {
            permit.forget();
        }
    }

    /// Lets one parked caller continue.
    pub fn release(&self) {
        self.released.add_permits(1);
    }
}
