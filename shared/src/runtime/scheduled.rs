//! The runtime of a function started by a schedule instead of API Gateway
//! (`invalidate-cache`): [`start_scheduled`] is its whole `main`.
//!
//! Such a function works for most of its timeout and answers no client, so
//! it needs none of the HTTP functions' machinery: no event conversion, no
//! per-request records after the response. It writes its own log line and
//! metrics as it goes. It ends by the deadline its invocation carries
//! ([`run_until`]); if Lambda stops it first, what it had not committed is
//! done again by the next run.

use crate::config::Config;
use crate::state::AppState;
use lambda_http::lambda_runtime::{LambdaEvent, Runtime};
use lambda_http::{Context, Error, service_fn};
use serde::Serialize;
use std::future::Future;
use std::time::{Duration, Instant, SystemTime};

/// A scheduled function's `main`: the configuration and the state (once per
/// cold start), then `handler` for each event: one at a time on classic
/// Lambda, as many at once as `AWS_LAMBDA_MAX_CONCURRENCY` says on Lambda
/// Managed Instances (a scheduled run's work must be safe to run beside
/// another's, as the consumer's is), on a current-thread runtime.
///
/// # Errors
///
/// When the configuration is invalid or the tokio runtime cannot be built:
/// the init fails, and Lambda reports it.
pub fn start_scheduled<F, Fut, R>(handler: F) -> Result<(), Error>
where
    F: Fn(&'static AppState, LambdaEvent<serde_json::Value>) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<R, Error>> + Send + 'static,
    R: Serialize + Send + 'static,
{
    lambda_http::tracing::init_default_subscriber();
    let mut config = Config::from_env()?;
    // One claim and one backlog query at a time per run, and the auditor's
    // statement when it is on, whatever the environment's concurrency would
    // give the HTTP functions.
    let auditor = usize::from(config.changes.audit.per_second > 0);
    config.postgres.pool_max_size = config.postgres.pool_max_size.min(2 + auditor);
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            let state: &'static AppState = Box::leak(Box::new(AppState::connect(&config).await?));
            Runtime::new(service_fn(move |event| handler(state, event)))
                .run_concurrent()
                .await
        })
}

/// How long a run lasts when its invocation carries no deadline to go by.
const WITHOUT_DEADLINE: Duration = Duration::from_secs(10);

/// When an invocation should stop taking on work: `margin` before the
/// deadline `context` carries.
///
/// Lambda's deadline is always ahead when an invocation arrives. One that
/// has already passed comes from an emulator: `cargo lambda watch` sends a
/// fixed 600,000 ms after the epoch. Such a run lasts [`WITHOUT_DEADLINE`]
/// instead of ending at once, so that `cargo lambda invoke` answers after a
/// few seconds and `scripts/run.sh`'s loop does not spin.
pub fn run_until(context: &Context, margin: Duration) -> Instant {
    let left = match context.deadline().duration_since(SystemTime::now()) {
        Ok(left) => left,
        Err(_) => WITHOUT_DEADLINE + margin,
    };
    Instant::now() + left.saturating_sub(margin)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context_with_deadline(deadline: SystemTime) -> Context {
        let mut context = Context::default();
        context.deadline = deadline
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
            .try_into()
            .unwrap();
        context
    }

    #[test]
    fn a_run_stops_the_margin_before_its_invocations_deadline() {
        // Arrange
        let context = context_with_deadline(SystemTime::now() + Duration::from_secs(60));

        // Act
        let left = run_until(&context, Duration::from_secs(3)) - Instant::now();

        // Assert
        assert!(left > Duration::from_millis(56_500) && left <= Duration::from_secs(57));
    }

    #[test]
    fn a_deadline_already_passed_as_cargo_lambda_watch_sends_it_gives_a_short_run() {
        // Arrange: `lambda-runtime-deadline-ms: 600000`.
        let mut context = Context::default();
        context.deadline = 600_000;

        // Act
        let left = run_until(&context, Duration::from_secs(3)) - Instant::now();

        // Assert
        assert!(left > WITHOUT_DEADLINE - Duration::from_millis(500) && left <= WITHOUT_DEADLINE);
    }
}
