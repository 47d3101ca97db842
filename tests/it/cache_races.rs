//! Cache correctness under concurrency: no stale read after an acknowledged
//! write, and no stampede on a hot key. Real Postgres and Redis; every
//! "instance" is a separate `AppState` with its own connections, as separate
//! Lambda sandboxes would be.

use lambda_http::{Body, Response};
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};
use test_support::functions::{delete, find, update};
use test_support::proxy::{FaultProxy, Mode};
use test_support::servers::RedisServer;
use test_support::*;
use tokio::task::JoinSet;
use users_api::cache::Lookup;
use users_api::hooks::{PausePoint, Point};
use users_api::testing::{GUARD_SCRIPT, RELEASE_SCRIPT};
use uuid::Uuid;

/// The instances of [`race_a_parked_fill`]'s finds afterwards, in order.
const INSTANCES: [&str; 2] = ["on the writer's instance", "on the reader's instance"];

/// The write [`race_a_parked_fill`] makes while a find is parked.
#[derive(Debug, Clone, Copy)]
enum Write {
    Update,
    Delete,
}

/// A `find` on one instance misses, reads the row and parks before its fill;
/// `write` (on another instance) runs to success; the find is released.
/// Returns the parked find's answer, the write's, and what `find` answers
/// afterwards on both instances.
async fn race_a_parked_fill(write: Write) -> (Response<Body>, Response<Body>, [Response<Body>; 2]) {
    let env = TestEnv::new().await;
    let id = create_user(&env.state, "old@example.com", "Old").await;
    let pause = Arc::new(PausePoint::default());
    let mut reader = env.instance(&[]).await;
    reader.users.pause_at(Point::BeforeFill, pause.clone());

    let parked_find = find(&reader, request_for("find-user.v2", id));
    let written = async {
        pause.reached().await;
        let written = match write {
            Write::Update => {
                let body = json!({"email": "new@example.com", "name": "New"});
                update(&env.state, with_body("update-user.v2", id, &body)).await
            }
            Write::Delete => delete(&env.state, request_for("delete-user.v2", id)).await,
        };
        pause.release();
        written
    };
    let (early, written) = tokio::join!(parked_find, written);

    let after = [
        find(&env.state, request_for("find-user.v2", id)).await,
        find(&reader, request_for("find-user.v2", id)).await,
    ];
    (early, written, after)
}

#[tokio::test]
async fn a_find_parked_before_its_fill_cannot_cache_the_value_an_update_replaced() {
    // Arrange and act
    let (early, updated, after) = race_a_parked_fill(Write::Update).await;

    // Assert
    assert_eq!(status(&updated), 200);
    assert_eq!(
        json_body(&early)["email"],
        "old@example.com",
        "started before the write"
    );
    for (instance, found) in INSTANCES.iter().zip(&after) {
        assert_eq!(json_body(found)["email"], "new@example.com", "{instance}");
    }
}

#[tokio::test]
async fn a_find_parked_before_its_fill_cannot_cache_a_user_that_was_deleted() {
    // Arrange and act
    let (early, deleted, after) = race_a_parked_fill(Write::Delete).await;

    // Assert
    assert_eq!(status(&deleted), 204);
    assert_eq!(status(&early), 200, "started before the delete");
    for (instance, found) in INSTANCES.iter().zip(&after) {
        assert_eq!(status(found), 404, "{instance}");
    }
}

/// Entries of the refresh races: fresh for 1 s, no eager refresh.
const SHORT_LIVED: [(&str, &str); 2] = [
    ("CACHE_TTL_SECONDS", "1"),
    ("CACHE_EAGER_REFRESH_PERCENT", "0"),
];

