//! The state a function builds once per cold start and lends to every
//! request, and [`AppState::serve`], which runs one request with it.

use crate::auth::{Caller, Scope};
use crate::cache::UserCache;
use crate::config::{ChangesConfig, Config, Limits};
use crate::error::ApiError;
use crate::http::{self, Route};
use crate::secrets;
use crate::service::UserService;
use crate::store::UserStore;
use crate::telemetry::{self, Outbox, Record, trace};
use lambda_http::{Body, Request, RequestExt, Response, tracing};
use std::future::Future;
use std::time::Instant;

pub struct AppState {
    pub users: UserService,
    pub limits: Limits,
    /// Each request's log record and EMF line (and the cold-start flag).
    pub telemetry: Outbox,
    /// `AUTH_LOCAL_HEADERS`: see [`http::caller`].
    pub local_auth_headers: bool,
    /// How the consumer of the change records works (`invalidate-cache`).
    pub changes: ChangesConfig,
}

impl AppState {
    /// Connects with `config`. Fails only on bad configuration: with Redis
    /// down the function serves from Postgres; with Postgres down it answers
    /// 503 until Postgres is back (the pool retries on each request).
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
        let (postgres_up, redis_up) = tokio::join!(store.warm_up(), cache.ping());
        if let Err(error) = postgres_up {
            tracing::warn!(endpoint = %postgres.endpoint, error = %error, "Postgres unavailable at init; requests answer 503 until it is back");
        }
        if let Err(error) = redis_up {
            tracing::warn!(endpoint = %config.redis.endpoint, error = %error, "Redis unavailable at init; serving from Postgres until it is back");
        }
        if config.local_auth_headers {
            tracing::warn!(
                "AUTH_LOCAL_HEADERS is on: a request without an authorizer context is served \
                 as whoever its x-local-sub header names. For a local machine only, never a deployment"
            );
        }
        Ok(Self {
            users: UserService::new(store, cache, &config.cache),
            limits: config.limits,
            telemetry: Outbox::new(config.metrics_namespace.clone(), config.traces.as_ref()),
            local_auth_headers: config.local_auth_headers,
            changes: config.changes,
        })
    }

    /// The request's verified caller, if it holds `scope`: 401 without a
    /// caller, 403 without the scope. Its subject goes into the request's
    /// log record.
    pub fn caller(&self, request: &Request, scope: Scope) -> Result<Caller, ApiError> {
        let caller = http::caller(request, self.local_auth_headers)?;
        telemetry::record_subject(caller.subject());
        caller.require(scope)?;
        Ok(caller)
    }

    /// Runs one request's `work` and turns its result into what the handler
    /// returns to the runtime: the response, or the error as JSON. Never
    /// `Err`, since a returned error reaches the client as Lambda's own 502.
    /// Hands the request's [`Record`] (request id, route, status, latency,
    /// Postgres and Redis time, cache outcome) to the [`Outbox`].
    pub async fn serve(
        &self,
        route: &Route,
        request: &Request,
        work: impl Future<Output = Result<Response<Body>, ApiError>>,
    ) -> Result<Response<Body>, lambda_http::Error> {
        let started = Instant::now();
        let (result, measured) = telemetry::measure(work).await;
        let response = result.unwrap_or_else(|error| http::error_response(&error));
        let context = request.lambda_context_ref();
        self.telemetry.submit(Record {
            request_id: context
                .map_or_else(|| "-".to_owned(), |context| context.request_id.clone()),
            xray_trace_id: context
                .and_then(|context| context.xray_trace_id.as_deref())
                .and_then(trace::root_of)
                .map(str::to_owned),
            route: route.name,
            function: route.function,
            status: response.status().as_u16(),
            latency: started.elapsed(),
            measured,
            cold_start: false,
        });
        Ok(response)
    }
}
