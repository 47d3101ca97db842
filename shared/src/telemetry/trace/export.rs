//! Spans to the collector: OTLP/HTTP, protobuf, one POST per invocation.
//!
//! The collector is an extension beside the function (`localhost:4318`), so
//! the request is small and local: an HTTP/1.1 connection kept open between
//! invocations (hyper's client connection, which the runtime already links),
//! a new one when the kept one is busy or gone. Each export is bounded by
//! `OTEL_EXPORTER_OTLP_TIMEOUT`, and at most [`MAX_IN_FLIGHT`] run at once:
//! a collector that is down or stops answering loses spans, and says so in
//! one log line when it starts and one when it is back, never once per
//! invocation. The exporter retries only a kept connection that the
//! collector closed while it was idle, once, on a new one; anything else
//! loses the spans, and the next invocation has its own to send.
//!
//! An export says when its request has been handed to the socket (its
//! body, [`Request`], tells a oneshot channel): on classic Lambda the environment may be frozen as soon
//! as the runtime asks for the next event, and bytes in the kernel's buffer
//! reach the collector (which runs beside the function, frozen and thawed
//! with it), while a request still in this process would wait for the next
//! invocation. The runtime waits for that, briefly; never for the answer.

use super::span::{Kind, Span, Value};
use crate::config::TracesConfig;
use http_body_util::{BodyExt, Limited};
use hyper::body::{Body, Bytes, Frame, SizeHint};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use lambda_http::tracing;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Status, span, status};
use prost::Message;
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::oneshot;

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
    idle: Mutex<Option<SendRequest<Request>>>,
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
    /// is given back when this ends. `handed_off` is told when the request
    /// is on the socket.
    pub async fn send(
        &self,
        _slot: Slot<'_>,
        trace_id: [u8; 16],
        spans: Vec<Span>,
        handed_off: oneshot::Sender<()>,
    ) {
        let body = Request {
            bytes: Some(Bytes::from(self.encode(trace_id, spans))),
            handed_off: Some(handed_off),
        };
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

    /// POSTs `body` on the kept connection, or a new one. A kept connection
    /// the collector closed while it was idle (its idle timeout, perhaps
    /// passed while the environment was frozen) fails before any answer:
    /// the request goes once more, on a new connection.
    async fn post(&self, body: Request) -> Result<(), Failure> {
        let bytes = body.bytes.clone().unwrap_or_default();
        let Some(kept) = lock(&self.idle).take().filter(SendRequest::is_ready) else {
            return self.exchange(self.connect().await?, body).await;
        };
        match self.exchange(kept, body).await {
            Err(Failure::Http(_)) => {
                let again = Request {
                    bytes: Some(bytes),
                    handed_off: None,
                };
                self.exchange(self.connect().await?, again).await
            }
            other => other,
        }
    }

    /// One request on `sender`'s connection, and its answer; the
    /// connection is kept for the next export when it answered well.
    async fn exchange(
        &self,
        mut sender: SendRequest<Request>,
        body: Request,
    ) -> Result<(), Failure> {
        let request = hyper::Request::post(&self.path)
            .header(hyper::header::HOST, &self.authority)
            .header(hyper::header::CONTENT_TYPE, "application/x-protobuf")
            .body(body)
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

    async fn connect(&self) -> Result<SendRequest<Request>, Failure> {
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

/// An export's body: the encoded request, sent in one frame, telling
/// `handed_off` when the connection takes it to write. Dropped unsent (the
/// connection failed), it tells nothing, and the waiting side sees the
/// sender go.
struct Request {
    bytes: Option<Bytes>,
    handed_off: Option<oneshot::Sender<()>>,
}

impl Body for Request {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let frame = self.bytes.take().map(|bytes| Ok(Frame::data(bytes)));
        // The connection writes what it takes in the same poll, before any
        // other task runs on this thread.
        if let Some(handed_off) = self.handed_off.take() {
            let _ = handed_off.send(());
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.bytes.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        let length = self.bytes.as_ref().map_or(0, Bytes::len);
        SizeHint::with_exact(u64::try_from(length).unwrap_or(u64::MAX))
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn exporter_to(port: u16) -> Exporter {
        Exporter::new(&TracesConfig {
            host: "127.0.0.1".to_owned(),
            port,
            authority: format!("localhost:{port}"),
            path: "/v1/traces".to_owned(),
            timeout: Duration::from_secs(2),
            resource: vec![("service.name", "test".to_owned())],
        })
    }

    fn span() -> Span {
        Span {
            id: [1; 8],
            parent: [0; 8],
            name: "GET /users/{id}".into(),
            kind: Kind::Server,
            start: 1,
            end: 2,
            attributes: vec![("http.route", "/users/{id}".into())],
            failed: false,
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn an_export_says_it_is_handed_off_only_once_its_request_is_on_the_socket() {
        // Arrange: a collector that accepts and never answers.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let exporter: &'static Exporter =
            Box::leak(Box::new(exporter_to(listener.local_addr().unwrap().port())));
        let (handed_off, on_socket) = oneshot::channel();

        // Act: the export in a task of its own; here, only the hand-off.
        let slot = exporter.reserve().unwrap();
        tokio::spawn(exporter.send(slot, [7; 16], vec![span()], handed_off));
        let told = tokio::time::timeout(Duration::from_secs(2), on_socket).await;
        // No other task runs from here on: what the socket holds was
        // written before the hand-off was told.
        let (mut accepted, _) = listener.accept().unwrap();
        accepted.set_nonblocking(true).unwrap();
        let mut request = vec![0; 64 * 1024];
        let read = accepted.read(&mut request);

        // Assert
        assert!(matches!(told, Ok(Ok(()))), "{told:?}");
        let read = read.expect("the request already on the socket");
        let text = String::from_utf8_lossy(&request[..read]);
        assert!(text.starts_with("POST /v1/traces HTTP/1.1\r\n"), "{text}");
        assert!(text.contains("application/x-protobuf"), "{text}");
        let length: usize = text
            .lines()
            .find_map(|line| line.strip_prefix("content-length: "))
            .and_then(|length| length.trim().parse().ok())
            .expect("a content-length");
        assert_eq!(
            read,
            text.find("\r\n\r\n").unwrap() + 4 + length,
            "the whole body"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn an_export_that_cannot_connect_ends_its_hand_off_at_once() {
        // Arrange: a port nothing listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let exporter: &'static Exporter = Box::leak(Box::new(exporter_to(port)));
        let (handed_off, on_socket) = oneshot::channel();

        // Act
        let slot = exporter.reserve().unwrap();
        tokio::spawn(exporter.send(slot, [7; 16], vec![span()], handed_off));
        let told = tokio::time::timeout(Duration::from_secs(2), on_socket).await;

        // Assert: the sender went with the failed export; nothing waits.
        assert!(matches!(told, Ok(Err(_))), "{told:?}");
        assert!(exporter.failing.load(Ordering::Acquire));
    }

    /// A collector that answers the first request of each connection and
    /// closes the connection, unanswered, on the second, as one whose idle
    /// timeout passed would: counts of requests answered and dropped.
    async fn closing_collector() -> (u16, std::sync::Arc<[AtomicUsize; 2]>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let counts = std::sync::Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
        let seen = counts.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let seen = seen.clone();
                tokio::spawn(async move {
                    let mut buffer = Vec::new();
                    for request in 0.. {
                        // One request: its head, then its body.
                        let mut chunk = [0; 4096];
                        let length = loop {
                            let text = String::from_utf8_lossy(&buffer).into_owned();
                            if let Some(end) = text.find("\r\n\r\n") {
                                let body: usize = text[..end]
                                    .lines()
                                    .find_map(|line| line.strip_prefix("content-length: "))
                                    .and_then(|length| length.trim().parse().ok())
                                    .unwrap_or(0);
                                break end + 4 + body;
                            }
                            match stream.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(read) => buffer.extend_from_slice(&chunk[..read]),
                            }
                        };
                        while buffer.len() < length {
                            match stream.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(read) => buffer.extend_from_slice(&chunk[..read]),
                            }
                        }
                        buffer.drain(..length);
                        if request > 0 {
                            seen[1].fetch_add(1, Ordering::SeqCst);
                            return;
                        }
                        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
                        if stream.write_all(answer).await.is_err() {
                            return;
                        }
                        seen[0].fetch_add(1, Ordering::SeqCst);
                    }
                });
            }
        });
        (port, counts)
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_kept_connection_the_collector_closed_is_replaced_and_the_spans_still_go() {
        // Arrange
        let (port, counts) = closing_collector().await;
        let exporter: &'static Exporter = Box::leak(Box::new(exporter_to(port)));
        let export = || async {
            let (handed_off, _on_socket) = oneshot::channel();
            let slot = exporter.reserve().unwrap();
            exporter.send(slot, [7; 16], vec![span()], handed_off).await;
        };

        // Act: the first export opens and keeps a connection; the second
        // meets it closed.
        export().await;
        let kept = lock(&exporter.idle).is_some();
        export().await;

        // Assert: both exports answered, the second on a new connection,
        // and nothing failed.
        assert!(kept, "the first export kept its connection");
        let answered = counts[0].load(Ordering::SeqCst);
        let dropped = counts[1].load(Ordering::SeqCst);
        assert_eq!((answered, dropped), (2, 1));
        assert!(!exporter.failing.load(Ordering::Acquire));
    }
}
