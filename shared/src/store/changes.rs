//! The change records: every committed insert, update or delete of a user,
//! by any writer, leaves the user's id in `user_changes`, written by a
//! trigger in the writer's own transaction (migration V4), and a
//! notification on the channel `user_changes` at its commit.
//!
//! The consumer (`service/changes.rs`) claims records a batch at a time
//! ([`UserStore::claim_changes`]): the claim deletes them inside a
//! transaction that stays open while their cache keys are voided, and
//! commits only after that ([`ClaimedChanges::commit`]). A consumer that fails
//! or dies before its commit deletes nothing: its transaction rolls back and
//! the records are claimed again. Claims skip records another consumer has
//! locked, so consumers running at once never apply the same record twice.

use super::UserStore;
use super::attempt::connection_was_closed;
use crate::error::ApiError;
use deadpool_postgres::Object;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Connection, NoTls, Socket};
use uuid::Uuid;

/// The notification channel of the trigger; the payload is the schema of the
/// table that changed.
const CHANNEL: &str = "user_changes";

/// Deletes up to `$1` records, oldest first, skipping those another consumer
/// holds, and returns each one's user and age in milliseconds (by the
/// server's clock, which also stamped it).
const CLAIM: &str = "DELETE FROM user_changes WHERE seq IN \
     (SELECT seq FROM user_changes ORDER BY seq LIMIT $1 FOR UPDATE SKIP LOCKED) \
     RETURNING user_id, (extract(epoch FROM clock_timestamp() - recorded_at) * 1000)::float8";

/// The age in milliseconds of the oldest record no consumer has deleted yet.
const OLDEST: &str = "SELECT (extract(epoch FROM clock_timestamp() - recorded_at) * 1000)::float8 \
     FROM user_changes ORDER BY seq LIMIT 1";

/// One recorded change.
#[derive(Debug, Clone, Copy)]
pub struct Change {
    pub user_id: Uuid,
    /// How long before the claim the change was recorded (its statement ran,
    /// a little before its commit).
    pub age_at_claim: Duration,
}

/// A batch of claimed records: deleted in an open transaction that
/// [`ClaimedChanges::commit`] commits. Dropped without that, its connection is
/// closed, not returned to the pool, and the server rolls the deletion back.
pub struct ClaimedChanges {
    client: Option<Object>,
    pub changes: Vec<Change>,
    /// When the claim's statement returned, to measure what follows.
    pub claimed_at: Instant,
    timeout: Duration,
}

impl ClaimedChanges {
    /// The users of the batch, each once.
    pub fn users(&self) -> Vec<Uuid> {
        let mut users: Vec<Uuid> = self.changes.iter().map(|change| change.user_id).collect();
        users.sort_unstable();
        users.dedup();
        users
    }

    /// Deletes the batch's records for good: call it only once their keys
    /// are voided.
    pub async fn commit(&mut self) -> Result<(), ApiError> {
        let Some(client) = self.client.take() else {
            return Ok(());
        };
        match tokio::time::timeout(self.timeout, client.batch_execute("COMMIT")).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => {
                drop(Object::take(client));
                Err(error.into())
            }
            Err(elapsed) => {
                drop(Object::take(client));
                Err(ApiError::Timeout(elapsed.into()))
            }
        }
    }
}

impl Drop for ClaimedChanges {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            // Closing the connection rolls its transaction back.
            drop(Object::take(client));
        }
    }
}

