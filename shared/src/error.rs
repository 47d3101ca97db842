//! The one error type of the API and its mapping to HTTP.
//!
//! Each variant documents the status it answers with. Driver errors are
//! classified here, once: a unique violation of the email index becomes 409, a
//! statement timeout 504, a lost or refused connection, a refused login
//! (class 28: a rotated password, say) or a write refused by a read-only
//! session (a demoted writer's, after a failover) 503. The client sees a
//! code and a message written by us; the driver's text only goes to the log.

use std::sync::Arc;
use uuid::Uuid;

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Name of the unique index on `lower(email)`, see `migrations/V1__create_users.sql`.
pub const EMAIL_UNIQUE_INDEX: &str = "users_email_lower_key";

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: some part of the request is malformed; `code` says which.
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    /// 401: the event carries no verified caller (no authorizer context).
    #[error("this API needs a verified caller")]
    Unauthorized,
    /// 403: the caller's token lacks the operation's scope.
    #[error("the token lacks scope {0}")]
    Forbidden(&'static str),
    /// 404: no user with this id, or one the caller may not see.
    #[error("no user with id {0}")]
    NotFound(Uuid),
    /// 409: the email is already used by another user (case-insensitively).
    #[error("a user with this email already exists")]
    EmailTaken,
    /// 409: an earlier request with this `Idempotency-Key` is still running.
    #[error("a request with this Idempotency-Key is still in progress; retry later")]
    IdempotencyKeyInFlight,
    /// 422: this `Idempotency-Key` was used for another request.
    #[error("this Idempotency-Key was used for another request")]
    IdempotencyKeyReused,
    /// 412: `If-Match` named none of the user's current version.
    #[error("the user has changed since the version given in If-Match")]
    PreconditionFailed,
    /// 413: the body is over `MAX_BODY_BYTES`.
    #[error("request body is larger than the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    /// 415: a write whose body is not declared as JSON.
    #[error("content-type must be application/json")]
    UnsupportedMediaType,
    /// 503: Postgres (or Redis, for writes) could not be reached in time.
    #[error("{dependency} is unavailable")]
    Unavailable {
        dependency: &'static str,
        #[source]
        source: BoxError,
    },
    /// 504: Postgres did not finish within `PG_STATEMENT_TIMEOUT_MS`.
    #[error("the database did not answer in time")]
    Timeout(#[source] BoxError),
    /// 500: a bug or an unexpected driver answer; details are logged only.
    #[error("internal error")]
    Internal(#[source] BoxError),
}

impl ApiError {
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::BadRequest {
            code,
            message: message.into(),
        }
    }

    pub fn status(&self) -> u16 {
        match self {
            Self::BadRequest { .. } => 400,
            Self::Unauthorized => 401,
            Self::Forbidden(_) => 403,
            Self::NotFound(_) => 404,
            Self::EmailTaken | Self::IdempotencyKeyInFlight => 409,
            Self::IdempotencyKeyReused => 422,
            Self::PreconditionFailed => 412,
            Self::PayloadTooLarge { .. } => 413,
            Self::UnsupportedMediaType => 415,
            Self::Internal(_) => 500,
            Self::Unavailable { .. } => 503,
            Self::Timeout(_) => 504,
        }
    }

    /// Machine-readable code sent in the error body.
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadRequest { code, .. } => code,
            Self::Unauthorized => "unauthorized",
            Self::Forbidden(_) => "forbidden",
            Self::NotFound(_) => "not_found",
            Self::EmailTaken => "email_taken",
            Self::IdempotencyKeyInFlight => "idempotency_key_in_flight",
            Self::IdempotencyKeyReused => "idempotency_key_reused",
            Self::PreconditionFailed => "precondition_failed",
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::Unavailable { .. } => "service_unavailable",
            Self::Timeout(_) => "timeout",
            Self::Internal(_) => "internal_error",
        }
    }

    /// Message sent to the client: ours, never a driver's.
    pub fn public_message(&self) -> String {
        match self {
            Self::Unavailable { dependency, .. } => {
                format!("{dependency} is unavailable, please retry later")
            }
            other => other.to_string(),
        }
    }

    pub(crate) fn unavailable(dependency: &'static str, source: impl Into<BoxError>) -> Self {
        Self::Unavailable {
            dependency,
            source: source.into(),
        }
    }
}

