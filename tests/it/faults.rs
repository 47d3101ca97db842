//! Faults: Redis or Postgres down, slow, paused or cut, and cold starts
//! without them. Faults are injected with the TCP fault proxy in front of the
//! real servers, or on a private redis-server, never on the shared ones.
//! Timings printed here are the figures quoted in BENCHMARKS.md.
//!
//! The wall-clock bounds asserted here are generous, several times the
//! timeout they check, so a loaded 2-core CI machine cannot break them, yet
//! below what the broken behaviour (no timeout, or the default one) would
//! take. The tight figures are the printed ones and the benchmark's.

use serde_json::json;
use std::time::{Duration, Instant};
use test_support::functions::{create, delete, find, update};
use test_support::proxy::{FaultProxy, Mode};
use test_support::servers::{RedisServer, free_port};
use test_support::*;
use users_api::AppState;
use uuid::Uuid;

const REDIS_TIMEOUT_MS: u64 = 50;

/// How long a find may take when Redis does not answer in time: twenty times
/// `REDIS_TIMEOUT_MS`. Without the timeout it would wait for Redis, forever
/// when black-holed or paused, 2 s at the latency below.
const REDIS_BYPASS_BOUND: Duration = Duration::from_secs(1);

/// What the proxy holds every chunk for, each way, in the slow-Redis test:
/// a round trip takes twice this, well over `REDIS_BYPASS_BOUND`.
const REDIS_LATENCY: Duration = Duration::from_secs(1);

async fn timed_find(
    state: &AppState,
    id: Uuid,
) -> (lambda_http::Response<lambda_http::Body>, Duration) {
    let started = Instant::now();
    let response = find(state, request_for("find-user.v2", id)).await;
    (response, started.elapsed())
}

/// A test env whose Redis traffic goes through a fault proxy.
async fn env_behind_redis_proxy() -> (TestEnv, FaultProxy) {
    let proxy = FaultProxy::start(redis_addr()).await;
    let timeout = REDIS_TIMEOUT_MS.to_string();
    let env = TestEnv::with_settings(&[
        ("REDIS_URL", &proxy.url("redis", "")),
        ("REDIS_RESPONSE_TIMEOUT_MS", &timeout),
        ("REDIS_CONNECT_TIMEOUT_MS", &timeout),
    ])
    .await;
    (env, proxy)
}

#[tokio::test]
async fn find_with_redis_black_holed_answers_from_postgres_within_the_redis_timeout() {
    // Arrange
    let (env, proxy) = env_behind_redis_proxy().await;
    let id = create_user(&env.state, "hole@example.com", "Fault Tolerant").await;
    let (_, healthy_miss) = timed_find(&env.state, id).await;
    let (_, healthy_hit) = timed_find(&env.state, id).await;

    // Act
    proxy.set(Mode::BlackHole);
    let (response, elapsed) = timed_find(&env.state, id).await;

    // Assert
    assert_eq!(status(&response), 200);
    assert_eq!(header(&response, "x-cache"), Some("bypass"));
    assert_eq!(json_body(&response)["id"], id.to_string());
    println!(
        "redis black-holed: find {elapsed:?} (healthy miss {healthy_miss:?}, hit {healthy_hit:?}, timeout {REDIS_TIMEOUT_MS} ms)"
    );
    assert!(elapsed < REDIS_BYPASS_BOUND, "{elapsed:?}");
}

#[tokio::test]
async fn find_with_redis_slow_answers_from_postgres() {
    // Arrange
    let (env, proxy) = env_behind_redis_proxy().await;
    let id = create_user(&env.state, "slow@example.com", "Fault Tolerant").await;
    timed_find(&env.state, id).await;

    // Act
    proxy.set(Mode::Latency(REDIS_LATENCY));
    let (response, elapsed) = timed_find(&env.state, id).await;

    // Assert
    assert_eq!(status(&response), 200);
    assert_eq!(header(&response, "x-cache"), Some("bypass"));
    println!("redis answering in {REDIS_LATENCY:?} each way: find {elapsed:?}");
    assert!(elapsed < REDIS_BYPASS_BOUND, "{elapsed:?}");
}

