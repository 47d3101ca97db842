//! The functions' runtime (`users_api::runtime::run`) against a Lambda
//! Runtime API on loopback (`test_support::runtime_stub`), which hands out
//! events to as many workers at once as poll: telemetry after each response,
//! many invocations at once per environment without mixing, panic isolation
//! and graceful shutdown.
//!
//! Each test sets the process's Lambda environment. Nextest
//! (`scripts/test.sh`) runs every test of the suite in a process of its own,
//! so no other test shares that environment.

use lambda_http::tracing;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use test_support::capture::Captured;
use test_support::runtime_stub::{Completion, RuntimeStub};
use test_support::{FIXTURE_ID, TestEnv, create_user, fixture};
use users_api::AppState;
use users_api::hooks::{PausePoint, Point};
use uuid::Uuid;

pub(crate) const LIMIT: Duration = Duration::from_secs(20);

/// An instance of `env` for the life of the process (the runtime lends its
/// state to every invocation), parked at `pause` before each cache fill.
pub(crate) async fn leaked_instance(
    env: &TestEnv,
    pause: Option<Arc<PausePoint>>,
) -> &'static AppState {
    let mut state = env.instance(&[]).await;
    if let Some(pause) = pause {
        state.users.pause_at(Point::BeforeFill, pause);
    }
    Box::leak(Box::new(state))
}

/// A `find-user` event (HTTP API) for `id`.
pub(crate) fn find_event(id: Uuid) -> String {
    fixture("find-user.v2").replace(FIXTURE_ID, &id.to_string())
}

