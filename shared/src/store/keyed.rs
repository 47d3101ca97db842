//! Writes with an `Idempotency-Key`: the key's record and the write commit in
//! one transaction, so a retry finds either both (and replays the answer) or
//! neither (and runs the write). Only successful answers are kept: a write
//! that failed changed nothing, so running it again is safe, and a 503 must
//! let the retry succeed.

use super::attempt::Failed;
use super::sql::{CLAIM_KEY, RECORD_ANSWER, RECORDED_ANSWER};
use super::write::{Write, run};
use super::{UserStore, Written};
use crate::error::ApiError;
use crate::hooks::Point;
use crate::idempotency::{Idempotency, Recorded};
use crate::user::User;
use deadpool_postgres::Object;
use tokio_postgres::Row;
use tokio_postgres::error::SqlState;

/// What a keyed write came to.
#[derive(Debug)]
pub enum Keyed {
    /// This request ran the write; when it succeeded, its answer, recorded
    /// with it.
    Ran(Written<Recorded>),
    /// A request with this key and this same request succeeded before: its
    /// answer.
    Replay(Recorded),
}

impl UserStore {
    /// The answer recorded for `keyed`, if a live record holds its key: a
    /// repeat is answered from it before the write touches the cache.
    /// [`ApiError::IdempotencyKeyReused`] when the key was used for another
    /// request.
    pub async fn recorded(
        &self,
        subject: &str,
        keyed: &Idempotency,
    ) -> Result<Option<Recorded>, ApiError> {
        let row = self
            .query_opt(
                "recorded_answer",
                RECORDED_ANSWER,
                &[&subject, &keyed.key.as_str(), &keyed.request],
            )
            .await?;
        row.map(|row| replay(&row)).transpose()
    }

    /// Runs `write` for `subject` under `keyed`, in one transaction with the
    /// key's record; `respond` makes the answer to record from the written
    /// user. A request that waited for another with the same key replays its
    /// answer, or gets [`ApiError::IdempotencyKeyInFlight`] when the wait
    /// reached `lock_timeout`.
    pub async fn keyed(
        &self,
        subject: &str,
        keyed: &Idempotency,
        write: Write<'_>,
        respond: &(dyn Fn(Option<&User>) -> Result<Recorded, ApiError> + Sync),
    ) -> Result<Keyed, ApiError> {
        let started = std::time::Instant::now();
        let mut attempt = self.attempt(subject, keyed, write, respond).await;
        if let Err(Failed { retry: true, .. }) = attempt {
            // Safe to run again, the whole transaction on a fresh connection:
            // if the first attempt committed, its record now holds the key
            // and this one replays it; a read-only session committed nothing.
            attempt = self.attempt(subject, keyed, write, respond).await;
        }
        super::statement_done("keyed_write", started, attempt.is_err());
        attempt.map_err(|failed| failed.error)?
    }

    /// One transaction on one connection, bounded by the client timeout.
    async fn attempt(
        &self,
        subject: &str,
        keyed: &Idempotency,
        write: Write<'_>,
        respond: &(dyn Fn(Option<&User>) -> Result<Recorded, ApiError> + Sync),
    ) -> Result<Result<Keyed, ApiError>, Failed> {
        let client = self.pool.get().await.map_err(|error| Failed {
            error: error.into(),
            retry: false,
        })?;
        let work = async {
            client.batch_execute("BEGIN").await?;
            let outcome = self
                .transaction(&client, subject, keyed, write, respond)
                .await;
            let commit = matches!(outcome, Ok(Ok(Keyed::Ran(Written::Done(_)))));
            if commit {
                self.hooks.pass(Point::BeforeCommit).await;
                client.batch_execute("COMMIT").await?;
            } else if let Err(error) = client.batch_execute("ROLLBACK").await {
                // The statement's own error says more, unless there is none.
                return Err(outcome.err().unwrap_or(error));
            }
            outcome
        };
        let outcome = tokio::time::timeout(self.client_timeout, work).await;
        self.settle(client, outcome)
    }

    async fn transaction(
        &self,
        client: &Object,
        subject: &str,
        keyed: &Idempotency,
        write: Write<'_>,
        respond: &(dyn Fn(Option<&User>) -> Result<Recorded, ApiError> + Sync),
    ) -> Result<Result<Keyed, ApiError>, tokio_postgres::Error> {
        let key = keyed.key.as_str();
        let ttl_ms = i64::try_from(self.idempotency_ttl.as_millis()).unwrap_or(i64::MAX);
        let claim = client.prepare_cached(CLAIM_KEY).await?;
        let claimed = match client
            .query_opt(&claim, &[&subject, &key, &keyed.request, &ttl_ms])
            .await
        {
            Ok(claimed) => claimed.is_some(),
            Err(error) if waited_too_long(&error) => {
                return Ok(Err(ApiError::IdempotencyKeyInFlight));
            }
            Err(error) => return Err(error),
        };
        if !claimed {
            // Another request with this key committed first (we waited for it).
            let answer = client.prepare_cached(RECORDED_ANSWER).await?;
            let row = client
                .query_opt(&answer, &[&subject, &key, &keyed.request])
                .await?;
            return Ok(match row {
                Some(row) => replay(&row).map(Keyed::Replay),
                None => Err(ApiError::IdempotencyKeyInFlight),
            });
        }
        let written = match run(client, write).await? {
            Written::Done(user) => user,
            Written::Conflict => return Ok(Ok(Keyed::Ran(Written::Conflict))),
            Written::NotFound => return Ok(Ok(Keyed::Ran(Written::NotFound))),
        };
        let recorded = match respond(written.as_ref()) {
            Ok(recorded) => recorded,
            Err(error) => return Ok(Err(error)),
        };
        let store = client.prepare_cached(RECORD_ANSWER).await?;
        let status = i16::try_from(recorded.status).unwrap_or(i16::MAX);
        client
            .execute(
                &store,
                &[
                    &subject,
                    &key,
                    &status,
                    &recorded.body,
                    &recorded.location,
                    &recorded.etag,
                ],
            )
            .await?;
        Ok(Ok(Keyed::Ran(Written::Done(recorded))))
    }
}

/// A record's answer, if it was for the same request.
fn replay(row: &Row) -> Result<Recorded, ApiError> {
    if !row.get::<_, bool>(0) {
        return Err(ApiError::IdempotencyKeyReused);
    }
    Ok(Recorded {
        status: u16::try_from(row.get::<_, i16>(1)).unwrap_or(500),
        body: row.get(2),
        location: row.get(3),
        etag: row.get(4),
    })
}

/// Whether the claim gave up waiting for a concurrent request's transaction.
fn waited_too_long(error: &tokio_postgres::Error) -> bool {
    error.code().is_some_and(|code| {
        *code == SqlState::LOCK_NOT_AVAILABLE || *code == SqlState::QUERY_CANCELED
    })
}
