//! A standalone server's connection: the client's `ConnectionManager`, one
//! multiplexed connection that reconnects by itself after I/O errors, and a
//! new manager when the server still answers but is no primary (any more):
//! a primary demoted by a failover, reached through a connection opened
//! before it, answers every write `READONLY` for as long as the connection
//! lives, and the manager would keep it. A new manager connects through the
//! endpoint again, which names the new primary (docs/failure-modes.md).

use crate::config::RedisConfig;
use lambda_http::tracing;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ErrorKind, ServerErrorKind};
use std::sync::{PoisonError, RwLock};

pub(super) struct Standalone {
    client: redis::Client,
    config: ConnectionManagerConfig,
    /// The manager and how many times it was replaced.
    current: RwLock<(ConnectionManager, u64)>,
}

impl Standalone {
    /// Creates the manager without connecting: a cold start while Redis is
    /// down must still succeed.
    pub(super) fn new(
        client: redis::Client,
        config: &RedisConfig,
    ) -> Result<Self, redis::RedisError> {
        let config = manager_config(config);
        let manager = ConnectionManager::new_lazy_with_config(client.clone(), config.clone())?;
        Ok(Self {
            client,
            config,
            current: RwLock::new((manager, 0)),
        })
    }

    /// The manager to call, and its generation for [`Standalone::reconnect`].
    pub(super) fn current(&self) -> (ConnectionManager, u64) {
        let current = self.current.read().unwrap_or_else(PoisonError::into_inner);
        (current.0.clone(), current.1)
    }

    /// After a call on the manager of `generation` failed with `error`: when
    /// the server answered as no primary, replaces that manager, unless
    /// another call did already. Calls under way on the old one finish there;
    /// its connection closes with the last of them.
    pub(super) fn reconnect_unless_primary(&self, generation: u64, error: &redis::RedisError) {
        if !answers_as_no_primary(error) {
            return;
        }
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        if current.1 != generation {
            return;
        }
        // The client and settings that made the first manager, so this
        // cannot fail where that did not; if it did, the old one stays.
        if let Ok(manager) =
            ConnectionManager::new_lazy_with_config(self.client.clone(), self.config.clone())
        {
            *current = (manager, generation + 1);
            tracing::warn!(error = %error, "redis answered as no primary: reconnecting");
        }
    }
}

/// `READONLY` (a primary demoted by a failover), `MASTERDOWN` (a replica
/// that lost its primary), `LOADING` (a node loading its data after a
/// restart): the connection no longer reaches a primary that can serve,
/// though it still answers.
fn answers_as_no_primary(error: &redis::RedisError) -> bool {
    matches!(
        error.kind(),
        ErrorKind::Server(
            ServerErrorKind::ReadOnly | ServerErrorKind::MasterDown | ServerErrorKind::BusyLoading
        )
    )
}

fn manager_config(config: &RedisConfig) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(config.connect_timeout))
        // Every call is bounded by `Redis::call` (reconnect wait included),
        // so a second timer per request would only cost time; a timeout
        // never made the manager reconnect anyway.
        .set_response_timeout(None)
        // One connection attempt per reconnect: while Redis is down each
        // request makes one quick attempt instead of queueing behind a
        // backoff, and the first one after it returns reconnects.
        .set_number_of_retries(0)
}
