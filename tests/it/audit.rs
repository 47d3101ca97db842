//! The auditor (docs/cache.md, "Auditor"), run through the real
//! `invalidate-cache` handler beside its consumer, against real Postgres and
//! Redis: an entry made inconsistent on purpose is found and repaired, a
//! consistent cache under finds and writes reports nothing, a write in
//! flight is no finding, and a Postgres rolled back under the cache is one.

use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};
use test_support::capture::Captured;
use test_support::functions::{find, invalidate, update};
use test_support::proxy::{FaultProxy, Mode};
use test_support::*;
use users_api::AppState;
use users_api::hooks::{PausePoint, Point};
use users_api::service::Audited;
use uuid::Uuid;

/// The scheduled event the consumer and the auditor are started with.
const SCHEDULE: &str = "invalidate-cache.schedule";

/// Samples a second: every user of these small tests in every batch.
const AUDIT: (&str, &str) = ("CACHE_AUDIT_PER_SECOND", "20");

/// A run of `invalidate-cache` of `run_for` (a few audit periods of 1 s);
/// what its auditor did.
async fn audit_for(env: &TestEnv, run_for: Duration) -> Audited {
    invalidate(&env.instance(&[]).await, SCHEDULE, run_for)
        .await
        .audit
}

/// A find of `id`: its status, version (ETag) and name when found.
async fn found(state: &AppState, id: Uuid) -> (u16, Option<i64>, Option<String>) {
    let response = find(state, request_for("find-user.v2", id)).await;
    let version = header(&response, "etag").and_then(|etag| etag.trim_matches('"').parse().ok());
    let name = (status(&response) == 200)
        .then(|| json_body(&response)["name"].as_str().map(str::to_owned))
        .flatten();
    (status(&response), version, name)
}

/// `findings` inconsistent entries reported, each repaired.
fn assert_findings(audited: &Audited, findings: u64) {
    assert_eq!(
        (audited.inconsistent, audited.repaired),
        (findings, findings),
        "{audited:?}"
    );
}

/// A find of `id` answers `version`, named `name`.
async fn assert_answers(state: &AppState, id: Uuid, version: i64, name: &str) {
    let expected = (200, Some(version), Some(name.to_owned()));
    assert_eq!(found(state, id).await, expected);
}

/// Renames `id` through the real `update-user` handler.
async fn rename(state: &AppState, id: Uuid, name: &str) -> u16 {
    let body = json!({"email": format!("{id}@example.com"), "name": name});
    status(&update(state, with_body("update-user.v2", id, &body)).await)
}

/// The raw value of user `id`'s key.
async fn raw(env: &TestEnv, id: Uuid) -> Option<Vec<u8>> {
    let mut redis = env.redis().await;
    redis::AsyncCommands::get(&mut redis, env.cache_key(id))
        .await
        .expect("redis get")
}

/// Writes `value` into user `id`'s key, as a lost invalidation or a bug would
/// have left it.
async fn put_raw(env: &TestEnv, id: Uuid, value: &[u8]) {
    let mut redis = env.redis().await;
    let _: () = redis::cmd("SET")
        .arg(env.cache_key(id))
        .arg(value)
        .arg("PX")
        .arg(60_000)
        .query_async(&mut redis)
        .await
        .expect("redis set");
}

/// Deletes the change records the arrangement left (its writes through the
/// API, which voided their own keys), as a consumer before this one would
/// have.
async fn applied_before(env: &TestEnv) {
    let sql = format!("DELETE FROM {}.user_changes", env.schema);
    env.pg().execute(&sql, &[]).await.expect("clear records");
}

/// A world with the auditor on and one user, cached by a find, whose change
/// records count as applied.
async fn cached_user(email: &str, name: &str) -> (TestEnv, Uuid) {
    let env = TestEnv::with_settings(&[AUDIT]).await;
    let id = create_user(&env.state, email, name).await;
    found(&env.state, id).await;
    applied_before(&env).await;
    (env, id)
}

