//! The Lambda runtime loop of every function: `lambda_http::run`'s, plus one
//! layer that writes each request's telemetry once its response is out.
//!
//! The runtime calls the handler, posts the response to the Runtime API and
//! only then asks for the next event; Lambda may freeze the sandbox from that
//! request on. Between the two, [`FlushAfterResponse`] writes the request's
//! log record and EMF line (see [`crate::telemetry::Outbox`]), so the client's
//! answer never waits for a log write and no record is left unwritten in a
//! frozen sandbox.

use crate::state::AppState;
use lambda_http::lambda_runtime::layers::TracingLayer;
use lambda_http::lambda_runtime::{LambdaInvocation, Runtime};
use lambda_http::tower::{Layer, Service, service_fn};
use lambda_http::{Adapter, Body, Error, Request, Response};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Serves `handler` on the Lambda Runtime API until the sandbox ends, with
/// the request-id tracing span `lambda_http::run` adds.
///
/// # Panics
///
/// When the Lambda environment (`AWS_LAMBDA_RUNTIME_API` and the function's
/// name, memory size and version) is missing, as `lambda_http::run` does.
pub async fn run<'a, F, Fut>(state: &'a AppState, handler: F) -> Result<(), Error>
where
    F: Fn(Request) -> Fut + 'a,
    Fut: Future<Output = Result<Response<Body>, Error>> + Send + 'a,
{
    state.telemetry.defer();
    Runtime::new(Adapter::from(service_fn(handler)))
        .layer(FlushAfterResponse { state })
        .layer(TracingLayer::new())
        .run()
        .await
}

/// Flushes the state's telemetry after each invocation has been answered.
pub struct FlushAfterResponse<'a> {
    pub state: &'a AppState,
}

impl<'a, S> Layer<S> for FlushAfterResponse<'a> {
    type Service = Flushing<'a, S>;

    fn layer(&self, inner: S) -> Self::Service {
        Flushing {
            inner,
            state: self.state,
        }
    }
}

/// The service [`FlushAfterResponse`] wraps around the runtime's own, whose
/// future completes once the response has been posted.
pub struct Flushing<'a, S> {
    inner: S,
    state: &'a AppState,
}

impl<'a, S> Service<LambdaInvocation> for Flushing<'a, S>
where
    S: Service<LambdaInvocation, Response = (), Error = lambda_http::lambda_runtime::Error>,
    S::Future: 'a,
{
    type Response = ();
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<(), S::Error>> + 'a>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, invocation: LambdaInvocation) -> Self::Future {
        let answered = self.inner.call(invocation);
        let state = self.state;
        Box::pin(async move {
            let result = answered.await;
            state.telemetry.flush();
            result
        })
    }
}
