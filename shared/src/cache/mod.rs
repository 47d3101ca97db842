//! The Redis cache of user responses, with fill leases and write guards: the
//! lease scheme of *Scaling Memcache at Facebook* (NSDI 2013) on one key per
//! user. docs/cache.md is the full description and why it is safe.
//!
//! - [`protocol`]: the key format, the stored values, the commands and
//!   scripts (pure);
//! - [`lease`]: lease and writer tokens, TTL jitter;
//! - [`connection`]: standalone or cluster, TLS, the bounded call and its
//!   retry;
//! - here, [`UserCache`]: what the service asks of the cache.

mod connection;
mod lease;
pub(crate) mod protocol;

pub use connection::CacheError;
pub use lease::{Lease, WriteGuard, draw};
pub use protocol::Cached;

use crate::config::{CacheConfig, RedisConfig};
use connection::Redis;
use protocol::{COMPARE_AND_SET, GUARD, RELEASE, Stored, millis};
use std::time::Duration;
use uuid::Uuid;

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
    prefix: String,
    /// The key prefix of the previous entry format (`protocol.rs`).
    previous_prefix: String,
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
        Ok(Self {
            redis: Redis::new(redis)?,
            prefix: protocol::key_prefix(&cache.key_prefix),
            previous_prefix: protocol::previous_key_prefix(&cache.key_prefix),
            ttl: cache.ttl,
            fail_safe: cache.fail_safe,
            negative_ttl: cache.negative_ttl,
            lease: cache.lease,
            write_guard: cache.write_guard,
        })
    }

    /// Opens the connection now (during init) and checks it answers.
    pub async fn ping(&self) -> Result<(), CacheError> {
        self.redis.query(&redis::cmd("PING")).await
    }

    /// The Redis key of user `id`.
    pub fn key(&self, id: Uuid) -> String {
        protocol::key(&self.prefix, id)
    }

    /// One round trip: the entry, or the fill lease when there is none.
    pub async fn lookup(&self, id: Uuid) -> Result<Lookup, CacheError> {
        let lease = Lease::new();
        let lookup = protocol::lookup_command(&self.key(id), &lease.token, millis(self.lease));
        let found: Option<Vec<u8>> = self.redis.query(&lookup).await?;
        let Some(value) = found else {
            return Ok(Lookup::Leased(lease));
        };
        Ok(match protocol::decode(value) {
            Stored::User(cached) => Lookup::Hit(cached),
            Stored::NotFound => Lookup::NotFound,
            Stored::Filling => Lookup::Filling,
            Stored::Writing => Lookup::Writing,
            Stored::Unreadable(value) => Lookup::Unreadable(value),
        })
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
        let mut invocation = COMPARE_AND_SET.key(self.key(id));
        invocation.arg(expected).arg(new).arg(ttl_ms);
        let stored: i64 = self.redis.invoke(&invocation).await?;
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

    /// Before a write commits: add this write to the key's guard, which
    /// voids any lease and blocks new fills until every write in it has
    /// called [`UserCache::release_write`] or the guard expires (it outlives
    /// the write's own timeouts).
    pub async fn guard_write(&self, id: Uuid) -> Result<WriteGuard, CacheError> {
        let guard = WriteGuard::new();
        let mut invocation = GUARD.key(self.key(id));
        invocation
            .arg(&guard.token[..])
            .arg(millis(self.write_guard));
        let _: i64 = self.redis.invoke(&invocation).await?;
        Ok(guard)
    }

    /// After a write commits (or fails): take it out of the key's guard,
    /// deleting the key when no other write is in it, so the next `find`
    /// reads the committed row and fills.
    pub async fn release_write(&self, id: Uuid, guard: &WriteGuard) -> Result<(), CacheError> {
        let mut invocation = RELEASE.key(self.key(id));
        invocation.arg(&guard.token[..]);
        let _: i64 = self.redis.invoke(&invocation).await?;
        Ok(())
    }

    /// Voids the keys of users changed by a committed write, whoever made it
    /// (the consumer of the change records calls this): the release of a
    /// writer that never joined the keys' guards. A key guarded by writes in
    /// progress stays guarded, and their own releases delete it; anything
    /// else (an entry, fresh or kept, a negative entry, a fill or refresh
    /// lease) is deleted, so a lease taken before the change committed can
    /// no longer fill. The keys are voided concurrently, in both formats
    /// ([`UserCache::finish_write`]), each call bounded and retried as any
    /// other; `Err` when any of them failed.
    pub async fn void(&self, ids: &[Uuid]) -> Result<(), CacheError> {
        let outsider = WriteGuard::new();
        let releases = ids.iter().map(|id| self.finish_write(*id, &outsider));
        futures_util::future::try_join_all(releases).await.map(drop)
    }

    /// Deletes the key (entry, lease or negative entry): `create` clears a
    /// "no such user" this way. Writes to existing users use the guard.
    /// The previous format's key is voided at the same time.
    pub async fn invalidate(&self, id: Uuid) -> Result<(), CacheError> {
        let mut delete = redis::cmd("DEL");
        delete.arg(self.key(id));
        let (deleted, voided) =
            futures_util::future::join(self.redis.query::<()>(&delete), self.void_previous(id))
                .await;
        deleted.and(voided)
    }

    /// After a write commits (or fails), before it is acknowledged:
    /// [`UserCache::release_write`], and the user's key in the previous
    /// format voided at the same time ([`UserCache::void_previous`]).
    pub async fn finish_write(&self, id: Uuid, guard: &WriteGuard) -> Result<(), CacheError> {
        let (released, voided) =
            futures_util::future::join(self.release_write(id, guard), self.void_previous(id)).await;
        released.and(voided)
    }

    /// Voids user `id`'s key in the previous entry format, the key of the
    /// version before this one, which may still serve beside it (a gradual
    /// deployment): a lease that version took before the write committed
    /// can no longer fill, and its next find reads the committed row
    /// (docs/cache.md, "Key format version and deployments"). As
    /// [`UserCache::void`] voids a key, so a write of that version in
    /// progress keeps its guard, whose own release deletes the key. One
    /// single-key call of its own: on Redis Cluster the two formats' keys
    /// are in different slots. Sent concurrently with the call on the
    /// current key: on one connection the two are pipelined.
    async fn void_previous(&self, id: Uuid) -> Result<(), CacheError> {
        let outsider = WriteGuard::new();
        let mut invocation = RELEASE.key(protocol::key(&self.previous_prefix, id));
        invocation.arg(&outsider.token[..]);
        let _: i64 = self.redis.invoke(&invocation).await?;
        Ok(())
    }
}
