//! Single flight in the process: callers that want the same key at the same
//! time share one run of the work instead of each doing it.
//!
//! A caller only ever joins a flight that has not started, so whatever it
//! gets back was begun after it arrived. `find` needs exactly that: a flight
//! already running may have read the cache before a write was acknowledged,
//! and joining it could return the value the write replaced (docs/cache.md,
//! "Single flight in the process").
//!
//! Per key there is at most a *current* flight (running) and a *next* one
//! (gathering callers, not started). A caller that finds no flight starts
//! one at once; a caller that finds one running joins the next, leading it
//! if it is the first; the next's leader starts it once the current one is
//! over. N simultaneous callers make at most two runs. A key is in the map
//! only while it has a flight, and the lock is never held across an await.

use crate::hooks::Counter;
use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::atomic::Ordering;

// The points where flights interleave: the map's lock, the id counter and the
// result channel. Under the model check (`--cfg shuttle`, docs/testing.md)
// they are shuttle's, whose scheduler then picks the order at each of them;
// the code below is the same either way.
#[cfg(not(shuttle))]
use std::sync::{Mutex, MutexGuard, atomic::AtomicU64};
#[cfg(not(shuttle))]
use tokio::sync::watch;

#[cfg(shuttle)]
use shuttle::sync::{Mutex, MutexGuard, atomic::AtomicU64};
#[cfg(shuttle)]
use shuttle_tokio::sync::watch;

/// How a caller took part in its flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// Ran the work itself.
    Leader,
    /// Got the result of a flight another caller ran.
    Member,
}

/// The flights in progress, per key.
pub(crate) struct Flights<K, T> {
    slots: Mutex<HashMap<K, Slot<T>>>,
    ids: AtomicU64,
    /// Callers that waited for another caller's flight (a test hook).
    waits: Counter,
}

struct Slot<T> {
    current: Option<Flight<T>>,
    next: Option<Flight<T>>,
}

/// A flight as the map knows it: members subscribe to its result here.
struct Flight<T> {
    id: u64,
    result: watch::Receiver<Option<T>>,
}

/// What a caller arriving at a key does.
enum Joined<'a, K: Eq + Hash, T> {
    /// Runs a flight, after `running` is over when there is one.
    Lead(Lead<'a, K, T>, Option<watch::Receiver<Option<T>>>),
    /// Waits for the result of a flight that has not started yet.
    Member(watch::Receiver<Option<T>>),
}

/// A leader's hold on its flight. Dropping it (the work is done, or the
/// leader's future was dropped or panicked) takes the flight out of the
/// map, then closes its channel: members that got no result see it closed.
struct Lead<'a, K: Eq + Hash, T> {
    flights: &'a Flights<K, T>,
    key: K,
    id: u64,
    result: watch::Sender<Option<T>>,
}

impl<K: Eq + Hash + Clone, T: Clone> Flights<K, T> {
    pub(crate) fn new() -> Self {
        Self {
            slots: Mutex::new(HashMap::new()),
            ids: AtomicU64::new(0),
            waits: Counter::default(),
        }
    }

    /// The result of `work` for `key`, run by this caller or by the leader
    /// of a flight it joined before that flight started. A member whose
    /// leader went away without a result arrives again.
    pub(crate) async fn run<F>(&self, key: &K, work: impl FnOnce() -> F) -> (T, Role)
    where
        F: Future<Output = T>,
    {
        let (lead, running) = loop {
            match self.join(key) {
                Joined::Lead(lead, running) => break (lead, running),
                Joined::Member(mut result) => {
                    self.waits.bump();
                    let shared = result
                        .wait_for(Option::is_some)
                        .await
                        .ok()
                        .and_then(|value| value.clone());
                    if let Some(value) = shared {
                        return (value, Role::Member);
                    }
                }
            }
        };
        if let Some(mut running) = running {
            self.waits.bump();
            // Over with a result, or closed without one: either way it is done.
            let _ = running.wait_for(Option::is_some).await;
            self.promote(key, lead.id);
        }
        let value = work().await;
        lead.result.send_replace(Some(value.clone()));
        (value, Role::Leader)
    }

    fn join(&self, key: &K) -> Joined<'_, K, T> {
        let mut slots = lock(&self.slots);
        let slot = slots.entry(key.clone()).or_insert(Slot {
            current: None,
            next: None,
        });
        if let Some(next) = &slot.next {
            return Joined::Member(next.result.clone());
        }
        let id = self.ids.fetch_add(1, Ordering::Relaxed);
        let (sender, receiver) = watch::channel(None);
        let flight = Some(Flight {
            id,
            result: receiver,
        });
        let running = match &slot.current {
            Some(current) => {
                slot.next = flight;
                Some(current.result.clone())
            }
            None => {
                slot.current = flight;
                None
            }
        };
        let lead = Lead {
            flights: self,
            key: key.clone(),
            id,
            result: sender,
        };
        Joined::Lead(lead, running)
    }

    /// The next flight `id` becomes the current one: from here on, callers
    /// arriving gather for a new next flight.
    fn promote(&self, key: &K, id: u64) {
        let mut slots = lock(&self.slots);
        if let Some(slot) = slots.get_mut(key)
            && slot.next.as_ref().is_some_and(|next| next.id == id)
        {
            slot.current = slot.next.take();
        }
    }

    /// Callers so far that waited for another caller's flight.
    #[cfg(feature = "test-hooks")]
    pub(crate) fn waits(&self) -> u64 {
        self.waits.get()
    }

    #[cfg(test)]
    fn keys(&self) -> usize {
        lock(&self.slots).len()
    }
}