/// Runs `sql` in one transaction with the deletion of `id`'s change
/// records: a change that left no record, as a restore from a snapshot is.
async fn without_record(env: &TestEnv, id: Uuid, sql: &str) {
    let schema = &env.schema;
    let sql = sql.replace("users", &format!("{schema}.users"));
    let transaction =
        format!("BEGIN; {sql}; DELETE FROM {schema}.user_changes WHERE user_id = '{id}'; COMMIT;");
    env.pg()
        .batch_execute(&transaction)
        .await
        .expect("SQL writer");
}

#[tokio::test]
async fn an_entry_a_lost_invalidation_left_behind_is_found_and_repaired_and_the_next_find_answers_the_current_row()
 {
    // Arrange: the entry of version 1, written back over the key after an
    // update to version 2 had voided it.
    let env = TestEnv::with_settings(&[AUDIT]).await;
    let id = create_user(&env.state, "lost@example.com", "Before").await;
    assert_eq!(found(&env.state, id).await.1, Some(1));
    let old = raw(&env, id).await.expect("the entry of version 1");
    assert_eq!(rename(&env.state, id, "After").await, 200);
    applied_before(&env).await;
    put_raw(&env, id, &old).await;
    assert_eq!(
        found(&env.state, id).await.1,
        Some(1),
        "the stale entry answers"
    );

    // Act: three audit periods.
    let audited = audit_for(&env, Duration::from_secs(3)).await;

    // Assert
    assert_findings(&audited, 1);
    assert_ne!(raw(&env, id).await.as_deref(), Some(&old[..]));
    assert_answers(&env.state, id, 2, "After").await;
}

