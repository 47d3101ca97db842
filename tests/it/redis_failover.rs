//! The guarantee through a Redis failover (issue 20). Each test runs its own
//! primary and replica on loopback (`test_support::replication`), the
//! replication link behind the fault proxy and the functions behind an
//! endpoint that the failover moves, or its own cluster with a replica per
//! primary. The shared Redis is not touched.
//!
//! With `CACHE_GUARD_REPLICAS=1` a write's guard is on the replica before
//! its statement runs, so a failover that loses what the primary had not
//! sent yet cannot bring back the value the write replaced; with `0` it can,
//! which the control test shows.

use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};
use test_support::functions::{find, invalidate, update};
use test_support::redis_modes::RedisCluster;
use test_support::replication::Replicated;
use test_support::*;
use users_api::AppState;
use users_api::hooks::{PausePoint, Point};
use uuid::Uuid;

/// Generous on a loaded 2-core machine, where a replica's acknowledgement
/// or a first connection can take long: a guard's `WAIT` gives up after
/// four fifths of it.
const REDIS_TIMEOUT_MS: &str = "1000";

/// How long a write refused for its guard's replicas may take: the call's
/// bound, with room for a loaded machine.
const REFUSED_WITHIN: Duration = Duration::from_secs(3);

/// How long a write's guard lives; it outlives these tests' writes, and a
/// test waits for it to expire.
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

/// What [`update_with_the_link_cut_then_fail_over`] saw.
struct AfterFailover {
    updated: u16,
    /// The email in Postgres afterwards.
    stored: String,
    /// The answers of finds after the failover, on the instance that wrote
    /// and on a new one: status, `x-cache`, email.
    found: Vec<(u16, String, String)>,
}

/// A cached user; the replication link cut; an update; the primary lost
/// with whatever it had not sent; the replica promoted and the endpoint
/// moved to it; then finds.
async fn update_with_the_link_cut_then_fail_over(guard_replicas: &str) -> AfterFailover {
    let mut pair = Replicated::start().await;
    let env = env_on(&pair, guard_replicas).await;
    let id = cached_user(&env, &pair).await;

    pair.cut_link();
    let started = Instant::now();
    let updated = update(&env.state, update_to_new(id)).await;
    let elapsed = started.elapsed();
    pair.lose_primary();
    pair.promote_replica().await;

    let fresh = env.instance(&[]).await;
    let mut answers = Vec::new();
    for state in [&env.state, &fresh] {
        for _ in 0..3 {
            answers.push(found(state, id).await);
        }
    }
    println!(
        "CACHE_GUARD_REPLICAS={guard_replicas}, link cut: update {} in {elapsed:?}; finds after the failover: {answers:?}",
        status(&updated)
    );
    assert!(elapsed < REFUSED_WITHIN, "{elapsed:?}");
    AfterFailover {
        updated: status(&updated),
        stored: env.stored_email(id).await,
        found: answers,
    }
}

#[tokio::test]
async fn with_the_replication_link_cut_an_update_is_refused_and_a_failover_shows_the_stored_row() {
    // Arrange and act
    let after = update_with_the_link_cut_then_fail_over("1").await;

    // Assert
    assert_eq!(after.updated, 503, "the guard could not reach the replica");
    assert_eq!(after.stored, OLD, "refused before Postgres was touched");
    for (status, cache, email) in &after.found {
        assert_eq!(*status, 200);
        assert_eq!(email, &after.stored, "x-cache {cache}");
    }
}

#[tokio::test]
async fn without_guard_replicas_a_failover_brings_back_the_value_an_update_replaced() {
    // Arrange and act: the control, what CACHE_GUARD_REPLICAS=1 prevents.
    let after = update_with_the_link_cut_then_fail_over("0").await;

    // Assert
    assert_eq!(after.updated, 200);
    assert_eq!(after.stored, NEW);
    let (status, cache, email) = &after.found[0];
    assert_eq!(*status, 200);
    assert_eq!(
        (email.as_str(), cache.as_str()),
        (OLD, "hit"),
        "the replica still held the entry the update replaced"
    );
}

