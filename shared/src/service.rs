//! The users service: where cache-aside and invalidation live.
//!
//! `find` asks Redis once: a hit is answered from the cached bytes; a miss takes
//! the key's fill lease, reads Postgres and fills only if the lease survived.
//! Other callers that miss while a fill is in flight wait for it briefly
//! (`CACHE_FILL_WAIT_MS`) instead of all querying Postgres (no stampede).
//!
//! A write joins the key's guard before it touches Postgres (refusing with 503
//! when Redis cannot take the guard, so no stale entry can outlive the write)
//! and leaves it after the commit; the last writer out deletes the key. Together with the lease check this gives:
//! once `update` or `delete` has returned success, no later `find` returns
//! the previous value. See `cache.rs` for the key states.

use crate::cache::{CacheError, Entry, Lease, Lookup, UserCache, WriteGuard, encode_value};
use crate::config::CacheConfig;
use crate::error::ApiError;
use crate::pause::PausePoint;
use crate::store::{UserStore, Written};
use crate::user::{NewUser, User};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use uuid::Uuid;

/// Where a `find` answer came from; sent as the `x-cache` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    /// Served from Redis.
    Hit,
    /// Read from Postgres (and stored in Redis when this caller held the lease).
    Miss,
    /// Redis was unavailable; read from Postgres without it.
    Bypass,
}

impl CacheStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::Miss => "miss",
            Self::Bypass => "bypass",
        }
    }

    /// The value of an `x-cache` header.
    pub fn from_header(value: &[u8]) -> Option<Self> {
        match value {
            b"hit" => Some(Self::Hit),
            b"miss" => Some(Self::Miss),
            b"bypass" => Some(Self::Bypass),
            _ => None,
        }
    }
}

/// A user's JSON body and how it was obtained.
#[derive(Debug)]
pub struct Found {
    pub body: Vec<u8>,
    /// The user's version, sent as the ETag.
    pub version: i64,
    pub cache: CacheStatus,
}

/// One page of `list`.
#[derive(Debug, serde::Serialize)]
pub struct Page {
    pub items: Vec<User>,
    pub next_cursor: Option<Uuid>,
}

#[derive(Clone)]
pub struct UserService {
    store: UserStore,
    cache: UserCache,
    fill_wait: Duration,
    before_fill: Option<Arc<PausePoint>>,
    before_write: Option<Arc<PausePoint>>,
}

/// How often a caller waiting for another's fill asks Redis again.
const FILL_POLL: Duration = Duration::from_millis(3);

impl UserService {
    pub fn new(store: UserStore, cache: UserCache, config: &CacheConfig) -> Self {
        Self {
            store,
            cache,
            fill_wait: config.fill_wait,
            before_fill: None,
            before_write: None,
        }
    }

    /// Tests only: park every `find` miss between its database read and its
    /// cache fill at `pause`.
    pub fn pause_before_fill(&mut self, pause: Arc<PausePoint>) {
        self.before_fill = Some(pause);
    }

    /// Tests only: park every `update` and `delete` between taking its write
    /// guard and its Postgres statement at `pause`.
    pub fn pause_before_write(&mut self, pause: Arc<PausePoint>) {
        self.before_write = Some(pause);
    }

    pub fn store(&self) -> &UserStore {
        &self.store
    }

    pub fn cache(&self) -> &UserCache {
        &self.cache
    }

    pub async fn create(&self, user: &NewUser) -> Result<User, ApiError> {
        let created = self.store.insert(Uuid::now_v7(), user).await?;
        // The id is new, so only a negative entry could exist, and only if a
        // client guessed a UUIDv7 before it was made; clear it all the same.
        self.invalidate(created.id).await;
        Ok(created)
    }

    pub async fn find(&self, id: Uuid) -> Result<Found, ApiError> {
        let give_up_waiting = Instant::now() + self.fill_wait;
        let mut lookup = self.cache.lookup(id).await;
        loop {
            match lookup {
                Ok(Lookup::Hit { version, body }) if is_valid_entry(&body) => {
                    return Ok(Found {
                        body,
                        version,
                        cache: CacheStatus::Hit,
                    });
                }
                Ok(Lookup::Hit { version, body }) => {
                    lookup = self.replace(id, &encode_value(version, &body)).await;
                }
                Ok(Lookup::Unreadable(value)) => lookup = self.replace(id, &value).await,
                Ok(Lookup::NotFound) => return Err(ApiError::NotFound(id)),
                Ok(Lookup::Leased(lease)) => return self.fill(id, &lease).await,
                Ok(Lookup::Filling) if Instant::now() < give_up_waiting => {
                    tokio::time::sleep_until((Instant::now() + FILL_POLL).min(give_up_waiting))
                        .await;
                    lookup = self.cache.lookup(id).await;
                }
                Ok(Lookup::Filling) | Ok(Lookup::Writing) => {
                    return self.read_through(id, CacheStatus::Miss).await;
                }
                Err(error) => {
                    log_cache_error("find", &error);
                    return self.read_through(id, CacheStatus::Bypass).await;
                }
            }
        }
    }

