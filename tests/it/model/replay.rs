//! Each broken variant's counterexample, replayed on the real Redis and
//! Postgres: every command the model's trace sends goes to the real Redis
//! with the real scripts, every statement to the real Postgres, and time
//! passes on the real clock. Every reply must be the model's, the key must
//! hold what the model's key holds after every step, and the find the
//! checker caught answers, from the real services, a user older than the
//! real Postgres holds: the stale read is real, not an artefact of the
//! model.
//!
//! `guard-not-replicated` needs a replica and a failover; its interleaving
//! is `redis_failover.rs`'s control test, which asserts that stale read.

use super::{RealKey, real_reply};
use std::time::Duration;
use test_support::TestEnv;
use users_api_model::broken::Broken;
use users_api_model::find::Answer;
use users_api_model::scenario::WriteKind;
use users_api_model::system::Action;
use users_api_model::trace::Effect;
use users_api_model::{Protocol, scenario_named};
use uuid::Uuid;

/// A model tick on the real clock.
const TICK: Duration = Duration::from_millis(250);

/// The real row's version, or `None` when it is gone.
async fn row(pg: &tokio_postgres::Client, id: Uuid) -> Option<u8> {
    pg.query_opt("SELECT version FROM users WHERE id = $1", &[&id])
        .await
        .expect("select")
        .map(|row| u8::try_from(row.get::<_, i64>(0)).expect("a model version"))
}

async fn commit(pg: &tokio_postgres::Client, id: Uuid, kind: WriteKind, version: u8) {
    let statement = match kind {
        WriteKind::Update | WriteKind::SqlUpdate => {
            "UPDATE users SET name = 'Version ' || $2::bigint, version = $2::bigint WHERE id = $1"
        }
        WriteKind::Delete | WriteKind::SqlDelete => {
            "DELETE FROM users WHERE id = $1 AND $2::bigint > 0"
        }
        WriteKind::SqlInsert => {
            "INSERT INTO users (id, email, name, version) \
             VALUES ($1, 'model@example.com', 'Version ' || $2::bigint, $2::bigint)"
        }
    };
    pg.execute(statement, &[&id, &i64::from(version)])
        .await
        .expect("the write's statement");
}

/// Replays `broken`'s counterexample; returns the stale answer it ended
/// with and what the real Postgres held at that moment.
async fn replay(broken: Broken) -> (Answer, Option<u8>) {
    let scenario = scenario_named(broken.scenario()).expect("its scenario");
    let counterexample = Protocol::new(scenario, Some(broken))
        .check()
        .violation
        .unwrap_or_else(|| panic!("{} has a counterexample", broken.name()));
    let env = TestEnv::new().await;
    let pg = env.own_pg().await;
    let id = Uuid::now_v7();
    pg.execute(
            "INSERT INTO users (id, email, name, version) VALUES ($1, 'model@example.com', 'Version 1', 1)",
            &[&id],
        )
        .await
        .expect("the user at v1");
    let mut real = RealKey::new(env.cache_key(id), TICK).await;
    real.put(counterexample.initial.redis.primary(), 0).await;
    let mut stale = None;
    for (action, effects, state) in &counterexample.steps {
        if *action == Action::Tick {
            tokio::time::sleep(TICK).await;
        }
        for effect in effects {
            match effect {
                Effect::Redis {
                    op, times, reply, ..
                } => {
                    let mut got = None;
                    for _ in 0..*times {
                        got = Some(real.run(op).await);
                    }
                    if let Some(reply) = reply {
                        assert_eq!(got.as_ref(), Some(&real_reply(reply)), "{effect}");
                    }
                }
                Effect::Read {
                    row: Some(read), ..
                } => {
                    let expected = read.exists.then_some(read.version);
                    assert_eq!(row(&pg, id).await, expected, "{effect}");
                }
                Effect::Committed {
                    kind,
                    version: Some(version),
                    ..
                } => commit(&pg, id, *kind, *version).await,
                Effect::Deleted { .. } => {
                    pg.execute("DELETE FROM user_changes WHERE user_id = $1", &[&id])
                        .await
                        .expect("delete the records");
                }
                Effect::Answered {
                    answer,
                    required,
                    read,
                    ..
                } => {
                    let version = answer.version().expect("a user or a 404");
                    if version < *required.max(read) {
                        stale = Some((*answer, row(&pg, id).await));
                    }
                }
                _ => {}
            }
        }
        let model = state.redis.primary().as_ref().map(|key| key.value.real());
        let held = real.held().await.map(|(value, _)| value.real());
        assert_eq!(held, model, "the key after {effects:?}");
    }
    stale.unwrap_or_else(|| panic!("{}: no stale answer replayed", broken.name()))
}

/// Replays `broken`'s counterexample and checks that its answer is older
/// than what Postgres held when it was given.
async fn assert_replays_stale(broken: Broken) {
    match replay(broken).await {
        (Answer::User(answered), Some(current)) => assert!(
            answered < current,
            "{}: answered v{answered}, Postgres at v{current}",
            broken.name()
        ),
        (Answer::User(_), None) => {}
        (Answer::Gone(_), Some(_)) => {}
        other => panic!("{}: not a stale answer: {other:?}", broken.name()),
    }
}

#[tokio::test]
async fn a_fill_with_a_plain_set_answers_a_stale_user_on_the_real_services() {
    assert_replays_stale(Broken::PlainSetFill).await;
}

#[tokio::test]
async fn a_write_without_its_guard_answers_a_stale_user_on_the_real_services() {
    assert_replays_stale(Broken::NoWriteGuard).await;
}

#[tokio::test]
async fn a_release_before_the_commit_answers_a_stale_user_on_the_real_services() {
    assert_replays_stale(Broken::ReleaseBeforeCommit).await;
}

#[tokio::test]
async fn a_kept_entry_answered_after_a_delete_is_stale_on_the_real_services() {
    assert_replays_stale(Broken::StaleAfterDelete).await;
}

#[tokio::test]
async fn joining_a_running_flight_answers_a_stale_user_on_the_real_services() {
    assert_replays_stale(Broken::JoinRunningFlight).await;
}

#[tokio::test]
async fn deleting_a_record_before_its_voiding_answers_a_stale_user_on_the_real_services() {
    assert_replays_stale(Broken::OutboxDeleteBeforeApply).await;
}