#[tokio::test]
async fn find_with_redis_paused_or_refusing_answers_from_postgres() {
    // Arrange
    let mut redis = RedisServer::start();
    let timeout = REDIS_TIMEOUT_MS.to_string();
    let env = TestEnv::with_settings(&[
        ("REDIS_URL", &redis.url()),
        ("REDIS_RESPONSE_TIMEOUT_MS", &timeout),
    ])
    .await;
    let id = create_user(&env.state, "paused@example.com", "Fault Tolerant").await;
    timed_find(&env.state, id).await;

    // Act
    redis.pause();
    let (paused, paused_elapsed) = timed_find(&env.state, id).await;
    redis.resume();
    redis.stop();
    let (refused, refused_elapsed) = timed_find(&env.state, id).await;

    // Assert
    assert_eq!(status(&paused), 200);
    assert_eq!(header(&paused, "x-cache"), Some("bypass"));
    assert_eq!(status(&refused), 200);
    assert_eq!(header(&refused, "x-cache"), Some("bypass"));
    println!(
        "redis paused (SIGSTOP): find {paused_elapsed:?}; redis stopped: find {refused_elapsed:?}"
    );
    assert!(paused_elapsed < REDIS_BYPASS_BOUND, "{paused_elapsed:?}");
    assert!(refused_elapsed < REDIS_BYPASS_BOUND, "{refused_elapsed:?}");
}

#[tokio::test]
async fn writes_with_redis_black_holed_are_refused_before_postgres_changes_and_create_goes_on() {
    // Arrange
    let (env, proxy) = env_behind_redis_proxy().await;
    let id = create_user(&env.state, "before@example.com", "Fault Tolerant").await;

    // Act
    proxy.set(Mode::BlackHole);
    let updated = update(&env.state, request_for("update-user.v2", id)).await;
    let deleted = delete(&env.state, request_for("delete-user.v2", id)).await;
    let created = create(&env.state, request_from(&fixture("create-user.v2"))).await;

    // Assert
    assert_eq!(status(&updated), 503);
    assert_eq!(json_body(&updated)["code"], "service_unavailable");
    assert_eq!(
        json_body(&updated)["message"],
        "the cache is unavailable, please retry later"
    );
    assert_eq!(status(&deleted), 503);
    assert_eq!(status(&created), 201, "create cannot leave a stale entry");
    assert_eq!(env.stored_email(id).await, "before@example.com");
}

/// Finds until one is not a bypass, for at most `limit`; returns its x-cache.
async fn find_until_cached(state: &AppState, id: Uuid, limit: Duration) -> Option<String> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        let response = find(state, request_for("find-user.v2", id)).await;
        assert_eq!(status(&response), 200);
        let cache = header(&response, "x-cache").unwrap().to_owned();
        if cache != "bypass" {
            return Some(cache);
        }
        tokio::task::yield_now().await;
    }
    None
}

#[tokio::test]
async fn the_cache_is_used_again_when_redis_comes_back_without_a_restart() {
    // Arrange
    let mut redis = RedisServer::start();
    let env = TestEnv::with_settings(&[
        ("REDIS_URL", &redis.url()),
        ("REDIS_RESPONSE_TIMEOUT_MS", "200"),
    ])
    .await;
    let id = create_user(&env.state, "back@example.com", "Fault Tolerant").await;
    redis.stop();
    let (down, _) = timed_find(&env.state, id).await;
    assert_eq!(header(&down, "x-cache"), Some("bypass"));

    // Act
    redis.restart();
    let first = find_until_cached(&env.state, id, Duration::from_secs(10)).await;
    let (second, _) = timed_find(&env.state, id).await;

    // Assert
    assert_eq!(first.as_deref(), Some("miss"));
    assert_eq!(header(&second, "x-cache"), Some("hit"));
}

#[tokio::test]
async fn an_idle_redis_connection_killed_while_frozen_is_replaced_on_the_next_request() {
    // Arrange
    let redis = RedisServer::start();
    let env = TestEnv::with_settings(&[("REDIS_URL", &redis.url())]).await;
    let id = create_user(&env.state, "frozen@example.com", "Fault Tolerant").await;
    timed_find(&env.state, id).await;

    // Act
    redis.kill_clients_while_frozen();
    let (found, _) = timed_find(&env.state, id).await;
    redis.kill_clients_while_frozen();
    let updated = update(&env.state, request_for("update-user.v2", id)).await;

    // Assert
    assert_eq!(status(&found), 200);
    assert_eq!(
        header(&found, "x-cache"),
        Some("hit"),
        "retried once on the new connection"
    );
    assert_eq!(status(&updated), 200);
}

