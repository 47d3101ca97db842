//! Spans to the collector: OTLP/HTTP, protobuf, one POST per invocation.
//!
//! The collector is an extension beside the function (`localhost:4318`), so
//! the request is small and local: an HTTP/1.1 connection kept open between
//! invocations (hyper's client connection, which the runtime already links),
//! a new one when the kept one is busy or gone. Each export is bounded by
//! `OTEL_EXPORTER_OTLP_TIMEOUT`, and at most [`MAX_IN_FLIGHT`] run at once:
//! a collector that is down or stops answering loses spans, and says so in
//! one log line when it starts and one when it is back, never once per
//! invocation. The exporter never retries: the next invocation has its own
//! spans to send.

use super::span::{Kind, Span, Value};
use crate::config::TracesConfig;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use lambda_http::tracing;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Status, span, status};
use prost::Message;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::net::TcpStream;

/// Exports running at once; past this an invocation's spans are dropped.
pub const MAX_IN_FLIGHT: usize = 8;

/// The most of a collector's answer read (its body is a small status).
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// W3C trace flags: sampled, and OTLP's "whether the parent is remote is
/// known" (bit 8) and "it is" (bit 9).
const SAMPLED: u32 = 0x01;
const PARENT_LOCAL: u32 = 0x100;
const PARENT_REMOTE: u32 = 0x300;

pub struct Exporter {
    /// Where to connect: an address, not a name, so connecting never
    /// waits for the resolver.
    host: String,
    port: u16,
    /// The `Host` header and the path of the POST.
    authority: String,
    path: String,
    timeout: Duration,
    resource: Resource,
    /// A connection left open by the last export that finished.
    idle: Mutex<Option<SendRequest<Full<Bytes>>>>,
    in_flight: AtomicUsize,
    /// An export failed and no later one succeeded: the outage is logged.
    failing: AtomicBool,
}

/// Why an export did not reach the collector; what the log line says.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error("cannot connect: {0}")]
    Connect(#[source] std::io::Error),
    #[error("HTTP: {0}")]
    Http(#[source] hyper::Error),
    #[error("answered HTTP {0}")]
    Status(u16),
    #[error("the endpoint's path cannot be sent")]
    Path,
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("{MAX_IN_FLIGHT} exports already waiting for it")]
    Busy,
}

/// One export's place among those in flight; leaves when dropped.
pub struct Slot<'a>(&'a Exporter);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Exporter {
    pub fn new(config: &TracesConfig) -> Self {
        Self {
            host: config.host.clone(),
            port: config.port,
            authority: config.authority.clone(),
            path: config.path.clone(),
            timeout: config.timeout,
            resource: Resource {
                attributes: config
                    .resource
                    .iter()
                    .map(|(key, value)| attribute(key, &Value::from(value.clone())))
                    .collect(),
                ..Resource::default()
            },
            idle: Mutex::new(None),
            in_flight: AtomicUsize::new(0),
            failing: AtomicBool::new(false),
        }
    }

