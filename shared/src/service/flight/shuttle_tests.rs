//! Single flight under a controlled scheduler: the real `Flights::run` with
//! shuttle's lock, counter and watch channel (`--cfg shuttle`), run over
//! many random and PCT schedules of a few callers of one key. What must hold
//! in each: docs/cache.md, "Single flight in the process"; the command and
//! why not an exhaustive search: docs/testing.md.
//!
//! A write acknowledged is a bump of `World::version`. The work of a flight
//! reads it as it starts, and a caller notes it as it arrives, so a caller
//! whose result is older than its arrival joined a flight already running.

use super::{Flights, Role};
use shuttle::future::{self, JoinHandle};
use shuttle::scheduler::{PctScheduler, RandomScheduler, Scheduler};
use shuttle::sync::atomic::{AtomicU64, Ordering::SeqCst};
use shuttle::{Config, MaxSteps, Runner};
use shuttle_tokio::sync::watch;
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;

const KEY: u32 = 7;
/// Fixed, so that every run explores the same schedules and a failure
/// replays; `SHUTTLE_RANDOM_SEED` picks others.
const SEED: u64 = 0x5EED_F11E;
/// Schedules per test and scheduler.
const SAMPLED: usize = 10_000;

/// What one schedule shares.
struct World {
    flights: Flights<u32, u64>,
    /// Writes acknowledged so far.
    version: AtomicU64,
    /// Runs of the work.
    runs: AtomicU64,
    /// Callers that have joined a flight, when the first work waits for
    /// `burst` of them (a burst: all arrive while the first flight runs).
    joined: watch::Sender<usize>,
    burst: usize,
}

/// What a caller noted and got.
#[derive(Debug, Clone, Copy)]
struct Found {
    arrived: u64,
    seen: u64,
    role: Role,
}

impl World {
    fn new(burst: usize) -> Arc<Self> {
        Arc::new(Self {
            flights: Flights::new(),
            version: AtomicU64::new(0),
            runs: AtomicU64::new(0),
            joined: watch::channel(0).0,
            burst,
        })
    }

    /// A flight's work: reads the version as it starts, then awaits (a
    /// leader can be dropped there, and other callers arrive meanwhile).
    async fn work(&self) -> u64 {
        let seen = self.version.load(SeqCst);
        self.runs.fetch_add(1, SeqCst);
        if self.burst > 0 {
            let mut joined = self.joined.subscribe();
            let _ = joined.wait_for(|&joined| joined >= self.burst).await;
        }
        future::yield_now().await;
        seen
    }

    /// One caller: notes the version, takes part in the key's flights, and
    /// counts itself joined once its first poll has gone through `join`.
    async fn find(self: Arc<Self>) -> Found {
        let arrived = self.version.load(SeqCst);
        let mut run = pin!(self.flights.run(&KEY, || self.work()));
        let first = std::future::poll_fn(|cx| Poll::Ready(run.as_mut().poll(cx))).await;
        self.joined.send_modify(|joined| *joined += 1);
        let (seen, role) = match first {
            Poll::Ready(found) => found,
            Poll::Pending => run.await,
        };
        Found {
            arrived,
            seen,
            role,
        }
    }

    fn spawn_finds(self: &Arc<Self>, callers: usize) -> Vec<JoinHandle<Found>> {
        (0..callers)
            .map(|_| future::spawn(self.clone().find()))
            .collect()
    }

    /// A writer acknowledging `writes` writes, one scheduling point apart.
    fn spawn_writer(self: &Arc<Self>, writes: u64) -> JoinHandle<()> {
        let world = self.clone();
        future::spawn(async move {
            for _ in 0..writes {
                world.version.fetch_add(1, SeqCst);
            }
        })
    }

    fn runs(&self) -> u64 {
        self.runs.load(SeqCst)
    }
}

/// A result never older than its caller's arrival.
fn assert_not_older(found: &Found) {
    assert!(
        found.seen >= found.arrived,
        "a caller that arrived at version {} got a result read at version {}: \
         it joined a flight started before it arrived ({found:?})",
        found.arrived,
        found.seen,
    );
}