impl ApiError {
    /// The same error for one more caller, when several callers waited on
    /// the one piece of work that failed (`find`'s single flight): the same
    /// variant, so the same status, code and message; the cause is shared.
    /// `ApiError` is not `Clone` because its causes are not.
    pub fn shared(error: &Arc<Self>) -> Self {
        let cause = || -> BoxError { Box::new(SharedCause(error.clone())) };
        match &**error {
            Self::BadRequest { code, message } => Self::BadRequest {
                code,
                message: message.clone(),
            },
            Self::Unauthorized => Self::Unauthorized,
            Self::Forbidden(scope) => Self::Forbidden(scope),
            Self::NotFound(id) => Self::NotFound(*id),
            Self::EmailTaken => Self::EmailTaken,
            Self::IdempotencyKeyInFlight => Self::IdempotencyKeyInFlight,
            Self::IdempotencyKeyReused => Self::IdempotencyKeyReused,
            Self::PreconditionFailed => Self::PreconditionFailed,
            Self::PayloadTooLarge { limit } => Self::PayloadTooLarge { limit: *limit },
            Self::UnsupportedMediaType => Self::UnsupportedMediaType,
            Self::Unavailable { dependency, .. } => Self::Unavailable {
                dependency,
                source: cause(),
            },
            Self::Timeout(_) => Self::Timeout(cause()),
            Self::Internal(_) => Self::Internal(cause()),
        }
    }
}

/// The cause of a [shared](ApiError::shared) error. It shows as the original
/// cause and leads to the same chain, so every caller's log reads the same.
#[derive(Debug)]
struct SharedCause(Arc<ApiError>);

impl std::fmt::Display for SharedCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match std::error::Error::source(&*self.0) {
            Some(cause) => write!(f, "{cause}"),
            None => write!(f, "{}", self.0),
        }
    }
}

impl std::error::Error for SharedCause {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&*self.0).and_then(std::error::Error::source)
    }
}

impl From<tokio_postgres::Error> for ApiError {
    fn from(error: tokio_postgres::Error) -> Self {
        use tokio_postgres::error::SqlState;
        let Some(db) = error.as_db_error() else {
            // No server answer: the connection failed or was cut.
            return Self::unavailable("the database", error);
        };
        let code = db.code();
        if *code == SqlState::UNIQUE_VIOLATION && db.constraint() == Some(EMAIL_UNIQUE_INDEX) {
            Self::EmailTaken
        } else if *code == SqlState::QUERY_CANCELED || *code == SqlState::LOCK_NOT_AVAILABLE {
            Self::Timeout(error.into())
        } else if code.code().starts_with("08")
            || code.code().starts_with("28")
            || code.code().starts_with("57P")
            || *code == SqlState::TOO_MANY_CONNECTIONS
            || *code == SqlState::CANNOT_CONNECT_NOW
            // The server takes no writes now (a failover demoted it); the
            // store has already retried once on a fresh connection.
            || *code == SqlState::READ_ONLY_SQL_TRANSACTION
        {
            Self::unavailable("the database", error)
        } else {
            Self::Internal(error.into())
        }
    }
}

impl From<deadpool_postgres::PoolError> for ApiError {
    fn from(error: deadpool_postgres::PoolError) -> Self {
        match error {
            deadpool_postgres::PoolError::Backend(error) => error.into(),
            other => Self::unavailable("the database", other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error;

    /// An error and its causes, `outer: inner: root`.
    fn chain(error: &dyn Error) -> String {
        let mut text = error.to_string();
        let mut source = error.source();
        while let Some(cause) = source {
            text = format!("{text}: {cause}");
            source = cause.source();
        }
        text
    }

    #[test]
    fn a_shared_error_answers_and_logs_like_the_original() {
        // Arrange
        let root = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let errors = [
            ApiError::unavailable("the database", root),
            ApiError::Timeout("statement timeout".into()),
            ApiError::Internal("bad row".into()),
            ApiError::NotFound(Uuid::nil()),
            ApiError::bad_request("invalid_id", "not a UUID"),
        ];

        for original in errors {
            // Act
            let expected = (
                original.status(),
                original.code(),
                original.public_message(),
            );
            let expected_chain = chain(&original);
            let shared = Arc::new(original);
            let copy = ApiError::shared(&shared);

            // Assert
            assert_eq!(
                (copy.status(), copy.code(), copy.public_message()),
                expected
            );
            assert_eq!(chain(&copy), expected_chain);
        }
    }
}
