//! The Redis cache of user responses, with fill leases and write guards: the
//! lease scheme of *Scaling Memcache at Facebook* (NSDI 2013) on one key per
//! user. docs/cache.md is the full description and why it is safe.
//!
//! - [`protocol`]: the key format, the stored values, the commands and
//!   scripts (pure);
//! - [`lease`]: lease and writer tokens, TTL jitter;
//! - [`connection`]: standalone or cluster, TLS, the bounded call and its
//!   retry, a write followed by `WAIT` for replicas;
//! - [`standalone`]: a standalone server's connection, replaced when the
//!   server answers as no primary;
//! - here, [`UserCache`]: what the service asks of the cache; in
//!   [`write`], what writes ask of it: the guard, the release, and the
//!   voiding of keys changed outside the API and of the other formats' keys;
//!   in [`audit`], what the auditor reads: keys' raw values.

mod audit;
mod connection;
mod lease;
pub(crate) mod protocol;
mod standalone;
mod write;

pub use audit::Held;
pub use connection::CacheError;
pub use lease::{Lease, WriteGuard, draw};
pub use protocol::Cached;

use crate::config::{CacheConfig, RedisConfig};
use connection::{Op, Redis};
use protocol::{COMPARE_AND_SET, Stored, millis};
use std::time::Duration;
use uuid::Uuid;

/// A `PING`: no key.
const PING: Op<'static> = Op {
    name: "PING",
    key: None,
};

/// What [`UserCache::lookup`] found.
#[derive(Debug)]
pub enum Lookup {
    /// The user's version, owner, response body and times: fresh or not,
    /// being refreshed or not.
    Hit(Cached),
    /// A cached "no such user".
    NotFound,
    /// The key was empty and this caller now holds the fill lease.
    Leased(Lease),
    /// Another caller holds the fill lease.
    Filling,
    /// Writes are in progress; read Postgres and do not fill.
    Writing,
    /// A value this version cannot read; see [`UserCache::take_over`].
    Unreadable(Vec<u8>),
}

impl Lookup {
    /// What the lookup's reply means: `found`, or, when the key was empty,
    /// the `lease` the lookup took. Pure, so that the model checker (`model/`)
    /// reads its model Redis's replies with this same code.
    pub(crate) fn read(found: Option<Vec<u8>>, lease: Lease) -> Self {
        let Some(value) = found else {
            return Self::Leased(lease);
        };
        match protocol::decode(value) {
            Stored::User(cached) => Self::Hit(cached),
            Stored::NotFound => Self::NotFound,
            Stored::Filling => Self::Filling,
            Stored::Writing => Self::Writing,
            Stored::Unreadable(value) => Self::Unreadable(value),
        }
    }
}

/// What a lease holder stores.
pub enum Entry<'a> {
    User {
        version: i64,
        owner: Option<&'a str>,
        body: &'a [u8],
    },
    NotFound,
}

#[derive(Clone)]
pub struct UserCache {
    redis: Redis,
    /// What guards and releases run on: `redis` itself, or, when they wait
    /// for replicas, a connection of their own, so that a `WAIT` (which
    /// holds up its connection until the replicas answer) never delays the
    /// lookups of other requests sharing `redis`.
    writes: Redis,
    /// `CACHE_GUARD_REPLICAS`.
    guard_replicas: u32,
    prefix: String,
    /// The key prefixes of the entry formats before and after this one
    /// (`protocol.rs`), which every invalidation voids too.
    other_prefixes: [String; 2],
    ttl: Duration,
    fail_safe: Duration,
    negative_ttl: Duration,
    lease: Duration,
    write_guard: Duration,
}