#[tokio::test]
async fn an_idle_postgres_connection_terminated_while_frozen_is_replaced_on_the_next_request() {
    // Arrange
    let env = TestEnv::new().await;
    let application = format!("frozen_{}", Uuid::new_v4().simple());
    let url = format!(
        "{}&application_name={application}",
        env.settings["DATABASE_URL"]
    );
    let state = env
        .instance(&[("DATABASE_URL", &url), ("PG_POOL_MAX_SIZE", "1")])
        .await;
    let id = create_user(&state, "pg-frozen@example.com", "Fault Tolerant").await;

    // Act
    let terminated: i64 = env
        .pg()
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1",
            &[&application],
        )
        .await
        .unwrap()
        .get(0);
    let listed =
        test_support::functions::list(&state, request_from(&fixture("list-users.v2"))).await;
    env.pg()
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1",
            &[&application],
        )
        .await
        .unwrap();
    let updated = update(&state, request_for("update-user.v2", id)).await;

    // Assert
    assert_eq!(terminated, 1);
    assert_eq!(status(&listed), 200);
    assert_eq!(status(&updated), 200);
}

#[tokio::test]
async fn postgres_refusing_connections_gives_a_quick_503_and_cold_start_succeeds() {
    // Arrange
    let env = TestEnv::new().await;
    let closed = format!(
        "postgres://postgres@127.0.0.1:{}/users_api_test",
        free_port()
    );

    // Act
    let started = Instant::now();
    let state = env.instance(&[("DATABASE_URL", &closed)]).await;
    let init = started.elapsed();
    let (found, elapsed) = timed_find(&state, Uuid::now_v7()).await;
    let created = create(&state, request_from(&fixture("create-user.v2"))).await;

    // Assert
    assert_eq!(status(&found), 503);
    assert_eq!(json_body(&found)["code"], "service_unavailable");
    assert_eq!(
        json_body(&found)["message"],
        "the database is unavailable, please retry later"
    );
    assert_eq!(status(&created), 503);
    println!("postgres refusing: init {init:?}, find 503 in {elapsed:?}");
    // A refusal takes no timeout; waiting out the connect timeout would take
    // 2 s (the default).
    assert!(elapsed < Duration::from_secs(1), "{elapsed:?}");
}

#[tokio::test]
async fn postgres_black_holed_gives_503_within_the_connect_timeout() {
    // Arrange
    let env = TestEnv::new().await;
    let proxy = FaultProxy::start(env.postgres_addr()).await;
    proxy.set(Mode::BlackHole);
    let url = env.database_url_through(proxy.port);
    let state = env
        .instance(&[("DATABASE_URL", &url), ("PG_CONNECT_TIMEOUT_MS", "300")])
        .await;

    // Act
    let (found, elapsed) = timed_find(&state, Uuid::now_v7()).await;

    // Assert
    assert_eq!(status(&found), 503);
    println!("postgres black-holed: find 503 in {elapsed:?} (connect timeout 300 ms)");
    // Five times the connect timeout, below the 2 s of the default one.
    assert!(elapsed < Duration::from_millis(1500), "{elapsed:?}");
}

#[tokio::test]
async fn postgres_going_silent_mid_request_gives_504_within_the_client_timeout() {
    // Arrange
    let env = TestEnv::new().await;
    let proxy = FaultProxy::start(env.postgres_addr()).await;
    let url = env.database_url_through(proxy.port);
    let state = env
        .instance(&[("DATABASE_URL", &url), ("PG_STATEMENT_TIMEOUT_MS", "300")])
        .await;
    let id = create_user(&state, "silent@example.com", "Fault Tolerant").await;

    // Act
    proxy.set(Mode::BlackHole);
    let (found, elapsed) = timed_find(&state, Uuid::now_v7()).await;
    let updated = update(&state, request_for("update-user.v2", id)).await;

    // Assert
    assert_eq!(status(&found), 504);
    assert_eq!(json_body(&found)["code"], "timeout");
    assert!(matches!(status(&updated), 503 | 504));
    println!(
        "postgres silent mid-request: find 504 in {elapsed:?} (statement timeout 300 ms + 500 ms)"
    );
    // Nearly four times the 800 ms client timeout, below the 3.5 s the
    // default statement timeout would give; with no client timeout at all
    // the find would wait for the black hole forever.
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
}