/// Points the process's Lambda environment at `stub`, as the function
/// `function`, serving `concurrency` invocations at once.
///
/// # Safety
///
/// Sets process environment variables: call it before anything else runs
/// in the process (nextest runs each test in a process of its own).
pub(crate) unsafe fn configure_process(stub: &RuntimeStub, function: &str, concurrency: usize) {
    // SAFETY: the caller's promise.
    unsafe {
        std::env::set_var("AWS_LAMBDA_RUNTIME_API", stub.address.to_string());
        std::env::set_var("AWS_LAMBDA_FUNCTION_NAME", function);
        std::env::set_var("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "2048");
        std::env::set_var("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST");
        std::env::set_var("AWS_LAMBDA_MAX_CONCURRENCY", concurrency.to_string());
    }
}

/// The answers posted, by request id, until `count` have come; each must be
/// an API Gateway response, not an invocation error.
pub(crate) async fn answers(stub: &mut RuntimeStub, count: usize) -> HashMap<String, Completion> {
    let mut posted = HashMap::new();
    while posted.len() < count {
        let Some(completion) = stub.next_completion(LIMIT).await else {
            panic!("only {} of {count} answers within {LIMIT:?}", posted.len());
        };
        assert!(
            completion.status.is_some(),
            "{} answered as an invocation error",
            completion.request_id
        );
        posted.insert(completion.request_id.clone(), completion);
    }
    posted
}

/// The JSON body of an answer.
fn body_of(completion: &Completion) -> serde_json::Value {
    serde_json::from_str(completion.body.as_deref().unwrap_or_default()).expect("a JSON body")
}

/// Waits until `count` invocations are parked at `pause` at once, then lets
/// them all go on.
pub(crate) async fn all_in_flight_then_released(pause: &PausePoint, count: usize) {
    for arrived in 0..count {
        tokio::time::timeout(LIMIT, pause.reached())
            .await
            .unwrap_or_else(|_| panic!("only {arrived} of {count} invocations in flight at once"));
    }
    for _ in 0..count {
        pause.release();
    }
}

/// The `Root` of the trace header the stub sent with event `request_id`.
pub(crate) fn xray_root_of(request_id: &str) -> String {
    let n = request_id
        .rsplit('-')
        .next()
        .and_then(|n| n.parse().ok())
        .expect("a stub request id");
    let header = RuntimeStub::trace_header(n, true);
    users_api::telemetry::trace::root_of(&header)
        .unwrap()
        .to_owned()
}

/// The `xray_trace_id` of the one log line with `message` about
/// `request_id`.
fn logged(logs: &str, message: &str, request_id: &str) -> String {
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|line| {
            line["fields"]["message"] == message && line["fields"]["request_id"] == request_id
        })
        .collect();
    assert_eq!(lines.len(), 1, "{message} about {request_id}:\n{logs}");
    lines[0]["fields"]["xray_trace_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// The JSON log records of invocations in `logs`, by request id (the
/// test's own calls outside the runtime have none).
pub(crate) fn request_records(logs: &str) -> HashMap<String, serde_json::Value> {
    logs.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|record| {
            record["fields"]["message"] == "request" && record["fields"]["request_id"] != "-"
        })
        .map(|record| {
            let id = record["fields"]["request_id"].as_str().unwrap().to_owned();
            (id, record)
        })
        .collect()
}

#[tokio::test(flavor = "current_thread")]
async fn telemetry_is_written_after_the_response_is_posted_and_before_the_next_poll() {
    // Arrange: a user created by another instance (so this one's first
    // request is its cold start), an instance whose EMF lines and log
    // records are captured, and the Lambda environment pointing at our API.
    let env = TestEnv::new().await;
    let state = leaked_instance(&env, None).await;
    let id = create_user(&env.state, "runtime@example.com", "Runtime").await;
    let metrics = Captured::default();
    state.telemetry.send_metrics_to(Box::new(metrics.clone()));
    let logs = Captured::default();
    let _guard = logs.install(tracing::Level::INFO);
    let snapshot = (metrics.clone(), logs.clone());
    let mut stub = RuntimeStub::observing("find-user", move || {
        format!("{}\n--logs--\n{}", snapshot.0.text(), snapshot.1.text())
    })
    .await
    .unwrap();
    // SAFETY: under nextest this test is alone in its process.
    unsafe { configure_process(&stub, "find-user", 1) };
    let request_id = stub.push(find_event(id));

    // Act: run the runtime until it answers and polls for the next event.
    let runtime = users_api::runtime::run(state, find_user::handle, std::future::pending());
    let observed = async {
        stub.next_poll(LIMIT).await.expect("a first poll");
        let answer = stub.next_completion(LIMIT).await.expect("an answer");
        let next_poll = stub.next_poll(LIMIT).await.expect("a second poll");
        (answer, next_poll)
    };
    let (answer, next_poll) = tokio::select! {
        result = runtime => panic!("the runtime loop ended: {result:?}"),
        observed = observed => observed,
    };

    // Assert: the answer, then (and only then) one record and one EMF line.
    assert_eq!(answer.status, Some(200));
    assert!(
        !answer.snapshot.contains("GET /users/{id}") && !answer.snapshot.contains("CacheMiss"),
        "telemetry written before the response was posted:\n{}",
        answer.snapshot
    );
    let at_next_poll = next_poll.snapshot;
    let lines = metrics.text();
    assert!(
        at_next_poll.starts_with(&lines),
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
    let records = request_records(&logs.text());
    assert_eq!(records.len(), 1);
    assert_eq!(records[&request_id]["fields"]["status"], 200);
    assert_eq!(records[&request_id]["fields"]["cache"], "miss");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_environment_serves_invocations_at_once_each_with_its_own_answer_and_telemetry() {
    // Arrange: an environment of concurrency 8, every fill parked; four
    // users that exist and four that do not, so that a mixed-up answer or
    // record would show in its status.
    let env = TestEnv::new().await;
    let pause = Arc::new(PausePoint::default());
    let state = leaked_instance(&env, Some(pause.clone())).await;
    let metrics = Captured::default();
    state.telemetry.send_metrics_to(Box::new(metrics.clone()));
    let logs = Captured::default();
    logs.install_global(tracing::Level::INFO);
    let snapshot = logs.clone();
    let mut stub = RuntimeStub::observing("find-user", move || snapshot.text())
        .await
        .unwrap();
    // SAFETY: under nextest this test is alone in its process.
    unsafe { configure_process(&stub, "find-user", 8) };
    let mut expected = HashMap::new();
    for i in 0..8 {
        let (id, status) = if i % 2 == 0 {
            let email = format!("at-once-{i}@example.com");
            (create_user(&env.state, &email, "At Once").await, 200)
        } else {
            (Uuid::now_v7(), 404)
        };
        expected.insert(stub.push(find_event(id)), (id, status));
    }
    let runtime = users_api::runtime::run(state, find_user::handle, std::future::pending());

    // Act: all eight reach the fill before any is let go, then all go on.
    let act = async {
        all_in_flight_then_released(&pause, 8).await;
        let posted = answers(&mut stub, 8).await;
        // The last record is written just after its answer is posted.
        tokio::time::sleep(Duration::from_millis(200)).await;
        posted
    };
    let posted = tokio::select! {
        ended = runtime => panic!("the runtime ended: {ended:?}"),
        posted = act => posted,
    };

    // Assert: each answer is its own event's, each record and EMF line its
    // own invocation's, written after its own answer.
    let records = request_records(&logs.text());
    assert_eq!(records.len(), 8, "{}", logs.text());
    for (request_id, (id, status)) in &expected {
        let answer = &posted[request_id];
        assert_eq!(answer.status, Some(*status), "{request_id}: {answer:?}");
        if *status == 200 {
            assert_eq!(body_of(answer)["id"], id.to_string(), "{request_id}");
        }
        assert_eq!(
            records[request_id]["fields"]["status"], *status,
            "{request_id}"
        );
        assert!(
            !answer
                .snapshot
                .contains(&format!("\"request_id\":\"{request_id}\"")),
            "{request_id}'s record was written before its answer was posted"
        );
    }
    let emf = metrics.text();
    assert_eq!(emf.lines().count(), 8, "{emf}");
    assert_eq!(emf.matches("\"ColdStart\":1.0").count(), 1, "{emf}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_event_is_answered_400_and_disturbs_no_invocation_in_flight() {
    // Arrange: an environment of concurrency 4 with three finds parked at
    // their fill, then an event lambda_http cannot turn into a request (a
    // space in its query string makes it panic).
    let env = TestEnv::new().await;
    let pause = Arc::new(PausePoint::default());
    let state = leaked_instance(&env, Some(pause.clone())).await;
    let logs = Captured::default();
    logs.install_global(tracing::Level::INFO);
    let mut stub = RuntimeStub::start("find-user").await.unwrap();
    // SAFETY: under nextest this test is alone in its process.
    unsafe { configure_process(&stub, "find-user", 4) };
    let mut parked = Vec::new();
    for i in 0..3 {
        let id = create_user(&env.state, &format!("parked-{i}@example.com"), "Parked").await;
        parked.push((stub.push(find_event(id)), id));
    }
    let runtime = users_api::runtime::run(state, find_user::handle, std::future::pending());

    // Act
    let act = async {
        for _ in 0..3 {
            tokio::time::timeout(LIMIT, pause.reached())
                .await
                .expect("three invocations in flight");
        }
        let malformed =
            fixture("find-user.malformed-query.v2").replace(FIXTURE_ID, &parked[0].1.to_string());
        let malformed = stub.push(malformed);
        let first = answers(&mut stub, 1).await.remove(&malformed);
        for _ in 0..3 {
            pause.release();
        }
        let rest = answers(&mut stub, 3).await;
        stub.push(find_event(parked[1].1));
        let after = answers(&mut stub, 1).await.into_values().next();
        (first, rest, after)
    };
    let (first, rest, after) = tokio::select! {
        ended = runtime => panic!("the runtime ended: {ended:?}"),
        answers = act => answers,
    };

    // Assert: the malformed event got a 400 JSON answer while the others
    // were in flight; they, and the next event, were answered as usual.
    let answer = first.expect("the malformed event answered first");
    assert_eq!(answer.status, Some(400), "{answer:?}");
    assert_eq!(body_of(&answer)["code"], "malformed_event");
    assert_eq!(
        logged(
            &logs.text(),
            "malformed API Gateway event: answered 400",
            &answer.request_id
        ),
        xray_root_of(&answer.request_id)
    );
    for (request_id, id) in &parked {
        let answer = &rest[request_id];
        assert_eq!(answer.status, Some(200), "{request_id}: {answer:?}");
        assert_eq!(body_of(answer)["id"], id.to_string());
    }
    assert_eq!(after.expect("the next event answered").status, Some(200));
}

/// `find-user`, except that it panics on one user.
async fn panicking_on(
    panicking: Uuid,
    state: &'static AppState,
    request: lambda_http::Request,
) -> Result<lambda_http::Response<lambda_http::Body>, lambda_http::Error> {
    if request.uri().path().ends_with(&panicking.to_string()) {
        panic!("a handler bug");
    }
    find_user::handle(state, request).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_answers_500_and_the_environment_goes_on() {
    // Arrange: an environment of concurrency 2 whose handler panics on one
    // user, and an event for that user and for another.
    let env = TestEnv::new().await;
    let state = leaked_instance(&env, None).await;
    let logs = Captured::default();
    logs.install_global(tracing::Level::INFO);
    let mut stub = RuntimeStub::start("find-user").await.unwrap();
    // SAFETY: under nextest this test is alone in its process.
    unsafe { configure_process(&stub, "find-user", 2) };
    let panicking = Uuid::now_v7();
    let id = create_user(&env.state, "survivor@example.com", "Survivor").await;
    let panics = stub.push(find_event(panicking));
    let fine = stub.push(find_event(id));
    let handler = move |state, request| panicking_on(panicking, state, request);
    let runtime = users_api::runtime::run(state, handler, std::future::pending());

    // Act
    let posted = tokio::select! {
        ended = runtime => panic!("the runtime ended: {ended:?}"),
        posted = answers(&mut stub, 2) => posted,
    };

    // Assert: a JSON 500 for the one, the answer for the other.
    let answer = &posted[&panics];
    assert_eq!(answer.status, Some(500), "{answer:?}");
    assert_eq!(body_of(answer)["code"], "internal_error");
    assert_eq!(posted[&fine].status, Some(200));
    assert_eq!(
        logged(&logs.text(), "the handler panicked: answered 500", &panics),
        xray_root_of(&panics)
    );
}

#[test]
fn the_release_profile_unwinds_so_that_a_panic_can_be_caught() {
    // Arrange
    let manifest: toml::Table = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml"),
    )
    .unwrap()
    .parse()
    .unwrap();

    // Act
    let panic = manifest["profile"]["release"]
        .get("panic")
        .and_then(|panic| panic.as_str());

    // Assert: with `abort`, the process ends before any catch runs; and
    // unsaid, `cargo lambda build --release` makes it `abort`.
    assert_eq!(
        panic,
        Some("unwind"),
        "the release profile must say panic = \"unwind\""
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_sigterm_the_invocations_in_flight_finish_with_their_telemetry_before_the_exit() {
    // Arrange: an environment of concurrency 4 with two finds parked at
    // their fill, listening for SIGTERM.
    let env = TestEnv::new().await;
    let pause = Arc::new(PausePoint::default());
    let state = leaked_instance(&env, Some(pause.clone())).await;
    let metrics = Captured::default();
    state.telemetry.send_metrics_to(Box::new(metrics.clone()));
    let mut stub = RuntimeStub::start("find-user").await.unwrap();
    // SAFETY: under nextest this test is alone in its process.
    unsafe { configure_process(&stub, "find-user", 4) };
    for i in 0..2 {
        let id = create_user(&env.state, &format!("draining-{i}@example.com"), "Draining").await;
        stub.push(find_event(id));
    }
    let sigterm = users_api::runtime::sigterm().expect("listen for SIGTERM");
    let released = std::sync::atomic::AtomicBool::new(false);
    let runtime = async {
        let ended = tokio::time::timeout(
            LIMIT,
            users_api::runtime::run(state, find_user::handle, sigterm),
        )
        .await;
        (ended, released.load(std::sync::atomic::Ordering::SeqCst))
    };

    // Act: SIGTERM, and the parked invocations go on only afterwards.
    let act = async {
        let registered = stub.next_registration(LIMIT).await.expect("a registration");
        let first_poll = stub.next_poll(LIMIT).await.expect("a poll");
        for _ in 0..2 {
            tokio::time::timeout(LIMIT, pause.reached())
                .await
                .expect("two invocations in flight");
        }
        let killed = std::process::Command::new("kill")
            .args(["-TERM", &std::process::id().to_string()])
            .status()
            .expect("kill");
        tokio::time::sleep(Duration::from_millis(100)).await;
        released.store(true, std::sync::atomic::Ordering::SeqCst);
        pause.release();
        pause.release();
        (registered, first_poll, killed)
    };
    let ((ended, released_before_the_end), (registered, first_poll, killed)) =
        tokio::join!(runtime, act);

    // Assert: the runtime waited for both, answered them, wrote their EMF
    // lines, and then returned.
    assert!(killed.success());
    assert!(!registered.name.is_empty());
    assert!(
        registered.at < first_poll.at,
        "the extension registers before the first poll, which ends the init"
    );
    ended
        .expect("returned after the drain")
        .expect("a clean end");
    assert!(
        released_before_the_end,
        "returned with invocations in flight"
    );
    let posted = answers(&mut stub, 2).await;
    assert!(posted.values().all(|answer| answer.status == Some(200)));
    assert_eq!(metrics.text().lines().count(), 2, "{}", metrics.text());
}