    /// An undecodable entry (a manual edit, a bug) is replaced like a miss.
    async fn replace(&self, id: Uuid, value: &[u8]) -> Result<Lookup, CacheError> {
        match self.cache.take_over(id, value).await? {
            Some(lease) => Ok(Lookup::Leased(lease)),
            None => self.cache.lookup(id).await,
        }
    }

    /// The lease holder's miss: read Postgres, then fill if the lease survived.
    async fn fill(&self, id: Uuid, lease: &Lease) -> Result<Found, ApiError> {
        let user = self.store.get(id).await?;
        let found = user
            .map(|user| {
                to_body(&user).map(|body| Found {
                    body,
                    version: user.version,
                    cache: CacheStatus::Miss,
                })
            })
            .transpose()?;
        if let Some(pause) = &self.before_fill {
            pause.pass().await;
        }
        let entry = match &found {
            Some(found) => Entry::User {
                version: found.version,
                body: &found.body,
            },
            None => Entry::NotFound,
        };
        if let Err(error) = self.cache.fill(id, lease, entry).await {
            log_cache_error("fill", &error);
        }
        found.ok_or(ApiError::NotFound(id))
    }

    /// Postgres only, without touching the cache.
    async fn read_through(&self, id: Uuid, cache: CacheStatus) -> Result<Found, ApiError> {
        let user = self.store.get(id).await?.ok_or(ApiError::NotFound(id))?;
        Ok(Found {
            body: to_body(&user)?,
            version: user.version,
            cache,
        })
    }

    pub async fn list(&self, after: Option<Uuid>, limit: u32) -> Result<Page, ApiError> {
        let mut items = self.store.list(after, i64::from(limit) + 1).await?;
        let next_cursor = if items.len() > limit as usize {
            items.truncate(limit as usize);
            items.last().map(|user| user.id)
        } else {
            None
        };
        Ok(Page { items, next_cursor })
    }

    /// Replaces email and name. With `if_match`, only while the user's
    /// version is one of those (412 otherwise), checked in the same statement.
    pub async fn update(
        &self,
        id: Uuid,
        user: &NewUser,
        if_match: Option<&[i64]>,
    ) -> Result<User, ApiError> {
        let guard = self.guard(id).await?;
        let updated = self.store.update(id, user, if_match).await;
        self.release(id, &guard).await;
        written(id, updated?)
    }

    /// Deletes the user; `if_match` as for [`UserService::update`].
    pub async fn delete(&self, id: Uuid, if_match: Option<&[i64]>) -> Result<(), ApiError> {
        let guard = self.guard(id).await?;
        let deleted = self.store.delete(id, if_match).await;
        self.release(id, &guard).await;
        written(id, deleted?)
    }

    /// Refuses the write (503) unless Redis took the guard: a write that
    /// could leave a stale entry behind is not acknowledged.
    async fn guard(&self, id: Uuid) -> Result<WriteGuard, ApiError> {
        let guard = self
            .cache
            .guard_write(id)
            .await
            .map_err(|error| ApiError::unavailable("the cache", error))?;
        if let Some(pause) = &self.before_write {
            pause.pass().await;
        }
        Ok(guard)
    }

    /// After the statement, whatever its outcome. If Redis fails here, the
    /// guard still blocks fills until it expires, and it outlives the write;
    /// while other writes to the same user are in flight it stays anyway.
    async fn release(&self, id: Uuid, guard: &WriteGuard) {
        if let Err(error) = self.cache.release_write(id, guard).await {
            log_cache_error("release", &error);
        }
    }

    /// After `create`: clears a negative entry.
    async fn invalidate(&self, id: Uuid) {
        if let Err(error) = self.cache.invalidate(id).await {
            log_cache_error("invalidate", &error);
        }
    }
}

/// Serializes a user once; the bytes are both the response and the cache entry.
pub fn to_body(user: &User) -> Result<Vec<u8>, ApiError> {
    serde_json::to_vec(user).map_err(|error| ApiError::Internal(error.into()))
}

/// An entry that does not decode as a user (a format change, a manual edit) is
/// treated as a miss and replaced.
fn is_valid_entry(body: &[u8]) -> bool {
    /// The shape of a user body, borrowed: checking an entry on every hit
    /// must not allocate or parse timestamps.
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Entry<'a> {
        id: Uuid,
        #[serde(borrow)]
        email: std::borrow::Cow<'a, str>,
        #[serde(borrow)]
        name: std::borrow::Cow<'a, str>,
        #[serde(borrow)]
        created_at: std::borrow::Cow<'a, str>,
        #[serde(borrow)]
        updated_at: std::borrow::Cow<'a, str>,
    }
    serde_json::from_slice::<Entry>(body).is_ok()
}

fn written<T>(id: Uuid, outcome: Written<T>) -> Result<T, ApiError> {
    match outcome {
        Written::Done(value) => Ok(value),
        Written::Conflict => Err(ApiError::PreconditionFailed),
        Written::NotFound => Err(ApiError::NotFound(id)),
    }
}

fn log_cache_error(operation: &str, error: &CacheError) {
    lambda_http::tracing::warn!(operation, error = %error, "cache unavailable, using Postgres only");
}
