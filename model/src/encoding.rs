//! How the model's values are written on the real Redis: the production
//! encoders and decoder, with the model's times and tokens. The decisions of
//! the model's finds read these bytes, and the tests that hold the model to
//! the real scripts write and read them.

use crate::redis::{Entry, Token, Value};
use users_api::testing;

/// A tick of model time, in milliseconds of the real clock.
pub const TICK_MS: u64 = 1000;
/// The wall clock at tick 0 (entries' stored times are wall-clock ms).
pub const EPOCH_MS: u64 = 1_800_000_000_000;

/// How the model's values are written on the real Redis: the production
/// encoders, with the model's times and tokens.
pub struct Encoding {
    /// How many ticks an entry is fresh for.
    pub fresh: u8,
}

impl Encoding {
    /// The real bytes of `value`.
    pub fn encode(&self, value: &Value) -> Vec<u8> {
        match value {
            Value::Entry(entry) => self.encode_entry(entry),
            Value::Negative { .. } => testing::encode_not_found(),
            Value::Lease(token) => {
                let mut value = vec![testing::LEASE];
                value.extend_from_slice(&token_bytes(*token));
                value
            }
            Value::Guard(writers) => {
                let mut value = b"w".to_vec();
                for writer in (0..8).filter(|writer| writers & 1 << writer != 0) {
                    value.extend_from_slice(&token_bytes(WRITER_TOKENS + writer));
                }
                value
            }
            Value::Unreadable => b"v4:0:legacy".to_vec(),
        }
    }

    fn encode_entry(&self, entry: &Entry) -> Vec<u8> {
        let body = user_body(entry.version);
        let plain = testing::encode_user(
            ms(entry.stored),
            u64::from(self.fresh) * TICK_MS,
            i64::from(entry.version),
            None,
            &body,
        );
        match entry.refreshing {
            None => plain,
            Some((until, token)) => {
                testing::encode_refreshing(ms(until), &token_bytes(token), &plain)
            }
        }
    }
}

/// The wall-clock ms of tick `tick`.
pub fn ms(tick: u8) -> u64 {
    EPOCH_MS + u64::from(tick) * TICK_MS
}

/// Writers' tokens are numbered from here, finds' below.
pub const WRITER_TOKENS: u8 = 200;

/// The real token of model token `token`: 24 bytes nobody else uses.
pub fn token_bytes(token: Token) -> [u8; testing::TOKEN_LEN] {
    let mut bytes = *b"model-token-000000000000";
    let digits = format!("{token:03}");
    bytes[testing::TOKEN_LEN - 3..].copy_from_slice(digits.as_bytes());
    bytes
}

/// The JSON body of the model's user at `version` (a real user's shape).
pub fn user_body(version: u8) -> Vec<u8> {
    format!(
        r#"{{"id":"0190f0c2-1111-7000-8000-0000000000{version:02x}","email":"v{version}@example.com","name":"Version {version}","created_at":"2026-01-01T00:00:00Z","updated_at":"2026-01-01T00:00:00Z"}}"#
    )
    .into_bytes()
}

impl Encoding {
    /// The model value of the real bytes `value` (a negative entry's ghost
    /// is 0): the reverse of [`Encoding::encode`], through the production
    /// decoder.
    pub fn decode(&self, value: Vec<u8>) -> Value {
        let token_at = |bytes: &[u8]| {
            let digits = std::str::from_utf8(&bytes[testing::TOKEN_LEN - 3..testing::TOKEN_LEN]);
            digits.ok().and_then(|digits| digits.parse::<u8>().ok())
        };
        let tick = |ms: u64| u8::try_from((ms - EPOCH_MS) / TICK_MS).expect("a model tick");
        match value.first() {
            Some(b'l') if value.len() == 1 + testing::TOKEN_LEN => {
                Value::Lease(token_at(&value[1..]).expect("a model token"))
            }
            Some(b'w') => Value::Guard(
                value[1..]
                    .chunks(testing::TOKEN_LEN)
                    .map(|token| token_at(token).expect("a model token") - WRITER_TOKENS)
                    .fold(0, |writers, writer| writers | 1 << writer),
            ),
            _ => match testing::decode(value.clone()) {
                testing::Stored::User(cached) => {
                    let refreshing = cached.refreshing_until_ms.map(|until| {
                        let colon = value.iter().position(|&byte| byte == b':').expect("marker");
                        (
                            tick(until),
                            token_at(&value[colon + 1..]).expect("a model token"),
                        )
                    });
                    Value::Entry(Entry {
                        version: u8::try_from(cached.version).expect("a model version"),
                        stored: tick(cached.stored_ms),
                        refreshing,
                    })
                }
                testing::Stored::NotFound => Value::Negative { read_at: 0 },
                _ => Value::Unreadable,
            },
        }
    }
}
