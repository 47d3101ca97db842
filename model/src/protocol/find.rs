//! A find's steps, as `shared/src/service/find.rs` takes them: a lookup, then
//! what the production decision ([`next_step`]) says, through the fill, the
//! refresh, the wait for another's fill, the read-through and the giving back
//! of a lease. Each step is one command to Redis or one read of Postgres.

use super::Protocol;
use crate::broken::Broken;
use crate::find::{After, Answer, Find, Phase, Row};
use crate::redis::{Entry, Op, Reply, Token, Ttl, Value};
use crate::scenario::{FILL_WAIT, FRESH, KEEP, LEASE, NEGATIVE, Outcome};
use crate::system::State;
use crate::trace::{Effect, Log, Who};
use std::time::Duration;
use users_api::cache::CacheError;
use users_api::testing::{Due, Moment, Step, lookup_of, next_step};

impl Protocol {
    /// Find `index`'s next step.
    pub(crate) fn find_step(&self, state: &mut State, index: u8, outcome: Outcome, log: &mut Log) {
        let who = Who::Find(index);
        let mut find = state.finds[usize::from(index)].clone();
        let token = 16 * index + find.leases;
        let broken = self.broken;
        let next = match find.phase.clone() {
            Phase::Idle => {
                find.started = state.now;
                find.required = state.required(&self.scenario);
                log.push(|| Effect::Started {
                    who,
                    required: find.required,
                });
                self.lookup(state, &mut find, who, token, outcome, log)
            }
            Phase::Lookup => self.lookup(state, &mut find, who, token, outcome, log),
            Phase::TakeRefresh { entry, early } => {
                let kept = Entry {
                    refreshing: None,
                    ..entry
                };
                let held = Entry {
                    refreshing: Some((state.now + LEASE, token)),
                    ..kept
                };
                let op = Op::CompareAndSet {
                    expected: Value::Entry(entry),
                    new: Some(Value::Entry(held)),
                    ttl: Ttl::Keep,
                };
                let (reply, _) = state.redis(&self.scenario, who, op, outcome, log);
                match reply {
                    Some(Reply::Int(1)) => {
                        find.leases += 1;
                        Phase::Read(After::Refresh { held, kept, early })
                    }
                    _ if early => answer(&mut find, Answer::User(kept.version)),
                    Some(_) => Phase::Lookup,
                    None => Phase::Read(After::Unleased { kept }),
                }
            }
            Phase::TakeOver => {
                let op = Op::CompareAndSet {
                    expected: Value::Unreadable,
                    new: Some(Value::Lease(token)),
                    ttl: Ttl::Ticks(LEASE),
                };
                let (reply, _) = state.redis(&self.scenario, who, op, outcome, log);
                match reply {
                    Some(Reply::Int(1)) => {
                        find.leases += 1;
                        Phase::Read(After::Fill(token))
                    }
                    Some(_) => Phase::Lookup,
                    None => Phase::Read(After::Answer),
                }
            }
            Phase::Read(after) => {
                let row = Row {
                    exists: state.postgres.exists,
                    version: state.postgres.version,
                };
                let read = (outcome == Outcome::Ok).then_some(row);
                log.push(|| Effect::Read { who, row: read });
                if let Some(row) = read {
                    find.read = find.read.max(row.version);
                }
                match (after, read) {
                    (After::Refresh { held, kept, .. }, Some(row))
                        if !row.exists && broken == Some(Broken::StaleAfterDelete) =>
                    {
                        Phase::GiveBack {
                            held: Value::Entry(held),
                            restore: Some(Value::Entry(kept)),
                            then: Answer::User(kept.version),
                        }
                    }
                    (After::Unleased { kept }, Some(row))
                        if !row.exists && broken == Some(Broken::StaleAfterDelete) =>
                    {
                        answer(&mut find, Answer::User(kept.version))
                    }
                    (After::Answer | After::Unleased { .. }, Some(row)) => {
                        answer(&mut find, Answer::of(row))
                    }
                    (after, Some(row)) => Phase::Store { after, row },
                    (After::Fill(token), None) => Phase::GiveBack {
                        held: Value::Lease(token),
                        restore: None,
                        then: Answer::Error,
                    },
                    (After::Refresh { held, kept, .. }, None) => Phase::GiveBack {
                        held: Value::Entry(held),
                        restore: Some(Value::Entry(kept)),
                        then: Answer::User(kept.version),
                    },
                    (After::Unleased { kept }, None) => {
                        answer(&mut find, Answer::User(kept.version))
                    }
                    (After::Answer, None) => answer(&mut find, Answer::Error),
                }
            }
            Phase::Store { after, row } => {
                let (value, ttl) = if row.exists {
                    let entry = Entry {
                        version: row.version,
                        stored: state.now,
                        refreshing: None,
                    };
                    (Value::Entry(entry), FRESH + KEEP)
                } else {
                    (
                        Value::Negative {
                            read_at: row.version,
                        },
                        NEGATIVE,
                    )
                };
                let held = match after {
                    After::Fill(token) => Value::Lease(token),
                    After::Refresh { held, .. } => Value::Entry(held),
                    After::Unleased { .. } | After::Answer => {
                        unreachable!("no lease to store under")
                    }
                };
                let op = if broken == Some(Broken::PlainSetFill) {
                    Op::Set { value, ttl }
                } else {
                    Op::CompareAndSet {
                        expected: held,
                        new: Some(value),
                        ttl: Ttl::Ticks(ttl),
                    }
                };
                state.redis(&self.scenario, who, op, outcome, log);
                answer(&mut find, Answer::of(row))
            }
            Phase::GiveBack {
                held,
                restore,
                then,
            } => {
                let op = Op::CompareAndSet {
                    expected: held,
                    new: restore,
                    ttl: Ttl::Keep,
                };
                state.redis(&self.scenario, who, op, outcome, log);
                answer(&mut find, then)
            }
            Phase::Joined(leader) => {
                let shared = state.finds[usize::from(leader)].answer;
                answer(&mut find, shared.expect("joined a find that answered"))
            }
            Phase::Done => unreachable!("a find that is done takes no step"),
        };
        find.phase = next;
        if let Some(answer) = find.answer.filter(|_| find.done()) {
            log.push(|| Effect::Answered {
                who,
                answer,
                required: find.required,
                read: find.read,
            });
        }
        state.finds[usize::from(index)] = find;
    }

