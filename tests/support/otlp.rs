//! An OTLP/HTTP trace receiver on 127.0.0.1, standing where the collector
//! extension listens beside a function: `POST /v1/traces` with a protobuf
//! `ExportTraceServiceRequest`, decoded with the OpenTelemetry project's own
//! message types (`opentelemetry-proto`), so a span the function encoded
//! wrongly fails to decode here as it would in a real collector. A receiver
//! started with [`Behaviour::Hang`] takes the request and never answers:
//! a collector that stopped working.

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use prost::Message;
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

/// How the receiver answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Decodes the spans and answers 200 with an empty response.
    Answer,
    /// Reads the request and never answers.
    Hang,
}

/// One span as received, with its resource's attributes, in hex and text.
#[derive(Debug, Clone)]
pub struct Received {
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent: String,
    pub name: String,
    /// OTLP's kind: 1 internal, 2 server, 3 client.
    pub kind: i32,
    pub start: u64,
    pub end: u64,
    pub failed: bool,
    pub attributes: BTreeMap<String, String>,
    pub resource: BTreeMap<String, String>,
    /// Every byte string of the request this span came in, to search for
    /// what no span may carry.
    pub raw: Vec<u8>,
}

#[derive(Default)]
struct Inbox {
    spans: Vec<Received>,
    requests: usize,
}

/// The receiver runs until this is dropped.
pub struct Receiver {
    pub address: SocketAddr,
    inbox: Arc<Mutex<Inbox>>,
    server: JoinHandle<()>,
}

impl Receiver {
    pub async fn start(behaviour: Behaviour) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let inbox = Arc::new(Mutex::new(Inbox::default()));
        let server = tokio::spawn(serve(listener, inbox.clone(), behaviour));
        Ok(Self {
            address,
            inbox,
            server,
        })
    }

    /// What `OTEL_EXPORTER_OTLP_ENDPOINT` is set to.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.address)
    }

    /// The requests received so far (answered or not).
    pub fn requests(&self) -> usize {
        self.inbox.lock().unwrap().requests
    }

    /// The spans received so far.
    pub fn spans(&self) -> Vec<Received> {
        self.inbox.lock().unwrap().spans.clone()
    }

    /// The spans, once at least `count` have come or `limit` has passed.
    pub async fn wait_for(&self, count: usize, limit: Duration) -> Vec<Received> {
        let until = Instant::now() + limit;
        loop {
            let spans = self.spans();
            if spans.len() >= count || Instant::now() >= until {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn serve(listener: TcpListener, inbox: Arc<Mutex<Inbox>>, behaviour: Behaviour) {
    // Owned here, so aborting the server task also closes its connections.
    let mut connections = JoinSet::new();
    while let Ok((stream, _)) = listener.accept().await {
        let inbox = inbox.clone();
        connections.spawn(async move {
            let service = service_fn(move |request| take(inbox.clone(), behaviour, request));
            let _ = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn take(
    inbox: Arc<Mutex<Inbox>>,
    behaviour: Behaviour,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let valid = request.method() == Method::POST
        && request.uri().path() == "/v1/traces"
        && request
            .headers()
            .get(hyper::header::CONTENT_TYPE)
            .is_some_and(|kind| kind == "application/x-protobuf");
    let body = request
        .into_body()
        .collect()
        .await
        .map(|body| body.to_bytes())
        .unwrap_or_default();
    inbox.lock().unwrap().requests += 1;
    if behaviour == Behaviour::Hang {
        std::future::pending::<()>().await;
    }
    let decoded = ExportTraceServiceRequest::decode(body.as_ref());
    let (Ok(decoded), true) = (decoded, valid) else {
        return Ok(status(StatusCode::BAD_REQUEST));
    };
    let received = flatten(decoded, &body);
    inbox.lock().unwrap().spans.extend(received);
    Ok(status(StatusCode::OK))
}

fn status(code: StatusCode) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = code;
    response
}

fn flatten(request: ExportTraceServiceRequest, raw: &[u8]) -> Vec<Received> {
    let mut received = Vec::new();
    for resource_spans in request.resource_spans {
        let resource = texts(
            &resource_spans
                .resource
                .map(|resource| resource.attributes)
                .unwrap_or_default(),
        );
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                received.push(Received {
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent: hex(&span.parent_span_id),
                    name: span.name,
                    kind: span.kind,
                    start: span.start_time_unix_nano,
                    end: span.end_time_unix_nano,
                    failed: span.status.is_some_and(|status| status.code == 2),
                    attributes: texts(&span.attributes),
                    resource: resource.clone(),
                    raw: raw.to_vec(),
                });
            }
        }
    }
    received
}

fn texts(attributes: &[KeyValue]) -> BTreeMap<String, String> {
    attributes
        .iter()
        .map(|attribute| {
            let value = match attribute
                .value
                .as_ref()
                .and_then(|value| value.value.as_ref())
            {
                Some(any_value::Value::StringValue(text)) => text.clone(),
                Some(any_value::Value::IntValue(number)) => number.to_string(),
                Some(any_value::Value::BoolValue(flag)) => flag.to_string(),
                Some(other) => format!(
                    "{:?}",
                    AnyValue {
                        value: Some(other.clone())
                    }
                ),
                None => String::new(),
            };
            (attribute.key.clone(), value)
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}