    /// A place for one more export, unless [`MAX_IN_FLIGHT`] are running:
    /// then the spans are dropped (logged once, as any failure).
    pub fn reserve(&self) -> Option<Slot<'_>> {
        if self.in_flight.fetch_add(1, Ordering::AcqRel) >= MAX_IN_FLIGHT {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            self.failed(&Failure::Busy);
            return None;
        }
        Some(Slot(self))
    }

    /// Sends `spans` of the trace `trace_id`, within the timeout; the slot
    /// is given back when this ends.
    pub async fn send(&self, _slot: Slot<'_>, trace_id: [u8; 16], spans: Vec<Span>) {
        let body = self.encode(trace_id, spans);
        let outcome = match tokio::time::timeout(self.timeout, self.post(body)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(Failure::Timeout(self.timeout)),
        };
        match outcome {
            Ok(()) => {
                if self.failing.swap(false, Ordering::AcqRel) {
                    tracing::info!(
                        collector = self.authority,
                        "traces: the collector takes spans again"
                    );
                }
            }
            Err(failure) => self.failed(&failure),
        }
    }

    fn failed(&self, failure: &Failure) {
        if !self.failing.swap(true, Ordering::AcqRel) {
            tracing::warn!(
                collector = self.authority,
                problem = %failure,
                "traces: the collector did not take an invocation's spans; spans are dropped until it does"
            );
        }
    }

    async fn post(&self, body: Vec<u8>) -> Result<(), Failure> {
        let kept = lock(&self.idle).take().filter(SendRequest::is_ready);
        let mut sender = match kept {
            Some(sender) => sender,
            None => self.connect().await?,
        };
        let request = hyper::Request::post(&self.path)
            .header(hyper::header::HOST, &self.authority)
            .header(hyper::header::CONTENT_TYPE, "application/x-protobuf")
            .body(Full::new(Bytes::from(body)))
            .map_err(|_| Failure::Path)?;
        let response = sender.send_request(request).await.map_err(Failure::Http)?;
        let status = response.status();
        // Read to the end, so the connection can carry the next export.
        let _ = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await;
        if !status.is_success() {
            return Err(Failure::Status(status.as_u16()));
        }
        *lock(&self.idle) = Some(sender);
        Ok(())
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, Failure> {
        let stream = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(Failure::Connect)?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(Failure::Http)?;
        // Drives the socket until the sender is dropped or the peer closes.
        tokio::spawn(connection);
        Ok(sender)
    }

    /// The OTLP request: this function's resource, one scope, the spans.
    fn encode(&self, trace_id: [u8; 16], spans: Vec<Span>) -> Vec<u8> {
        let spans = spans
            .into_iter()
            .map(|span| to_proto(trace_id, span))
            .collect();
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(self.resource.clone()),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "users-api".to_owned(),
                        version: env!("CARGO_PKG_VERSION").to_owned(),
                        ..InstrumentationScope::default()
                    }),
                    spans,
                    ..ScopeSpans::default()
                }],
                ..ResourceSpans::default()
            }],
        }
        .encode_to_vec()
    }
}

fn to_proto(trace_id: [u8; 16], span: Span) -> opentelemetry_proto::tonic::trace::v1::Span {
    let kind = match span.kind {
        Kind::Server => span::SpanKind::Server,
        Kind::Client => span::SpanKind::Client,
        Kind::Internal => span::SpanKind::Internal,
    };
    let parent_remote = span.kind == Kind::Server;
    opentelemetry_proto::tonic::trace::v1::Span {
        trace_id: trace_id.to_vec(),
        span_id: span.id.to_vec(),
        parent_span_id: if span.parent == [0; 8] {
            Vec::new()
        } else {
            span.parent.to_vec()
        },
        flags: SAMPLED
            | if parent_remote {
                PARENT_REMOTE
            } else {
                PARENT_LOCAL
            },
        name: span.name.into_owned(),
        kind: kind.into(),
        start_time_unix_nano: span.start,
        end_time_unix_nano: span.end,
        attributes: span
            .attributes
            .iter()
            .map(|(key, value)| attribute(key, value))
            .collect(),
        status: span.failed.then(|| Status {
            code: status::StatusCode::Error.into(),
            ..Status::default()
        }),
        ..opentelemetry_proto::tonic::trace::v1::Span::default()
    }
}

fn attribute(key: &str, value: &Value) -> KeyValue {
    let value = match value {
        Value::Str(text) => any_value::Value::StringValue(text.clone().into_owned()),
        Value::Int(number) => any_value::Value::IntValue(*number),
        Value::Bool(flag) => any_value::Value::BoolValue(*flag),
    };
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
        ..KeyValue::default()
    }
}

/// A poisoned lock only means a panic elsewhere; the data is still usable.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