/// Longer than an entry of [`SHORT_LIVED`] is fresh.
const PAST_FRESHNESS: Duration = Duration::from_millis(1_100);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_parked_before_its_store_cannot_cache_the_value_an_update_replaced() {
    // Arrange: an entry past its freshness; a find on `reader` refreshes
    // it, reads the old row and parks before storing.
    let env = TestEnv::with_settings(&SHORT_LIVED).await;
    let id = create_user(&env.state, "old@example.com", "Old").await;
    find(&env.state, request_for("find-user.v2", id)).await;
    tokio::time::sleep(PAST_FRESHNESS).await;
    let pause = Arc::new(PausePoint::default());
    let mut reader = env.instance(&[]).await;
    reader.users.pause_at(Point::BeforeFill, pause.clone());
    let reader = Arc::new(reader);
    let refreshing = {
        let reader = reader.clone();
        tokio::spawn(async move { find(&reader, request_for("find-user.v2", id)).await })
    };
    pause.reached().await;

    // Act: a find gets the kept entry; an update is acknowledged; the
    // refresh goes on to store what it read.
    let during = find(&env.state, request_for("find-user.v2", id)).await;
    let body = json!({"email": "new@example.com", "name": "New"});
    let updated = update(&env.state, with_body("update-user.v2", id, &body)).await;
    pause.release();
    let early = refreshing.await.expect("refresh");
    let after = [
        find(&env.state, request_for("find-user.v2", id)).await,
        find(&reader, request_for("find-user.v2", id)).await,
    ];

    // Assert
    assert_eq!(status(&updated), 200);
    assert_eq!(header(&during, "x-cache"), Some("stale"));
    assert_eq!(
        json_body(&during)["email"],
        "old@example.com",
        "before the update"
    );
    assert_eq!(
        json_body(&early)["email"],
        "old@example.com",
        "before the update"
    );
    for (instance, found) in INSTANCES.iter().zip(&after) {
        assert_eq!(json_body(found)["email"], "new@example.com", "{instance}");
    }
}

#[tokio::test]
async fn a_stale_answer_asked_for_after_an_update_is_never_the_value_it_replaced() {
    // Arrange: two users cached, then updated (acknowledged); `refilled` is
    // found again after its update, `unread` is not; both go past their
    // freshness. `reader` reaches Postgres through a proxy.
    let env = TestEnv::with_settings(&[
        SHORT_LIVED[0],
        SHORT_LIVED[1],
        ("CACHE_FAIL_SAFE_TIMEOUT_MS", "150"),
    ])
    .await;
    let proxy = FaultProxy::start(env.postgres_addr()).await;
    let reader = env
        .instance(&[("DATABASE_URL", &env.database_url_through(proxy.port))])
        .await;
    let refilled = create_user(&env.state, "refilled@example.com", "Old").await;
    let unread = create_user(&env.state, "unread@example.com", "Old").await;
    for (id, email) in [
        (refilled, "refilled@example.com"),
        (unread, "unread@example.com"),
    ] {
        find(&env.state, request_for("find-user.v2", id)).await;
        let body = json!({"email": email, "name": "New"});
        let updated = update(&env.state, with_body("update-user.v2", id, &body)).await;
        assert_eq!(status(&updated), 200);
    }
    find(&env.state, request_for("find-user.v2", refilled)).await;
    tokio::time::sleep(PAST_FRESHNESS).await;

    // Act: Postgres refuses the reader.
    proxy.set(Mode::Reset);
    let stale = find(&reader, request_for("find-user.v2", refilled)).await;
    let uncached = find(&reader, request_for("find-user.v2", unread)).await;

    // Assert
    assert_eq!(status(&stale), 200);
    assert_eq!(header(&stale, "x-cache"), Some("stale"));
    assert_eq!(json_body(&stale)["name"], "New");
    assert_eq!(
        status(&uncached),
        503,
        "never the value the update replaced"
    );
}

