//! `update` and `delete`: each write joins the key's guard before it touches
//! Postgres and leaves it after, the last writer out deleting the key
//! (docs/cache.md).

use super::{UserService, log_cache_error};
use crate::auth::Caller;
use crate::cache::WriteGuard;
use crate::error::ApiError;
use crate::hooks::Point;
use crate::store::Written;
use crate::user::{NewUser, User};
use uuid::Uuid;

impl UserService {
    /// Replaces email and name of a user `caller` may change (another
    /// owner's is 404). With `if_match`, only while the user's version is one
    /// of those (412 otherwise), checked in the same statement.
    pub async fn update(
        &self,
        caller: &Caller,
        id: Uuid,
        user: &NewUser,
        if_match: Option<&[i64]>,
    ) -> Result<User, ApiError> {
        let guard = self.guard(id).await?;
        let updated = self
            .store
            .update(id, user, if_match, caller.owner_filter())
            .await;
        self.release(id, &guard).await;
        written(id, updated?)
    }

    /// Deletes the user; `caller` and `if_match` as for [`UserService::update`].
    pub async fn delete(
        &self,
        caller: &Caller,
        id: Uuid,
        if_match: Option<&[i64]>,
    ) -> Result<(), ApiError> {
        let guard = self.guard(id).await?;
        let deleted = self.store.delete(id, if_match, caller.owner_filter()).await;
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
        self.hooks.pass(Point::BeforeWrite).await;
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
}

fn written<T>(id: Uuid, outcome: Written<T>) -> Result<T, ApiError> {
    match outcome {
        Written::Done(value) => Ok(value),
        Written::Conflict => Err(ApiError::PreconditionFailed),
        Written::NotFound => Err(ApiError::NotFound(id)),
    }
}
