//! The Lambda runtime of every function: [`start`] is a function's whole
//! `main`.
//!
//! One binary serves classic Lambda (one invocation at a time per
//! environment) and Lambda Managed Instances, where the platform sets
//! `AWS_LAMBDA_MAX_CONCURRENCY` and one environment serves that many
//! invocations at once: `lambda_runtime`'s `run_concurrent` runs one
//! long-poll worker per slot, or the plain sequential loop when the variable
//! is unset or 1. Around the handler:
//!
//! - [`guard`]: a panic, in `lambda_http`'s event conversion or in a handler,
//!   ends its own invocation with a JSON error answer, never the environment
//!   (the release profile unwinds);
//! - [`flush`]: each invocation's log record and EMF line are written after
//!   its response has been posted (see [`crate::telemetry::Outbox`]), and the
//!   invocations in flight are counted;
//! - [`shutdown`]: on SIGTERM the environment finishes the invocations in
//!   flight, with their telemetry, before it exits.
//!
//! A function started by a schedule instead of API Gateway uses
//! [`start_scheduled`] ([`scheduled`]).

mod flush;
mod guard;
mod scheduled;
mod shutdown;

pub use scheduled::{run_until, start_scheduled};
pub use shutdown::sigterm;

use crate::config::Config;
use crate::state::AppState;
use flush::{FlushAfterResponse, InFlight};
use guard::{Guarded, answer_panics};
use lambda_http::lambda_runtime::Runtime;
use lambda_http::lambda_runtime::layers::TracingLayer;
use lambda_http::service_fn;
use lambda_http::{Body, Error, Request, Response, tracing};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// How long a shutting-down environment waits for its invocations in flight.
/// Lambda sends SIGKILL 500 ms after SIGTERM to a runtime with an internal
/// extension; an invocation still running then is lost either way.
const DRAIN_LIMIT: Duration = Duration::from_millis(450);

/// A function's `main`: builds the tokio runtime the environment needs,
/// the state (once per cold start) and serves `handler` until the
/// environment ends.
///
/// The runtime is current-thread when the environment serves one invocation
/// at a time (classic Lambda: nothing to gain from more threads), and
/// multi-thread with a worker per vCPU when `AWS_LAMBDA_MAX_CONCURRENCY` is
/// above 1 (`TOKIO_WORKER_THREADS` overrides the count); BENCHMARKS.md has
/// the measurement behind this.
///
/// # Errors
///
/// When the configuration is invalid or the tokio runtime cannot be built:
/// the init fails, and Lambda reports it.
pub fn start<F, Fut>(handler: F) -> Result<(), Error>
where
    F: Fn(&'static AppState, Request) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<Response<Body>, Error>> + Send + 'static,
{
    lambda_http::tracing::init_default_subscriber();
    let config = Config::from_env()?;
    let runtime = if config.concurrency > 1 {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    }
    .enable_all()
    .build()?;
    runtime.block_on(async move {
        // Lent to every invocation for the life of the process.
        let state: &'static AppState = Box::leak(Box::new(AppState::connect(&config).await?));
        run(state, handler, shutdown::sigterm()?).await
    })
}

/// Serves `handler` on the Lambda Runtime API until `shutdown` completes,
/// then waits (at most [`DRAIN_LIMIT`]) for the invocations in flight to be
/// answered and their telemetry written, and returns.
///
/// Registers a no-op internal extension first: without one, Lambda sends no
/// SIGTERM before it ends an environment.
///
/// # Panics
///
/// When the Lambda environment (`AWS_LAMBDA_RUNTIME_API` and the function's
/// name, memory size and version) is missing, as `lambda_http::run` does.
pub async fn run<F, Fut>(
    state: &'static AppState,
    handler: F,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error>
where
    F: Fn(&'static AppState, Request) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<Response<Body>, Error>> + Send + 'static,
{
    shutdown::register_extension().await;
    let in_flight = Arc::new(InFlight::default());
    let runtime = Runtime::new(Guarded::new(service_fn(move |request| {
        let handler = handler.clone();
        answer_panics(request, move |request| handler(state, request))
    })))
    .layer(FlushAfterResponse::new(state, in_flight.clone()))
    .layer(TracingLayer::new());
    let serving = runtime.run_concurrent();
    tokio::pin!(serving);
    tokio::select! {
        ended = &mut serving => return ended,
        () = shutdown => {}
    }
    // The loop keeps being polled while it drains: on classic Lambda the one
    // invocation in flight runs inside it.
    let left = in_flight.count();
    tracing::info!(
        in_flight = left,
        "SIGTERM: finishing the invocations in flight"
    );
    tokio::select! {
        ended = &mut serving => ended,
        drained = tokio::time::timeout(DRAIN_LIMIT, in_flight.drained()) => {
            if drained.is_err() {
                tracing::warn!(in_flight = in_flight.count(), "shutting down with invocations unfinished");
            }
            Ok(())
        }
    }
}
