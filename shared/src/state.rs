//! The state a function builds once per cold start and lends to every request.

use crate::cache::UserCache;
use crate::config::{Config, Limits};
use crate::service::UserService;
use crate::store::UserStore;
use lambda_http::tracing;

pub struct AppState {
    pub users: UserService,
    pub limits: Limits,
}

impl AppState {
    /// Reads the environment and connects. Fails only on bad configuration:
    /// with Redis down the function serves from Postgres; with Postgres down it
    /// answers 503 until Postgres is back (the pool retries on each request).
    pub async fn from_env() -> Result<Self, lambda_http::Error> {
        let config = Config::from_env()?;
        Self::connect(&config).await
    }

    pub async fn connect(config: &Config) -> Result<Self, lambda_http::Error> {
        let store = UserStore::new(&config.postgres)?;
        let cache = UserCache::new(&config.redis, &config.cache)?;
        let (postgres, redis) = tokio::join!(store.warm_up(), cache.ping());
        if let Err(error) = postgres {
            tracing::warn!(error = %error, "Postgres unavailable at init; requests answer 503 until it is back");
        }
        if let Err(error) = redis {
            tracing::warn!(error = %error, "Redis unavailable at init; serving from Postgres until it is back");
        }
        Ok(Self {
            users: UserService::new(store, cache, &config.cache),
            limits: config.limits,
        })
    }
}
