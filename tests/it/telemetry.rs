//! The JSON request log, and the rule that no secret or connection string
//! ever reaches a log line or an error message.

use lambda_http::tracing;
use std::collections::HashMap;
use std::time::Duration;
use test_support::capture::Captured;
use test_support::servers::{RedisServer, free_port};
use users_api::telemetry::{CacheStatus, Measured, Record};
use users_api::{AppState, Config};

#[test]
fn a_request_is_one_json_record_with_id_route_status_cache_and_latency() {
    // Arrange
    let captured = Captured::default();
    let _guard = captured.install(tracing::Level::TRACE);

    // Act
    Record {
        request_id: "8f1c2a4e-req".to_owned(),
        xray_trace_id: Some("1-67cef5e4-8ddab48fb765b86d4e572b04".to_owned()),
        route: "GET /users/{id}",
        function: "find-user",
        status: 200,
        latency: Duration::from_micros(1250),
        measured: Measured {
            cache: Some(CacheStatus::Hit),
            ..Measured::default()
        },
        cold_start: false,
    }
    .log();

    // Assert
    let text = captured.text();
    let record: serde_json::Value = serde_json::from_str(text.trim()).expect("one JSON line");
    assert_eq!(record["level"], "INFO");
    let fields = &record["fields"];
    assert_eq!(fields["request_id"], "8f1c2a4e-req");
    assert_eq!(
        fields["xray_trace_id"],
        "1-67cef5e4-8ddab48fb765b86d4e572b04"
    );
    assert_eq!(fields["route"], "GET /users/{id}");
    assert_eq!(fields["status"], 200);
    assert_eq!(fields["cache"], "hit");
    assert_eq!(fields["latency_ms"], 1.25);
}

const DB_PASSWORD: &str = "pg-Pa55word-7f3a";
const REDIS_PASSWORD: &str = "redis-Pa55word-91c2";

fn lookup(pairs: HashMap<&'static str, String>) -> impl Fn(&str) -> Option<String> {
    move |name| pairs.get(name).cloned()
}

#[tokio::test]
async fn no_password_or_connection_string_reaches_logs_or_errors() {
    // Arrange: a Postgres that refuses connections and a Redis that refuses
    // the password, so init logs both failures.
    let captured = Captured::default();
    let _guard = captured.install(tracing::Level::TRACE);
    let redis = RedisServer::start_with(&["--requirepass", "the-right-one"]);
    let database_url = format!(
        "postgres://app:{DB_PASSWORD}@127.0.0.1:{}/users?sslmode=prefer",
        free_port()
    );
    let redis_url = format!("redis://default:{REDIS_PASSWORD}@127.0.0.1:{}", redis.port);
    let good = HashMap::from([
        ("DATABASE_URL", database_url.clone()),
        ("REDIS_URL", redis_url.clone()),
        ("PG_CONNECT_TIMEOUT_MS", "500".to_owned()),
        ("REDIS_CONNECT_TIMEOUT_MS", "500".to_owned()),
        ("REDIS_RESPONSE_TIMEOUT_MS", "500".to_owned()),
    ]);
    let malformed = [
        (
            "DATABASE_URL",
            format!("postgres://app:{DB_PASSWORD}@h:notaport/d"),
        ),
        ("DATABASE_URL", format!("mysql://app:{DB_PASSWORD}@h/d")),
        ("REDIS_URL", format!("http://default:{REDIS_PASSWORD}@h")),
        (
            "REDIS_URL",
            format!("redis://default:{REDIS_PASSWORD}@h:notaport"),
        ),
    ];

    // Act: every message the init path can produce.
    let mut messages = Vec::new();
    for (variable, value) in malformed {
        let mut settings = good.clone();
        settings.insert(variable, value);
        let error = Config::from_lookup(lookup(settings))
            .err()
            .unwrap_or_else(|| panic!("a malformed {variable} was accepted"));
        messages.push(format!("{error} {error:?}"));
    }
    let config = Config::from_lookup(lookup(good)).expect("valid settings");
    let state = AppState::connect(&config).await.expect("init survives");
    let caller = users_api::auth::Caller::new("reader", ["users/read"]).expect("a caller");
    let find = state.users.find(&caller, uuid::Uuid::now_v7()).await;
    messages.push(format!("{:?}", find.err()));
    let logs = captured.text();

    // Assert: the failures were logged (so the test can see a leak) ...
    assert!(logs.contains("Postgres unavailable at init"), "{logs}");
    assert!(logs.contains("Redis unavailable at init"), "{logs}");
    // The init warnings say where, without credentials.
    assert!(logs.contains("postgres://127.0.0.1:"), "{logs}");
    assert!(logs.contains("redis://127.0.0.1:"), "{logs}");
    // ... and nothing shows a password or a full URL.
    let everything = format!("{logs}\n{}", messages.join("\n"));
    for secret in [DB_PASSWORD, REDIS_PASSWORD, &database_url, &redis_url] {
        assert!(
            !everything.contains(secret),
            "{secret} leaked:\n{everything}"
        );
    }
}
