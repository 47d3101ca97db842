//! A minimal Lambda Runtime API on 127.0.0.1, enough to run a function as
//! Lambda would, for the runtime tests and the bench:
//! `GET /2018-06-01/runtime/invocation/next` hands out the queued events (and
//! waits, like Lambda, while none is queued), and
//! `POST .../invocation/{id}/response` (or `/error`, `/runtime/init/error`)
//! records the answer. The Extensions API beside it takes an extension's
//! registration, and holds its `event/next` open, as Lambda does for an
//! extension that subscribed to no event. Every poll, completion and
//! registration is timestamped, which is what the cold-start and RSS
//! measurements read; a stub started with [`RuntimeStub::observing`] also
//! takes a snapshot of what the test captures (its logs, say) as each poll
//! and each answer arrives.
//!
//! Polls are served concurrently, as for a Lambda Managed Instance whose
//! runtime keeps several `next` polls open: each waiting poll takes the next
//! queued event as soon as there is one, and the stub keeps count of how many
//! events were out at once.

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
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::net::TcpListener;
use tokio::sync::{Mutex, mpsc};
use tokio::task::{JoinHandle, JoinSet};

const PREFIX: &str = "/2018-06-01/runtime/";
const EXTENSION_PREFIX: &str = "/2020-01-01/extension/";

/// What a test captures, read as a request arrives.
type Snapshot = Box<dyn Fn() -> String + Send + Sync>;

/// A poll for the next event.
#[derive(Debug)]
pub struct Poll {
    pub at: Instant,
    /// The snapshot at that moment; empty without [`RuntimeStub::observing`].
    pub snapshot: String,
}

/// An extension's registration.
#[derive(Debug)]
pub struct Registration {
    pub at: Instant,
    /// Its `Lambda-Extension-Name`.
    pub name: String,
}

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
    /// Its `x-cache` header, when it has one.
    pub cache: Option<String>,
    /// Its `ETag` header (`"3"`: the user's version), when it has one.
    pub etag: Option<String>,
    /// Its `body` (the user's JSON, or an error's); the whole answer of a
    /// function that answers no API Gateway response (`invalidate-cache`).
    pub body: Option<String>,
    /// The snapshot as the answer arrived; empty without
    /// [`RuntimeStub::observing`].
    pub snapshot: String,
}

struct Event {
    request_id: String,
    body: String,
    /// Its `Lambda-Runtime-Trace-Id`; none sent when `None`.
    trace: Option<String>,
}

struct Shared {
    function_name: String,
    events: Mutex<mpsc::UnboundedReceiver<Event>>,
    handed_out: std::sync::Mutex<HashMap<String, Instant>>,
    polls: mpsc::UnboundedSender<Poll>,
    completions: mpsc::UnboundedSender<Completion>,
    registrations: mpsc::UnboundedSender<Registration>,
    snapshot: Option<Snapshot>,
    /// The most events handed out and not yet answered at any one time.
    peak_in_flight: Arc<AtomicUsize>,
}

/// The stub's server runs until this is dropped.
pub struct RuntimeStub {
    pub address: SocketAddr,
    events: mpsc::UnboundedSender<Event>,
    polls: mpsc::UnboundedReceiver<Poll>,
    completions: mpsc::UnboundedReceiver<Completion>,
    registrations: mpsc::UnboundedReceiver<Registration>,
    next_id: u64,
    peak_in_flight: Arc<AtomicUsize>,
    server: JoinHandle<()>,
}

impl RuntimeStub {
    pub async fn start(function_name: &str) -> std::io::Result<Self> {
        Self::serve(function_name, None).await
    }

    /// As [`RuntimeStub::start`], taking `snapshot` as each poll and each
    /// answer arrives, before the function is answered.
    pub async fn observing(
        function_name: &str,
        snapshot: impl Fn() -> String + Send + Sync + 'static,
    ) -> std::io::Result<Self> {
        Self::serve(function_name, Some(Box::new(snapshot))).await
    }

