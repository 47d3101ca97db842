//! The guarantee through a Redis failover (issue 20). Each test runs its own
//! primary and replica on loopback (`test_support::replication`), the
//! replication link behind the fault proxy and the functions behind an
//! endpoint that the failover moves. The shared Redis is not touched.

use serde_json::json;
use std::time::Duration;
use test_support::functions::{find, update};
use test_support::replication::Replicated;
use test_support::*;
use users_api::AppState;
use uuid::Uuid;

/// Generous on a loaded 2-core machine.
const REDIS_TIMEOUT_MS: &str = "1000";

/// How long a write's guard lives.
const WRITE_GUARD_MS: &str = "2000";

const OLD: &str = "old@example.com";
const NEW: &str = "new@example.com";

/// A test world whose functions reach `pair` through its endpoint.
async fn env_on(pair: &Replicated, guard_replicas: &str) -> TestEnv {
    TestEnv::with_settings(&[
        ("REDIS_URL", &pair.url()),
        ("REDIS_RESPONSE_TIMEOUT_MS", REDIS_TIMEOUT_MS),
        ("REDIS_CONNECT_TIMEOUT_MS", REDIS_TIMEOUT_MS),
        ("CACHE_WRITE_GUARD_MS", WRITE_GUARD_MS),
        ("CACHE_GUARD_REPLICAS", guard_replicas),
    ])
    .await
}

/// A find's status, `x-cache` and email.
async fn found(state: &AppState, id: Uuid) -> (u16, String, String) {
    let response = find(state, request_for("find-user.v2", id)).await;
    let cache = header(&response, "x-cache").unwrap_or_default().to_owned();
    let email = match status(&response) {
        200 => json_body(&response)["email"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        _ => String::new(),
    };
    (status(&response), cache, email)
}

/// A user `OLD`, cached on the primary and on the replica.
async fn cached_user(env: &TestEnv, pair: &Replicated) -> Uuid {
    let id = create_user(&env.state, OLD, "Old").await;
    assert_eq!(found(&env.state, id).await.1, "miss");
    assert_eq!(found(&env.state, id).await.1, "hit");
    pair.wait_until_replicated(Duration::from_secs(5)).await;
    id
}

fn update_to_new(id: Uuid) -> lambda_http::Request {
    with_body("update-user.v2", id, &json!({"email": NEW, "name": "New"}))
}

#[tokio::test]
async fn connections_left_open_to_a_demoted_primary_reach_the_new_one_without_a_restart() {
    // Arrange
    let pair = Replicated::start().await;
    let env = env_on(&pair, "0").await;
    let id = cached_user(&env, &pair).await;

    // Act: the functions' connection still reaches the old primary.
    pair.promote_replica().await;
    pair.demote_primary().await;
    let during = found(&env.state, id).await;
    let after = found(&env.state, id).await;
    let updated = update(&env.state, update_to_new(id)).await;
    let then = found(&env.state, id).await;

    // Assert
    assert_eq!(
        (during.0, during.1.as_str()),
        (200, "bypass"),
        "the demoted primary answered READONLY"
    );
    assert_eq!(after.1, "hit", "the next find reached the new primary");
    assert_eq!(status(&updated), 200, "{:?}", updated.body());
    assert_eq!((then.1.as_str(), then.2.as_str()), ("miss", NEW));
}
