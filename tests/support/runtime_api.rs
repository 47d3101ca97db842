//! A Lambda Runtime API (and the Extensions API beside it) on loopback, for
//! the runtime tests: it hands out queued events to as many pollers at once
//! as poll, like Lambda Managed Instances, and reports everything the
//! function sends, with a snapshot of whatever the test captures at that
//! moment (its EMF output, say).
//!
//! `GET .../invocation/next` waits, like Lambda, while nothing is queued; so
//! does the extension's `GET .../event/next`, which Lambda never answers for
//! an extension that subscribed to no event.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, mpsc};

/// What the function sent, in order of arrival.
#[derive(Debug)]
pub enum Seen {
    /// A runtime worker asked for an event (the `n`th poll, from 1).
    Poll { n: usize, snapshot: String },
    /// An invocation's answer (`/response`) or error (`/error`).
    Posted {
        request_id: String,
        error: bool,
        body: String,
        snapshot: String,
    },
    /// An extension registered under this name.
    Registered { name: String },
    /// The function reported a failed init.
    InitError { body: String },
}

pub struct RuntimeApi {
    pub address: SocketAddr,
    queue: mpsc::UnboundedSender<(String, String)>,
    pub seen: mpsc::UnboundedReceiver<Seen>,
}

impl RuntimeApi {
    /// Listens on a free loopback port; `snapshot` is taken as each request
    /// arrives.
    pub async fn start(snapshot: impl Fn() -> String + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let (queue, queued) = mpsc::unbounded_channel();
        let (seen_tx, seen) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            queued: Mutex::new(queued),
            seen: seen_tx,
            snapshot: Box::new(snapshot),
            polls: AtomicUsize::new(0),
        });
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, shared.clone()));
            }
        });
        Self {
            address,
            queue,
            seen,
        }
    }

    /// Queues `event` under `request_id`.
    pub fn queue(&self, request_id: &str, event: String) {
        self.queue
            .send((request_id.to_owned(), event))
            .expect("the API runs");
    }

    /// The next thing the function sent, or `None` after `limit`.
    pub async fn next_seen(&mut self, limit: std::time::Duration) -> Option<Seen> {
        tokio::time::timeout(limit, self.seen.recv())
            .await
            .ok()
            .flatten()
    }

    /// Points the process's Lambda environment at this API, as the function
    /// `function`, serving `concurrency` invocations at once.
    ///
    /// # Safety
    ///
    /// Sets process environment variables: call it before anything else
    /// runs in the process (nextest runs each test in a process of its own).
    pub unsafe fn configure_process(&self, function: &str, concurrency: usize) {
        // SAFETY: the caller's promise.
        unsafe {
            std::env::set_var("AWS_LAMBDA_RUNTIME_API", self.address.to_string());
            std::env::set_var("AWS_LAMBDA_FUNCTION_NAME", function);
            std::env::set_var("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "2048");
            std::env::set_var("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST");
            std::env::set_var("AWS_LAMBDA_MAX_CONCURRENCY", concurrency.to_string());
        }
    }
}

struct Shared {
    queued: Mutex<mpsc::UnboundedReceiver<(String, String)>>,
    seen: mpsc::UnboundedSender<Seen>,
    snapshot: Box<dyn Fn() -> String + Send + Sync>,
    polls: AtomicUsize,
}

async fn serve(stream: TcpStream, shared: Arc<Shared>) {
    let mut reader = BufReader::new(stream);
    while let Some(request) = read_request(&mut reader).await {
        let reply = answer(&request, &shared).await;
        if reader.get_mut().write_all(reply.as_bytes()).await.is_err() {
            return;
        }
    }
}

async fn answer(request: &Request, shared: &Shared) -> String {
    const ACCEPTED: &str = "HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n";
    let path = request.path.as_str();
    let seen = |what| {
        let _ = shared.seen.send(what);
    };
    if path == "/2018-06-01/runtime/invocation/next" {
        let n = shared.polls.fetch_add(1, Ordering::SeqCst) + 1;
        seen(Seen::Poll {
            n,
            snapshot: (shared.snapshot)(),
        });
        let next = shared.queued.lock().await.recv().await;
        let Some((request_id, event)) = next else {
            return std::future::pending().await;
        };
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
             Lambda-Runtime-Aws-Request-Id: {request_id}\r\n\
             Lambda-Runtime-Deadline-Ms: 99999999999999\r\n\
             Lambda-Runtime-Invoked-Function-Arn: arn:aws:lambda:us-east-1:123456789012:function:f\r\n\
             Content-Length: {}\r\n\r\n{event}",
            event.len()
        )
    } else if let Some(rest) = path.strip_prefix("/2018-06-01/runtime/invocation/") {
        let (request_id, kind) = rest.split_once('/').unwrap_or((rest, ""));
        seen(Seen::Posted {
            request_id: request_id.to_owned(),
            error: kind == "error",
            body: request.body.clone(),
            snapshot: (shared.snapshot)(),
        });
        ACCEPTED.to_owned()
    } else if path == "/2018-06-01/runtime/init/error" {
        seen(Seen::InitError {
            body: request.body.clone(),
        });
        ACCEPTED.to_owned()
    } else if path == "/2020-01-01/extension/register" {
        seen(Seen::Registered {
            name: request.header("lambda-extension-name").unwrap_or_default(),
        });
        "HTTP/1.1 200 OK\r\nLambda-Extension-Identifier: ext-1\r\n\
         Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
            .to_owned()
    } else if path == "/2020-01-01/extension/event/next" {
        std::future::pending().await
    } else {
        "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_owned()
    }
}

struct Request {
    path: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Request {
    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.clone())
    }
}

/// One HTTP/1.1 request: its path, headers and body.
async fn read_request(reader: &mut BufReader<TcpStream>) -> Option<Request> {
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).await.ok()? == 0 {
        return None;
    }
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).await.ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_owned(), value.trim().to_owned()));
        }
    }
    let mut request = Request {
        path: request_line.split_whitespace().nth(1)?.to_owned(),
        headers,
        body: String::new(),
    };
    let length = request
        .header("content-length")
        .and_then(|length| length.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).await.ok()?;
    request.body = String::from_utf8_lossy(&body).into_owned();
    Some(request)
}
