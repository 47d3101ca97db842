//! The runtime of a function started by a schedule instead of API Gateway
//! (`invalidate-cache`): [`start_scheduled`] is its whole `main`.
//!
//! Such a function runs one invocation at a time for most of its timeout, so
//! it needs none of the HTTP functions' machinery: no concurrent workers, no
//! per-request records after the response. It writes its own log line and
//! metrics as it goes. It ends by the deadline its invocation carries
//! ([`run_until`]); if Lambda stops it first, what it had not committed is
//! done again by the next run.

use crate::config::Config;
use crate::state::AppState;
use lambda_http::lambda_runtime::{self, LambdaEvent};
use lambda_http::{Context, Error, service_fn};
use serde::Serialize;
use std::future::Future;
use std::time::{Duration, Instant, SystemTime};

/// A scheduled function's `main`: the configuration and the state (once per
/// cold start), then `handler` for each event, on a current-thread runtime.
///
/// # Errors
///
/// When the configuration is invalid or the tokio runtime cannot be built:
/// the init fails, and Lambda reports it.
pub fn start_scheduled<F, Fut, R>(handler: F) -> Result<(), Error>
where
    F: Fn(&'static AppState, LambdaEvent<serde_json::Value>) -> Fut,
    Fut: Future<Output = Result<R, Error>>,
    R: Serialize,
{
    lambda_http::tracing::init_default_subscriber();
    let config = Config::from_env()?;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            let state: &'static AppState = Box::leak(Box::new(AppState::connect(&config).await?));
            lambda_runtime::run(service_fn(move |event| handler(state, event))).await
        })
}

/// When an invocation should stop taking on work: `margin` before the
/// deadline `context` carries (now, if that has passed).
pub fn run_until(context: &Context, margin: Duration) -> Instant {
    let left = context
        .deadline()
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    Instant::now() + left.saturating_sub(margin)
}
