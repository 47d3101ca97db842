//! The writers' and the consumer's steps, as `shared/src/service/write.rs`
//! and `shared/src/service/changes.rs` take them: a write through the API
//! guards the key (and, with a replica, waits for it), commits, releases, and
//! answers; a write straight to Postgres only commits, leaving a record; the
//! consumer claims the records, voids the key with the release script, and
//! deletes them in the transaction that claimed them.

use super::Protocol;
use crate::broken::Broken;
use crate::redis::Op;
use crate::scenario::{GUARD, Outcome, WriteKind};
use crate::system::State;
use crate::trace::{Effect, Log, Who};
use crate::write::{Consumer, ConsumerPhase, WritePhase, Writer};

impl Protocol {
    /// Writer `index`'s next step.
    pub(crate) fn write_step(&self, state: &mut State, index: u8, outcome: Outcome, log: &mut Log) {
        let who = Who::Write(index);
        let mut writer = state.writers[usize::from(index)].clone();
        let broken = self.broken;
        let replica = self.scenario.replica;
        let next = match writer.phase {
            WritePhase::Idle if !writer.kind.through_api() => {
                self.commit(state, &mut writer, index, outcome, log);
                WritePhase::Done
            }
            WritePhase::Idle if broken == Some(Broken::NoWriteGuard) => {
                self.commit(state, &mut writer, index, outcome, log);
                WritePhase::Release
            }
            WritePhase::Idle => {
                let op = Op::Guard {
                    writer: index,
                    ttl: GUARD,
                };
                let (reply, behind) = state.redis(&self.scenario, who, op, outcome, log);
                if outcome != Outcome::RedisDown {
                    writer.guarded_at = Some(state.now);
                }
                match reply {
                    None => WritePhase::Done,
                    Some(_) if broken == Some(Broken::ReleaseBeforeCommit) => WritePhase::Release,
                    Some(_) if replica && broken != Some(Broken::GuardNotReplicated) => {
                        WritePhase::AwaitGuard(Some(behind))
                    }
                    Some(_) => WritePhase::Commit,
                }
            }
            WritePhase::AwaitGuard(_) if outcome == Outcome::Ok => {
                log.push(|| Effect::Replicated { who });
                WritePhase::Commit
            }
            WritePhase::AwaitGuard(_) => {
                log.push(|| Effect::ShortOfReplicas { who });
                WritePhase::TakeBack
            }
            WritePhase::Commit => {
                self.commit(state, &mut writer, index, outcome, log);
                if broken == Some(Broken::ReleaseBeforeCommit) {
                    WritePhase::Done
                } else {
                    WritePhase::Release
                }
            }
            WritePhase::Release | WritePhase::TakeBack => {
                let op = Op::Release {
                    writer: Some(index),
                };
                state.redis(&self.scenario, who, op, outcome, log);
                if writer.phase == WritePhase::TakeBack {
                    writer.committed = None;
                    WritePhase::Done
                } else if broken == Some(Broken::ReleaseBeforeCommit) && writer.committed.is_none()
                {
                    WritePhase::Commit
                } else {
                    WritePhase::Done
                }
            }
            WritePhase::Done => unreachable!("a write that is done takes no step"),
        };
        writer.phase = next;
        if writer.done() {
            writer.guarded_at = None;
            if let Some(version) = writer.committed.filter(|_| writer.kind.through_api()) {
                state.acknowledged = state.acknowledged.max(version);
                log.push(|| Effect::Acknowledged { who, version });
            }
        }
        state.writers[usize::from(index)] = writer;
    }

    /// The write's statement and commit, with the change record of its
    /// transaction when the scenario has the consumer.
    fn commit(
        &self,
        state: &mut State,
        writer: &mut Writer,
        index: u8,
        outcome: Outcome,
        log: &mut Log,
    ) {
        let postgres = &mut state.postgres;
        let applies = match writer.kind {
            WriteKind::Update | WriteKind::SqlUpdate | WriteKind::Delete | WriteKind::SqlDelete => {
                postgres.exists
            }
            WriteKind::SqlInsert => !postgres.exists,
        };
        if outcome != Outcome::PostgresDown && applies {
            postgres.version += 1;
            postgres.exists = !matches!(writer.kind, WriteKind::Delete | WriteKind::SqlDelete);
            if self.scenario.consumer {
                postgres.records.push((postgres.version, state.now));
            }
            if !writer.kind.through_api() {
                state.outside.push((postgres.version, state.now));
            }
        }
        writer.committed = (outcome == Outcome::Ok).then_some(state.postgres.version);
        let (kind, version) = (writer.kind, state.postgres.version);
        let changed = outcome != Outcome::PostgresDown && applies;
        log.push(|| Effect::Committed {
            who: Who::Write(index),
            kind,
            version: changed.then_some(version),
            answered: outcome == Outcome::Ok,
        });
    }

    /// The consumer's next step.
    pub(crate) fn consume_step(&self, state: &mut State, outcome: Outcome, log: &mut Log) {
        let who = Who::Consumer;
        let delete_first = self.broken == Some(Broken::OutboxDeleteBeforeApply);
        let mut consumer = state.consumer.clone();
        consumer.phase = match consumer.phase {
            ConsumerPhase::Idle => {
                consumer.claimed = state.postgres.records.len() as u8;
                log.push(|| Effect::Claimed {
                    records: consumer.claimed,
                });
                if delete_first {
                    ConsumerPhase::Commit
                } else {
                    ConsumerPhase::Void
                }
            }
            ConsumerPhase::Void => {
                let op = Op::Release { writer: None };
                let (reply, behind) = state.redis(&self.scenario, who, op, outcome, log);
                match reply {
                    None => rollback(&mut consumer, log),
                    Some(_) if delete_first => ConsumerPhase::Idle,
                    Some(_) if self.scenario.replica => ConsumerPhase::AwaitVoid(Some(behind)),
                    Some(_) => ConsumerPhase::Commit,
                }
            }
            ConsumerPhase::AwaitVoid(_) if outcome == Outcome::Ok => ConsumerPhase::Commit,
            ConsumerPhase::AwaitVoid(_) => rollback(&mut consumer, log),
            ConsumerPhase::Commit if outcome == Outcome::PostgresDown => {
                rollback(&mut consumer, log)
            }
            ConsumerPhase::Commit => {
                let claimed = usize::from(consumer.claimed);
                state.postgres.records.drain(..claimed);
                log.push(|| Effect::Deleted {
                    records: consumer.claimed,
                });
                consumer.claimed = 0;
                if delete_first {
                    ConsumerPhase::Void
                } else {
                    ConsumerPhase::Idle
                }
            }
        };
        state.consumer = consumer;
    }

    /// The consumer dies: its transaction ends, its claimed records go back.
    pub(crate) fn crash(&self, state: &mut State, log: &mut Log) {
        state.consumer.claimed = 0;
        state.consumer.phase = ConsumerPhase::Idle;
        log.push(|| Effect::Crashed);
    }
}

/// The batch failed: its transaction rolls back, its records stay.
fn rollback(consumer: &mut Consumer, log: &mut Log) -> ConsumerPhase {
    consumer.claimed = 0;
    log.push(|| Effect::RolledBack);
    ConsumerPhase::Idle
}
