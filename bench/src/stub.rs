//! A minimal Lambda Runtime API on 127.0.0.1, enough to run a function binary
//! as Lambda would: `GET /2018-06-01/runtime/invocation/next` hands out the
//! queued events (and waits, like Lambda, while none is queued), and
//! `POST .../invocation/{id}/response` (or `/error`, `/runtime/init/error`)
//! records the answer. Every poll and every completion is timestamped, which
//! is what the cold-start and RSS measurements read.

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::net::TcpListener;
use tokio::sync::{Mutex, mpsc};
use tokio::task::{JoinHandle, JoinSet};

const PREFIX: &str = "/2018-06-01/runtime/";

/// One answer posted by the function.
#[derive(Debug)]
pub struct Completion {
    pub request_id: String,
    /// When the answer arrived.
    pub at: Instant,
    /// From handing out the event to receiving the answer.
    pub latency: Duration,
    /// `statusCode` of an API Gateway response; `None` for an error post.
    pub status: Option<u16>,
}

struct Event {
    request_id: String,
    body: String,
}

struct Shared {
    function_name: String,
    events: Mutex<mpsc::UnboundedReceiver<Event>>,
    handed_out: std::sync::Mutex<HashMap<String, Instant>>,
    polls: mpsc::UnboundedSender<Instant>,
    completions: mpsc::UnboundedSender<Completion>,
}

/// The stub's server runs until this is dropped.
pub struct RuntimeStub {
    pub address: SocketAddr,
    events: mpsc::UnboundedSender<Event>,
    polls: mpsc::UnboundedReceiver<Instant>,
    completions: mpsc::UnboundedReceiver<Completion>,
    next_id: u64,
    server: JoinHandle<()>,
}

impl RuntimeStub {
    pub async fn start(function_name: &str) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let (events, events_rx) = mpsc::unbounded_channel();
        let (polls_tx, polls) = mpsc::unbounded_channel();
        let (completions_tx, completions) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            function_name: function_name.to_owned(),
            events: Mutex::new(events_rx),
            handed_out: std::sync::Mutex::default(),
            polls: polls_tx,
            completions: completions_tx,
        });
        let server = tokio::spawn(serve(listener, shared));
        Ok(Self {
            address,
            events,
            polls,
            completions,
            next_id: 0,
            server,
        })
    }

    /// Queues an API Gateway event for the next poll.
    pub fn push(&mut self, body: String) {
        self.next_id += 1;
        let request_id = format!("00000000-0000-4000-8000-{:012}", self.next_id);
        let _ = self.events.send(Event { request_id, body });
    }

    /// When the function next polled for an event, waiting at most `limit`.
    pub async fn next_poll(&mut self, limit: Duration) -> Option<Instant> {
        tokio::time::timeout(limit, self.polls.recv())
            .await
            .ok()
            .flatten()
    }

    /// The next answer the function posted, waiting at most `limit`.
    pub async fn next_completion(&mut self, limit: Duration) -> Option<Completion> {
        tokio::time::timeout(limit, self.completions.recv())
            .await
            .ok()
            .flatten()
    }
}

impl Drop for RuntimeStub {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    // Owned here, so aborting the server task also closes its connections.
    let mut connections = JoinSet::new();
    while let Ok((stream, _)) = listener.accept().await {
        let shared = shared.clone();
        connections.spawn(async move {
            let service = service_fn(move |request| answer(shared.clone(), request));
            let _ = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn answer(
    shared: Arc<Shared>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = request.uri().path().to_owned();
    let Some(route) = path.strip_prefix(PREFIX) else {
        return Ok(plain(StatusCode::NOT_FOUND, "unknown path"));
    };
    if request.method() == Method::GET && route == "invocation/next" {
        return Ok(next(&shared).await);
    }
    if request.method() != Method::POST {
        return Ok(plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"));
    }
    let body = match request.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return Ok(plain(StatusCode::BAD_REQUEST, "unreadable body")),
    };
    let (request_id, status) = match route.strip_prefix("invocation/") {
        Some(rest) => match rest.split_once('/') {
            Some((id, "response")) => (id.to_owned(), status_code(&body)),
            Some((id, "error")) => (id.to_owned(), None),
            _ => return Ok(plain(StatusCode::NOT_FOUND, "unknown path")),
        },
        None if route == "init/error" => ("init".to_owned(), None),
        None => return Ok(plain(StatusCode::NOT_FOUND, "unknown path")),
    };
    let at = Instant::now();
    let handed_out = shared
        .handed_out
        .lock()
        .ok()
        .and_then(|mut handed_out| handed_out.remove(&request_id))
        .unwrap_or(at);
    let _ = shared.completions.send(Completion {
        request_id,
        at,
        latency: at - handed_out,
        status,
    });
    Ok(plain(StatusCode::ACCEPTED, r#"{"status":"OK"}"#))
}

/// Like Lambda, holds the poll until an event is queued.
async fn next(shared: &Shared) -> Response<Full<Bytes>> {
    let _ = shared.polls.send(Instant::now());
    let Some(event) = shared.events.lock().await.recv().await else {
        return plain(StatusCode::SERVICE_UNAVAILABLE, "stub stopped");
    };
    let deadline = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        + Duration::from_secs(30);
    let arn = format!(
        "arn:aws:lambda:us-east-1:123456789012:function:{}",
        shared.function_name
    );
    if let Ok(mut handed_out) = shared.handed_out.lock() {
        handed_out.insert(event.request_id.clone(), Instant::now());
    }
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .header("lambda-runtime-aws-request-id", event.request_id)
        .header(
            "lambda-runtime-deadline-ms",
            deadline.as_millis().to_string(),
        )
        .header("lambda-runtime-invoked-function-arn", arn)
        .header(
            "lambda-runtime-trace-id",
            "Root=1-67cef5e4-8ddab48fb765b86d4e572b04;Parent=53995c3f42cd8ad8;Sampled=0",
        )
        .body(Full::new(Bytes::from(event.body)))
        .unwrap_or_else(|_| plain(StatusCode::INTERNAL_SERVER_ERROR, "bad event"))
}

fn status_code(body: &[u8]) -> Option<u16> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    value["statusCode"]
        .as_u64()
        .and_then(|code| u16::try_from(code).ok())
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_code_is_read_from_an_api_gateway_response() {
        assert_eq!(
            status_code(br#"{"statusCode":204,"headers":{}}"#),
            Some(204)
        );
        assert_eq!(status_code(br#"{"errorType":"x"}"#), None);
        assert_eq!(status_code(b"not json"), None);
    }
}