impl<K: Eq + Hash, T> Flights<K, T> {
    /// Takes flight `id` out of the map, and the key when it has no other.
    fn leave(&self, key: &K, id: u64) {
        let mut slots = lock(&self.slots);
        let Some(slot) = slots.get_mut(key) else {
            return;
        };
        for flight in [&mut slot.current, &mut slot.next] {
            if flight.as_ref().is_some_and(|flight| flight.id == id) {
                *flight = None;
            }
        }
        if slot.current.is_none() && slot.next.is_none() {
            slots.remove(key);
        }
    }
}

impl<K: Eq + Hash, T> Drop for Lead<'_, K, T> {
    fn drop(&mut self) {
        self.flights.leave(&self.key, self.id);
    }
}

/// A poisoned lock only means a panic elsewhere; the map is still usable.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(all(test, shuttle))]
mod shuttle_tests;

#[cfg(all(test, not(shuttle)))]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicU32;
    use tokio::sync::Notify;

    /// Lets spawned tasks of the current-thread runtime run until they wait.
    async fn settle() {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn a_lone_caller_gets_the_only_reference_to_its_result() {
        // Arrange
        let flights = Flights::<u32, Arc<String>>::new();

        // Act
        let (result, role) = flights
            .run(&7, || async { Arc::new("user".to_owned()) })
            .await;

        // Assert: nothing of the flight keeps it, so `find` can take the
        // body instead of copying it.
        assert_eq!(role, Role::Leader);
        assert_eq!(Arc::strong_count(&result), 1);
    }

    #[tokio::test]
    async fn callers_arriving_while_a_flight_runs_share_the_next_one_and_not_the_running_one() {
        // Arrange: each run of the work answers how many runs there were.
        let flights = Flights::<u32, u32>::new();
        let runs = AtomicU32::new(0);
        let gate = Notify::new();
        let work = || async { runs.fetch_add(1, Ordering::SeqCst) + 1 };

        // Act: the first caller's work waits at the gate while three more arrive.
        let (first, second, third, fourth, ()) = tokio::join!(
            flights.run(&7, || async {
                gate.notified().await;
                work().await
            }),
            flights.run(&7, work),
            flights.run(&7, work),
            flights.run(&7, work),
            async { gate.notify_one() },
        );

        // Assert
        assert_eq!(first, (1, Role::Leader));
        assert_eq!(second, (2, Role::Leader), "led the next flight");
        assert_eq!(third, (2, Role::Member));
        assert_eq!(fourth, (2, Role::Member));
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        assert_eq!(flights.keys(), 0, "the key left the map");
    }

    #[tokio::test]
    async fn a_flight_of_one_key_never_waits_for_another_key() {
        // Arrange
        let flights = Flights::<u32, u32>::new();
        let gate = Notify::new();

        // Act: key 1's work waits until key 2's flight is over.
        let both = tokio::time::timeout(std::time::Duration::from_secs(5), async {
            tokio::join!(
                flights.run(&1, || async {
                    gate.notified().await;
                    1
                }),
                async {
                    let other = flights.run(&2, || async { 2 }).await;
                    gate.notify_one();
                    other
                },
            )
        })
        .await;

        // Assert
        assert_eq!(both, Ok(((1, Role::Leader), (2, Role::Leader))));
    }

    #[tokio::test]
    async fn a_caller_whose_leaders_go_away_runs_the_work_itself() {
        // Arrange: a running flight (`first`), a next one led by `second`,
        // and `third` in it as a member.
        let flights = Arc::new(Flights::<u32, &str>::new());
        let gate = Arc::new(Notify::new());
        let spawn = |value: &'static str| {
            let (flights, gate) = (flights.clone(), gate.clone());
            tokio::spawn(async move {
                flights
                    .run(&7, || async move {
                        if value == "first" {
                            gate.notified().await;
                        }
                        value
                    })
                    .await
            })
        };
        let first = spawn("first");
        settle().await;
        let second = spawn("second");
        settle().await;
        let third = spawn("third");
        settle().await;

        // Act: the next flight's leader is cancelled, then the running one.
        second.abort();
        settle().await;
        first.abort();
        let third = tokio::time::timeout(std::time::Duration::from_secs(5), third).await;

        // Assert
        assert_eq!(
            third.expect("no hang").expect("task"),
            ("third", Role::Leader)
        );
        assert!(second.await.is_err_and(|error| error.is_cancelled()));
        assert_eq!(flights.keys(), 0, "the key left the map");
    }
}
