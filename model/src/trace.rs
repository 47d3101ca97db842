//! What each step did, in words: the counterexample's trace, and the
//! commands a replay sends to the real services (`tests/it/model_replay.rs`).

use crate::find::{Answer, Row};
use crate::redis::{Op, Reply, Ttl, value_text};
use crate::scenario::WriteKind;
use std::fmt;

/// Who took a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Who {
    Find(u8),
    Write(u8),
    Consumer,
}

/// One thing a step did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    Started {
        who: Who,
        required: u8,
    },
    /// A command `times` times (0: Redis never got it), and the reply its
    /// caller got (`None`: an error).
    Redis {
        who: Who,
        op: Op,
        times: u8,
        reply: Option<Reply>,
    },
    /// `find`'s production decision.
    Decided {
        who: Who,
        step: &'static str,
    },
    /// A find's read of Postgres (`None`: it failed).
    Read {
        who: Who,
        row: Option<Row>,
    },
    Committed {
        who: Who,
        kind: WriteKind,
        /// The version the commit made (`None`: nothing changed).
        version: Option<u8>,
        /// Whether the writer got the commit's answer.
        answered: bool,
    },
    Replicated {
        who: Who,
    },
    ShortOfReplicas {
        who: Who,
    },
    Acknowledged {
        who: Who,
        version: u8,
    },
    /// A find's answer, what it had to answer at least, and the newest
    /// version it read from Postgres itself.
    Answered {
        who: Who,
        answer: Answer,
        required: u8,
        read: u8,
    },
    Joined {
        who: Who,
        leader: Who,
    },
    Claimed {
        records: u8,
    },
    Deleted {
        records: u8,
    },
    RolledBack,
    Crashed,
}

/// Where a step writes its effects: nowhere while checking, a list while
/// tracing or replaying.
pub struct Log(Option<Vec<Effect>>);

impl Log {
    pub fn off() -> Self {
        Self(None)
    }

    pub fn on() -> Self {
        Self(Some(Vec::new()))
    }

    pub fn push(&mut self, effect: impl FnOnce() -> Effect) {
        if let Some(effects) = &mut self.0 {
            effects.push(effect());
        }
    }

    pub fn into_effects(self) -> Vec<Effect> {
        self.0.unwrap_or_default()
    }
}

impl fmt::Display for Who {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Find(index) => write!(f, "find {}", char::from(b'A' + index)),
            Self::Write(index) => write!(f, "write {}", index + 1),
            Self::Consumer => write!(f, "consumer"),
        }
    }
}

impl fmt::Display for Effect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Started { who, required } => {
                write!(f, "{who} starts (it must answer v{required} or newer)")
            }
            Self::Redis {
                who,
                op,
                times,
                reply,
            } => {
                let sent = match times {
                    0 => " -> Redis never got it",
                    2 => " (reply lost, retried)",
                    _ => "",
                };
                let reply = match reply {
                    None => "an error".to_owned(),
                    Some(Reply::Found(None)) => "nil (the lease is taken)".to_owned(),
                    Some(Reply::Found(Some(value))) => value_text(value),
                    Some(Reply::Int(n)) => n.to_string(),
                    Some(Reply::Ok) => "OK".to_owned(),
                };
                write!(f, "{who}: {}{sent} -> {reply}", op_text(op))
            }
            Self::Decided { who, step } => write!(f, "{who} decides: {step}"),
            Self::Read { who, row } => match row {
                Some(row) if row.exists => write!(f, "{who} reads Postgres: v{}", row.version),
                Some(row) => write!(f, "{who} reads Postgres: gone (v{})", row.version),
                None => write!(f, "{who} reads Postgres: it fails"),
            },
            Self::Committed {
                who,
                kind,
                version,
                answered,
            } => {
                let what = match version {
                    Some(version) => format!("commits v{version}"),
                    None => "changes nothing".to_owned(),
                };
                let lost = if *answered {
                    ""
                } else {
                    " (its answer is lost)"
                };
                write!(f, "{who} ({kind:?}): {what}{lost}")
            }
            Self::Replicated { who } => write!(f, "{who}: WAIT -> the replica holds the guard"),
            Self::ShortOfReplicas { who } => write!(f, "{who}: WAIT ends short of the replica"),
            Self::Acknowledged { who, version } => {
                write!(f, "{who} is acknowledged (Postgres at v{version})")
            }
            Self::Answered {
                who,
                answer,
                required,
                ..
            } => {
                let answer = match answer {
                    Answer::User(version) => format!("user v{version}"),
                    Answer::Gone(version) => format!("404 (as of v{version})"),
                    Answer::Error => "503".to_owned(),
                };
                write!(
                    f,
                    "{who} answers {answer} (it had to answer v{required} or newer)"
                )
            }
            Self::Joined { who, leader } => {
                write!(f, "{who} starts and joins the flight {leader} is running")
            }
            Self::Claimed { records } => write!(f, "consumer claims {records} change record(s)"),
            Self::Deleted { records } => {
                write!(f, "consumer deletes {records} record(s) and commits")
            }
            Self::RolledBack => write!(f, "consumer's batch rolls back"),
            Self::Crashed => write!(f, "consumer dies; its claimed records go back"),
        }
    }
}

fn op_text(op: &Op) -> String {
    match op {
        Op::Lookup { token, .. } => format!("lookup (SET NX GET, lease {token})"),
        Op::CompareAndSet { expected, new, ttl } => {
            let new = new.as_ref().map_or("delete".to_owned(), value_text);
            let keep = if *ttl == Ttl::Keep {
                ", keeping its expiry"
            } else {
                ""
            };
            format!(
                "compare-and-set [{}] -> [{new}]{keep}",
                value_text(expected)
            )
        }
        Op::Set { value, .. } => format!("plain SET [{}]", value_text(value)),
        Op::Guard { writer, .. } => format!("guard (token of write {})", writer + 1),
        Op::Release {
            writer: Some(writer),
        } => format!("release (token of write {})", writer + 1),
        Op::Release { writer: None } => "void (release with no token in the guard)".to_owned(),
    }
}