#[tokio::test]
async fn an_update_acknowledged_once_its_guard_reached_the_replica_survives_a_failover() {
    // Arrange: the link is cut after the guard reached the replica and
    // before the statement, so only the release is lost.
    let mut pair = Replicated::start().await;
    let env = env_on(&pair, "1").await;
    let id = cached_user(&env, &pair).await;
    let pause = Arc::new(PausePoint::default());
    let mut writer = env.instance(&[]).await;
    writer.users.pause_at(Point::BeforeWrite, pause.clone());
    let cut_after_the_guard = async {
        pause.reached().await;
        pair.cut_link();
        pause.release();
    };

    // Act
    let (updated, ()) = tokio::join!(update(&writer, update_to_new(id)), cut_after_the_guard);
    let on_replica = Replicated::value(pair.replica.port, &env.cache_key(id)).await;
    pair.lose_primary();
    pair.promote_replica().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut answers = Vec::new();
    loop {
        let answer = found(&env.state, id).await;
        let filled = answer.1 == "hit";
        answers.push(answer);
        if filled || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Assert
    assert_eq!(status(&updated), 200, "{:?}", updated.body());
    assert_eq!(
        on_replica.as_deref().and_then(|value| value.first()),
        Some(&b'w'),
        "the replica held the guard"
    );
    assert_eq!(env.stored_email(id).await, NEW);
    for (status, cache, email) in &answers {
        assert_eq!(*status, 200);
        assert_eq!(email, NEW, "x-cache {cache}");
    }
    assert_eq!(
        answers.last().map(|answer| answer.1.as_str()),
        Some("hit"),
        "filled again once the guard expired: {answers:?}"
    );
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

#[tokio::test]
async fn a_change_record_is_kept_until_its_voiding_reached_a_replica_then_applied_after_the_failover()
 {
    // Arrange: a user cached on both servers; its change records applied.
    let mut pair = Replicated::start().await;
    let env = env_on(&pair, "1").await;
    let id = cached_user(&env, &pair).await;
    let records = format!("{}.user_changes", env.schema);
    let count = format!("SELECT count(*) FROM {records}");
    env.pg()
        .execute(&format!("DELETE FROM {records}"), &[])
        .await
        .expect("clear records");
    let consumer = env.instance(&[]).await;

    // Act: a change made in SQL while the replication link is cut.
    pair.cut_link();
    let rename = format!(
        "UPDATE {}.users SET email = $2, version = version + 1 WHERE id = $1",
        env.schema
    );
    env.pg()
        .execute(&rename, &[&id, &NEW])
        .await
        .expect("SQL writer");
    let cut = invalidate(
        &consumer,
        "invalidate-cache.schedule",
        Duration::from_secs(1),
    )
    .await;
    let kept: i64 = env.pg().query_one(&count, &[]).await.expect("count").get(0);
    pair.lose_primary();
    pair.promote_replica().await;
    pair.replace_lost_primary().await;
    let after = invalidate(
        &consumer,
        "invalidate-cache.schedule",
        Duration::from_secs(3),
    )
    .await;
    let left: i64 = env.pg().query_one(&count, &[]).await.expect("count").get(0);
    let then = found(&env.state, id).await;

    // Assert
    println!("link cut: {cut:?}; after the failover: {after:?}");
    assert_eq!(kept, 1, "the record waited for a replica: {cut:?}");
    assert!(cut.failures > 0 && cut.applied == 0, "{cut:?}");
    assert_eq!(after.applied, 1, "{after:?}");
    assert_eq!(left, 0);
    assert_eq!((then.0, then.2.as_str()), (200, NEW), "x-cache {}", then.1);
}

/// `cmdstat_wait` calls on node `index` of `cluster`.
fn waits_on(cluster: &RedisCluster, index: usize) -> u64 {
    let mut node = cluster
        .node_client(index)
        .get_connection_with_timeout(Duration::from_secs(1))
        .expect("node");
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut node)
        .expect("INFO commandstats");
    stats
        .lines()
        .find_map(|line| line.strip_prefix("cmdstat_wait:calls="))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |calls| calls.parse().expect("calls"))
}

