//! Each invocation's telemetry, written once its response is out, and the
//! count of invocations in flight.
//!
//! The runtime calls the handler, posts the response to the Runtime API and
//! only then completes the future this layer wraps; on classic Lambda it asks
//! for the next event after that, and Lambda may freeze the environment from
//! then on. The layer runs the invocation inside [`Outbox::holding`] and
//! writes the records it kept right after: the client's answer never waits
//! for a log write, no record is left unwritten in a frozen environment, and
//! invocations served at once each write their own record after their own
//! response.
//!
//! A traced invocation (tracing on, and sampled) runs inside
//! [`trace::collecting`] as well; its spans go to the collector after its
//! record is written, in a task of their own, bounded by the exporter's
//! timeout. The next event is asked for once the request is on the local
//! collector's socket (at most [`HANDOFF_LIMIT`] later), never after its
//! answer: a frozen environment holds the spans in the kernel, not in this
//! process, and a collector that is slow or gone delays no invocation. A
//! shutting-down environment waits for exports still running as for the
//! invocations in flight (they keep their place in [`InFlight`] until they
//! end).

use crate::state::AppState;
use crate::telemetry::Outbox;
use crate::telemetry::trace::{self, Invocation};
use lambda_http::lambda_runtime::LambdaInvocation;
use lambda_http::tower::{Layer, Service};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::Notify;

/// The most the runtime waits for an export's request to reach the socket
/// before it asks for the next event: a connection to the local collector
/// is made and written to in microseconds, and a collector that accepts no
/// connection must not hold invocations up.
const HANDOFF_LIMIT: Duration = Duration::from_millis(1);

/// The invocations between their event and their written telemetry.
#[derive(Default)]
pub struct InFlight {
    count: AtomicUsize,
    idle: Notify,
}

impl InFlight {
    pub fn count(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// Completes once no invocation is in flight.
    pub async fn drained(&self) {
        loop {
            let idle = self.idle.notified();
            tokio::pin!(idle);
            // Registered before the check, so a leave in between still wakes it.
            idle.as_mut().enable();
            if self.count() == 0 {
                return;
            }
            idle.await;
        }
    }

    fn enter(self: &std::sync::Arc<Self>) -> Entered {
        self.count.fetch_add(1, Ordering::AcqRel);
        Entered(self.clone())
    }
}

/// One invocation in flight; leaves when dropped, also when its future is.
struct Entered(std::sync::Arc<InFlight>);

impl Drop for Entered {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// Writes each invocation's telemetry after its response has been posted.
#[derive(Clone)]
pub struct FlushAfterResponse {
    state: &'static AppState,
    in_flight: std::sync::Arc<InFlight>,
}

impl FlushAfterResponse {
    pub fn new(state: &'static AppState, in_flight: std::sync::Arc<InFlight>) -> Self {
        Self { state, in_flight }
    }
}

impl<S> Layer<S> for FlushAfterResponse {
    type Service = Flushing<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Flushing {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`FlushAfterResponse`] wraps around the runtime's own, whose
/// future completes once the response has been posted.
#[derive(Clone)]
pub struct Flushing<S> {
    inner: S,
    layer: FlushAfterResponse,
}

impl<S> Service<LambdaInvocation> for Flushing<S>
where
    S: Service<LambdaInvocation, Response = (), Error = lambda_http::lambda_runtime::Error>,
    S::Future: Send + 'static,
{
    type Response = ();
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<(), S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, invocation: LambdaInvocation) -> Self::Future {
        let entered = self.layer.in_flight.enter();
        let state = self.layer.state;
        let context = &invocation.context;
        let traced = state.telemetry.traced(context.xray_trace_id.as_deref());
        let about = traced.map(|_| Invocation {
            request_id: context.request_id.clone(),
            function_arn: context.invoked_function_arn.clone(),
        });
        let answered = self.inner.call(invocation);
        Box::pin(async move {
            let ((result, collected), records) =
                Outbox::holding(trace::collecting(traced, answered)).await;
            state.telemetry.write(&records);
            let export = collected
                .zip(about)
                .and_then(|(collected, about)| state.telemetry.export(collected, about, &records));
            if let Some((export, on_socket)) = export {
                tokio::spawn(async move {
                    export.await;
                    drop(entered);
                });
                // Until the request is on the socket, so that a frozen
                // environment holds it in the kernel; never for an answer.
                let _ = tokio::time::timeout(HANDOFF_LIMIT, on_socket).await;
            }
            result
        })
    }
}