    async fn serve(function_name: &str, snapshot: Option<Snapshot>) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let (events, events_rx) = mpsc::unbounded_channel();
        let (polls_tx, polls) = mpsc::unbounded_channel();
        let (completions_tx, completions) = mpsc::unbounded_channel();
        let (registrations_tx, registrations) = mpsc::unbounded_channel();
        let peak_in_flight = Arc::new(AtomicUsize::new(0));
        let shared = Arc::new(Shared {
            function_name: function_name.to_owned(),
            events: Mutex::new(events_rx),
            handed_out: std::sync::Mutex::default(),
            polls: polls_tx,
            completions: completions_tx,
            registrations: registrations_tx,
            snapshot,
            peak_in_flight: peak_in_flight.clone(),
        });
        let server = tokio::spawn(serve(listener, shared));
        Ok(Self {
            address,
            events,
            polls,
            completions,
            registrations,
            next_id: 0,
            peak_in_flight,
            server,
        })
    }

    /// Queues an API Gateway event for the next poll, with a trace header
    /// of its own ([`RuntimeStub::trace_header`], sampled); returns its
    /// request id.
    pub fn push(&mut self, body: String) -> String {
        let trace = Self::trace_header(self.next_id + 1, true);
        self.push_traced(body, Some(trace))
    }

    /// As [`RuntimeStub::push`], with `trace` as its
    /// `Lambda-Runtime-Trace-Id` (none sent when `None`).
    pub fn push_traced(&mut self, body: String, trace: Option<String>) -> String {
        self.next_id += 1;
        let request_id = format!("00000000-0000-4000-8000-{:012}", self.next_id);
        let _ = self.events.send(Event {
            request_id: request_id.clone(),
            body,
            trace,
        });
        request_id
    }

    /// The X-Ray trace header the stub sends with the `n`th event it
    /// queues: a trace id and a parent of its own.
    pub fn trace_header(n: u64, sampled: bool) -> String {
        format!(
            "Root=1-67cef5e4-8ddab48fb765{n:012x};Parent=53995c3f{n:08x};Sampled={}",
            u8::from(sampled)
        )
    }

    /// The function's next poll for an event, waiting at most `limit`.
    pub async fn next_poll(&mut self, limit: Duration) -> Option<Poll> {
        tokio::time::timeout(limit, self.polls.recv())
            .await
            .ok()
            .flatten()
    }

    /// The next extension registration, waiting at most `limit`.
    pub async fn next_registration(&mut self, limit: Duration) -> Option<Registration> {
        tokio::time::timeout(limit, self.registrations.recv())
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

    /// The next answer the function posted, however long that takes; `None`
    /// once the stub's server is gone.
    pub async fn completion(&mut self) -> Option<Completion> {
        self.completions.recv().await
    }

    /// The most events the function had been handed and not yet answered at
    /// once: 1 for a runtime that serves one invocation at a time.
    pub fn peak_in_flight(&self) -> usize {
        self.peak_in_flight.load(Ordering::Relaxed)
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
    if let Some(route) = path.strip_prefix(EXTENSION_PREFIX) {
        return Ok(extension(&shared, route, &request).await);
    }
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
    let (request_id, answer) = match route.strip_prefix("invocation/") {
        Some(rest) => match rest.split_once('/') {
            Some((id, "response")) => (id.to_owned(), Answer::of_response(&body)),
            Some((id, "error")) => (id.to_owned(), Answer::default()),
            _ => return Ok(plain(StatusCode::NOT_FOUND, "unknown path")),
        },
        None if route == "init/error" => ("init".to_owned(), Answer::default()),
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
        status: answer.status,
        cache: answer.cache,
        etag: answer.etag,
        body: answer.body,
        snapshot: shared.snapshot(),
    });
    Ok(plain(StatusCode::ACCEPTED, r#"{"status":"OK"}"#))
}

/// The Extensions API: a registration is accepted; `event/next` never
/// answers, there being no event for an extension that asked for none.
async fn extension(
    shared: &Shared,
    route: &str,
    request: &Request<Incoming>,
) -> Response<Full<Bytes>> {
    match route {
        "register" if request.method() == Method::POST => {
            let name = request
                .headers()
                .get("lambda-extension-name")
                .and_then(|name| name.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let _ = shared.registrations.send(Registration {
                at: Instant::now(),
                name,
            });
            Response::builder()
                .status(StatusCode::OK)
                .header("lambda-extension-identifier", "extension-1")
                .body(Full::new(Bytes::from_static(b"{}")))
                .unwrap_or_else(|_| plain(StatusCode::INTERNAL_SERVER_ERROR, "bad answer"))
        }
        "event/next" => std::future::pending().await,
        _ => plain(StatusCode::NOT_FOUND, "unknown path"),
    }
}

impl Shared {
    fn snapshot(&self) -> String {
        self.snapshot
            .as_ref()
            .map(|take| take())
            .unwrap_or_default()
    }
}

/// Like Lambda, holds the poll until an event is queued.
async fn next(shared: &Shared) -> Response<Full<Bytes>> {
    let _ = shared.polls.send(Poll {
        at: Instant::now(),
        snapshot: shared.snapshot(),
    });
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
        shared
            .peak_in_flight
            .fetch_max(handed_out.len(), Ordering::Relaxed);
    }
    let mut answer = Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .header("lambda-runtime-aws-request-id", event.request_id)
        .header(
            "lambda-runtime-deadline-ms",
            deadline.as_millis().to_string(),
        )
        .header("lambda-runtime-invoked-function-arn", arn);
    if let Some(trace) = event.trace {
        answer = answer.header("lambda-runtime-trace-id", trace);
    }
    answer
        .body(Full::new(Bytes::from(event.body)))
        .unwrap_or_else(|_| plain(StatusCode::INTERNAL_SERVER_ERROR, "bad event"))
}

/// What the stub reads of a posted API Gateway response.
#[derive(Debug, Default, PartialEq)]
struct Answer {
    status: Option<u16>,
    cache: Option<String>,
    etag: Option<String>,
    body: Option<String>,
}

impl Answer {
    fn of(body: &[u8]) -> Self {
        let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
            return Self::default();
        };
        Self {
            status: value["statusCode"]
                .as_u64()
                .and_then(|code| u16::try_from(code).ok()),
            cache: value["headers"][users_api::http::X_CACHE]
                .as_str()
                .map(str::to_owned),
            etag: value["headers"]["etag"].as_str().map(str::to_owned),
            body: value["body"].as_str().map(str::to_owned),
        }
    }

    /// What a function posted as its answer: an API Gateway response, or
    /// any other answer (a scheduled function's), kept whole as the body.
    fn of_response(body: &[u8]) -> Self {
        let answer = Self::of(body);
        if answer.status.is_some() {
            return answer;
        }
        Self {
            body: Some(String::from_utf8_lossy(body).into_owned()),
            ..answer
        }
    }
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    const LIMIT: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn polls_open_at_once_are_each_handed_an_event_and_counted_in_flight() {
        // Arrange: three polls waiting, each on its own connection, as a
        // runtime with three workers keeps them.
        let mut stub = RuntimeStub::start("find-user").await.unwrap();
        let mut workers = Vec::new();
        for _ in 0..3 {
            let mut worker = TcpStream::connect(stub.address).await.unwrap();
            let poll = format!("GET {PREFIX}invocation/next HTTP/1.1\r\nhost: stub\r\n\r\n");
            worker.write_all(poll.as_bytes()).await.unwrap();
            workers.push(worker);
        }
        for _ in 0..3 {
            stub.next_poll(LIMIT).await.unwrap();
        }

        // Act: three events; every worker answers only once all hold one.
        for n in 0..3 {
            stub.push(format!(r#"{{"n":{n}}}"#));
        }
        let mut ids = Vec::new();
        for worker in &mut workers {
            let head = read_response(worker).await;
            let id = head
                .lines()
                .find_map(|line| line.strip_prefix("lambda-runtime-aws-request-id: "))
                .unwrap()
                .to_owned();
            ids.push(id);
        }
        for (worker, id) in workers.iter_mut().zip(&ids) {
            let body = r#"{"statusCode":200,"headers":{"x-cache":"hit"}}"#;
            let post = format!(
                "POST {PREFIX}invocation/{id}/response HTTP/1.1\r\nhost: stub\r\n\
                 content-length: {}\r\n\r\n{body}",
                body.len()
            );
            worker.write_all(post.as_bytes()).await.unwrap();
            read_response(worker).await;
        }
        let mut answered = Vec::new();
        for _ in 0..3 {
            answered.push(stub.next_completion(LIMIT).await.unwrap());
        }

        // Assert
        assert_eq!(stub.peak_in_flight(), 3);
        let mut answered_ids: Vec<&str> = answered.iter().map(|c| c.request_id.as_str()).collect();
        answered_ids.sort_unstable();
        ids.sort_unstable();
        assert_eq!(answered_ids, ids);
        assert!(answered.iter().all(|c| c.status == Some(200)));
        assert!(answered.iter().all(|c| c.cache.as_deref() == Some("hit")));
    }

    /// Reads one HTTP/1.1 response (with a `content-length`) off `stream`
    /// and returns its head, header names in lower case as hyper writes them.
    async fn read_response(stream: &mut TcpStream) -> String {
        let mut bytes = Vec::new();
        let mut chunk = [0u8; 1024];
        loop {
            let read = tokio::time::timeout(LIMIT, stream.read(&mut chunk))
                .await
                .unwrap()
                .unwrap();
            assert!(read > 0, "connection closed");
            bytes.extend_from_slice(&chunk[..read]);
            let text = String::from_utf8_lossy(&bytes).into_owned();
            let Some((head, body)) = text.split_once("\r\n\r\n") else {
                continue;
            };
            let length: usize = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length: "))
                .unwrap()
                .parse()
                .unwrap();
            if body.len() >= length {
                return head.to_owned();
            }
        }
    }

    #[test]
    fn status_and_x_cache_are_read_from_an_api_gateway_response() {
        let hit = Answer::of(
            br#"{"statusCode":200,"headers":{"x-cache":"hit","etag":"\"3\""},"body":"{}"}"#,
        );
        let no_content = Answer::of(br#"{"statusCode":204,"headers":{}}"#);

        assert_eq!(hit.status, Some(200));
        assert_eq!(hit.cache.as_deref(), Some("hit"));
        assert_eq!(hit.etag.as_deref(), Some("\"3\""));
        assert_eq!(hit.body.as_deref(), Some("{}"));
        assert_eq!(no_content.status, Some(204));
        assert_eq!(no_content.cache, None);
        assert_eq!(Answer::of(br#"{"errorType":"x"}"#), Answer::default());
        assert_eq!(Answer::of(b"not json"), Answer::default());
        let scheduled = Answer::of_response(br#"{"applied":2,"audit":{}}"#);
        assert_eq!(scheduled.status, None);
        assert_eq!(
            scheduled.body.as_deref(),
            Some(r#"{"applied":2,"audit":{}}"#)
        );
    }
}
