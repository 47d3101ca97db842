//! Writes through a Postgres failover (issue 20). When Aurora or RDS
//! Multi-AZ fails over, connections may survive on the demoted writer, whose
//! sessions are read-only: every write on them answers `25006
//! read_only_sql_transaction`. Such a connection must be discarded, the
//! write answered 503 (never 500), and the next write after the failover
//! must succeed without a restart.
//!
//! Each test runs a Postgres of its own (`test_support::postgres_server`)
//! and makes its sessions read-only in one of two ways:
//! - `ALTER SYSTEM` and a reload: every session, the pool's open ones
//!   included, is read-only at once, and writable again at once;
//! - `ALTER DATABASE`: only the sessions opened from then on, for their
//!   whole life. With the pool's connections cut meanwhile, the pool holds
//!   read-only sessions that stay so after the reset, while new sessions
//!   are writable: the surviving connections to the demoted writer, and the
//!   new writer.

use std::time::{Duration, Instant};
use test_support::functions::{create, delete, find, list, update};
use test_support::postgres_server::{DATABASE, PrivateEnv};
use test_support::*;

/// The pool's size in these tests: several connections to find read-only.
const POOL: &str = "4";

#[tokio::test]
async fn writes_on_sessions_made_read_only_answer_503_and_succeed_once_writable_again() {
    // Arrange: a user, and the pool's connections open.
    let env = PrivateEnv::new(&[("PG_POOL_MAX_SIZE", POOL)]).await;
    let id = create_user(&env.state, "failover@example.com", "Ada Lovelace").await;
    let open = open_pool_connections(&env).await;

    // Act: every session read-only, as a demoted writer's are.
    set_read_only_everywhere(&env, true).await;
    let started = Instant::now();
    let updated = update(&env.state, request_for("update-user.v2", id)).await;
    let refused_in = started.elapsed();
    let keyed = update(&env.state, request_for("update-user.idempotent.v2", id)).await;
    let created = create(&env.state, request_from(&fixture("create-user.v2"))).await;
    let keyed_create = create(
        &env.state,
        request_from(&fixture("create-user.idempotent.v2")),
    )
    .await;
    let deleted = delete(&env.state, request_for("delete-user.v2", id)).await;
    let found = find(&env.state, request_for("find-user.v2", id)).await;
    let listed = list(&env.state, request_from(&fixture("list-users.v2"))).await;
    let name_while_read_only = env.stored_name(id).await;
    let rows_while_read_only = env.row_count().await;
    set_read_only_everywhere(&env, false).await;
    let started = Instant::now();
    let updated_after = update(&env.state, request_for("update-user.v2", id)).await;
    let succeeded_in = started.elapsed();
    let keyed_after = update(&env.state, request_for("update-user.idempotent.v2", id)).await;
    let created_after = create(&env.state, request_from(&fixture("create-user.v2"))).await;

    // Assert
    println!(
        "{open} pool connections read-only: update {} in {refused_in:?}; \
         writable again: update {} in {succeeded_in:?}; find x-cache {:?}",
        status(&updated),
        status(&updated_after),
        header(&found, "x-cache")
    );
    assert!(open >= 2, "the pool had {open} connections open");
    let answers = [
        &updated,
        &keyed,
        &created,
        &keyed_create,
        &deleted,
        &found,
        &listed,
        &updated_after,
        &keyed_after,
        &created_after,
    ];
    assert_eq!(
        answers.map(status),
        [503, 503, 503, 503, 503, 200, 200, 200, 200, 201],
        "update, keyed update, create, keyed create, delete, find and list while \
         read-only; update, keyed update and create once writable"
    );
    for refused in &answers[..5] {
        assert_unavailable(refused);
    }
    assert_eq!(json_body(&found)["name"], "Ada Lovelace");
    assert_eq!(name_while_read_only.as_deref(), Some("Ada Lovelace"));
    assert_eq!(rows_while_read_only, 1);
    assert_eq!(env.stored_name(id).await.as_deref(), Some("Ada King"));
    assert!(refused_in < Duration::from_secs(1), "{refused_in:?}");
}

