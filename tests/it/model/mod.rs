//! The model checker's model (`model/`) held to the real services: each
//! script of the model's Redis against the real script for every key state
//! (`scripts.rs`), and each broken variant's counterexample replayed on the
//! real Redis and Postgres (`replay.rs`).

mod replay;
mod scripts;

use std::time::Duration;
use users_api::testing;
use users_api_model::encoding::{Encoding, WRITER_TOKENS, token_bytes};
use users_api_model::redis::{Key, Op, Reply, Ttl, Value};

/// A model value on the real Redis, at one key.
struct RealKey {
    redis: redis::aio::MultiplexedConnection,
    key: String,
    encoding: Encoding,
    /// What a model tick lasts on the real clock (TTLs are scaled by it).
    tick: Duration,
}

impl RealKey {
    async fn new(key: String, tick: Duration) -> Self {
        let client = redis::Client::open(test_support::redis_url()).expect("redis url");
        Self {
            redis: client
                .get_multiplexed_async_connection()
                .await
                .expect("redis"),
            key,
            encoding: Encoding {
                fresh: users_api_model::scenario::FRESH,
            },
            tick,
        }
    }

    fn ms(&self, ticks: u8) -> u64 {
        u64::from(ticks) * u64::try_from(self.tick.as_millis()).expect("ms")
    }

    /// Puts `key` (at tick `now`) into the real Redis.
    async fn put(&mut self, key: &Option<Key>, now: u8) {
        let command = match key {
            Some(key) => {
                let mut set = redis::cmd("SET");
                set.arg(&self.key)
                    .arg(self.encoding.encode(&key.value))
                    .arg("PX")
                    .arg(self.ms(key.expires - now));
                set
            }
            None => {
                let mut delete = redis::cmd("DEL");
                delete.arg(&self.key);
                delete
            }
        };
        let () = command
            .query_async(&mut self.redis)
            .await
            .expect("put the key");
    }

    /// What the real key holds, as a model value, and its TTL in ms.
    async fn held(&mut self) -> Option<(Value, i64)> {
        let value: Option<Vec<u8>> = redis::cmd("GET")
            .arg(&self.key)
            .query_async(&mut self.redis)
            .await
            .expect("get");
        let ttl: i64 = redis::cmd("PTTL")
            .arg(&self.key)
            .query_async(&mut self.redis)
            .await
            .expect("pttl");
        value.map(|value| (self.encoding.decode(value), ttl))
    }

    /// Runs the real command or script of `op` and reads its reply as the
    /// model's.
    async fn run(&mut self, op: &Op) -> Reply {
        let script = |text: &str| redis::Script::new(text);
        match op {
            Op::Lookup { token, lease } => {
                let mut lease_value = vec![testing::LEASE];
                lease_value.extend_from_slice(&token_bytes(*token));
                let found: Option<Vec<u8>> =
                    testing::lookup_command(&self.key, &lease_value, self.ms(*lease))
                        .query_async(&mut self.redis)
                        .await
                        .expect("lookup");
                Reply::Found(found.map(|value| self.encoding.decode(value)))
            }
            Op::CompareAndSet { expected, new, ttl } => {
                let new = new
                    .as_ref()
                    .map_or(Vec::new(), |new| self.encoding.encode(new));
                let ttl = match ttl {
                    Ttl::Keep => 0,
                    Ttl::Ticks(ticks) => self.ms(*ticks),
                };
                let stored: i64 = script(testing::COMPARE_AND_SET_SCRIPT)
                    .key(&self.key)
                    .arg(self.encoding.encode(expected))
                    .arg(new)
                    .arg(ttl)
                    .invoke_async(&mut self.redis)
                    .await
                    .expect("compare-and-set");
                Reply::Int(stored)
            }
            Op::Set { value, ttl } => {
                let () = redis::cmd("SET")
                    .arg(&self.key)
                    .arg(self.encoding.encode(value))
                    .arg("PX")
                    .arg(self.ms(*ttl))
                    .query_async(&mut self.redis)
                    .await
                    .expect("set");
                Reply::Ok
            }
            Op::Guard { writer, ttl } => {
                let guarded: i64 = script(testing::GUARD_SCRIPT)
                    .key(&self.key)
                    .arg(&token_bytes(WRITER_TOKENS + writer)[..])
                    .arg(self.ms(*ttl))
                    .invoke_async(&mut self.redis)
                    .await
                    .expect("guard");
                Reply::Int(guarded)
            }
            Op::Release { writer } => {
                // The consumer's voiding: a token no guard holds.
                let token = writer.map_or(token_bytes(199), |writer| {
                    token_bytes(WRITER_TOKENS + writer)
                });
                let released: i64 = script(testing::RELEASE_SCRIPT)
                    .key(&self.key)
                    .arg(&token[..])
                    .invoke_async(&mut self.redis)
                    .await
                    .expect("release");
                Reply::Int(released)
            }
        }
    }

    async fn delete(&mut self) {
        let () = redis::cmd("DEL")
            .arg(&self.key)
            .query_async(&mut self.redis)
            .await
            .expect("del");
    }
}

/// `reply` without the model's ghosts, as the real Redis can tell it.
fn real_reply(reply: &Reply) -> Reply {
    match reply {
        Reply::Found(found) => Reply::Found(found.as_ref().map(Value::real)),
        other => other.clone(),
    }
}