/// Two writes to one user overlap; the first one's cleanup must not lift the
/// guard of the second, still in flight. The second's own cleanup is then
/// lost (Redis black-holed after its commit), and a find that read the row
/// between the two commits must still not leave the first write's value
/// cached for the TTL.
#[tokio::test]
async fn overlapping_writes_keep_the_cache_closed_until_the_last_one_is_done() {
    // Arrange: the user cached; instance `second` talks to Redis through a
    // fault proxy and parks its write after taking the guard; `reader`
    // parks a fill, should it take one.
    let env = TestEnv::new().await;
    let id = create_user(&env.state, "v1@example.com", "One").await;
    assert_eq!(
        status(&find(&env.state, request_for("find-user.v2", id)).await),
        200
    );
    let proxy = test_support::proxy::FaultProxy::start(redis_addr()).await;
    let second_parked = Arc::new(PausePoint::default());
    let mut second = env
        .instance(&[
            ("REDIS_URL", &proxy.url("redis", "")),
            // Room for a loaded CI machine; the black-holed release waits this long.
            ("REDIS_RESPONSE_TIMEOUT_MS", "500"),
        ])
        .await;
    second
        .users
        .pause_at(Point::BeforeWrite, second_parked.clone());
    let fill_parked = Arc::new(PausePoint::default());
    let mut reader = env.instance(&[]).await;
    reader
        .users
        .pause_at(Point::BeforeFill, fill_parked.clone());
    let body = |email: &str| json!({"email": email, "name": "Two"});

    // Act
    let second_write = tokio::spawn(async move {
        let updated = update(
            &second,
            with_body("update-user.v2", id, &body("v3@example.com")),
        );
        status(&updated.await)
    });
    second_parked.reached().await;
    let first = update(
        &env.state,
        with_body("update-user.v2", id, &body("v2@example.com")),
    )
    .await;
    let mut read = std::pin::pin!(find(&reader, request_for("find-user.v2", id)));
    let parked = tokio::select! {
        () = fill_parked.reached() => true,
        found = &mut read => {
            assert_eq!(json_body(&found)["email"], "v2@example.com");
            false
        }
    };
    proxy.set(test_support::proxy::Mode::BlackHole);
    second_parked.release();
    let second_status = second_write.await.expect("second write");
    if parked {
        fill_parked.release();
        assert_eq!(json_body(&read.await)["email"], "v2@example.com");
    }
    let after = find(&env.state, request_for("find-user.v2", id)).await;

    // Assert: both writes acknowledged, and the last one is what finds see.
    assert_eq!(status(&first), 200);
    assert_eq!(
        second_status, 200,
        "the lost cleanup does not fail the write"
    );
    assert_eq!(
        json_body(&after)["email"],
        "v3@example.com",
        "x-cache {:?}",
        after.headers().get("x-cache")
    );
}

#[tokio::test]
async fn the_write_guard_opens_only_when_its_last_writer_leaves_and_repeats_are_harmless() {
    // Arrange
    let env = TestEnv::new().await;
    let cache = env.state.users.cache();
    let (id, retried) = (Uuid::now_v7(), Uuid::now_v7());
    let mut redis = env.redis().await;
    let script = |text| redis::Script::new(text);

    // Act: two writers on one key, the first leaving twice (a retried call);
    // and a writer whose guard call was sent twice, leaving once.
    let first = cache.guard_write(id).await.expect("guard");
    let second = cache.guard_write(id).await.expect("guard");
    cache.release_write(id, &first).await.expect("release");
    cache
        .release_write(id, &first)
        .await
        .expect("release again");
    let while_second_writes = cache.lookup(id).await.expect("lookup");
    cache.release_write(id, &second).await.expect("release");
    let after_both = cache.lookup(id).await.expect("lookup");
    let key = env.cache_key(retried);
    for _ in 0..2 {
        let _: i64 = script(GUARD_SCRIPT)
            .key(&key)
            .arg("token-1")
            .arg(60_000)
            .invoke_async(&mut redis)
            .await
            .expect("guard script");
    }
    let _: i64 = script(RELEASE_SCRIPT)
        .key(&key)
        .arg("token-1")
        .invoke_async(&mut redis)
        .await
        .expect("release script");
    let left: i64 = redis::cmd("EXISTS")
        .arg(&key)
        .query_async(&mut redis)
        .await
        .expect("exists");

    // Assert
    assert!(
        matches!(while_second_writes, Lookup::Writing),
        "{while_second_writes:?}"
    );
    assert!(
        matches!(after_both, Lookup::Leased(_)),
        "the key was deleted: {after_both:?}"
    );
    assert_eq!(
        left, 0,
        "a guard taken twice by one writer is gone after it leaves"
    );
}

/// One completed operation of the history: which id, which version it wrote
/// or read, and when it started and returned.
#[derive(Debug, Clone, Copy)]
struct Op {
    id: usize,
    write: bool,
    version: u64,
    start: Instant,
    end: Instant,
    /// A find answered `x-cache: stale`.
    stale: bool,
}

/// Where the readers of a history run.
#[derive(Clone, Copy)]
enum Readers {
    /// Each on an instance of its own, as one-request-at-a-time Lambda
    /// environments are.
    OwnInstances,
    /// All on one instance, as one Lambda Managed Instances environment
    /// serving them at once, where simultaneous finds share a flight.
    OneEnvironment,
}

