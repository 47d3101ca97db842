//! The functions' runtime loop (`users_api::runtime::run`) against a Lambda
//! Runtime API on loopback: a request's log record and EMF line are written
//! after its response has been posted, and before the next event is polled.
//!
//! The test sets the process's Lambda environment. Nextest (`scripts/test.sh`)
//! runs every test of the suite in a process of its own, so no other test
//! shares that environment.

use lambda_http::tracing;
use std::time::Duration;
use test_support::capture::Captured;
use test_support::{FIXTURE_ID, TestEnv, create_user, fixture};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// What the Runtime API saw when the function posted its answer.
struct Posted {
    path: String,
    body: String,
    /// The EMF output and the log output at that moment.
    metrics_then: String,
    logs_then: String,
}

/// One HTTP/1.1 request: the request line and the body.
async fn read_request(reader: &mut BufReader<TcpStream>) -> Option<(String, String)> {
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).await.ok()? == 0 {
        return None;
    }
    let mut length = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).await.ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().ok()?;
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).await.ok()?;
    Some((
        request_line.trim_end().to_owned(),
        String::from_utf8_lossy(&body).into_owned(),
    ))
}

/// A Runtime API that hands out `event` once, reports the answer (with what
/// had been written by then), and reports the next poll (with the EMF output
/// by then) without ever answering it.
async fn runtime_api(
    listener: TcpListener,
    event: String,
    metrics: Captured,
    logs: Captured,
    posted: mpsc::UnboundedSender<Posted>,
    polled_again: mpsc::UnboundedSender<String>,
) {
    let mut handed_out = false;
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        let mut reader = BufReader::new(stream);
        while let Some((request_line, body)) = read_request(&mut reader).await {
            let reply = if request_line.starts_with("GET /2018-06-01/runtime/invocation/next") {
                if handed_out {
                    let _ = polled_again.send(metrics.text());
                    // Like Lambda with nothing queued: the poll just waits.
                    std::future::pending::<()>().await;
                }
                handed_out = true;
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                     Lambda-Runtime-Aws-Request-Id: req-1\r\n\
                     Lambda-Runtime-Deadline-Ms: 99999999999999\r\n\
                     Lambda-Runtime-Invoked-Function-Arn: arn:aws:lambda:us-east-1:123456789012:function:find-user\r\n\
                     Content-Length: {}\r\n\r\n{event}",
                    event.len()
                )
            } else {
                let path = request_line
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or_default()
                    .to_owned();
                let _ = posted.send(Posted {
                    path,
                    body,
                    metrics_then: metrics.text(),
                    logs_then: logs.text(),
                });
                "HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n".to_owned()
            };
            if reader.get_mut().write_all(reply.as_bytes()).await.is_err() {
                break;
            }
        }
    }
}

#[tokio::test(flavor = "current_thread")]
async fn telemetry_is_written_after_the_response_is_posted_and_before_the_next_poll() {
    // Arrange: a user created by another instance (so this one's first
    // request is its cold start), an instance whose EMF lines and log
    // records are captured, and the Lambda environment pointing at our API.
    let env = TestEnv::new().await;
    let state = env.instance(&[]).await;
    let id = create_user(&env.state, "runtime@example.com", "Runtime").await;
    let metrics = Captured::default();
    state.telemetry.send_metrics_to(Box::new(metrics.clone()));
    let logs = Captured::default();
    let _guard = logs.install(tracing::Level::INFO);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    // SAFETY: under nextest this test is alone in its process and sets them
    // before anything reads them. (Under plain `cargo test`, the fallback of
    // scripts/test.sh, other tests run on other threads; they read the
    // environment only through std, which locks it.)
    unsafe {
        std::env::set_var("AWS_LAMBDA_RUNTIME_API", address.to_string());
        std::env::set_var("AWS_LAMBDA_FUNCTION_NAME", "find-user");
        std::env::set_var("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128");
        std::env::set_var("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST");
    }
    let event = fixture("find-user.v2").replace(FIXTURE_ID, &id.to_string());
    let (posted_tx, mut posted) = mpsc::unbounded_channel();
    let (polled_tx, mut polled_again) = mpsc::unbounded_channel();
    tokio::spawn(runtime_api(
        listener,
        event,
        metrics.clone(),
        logs.clone(),
        posted_tx,
        polled_tx,
    ));

    // Act: run the runtime until it answers and polls for the next event.
    let runtime = users_api::runtime::run(&state, |request| find_user::handle(&state, request));
    let observed = async {
        let posted = posted.recv().await.expect("an answer is posted");
        let metrics_at_next_poll = polled_again.recv().await.expect("a second poll");
        (posted, metrics_at_next_poll)
    };
    let (posted, metrics_at_next_poll) = tokio::select! {
        result = runtime => panic!("the runtime loop ended: {result:?}"),
        observed = observed => observed,
        () = tokio::time::sleep(Duration::from_secs(20)) => panic!("no second poll within 20 s"),
    };

    // Assert: the answer, then (and only then) one record and one EMF line.
    assert_eq!(posted.path, "/2018-06-01/runtime/invocation/req-1/response");
    let answer: serde_json::Value = serde_json::from_str(&posted.body).expect("JSON answer");
    assert_eq!(answer["statusCode"], 200, "{answer}");
    assert_eq!(
        posted.metrics_then, "",
        "EMF written before the response was posted"
    );
    assert!(
        !posted.logs_then.contains("GET /users/{id}"),
        "request record written before the response was posted:\n{}",
        posted.logs_then
    );
    let lines = metrics.text();
    assert_eq!(
        metrics_at_next_poll, lines,
        "EMF written after the next poll"
    );
    let emf: Vec<serde_json::Value> = lines
        .lines()
        .map(|line| serde_json::from_str(line).expect("an EMF line is JSON"))
        .collect();
    assert_eq!(emf.len(), 1, "{lines}");
    assert_eq!(emf[0]["Function"], "find-user");
    assert_eq!(emf[0]["CacheMiss"], 1.0);
    assert_eq!(emf[0]["ColdStart"], 1.0);
    let records: Vec<serde_json::Value> = logs
        .text()
        .lines()
        .filter(|line| line.contains("GET /users/{id}"))
        .map(|line| serde_json::from_str(line).expect("a log record is JSON"))
        .collect();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["fields"]["request_id"], "req-1");
    assert_eq!(records[0]["fields"]["status"], 200);
    assert_eq!(records[0]["fields"]["cache"], "miss");
}
