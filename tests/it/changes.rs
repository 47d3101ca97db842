//! Writers outside the API (docs/cache.md, "Writers outside the API"):
//! changes committed straight to Postgres reach the cache through the change
//! records and the `invalidate-cache` consumer, run through its real handler.
//! Real Postgres and Redis; the fault proxy in front of Redis for its outage.

use std::sync::Arc;
use std::time::{Duration, Instant};
use test_support::functions::{find, invalidate};
use test_support::proxy::{FaultProxy, Mode};
use test_support::*;
use tokio::task::{JoinHandle, JoinSet};
use users_api::AppState;
use users_api::hooks::{PausePoint, Point};
use users_api::service::Consumed;
use uuid::Uuid;

/// The scheduled event the consumer is started with.
const SCHEDULE: &str = "invalidate-cache.schedule";

/// The bound D of the guarantee for writers outside the API that these tests
/// hold the consumer to: from a commit to the first find that may no longer
/// answer the value it replaced.
const D: Duration = Duration::from_secs(1);

/// A consumer, as a Lambda invocation of its own, working for `run_for`.
fn start_consumer(state: AppState, run_for: Duration) -> JoinHandle<Consumed> {
    tokio::spawn(async move { invalidate(&state, SCHEDULE, run_for).await })
}

/// Runs `sql` with `params` in the test's schema, as a writer outside the
/// API would (its own connection, its own transaction); returns when the
/// commit is acknowledged.
async fn sql(env: &TestEnv, sql: &str, params: &[&(dyn tokio_postgres::types::ToSql + Sync)]) {
    let sql = sql.replace("users", &format!("{}.users", env.schema));
    env.pg().execute(&sql, params).await.expect("SQL writer");
}

async fn rename_by_sql(env: &TestEnv, id: Uuid, name: &str) {
    sql(
        env,
        "UPDATE users SET name = $2, version = version + 1 WHERE id = $1",
        &[&id, &name],
    )
    .await;
}

/// The change records not yet applied.
async fn records(env: &TestEnv) -> i64 {
    let sql = format!("SELECT count(*) FROM {}.user_changes", env.schema);
    env.pg().query_one(&sql, &[]).await.expect("count").get(0)
}

/// Deletes the records the arrangement made (its creates through the API,
/// which voided their own keys), as a consumer before the test's would have.
async fn applied_before(env: &TestEnv) {
    let sql = format!("DELETE FROM {}.user_changes", env.schema);
    env.pg().execute(&sql, &[]).await.expect("clear records");
}

/// A find of `id`: its status, and its name when found.
async fn found(state: &AppState, id: Uuid) -> (u16, Option<String>) {
    let response = find(state, request_for("find-user.v2", id)).await;
    let name = (status(&response) == 200).then(|| {
        json_body(&response)["name"]
            .as_str()
            .expect("a name")
            .to_owned()
    });
    (status(&response), name)
}

