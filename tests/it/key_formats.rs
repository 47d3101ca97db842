//! Two code versions serving at once, as during a gradual deployment
//! (docs/cache.md, "Key format version and deployments"): the version
//! before this one keeps its entries under the previous key format, the one
//! after it under the next, and a write through this one voids both. Nothing of the previous version's
//! code runs here: each test puts in Redis what that version stores, under
//! its key, and asks Redis what is left after the write.
//!
//! When the key format changes, the previous format becomes this one: the
//! constants and [`previous_entry`] change with it.

use serde_json::json;
use test_support::functions::{delete, find, invalidate, update};
use test_support::*;
use uuid::Uuid;

/// The key format of the version before this one.
const PREVIOUS_FORMAT: &str = "v4";

/// That version's compare-and-set, with which its `find` fills a key it
/// holds a lease on (`shared/src/cache/protocol.rs` before format v5).
const PREVIOUS_COMPARE_AND_SET: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0";

/// User `id`'s key in the previous format.
fn previous_key(env: &TestEnv, id: Uuid) -> String {
    format!("{}:{PREVIOUS_FORMAT}:user:{id}", env.key_prefix)
}

/// What the previous version stores for a user found with `version` and
/// response `body`: `v{version}:{owner length}:{owner}{body}`, no times.
fn previous_entry(version: i64, owner: &str, body: &[u8]) -> Vec<u8> {
    let mut value = format!("v{version}:{}:{owner}", owner.len()).into_bytes();
    value.extend_from_slice(body);
    value
}

/// Creates a user and stores, under the previous format's key, the entry
/// the previous version fills for it, as it is now; returns its id.
async fn cached_by_the_previous_version(env: &TestEnv) -> Uuid {
    let id = create_user(&env.state, "old@example.com", "Old").await;
    let found = find(&env.state, request_for("find-user.v2", id)).await;
    assert_eq!(status(&found), 200);
    let entry = previous_entry(1, FIXTURE_SUBJECT, body_bytes(&found));
    set(env, &previous_key(env, id), &entry).await;
    let stored = env.redis_text(&previous_key(env, id)).await;
    assert_eq!(stored.as_deref().map(str::as_bytes), Some(&entry[..]));
    id
}

async fn set(env: &TestEnv, key: &str, value: &[u8]) {
    let mut redis = env.redis().await;
    let () = redis::AsyncCommands::set_ex(&mut redis, key, value, 600)
        .await
        .expect("redis set");
}

fn body_bytes(response: &lambda_http::Response<lambda_http::Body>) -> &[u8] {
    response.body().as_ref()
}

#[tokio::test]
async fn an_update_voids_the_entry_the_previous_version_stored() {
    // Arrange
    let env = TestEnv::new().await;
    let id = cached_by_the_previous_version(&env).await;

    // Act
    let body = json!({"email": "new@example.com", "name": "New"});
    let updated = update(&env.state, with_body("update-user.v2", id, &body)).await;

    // Assert: the previous version finds nothing, so it reads the new row.
    assert_eq!(status(&updated), 200);
    assert_eq!(env.redis_text(&previous_key(&env, id)).await, None);
}

#[tokio::test]
async fn a_delete_voids_the_entry_the_previous_version_stored() {
    // Arrange
    let env = TestEnv::new().await;
    let id = cached_by_the_previous_version(&env).await;

    // Act
    let deleted = delete(&env.state, request_for("delete-user.v2", id)).await;

    // Assert
    assert_eq!(status(&deleted), 204);
    assert_eq!(env.redis_text(&previous_key(&env, id)).await, None);
}

#[tokio::test]
async fn a_change_by_another_writer_voids_the_entry_the_previous_version_stored() {
    // Arrange
    let env = TestEnv::new().await;
    let id = cached_by_the_previous_version(&env).await;
    let sql = format!(
        "UPDATE {}.users SET name = 'By SQL', version = version + 1 WHERE id = $1",
        env.schema
    );
    env.pg().execute(&sql, &[&id]).await.expect("SQL writer");

    // Act
    let consumed = invalidate(
        &env.state,
        "invalidate-cache.schedule",
        std::time::Duration::from_millis(500),
    )
    .await;

    // Assert
    assert_eq!(consumed.failures, 0, "{consumed:?}");
    assert!(consumed.applied >= 1, "{consumed:?}");
    assert_eq!(env.redis_text(&previous_key(&env, id)).await, None);
}