impl UserCache {
    /// Creates the client without waiting for Redis: a cold start while
    /// Redis is down must still succeed. See [`UserCache::ping`].
    pub fn new(
        redis: &RedisConfig,
        cache: &CacheConfig,
    ) -> Result<Self, Box<dyn std::error::Error + Send + Sync + 'static>> {
        let lookups = Redis::new(redis)?;
        let writes = match cache.guard_replicas {
            0 => lookups.clone(),
            _ => Redis::new(redis)?,
        };
        Ok(Self {
            redis: lookups,
            writes,
            guard_replicas: cache.guard_replicas,
            prefix: protocol::key_prefix(&cache.key_prefix),
            other_prefixes: protocol::other_key_prefixes(&cache.key_prefix),
            ttl: cache.ttl,
            fail_safe: cache.fail_safe,
            negative_ttl: cache.negative_ttl,
            lease: cache.lease,
            write_guard: cache.write_guard,
        })
    }

    /// Opens the connection now (during init) and checks it answers; the
    /// writes' own connection too, when they have one, so that the first
    /// write does not spend its Redis bound connecting.
    pub async fn ping(&self) -> Result<(), CacheError> {
        let ping = redis::cmd("PING");
        if self.guard_replicas == 0 {
            return self.redis.query(PING, &ping).await;
        }
        let (lookups, writes) = tokio::join!(
            self.redis.query::<()>(PING, &ping),
            self.writes.query::<()>(PING, &ping)
        );
        lookups.and(writes)
    }

    /// The Redis key of user `id`.
    pub fn key(&self, id: Uuid) -> String {
        protocol::key(&self.prefix, id)
    }

    /// One round trip: the entry, or the fill lease when there is none.
    pub async fn lookup(&self, id: Uuid) -> Result<Lookup, CacheError> {
        let lease = Lease::new();
        let key = self.key(id);
        let lookup = protocol::lookup_command(&key, &lease.token, millis(self.lease));
        let found: Option<Vec<u8>> = self.redis.query(Op::on("lookup", &key), &lookup).await?;
        Ok(Lookup::read(found, lease))
    }

    /// Stores `entry`, stamped `now_ms`, if `lease` still holds the key.
    /// Returns whether it did. A user is fresh for `CACHE_TTL_SECONDS`
    /// (jittered) and kept `CACHE_FAIL_SAFE_SECONDS` longer; a "no such
    /// user" only for `CACHE_NEGATIVE_TTL_SECONDS`.
    pub async fn fill(
        &self,
        id: Uuid,
        lease: &Lease,
        entry: Entry<'_>,
        now_ms: u64,
    ) -> Result<bool, CacheError> {
        let (value, ttl) = match entry {
            Entry::User {
                version,
                owner,
                body,
            } => {
                let fresh = lease.jittered(self.ttl);
                let value = protocol::encode_user(now_ms, fresh, version, owner, body);
                (value, fresh.saturating_add(millis(self.fail_safe)))
            }
            Entry::NotFound => (protocol::encode_not_found(), millis(self.negative_ttl)),
        };
        self.compare_and_set(id, lease.held(), &value, ttl).await
    }

    /// Marks `cached` as being refreshed by this caller, unless its value
    /// changed: the refresh lease. Other callers keep reading the entry.
    pub async fn take_refresh(
        &self,
        id: Uuid,
        cached: &Cached,
        now_ms: u64,
    ) -> Result<Option<Lease>, CacheError> {
        let mut lease = Lease::new();
        let mut token = [0; protocol::TOKEN_LEN];
        token.copy_from_slice(&lease.token[1..]);
        let entry = &cached.value[cached.entry_start..];
        let until = now_ms.saturating_add(millis(self.lease));
        let marked = protocol::encode_refreshing(until, &token, entry);
        let entry_start = marked.len() - entry.len();
        // `0`: the entry keeps its expiry.
        let taken = self.compare_and_set(id, &cached.value, &marked, 0).await?;
        lease.refreshing = Some((marked, entry_start));
        Ok(taken.then_some(lease))
    }

    /// Gives `lease` back at once, if it still holds the key: a miss's lease
    /// is deleted, a refresh's marker taken off its entry. So a fill that
    /// failed blocks no one until the lease would have expired.
    pub async fn give_back(&self, id: Uuid, lease: &Lease) -> Result<(), CacheError> {
        let (restored, ttl) = match &lease.refreshing {
            Some((marked, entry_start)) => (&marked[*entry_start..], 0),
            None => (&[][..], 0),
        };
        self.compare_and_set(id, lease.held(), restored, ttl)
            .await
            .map(drop)
    }

    /// [`COMPARE_AND_SET_SCRIPT`](protocol::COMPARE_AND_SET_SCRIPT): `ttl_ms`
    /// 0 keeps the key's expiry, an empty `new` deletes the key.
    async fn compare_and_set(
        &self,
        id: Uuid,
        expected: &[u8],
        new: &[u8],
        ttl_ms: u64,
    ) -> Result<bool, CacheError> {
        let key = self.key(id);
        let mut invocation = COMPARE_AND_SET.key(&key);
        invocation.arg(expected).arg(new).arg(ttl_ms);
        let stored: i64 = self
            .redis
            .invoke(Op::on("compare_and_set", &key), &invocation)
            .await?;
        Ok(stored == 1)
    }

    /// Replaces an unreadable `value` with a new lease, unless it changed.
    pub async fn take_over(&self, id: Uuid, value: &[u8]) -> Result<Option<Lease>, CacheError> {
        let lease = Lease::new();
        let taken = self
            .compare_and_set(id, value, &lease.token, millis(self.lease))
            .await?;
        Ok(taken.then_some(lease))
    }
}
