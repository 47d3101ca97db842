//! The cache protocol of docs/cache.md as a model, checked with stateright:
//! every interleaving of the steps of a small system (two finds, two writes,
//! one key), with lost replies, retries, failures, expiry, a consumer that
//! dies and a failover. The finds decide what to do next with the production
//! `next_step` (`shared/src/service/decide.rs`), on the production encoding
//! of what the model's Redis holds; the model's Redis does what the real
//! scripts do (`tests/it/model/scripts.rs` checks that on the real Redis).
//!
//! From the bottom up:
//! - [`redis`], [`encoding`], [`scenario`]: the key, the commands and
//!   scripts, the values as the real Redis holds them; the scenarios, their
//!   durations and faults;
//! - [`find`], [`write`]: the finds', writers' and consumer's state;
//! - [`trace`]: what a step did, in words, and what a replay sends;
//! - [`system`]: the whole state, time, replication and failover;
//! - [`protocol`]: how each step changes the state;
//! - here: the checker's view (initial states, steps, properties) and
//!   [`Protocol::check`];
//! - [`broken`]: the deliberately broken variants.
//!
//! docs/testing.md, "The model checker", says what is modelled and what is
//! not: what is not modelled is not checked.

pub mod broken;
pub mod encoding;
pub mod find;
pub mod protocol;
pub mod redis;
pub mod scenario;
pub mod system;
pub mod trace;
pub mod write;

pub use protocol::Protocol;
pub use scenario::{scenario_named, scenarios};

use broken::Broken;
use find::Find;
use redis::{Entry, Key, Value, blocks_fills};
use scenario::{FRESH, KEEP, Outcome};
use stateright::{Checker, HasDiscoveries, Model, Property};
use std::time::{Duration, Instant};
use system::{Action, Postgres, Redis, State, may_tick};
use trace::{Effect, Log};
use write::{Consumer, Writer};

/// The properties, by name.
pub const NO_STALE_READ: &str = "no find answers older than a write acknowledged before it started";
pub const NO_OLDER_THAN_READ: &str = "no find answers older than what it read from Postgres";
pub const KEY_FREES: &str = "once all is done and time has passed, no lease or guard is left";
pub const FILLS_AFTER_WRITE: &str = "a find answers a version written during the run";

impl Protocol {
    /// Checks every state reachable from every initial one, breadth-first
    /// (so a counterexample is a shortest one).
    pub fn check(self) -> Report {
        let started = Instant::now();
        // Stops at the first violation: breadth-first on one thread, it is
        // a shortest path to one.
        let checker = self
            .checker()
            .finish_when(HasDiscoveries::AnyFailures)
            .spawn_bfs()
            .join();
        let duration = started.elapsed();
        let discoveries = checker.discoveries();
        let mut violation = None;
        let mut examples_missing = Vec::new();
        for property in checker.model().properties() {
            let found = discoveries.get(property.name).cloned();
            match (property.name, found) {
                (FILLS_AFTER_WRITE, None) => examples_missing.push(property.name),
                (FILLS_AFTER_WRITE, Some(_)) => {}
                (name, Some(path)) if violation.is_none() => {
                    let initial = path.clone().into_states().swap_remove(0);
                    let steps = checker.model().replay(&initial, &path.into_actions());
                    violation = Some(Counterexample {
                        property: name,
                        initial,
                        steps,
                    });
                }
                _ => {}
            }
        }
        Report {
            scenario: checker.model().scenario.name,
            states: checker.unique_state_count(),
            max_depth: checker.max_depth(),
            duration,
            violation,
            examples_missing,
        }
    }
}

/// What a check found.
pub struct Report {
    pub scenario: &'static str,
    pub states: usize,
    pub max_depth: usize,
    pub duration: Duration,
    pub violation: Option<Counterexample>,
    /// `sometimes` properties with no example: the check did not reach what
    /// it should have.
    pub examples_missing: Vec<&'static str>,
}

/// A path to a state that breaks a property: its initial state, then each
/// step with what it did and the state after it.
pub struct Counterexample {
    pub property: &'static str,
    pub initial: State,
    pub steps: Vec<(Action, Vec<Effect>, State)>,
}