#[tokio::test]
async fn a_consistent_cache_under_finds_and_writes_reports_no_inconsistent_entry_of_many_audited() {
    // Arrange: cached users; the consumer and the auditor running.
    let env = TestEnv::with_settings(&[AUDIT]).await;
    let mut ids = Vec::new();
    for n in 0..10 {
        let id = create_user(&env.state, &format!("mix{n}@example.com"), "v1").await;
        found(&env.state, id).await;
        ids.push(id);
    }
    let auditor = env.instance(&[]).await;
    let running =
        tokio::spawn(async move { invalidate(&auditor, SCHEDULE, Duration::from_secs(4)).await });

    // Act: finds, updates through the API and by SQL, for 3.5 s.
    let started = Instant::now();
    let mut turn = 0;
    while started.elapsed() < Duration::from_millis(3_500) {
        let id = ids[turn % ids.len()];
        match turn % 10 {
            0 => assert_eq!(rename(&env.state, id, &format!("api{turn}")).await, 200),
            5 => {
                let sql = format!(
                    "UPDATE {}.users SET name = $2, version = version + 1 WHERE id = $1",
                    env.schema
                );
                let name = format!("sql{turn}");
                env.pg()
                    .execute(&sql, &[&id, &name])
                    .await
                    .expect("SQL writer");
            }
            _ => assert_eq!(found(&env.state, id).await.0, 200),
        }
        turn += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let audited = running.await.expect("invalidate-cache").audit;

    // Assert
    assert!(audited.audited > 20, "too few audited: {audited:?}");
    assert_eq!(
        (audited.inconsistent, audited.repaired),
        (0, 0),
        "{} audited: {audited:?}",
        audited.audited
    );
}

#[tokio::test]
async fn an_update_in_flight_is_not_reported() {
    // Arrange: a cached user whose update parks between its guard and its
    // statement.
    let env = TestEnv::with_settings(&[AUDIT]).await;
    let id = create_user(&env.state, "flight@example.com", "Before").await;
    assert_eq!(found(&env.state, id).await.1, Some(1));
    let parked = Arc::new(PausePoint::default());
    let mut writer = env.instance(&[]).await;
    writer.users.pause_at(Point::BeforeWrite, parked.clone());
    let writing = tokio::spawn(async move { rename(&writer, id, "After").await });
    parked.reached().await;

    // Act
    let audited = audit_for(&env, Duration::from_millis(1_500)).await;

    // Assert: the guard was seen and judged no finding; the update ends.
    parked.release();
    assert!(audited.in_flight >= 1, "{audited:?}");
    assert_findings(&audited, 0);
    assert_eq!(writing.await.expect("update"), 200);
    assert_answers(&env.state, id, 2, "After").await;
}

#[tokio::test]
async fn an_entry_replaced_while_the_auditor_reads_postgres_is_not_reported() {
    // Arrange: the auditor has read the entry of version 1 and parks before
    // its statement; meanwhile an update to version 2 completes, a find
    // fills its entry, and its change record is applied.
    let env = TestEnv::with_settings(&[AUDIT]).await;
    let id = create_user(&env.state, "race@example.com", "Before").await;
    assert_eq!(found(&env.state, id).await.1, Some(1));
    applied_before(&env).await;
    let parked = Arc::new(PausePoint::default());
    let mut auditor = env.instance(&[]).await;
    auditor
        .users
        .pause_at(Point::BeforeAuditQuery, parked.clone());
    let auditing = tokio::spawn(async move {
        invalidate(&auditor, SCHEDULE, Duration::from_millis(1_500))
            .await
            .audit
    });
    tokio::time::timeout(Duration::from_secs(5), parked.reached())
        .await
        .expect("the auditor read the entry");
    assert_eq!(rename(&env.state, id, "After").await, 200);
    assert_eq!(found(&env.state, id).await.1, Some(2));
    applied_before(&env).await;

    // Act: the auditor reads Postgres (version 2, no record), and the key
    // again.
    parked.release();
    let next_batch = async {
        loop {
            parked.reached().await;
            parked.release();
        }
    };
    let audited = tokio::select! {
        audited = auditing => audited.expect("invalidate-cache"),
        () = next_batch => unreachable!(),
    };

    // Assert: the entry it read had changed: not judged, not reported.
    assert!(audited.changed >= 1, "{audited:?}");
    assert_findings(&audited, 0);
    assert_answers(&env.state, id, 2, "After").await;
}

#[tokio::test]
async fn a_postgres_rolled_back_under_the_cache_is_reported_and_repaired() {
    // Arrange: the entry of version 3; then Postgres goes back to version 1
    // without a change record, as a restore from a snapshot does.
    let env = TestEnv::with_settings(&[AUDIT]).await;
    let id = create_user(&env.state, "restore@example.com", "v1").await;
    assert_eq!(rename(&env.state, id, "v2").await, 200);
    assert_eq!(rename(&env.state, id, "v3").await, 200);
    assert_eq!(found(&env.state, id).await.1, Some(3));
    applied_before(&env).await;
    without_record(
        &env,
        id,
        &format!("UPDATE users SET version = 1, name = 'Restored' WHERE id = '{id}'"),
    )
    .await;

    // Act
    let audited = audit_for(&env, Duration::from_secs(3)).await;

    // Assert
    assert_findings(&audited, 1);
    assert_answers(&env.state, id, 1, "Restored").await;
}

#[tokio::test]
async fn a_negative_entry_for_a_user_postgres_has_is_reported_and_repaired() {
    // Arrange: an id cached as "no such user", then inserted without a
    // change record.
    let env = TestEnv::with_settings(&[AUDIT]).await;
    let id = Uuid::now_v7();
    assert_eq!(found(&env.state, id).await.0, 404);
    assert_eq!(env.cached(id).await.as_deref(), Some("n"));
    without_record(
        &env,
        id,
        &format!(
            "INSERT INTO users (id, email, name, owner) \
             VALUES ('{id}', 'late@example.com', 'Late', '{FIXTURE_SUBJECT}')"
        ),
    )
    .await;

    // Act
    let audited = audit_for(&env, Duration::from_secs(3)).await;

    // Assert
    assert_findings(&audited, 1);
    assert_answers(&env.state, id, 1, "Late").await;
}

#[tokio::test]
async fn a_finding_is_logged_by_id_versions_and_age_never_its_body_and_counted_in_the_batchs_metrics()
 {
    // Arrange: a stale entry, as in the lost invalidation above; the
    // auditor's logs and EMF lines captured.
    let env = TestEnv::with_settings(&[AUDIT]).await;
    let id = create_user(&env.state, "logged@example.com", "Secret Name").await;
    found(&env.state, id).await;
    let old = raw(&env, id).await.expect("the entry of version 1");
    assert_eq!(rename(&env.state, id, "Other Name").await, 200);
    applied_before(&env).await;
    put_raw(&env, id, &old).await;
    let (logs, metrics) = (Captured::default(), Captured::default());
    let auditor = env.instance(&[("METRICS_NAMESPACE", "audit-test")]).await;
    auditor.telemetry.send_metrics_to(Box::new(metrics.clone()));
    let _logging = logs.install(lambda_http::tracing::Level::INFO);

    // Act
    let audited = invalidate(&auditor, SCHEDULE, Duration::from_millis(1_500))
        .await
        .audit;

    // Assert: one log line with the id, both versions and the age, no body.
    assert_findings(&audited, 1);
    let logs = logs.text();
    let finding: Vec<&str> = logs
        .lines()
        .filter(|line| line.contains("inconsistent cache entry, voiding it"))
        .collect();
    assert_eq!(finding.len(), 1, "{logs}");
    for field in [
        format!("\"user\":\"{id}\""),
        "\"entry_version\":1".to_owned(),
        "\"postgres_version\":\"2\"".to_owned(),
        "\"entry_age_ms\":".to_owned(),
    ] {
        assert!(finding[0].contains(&field), "{field} in {}", finding[0]);
    }
    assert!(!logs.contains("Secret Name") && !logs.contains("logged@example.com"));
    // The batches' EMF lines add up to the run's counts.
    let sum = |name: &str| -> f64 {
        metrics
            .text()
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|line| line["Function"] == "invalidate-cache")
            .filter_map(|line| line[name].as_f64())
            .sum()
    };
    assert_eq!(sum("CacheAudited"), audited.audited as f64);
    assert_eq!(sum("CacheInconsistent"), 1.0);
    assert_eq!(sum("CacheRepaired"), 1.0);
}

