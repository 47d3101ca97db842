//! The model of one scenario: its settings, and how each step of the system
//! changes its state. A find's steps are `find.rs`, the writers' and the
//! consumer's `write.rs`; time, replication and failover are `system.rs`'s.

mod find;
mod write;

use crate::broken::Broken;
use crate::encoding::Encoding;
use crate::scenario::{FRESH, Outcome, Scenario};
use crate::system::{Action, State, fail_over, replicate, tick};
use crate::trace::{self, Effect, Log};
use users_api::service::EagerRefresh;
use users_api::testing::Policy;

/// The model of one scenario, as the protocol is or with one step broken.
pub struct Protocol {
    pub scenario: Scenario,
    pub broken: Option<Broken>,
    /// The monotonic clock at tick 0, for the decision's `Instant`s.
    base: tokio::time::Instant,
    policy: Policy,
    pub encoding: Encoding,
}

impl Protocol {
    pub fn new(scenario: Scenario, broken: Option<Broken>) -> Self {
        Self {
            scenario,
            broken,
            base: tokio::time::Instant::now(),
            // Eager refresh in the last half of an entry's freshness (one
            // tick of two), fail-safe on: every kind of decision is reachable.
            policy: Policy {
                eager: EagerRefresh::Threshold { percent: 50 },
                fail_safe: true,
            },
            encoding: Encoding { fresh: FRESH },
        }
    }

    /// Takes `action` from `state`, writing what it did to `log`.
    pub fn step(&self, state: &mut State, action: &Action, log: &mut Log) {
        let outcome = match action {
            Action::Find(_, outcome) | Action::Write(_, outcome) | Action::Consume(outcome) => {
                *outcome
            }
            _ => Outcome::Ok,
        };
        if outcome.is_fault() {
            state.faults -= 1;
        }
        match action {
            Action::Find(index, outcome) => self.find_step(state, *index, *outcome, log),
            Action::Join(index, leader) => {
                let find = &mut state.finds[usize::from(*index)];
                find.started = state.now;
                find.phase = crate::find::Phase::Joined(*leader);
                let required = state.required(&self.scenario);
                state.finds[usize::from(*index)].required = required;
                log.push(|| Effect::Joined {
                    who: trace::Who::Find(*index),
                    leader: trace::Who::Find(*leader),
                });
            }
            Action::Write(index, outcome) => self.write_step(state, *index, *outcome, log),
            Action::Consume(outcome) => self.consume_step(state, *outcome, log),
            Action::ConsumerCrash => {
                state.faults -= 1;
                self.crash(state, log);
            }
            Action::Replicate => replicate(state),
            Action::Failover => fail_over(state),
            Action::Tick => tick(state),
        }
    }

    /// `actions` taken one by one from `initial`: each with what it did and
    /// the state after it.
    pub fn replay(&self, initial: &State, actions: &[Action]) -> Vec<(Action, Vec<Effect>, State)> {
        let mut state = initial.clone();
        actions
            .iter()
            .map(|action| {
                let mut log = Log::on();
                self.step(&mut state, action, &mut log);
                (action.clone(), log.into_effects(), state.clone())
            })
            .collect()
    }
}
