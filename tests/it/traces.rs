//! Traces (docs/deploy.md, "Traces"): the functions' runtime against the
//! Runtime API stub, exporting to a real OTLP/HTTP receiver on loopback
//! (`test_support::otlp`, which decodes the protobuf with the OpenTelemetry
//! project's message types): the spans of a find, their ids from the
//! invocation's X-Ray header, invocations at once that never mix, sampling,
//! a broken collector, what no span may carry, and the trace id in every
//! log record.
//!
//! Each test sets the process's Lambda environment; nextest runs each in a
//! process of its own.

use crate::runtime::{
    LIMIT, all_in_flight_then_released, answers, configure_process, find_event, request_records,
    xray_root_of,
};
use lambda_http::tracing;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use test_support::capture::Captured;
use test_support::otlp::{Behaviour, Received, Receiver};
use test_support::runtime_stub::{Completion, RuntimeStub};
use test_support::servers::free_port;
use test_support::{TestEnv, create_user};
use users_api::AppState;
use users_api::hooks::{PausePoint, Point};
use uuid::Uuid;

/// A password in `DATABASE_URL` (the local Postgres trusts loopback and
/// ignores it), to look for in what is exported.
const DB_PASSWORD: &str = "pg-Pa55word-traces-5c1e";

/// The spans of a find that misses and fills, by name.
const MISS_SPANS: [&str; 5] = [
    "GET /users/{id}",
    "compare_and_set",
    "flight",
    "lookup",
    "select_user",
];

/// OTLP span kinds.
const SERVER: i32 = 2;
const CLIENT: i32 = 3;
const INTERNAL: i32 = 1;

/// A `find-user` instance for the life of the process, exporting to
/// `endpoint` (none: tracing off), with its Postgres password in its URL.
async fn traced_instance(
    env: &TestEnv,
    endpoint: Option<&str>,
    timeout_ms: &str,
) -> &'static AppState {
    let database_url =
        env.settings["DATABASE_URL"].replacen("postgres@", &format!("postgres:{DB_PASSWORD}@"), 1);
    let mut overrides = vec![
        ("DATABASE_URL", database_url.as_str()),
        ("AWS_LAMBDA_FUNCTION_NAME", "find-user"),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", timeout_ms),
    ];
    if let Some(endpoint) = endpoint {
        overrides.push(("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint));
    }
    Box::leak(Box::new(env.instance(&overrides).await))
}

/// A sequential find-user environment exporting to a receiver, its logs
/// captured, on a Runtime API stub of its own.
struct Sequential {
    env: TestEnv,
    receiver: Receiver,
    state: &'static AppState,
    logs: Captured,
    _guard: tracing::dispatcher::DefaultGuard,
    stub: RuntimeStub,
}

impl Sequential {
    /// # Safety
    ///
    /// As [`configure_process`]: nothing else may run in the process.
    async unsafe fn start() -> Self {
        let env = TestEnv::new().await;
        let receiver = Receiver::start(Behaviour::Answer).await.unwrap();
        let state = traced_instance(&env, Some(&receiver.endpoint()), "1000").await;
        let logs = Captured::default();
        let _guard = logs.install(tracing::Level::INFO);
        let stub = RuntimeStub::start("find-user").await.unwrap();
        // SAFETY: the caller's promise.
        unsafe { configure_process(&stub, "find-user", 1) };
        Self {
            env,
            receiver,
            state,
            logs,
            _guard,
            stub,
        }
    }

    /// Runs the environment until `count` answers are posted and `spans`
    /// spans have come (or the limit passed): the answers, and the spans.
    async fn serve(
        &mut self,
        count: usize,
        spans: usize,
    ) -> (HashMap<String, Completion>, Vec<Received>) {
        let (stub, receiver) = (&mut self.stub, &self.receiver);
        let runtime =
            users_api::runtime::run(self.state, find_user::handle, std::future::pending());
        tokio::select! {
            ended = runtime => panic!("the runtime ended: {ended:?}"),
            observed = async {
                let posted = answers(stub, count).await;
                (posted, receiver.wait_for(spans, LIMIT).await)
            } => observed,
        }
    }
}

/// The trace id and parent span id, in hex, of the stub's `n`th event.
fn ids_of(n: u64) -> (String, String) {
    let header = RuntimeStub::trace_header(n, true);
    let context = users_api::telemetry::trace::TraceContext::parse(&header).unwrap();
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    (hex(&context.trace_id), hex(&context.parent))
}

/// The spans of `trace_id`, by name.
fn of_trace<'a>(spans: &'a [Received], trace_id: &str) -> BTreeMap<&'a str, Vec<&'a Received>> {
    let mut named: BTreeMap<&str, Vec<&Received>> = BTreeMap::new();
    for span in spans.iter().filter(|span| span.trace_id == trace_id) {
        named.entry(span.name.as_str()).or_default().push(span);
    }
    named
}