impl Model for Protocol {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        let entry = Value::Entry(Entry {
            version: 1,
            stored: 0,
            refreshing: None,
        });
        [None, Some(entry), Some(Value::Unreadable)]
            .into_iter()
            .map(|value| {
                let key = value.map(|value| Key {
                    value,
                    expires: FRESH + KEEP,
                });
                State {
                    now: 0,
                    redis: Redis { log: vec![key] },
                    postgres: Postgres {
                        exists: true,
                        version: 1,
                        records: Vec::new(),
                    },
                    finds: (0..self.scenario.finds).map(|_| Find::default()).collect(),
                    writers: self
                        .scenario
                        .writes
                        .iter()
                        .map(|kind| Writer::new(*kind))
                        .collect(),
                    consumer: Consumer::default(),
                    acknowledged: 0,
                    outside: Vec::new(),
                    faults: self.scenario.faults,
                    failovers: u8::from(self.scenario.replica),
                }
            })
            .collect()
    }

    fn actions(&self, state: &State, actions: &mut Vec<Action>) {
        let allowed = |outcome: &Outcome| !outcome.is_fault() || state.faults > 0;
        for (index, find) in state.finds.iter().enumerate() {
            let index = index as u8;
            match find.phase {
                find::Phase::Done => {}
                find::Phase::Joined(leader) if !state.finds[usize::from(leader)].done() => {}
                _ => actions.extend(
                    find.outcomes()
                        .iter()
                        .filter(|outcome| allowed(outcome))
                        .map(|outcome| Action::Find(index, *outcome)),
                ),
            }
            if self.broken == Some(Broken::JoinRunningFlight) && find.phase == find::Phase::Idle {
                for (leader, other) in state.finds.iter().enumerate() {
                    if other.running() {
                        actions.push(Action::Join(index, leader as u8));
                    }
                }
            }
        }
        for (index, writer) in state.writers.iter().enumerate() {
            actions.extend(
                writer
                    .outcomes()
                    .into_iter()
                    .filter(allowed)
                    .map(|outcome| Action::Write(index as u8, outcome)),
            );
        }
        if self.scenario.consumer {
            let records = state.postgres.records.len();
            actions.extend(
                state
                    .consumer
                    .outcomes(records)
                    .into_iter()
                    .filter(allowed)
                    .map(Action::Consume),
            );
            if state.consumer.busy() && state.faults > 0 {
                actions.push(Action::ConsumerCrash);
            }
        }
        if self.scenario.replica {
            if state.redis.log.len() > 1 {
                actions.push(Action::Replicate);
            }
            if state.failovers > 0 {
                actions.push(Action::Failover);
            }
        }
        if may_tick(state, &self.scenario) {
            actions.push(Action::Tick);
        }
    }

    fn next_state(&self, state: &State, action: Action) -> Option<State> {
        let mut next = state.clone();
        self.step(&mut next, &action, &mut Log::off());
        Some(next)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::always(NO_STALE_READ, |_, state: &State| {
                state.finds.iter().all(|find| {
                    find.answer
                        .and_then(find::Answer::version)
                        .is_none_or(|version| version >= find.required)
                })
            }),
            Property::always(NO_OLDER_THAN_READ, |_, state: &State| {
                state.finds.iter().all(|find| {
                    find.answer
                        .and_then(find::Answer::version)
                        .is_none_or(|version| version >= find.read)
                })
            }),
            // Every path ends with everything done and the key free: a
            // lease or guard left behind expires.
            Property::eventually(KEY_FREES, |_, state: &State| {
                !state.busy() && !blocks_fills(state.redis.primary())
            }),
            Property::sometimes(FILLS_AFTER_WRITE, |_, state: &State| {
                state.finds.iter().any(|find| {
                    find.answer
                        .and_then(find::Answer::version)
                        .is_some_and(|version| version >= 2)
                })
            }),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_that_does_not_wait_for_its_guard_on_the_replica_is_caught() {
        // Arrange
        let failover = scenario_named(Broken::GuardNotReplicated.scenario());
        let protocol = Protocol::new(
            failover.expect("scenario"),
            Some(Broken::GuardNotReplicated),
        );

        // Act
        let report = protocol.check();

        // Assert: the write is acknowledged, the failover loses its guard
        // and release, and a find hits the entry they replaced.
        let counterexample = report.violation.expect("a counterexample");
        assert_eq!(counterexample.property, NO_STALE_READ);
        let failover = |(action, ..): &(Action, _, _)| *action == Action::Failover;
        assert!(counterexample.steps.iter().any(failover));
    }

    #[test]
    fn every_broken_variant_is_named_and_has_a_scenario() {
        let names: Vec<&str> = scenarios().iter().map(|s| s.name).collect();
        for broken in Broken::ALL {
            assert_eq!(Broken::parse(broken.name()), Some(broken));
            assert!(names.contains(&broken.scenario()), "{}", broken.name());
        }
        assert_eq!(Broken::parse("unknown"), None);
    }
}
