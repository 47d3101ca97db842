//! A find's state between its steps: where it is in `shared/src/service/
//! find.rs`'s flow (lookup, fill, refresh, waiting, read-through, giving a
//! lease back), what it must answer at least, and what it answered. Its steps
//! are `protocol/find.rs`.

use crate::redis::{Entry, Token, Value};
use crate::scenario::Outcome;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Find {
    pub phase: Phase,
    /// The tick it started at.
    pub started: u8,
    /// What it must answer at least (`State::required` when it started).
    pub required: u8,
    /// Leases it took so far: its next token is `16 * index + leases`.
    pub leases: u8,
    /// The newest version it read from Postgres itself.
    pub read: u8,
    pub answer: Option<Answer>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Phase {
    Idle,
    Lookup,
    /// Take the refresh lease of this entry (`early`: it is still fresh).
    TakeRefresh {
        entry: Entry,
        early: bool,
    },
    /// Replace an unreadable value with a lease.
    TakeOver,
    /// Read Postgres, then `After`.
    Read(After),
    /// Store what Postgres said under the lease of `After`.
    Store {
        after: After,
        row: Row,
    },
    /// Give `held` back (restoring `restore`), then answer.
    GiveBack {
        held: Value,
        restore: Option<Value>,
        then: Answer,
    },
    /// `join-running-flight`: waits for that find's answer.
    Joined(u8),
    Done,
}

/// What a find does with what it read from Postgres.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum After {
    /// Fill under the fill lease `Token`.
    Fill(Token),
    /// Store under the refresh lease that marks `held`; `kept` is the entry.
    Refresh {
        held: Entry,
        kept: Entry,
        early: bool,
    },
    /// A refresh whose lease could not be taken (Redis failed): no store.
    Unleased { kept: Entry },
    /// Answer it (a read-through or a bypass).
    Answer,
}

/// The row as a read saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Row {
    pub exists: bool,
    pub version: u8,
}

/// What a find answered: a user at a version, "no such user" as of a
/// version, or an error (503).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Answer {
    User(u8),
    Gone(u8),
    Error,
}

impl Answer {
    /// The version of Postgres the answer reflects (`None`: an error).
    pub fn version(self) -> Option<u8> {
        match self {
            Self::User(version) | Self::Gone(version) => Some(version),
            Self::Error => None,
        }
    }

    pub(crate) fn of(row: Row) -> Self {
        if row.exists {
            Self::User(row.version)
        } else {
            Self::Gone(row.version)
        }
    }
}

impl Default for Find {
    fn default() -> Self {
        Self {
            phase: Phase::Idle,
            started: 0,
            required: 0,
            leases: 0,
            read: 0,
            answer: None,
        }
    }
}

impl Find {
    pub fn done(&self) -> bool {
        self.phase == Phase::Done
    }

    pub fn running(&self) -> bool {
        !matches!(self.phase, Phase::Idle | Phase::Done | Phase::Joined(_))
    }

    /// Whether its next step is a Redis command (which can meet Redis's
    /// faults) or a Postgres read (Postgres's).
    pub fn outcomes(&self) -> &'static [Outcome] {
        match self.phase {
            Phase::Read(_) => &[Outcome::Ok, Outcome::PostgresDown],
            Phase::Joined(_) | Phase::Done => &[Outcome::Ok],
            _ => &[
                Outcome::Ok,
                Outcome::RedisDown,
                Outcome::RedisLost,
                Outcome::RedisRetried,
            ],
        }
    }
}