#[tokio::test]
async fn connections_left_on_a_demoted_writer_are_discarded_and_the_next_writes_succeed() {
    // Arrange: new sessions read-only and the pool's connections cut, so
    // the pool reconnects to read-only sessions (the demoted writer's).
    let env = PrivateEnv::new(&[("PG_POOL_MAX_SIZE", POOL)]).await;
    let id = create_user(&env.state, "failover@example.com", "Ada Lovelace").await;
    open_pool_connections(&env).await;
    env.admin()
        .batch_execute(&format!(
            "ALTER DATABASE {DATABASE} SET default_transaction_read_only = on"
        ))
        .await
        .expect("read-only sessions");
    let cut = cut_pool_connections(&env).await;
    let started = Instant::now();
    let while_read_only = update(&env.state, request_for("update-user.v2", id)).await;
    let refused_in = started.elapsed();
    let stuck = open_pool_connections(&env).await;

    // Act: the database takes writes again (new sessions reach the new
    // writer); the pool's sessions stay read-only for their life.
    env.admin()
        .batch_execute(&format!(
            "ALTER DATABASE {DATABASE} RESET default_transaction_read_only"
        ))
        .await
        .expect("writable sessions");
    let mut after = Vec::new();
    for name in ["Ada King", "Ada Byron", "Ada Lovelace", "Ada King"] {
        let body = serde_json::json!({"email": "failover@example.com", "name": name});
        let started = Instant::now();
        let answer = update(&env.state, with_body("update-user.v2", id, &body)).await;
        after.push((status(&answer), started.elapsed()));
    }

    // Assert
    println!(
        "{cut} pool connections cut, {stuck} reopened read-only: update {} in {refused_in:?}; \
         writable again: updates {after:?}",
        status(&while_read_only)
    );
    assert!(cut >= 2, "the pool had {cut} connections open");
    assert!(stuck >= 2, "the pool reopened {stuck} connections");
    let statuses: Vec<u16> = after.iter().map(|(status, _)| *status).collect();
    assert_eq!(
        (status(&while_read_only), statuses),
        (503, vec![200, 200, 200, 200]),
        "an update while read-only, then four once writable: {:?}",
        while_read_only.body()
    );
    assert_unavailable(&while_read_only);
    assert_eq!(env.stored_name(id).await.as_deref(), Some("Ada King"));
}

/// A 503 that says the database is unavailable, in our words.
fn assert_unavailable(answer: &lambda_http::Response<lambda_http::Body>) {
    assert_eq!(status(answer), 503, "{:?}", answer.body());
    let body = json_body(answer);
    assert_eq!(body["code"], "service_unavailable");
    assert_eq!(
        body["message"], "the database is unavailable, please retry later",
        "no driver text"
    );
}

/// Sends as many lists at once as the pool holds connections, so it opens
/// them all; returns how many sessions the pool has open.
async fn open_pool_connections(env: &PrivateEnv) -> i64 {
    let one = || list(&env.state, request_from(&fixture("list-users.v2")));
    let lists = tokio::join!(one(), one(), one(), one());
    for listed in [lists.0, lists.1, lists.2, lists.3] {
        assert_eq!(status(&listed), 200, "{:?}", listed.body());
    }
    env.admin()
        .query_one(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = $1 AND application_name = 'users-api'",
            &[&DATABASE],
        )
        .await
        .expect("count the pool's sessions")
        .get(0)
}

/// Terminates the pool's sessions, as a failover cuts connections; returns
/// how many.
async fn cut_pool_connections(env: &PrivateEnv) -> i64 {
    env.admin()
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE datname = $1 AND application_name = 'users-api'",
            &[&DATABASE],
        )
        .await
        .expect("terminate the pool's sessions")
        .get(0)
}

/// `default_transaction_read_only` for every session, the open ones
/// included (they apply a reloaded setting before their next statement).
/// Returns once a new session sees it: the server has reloaded and
/// signalled every session by then.
async fn set_read_only_everywhere(env: &PrivateEnv, on: bool) {
    let change = if on {
        "ALTER SYSTEM SET default_transaction_read_only = on"
    } else {
        "ALTER SYSTEM RESET default_transaction_read_only"
    };
    // Two statements: ALTER SYSTEM cannot run in a batch's implicit transaction.
    for statement in [change, "SELECT pg_reload_conf()"] {
        env.admin()
            .batch_execute(statement)
            .await
            .expect("reconfigure the private server");
    }
    let expected = if on { "on" } else { "off" };
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let seen: String = env
            .new_session()
            .await
            .query_one("SHOW default_transaction_read_only", &[])
            .await
            .expect("show")
            .get(0);
        if seen == expected {
            return;
        }
        assert!(Instant::now() < deadline, "the reload was not seen in 5 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
