//! The Redis cache of user responses.
//!
//! One key per user, `{CACHE_KEY_PREFIX}:v1:user:{id}`, holding the response
//! body bytes ready to send. Every call is bounded by `REDIS_RESPONSE_TIMEOUT_MS`
//! on top of the driver's own timeouts, so a dead or paused Redis costs a request
//! at most that much before the service falls back to Postgres.

use crate::config::{CacheConfig, RedisConfig};
use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::future::Future;
use std::time::Duration;
use uuid::Uuid;

/// Version of the entry format; part of every key, so changing the format
/// never makes a new deployment read entries written by an old one.
const FORMAT_VERSION: &str = "v1";

/// Why a cache call did not complete. Either way the caller treats Redis as
/// absent for this request.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("redis call failed")]
    Redis(#[from] redis::RedisError),
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
}

#[derive(Clone)]
pub struct UserCache {
    connection: ConnectionManager,
    prefix: String,
    ttl: Duration,
    timeout: Duration,
}

impl UserCache {
    /// Creates the connection manager without waiting for Redis: a cold start
    /// while Redis is down must still succeed. See [`UserCache::ping`].
    pub fn new(redis: &RedisConfig, cache: &CacheConfig) -> Result<Self, redis::RedisError> {
        let client = redis::Client::open(redis.url.as_str())?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(redis.connect_timeout))
            .set_response_timeout(Some(redis.response_timeout))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(10))
            .set_max_delay(redis.reconnect_backoff);
        let connection = ConnectionManager::new_lazy_with_config(client, manager_config)?;
        Ok(Self {
            connection,
            prefix: format!("{}:{FORMAT_VERSION}:user:", cache.key_prefix),
            ttl: cache.ttl,
            timeout: redis.response_timeout,
        })
    }

    /// Opens the connection now (during init) and checks it answers.
    pub async fn ping(&self) -> Result<(), CacheError> {
        let mut connection = self.connection.clone();
        self.bounded(async move { redis::cmd("PING").query_async::<()>(&mut connection).await })
            .await
    }

    pub fn key(&self, id: Uuid) -> String {
        let mut key = String::with_capacity(self.prefix.len() + 36);
        key.push_str(&self.prefix);
        key.push_str(id.as_hyphenated().encode_lower(&mut Uuid::encode_buffer()));
        key
    }

    pub async fn get(&self, id: Uuid) -> Result<Option<Vec<u8>>, CacheError> {
        let mut connection = self.connection.clone();
        let key = self.key(id);
        self.bounded(async move { connection.get(key).await }).await
    }

    pub async fn put(&self, id: Uuid, body: &[u8]) -> Result<(), CacheError> {
        let mut connection = self.connection.clone();
        let key = self.key(id);
        let ttl = self.ttl.as_secs();
        self.bounded(async move { connection.set_ex(key, body, ttl).await })
            .await
    }

    pub async fn invalidate(&self, id: Uuid) -> Result<(), CacheError> {
        let mut connection = self.connection.clone();
        let key = self.key(id);
        self.bounded(async move { connection.del(key).await }).await
    }

    async fn bounded<T>(
        &self,
        call: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, CacheError> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(CacheError::Timeout(self.timeout)),
        }
    }
}
