//! Conditional requests: strong ETags from the row version, 304 for a current
//! copy, 412 when a write's If-Match is stale, checked in the write statement
//! itself so two writers cannot both win.

use serde_json::json;
use test_support::functions::{create, delete, find, update};
use test_support::*;
use uuid::Uuid;

async fn create_user(env: &TestEnv) -> (Uuid, String) {
    let body = json!({"email": format!("{}@example.com", Uuid::new_v4().simple()), "name": "Ada"});
    let response = create(&env.state, with_body("create-user.v2", Uuid::nil(), &body)).await;
    assert_eq!(status(&response), 201);
    let id = json_body(&response)["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    (id, header(&response, "etag").unwrap().to_owned())
}

fn with_header(
    mut request: lambda_http::Request,
    name: &'static str,
    value: &str,
) -> lambda_http::Request {
    request
        .headers_mut()
        .insert(name, value.parse().expect("header value"));
    request
}

/// A PUT that renames user `id`, keeping an email of its own.
fn renamed(id: Uuid, name: &str) -> lambda_http::Request {
    let email = format!("{}@example.com", id.simple());
    with_body("update-user.v2", id, &json!({"email": email, "name": name}))
}

#[tokio::test]
async fn find_with_a_current_etag_answers_304_from_the_cache_without_a_body() {
    // Arrange
    let env = TestEnv::new().await;
    let (id, created_etag) = create_user(&env).await;
    let first = find(&env.state, request_for("find-user.v2", id)).await;
    let etag = header(&first, "etag").unwrap().to_owned();
    let reads = env.state.users.store().reads();

    // Act
    let strong = find(
        &env.state,
        with_header(request_for("find-user.v2", id), "if-none-match", &etag),
    )
    .await;
    let weak_in_list = find(
        &env.state,
        with_header(
            request_for("find-user.v1", id),
            "if-none-match",
            &format!("\"999\", W/{etag}"),
        ),
    )
    .await;
    let other = find(
        &env.state,
        with_header(request_for("find-user.v2", id), "if-none-match", "\"999\""),
    )
    .await;

    // Assert
    assert_eq!(etag, created_etag);
    assert_eq!(etag, "\"1\"");
    assert_eq!(status(&strong), 304);
    assert!(strong.body().is_empty());
    assert_eq!(header(&strong, "etag"), Some(etag.as_str()));
    assert_eq!(header(&strong, "x-cache"), Some("hit"));
    assert_eq!(status(&weak_in_list), 304);
    assert_eq!(status(&other), 200);
    assert_eq!(
        env.state.users.store().reads(),
        reads,
        "304s came from Redis"
    );
}

#[tokio::test]
async fn update_with_the_current_etag_succeeds_and_changes_the_etag() {
    // Arrange
    let env = TestEnv::new().await;
    let (id, etag) = create_user(&env).await;

    // Act
    let updated = update(
        &env.state,
        with_header(renamed(id, "Ada King"), "if-match", &etag),
    )
    .await;
    let found = find(&env.state, request_for("find-user.v2", id)).await;

    // Assert
    assert_eq!(status(&updated), 200);
    assert_eq!(header(&updated, "etag"), Some("\"2\""));
    assert_eq!(header(&found, "etag"), Some("\"2\""));
    assert_eq!(json_body(&found)["name"], "Ada King");
}

#[tokio::test]
async fn writes_with_a_stale_weak_unknown_or_malformed_etag_answer_412_and_change_nothing() {
    // Arrange
    let env = TestEnv::new().await;
    let (id, stale) = create_user(&env).await;
    let current = update(&env.state, renamed(id, "Second")).await;
    let current = header(&current, "etag").unwrap().to_owned();
    let cases = [
        stale.clone(),
        format!("W/{current}"),
        "\"not-a-version\"".to_owned(),
        current.trim_matches('"').to_owned(),
        String::new(),
    ];

    for if_match in &cases {
        // Act
        let updated = update(
            &env.state,
            with_header(renamed(id, "Lost"), "if-match", if_match),
        )
        .await;
        let deleted = delete(
            &env.state,
            with_header(request_for("delete-user.v2", id), "if-match", if_match),
        )
        .await;

        // Assert
        assert_eq!(status(&updated), 412, "If-Match {if_match:?}");
        assert_eq!(
            json_body(&updated)["code"],
            "precondition_failed",
            "If-Match {if_match:?}"
        );
        assert_eq!(status(&deleted), 412, "If-Match {if_match:?}");
    }
    // Assert: the user is as the last successful write left it.
    let found = find(&env.state, request_for("find-user.v2", id)).await;
    assert_eq!(json_body(&found)["name"], "Second");
    assert_eq!(header(&found, "etag"), Some(current.as_str()));
}

#[tokio::test]
async fn if_match_star_needs_only_an_existing_user() {
    // Arrange
    let env = TestEnv::new().await;
    let (id, _) = create_user(&env).await;

    // Act
    let star = update(
        &env.state,
        with_header(renamed(id, "Star"), "if-match", "*"),
    )
    .await;
    let missing = update(
        &env.state,
        with_header(renamed(Uuid::now_v7(), "Nobody"), "if-match", "*"),
    )
    .await;

    // Assert
    assert_eq!(status(&star), 200);
    assert_eq!(status(&missing), 404);
}

#[tokio::test]
async fn delete_with_the_current_etag_deletes() {
    // Arrange
    let env = TestEnv::new().await;
    let (id, etag) = create_user(&env).await;

    // Act
    let deleted = delete(
        &env.state,
        with_header(request_for("delete-user.v1", id), "if-match", &etag),
    )
    .await;

    // Assert
    assert_eq!(status(&deleted), 204);
    assert_eq!(env.row_count().await, 0);
}

/// What the writers of [`two_writers`] send with their update.
#[derive(Debug, Clone, Copy)]
enum Precondition {
    /// No If-Match: a blind overwrite.
    Blind,
    /// If-Match with the ETag of the version both read.
    IfMatchTheEtagRead,
}

/// Two clients read the same version and both write, each on its own instance,
/// at the same moment. Returns the statuses and the final name.
async fn two_writers(env: &TestEnv, precondition: Precondition) -> (Vec<u16>, String) {
    let (id, etag) = create_user(env).await;
    let (one, two) = (env.instance(&[]).await, env.instance(&[]).await);
    let request = |name: &str| {
        let request = renamed(id, name);
        match precondition {
            Precondition::IfMatchTheEtagRead => with_header(request, "if-match", &etag),
            Precondition::Blind => request,
        }
    };

    let (first, second) = tokio::join!(
        update(&one, request("Writer one")),
        update(&two, request("Writer two"))
    );

    let found = find(&env.state, request_for("find-user.v2", id)).await;
    let mut statuses = vec![status(&first), status(&second)];
    statuses.sort();
    (
        statuses,
        json_body(&found)["name"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_concurrent_writers_with_the_same_etag_cannot_both_win() {
    // Arrange
    let env = TestEnv::new().await;

    // Act: without If-Match both succeed and one update is silently lost.
    let (blind, _) = two_writers(&env, Precondition::Blind).await;

    // Assert
    assert_eq!(blind, vec![200, 200]);
    for round in 1..=10 {
        // Act: both with If-Match.
        let (statuses, name) = two_writers(&env, Precondition::IfMatchTheEtagRead).await;

        // Assert
        assert_eq!(statuses, vec![200, 412], "round {round}");
        assert!(
            name == "Writer one" || name == "Writer two",
            "round {round}: {name}"
        );
    }
}
