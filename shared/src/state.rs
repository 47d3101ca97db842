//! The state a function builds once per cold start and lends to every request.

use crate::cache::UserCache;
use crate::config::{Config, Limits};
use crate::secrets;
use crate::service::UserService;
use crate::store::UserStore;
use crate::telemetry::Outbox;
use lambda_http::tracing;

pub struct AppState {
    pub users: UserService,
    pub limits: Limits,
    /// Each request's log record and EMF line (and the cold-start flag).
    pub telemetry: Outbox,
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
        let mut postgres = config.postgres.clone();
        if let Some(secret) = &postgres.secret {
            // Without the password nothing can work: fail the init, clearly.
            let password = secrets::database_password_from_extension(
                &secret.secret_id,
                secret.port,
                &secret.token,
                secret.timeout,
            )
            .await
            .map_err(|error| {
                format!("cannot read the database password from the secrets extension: {error}")
            })?;
            secrets::apply_password(&mut postgres.connection, &password);
        }
        let store = UserStore::new(&postgres)?;
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
            telemetry: Outbox::new(config.metrics_namespace.clone()),
        })
    }
}
