//! Panic isolation: `lambda_http`'s adapter (API Gateway event -> `Request`
//! -> handler -> API Gateway response), with every panic caught and
//! answered.
//!
//! `lambda_http` still panics on some malformed events while converting
//! them (a space in `rawQueryString`, an invalid `Host`: upstream issues
//! #461, #489, #1165). The conversion is caught here and answered 400; a
//! panic in a handler is answered 500. Both answers are JSON, in the
//! event's own response format, and neither touches the other invocations
//! an environment serves at once. (`lambda_runtime` would catch them too, one
//! layer out, but report them as invocation errors, which API Gateway turns
//! into its own 502 without a body.)

use crate::error::ApiError;
use crate::http;
use crate::telemetry::trace;
use futures_util::FutureExt;
use lambda_http::request::LambdaRequest;
use lambda_http::tower::Service;
use lambda_http::{
    Adapter, Body, Error, LambdaEvent, Request, RequestExt, Response, TransformResponse, tracing,
};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::task::{Context, Poll};

/// `lambda_http`'s adapter around a handler service, with its event
/// conversion guarded.
#[derive(Clone)]
pub struct Guarded<S> {
    adapter: Adapter<'static, Response<Body>, S>,
}

impl<S> Guarded<S>
where
    S: Service<Request, Response = Response<Body>, Error = Error>,
    S::Future: Send + 'static,
{
    pub fn new(handler: S) -> Self {
        Self {
            adapter: Adapter::from(handler),
        }
    }
}

impl<S> Service<LambdaEvent<LambdaRequest>> for Guarded<S>
where
    S: Service<Request, Response = Response<Body>, Error = Error>,
    S::Future: Send + 'static,
{
    type Response =
        <Adapter<'static, Response<Body>, S> as Service<LambdaEvent<LambdaRequest>>>::Response;
    type Error = Error;
    type Future = TransformResponse<'static, Response<Body>, Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.adapter.poll_ready(cx)
    }

    fn call(&mut self, event: LambdaEvent<LambdaRequest>) -> Self::Future {
        let origin = event.payload.request_origin();
        let request_id = event.context.request_id.clone();
        let xray_trace_id = xray_trace_id(event.context.xray_trace_id.as_deref());
        let adapter = &mut self.adapter;
        std::panic::catch_unwind(AssertUnwindSafe(|| adapter.call(event))).unwrap_or_else(|_| {
            tracing::warn!(
                request_id,
                xray_trace_id,
                "malformed API Gateway event: answered 400"
            );
            let answer = http::error_response(&ApiError::BadRequest {
                code: "malformed_event",
                message: "the request could not be read as HTTP".to_owned(),
            });
            TransformResponse::Request(origin, std::future::ready(Ok(answer)).boxed())
        })
    }
}

/// The `Root` of an invocation's X-Ray trace header, as log records carry it.
fn xray_trace_id(header: Option<&str>) -> Option<String> {
    header.and_then(trace::root_of).map(str::to_owned)
}

/// `request`'s handling (`handle`), with a panic answered 500 instead of
/// unwinding further, and logged with the request's ids.
pub async fn answer_panics<F>(
    request: Request,
    handle: impl FnOnce(Request) -> F,
) -> Result<Response<Body>, Error>
where
    F: Future<Output = Result<Response<Body>, Error>>,
{
    let context = request.lambda_context_ref();
    let request_id = context.map(|context| context.request_id.clone());
    let xray_trace_id = xray_trace_id(context.and_then(|context| context.xray_trace_id.as_deref()));
    AssertUnwindSafe(handle(request))
        .catch_unwind()
        .await
        .unwrap_or_else(|_| {
            tracing::error!(
                request_id,
                xray_trace_id,
                "the handler panicked: answered 500"
            );
            Ok(http::error_response(&ApiError::Internal(
                "the handler panicked".into(),
            )))
        })
}
