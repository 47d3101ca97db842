//! The systems the checker explores and their settings: how long leases,
//! guards and entries last in ticks, which writes each scenario has, and the
//! faults a step can meet.

/// How long things last, in ticks (docs/testing.md says why these sizes
/// keep every ordering of expiries).
pub const LEASE: u8 = 1;
pub const GUARD: u8 = 3;
pub const FRESH: u8 = 2;
/// Fail-safe: how long an entry is kept past its freshness.
pub const KEEP: u8 = 1;
pub const NEGATIVE: u8 = 2;
pub const FILL_WAIT: u8 = 1;
/// How long a change record may wait for the consumer (the bound D).
pub const D: u8 = 1;

/// What a system of the check holds: its writers, whether there is a
/// replica, whether the consumer of change records runs.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub name: &'static str,
    pub finds: usize,
    pub writes: Vec<WriteKind>,
    /// A replica, one failover, and guards that wait for the replica
    /// (`CACHE_GUARD_REPLICAS=1`).
    pub replica: bool,
    /// Change records and their consumer (every write to `users` leaves one).
    pub consumer: bool,
    /// How many faults one run may have (lost replies, failures, a crash).
    pub faults: u8,
    /// Ticks while anything is running.
    pub busy_ticks: u8,
}

/// A write to the one user.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WriteKind {
    /// Through the API: guard, statement, release.
    Update,
    Delete,
    /// Straight to Postgres (SQL), recorded for the consumer.
    SqlUpdate,
    SqlDelete,
    SqlInsert,
}

impl WriteKind {
    pub fn through_api(self) -> bool {
        matches!(self, Self::Update | Self::Delete)
    }
}

/// How a step of a part went: the faults are the ones its next command can
/// meet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    Ok,
    /// Redis did not get the command (down, refused): an error.
    RedisDown,
    /// Redis applied it, the reply was lost and the retry failed: an error.
    RedisLost,
    /// Redis applied it, the reply was lost, and the one retry (`Redis::call`)
    /// ran it again: the caller gets the retry's reply.
    RedisRetried,
    /// Postgres did not answer: nothing happened.
    PostgresDown,
    /// The commit happened, its reply was lost: the caller sees an error.
    PostgresLost,
    /// `WAIT` ended short of the replica.
    Short,
}

impl Outcome {
    pub fn is_fault(self) -> bool {
        !matches!(self, Self::Ok | Self::Short)
    }
}

/// The systems the check explores, each exhaustively.
/// The scenario called `name` (a broken variant's, say: `Broken::scenario`).
pub fn scenario_named(name: &str) -> Option<Scenario> {
    scenarios()
        .into_iter()
        .find(|scenario| scenario.name == name)
}

pub fn scenarios() -> Vec<Scenario> {
    let base = Scenario {
        name: "api",
        finds: 2,
        writes: vec![WriteKind::Update, WriteKind::Delete],
        replica: false,
        consumer: false,
        faults: 2,
        busy_ticks: 3,
    };
    vec![
        base.clone(),
        Scenario {
            name: "outside",
            writes: vec![WriteKind::SqlUpdate, WriteKind::SqlDelete],
            consumer: true,
            ..base.clone()
        },
        Scenario {
            name: "outside-insert",
            writes: vec![WriteKind::Delete, WriteKind::SqlInsert],
            consumer: true,
            ..base.clone()
        },
        // The failover and the replica's lag are this one's faults.
        Scenario {
            name: "failover",
            replica: true,
            faults: 0,
            ..base
        },
    ]
}