/// Finds `id` until `expected` is answered or `within` has passed; returns
/// how long that took, `None` when it never was.
async fn answered_within(
    state: &AppState,
    id: Uuid,
    expected: (u16, Option<&str>),
    within: Duration,
) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < within {
        let (status, name) = found(state, id).await;
        if (status, name.as_deref()) == expected {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

#[tokio::test]
async fn every_sql_insert_update_and_delete_is_recorded_in_its_own_transaction() {
    // Arrange
    let env = TestEnv::new().await;
    let id = Uuid::now_v7();
    let moved = Uuid::now_v7();

    // Act
    sql(
        &env,
        "INSERT INTO users (id, email, name) VALUES ($1, 'sql@example.com', 'By SQL')",
        &[&id],
    )
    .await;
    rename_by_sql(&env, id, "Renamed").await;
    sql(
        &env,
        "UPDATE users SET id = $2 WHERE id = $1",
        &[&id, &moved],
    )
    .await;
    sql(&env, "DELETE FROM users WHERE id = $1", &[&moved]).await;
    let rolled_back = format!(
        "BEGIN; UPDATE {0}.users SET name = 'never' WHERE id = '{moved}'; ROLLBACK;",
        env.schema
    );
    env.pg()
        .batch_execute(&rolled_back)
        .await
        .expect("rollback");
    let truncate = env
        .pg()
        .batch_execute(&format!("TRUNCATE {}.users", env.schema))
        .await;

    // Assert: insert, update, the id change (old and new id), delete.
    let sql = format!(
        "SELECT user_id FROM {}.user_changes ORDER BY seq",
        env.schema
    );
    let recorded: Vec<Uuid> = env
        .pg()
        .query(&sql, &[])
        .await
        .expect("records")
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(recorded, [id, id, id, moved, moved]);
    let refused = truncate.expect_err("TRUNCATE is refused");
    assert!(
        refused
            .as_db_error()
            .is_some_and(|error| error.message().contains("use DELETE FROM users")),
        "{refused:?}"
    );
}

#[tokio::test]
async fn an_sql_update_and_delete_reach_the_cache_within_a_second() {
    // Arrange: the session: create, find twice (miss, hit).
    let env = TestEnv::new().await;
    let id = create_user(&env.state, "bob@example.com", "Bob").await;
    assert_eq!(found(&env.state, id).await.1.as_deref(), Some("Bob"));
    let hit = find(&env.state, request_for("find-user.v2", id)).await;
    assert_eq!(header(&hit, "x-cache"), Some("hit"));
    applied_before(&env).await;
    let consumer = start_consumer(env.instance(&[]).await, Duration::from_secs(3));

    // Act
    rename_by_sql(&env, id, "Bob Renamed By SQL").await;
    let renamed = answered_within(&env.state, id, (200, Some("Bob Renamed By SQL")), D).await;
    sql(&env, "DELETE FROM users WHERE id = $1", &[&id]).await;
    let deleted = answered_within(&env.state, id, (404, None), D).await;

    // Assert
    assert!(
        renamed.is_some(),
        "the SQL update was not seen within {D:?}"
    );
    assert!(
        deleted.is_some(),
        "the SQL delete was not seen within {D:?}"
    );
    let consumed = consumer.await.expect("consumer");
    assert_eq!(
        (consumed.applied, consumed.failures),
        (2, 0),
        "{consumed:?}"
    );
    assert_eq!(records(&env).await, 0);
}

#[tokio::test]
async fn the_consumer_ends_before_the_deadline_its_invocation_carries() {
    // Arrange
    let env = TestEnv::with_settings(&[("CHANGES_STOP_BEFORE_DEADLINE_MS", "500")]).await;
    let run_for = Duration::from_millis(1_500);

    // Act
    let started = Instant::now();
    let consumed = invalidate(&env.state, SCHEDULE, run_for).await;
    let ran = started.elapsed();

    // Assert: it worked through its invocation, and stopped 500 ms short.
    assert!(ran >= run_for, "returned after {ran:?}");
    assert!(
        ran < run_for + Duration::from_millis(500),
        "returned after {ran:?}"
    );
    assert_eq!(consumed.failures, 0);
}

#[tokio::test]
async fn an_entry_kept_for_fail_safe_is_voided_by_an_sql_update_and_never_answered_stale() {
    // Arrange: entries fresh for 1 s, kept for a day; finds through a proxy
    // in front of Postgres.
    let (env, proxy, reader) = crate::fail_safe::instance_behind_postgres_proxy(&[]).await;
    let id = create_user(&env.state, "kept@example.com", "Kept").await;
    assert_eq!(found(&reader, id).await.1.as_deref(), Some("Kept"));
    tokio::time::sleep(crate::fail_safe::PAST_FRESHNESS).await;
    applied_before(&env).await;
    let consumer = start_consumer(env.instance(&[]).await, Duration::from_secs(2));

    // Act: the kept entry's user changes by SQL, then Postgres goes away.
    rename_by_sql(&env, id, "Changed By SQL").await;
    let voided = Instant::now();
    while env.cached(id).await.is_some() && voided.elapsed() < D {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    proxy.set(Mode::Reset);
    let (during_outage, name) = found(&reader, id).await;

    // Assert: nothing kept to answer, so a 503, never the replaced entry.
    assert_eq!(
        (during_outage, name.as_deref()),
        (503, None),
        "answered the entry the SQL update replaced"
    );
    proxy.set(Mode::Pass);
    assert_eq!(
        found(&reader, id).await.1.as_deref(),
        Some("Changed By SQL")
    );
    assert_eq!(consumer.await.expect("consumer").applied, 1);
}

#[tokio::test]
async fn a_negative_entry_is_voided_by_an_sql_insert_of_that_id() {
    // Arrange: an id found missing, and cached as such.
    let env = TestEnv::new().await;
    let id = Uuid::now_v7();
    assert_eq!(found(&env.state, id).await.0, 404);
    assert_eq!(env.cached(id).await.as_deref(), Some("n"));
    let consumer = start_consumer(env.instance(&[]).await, Duration::from_secs(2));

    // Act
    sql(
        &env,
        "INSERT INTO users (id, email, name, owner) VALUES ($1, 'late@example.com', 'Late', $2)",
        &[&id, &FIXTURE_SUBJECT],
    )
    .await;
    let seen = answered_within(&env.state, id, (200, Some("Late")), D).await;

    // Assert
    assert!(
        seen.is_some(),
        "the inserted user was still 404 after {D:?}"
    );
    assert_eq!(consumer.await.expect("consumer").applied, 1);
}

#[tokio::test]
async fn a_consumer_killed_between_its_claim_and_its_voids_loses_nothing() {
    // Arrange: two cached users, changed by SQL; a consumer parked after it
    // claimed their records.
    let env = TestEnv::new().await;
    let ids = [
        create_user(&env.state, "a@example.com", "A").await,
        create_user(&env.state, "b@example.com", "B").await,
    ];
    for (id, name) in ids.iter().zip(["A", "B"]) {
        assert_eq!(found(&env.state, *id).await.1.as_deref(), Some(name));
    }
    applied_before(&env).await;
    let parked = Arc::new(PausePoint::default());
    let mut doomed = env.instance(&[]).await;
    doomed.users.pause_at(Point::BeforeVoid, parked.clone());
    for id in ids {
        rename_by_sql(&env, id, "Changed").await;
    }
    let killed = start_consumer(doomed, Duration::from_secs(5));
    tokio::time::timeout(Duration::from_secs(5), parked.reached())
        .await
        .expect("the consumer claimed a batch");

    // Act: the Lambda environment ends mid-batch; the next run starts.
    killed.abort();
    assert!(killed.await.is_err_and(|error| error.is_cancelled()));
    let consumed = invalidate(&env.instance(&[]).await, SCHEDULE, Duration::from_secs(2)).await;

    // Assert: the records came back and were applied.
    assert_eq!(consumed.applied, 2, "{consumed:?}");
    assert_eq!(records(&env).await, 0);
    for id in ids {
        assert_eq!(found(&env.state, id).await.1.as_deref(), Some("Changed"));
    }
}

/// Which dependency of the consumer an outage takes away.
#[derive(Debug, Clone, Copy)]
enum Outage {
    Redis,
    Postgres,
}

/// A cached user changed by SQL while the consumer cannot reach `outage`
/// (its connections refused by a fault proxy), which then comes back.
/// Returns the records left and the answer of a find during the outage,
/// whether the change was seen within 3 s of the return, and what the
/// consumer did.
async fn change_during_an_outage(outage: Outage) -> (i64, Option<String>, bool, Consumed) {
    let env = TestEnv::new().await;
    let id = create_user(&env.state, "outage@example.com", "Before").await;
    assert_eq!(found(&env.state, id).await.1.as_deref(), Some("Before"));
    applied_before(&env).await;
    let (proxy, overrides) = match outage {
        Outage::Redis => {
            let proxy = FaultProxy::start(redis_addr()).await;
            let url = proxy.url("redis", "");
            (
                proxy,
                [
                    ("REDIS_URL", url),
                    ("REDIS_RESPONSE_TIMEOUT_MS", "200".to_owned()),
                ],
            )
        }
        Outage::Postgres => {
            let proxy = FaultProxy::start(env.postgres_addr()).await;
            let url = env.database_url_through(proxy.port);
            (
                proxy,
                [
                    ("DATABASE_URL", url),
                    ("PG_CONNECT_TIMEOUT_MS", "300".to_owned()),
                ],
            )
        }
    };
    proxy.set(Mode::Reset);
    let overrides: Vec<(&str, &str)> = overrides.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let consumer = start_consumer(env.instance(&overrides).await, Duration::from_secs(5));

    rename_by_sql(&env, id, "After").await;
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let kept = records(&env).await;
    let during = found(&env.state, id).await.1;
    proxy.set(Mode::Pass);
    let seen = answered_within(&env.state, id, (200, Some("After")), Duration::from_secs(3)).await;
    let consumed = consumer.await.expect("consumer");
    assert_eq!(records(&env).await, 0, "records left at the end");
    (kept, during, seen.is_some(), consumed)
}

#[tokio::test]
async fn changes_made_while_redis_is_down_are_applied_when_it_is_back() {
    // Arrange, act
    let (kept, during, seen, consumed) = change_during_an_outage(Outage::Redis).await;

    // Assert
    assert_eq!(kept, 1, "the record was not kept");
    assert_eq!(during.as_deref(), Some("Before"));
    assert!(seen, "not applied after Redis came back");
    assert!(consumed.failures > 0, "{consumed:?}");
    assert_eq!(consumed.applied, 1, "{consumed:?}");
}

#[tokio::test]
async fn changes_waiting_while_postgres_is_unreachable_are_applied_when_it_is_back() {
    // Arrange, act
    let (kept, during, seen, consumed) = change_during_an_outage(Outage::Postgres).await;

    // Assert
    assert_eq!(kept, 1);
    assert_eq!(during.as_deref(), Some("Before"));
    assert!(seen, "not applied after Postgres came back");
    assert!(consumed.failures > 0, "{consumed:?}");
    assert_eq!(consumed.applied, 1, "{consumed:?}");
}

#[tokio::test]
async fn two_consumers_at_once_apply_every_change_once_and_never_fail() {
    // Arrange: cached users, two consumers running.
    let env = TestEnv::new().await;
    let mut ids = Vec::new();
    for n in 0..10 {
        let id = create_user(&env.state, &format!("c{n}@example.com"), "v0").await;
        found(&env.state, id).await;
        ids.push(id);
    }
    applied_before(&env).await;
    let run_for = Duration::from_secs(3);
    let first = start_consumer(env.instance(&[]).await, run_for);
    let second = start_consumer(env.instance(&[]).await, run_for);

    // Act: 50 changes, one transaction each, from five writers at once.
    let mut writers = JoinSet::new();
    for writer in 0..5 {
        let (pg, schema, ids) = (env.own_pg().await, env.schema.clone(), ids.clone());
        writers.spawn(async move {
            for round in 1..=10 {
                let id = ids[(writer * 2 + round) % ids.len()];
                let sql = format!("UPDATE {schema}.users SET name = $2 WHERE id = $1");
                pg.execute(&sql, &[&id, &format!("w{writer}r{round}")])
                    .await
                    .expect("update");
            }
        });
    }
    writers.join_all().await;
    let (first, second) = (first.await.expect("first"), second.await.expect("second"));

    // Assert: each record applied by exactly one of them.
    assert_eq!(first.applied + second.applied, 50, "{first:?} {second:?}");
    assert_eq!((first.failures, second.failures), (0, 0));
    assert_eq!(records(&env).await, 0);
    for id in ids {
        let expected = env.stored_name(id).await;
        assert_eq!(found(&env.state, id).await.1, Some(expected));
    }
}

/// What a user was after a write of the history, or as a find saw it: its
/// version, or gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    Live(i64),
    Gone,
}

/// One SQL write of the history: the user's state after it, under the
/// writer's version counter, and when its commit was acknowledged.
#[derive(Debug, Clone, Copy)]
struct Committed {
    id: usize,
    version: i64,
    after: Seen,
    at: Instant,
}

/// One find of the history.
#[derive(Debug, Clone, Copy)]
struct Read {
    id: usize,
    started: Instant,
    seen: Seen,
}

/// The reads that saw a user older than the newest change committed more
/// than `bound` before they started, with that change.
fn stale_after(bound: Duration, writes: &[Committed], reads: &[Read]) -> Vec<(Read, Committed)> {
    reads
        .iter()
        .filter_map(|read| {
            let newest = writes
                .iter()
                .filter(|write| write.id == read.id && write.at + bound < read.started)
                .max_by_key(|write| write.version)?;
            // A later delete of this user, if any, explains a `Gone`.
            let deleted_later = writes.iter().any(|write| {
                write.id == read.id && write.after == Seen::Gone && write.version >= newest.version
            });
            let fine = match (newest.after, read.seen) {
                (Seen::Live(version), Seen::Live(seen)) => seen >= version,
                (Seen::Live(_), Seen::Gone) => deleted_later,
                (Seen::Gone, Seen::Live(seen)) => seen > newest.version,
                (Seen::Gone, Seen::Gone) => true,
            };
            (!fine).then_some((*read, *newest))
        })
        .collect()
}

#[test]
fn the_history_check_reports_a_find_older_than_a_change_committed_before_the_bound() {
    let at = Instant::now();
    let later = |ms| at + Duration::from_millis(ms);
    let writes = [
        Committed {
            id: 0,
            version: 5,
            after: Seen::Live(5),
            at,
        },
        Committed {
            id: 0,
            version: 6,
            after: Seen::Gone,
            at: later(100),
        },
    ];
    let read = |ms, seen| Read {
        id: 0,
        started: later(ms),
        seen,
    };
    // Within the bound anything goes; past it the old value is stale.
    assert!(stale_after(D, &writes, &[read(900, Seen::Live(1))]).is_empty());
    assert_eq!(
        stale_after(D, &writes, &[read(1_050, Seen::Live(1))]).len(),
        1
    );
    assert!(stale_after(D, &writes, &[read(1_050, Seen::Gone)]).is_empty());
    assert_eq!(
        stale_after(D, &writes, &[read(1_200, Seen::Live(5))]).len(),
        1
    );
    assert!(stale_after(D, &writes, &[read(1_200, Seen::Gone)]).is_empty());
}

#[tokio::test]
async fn a_history_of_finds_while_sql_writers_update_delete_and_insert_has_no_read_older_than_d() {
    // Arrange: cached users, a consumer, readers on instances of their own.
    const IDS: usize = 4;
    const READERS: usize = 4;
    const WRITES_PER_ID: i64 = 60;
    let env = TestEnv::new().await;
    let mut ids = Vec::new();
    for n in 0..IDS {
        ids.push(create_user(&env.state, &format!("h{n}@example.com"), "v1").await);
    }
    let consumer = start_consumer(env.instance(&[]).await, Duration::from_secs(4));
    let writing = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let mut readers = JoinSet::new();
    for reader in 0..READERS {
        let (state, ids, writing) = (env.instance(&[]).await, ids.clone(), writing.clone());
        readers.spawn(async move {
            let mut reads = Vec::new();
            let mut until = None;
            let mut turn = reader;
            // While the writers write, and 1.5 s after: longer than D.
            while until.is_none_or(|until| Instant::now() < until) {
                if until.is_none() && !writing.load(std::sync::atomic::Ordering::Relaxed) {
                    until = Some(Instant::now() + D + Duration::from_millis(500));
                }
                let id = turn % IDS;
                turn += 1;
                let started = Instant::now();
                let response = find(&state, request_for("find-user.v2", ids[id])).await;
                let seen = match status(&response) {
                    200 => Seen::Live(
                        header(&response, "etag")
                            .and_then(|etag| etag.trim_matches('"').parse().ok())
                            .expect("a version ETag"),
                    ),
                    404 => Seen::Gone,
                    other => panic!("find answered {other}"),
                };
                reads.push(Read { id, started, seen });
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            reads
        });
    }

    // Act: one SQL writer per user, each change in a transaction of its own.
    let mut writers = JoinSet::new();
    for (n, id) in ids.iter().copied().enumerate() {
        let (pg, schema) = (env.own_pg().await, env.schema.clone());
        writers.spawn(async move {
            let mut committed = Vec::new();
            let mut live = true;
            for version in 2..=WRITES_PER_ID + 1 {
                let (sql, after) = match (live, version % 5) {
                    (true, 0) => (
                        "DELETE FROM {s}.users WHERE id = $1 AND $2::bigint > 0",
                        Seen::Gone,
                    ),
                    (true, _) => (
                        "UPDATE {s}.users SET version = $2 WHERE id = $1",
                        Seen::Live(version),
                    ),
                    (false, _) => (
                        "INSERT INTO {s}.users (id, email, name, owner, version) \
                         VALUES ($1::uuid, $1::uuid::text || '-' || $2::bigint::text || '@example.com', 'again', $3::text, $2::bigint)",
                        Seen::Live(version),
                    ),
                };
                let sql = sql.replace("{s}", &schema);
                let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = if sql.contains("$3")
                {
                    vec![&id, &version, &FIXTURE_SUBJECT]
                } else {
                    vec![&id, &version]
                };
                pg.execute(&sql, &params).await.expect("SQL write");
                live = after != Seen::Gone;
                committed.push(Committed {
                    id: n,
                    version,
                    after,
                    at: Instant::now(),
                });
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            committed
        });
    }
    let writes: Vec<Committed> = writers.join_all().await.into_iter().flatten().collect();
    writing.store(false, std::sync::atomic::Ordering::Relaxed);
    let reads: Vec<Read> = readers.join_all().await.into_iter().flatten().collect();
    let consumed = consumer.await.expect("consumer");

    // Assert
    let checked = reads
        .iter()
        .filter(|read| {
            writes
                .iter()
                .any(|write| write.id == read.id && write.at + D < read.started)
        })
        .count();
    assert!(
        checked >= 200,
        "history too small: {checked} of {} reads checked",
        reads.len()
    );
    let stale = stale_after(D, &writes, &reads);
    assert!(
        stale.is_empty(),
        "{} of {checked} finds answered a user older than a change committed over {D:?} before they started; first: {:?}",
        stale.len(),
        stale.first()
    );
    assert_eq!(consumed.failures, 0, "{consumed:?}");
    println!(
        "history: {} SQL changes, {checked} finds checked of {}, consumer's longest lag {} ms",
        writes.len(),
        reads.len(),
        consumed.max_lag_ms
    );
}

#[tokio::test]
async fn the_consumer_writes_its_lag_per_batch_and_the_age_of_the_oldest_record() {
    // Arrange: a change that waits 300 ms before any consumer runs.
    let env = TestEnv::new().await;
    let id = create_user(&env.state, "metrics@example.com", "Metrics").await;
    applied_before(&env).await;
    rename_by_sql(&env, id, "Waited").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let consumer = env.instance(&[]).await;
    let metrics = test_support::capture::Captured::default();
    consumer
        .telemetry
        .send_metrics_to(Box::new(metrics.clone()));

    // Act
    let consumed = invalidate(&consumer, SCHEDULE, Duration::from_millis(500)).await;

    // Assert: one batch's line, then the backlog's (empty at the end).
    let lines: Vec<serde_json::Value> = metrics
        .text()
        .lines()
        .map(|line| serde_json::from_str(line).expect("an EMF line"))
        .collect();
    let batch = lines
        .iter()
        .find(|line| line.get("InvalidationLag").is_some())
        .expect("a batch's line");
    assert_eq!(batch["Function"], "invalidate-cache");
    assert_eq!(batch["ChangesApplied"], 1.0);
    let lag = batch["InvalidationLag"].as_f64().expect("a number");
    assert!((300.0..2_000.0).contains(&lag), "lag {lag} ms");
    let backlog: Vec<f64> = lines
        .iter()
        .filter_map(|line| line.get("OldestChangeAge")?.as_f64())
        .collect();
    assert_eq!(backlog.last(), Some(&0.0), "{lines:?}");
    assert!(
        lines
            .iter()
            .all(|line| line["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "users-api")
    );
    assert_eq!(consumed.max_lag_ms, lag as u64);
}
