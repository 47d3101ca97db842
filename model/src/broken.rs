//! Deliberately broken variants of the protocol, each one step of it done
//! the way that looks harmless and is not. `scripts/model-check.sh --broken
//! NAME` checks one and must find a counterexample; `tests/it/model_replay.rs`
//! replays that counterexample on the real Redis and Postgres.

/// A broken variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Broken {
    /// The fill stores with a plain `SET`, not its lease's compare-and-set.
    PlainSetFill,
    /// A write does not guard the key before its statement.
    NoWriteGuard,
    /// The release runs before the statement commits.
    ReleaseBeforeCommit,
    /// A kept entry is answered when Postgres says the user is gone.
    StaleAfterDelete,
    /// A find joins a flight already running.
    JoinRunningFlight,
    /// The consumer deletes a record before it voids the key.
    OutboxDeleteBeforeApply,
    /// A write goes on without its guard's replica acknowledgement.
    GuardNotReplicated,
}

impl Broken {
    pub const ALL: [Self; 7] = [
        Self::PlainSetFill,
        Self::NoWriteGuard,
        Self::ReleaseBeforeCommit,
        Self::StaleAfterDelete,
        Self::JoinRunningFlight,
        Self::OutboxDeleteBeforeApply,
        Self::GuardNotReplicated,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::PlainSetFill => "plain-set-fill",
            Self::NoWriteGuard => "no-write-guard",
            Self::ReleaseBeforeCommit => "release-before-commit",
            Self::StaleAfterDelete => "stale-after-delete",
            Self::JoinRunningFlight => "join-running-flight",
            Self::OutboxDeleteBeforeApply => "outbox-delete-before-apply",
            Self::GuardNotReplicated => "guard-not-replicated",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|broken| broken.name() == name)
    }

    /// The scenario whose steps the variant changes (`lib.rs`).
    pub fn scenario(self) -> &'static str {
        match self {
            Self::OutboxDeleteBeforeApply => "outside",
            Self::GuardNotReplicated => "failover",
            _ => "api",
        }
    }
}