    /// The lookup and the production decision on what it returned.
    fn lookup(
        &self,
        state: &mut State,
        find: &mut Find,
        who: Who,
        token: Token,
        outcome: Outcome,
        log: &mut Log,
    ) -> Phase {
        let op = Op::Lookup {
            token,
            lease: LEASE,
        };
        let (reply, _) = state.redis(&self.scenario, who, op, outcome, log);
        if matches!(state.redis.primary(), Some(key) if key.value == Value::Lease(token)) {
            find.leases += 1;
        }
        let found = match &reply {
            Some(Reply::Found(found)) => Some(found.clone()),
            _ => None,
        };
        let lookup = match &found {
            Some(found) => Ok(lookup_of(
                found.as_ref().map(|value| self.encoding.encode(value)),
            )),
            None => Err(CacheError::Timeout(Duration::from_millis(50))),
        };
        let at = self.moment(state.now);
        let give_up = self.moment(find.started + FILL_WAIT).now;
        let step = next_step(lookup, at, give_up, self.policy);
        log.push(|| Effect::Decided {
            who,
            step: step_name(&step),
        });
        match (step, found.flatten()) {
            (Step::Hit(cached) | Step::Stale(cached), Some(Value::Entry(entry))) => {
                assert_eq!(cached.version, i64::from(entry.version));
                answer(find, Answer::User(entry.version))
            }
            (Step::NotFound, Some(Value::Negative { read_at })) => {
                answer(find, Answer::Gone(read_at))
            }
            (Step::Fill(_), None) => Phase::Read(After::Fill(token)),
            (Step::Refresh(_, due), Some(Value::Entry(entry))) => Phase::TakeRefresh {
                entry,
                early: due == Due::Early,
            },
            (Step::WaitUntil(_), _) => Phase::Lookup,
            (Step::ReadThrough | Step::Bypass(_), _) => Phase::Read(After::Answer),
            (Step::Replace(_), Some(Value::Unreadable)) => Phase::TakeOver,
            (step, found) => unreachable!("{step:?} from {found:?}"),
        }
    }

    /// Model tick `tick` as the decision's moment.
    fn moment(&self, tick: u8) -> Moment {
        Moment {
            now: self.base + Duration::from_millis(u64::from(tick) * crate::encoding::TICK_MS),
            now_ms: crate::encoding::ms(tick),
            draw: 0.5,
        }
    }
}

fn answer(find: &mut Find, answer: Answer) -> Phase {
    find.answer = Some(answer);
    Phase::Done
}

fn step_name(step: &Step) -> &'static str {
    match step {
        Step::Hit(_) => "hit",
        Step::NotFound => "not found",
        Step::Fill(_) => "fill",
        Step::Refresh(_, Due::Early) => "refresh early",
        Step::Refresh(_, Due::Expired) => "refresh",
        Step::Stale(_) => "stale",
        Step::WaitUntil(_) => "wait for the fill",
        Step::ReadThrough => "read through",
        Step::Bypass(_) => "bypass",
        Step::Replace(_) => "replace",
    }
}
