//! `create`, `update` and `delete`. A write to an existing user joins the
//! key's guard before it touches Postgres and leaves it after, the last
//! writer out deleting the key (docs/cache.md). A write with an
//! `Idempotency-Key` whose answer is recorded is answered from the record
//! before it touches the cache; otherwise its record commits with it
//! (`store/keyed.rs`).

use super::{UserService, cause, log_cache_error};
use crate::auth::Caller;
use crate::cache::WriteGuard;
use crate::error::ApiError;
use crate::hooks::Point;
use crate::idempotency::{Answer, Idempotency, Recorded};
use crate::store::{Keyed, Write, Written};
use crate::user::{NewUser, User};
use uuid::Uuid;

/// Makes a write's answer from the user it wrote (`None` for a delete): the
/// handler's, so that a replay is the same answer to the byte.
pub type Respond<'a> = &'a (dyn Fn(Option<&User>) -> Result<Recorded, ApiError> + Sync);

impl UserService {
    /// Creates a user owned by `caller`.
    pub async fn create(
        &self,
        caller: &Caller,
        user: &NewUser,
        keyed: Option<&Idempotency>,
        respond: Respond<'_>,
    ) -> Result<Answer, ApiError> {
        if let Some(answer) = self.replay(caller, keyed).await? {
            return Ok(answer);
        }
        let id = Uuid::now_v7();
        let owner = caller.subject();
        let answer = self
            .write(
                caller,
                id,
                keyed,
                Write::Insert { id, user, owner },
                respond,
            )
            .await?;
        // The id is new, so only a negative entry could exist, and only if a
        // client guessed a UUIDv7 before it was made; clear it all the same.
        if let Err(error) = self.cache.invalidate(id).await {
            log_cache_error("invalidate", &error);
        }
        Ok(answer)
    }

    /// Replaces email and name of a user `caller` may change (another
    /// owner's is 404). With `if_match`, only while the user's version is one
    /// of those (412 otherwise), checked in the same statement.
    pub async fn update(
        &self,
        caller: &Caller,
        id: Uuid,
        user: &NewUser,
        if_match: Option<&[i64]>,
        keyed: Option<&Idempotency>,
        respond: Respond<'_>,
    ) -> Result<Answer, ApiError> {
        let write = Write::Update {
            id,
            user,
            expected: if_match,
            owner: caller.owner_filter(),
        };
        self.guarded(caller, id, keyed, write, respond).await
    }

    /// Deletes the user; `caller` and `if_match` as for [`UserService::update`].
    pub async fn delete(
        &self,
        caller: &Caller,
        id: Uuid,
        if_match: Option<&[i64]>,
        keyed: Option<&Idempotency>,
        respond: Respond<'_>,
    ) -> Result<Answer, ApiError> {
        let write = Write::Delete {
            id,
            expected: if_match,
            owner: caller.owner_filter(),
        };
        self.guarded(caller, id, keyed, write, respond).await
    }

    /// `write` to existing user `id`, under the key's write guard.
    async fn guarded(
        &self,
        caller: &Caller,
        id: Uuid,
        keyed: Option<&Idempotency>,
        write: Write<'_>,
        respond: Respond<'_>,
    ) -> Result<Answer, ApiError> {
        if let Some(answer) = self.replay(caller, keyed).await? {
            return Ok(answer);
        }
        let guard = self.guard(id).await?;
        let answer = self.write(caller, id, keyed, write, respond).await;
        self.release(id, &guard).await;
        answer
    }

    /// The recorded answer to this keyed request, if there is one.
    async fn replay(
        &self,
        caller: &Caller,
        keyed: Option<&Idempotency>,
    ) -> Result<Option<Answer>, ApiError> {
        let Some(keyed) = keyed else {
            return Ok(None);
        };
        let recorded = self.store.recorded(caller.subject(), keyed).await?;
        Ok(recorded.map(|recorded| Answer {
            recorded,
            replayed: true,
        }))
    }

    /// Runs `write`, with its key's record when it has a key.
    async fn write(
        &self,
        caller: &Caller,
        id: Uuid,
        keyed: Option<&Idempotency>,
        write: Write<'_>,
        respond: Respond<'_>,
    ) -> Result<Answer, ApiError> {
        let Some(keyed) = keyed else {
            let user = written(id, self.store.write(write).await?)?;
            return Ok(Answer {
                recorded: respond(user.as_ref())?,
                replayed: false,
            });
        };
        match self
            .store
            .keyed(caller.subject(), keyed, write, respond)
            .await?
        {
            Keyed::Replay(recorded) => Ok(Answer {
                recorded,
                replayed: true,
            }),
            Keyed::Ran(outcome) => Ok(Answer {
                recorded: written(id, outcome)?,
                replayed: false,
            }),
        }
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

    /// After the statement, whatever its outcome; it voids the other
    /// formats' keys too. If Redis fails here, or fewer replicas than
    /// `CACHE_GUARD_REPLICAS` acknowledge, the write is acknowledged all the
    /// same: the guard still blocks fills until it expires, and it outlives
    /// the write; while other writes to the same user are in flight it stays
    /// anyway. The other formats' keys have no guard of this write: the
    /// change record's consumer voids them within D.
    async fn release(&self, id: Uuid, guard: &WriteGuard) {
        if let Err(error) = self.cache.finish_write(id, guard).await {
            lambda_http::tracing::warn!(
                operation = "release",
                error = %error,
                cause = %cause(&error),
                "write acknowledged; its guard keeps the key from fills until it expires"
            );
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
