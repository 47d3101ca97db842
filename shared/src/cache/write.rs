//! What writes ask of the cache (docs/cache.md, "Writes", "Writers outside
//! the API", "Key format version and deployments"): the guard before a
//! write's statement, the release after it, and the voiding of keys changed
//! by anyone else and of the keys in the formats before and after this one.

use super::connection::Op;
use super::protocol::{self, GUARD, RELEASE, evalsha, millis};
use super::{CacheError, UserCache, WriteGuard};
use uuid::Uuid;

impl UserCache {
    /// Before a write commits: add this write to the key's guard, which
    /// voids any lease and blocks new fills until every write in it has
    /// called [`UserCache::release_write`] or the guard expires (it outlives
    /// the write's own timeouts). With `CACHE_GUARD_REPLICAS`, `Ok` only
    /// once that many replicas hold the guard too, so that a failover cannot
    /// lose it; [`CacheError::Replicas`] when fewer did in time.
    pub async fn guard_write(&self, id: Uuid) -> Result<WriteGuard, CacheError> {
        let guard = WriteGuard::new();
        let key = self.key(id);
        let mut call = evalsha(&GUARD, &key);
        call.arg(&guard.token[..]).arg(millis(self.write_guard));
        match self
            .writes
            .run_replicated::<i64>(Op::on("guard", &key), &GUARD, call, self.guard_replicas)
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
        let _: i64 = self
            .writes
            .run_replicated(Op::on("release", key), &RELEASE, call, replicas)
            .await?;
        Ok(())
    }

    /// Voids the keys of users changed by a committed write, whoever made it
    /// (the consumer of the change records calls this): the release of a
    /// writer that never joined the keys' guards. A key guarded by writes in
    /// progress stays guarded, and their own releases delete it; anything
    /// else (an entry, fresh or kept, a negative entry, a fill or refresh
    /// lease) is deleted, so a lease taken before the change committed can
    /// no longer fill. The keys are voided concurrently, in every format
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
    /// The other formats' keys are voided at the same time.
    pub async fn invalidate(&self, id: Uuid) -> Result<(), CacheError> {
        let key = self.key(id);
        let mut delete = redis::cmd("DEL");
        delete.arg(&key);
        // A new id has nothing a failover could bring back: no waiting.
        let (deleted, voided) = futures_util::future::join(
            self.redis.query::<()>(Op::on("DEL", &key), &delete),
            self.void_other_formats(id, 0),
        )
        .await;
        deleted.and(voided)
    }

    /// After a write commits (or fails), before it is acknowledged:
    /// [`UserCache::release_write`], and the user's key in the other
    /// formats voided at the same time ([`UserCache::void_other_formats`]).
    pub async fn finish_write(&self, id: Uuid, guard: &WriteGuard) -> Result<(), CacheError> {
        let others = self.void_other_formats(id, self.guard_replicas);
        let (released, voided) =
            futures_util::future::join(self.release_write(id, guard), others).await;
        released.and(voided)
    }

    /// Voids user `id`'s key in the entry formats before and after this
    /// one, the keys of the versions that may serve beside this one during
    /// a gradual deployment: a lease such a version took before the write
    /// committed can no longer fill, and its next find reads the committed
    /// row (docs/cache.md, "Key format version and deployments"). As
    /// [`UserCache::void`] voids a key, so a write of that version in
    /// progress keeps its guard, whose own release deletes the key. Single-key
    /// calls of their own (on Redis Cluster each format's key is in another
    /// slot), sent concurrently with the call on the current key: on one
    /// connection they are pipelined. Waited for by `replicas` replicas, as
    /// the release.
    async fn void_other_formats(&self, id: Uuid, replicas: u32) -> Result<(), CacheError> {
        let outsider = WriteGuard::new();
        let [previous, next] = self
            .other_prefixes
            .each_ref()
            .map(|prefix| protocol::key(prefix, id));
        let (before, after) = futures_util::future::join(
            self.release_key(&previous, &outsider, replicas),
            self.release_key(&next, &outsider, replicas),
        )
        .await;
        before.and(after)
    }
}
