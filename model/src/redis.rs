//! The model's Redis: one key, its values, and what each command and script
//! of `shared/src/cache/protocol.rs` does to it. `tests/it/model/scripts.rs`
//! runs every script on the real Redis for every key state and checks that it
//! does exactly what [`apply`] says.
//!
//! Time is in ticks. An expiry is the tick from which the key is gone; the
//! model removes expired keys when time moves on. How the values are written
//! on the real Redis is `encoding.rs`.

/// A lease's or a writer's token: who took it, and, for a find's leases,
/// which of its lookups (a find takes a new token at every lookup).
pub type Token = u8;

/// The writers' tokens, as bits: writer `i` is bit `i`.
pub type Writers = u8;

/// What the key holds.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Value {
    /// A user: `v…`, or `r…` + `v…` while being refreshed.
    Entry(Entry),
    /// `n`. `read_at` is a ghost: the Postgres version it was read at (the
    /// real value does not hold it; the property needs it).
    Negative { read_at: u8 },
    /// `l{token}`: a find's fill lease.
    Lease(Token),
    /// `w{tokens}`: writes in progress.
    Guard(Writers),
    /// A value this version cannot read (an older format, a manual edit).
    Unreadable,
}

impl Value {
    /// The value as the real Redis holds it: without the model's ghosts.
    pub fn real(&self) -> Self {
        match self {
            Self::Negative { .. } => Self::Negative { read_at: 0 },
            other => other.clone(),
        }
    }
}

/// A user's entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Entry {
    /// The user's version: also the Postgres version it was read at.
    pub version: u8,
    /// The tick it was filled at.
    pub stored: u8,
    /// A refresh lease on it: its deadline tick and token.
    pub refreshing: Option<(u8, Token)>,
}

/// The key, when it is there.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub value: Value,
    /// The tick from which it is gone.
    pub expires: u8,
}

/// How long a command sets the key for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Ttl {
    /// `KEEPTTL` (compare-and-set's `0`).
    Keep,
    Ticks(u8),
}

/// A command or script, with the model's arguments.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// `SET key token NX GET PX lease`.
    Lookup { token: Token, lease: u8 },
    /// The compare-and-set script: `new` `None` deletes.
    CompareAndSet {
        expected: Value,
        new: Option<Value>,
        ttl: Ttl,
    },
    /// A plain `SET key value PX ttl` (only the broken `plain-set-fill`).
    Set { value: Value, ttl: u8 },
    /// The guard script for writer `writer`, expiring after `ttl`.
    Guard { writer: u8, ttl: u8 },
    /// The release script; `None`: a writer that never joined the guard (the
    /// consumer's voiding).
    Release { writer: Option<u8> },
}

/// What Redis answered.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Reply {
    /// The lookup's `GET` part: what the key held before.
    Found(Option<Value>),
    /// A script's integer.
    Int(i64),
    Ok,
}

/// Applies `op` at tick `now` to `key`, as the real command or script does.
pub fn apply(key: &mut Option<Key>, op: &Op, now: u8) -> Reply {
    match op {
        Op::Lookup { token, lease } => match key {
            Some(held) => Reply::Found(Some(held.value.clone())),
            None => {
                *key = Some(Key {
                    value: Value::Lease(*token),
                    expires: now + lease,
                });
                Reply::Found(None)
            }
        },
        Op::CompareAndSet { expected, new, ttl } => {
            let Some(held) = key
                .as_mut()
                .filter(|held| held.value.real() == expected.real())
            else {
                return Reply::Int(0);
            };
            match (new, ttl) {
                (None, _) => *key = None,
                (Some(new), Ttl::Keep) => held.value = new.clone(),
                (Some(new), Ttl::Ticks(ticks)) => {
                    *held = Key {
                        value: new.clone(),
                        expires: now + ticks,
                    };
                }
            }
            Reply::Int(1)
        }
        Op::Set { value, ttl } => {
            *key = Some(Key {
                value: value.clone(),
                expires: now + ttl,
            });
            Reply::Ok
        }
        Op::Guard { writer, ttl } => {
            let writers = match key {
                Some(Key {
                    value: Value::Guard(writers),
                    ..
                }) => *writers,
                _ => 0,
            };
            *key = Some(Key {
                value: Value::Guard(writers | 1 << writer),
                expires: now + ttl,
            });
            Reply::Int(1)
        }
        Op::Release { writer } => {
            if let Some(Key {
                value: Value::Guard(writers),
                ..
            }) = key
            {
                let others = *writers & !writer.map_or(0, |writer| 1 << writer);
                if others != 0 {
                    *writers = others;
                    return Reply::Int(0);
                }
            }
            *key = None;
            Reply::Int(1)
        }
    }
}

/// Whether the key's value is a lease or a guard: something that keeps
/// finds from filling.
pub fn blocks_fills(key: &Option<Key>) -> bool {
    matches!(
        key,
        Some(Key {
            value: Value::Lease(_) | Value::Guard(_),
            ..
        }) | Some(Key {
            value: Value::Entry(Entry {
                refreshing: Some(_),
                ..
            }),
            ..
        })
    )
}

/// The key as the trace shows it.
pub fn key_text(key: &Option<Key>) -> String {
    match key {
        None => "empty".into(),
        Some(Key { value, expires }) => format!("{} until t{expires}", value_text(value)),
    }
}

pub fn value_text(value: &Value) -> String {
    match value {
        Value::Entry(entry) => {
            let marked = entry
                .refreshing
                .map(|(until, token)| format!(" being refreshed by lease {token} until t{until}"))
                .unwrap_or_default();
            format!(
                "entry v{} filled at t{}{marked}",
                entry.version, entry.stored
            )
        }
        Value::Negative { read_at } => format!("not-found entry (read at v{read_at})"),
        Value::Lease(token) => format!("fill lease {token}"),
        Value::Guard(writers) => {
            let names: Vec<String> = (0..8)
                .filter(|writer| writers & 1 << writer != 0)
                .map(|writer| format!("write {}", writer + 1))
                .collect();
            format!("guard of {}", names.join(" and "))
        }
        Value::Unreadable => "an unreadable value".into(),
    }
}