#[tokio::test]
async fn an_auditor_whose_redis_refuses_backs_off_and_ends_by_its_deadline() {
    // Arrange: the auditor's Redis behind a proxy that refuses connections.
    let env = TestEnv::with_settings(&[AUDIT]).await;
    create_user(&env.state, "down@example.com", "Down").await;
    let proxy = FaultProxy::start(redis_addr()).await;
    proxy.set(Mode::Reset);
    let url = proxy.url("redis", "");
    let auditor = env
        .instance(&[("REDIS_URL", &url), ("REDIS_RESPONSE_TIMEOUT_MS", "200")])
        .await;
    let run_for = Duration::from_millis(3_500);

    // Act
    let started = Instant::now();
    let audited = invalidate(&auditor, SCHEDULE, run_for).await.audit;
    let ran = started.elapsed();

    // Assert: a failed batch at 0 s, the next after 2 s, then a wait of 4 s
    // that the deadline cuts; every batch failed, none audited.
    assert_eq!((audited.batches, audited.failures), (2, 2), "{audited:?}");
    assert_eq!(audited.audited, 0);
    assert!(ran < run_for + Duration::from_millis(500), "ran {ran:?}");
}

#[tokio::test]
async fn a_user_the_consumer_voided_is_audited_again_after_the_bound_and_its_old_entry_found() {
    // Arrange: 2,000 other users, so that the walk (one id a second here)
    // all but never reaches the one under test; that user cached.
    let env = TestEnv::with_settings(&[
        ("CACHE_AUDIT_PER_SECOND", "2"),
        ("CACHE_AUDIT_BOUND_MS", "500"),
    ])
    .await;
    let bulk = format!(
        "INSERT INTO {}.users (id, email, name) SELECT gen_random_uuid(), \
         'bulk' || n || '@example.com', 'Bulk' FROM generate_series(1, 2000) AS n",
        env.schema
    );
    env.pg().batch_execute(&bulk).await.expect("bulk insert");
    let id = create_user(&env.state, "again@example.com", "Before").await;
    found(&env.state, id).await;
    let old = raw(&env, id).await.expect("the entry of version 1");
    applied_before(&env).await;
    let auditor = env.instance(&[]).await;
    let running =
        tokio::spawn(async move { invalidate(&auditor, SCHEDULE, Duration::from_secs(3)).await });

    // Act: a change by SQL, which the consumer voids; then the old entry
    // comes back, as a lost voiding would leave it.
    let sql = format!(
        "UPDATE {}.users SET name = 'After', version = version + 1 WHERE id = $1",
        env.schema
    );
    env.pg().execute(&sql, &[&id]).await.expect("SQL writer");
    let voided = Instant::now();
    while raw(&env, id).await.is_some() {
        assert!(voided.elapsed() < Duration::from_secs(2), "never voided");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    put_raw(&env, id, &old).await;
    let consumed = running.await.expect("invalidate-cache");

    // Assert
    assert_eq!(consumed.applied, 1, "{consumed:?}");
    assert_findings(&consumed.audit, 1);
    assert_answers(&env.state, id, 2, "After").await;
}

#[tokio::test]
async fn an_auditor_whose_redis_answers_slowly_backs_off() {
    // Arrange: a cached user; the auditor's Redis behind a proxy that holds
    // every chunk 300 ms each way, within the call's bound.
    let (env, _) = cached_user("slow@example.com", "Slow").await;
    let proxy = FaultProxy::start(redis_addr()).await;
    let url = proxy.url("redis", "");
    let auditor = env
        .instance(&[("REDIS_URL", &url), ("REDIS_RESPONSE_TIMEOUT_MS", "3000")])
        .await;
    proxy.set(Mode::Latency(Duration::from_millis(300)));

    // Act
    let audited = invalidate(&auditor, SCHEDULE, Duration::from_millis(3_500))
        .await
        .audit;

    // Assert: each batch took over 500 ms and still audited, and the next
    // waited twice as long: a batch at 0 s, one at 2 s, none at 1 s or 3 s.
    assert_eq!((audited.batches, audited.failures), (2, 2), "{audited:?}");
    assert!(audited.audited >= 1, "{audited:?}");
    assert_findings(&audited, 0);
}

#[tokio::test]
async fn an_auditor_whose_postgres_refuses_backs_off_and_ends_by_its_deadline() {
    // Arrange: a cached user; the auditor's (and its consumer's) Postgres
    // behind a proxy that refuses connections, its Redis as it is.
    let (env, id) = cached_user("pg-down@example.com", "Down").await;
    let proxy = FaultProxy::start(env.postgres_addr()).await;
    let url = env.database_url_through(proxy.port);
    let auditor = env.instance(&[("DATABASE_URL", &url)]).await;
    proxy.set(Mode::Reset);
    let run_for = Duration::from_millis(3_500);

    // Act
    let started = Instant::now();
    let audited = invalidate(&auditor, SCHEDULE, run_for).await.audit;
    let ran = started.elapsed();

    // Assert: a failed batch at 0 s, the next after 2 s, then a wait of 4 s
    // that the deadline cuts; nothing judged, nothing voided.
    assert_eq!((audited.batches, audited.failures), (2, 2), "{audited:?}");
    assert_eq!((audited.audited, audited.repaired), (0, 0), "{audited:?}");
    assert!(ran < run_for + Duration::from_millis(500), "ran {ran:?}");
    assert!(raw(&env, id).await.is_some(), "the entry was left alone");
}
