//! The users service: where cache-aside and invalidation live.
//!
//! `find` reads Redis first and falls back to Postgres on a miss, then stores
//! the response body with the configured TTL. Writes go to Postgres and then
//! invalidate the user's entry. Handlers call this and nothing below it.

use crate::cache::UserCache;
use crate::error::ApiError;
use crate::pause::PausePoint;
use crate::store::UserStore;
use crate::user::{NewUser, User};
use std::sync::Arc;
use uuid::Uuid;

/// Where a `find` answer came from; sent as the `x-cache` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    /// Served from Redis.
    Hit,
    /// Read from Postgres (and stored in Redis when allowed).
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
}

/// A user's JSON body and how it was obtained.
#[derive(Debug)]
pub struct Found {
    pub body: Vec<u8>,
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
    before_fill: Option<Arc<PausePoint>>,
}

impl UserService {
    pub fn new(store: UserStore, cache: UserCache) -> Self {
        Self {
            store,
            cache,
            before_fill: None,
        }
    }

    /// Tests only: park every `find` miss between its database read and its
    /// cache fill at `pause`.
    pub fn pause_before_fill(&mut self, pause: Arc<PausePoint>) {
        self.before_fill = Some(pause);
    }

    pub fn store(&self) -> &UserStore {
        &self.store
    }

    pub fn cache(&self) -> &UserCache {
        &self.cache
    }

    pub async fn create(&self, user: &NewUser) -> Result<User, ApiError> {
        self.store.insert(Uuid::now_v7(), user).await
    }

    pub async fn find(&self, id: Uuid) -> Result<Found, ApiError> {
        let cache = match self.cache.get(id).await {
            Ok(Some(body)) if is_valid_entry(&body) => {
                return Ok(Found {
                    body,
                    cache: CacheStatus::Hit,
                });
            }
            Ok(_) => CacheStatus::Miss,
            Err(error) => {
                log_cache_error("find", &error);
                CacheStatus::Bypass
            }
        };
        let user = self.store.get(id).await?.ok_or(ApiError::NotFound(id))?;
        let body = to_body(&user)?;
        if let Some(pause) = &self.before_fill {
            pause.pass().await;
        }
        if cache == CacheStatus::Miss
            && let Err(error) = self.cache.put(id, &body).await
        {
            log_cache_error("fill", &error);
        }
        Ok(Found { body, cache })
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

    pub async fn update(&self, id: Uuid, user: &NewUser) -> Result<User, ApiError> {
        let updated = self.store.update(id, user).await?;
        self.invalidate(id).await;
        updated.ok_or(ApiError::NotFound(id))
    }

    pub async fn delete(&self, id: Uuid) -> Result<(), ApiError> {
        let deleted = self.store.delete(id).await?;
        self.invalidate(id).await;
        if deleted {
            Ok(())
        } else {
            Err(ApiError::NotFound(id))
        }
    }

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
    serde_json::from_slice::<User>(body).is_ok()
}

fn log_cache_error(operation: &str, error: &crate::cache::CacheError) {
    lambda_http::tracing::warn!(operation, error = %error, "cache unavailable, using Postgres only");
}
