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
//! - here, [`UserCache`]: what the service asks of the cache.

mod connection;
mod lease;
pub(crate) mod protocol;
mod standalone;

pub use connection::CacheError;
pub use lease::{Lease, WriteGuard, draw};
pub use protocol::Cached;

use crate::config::{CacheConfig, RedisConfig};
use connection::Redis;
use protocol::{COMPARE_AND_SET, GUARD, RELEASE, Stored, evalsha, millis};
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
    /// What guards and releases run on: `redis` itself, or, when they wait
    /// for replicas, a connection of their own, so that a `WAIT` (which
    /// holds up its connection until the replicas answer) never delays the
    /// lookups of other requests sharing `redis`.
    writes: Redis,
    /// `CACHE_GUARD_REPLICAS`.
    guard_replicas: u32,
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
            previous_prefix: protocol::previous_key_prefix(&cache.key_prefix),
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
            return self.redis.query(&ping).await;
        }
        let (lookups, writes) = tokio::join!(
            self.redis.query::<()>(&ping),
            self.writes.query::<()>(&ping)
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
    /// the write's own timeouts). With `CACHE_GUARD_REPLICAS`, `Ok` only
    /// once that many replicas hold the guard too, so that a failover cannot
    /// lose it; [`CacheError::Replicas`] when fewer did in time.
    pub async fn guard_write(&self, id: Uuid) -> Result<WriteGuard, CacheError> {
        let guard = WriteGuard::new();
        let mut call = evalsha(&GUARD, &self.key(id));
        call.arg(&guard.token[..]).arg(millis(self.write_guard));
        match self
            .writes
            .run_replicated::<i64>(&GUARD, call, self.guard_replicas)
            .await
        {
            Ok(_) => Ok(guard),
            Err(short @ CacheError::Replicas { .. }) => {
                // The write will not run: take it out of the guard on the
                // primary, without waiting (it changed nothing), so the key
                // is not kept from fills for the guard's lifetime. If this
                // fails too, the guard expires.
                let _ = self.release(id, &guard, 0).await;
                Err(short)
            }
            Err(error) => Err(error),
        }
    }

    /// After a write commits (or fails): take it out of the key's guard,
    /// deleting the key when no other write is in it, so the next `find`
    /// reads the committed row and fills. With `CACHE_GUARD_REPLICAS`,
    /// [`CacheError::Replicas`] when fewer replicas than that acknowledged
    /// the release in time.
    pub async fn release_write(&self, id: Uuid, guard: &WriteGuard) -> Result<(), CacheError> {
        self.release(id, guard, self.guard_replicas).await
    }

    async fn release(&self, id: Uuid, guard: &WriteGuard, replicas: u32) -> Result<(), CacheError> {
        self.release_key(&self.key(id), guard, replicas).await
    }

    /// The release script on `key`, then `WAIT replicas`.
    async fn release_key(
        &self,
        key: &str,
        guard: &WriteGuard,
        replicas: u32,
    ) -> Result<(), CacheError> {
        let mut call = evalsha(&RELEASE, key);
        call.arg(&guard.token[..]);
        let _: i64 = self.writes.run_replicated(&RELEASE, call, replicas).await?;
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
    /// other; `Err` when any of them failed. With `CACHE_GUARD_REPLICAS`,
    /// each voiding waits for that many replicas too ([`CacheError::Replicas`]
    /// when fewer acknowledged), so that the consumer deletes a change record
    /// only once its voiding would survive a failover.
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
        // A new id has nothing a failover could bring back: no waiting.
        let (deleted, voided) =
            futures_util::future::join(self.redis.query::<()>(&delete), self.void_previous(id, 0))
                .await;
        deleted.and(voided)
    }

    /// After a write commits (or fails), before it is acknowledged:
    /// [`UserCache::release_write`], and the user's key in the previous
    /// format voided at the same time ([`UserCache::void_previous`]).
    pub async fn finish_write(&self, id: Uuid, guard: &WriteGuard) -> Result<(), CacheError> {
        let previous = self.void_previous(id, self.guard_replicas);
        let (released, voided) =
            futures_util::future::join(self.release_write(id, guard), previous).await;
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
    /// current key: on one connection the two are pipelined. Waited for by
    /// `replicas` replicas, as the release.
    async fn void_previous(&self, id: Uuid, replicas: u32) -> Result<(), CacheError> {
        let outsider = WriteGuard::new();
        let key = protocol::key(&self.previous_prefix, id);
        self.release_key(&key, &outsider, replicas).await
    }
}
