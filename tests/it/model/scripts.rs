//! Every command and script of the model's Redis against the real one, for
//! every key state: the reply, the value left in the key and its expiry
//! must be what the model says. This is what keeps the model checker's
//! Redis (`model/src/redis.rs`) from drifting from the scripts of
//! `shared/src/cache/protocol.rs`.

use super::{RealKey, real_reply};
use std::time::Duration;
use users_api_model::redis::{Entry, Key, Op, Ttl, Value, apply};

/// Model TTLs are scaled to this many ms per tick, so that a TTL read back
/// tells which tick the key expires at.
const TICK: Duration = Duration::from_secs(10);

fn entry(version: u8, refreshing: Option<(u8, u8)>) -> Value {
    Value::Entry(Entry {
        version,
        stored: 0,
        refreshing,
    })
}

/// Every kind of value a key can hold, and an empty key.
fn key_states() -> Vec<Option<Key>> {
    let values = [
        entry(1, None),
        entry(1, Some((1, 5))),
        Value::Negative { read_at: 0 },
        Value::Lease(3),
        Value::Guard(0b01),
        Value::Guard(0b10),
        Value::Guard(0b11),
        Value::Unreadable,
    ];
    let mut states = vec![None];
    states.extend(
        values
            .into_iter()
            .map(|value| Some(Key { value, expires: 4 })),
    );
    states
}

/// Every command and script, with arguments that match and that do not
/// match each key state.
fn ops() -> Vec<Op> {
    let mut ops = vec![
        Op::Lookup { token: 7, lease: 1 },
        Op::Set {
            value: entry(2, None),
            ttl: 3,
        },
        Op::Guard { writer: 0, ttl: 3 },
        Op::Guard { writer: 1, ttl: 3 },
        Op::Release { writer: Some(0) },
        Op::Release { writer: Some(1) },
        Op::Release { writer: None },
    ];
    let expected = key_states().into_iter().flatten().map(|key| key.value);
    for expected in expected {
        for new in [None, Some(entry(2, None)), Some(Value::Lease(9))] {
            for ttl in [Ttl::Keep, Ttl::Ticks(2)] {
                ops.push(Op::CompareAndSet {
                    expected: expected.clone(),
                    new: new.clone(),
                    ttl,
                });
            }
        }
    }
    ops
}

#[tokio::test]
async fn every_script_does_on_the_real_redis_what_the_model_says_for_every_key_state() {
    // Arrange
    let key = format!("model-scripts-{}:v5:user:1", uuid::Uuid::new_v4());
    let mut real = RealKey::new(key, TICK).await;
    let mut checked = 0;

    for state in key_states() {
        for op in ops() {
            real.put(&state, 0).await;
            let mut model = state.clone();

            // Act
            let expected = apply(&mut model, &op, 0);
            let reply = real.run(&op).await;
            let held = real.held().await;

            // Assert
            let case = format!("{op:?} on {state:?}");
            assert_eq!(reply, real_reply(&expected), "reply of {case}");
            let model_value = model.as_ref().map(|key| key.value.real());
            let real_value = held.as_ref().map(|(value, _)| value.real());
            assert_eq!(real_value, model_value, "value after {case}");
            if let (Some(model), Some((_, ttl))) = (&model, &held) {
                let expires_ms = u64::from(model.expires) * TICK.as_millis() as u64;
                let ttl = u64::try_from(*ttl).expect("an expiry");
                assert!(
                    ttl <= expires_ms && ttl + 2_000 > expires_ms,
                    "expiry after {case}: {ttl} ms, the model says tick {}",
                    model.expires
                );
            }
            checked += 1;
        }
    }
    real.delete().await;
    assert_eq!(checked, key_states().len() * ops().len());
    assert!(checked > 400, "{checked} cases");
}
