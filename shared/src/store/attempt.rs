//! One attempt on a connection of the pool: its outcome, and whether the
//! connection is kept. A connection that failed because it was dead or
//! read-only is discarded and the attempt worth one retry (the
//! `on_connection!` macro in `mod.rs`, keyed writes in `keyed.rs`).

use super::UserStore;
use crate::error::ApiError;
use deadpool_postgres::Object;

impl UserStore {
    /// The outcome of one attempt. A dead or read-only connection, or one
    /// that timed out on the client side (it may still have a statement in
    /// flight), is discarded, never returned to the pool: the pool's fast
    /// recycling runs no query, so it would hand the connection out again.
    ///
    /// With a dead or read-only one go the connections idle in the pool: they
    /// were opened to the same server, and most likely share its fate (a
    /// frozen sandbox's were all cut at once; after a failover, every one
    /// opened before it reaches the demoted writer). Otherwise the retry
    /// would be handed one of them, not a fresh connection, and fail the
    /// same way. Connections in use are left alone; one that is stuck too
    /// is found by its own attempt.
    pub(super) fn settle<T>(
        &self,
        client: Object,
        outcome: Result<Result<T, tokio_postgres::Error>, tokio::time::error::Elapsed>,
    ) -> Result<T, Failed> {
        match outcome {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => {
                let retry = connection_was_closed(&error) || refuses_writes(&error);
                if retry {
                    // Not back into the pool, where the retry would get it again.
                    drop(Object::take(client));
                    drop(self.pool.retain(|_, _| false));
                }
                Err(Failed {
                    error: error.into(),
                    retry,
                })
            }
            Err(elapsed) => {
                drop(Object::take(client));
                Err(Failed {
                    error: ApiError::Timeout(elapsed.into()),
                    retry: false,
                })
            }
        }
    }
}

/// A failed attempt, and whether it failed because of its connection, dead
/// or read-only, which was discarded: then the statement is worth one retry
/// on a fresh connection.
pub(super) struct Failed {
    pub(super) error: ApiError,
    pub(super) retry: bool,
}

/// Whether an attempt failed because its connection was dead: closed, cut
/// (an I/O error), or terminated by the server (`pg_terminate_backend`, a
/// restart), whose goodbye the client may read only when it next uses it.
pub(super) fn connection_was_closed(error: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::SqlState;
    match error.code() {
        Some(code) => *code == SqlState::ADMIN_SHUTDOWN || *code == SqlState::CRASH_SHUTDOWN,
        None => {
            error.is_closed()
                || std::error::Error::source(error)
                    .is_some_and(|cause| cause.is::<std::io::Error>())
        }
    }
}

/// Whether the server refused a write because the session is read-only.
/// This API never opens a read-only transaction itself, so the session's
/// default is: the connection reached a writer demoted by a failover (Aurora,
/// RDS Multi-AZ; old connections survive it and DNS answers may be cached) or
/// a standby. Such a session stays read-only for its life, so the connection
/// is of no more use for writes; a fresh one reaches the new writer once DNS
/// names it. Reads on it still work, and are not refused.
///
/// Other "cannot take writes now" states need nothing here: a server that is
/// starting up, shutting down or in recovery (57P03 `cannot_connect_now`)
/// and connection exceptions (class 08) are met when connecting, so no
/// connection exists to discard and the pool's next `get` connects anew; a
/// server that ends its sessions (57P01, 57P02) is a dead connection (`connection_was_closed`).
/// All of them answer 503 (`error.rs`).
fn refuses_writes(error: &tokio_postgres::Error) -> bool {
    error.code() == Some(&tokio_postgres::error::SqlState::READ_ONLY_SQL_TRANSACTION)
}