/// Runs `scenario` over `SAMPLED` random and `SAMPLED` PCT schedules
/// (depth 3), from a fixed seed; a failure prints its schedule.
fn explore<S>(name: &str, scenario: S)
where
    S: Fn() + Send + Sync + Copy + 'static,
{
    let run = |scheduler: Box<dyn Scheduler + Send>| {
        let mut config = Config::new();
        // A caller that loops without waiting fails fast instead of at 1M.
        config.max_steps = MaxSteps::FailAfter(20_000);
        // Shuttle warns that it treats `Relaxed` as `SeqCst`: flight ids
        // only need to be unique.
        config.silence_warnings = true;
        Runner::new(scheduler, config).run(scenario)
    };
    let random = run(Box::new(RandomScheduler::new_from_seed(SEED, SAMPLED)));
    let pct = run(Box::new(PctScheduler::new_from_seed(SEED, 3, SAMPLED)));
    println!("{name}: {random} random and {pct} PCT schedules");
}

#[test]
fn a_caller_never_gets_a_result_read_before_it_arrived_while_writes_are_acknowledged() {
    explore("writes", || {
        // Arrange
        let callers = 3;
        let world = World::new(0);

        // Act: callers arrive at any point of the others' flights, while
        // two writes are acknowledged.
        let found = future::block_on(async {
            let writer = world.spawn_writer(2);
            let finds = world.spawn_finds(callers);
            writer.await.expect("writer");
            futures_util::future::join_all(finds).await
        });

        // Assert
        for found in found {
            assert_not_older(&found.expect("every caller returned"));
        }
        assert_eq!(world.flights.keys(), 0, "the key left the map");
    });
}

#[test]
fn a_burst_of_callers_is_answered_by_two_runs_and_leaves_no_one_waiting() {
    explore("burst", || {
        // Arrange: the first flight's work waits until every caller has
        // joined a flight, so all of them arrive while it runs.
        let callers = 4;
        let world = World::new(callers);

        // Act
        let found = future::block_on(async {
            let writer = world.spawn_writer(1);
            let finds = world.spawn_finds(callers);
            writer.await.expect("writer");
            futures_util::future::join_all(finds).await
        });

        // Assert: the first caller ran the current flight, the second led
        // the next one, the rest shared it.
        let found: Vec<Found> = found
            .into_iter()
            .map(|found| found.expect("every caller returned"))
            .collect();
        found.iter().for_each(assert_not_older);
        let leaders = found.iter().filter(|found| found.role == Role::Leader);
        assert_eq!(leaders.count(), 2, "{found:?}");
        assert_eq!(world.runs(), 2, "two runs for the burst");
        assert_eq!(world.flights.keys(), 0, "the key left the map");
    });
}

#[test]
fn callers_whose_leaders_are_cancelled_at_any_point_still_get_a_result() {
    explore("cancel", || {
        // Arrange
        let callers = 3;
        let world = World::new(0);

        // Act: all but the last caller are cancelled, each at a point of
        // the schedule's choosing (the aborted task drops its `run` at its
        // next await: before joining, leading or waiting).
        let (survivor, cancelled) = future::block_on(async {
            let writer = world.spawn_writer(1);
            let mut finds = world.spawn_finds(callers);
            let survivor = finds.pop().expect("a caller");
            let aborts: Vec<_> = finds.iter().map(JoinHandle::abort_handle).collect();
            let canceller = future::spawn(async move {
                for abort in aborts {
                    abort.abort();
                    future::yield_now().await;
                }
            });
            canceller.await.expect("canceller");
            writer.await.expect("writer");
            let cancelled = futures_util::future::join_all(finds).await;
            (survivor.await, cancelled)
        });

        // Assert: the survivor got a result, not an old one, whoever of the
        // others went away and when.
        assert_not_older(&survivor.expect("the survivor returned"));
        for found in cancelled.into_iter().flatten() {
            assert_not_older(&found);
        }
        assert_eq!(world.flights.keys(), 0, "the key left the map");
    });
}