/// Whether node `index` of `cluster` owns `key`'s slot: another node's slot
/// answers MOVED.
fn owns(cluster: &RedisCluster, index: usize, key: &str) -> bool {
    let mut node = cluster
        .node_client(index)
        .get_connection_with_timeout(Duration::from_secs(1))
        .expect("node");
    redis::cmd("EXISTS")
        .arg(key)
        .query::<i64>(&mut node)
        .is_ok()
}

#[tokio::test]
async fn on_a_cluster_a_write_waits_on_its_keys_shards_only() {
    // Arrange
    let logs = test_support::capture::Captured::default();
    let _logging = logs.install(lambda_http::tracing::Level::WARN);
    let cluster = RedisCluster::start_with_replicas();
    let seeds = cluster.urls().join(",");
    let env = TestEnv::with_settings(&[
        ("REDIS_URL", &seeds),
        ("REDIS_CLUSTER", "true"),
        // A first call on a new cluster connection maps the slots and, on
        // fresh nodes, loads the script: slow on a loaded machine.
        ("REDIS_RESPONSE_TIMEOUT_MS", "3000"),
        ("REDIS_CONNECT_TIMEOUT_MS", "3000"),
        ("CACHE_GUARD_REPLICAS", "1"),
    ])
    .await;
    let primaries: Vec<usize> = (0..cluster.ports.len())
        .filter(|&index| cluster.is_primary(index))
        .collect();
    assert_eq!(primaries.len(), 3);
    // The write voids the user's key in the previous and the next format
    // too, each in a slot of its own, and waits for those as well: a user
    // whose three keys leave a shard out, so that the test sees that shard
    // wait for nothing.
    let keys_of = |id: Uuid| {
        [
            env.cache_key(id),
            format!("{}:v4:user:{id}", env.key_prefix),
            format!("{}:v6:user:{id}", env.key_prefix),
        ]
    };
    let mut chosen = None;
    for n in 0..30 {
        let id = create_user(&env.state, &format!("shard{n}@example.com"), "Old").await;
        let keys = keys_of(id);
        let left_out = primaries
            .iter()
            .any(|&index| keys.iter().all(|key| !owns(&cluster, index, key)));
        if left_out {
            chosen = Some(id);
            break;
        }
    }
    let id = chosen.expect("a user whose keys leave a shard out");

    // Act
    let updated = update(&env.state, update_to_new(id)).await;
    let refilled = found(&env.state, id).await;

    // Assert
    assert_eq!(status(&updated), 200, "{}", logs.text());
    assert_eq!((refilled.1.as_str(), refilled.2.as_str()), ("miss", NEW));
    let keys = keys_of(id);
    let waits: Vec<([bool; 3], u64)> = primaries
        .iter()
        .map(|&index| {
            let owned = keys.each_ref().map(|key| owns(&cluster, index, key));
            (owned, waits_on(&cluster, index))
        })
        .collect();
    println!("primaries (owns the key, its previous and next formats', WAIT calls): {waits:?}");
    for (owned, calls) in waits {
        // The guard and the release on the key's shard, each other format's
        // voiding on its own; a pipeline whose script the node did not have
        // yet is sent again once it is loaded, its `WAIT` too.
        let least = 2 * u64::from(owned[0]) + u64::from(owned[1]) + u64::from(owned[2]);
        match least {
            0 => assert_eq!(calls, 0, "no WAIT on another shard"),
            _ => assert!(
                (least..=2 * least).contains(&calls),
                "{calls} WAIT calls on a shard of the keys {owned:?}"
            ),
        }
    }
}