/// What goes wrong while a history runs.
#[derive(Clone, Copy)]
enum Faults<'a> {
    None,
    /// Every client connection of this Redis killed every 15 ms.
    RedisKills(&'a RedisServer),
    /// The instances reach Postgres through this proxy, which refuses
    /// everything for 1.3 s out of every 1.7 s; writers wait out each outage
    /// (an outage starts once no write is in flight and the readers have
    /// had time to fill the keys the last writes deleted, so that finds have
    /// entries to answer stale).
    PostgresOutages(&'a FaultProxy),
}

/// How long Postgres is there, then gone, in each cycle of
/// [`Faults::PostgresOutages`]: longer gone than an entry of the history's
/// env is fresh, so that finds answer stale.
const POSTGRES_UP: Duration = Duration::from_millis(400);
const POSTGRES_DOWN: Duration = Duration::from_millis(1_300);

/// Several writers (one per id, so each id's versions are totally ordered)
/// and readers; returns every successful operation.
async fn run_history(
    env: &TestEnv,
    writes_per_id: u64,
    faults: Faults<'_>,
    readers: Readers,
) -> Vec<Op> {
    const IDS: usize = 3;
    const READERS: usize = 6;
    let mut ids = Vec::new();
    for n in 0..IDS {
        ids.push(create_user(&env.state, &format!("u{n}@example.com"), "v0").await);
    }
    let ids = Arc::new(ids);
    let done = Arc::new(tokio::sync::Notify::new());
    let finished = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let outage = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writing = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let through = match faults {
        Faults::PostgresOutages(proxy) => Some(env.database_url_through(proxy.port)),
        _ => None,
    };
    let overrides: Vec<(&str, &str)> = through
        .iter()
        .map(|url| ("DATABASE_URL", url.as_str()))
        .collect();
    let mut tasks = JoinSet::new();
    for (n, _) in ids.iter().enumerate() {
        let state = env.instance(&overrides).await;
        let ids = ids.clone();
        let (outage, writing, paced) = (outage.clone(), writing.clone(), through.is_some());
        tasks.spawn(async move {
            use std::sync::atomic::Ordering::SeqCst;
            let mut ops = Vec::new();
            for version in 1..=writes_per_id {
                if paced {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                // Counted as writing before looking at the flag: an outage
                // that sees no write in flight starts before any other.
                writing.fetch_add(1, SeqCst);
                while outage.load(SeqCst) {
                    writing.fetch_sub(1, SeqCst);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    writing.fetch_add(1, SeqCst);
                }
                let body =
                    json!({"email": format!("u{n}@example.com"), "name": format!("v{version}")});
                let start = Instant::now();
                let response = update(&state, with_body("update-user.v2", ids[n], &body)).await;
                let end = Instant::now();
                writing.fetch_sub(1, SeqCst);
                if status(&response) == 200 {
                    ops.push(Op {
                        id: n,
                        write: true,
                        version,
                        start,
                        end,
                        stale: false,
                    });
                }
            }
            ops
        });
    }
    let shared = Arc::new(env.instance(&overrides).await);
    for reader in 0..READERS {
        let state = match readers {
            Readers::OwnInstances => Arc::new(env.instance(&overrides).await),
            Readers::OneEnvironment => shared.clone(),
        };
        let ids = ids.clone();
        let finished = finished.clone();
        let paced = through.is_some();
        tasks.spawn(async move {
            let mut ops = Vec::new();
            let mut turn = reader;
            // Until the writers are done, and at least 30 finds each, so
            // the history is never too small on a slow or busy machine.
            // Through outages, paced so as to last as long as the writers.
            while (!finished.load(std::sync::atomic::Ordering::Relaxed) || ops.len() < 30)
                && ops.len() < 5_000
            {
                if paced {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                let n = turn % IDS;
                turn += 1;
                let start = Instant::now();
                let response = find(&state, request_for("find-user.v2", ids[n])).await;
                let end = Instant::now();
                if status(&response) == 200 {
                    let name = json_body(&response)["name"].as_str().unwrap().to_owned();
                    let version = name.trim_start_matches('v').parse().unwrap();
                    ops.push(Op {
                        id: n,
                        write: false,
                        version,
                        start,
                        end,
                        stale: header(&response, "x-cache") == Some("stale"),
                    });
                }
            }
            ops
        });
    }
    let chaos = async {
        let mut faults_injected = 0;
        loop {
            match faults {
                Faults::None => break 0,
                Faults::RedisKills(server) => tokio::select! {
                    _ = done.notified() => break faults_injected,
                    _ = tokio::time::sleep(Duration::from_millis(15)) => {
                        server.kill_clients().await;
                        faults_injected += 1;
                    }
                },
                Faults::PostgresOutages(proxy) => {
                    tokio::select! {
                        _ = done.notified() => break faults_injected,
                        _ = tokio::time::sleep(POSTGRES_UP) => {}
                    }
                    outage.store(true, std::sync::atomic::Ordering::SeqCst);
                    while writing.load(std::sync::atomic::Ordering::SeqCst) > 0 {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    // Time for the readers to fill the keys the last writes
                    // deleted.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    proxy.set(Mode::Reset);
                    faults_injected += 1;
                    let over = tokio::select! {
                        _ = done.notified() => true,
                        _ = tokio::time::sleep(POSTGRES_DOWN) => false,
                    };
                    proxy.set(Mode::Pass);
                    outage.store(false, std::sync::atomic::Ordering::SeqCst);
                    if over {
                        break faults_injected;
                    }
                }
            }
        }
    };
    let collect = async {
        let mut history = Vec::new();
        let mut writers_left = IDS;
        while let Some(ops) = tasks.join_next().await {
            let ops = ops.expect("task");
            if ops.iter().any(|op| op.write) || ops.is_empty() {
                writers_left = writers_left.saturating_sub(1);
            }
            if writers_left == 0 {
                finished.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            history.extend(ops);
        }
        done.notify_one();
        history
    };
    let (history, faults_injected) = tokio::join!(collect, chaos);
    if !matches!(faults, Faults::None) {
        assert!(faults_injected > 0, "the fault injector ran");
    }
    history
}

/// Every find that started after a write to its id returned must see that
/// write or a later one. Returns the violations.
fn stale_reads(history: &[Op]) -> Vec<(Op, Op)> {
    let mut violations = Vec::new();
    for read in history.iter().filter(|op| !op.write) {
        let newest_acknowledged = history
            .iter()
            .filter(|op| op.write && op.id == read.id && op.end < read.start)
            .max_by_key(|op| op.version);
        if let Some(write) = newest_acknowledged
            && read.version < write.version
        {
            violations.push((*read, *write));
        }
    }
    violations
}

fn assert_no_stale_reads(history: &[Op]) {
    let reads = history.iter().filter(|op| !op.write).count();
    let writes = history.iter().filter(|op| op.write).count();
    assert!(
        reads > 100 && writes > 30,
        "history too small: {reads} reads, {writes} writes"
    );
    let violations = stale_reads(history);
    assert!(
        violations.is_empty(),
        "{} of {reads} finds returned a version older than an acknowledged write, first: {:?}",
        violations.len(),
        violations.first()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_history_without_faults_has_no_stale_read() {
    // Arrange
    let env = TestEnv::new().await;

    // Act
    let history = run_history(&env, 40, Faults::None, Readers::OwnInstances).await;

    // Assert
    assert_no_stale_reads(&history);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_history_with_readers_in_one_environment_has_no_stale_read() {
    // Arrange
    let env = TestEnv::new().await;

    // Act
    let history = run_history(&env, 40, Faults::None, Readers::OneEnvironment).await;

    // Assert
    assert_no_stale_reads(&history);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_history_with_redis_connections_killed_has_no_stale_read() {
    // Arrange
    let redis = RedisServer::start();
    let env = TestEnv::with_settings(&[("REDIS_URL", &redis.url())]).await;

    // Act
    let history = run_history(&env, 40, Faults::RedisKills(&redis), Readers::OwnInstances).await;

    // Assert
    assert_no_stale_reads(&history);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_history_through_postgres_outages_has_no_stale_read() {
    // Arrange: entries fresh for 1 s, shorter than an outage, so finds
    // answer stale during outages; writes only between them.
    let env = TestEnv::with_settings(&[
        ("CACHE_TTL_SECONDS", "1"),
        ("CACHE_FAIL_SAFE_TIMEOUT_MS", "100"),
    ])
    .await;
    let proxy = FaultProxy::start(env.postgres_addr()).await;

    // Act
    let history = run_history(
        &env,
        40,
        Faults::PostgresOutages(&proxy),
        Readers::OwnInstances,
    )
    .await;

    // Assert
    let stale = history.iter().filter(|op| op.stale).count();
    println!("history through postgres outages: {stale} stale answers");
    assert!(stale > 0, "no find was answered stale");
    assert_no_stale_reads(&history);
}

#[test]
fn the_history_check_reports_a_read_older_than_an_acknowledged_write() {
    // Arrange
    let t0 = Instant::now();
    let at = |ms: u64| t0 + Duration::from_millis(ms);
    let write = Op {
        id: 0,
        write: true,
        version: 2,
        start: at(0),
        end: at(10),
        stale: false,
    };
    let stale = Op {
        id: 0,
        write: false,
        version: 1,
        start: at(11),
        end: at(12),
        stale: false,
    };
    let concurrent = Op {
        id: 0,
        write: false,
        version: 1,
        start: at(5),
        end: at(12),
        stale: true,
    };
    let other_id = Op {
        id: 1,
        write: false,
        version: 0,
        start: at(20),
        end: at(21),
        stale: false,
    };

    // Act
    let violations = stale_reads(&[write, stale, concurrent, other_id]);

    // Assert
    assert_eq!(violations.len(), 1, "{violations:?}");
}

/// `INSTANCES` separate instances miss one key at the same moment; returns
/// how many Postgres reads of that row they made in all.
async fn stampede(fill_wait_ms: &str) -> u64 {
    const INSTANCES: usize = 32;
    let env = TestEnv::with_settings(&[("CACHE_FILL_WAIT_MS", fill_wait_ms)]).await;
    let id = create_user(&env.state, "hot@example.com", "Hot").await;
    let mut instances = Vec::new();
    for _ in 0..INSTANCES {
        instances.push(Arc::new(env.instance(&[]).await));
    }
    let start = Arc::new(tokio::sync::Barrier::new(INSTANCES));

    let mut finds = JoinSet::new();
    for state in &instances {
        let (state, start) = (state.clone(), start.clone());
        finds.spawn(async move {
            start.wait().await;
            status(&find(&state, request_for("find-user.v2", id)).await)
        });
    }
    while let Some(status) = finds.join_next().await {
        assert_eq!(status.unwrap(), 200);
    }
    instances
        .iter()
        .map(|state| state.users.store().reads())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_instances_missing_one_hot_key_read_postgres_once() {
    // Arrange and act: the same stampede with 1 ms of waiting for the fill
    // (next to none), then with waiting, which is the protection.
    let unprotected = stampede("1").await;
    let protected = stampede("5000").await;

    // Assert
    println!(
        "stampede, 32 concurrent misses: {protected} Postgres reads with fill waiting, {unprotected} without"
    );
    assert_eq!(protected, 1);
}

#[tokio::test]
async fn a_missing_user_is_cached_as_not_found_for_the_negative_ttl() {
    // Arrange
    let env = TestEnv::with_settings(&[("CACHE_NEGATIVE_TTL_SECONDS", "30")]).await;
    let missing = Uuid::now_v7();

    // Act
    let first = find(&env.state, request_for("find-user.v2", missing)).await;
    let second = find(&env.state, request_for("find-user.v1", missing)).await;

    // Assert
    assert_eq!(status(&first), 404);
    assert_eq!(status(&second), 404);
    assert_eq!(json_body(&second)["code"], "not_found");
    assert_eq!(
        env.state.users.store().reads(),
        1,
        "the second 404 came from Redis"
    );
    let mut redis = env.redis().await;
    let ttl: i64 = redis::AsyncCommands::pttl(&mut redis, env.cache_key(missing))
        .await
        .unwrap();
    assert!(ttl > 0 && ttl <= 30_000, "pttl {ttl}");
}

#[tokio::test]
async fn a_write_refused_by_an_unreachable_redis_changes_nothing_in_postgres() {
    // Arrange
    let redis = RedisServer::start();
    let env = TestEnv::with_settings(&[
        ("REDIS_URL", &redis.url()),
        ("REDIS_RESPONSE_TIMEOUT_MS", "100"),
    ])
    .await;
    let id = create_user(&env.state, "kept@example.com", "Kept").await;
    drop(redis);

    // Act
    let updated = update(&env.state, request_for("update-user.v2", id)).await;
    let deleted = delete(&env.state, request_for("delete-user.v2", id)).await;

    // Assert
    assert_eq!(status(&updated), 503);
    assert_eq!(json_body(&updated)["code"], "service_unavailable");
    assert_eq!(status(&deleted), 503);
    let found = find(&env.state, request_for("find-user.v2", id)).await;
    assert_eq!(status(&found), 200);
    assert_eq!(header(&found, "x-cache"), Some("bypass"));
    assert_eq!(json_body(&found)["email"], "kept@example.com");
}
