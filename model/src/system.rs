//! The system the checker explores: its whole state, the steps it can take
//! ([`Action`]), and the steps of no part: time, replication and failover.
//! The parts' steps are `protocol/`'s; the properties are `lib.rs`'s.

use crate::find::Find;
use crate::redis::{Key, Op, Reply, apply};
use crate::scenario::{D, FRESH, GUARD, KEEP, Outcome, Scenario};
use crate::trace::{Effect, Log, Who};
use crate::write::{Consumer, Writer};

/// Postgres: the one row (a version that every commit raises, a delete
/// included) and the change records not yet applied.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Postgres {
    pub exists: bool,
    pub version: u8,
    /// Each pending record: the version its change committed and when.
    pub records: Vec<(u8, u8)>,
}

/// Redis: the primary's key, and with a replica the states the replica has
/// still to apply. `log[0]` is the replica's key; the last, the primary's.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Redis {
    pub log: Vec<Option<Key>>,
}

impl Redis {
    pub fn primary(&self) -> &Option<Key> {
        self.log.last().expect("the log is never empty")
    }

    /// Applies `op` on the primary; with a replica, a change is one more
    /// state for it to apply. Returns the reply and how many states the
    /// replica is behind after it (what `WAIT` waits for).
    pub fn apply(&mut self, op: &Op, now: u8, replica: bool) -> (Reply, u8) {
        let mut key = self.primary().clone();
        let reply = apply(&mut key, op, now);
        if !replica {
            self.log[0] = key;
        } else if key != *self.primary() {
            self.log.push(key);
        }
        (reply, (self.log.len() - 1) as u8)
    }
}

/// A step of the system.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    Find(u8, Outcome),
    /// `join-running-flight` only: find `.0` arrives and joins the flight of
    /// find `.1`, which is already running.
    Join(u8, u8),
    Write(u8, Outcome),
    Consume(Outcome),
    /// The consumer dies; its claimed records go back (its transaction ends).
    ConsumerCrash,
    /// The replica applies the primary's next state.
    Replicate,
    /// The replica becomes the primary; what it had not applied is lost.
    Failover,
    Tick,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct State {
    pub now: u8,
    pub redis: Redis,
    pub postgres: Postgres,
    pub finds: Vec<Find>,
    pub writers: Vec<Writer>,
    pub consumer: Consumer,
    /// The newest version an API write acknowledged.
    pub acknowledged: u8,
    /// Changes made outside the API: the version each committed, and when.
    pub outside: Vec<(u8, u8)>,
    pub faults: u8,
    pub failovers: u8,
}

impl State {
    /// What a find starting now must answer at least: the newest version
    /// acknowledged, and of changes made outside the API, the newest that
    /// committed more than D ago.
    pub fn required(&self, scenario: &Scenario) -> u8 {
        let outside = if scenario.consumer {
            self.outside
                .iter()
                .filter(|(_, at)| at + D < self.now)
                .map(|(version, _)| *version)
                .max()
                .unwrap_or(0)
        } else {
            0
        };
        self.acknowledged.max(outside)
    }

    pub fn busy(&self) -> bool {
        self.finds.iter().any(|find| !find.done())
            || self.writers.iter().any(|writer| !writer.done())
            || self.consumer.busy()
            || !self.postgres.records.is_empty()
    }

    /// Redis `op` for `who`, with `outcome`'s fault: the reply the caller
    /// gets (`None`: an error) and how far behind the replica is after it.
    pub fn redis(
        &mut self,
        scenario: &Scenario,
        who: Who,
        op: Op,
        outcome: Outcome,
        log: &mut Log,
    ) -> (Option<Reply>, u8) {
        let times = match outcome {
            Outcome::RedisDown => 0,
            Outcome::RedisRetried => 2,
            _ => 1,
        };
        let mut answer = (None, (self.redis.log.len() - 1) as u8);
        for _ in 0..times {
            let (reply, behind) = self.redis.apply(&op, self.now, scenario.replica);
            answer = (Some(reply), behind);
        }
        if matches!(outcome, Outcome::RedisDown | Outcome::RedisLost) {
            answer.0 = None;
        }
        log.push(|| Effect::Redis {
            who,
            op: op.clone(),
            times,
            reply: answer.0.clone(),
        });
        answer
    }
}

/// The replica applies the primary's next state; those waiting for it move on.
pub fn replicate(state: &mut State) {
    state.redis.log.remove(0);
    for behind in state.waiting_mut().flatten() {
        *behind = behind.saturating_sub(1);
    }
}

/// The replica is promoted: the primary's states it had not applied are
/// lost, and the `WAIT`s on the old primary end with their connection.
pub fn fail_over(state: &mut State) {
    state.redis.log.truncate(1);
    state.failovers -= 1;
    for waiting in state.waiting_mut() {
        *waiting = None;
    }
}

/// Time moves on: expired keys go, on the primary and the replica alike.
pub fn tick(state: &mut State) {
    state.now += 1;
    let now = state.now;
    for key in &mut state.redis.log {
        if key.as_ref().is_some_and(|key| key.expires <= now) {
            *key = None;
        }
    }
}

impl State {
    fn waiting_mut(&mut self) -> impl Iterator<Item = &mut Option<u8>> {
        let writers = self.writers.iter_mut().filter_map(|w| w.waiting_mut());
        writers.chain(self.consumer.waiting_mut())
    }
}

/// Whether time may move on: a write in progress still holds the guard it
/// took (the guard outlives every write: docs/cache.md, "Writes"), the
/// consumer applies every record within D, and the run's ticks are not
/// used up (once everything is done, ticks go on until everything expired).
pub fn may_tick(state: &State, scenario: &Scenario) -> bool {
    let limit = if state.busy() {
        scenario.busy_ticks
    } else {
        scenario.busy_ticks + GUARD.max(FRESH + KEEP)
    };
    state.now < limit
        && state
            .writers
            .iter()
            .all(|writer| writer.guard_lasts_past(state.now + 1))
        && (!scenario.consumer
            || state
                .postgres
                .records
                .iter()
                .all(|(_, at)| state.now < at + D))
}