#[tokio::test]
async fn a_write_blocked_by_a_lock_times_out_with_504_and_changes_nothing() {
    // Arrange
    let env = TestEnv::new().await;
    let state = env.instance(&[("PG_STATEMENT_TIMEOUT_MS", "300")]).await;
    let id = create_user(&state, "locked@example.com", "Fault Tolerant").await;
    let (mut locker, connection) =
        tokio_postgres::connect(&env.settings["DATABASE_URL"], tokio_postgres::NoTls)
            .await
            .unwrap();
    tokio::spawn(connection);
    let transaction = locker.transaction().await.unwrap();
    transaction
        .execute("SELECT 1 FROM users WHERE id = $1 FOR UPDATE", &[&id])
        .await
        .unwrap();

    // Act
    let started = Instant::now();
    let updated = update(&state, request_for("update-user.v2", id)).await;
    let elapsed = started.elapsed();
    transaction.rollback().await.unwrap();

    // Assert
    assert_eq!(status(&updated), 504);
    assert_eq!(json_body(&updated)["code"], "timeout");
    // Over six times the 300 ms lock timeout, below the 3 s of the default.
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
    let found = find(&state, request_for("find-user.v2", id)).await;
    assert_eq!(json_body(&found)["email"], "locked@example.com");
}

#[tokio::test]
async fn a_cold_start_with_redis_down_succeeds_and_serves_from_postgres() {
    // Arrange
    let closed = format!("redis://127.0.0.1:{}", free_port());

    // Act
    let started = Instant::now();
    let env =
        TestEnv::with_settings(&[("REDIS_URL", &closed), ("REDIS_RESPONSE_TIMEOUT_MS", "50")])
            .await;
    let init = started.elapsed();
    let id = create_user(&env.state, "nocache@example.com", "Fault Tolerant").await;
    let (found, _) = timed_find(&env.state, id).await;
    let updated = update(&env.state, request_for("update-user.v2", id)).await;

    // Assert
    assert_eq!(status(&found), 200);
    assert_eq!(header(&found, "x-cache"), Some("bypass"));
    assert_eq!(status(&updated), 503);
    println!("cold start with redis down: test env with init in {init:?}");
}

#[tokio::test]
async fn hostile_requests_get_a_json_4xx_and_write_nothing() {
    // Arrange
    let env = TestEnv::new().await;
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let cases: Vec<(serde_json::Value, u16)> = vec![
        (json!({"email": "a@example.com", "name": deep}), 413),
        (
            json!({"email": "a@example.com", "name": "x".repeat(201)}),
            400,
        ),
        (json!({"email": "a@example.com\u{0}", "name": "Nul"}), 400),
        (
            json!({"email": "a@example.com", "name": "Robert'); DROP TABLE users;--\u{7}"}),
            400,
        ),
        (
            json!({"email": "a@example.com", "name": "A", "email ": "b@example.com"}),
            400,
        ),
        (json!({"email": ["a@example.com"], "name": "A"}), 400),
        (json!("just a string"), 400),
        (json!(null), 400),
    ];
    // Bodies the cases above cannot express: an email nested 5000 arrays
    // deep, and bytes that are not UTF-8.
    let mut nested_event: serde_json::Value =
        serde_json::from_str(&fixture("create-user.v2")).unwrap();
    nested_event["body"] = json!(format!(
        "{{\"email\":{}1{}, \"name\":\"A\"}}",
        "[".repeat(5000),
        "]".repeat(5000)
    ));
    let mut binary_event: serde_json::Value =
        serde_json::from_str(&fixture("create-user.v2")).unwrap();
    binary_event["body"] = json!("//79/Pv6+fj39g==");
    binary_event["isBase64Encoded"] = json!(true);

    for (body, expected) in cases {
        // Act
        let response = create(&env.state, with_body("create-user.v2", Uuid::nil(), &body)).await;

        // Assert
        let text = body.to_string();
        let case = &text[..text.len().min(80)];
        assert_eq!(status(&response), expected, "{case}");
        assert!(json_body(&response)["code"].is_string(), "{case}");
    }
    // Act
    let nested = create(&env.state, request_from(&nested_event.to_string())).await;
    let binary = create(&env.state, request_from(&binary_event.to_string())).await;

    // Assert
    assert_eq!(status(&nested), 400);
    assert_eq!(status(&binary), 400);
    assert_eq!(env.row_count().await, 0, "nothing was written");
}
