//! The writers' and the consumer's state between their steps: a write through
//! the API (guard, `WAIT`, statement, release), a write straight to Postgres,
//! and the consumer of change records (claim, void, delete). Their steps are
//! `protocol/write.rs`.

use crate::scenario::{GUARD, Outcome, WriteKind};

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Writer {
    pub kind: WriteKind,
    pub phase: WritePhase,
    /// The tick its guard was (last) set at, while it may be in the key.
    pub guarded_at: Option<u8>,
    /// What its statement saw: the version after it (`None`: it failed).
    pub committed: Option<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum WritePhase {
    Idle,
    /// Waiting for `WAIT`: how many states the replica has still to apply
    /// before it holds the guard (`None`: the primary it waited on is gone).
    AwaitGuard(Option<u8>),
    Commit,
    Release,
    /// After a `WAIT` short of the replica: take the guard back, refuse.
    TakeBack,
    Done,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Consumer {
    pub phase: ConsumerPhase,
    /// How many of the oldest records it claimed (locked, in its open
    /// transaction).
    pub claimed: u8,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ConsumerPhase {
    Idle,
    Void,
    /// Its voiding waits for the replica, as a guard does.
    AwaitVoid(Option<u8>),
    Commit,
}

impl Writer {
    pub fn new(kind: WriteKind) -> Self {
        Self {
            kind,
            phase: WritePhase::Idle,
            guarded_at: None,
            committed: None,
        }
    }

    pub fn done(&self) -> bool {
        self.phase == WritePhase::Done
    }

    /// Whether, at tick `tick`, the guard it holds (if any) is still there:
    /// time may not pass a guard's expiry while its write is in progress.
    pub fn guard_lasts_past(&self, tick: u8) -> bool {
        self.done() || self.guarded_at.is_none_or(|at| tick < at + GUARD)
    }

    pub fn waiting_mut(&mut self) -> Option<&mut Option<u8>> {
        match &mut self.phase {
            WritePhase::AwaitGuard(behind) => Some(behind),
            _ => None,
        }
    }

    pub fn outcomes(&self) -> Vec<Outcome> {
        let redis = vec![
            Outcome::Ok,
            Outcome::RedisDown,
            Outcome::RedisLost,
            Outcome::RedisRetried,
        ];
        match (&self.phase, self.kind.through_api()) {
            (WritePhase::Idle, false) => vec![Outcome::Ok],
            (WritePhase::AwaitGuard(Some(0)), _) => vec![Outcome::Ok],
            (WritePhase::AwaitGuard(_), _) => vec![Outcome::Short],
            (WritePhase::Commit, _) => {
                vec![Outcome::Ok, Outcome::PostgresDown, Outcome::PostgresLost]
            }
            (WritePhase::Done, _) => vec![],
            _ => redis,
        }
    }
}

impl Default for Consumer {
    fn default() -> Self {
        Self {
            phase: ConsumerPhase::Idle,
            claimed: 0,
        }
    }
}

impl Consumer {
    pub fn busy(&self) -> bool {
        self.phase != ConsumerPhase::Idle
    }

    pub fn waiting_mut(&mut self) -> Option<&mut Option<u8>> {
        match &mut self.phase {
            ConsumerPhase::AwaitVoid(behind) => Some(behind),
            _ => None,
        }
    }

    pub fn outcomes(&self, records: usize) -> Vec<Outcome> {
        match self.phase {
            ConsumerPhase::Idle if records == 0 => vec![],
            ConsumerPhase::Idle => vec![Outcome::Ok],
            ConsumerPhase::Void => vec![
                Outcome::Ok,
                Outcome::RedisDown,
                Outcome::RedisLost,
                Outcome::RedisRetried,
            ],
            ConsumerPhase::AwaitVoid(Some(0)) => vec![Outcome::Ok],
            ConsumerPhase::AwaitVoid(_) => vec![Outcome::Short],
            ConsumerPhase::Commit => vec![Outcome::Ok, Outcome::PostgresDown],
        }
    }
}