impl UserStore {
    /// Claims up to `limit` change records (see the module's docs). An empty
    /// batch holds no transaction.
    pub async fn claim_changes(&self, limit: u32) -> Result<ClaimedChanges, ApiError> {
        let client = self.pool.get().await?;
        let claim = async {
            client.batch_execute("BEGIN").await?;
            let statement = client.prepare_cached(CLAIM).await?;
            client.query(&statement, &[&i64::from(limit)]).await
        };
        let rows = match tokio::time::timeout(self.client_timeout, claim).await {
            Ok(Ok(rows)) => rows,
            Ok(Err(error)) => {
                drop(Object::take(client));
                return Err(error.into());
            }
            Err(elapsed) => {
                drop(Object::take(client));
                return Err(ApiError::Timeout(elapsed.into()));
            }
        };
        let changes: Vec<Change> = rows
            .iter()
            .map(|row| Change {
                user_id: row.get(0),
                age_at_claim: Duration::from_secs_f64(row.get::<_, f64>(1).max(0.0) / 1000.0),
            })
            .collect();
        let mut batch = ClaimedChanges {
            client: Some(client),
            changes,
            claimed_at: Instant::now(),
            timeout: self.client_timeout,
        };
        if batch.changes.is_empty() {
            // Nothing deleted: end the transaction and keep the connection.
            batch.commit().await?;
        }
        Ok(batch)
    }

    /// How long the oldest record still to apply has waited; `None` when
    /// there is none.
    pub async fn oldest_change_age(&self) -> Result<Option<Duration>, ApiError> {
        let row = self.query_opt("oldest_change", OLDEST, &[]).await?;
        Ok(row.map(|row| Duration::from_secs_f64(row.get::<_, f64>(0).max(0.0) / 1000.0)))
    }

    /// Opens a connection of its own (not the pool's) that listens on the
    /// change channel, bounded by the connect and statement timeouts.
    pub async fn listen_for_changes(&self) -> Result<ChangeListener, ApiError> {
        let connected = match &self.tls {
            Some(tls) => {
                let (client, connection) = self.connection.connect(tls.clone()).await?;
                (client, forward_notifications(connection))
            }
            None => {
                let (client, connection) = self.connection.connect(NoTls).await?;
                (client, forward_notifications(connection))
            }
        };
        let (client, notifications) = connected;
        let subscribe = async {
            client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
            client.query_one("SELECT current_schema()", &[]).await
        };
        let schema: String = match tokio::time::timeout(self.client_timeout, subscribe).await {
            Ok(Ok(row)) => row.get(0),
            Ok(Err(error)) => return Err(error.into()),
            Err(elapsed) => return Err(ApiError::Timeout(elapsed.into())),
        };
        Ok(ChangeListener {
            _client: client,
            schema,
            notifications,
        })
    }
}

/// A connection listening on the change channel for this store's schema.
/// Dropping it closes the connection.
pub struct ChangeListener {
    _client: tokio_postgres::Client,
    schema: String,
    notifications: mpsc::UnboundedReceiver<String>,
}

impl ChangeListener {
    /// Waits for a change to this schema's users to commit. `false` when the
    /// connection has ended (the server went away): listen again.
    pub async fn changed(&mut self) -> bool {
        while let Some(schema) = self.notifications.recv().await {
            if schema == self.schema {
                // One wake for every notification already queued.
                while self.notifications.try_recv().is_ok() {}
                return true;
            }
        }
        false
    }
}

/// Drives `connection` on a task of its own, handing each notification's
/// payload to the returned receiver, which closes when the connection ends.
fn forward_notifications<T>(
    mut connection: Connection<Socket, T>,
) -> mpsc::UnboundedReceiver<String>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, receiver) = mpsc::unbounded_channel();
    let drive = async move {
        loop {
            let message = std::future::poll_fn(|context| connection.poll_message(context)).await;
            match message {
                Some(Ok(AsyncMessage::Notification(notification))) => {
                    if sender.send(notification.payload().to_owned()).is_err() {
                        return;
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(error)) => {
                    if !connection_was_closed(&error) {
                        lambda_http::tracing::warn!(error = %error, "change listener connection failed");
                    }
                    return;
                }
                None => return,
            }
        }
    };
    // Ends with the connection; nothing waits for it.
    drop(tokio::spawn(drive));
    receiver
}