#[tokio::test]
async fn a_lease_the_previous_version_took_before_an_update_can_no_longer_fill() {
    // Arrange: the previous version's find missed, took its lease and read
    // the old row; then the update runs.
    let env = TestEnv::new().await;
    let id = create_user(&env.state, "old@example.com", "Old").await;
    let found = find(&env.state, request_for("find-user.v2", id)).await;
    let key = previous_key(&env, id);
    let lease = b"l-a-lease-of-the-previous-version";
    set(&env, &key, lease).await;
    let body = json!({"email": "new@example.com", "name": "New"});
    let updated = update(&env.state, with_body("update-user.v2", id, &body)).await;

    // Act: its fill, after the update was acknowledged.
    let mut redis = env.redis().await;
    let filled: i64 = redis::Script::new(PREVIOUS_COMPARE_AND_SET)
        .key(&key)
        .arg(&lease[..])
        .arg(previous_entry(1, FIXTURE_SUBJECT, body_bytes(&found)))
        .arg(600_000)
        .invoke_async(&mut redis)
        .await
        .expect("fill");

    // Assert
    assert_eq!(status(&updated), 200);
    assert_eq!(filled, 0, "the old row was stored after the update");
    assert_eq!(env.redis_text(&key).await, None);
}

#[tokio::test]
async fn a_write_of_the_previous_version_in_progress_keeps_its_guard() {
    // Arrange: a write through the previous version has guarded its key and
    // not yet committed.
    let env = TestEnv::new().await;
    let id = create_user(&env.state, "old@example.com", "Old").await;
    let key = previous_key(&env, id);
    let guard = "wtoken-of-a-previous-version-write";
    set(&env, &key, guard.as_bytes()).await;

    // Act
    let body = json!({"email": "new@example.com", "name": "New"});
    let updated = update(&env.state, with_body("update-user.v2", id, &body)).await;

    // Assert: the previous version still fills nothing until that write's
    // own release, after its commit, deletes the key.
    assert_eq!(status(&updated), 200);
    assert_eq!(env.redis_text(&key).await.as_deref(), Some(guard));
}

/// The key format of the version after this one, whatever it stores.
const NEXT_FORMAT: &str = "v6";

#[tokio::test]
async fn an_update_voids_what_the_next_version_stored_and_keeps_its_guards() {
    // Arrange: the next version, serving beside this one in the deployment
    // that brings it, has cached a user, and a "no such user" for an id
    // about to be taken. Its values are opaque here; only its key layout
    // and its guard (`w` + tokens) are fixed.
    let env = TestEnv::new().await;
    let id = create_user(&env.state, "old@example.com", "Old").await;
    let next_key = |id: Uuid| format!("{}:{NEXT_FORMAT}:user:{id}", env.key_prefix);
    set(&env, &next_key(id), b"an entry of the next format").await;
    let guarded = create_user(&env.state, "guarded@example.com", "Guarded").await;
    set(&env, &next_key(guarded), b"wtoken-of-a-next-version-write").await;

    // Act
    let body = json!({"email": "new@example.com", "name": "New"});
    let updated = update(&env.state, with_body("update-user.v2", id, &body)).await;
    let body = json!({"email": "guarded-new@example.com", "name": "New"});
    let other = update(&env.state, with_body("update-user.v2", guarded, &body)).await;

    // Assert: the next version reads the new row; its own write in progress
    // keeps its guard.
    assert_eq!((status(&updated), status(&other)), (200, 200));
    assert_eq!(env.redis_text(&next_key(id)).await, None);
    assert_eq!(
        env.redis_text(&next_key(guarded)).await.as_deref(),
        Some("wtoken-of-a-next-version-write")
    );
}