#[tokio::test(flavor = "current_thread")]
async fn a_find_miss_exports_one_trace_with_its_redis_and_postgres_spans_under_the_invocation() {
    // Arrange: a user, a find-user environment exporting to a receiver.
    // SAFETY: under nextest this test is alone in its process.
    let mut traced = unsafe { Sequential::start() }.await;
    let id = create_user(&traced.env.state, "traced@example.com", "Traced Person").await;
    let request_id = traced.stub.push(find_event(id));

    // Act: the miss, then its spans.
    let (posted, spans) = traced.serve(1, 5).await;

    // Assert: one trace, the invocation's, hanging from its Parent.
    assert_eq!(posted[&request_id].cache.as_deref(), Some("miss"));
    let (trace_id, parent) = ids_of(1);
    assert!(
        spans.iter().all(|span| span.trace_id == trace_id),
        "{spans:#?}"
    );
    assert_eq!(traced.receiver.requests(), 1, "one export per invocation");
    let named = of_trace(&spans, &trace_id);
    let names: Vec<&str> = named.keys().copied().collect();
    assert_eq!(names, MISS_SPANS);
    let server = named["GET /users/{id}"][0];
    assert_eq!(server.kind, SERVER);
    assert_eq!(server.parent, parent);
    assert!(!server.failed);
    for (key, value) in [
        ("faas.trigger", "http"),
        ("faas.invocation_id", request_id.as_str()),
        ("faas.coldstart", "true"),
        ("http.request.method", "GET"),
        ("http.route", "/users/{id}"),
        ("http.response.status_code", "200"),
        ("users_api.cache", "miss"),
    ] {
        assert_eq!(
            server.attributes.get(key).map(String::as_str),
            Some(value),
            "{key}"
        );
    }
    assert_eq!(server.resource["service.name"], "find-user");
    assert_eq!(server.resource["cloud.platform"], "aws_lambda");
    // The flight, led by this find, under the invocation; the calls under it.
    let flight = named["flight"][0];
    assert_eq!(
        (flight.kind, flight.parent.as_str()),
        (INTERNAL, server.span_id.as_str())
    );
    assert_eq!(flight.attributes["users_api.flight.led"], "true");
    let prefix = format!("{}:v5:user:", traced.env.key_prefix);
    for name in ["lookup", "compare_and_set"] {
        let call = named[name][0];
        assert_eq!(
            (call.kind, call.parent.as_str()),
            (CLIENT, flight.span_id.as_str()),
            "{name}"
        );
        assert_eq!(call.attributes["db.system"], "redis");
        assert_eq!(call.attributes["users_api.key_prefix"], prefix);
        assert!(
            flight.start <= call.start && call.end <= flight.end,
            "{name} inside the flight"
        );
    }
    let select = named["select_user"][0];
    assert_eq!(
        (select.kind, select.parent.as_str()),
        (CLIENT, flight.span_id.as_str())
    );
    assert_eq!(select.attributes["db.system"], "postgresql");
    assert_eq!(select.attributes["db.query.summary"], "select_user");
    assert!(server.start <= flight.start && flight.end <= server.end);
    // Nothing the request or the user holds: no email, name, password, id,
    // caller or cached body.
    let raw = String::from_utf8_lossy(&spans[0].raw).into_owned();
    for secret in [
        "traced@example.com",
        "Traced Person",
        DB_PASSWORD,
        &id.to_string(),
        test_support::FIXTURE_SUBJECT,
        // The token's claims as the authorizer passed them.
        "example-client-id",
        "cognito-idp",
        "\"email\"",
    ] {
        assert!(!raw.contains(secret), "an export carries {secret:?}");
    }
    // The log record names the same trace.
    let records = request_records(&traced.logs.text());
    assert_eq!(
        records[&request_id]["fields"]["xray_trace_id"],
        xray_root_of(&request_id)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_invocations_at_once_never_mix_their_spans_or_trace_ids() {
    // Arrange: an environment serving 8 at once, every fill parked, so that
    // all 8 are in flight together; 8 users, each its own trace.
    let env = TestEnv::new().await;
    let receiver = Receiver::start(Behaviour::Answer).await.unwrap();
    let mut state = env
        .instance(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.endpoint()),
            ("AWS_LAMBDA_FUNCTION_NAME", "find-user"),
        ])
        .await;
    let pause = Arc::new(PausePoint::default());
    state.users.pause_at(Point::BeforeFill, pause.clone());
    let state: &'static AppState = Box::leak(Box::new(state));
    let logs = Captured::default();
    logs.install_global(tracing::Level::INFO);
    let mut stub = RuntimeStub::start("find-user").await.unwrap();
    // SAFETY: under nextest this test is alone in its process.
    unsafe { configure_process(&stub, "find-user", 8) };
    let mut by_request = HashMap::new();
    for n in 1..=8 {
        let id = create_user(&env.state, &format!("mixed-{n}@example.com"), "Mixed").await;
        by_request.insert(stub.push(find_event(id)), n);
    }
    let runtime = users_api::runtime::run(state, find_user::handle, std::future::pending());

    // Act
    let act = async {
        all_in_flight_then_released(&pause, 8).await;
        let posted = answers(&mut stub, 8).await;
        (posted, receiver.wait_for(8 * 5, LIMIT).await)
    };
    let (posted, spans) = tokio::select! {
        ended = runtime => panic!("the runtime ended: {ended:?}"),
        observed = act => observed,
    };
    // The last record is written just after its answer is posted.
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Assert: each trace holds its own invocation's server span and nothing
    // else's; every span of it hangs from a span of the same trace.
    assert_eq!(posted.len(), 8);
    assert_eq!(spans.len(), 8 * 5, "{spans:#?}");
    let records = request_records(&logs.text());
    for (request_id, n) in &by_request {
        let (trace_id, parent) = ids_of(*n);
        let named = of_trace(&spans, &trace_id);
        let servers: Vec<_> = spans
            .iter()
            .filter(|span| span.kind == SERVER && span.trace_id == trace_id)
            .collect();
        assert_eq!(servers.len(), 1, "trace {n}");
        let server = servers[0];
        assert_eq!(server.parent, parent);
        assert_eq!(server.attributes["faas.invocation_id"], *request_id);
        let ids: Vec<&str> = named
            .values()
            .flatten()
            .map(|span| span.span_id.as_str())
            .collect();
        for span in named.values().flatten().filter(|span| span.kind != SERVER) {
            assert!(
                ids.contains(&span.parent.as_str()),
                "{span:#?} hangs outside trace {n}"
            );
        }
        let names: Vec<&str> = named.keys().copied().collect();
        assert_eq!(names, MISS_SPANS, "trace {n}");
        assert_eq!(
            records[request_id]["fields"]["xray_trace_id"],
            xray_root_of(request_id)
        );
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_sampled_out_invocation_exports_nothing_and_its_record_still_names_its_trace() {
    // Arrange: a sampled-out event, then a sampled one.
    // SAFETY: under nextest this test is alone in its process.
    let mut traced = unsafe { Sequential::start() }.await;
    let id = create_user(&traced.env.state, "sampled@example.com", "Sampled").await;
    let header = RuntimeStub::trace_header(1, false);
    let skipped = traced.stub.push_traced(find_event(id), Some(header));
    let sampled = traced.stub.push(find_event(id));

    // Act
    let (posted, spans) = traced.serve(2, 1).await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Assert: only the sampled one's trace reached the receiver.
    assert_eq!(posted[&skipped].status, Some(200));
    assert_eq!(posted[&sampled].status, Some(200));
    let (skipped_trace, _) = ids_of(1);
    let (sampled_trace, _) = ids_of(2);
    assert!(
        spans.iter().all(|span| span.trace_id == sampled_trace),
        "{spans:#?}"
    );
    assert!(!spans.iter().any(|span| span.trace_id == skipped_trace));
    assert_eq!(traced.receiver.requests(), 1);
    let records = request_records(&traced.logs.text());
    assert_eq!(
        records[&skipped]["fields"]["xray_trace_id"],
        xray_root_of(&skipped)
    );
}

/// What a sequential environment did over `count` finds of one user, on a
/// Runtime API of its own: every answer, and how long it took from each
/// answer to the next poll (the time the invocation's work after its
/// response held the next one up).
///
/// # Safety
///
/// As [`configure_process`]: nothing else may run in the process.
async unsafe fn serve_sequentially(
    state: &'static AppState,
    id: Uuid,
    count: usize,
) -> (Vec<Option<u16>>, Vec<Duration>) {
    let mut stub = RuntimeStub::start("find-user").await.unwrap();
    // SAFETY: the caller's promise.
    unsafe { configure_process(&stub, "find-user", 1) };
    let stub = &mut stub;
    let runtime = users_api::runtime::run(state, find_user::handle, std::future::pending());
    let observed = async {
        let mut statuses = Vec::new();
        let mut held = Vec::new();
        stub.next_poll(LIMIT).await.expect("a first poll");
        for _ in 0..count {
            stub.push(find_event(id));
            let answer = stub.next_completion(LIMIT).await.expect("an answer");
            let poll = stub.next_poll(LIMIT).await.expect("the next poll");
            statuses.push(answer.status);
            held.push(poll.at.saturating_duration_since(answer.at));
        }
        (statuses, held)
    };
    tokio::select! {
        ended = runtime => panic!("the runtime ended: {ended:?}"),
        observed = observed => observed,
    }
}

fn median(durations: &[Duration]) -> Duration {
    let mut sorted = durations.to_vec();
    sorted.sort();
    sorted[sorted.len() / 2]
}

#[tokio::test(flavor = "current_thread")]
async fn a_collector_that_refuses_or_never_answers_changes_no_answer_and_holds_up_no_invocation() {
    // Arrange: one user; three environments in turn on one Runtime API
    // stub: tracing off, a collector that refuses connections (a closed
    // port), one that takes requests and never answers. Exports are bounded
    // by 2 s, so an invocation that waited for one would show it.
    const FINDS: usize = 24;
    let env = TestEnv::new().await;
    let id = create_user(&env.state, "collector@example.com", "Collector").await;
    let hanging = Receiver::start(Behaviour::Hang).await.unwrap();
    let refusing = format!("http://127.0.0.1:{}", free_port());
    let off = traced_instance(&env, None, "2000").await;
    let refused = traced_instance(&env, Some(&refusing), "2000").await;
    let hung = traced_instance(&env, Some(&hanging.endpoint()), "2000").await;
    let logs = Captured::default();
    let _guard = logs.install(tracing::Level::INFO);

    // Act (SAFETY: under nextest this test is alone in its process; its
    // runtime is current-thread)
    let (off_answers, off_held) = unsafe { serve_sequentially(off, id, FINDS) }.await;
    let (refused_answers, refused_held) = unsafe { serve_sequentially(refused, id, FINDS) }.await;
    let warnings_refused = logs
        .text()
        .matches("traces: the collector did not take")
        .count();
    let (hung_answers, hung_held) = unsafe { serve_sequentially(hung, id, FINDS) }.await;
    let warnings = logs
        .text()
        .matches("traces: the collector did not take")
        .count();

    // Assert: the same answers; the median hold-up within a millisecond of
    // tracing off, and no invocation held up for an export; each outage
    // logged once, however many invocations lost their spans.
    assert!(off_answers.iter().all(|status| *status == Some(200)));
    assert_eq!(refused_answers, off_answers);
    assert_eq!(hung_answers, off_answers);
    let limit = median(&off_held) + Duration::from_millis(1);
    for (held, what) in [(&refused_held, "refused"), (&hung_held, "never answered")] {
        assert!(
            median(held) <= limit,
            "{what}: {held:?} against {off_held:?}"
        );
        let longest = held.iter().max().unwrap();
        assert!(
            *longest < Duration::from_millis(500),
            "{what}: held up {longest:?}"
        );
    }
    assert_eq!(warnings_refused, 1, "{}", logs.text());
    assert_eq!(warnings, 2, "{}", logs.text());
    assert!(
        hanging.requests() <= users_api::telemetry::trace::MAX_IN_FLIGHT,
        "{} exports waiting on a collector that never answers",
        hanging.requests()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_find_that_joins_another_finds_flight_says_so_and_holds_no_call_of_its_leader() {
    // Arrange: three finds of one user at once; the first parks at its
    // fill, the other two gather for the next flight, one leading it.
    let env = TestEnv::new().await;
    let receiver = Receiver::start(Behaviour::Answer).await.unwrap();
    let mut state = env
        .instance(&[("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.endpoint())])
        .await;
    let pause = Arc::new(PausePoint::default());
    state.users.pause_at(Point::BeforeFill, pause.clone());
    let state: &'static AppState = Box::leak(Box::new(state));
    let mut stub = RuntimeStub::start("find-user").await.unwrap();
    // SAFETY: under nextest this test is alone in its process.
    unsafe { configure_process(&stub, "find-user", 3) };
    let id = create_user(&env.state, "joined@example.com", "Joined").await;
    for _ in 0..3 {
        stub.push(find_event(id));
    }
    let runtime = users_api::runtime::run(state, find_user::handle, std::future::pending());

    // Act
    let act = async {
        tokio::time::timeout(LIMIT, pause.reached())
            .await
            .expect("the first find at its fill");
        tokio::time::timeout(LIMIT, async {
            while state.users.flight_waits() < 2 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
        .await
        .expect("the other two waiting for the next flight");
        pause.release();
        let posted = answers(&mut stub, 3).await;
        (posted, receiver.wait_for(5 + 3 + 2, LIMIT).await)
    };
    let (posted, spans) = tokio::select! {
        ended = runtime => panic!("the runtime ended: {ended:?}"),
        observed = act => observed,
    };

    // Assert: two flights led, one joined; the member's trace is its own
    // invocation and the flight it joined, no Redis or Postgres call.
    assert!(posted.values().all(|answer| answer.status == Some(200)));
    let flights: Vec<&Received> = spans.iter().filter(|span| span.name == "flight").collect();
    let led: Vec<&str> = flights
        .iter()
        .map(|flight| flight.attributes["users_api.flight.led"].as_str())
        .collect();
    assert_eq!(
        led.iter().filter(|led| **led == "false").count(),
        1,
        "{led:?}"
    );
    assert_eq!(led.len(), 3);
    let joined = flights
        .iter()
        .find(|flight| flight.attributes["users_api.flight.led"] == "false")
        .unwrap();
    let names: Vec<&str> = of_trace(&spans, &joined.trace_id).keys().copied().collect();
    assert_eq!(names, ["GET /users/{id}", "flight"]);
    assert_eq!(spans.len(), 10, "{spans:#?}");
}
