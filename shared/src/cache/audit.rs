//! What the auditor asks of the cache (docs/cache.md, "Auditor"): the raw
//! values of some users' keys, each a single-key `GET` of its own (sent at
//! once, so pipelined on one connection, and spread over the slots' nodes on
//! Redis Cluster: no `MGET` across slots, no `SCAN`), and what such a value
//! holds, read with the protocol's own decoder.

use super::connection::Op;
use super::protocol::{self, Stored};
use super::{CacheError, UserCache};
use uuid::Uuid;

/// What a key held, as the auditor judges it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    /// A user (being refreshed or not): its version, and when it was stored
    /// (ms since the epoch, the filler's clock).
    User { version: i64, stored_ms: u64 },
    /// A cached "no such user".
    NotFound,
    /// A write's guard: writes are in progress.
    Writing,
    /// A fill lease, or a value no version of this format reads: nothing a
    /// find would answer.
    Nothing,
}

impl Held {
    /// What `value`, as read from a user's key, holds.
    pub fn of(value: &[u8]) -> Self {
        match protocol::decode(value.to_vec()) {
            Stored::User(cached) => Self::User {
                version: cached.version,
                stored_ms: cached.stored_ms,
            },
            Stored::NotFound => Self::NotFound,
            Stored::Writing => Self::Writing,
            Stored::Filling | Stored::Unreadable(_) => Self::Nothing,
        }
    }
}

impl UserCache {
    /// The raw value of each of `ids`' keys, in their order (`None`: no
    /// key), read without touching them: no lease is taken, nothing expires
    /// sooner. `Err` when any read failed.
    pub async fn peek(&self, ids: &[Uuid]) -> Result<Vec<Option<Vec<u8>>>, CacheError> {
        let reads = ids.iter().map(|id| {
            let key = self.key(*id);
            let mut get = redis::cmd("GET");
            get.arg(&key);
            async move {
                self.redis
                    .query::<Option<Vec<u8>>>(Op::on("GET", &key), &get)
                    .await
            }
        });
        futures_util::future::try_join_all(reads).await
    }
}
