//! Single flight in the process (docs/cache.md): simultaneous finds of one
//! user through one instance share one lookup and one fill, never a lookup
//! issued before they arrived, and each applies its own access check. Real
//! Postgres and Redis; an instance is one `AppState`, its finds run at once
//! on a multi-thread runtime, as on Lambda Managed Instances.

use lambda_http::{Body, Request, Response};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use test_support::functions::{find, update};
use test_support::servers::RedisServer;
use test_support::*;
use tokio::task::JoinHandle;
use users_api::AppState;
use users_api::hooks::{PausePoint, Point};

/// How many finds of one user the first test sends at once.
const FINDS: usize = 64;

const READ: &str = "users/read";

/// The fixtures' caller, who creates the users of these tests.
const OWNER: Caller<'static> = Caller::Verified {
    subject: FIXTURE_SUBJECT,
    scopes: &[READ],
};

/// Somebody else, who may not see the owner's users.
const STRANGER: Caller<'static> = Caller::Verified {
    subject: "9a1c2b3d-stranger",
    scopes: &[READ],
};

fn spawn_find(state: &Arc<AppState>, request: Request) -> JoinHandle<Response<Body>> {
    let state = state.clone();
    tokio::spawn(async move { find(&state, request).await })
}

/// Whether `state`'s finds have waited `count` times for another find's
/// flight (a member joined, or a next flight's leader is waiting) within
/// `limit`.
async fn flight_waits_reach(state: &AppState, count: u64, limit: Duration) -> bool {
    tokio::time::timeout(limit, async {
        while state.users.flight_waits() < count {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .is_ok()
}

async fn until_flight_waits(state: &AppState, count: u64) {
    assert!(
        flight_waits_reach(state, count, Duration::from_secs(10)).await,
        "{} flight waits, expected {count}",
        state.users.flight_waits()
    );
}

/// The commands a Redis server has run so far, `INFO` aside, counting those
/// a script runs (a fill is `EVALSHA` plus the script's `GET` and `SET`).
async fn commands_run(redis: &mut redis::aio::MultiplexedConnection) -> u64 {
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(redis)
        .await
        .expect("INFO commandstats");
    stats
        .lines()
        .filter(|line| line.starts_with("cmdstat_") && !line.starts_with("cmdstat_info:"))
        .filter_map(|line| {
            line.split("calls=")
                .nth(1)?
                .split(',')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simultaneous_finds_of_one_uncached_user_share_one_lookup_and_one_postgres_read() {
    // Arrange: a Redis of the test's own, so that its command count is ours;
    // the instance parks fills.
    let redis = RedisServer::start();
    let env = TestEnv::with_settings(&[("REDIS_URL", &redis.url())]).await;
    let id = create_user(&env.state, "hot@example.com", "Hot").await;
    let other = create_user(&env.state, "warm@example.com", "Warm").await;
    let pause = Arc::new(PausePoint::default());
    let mut instance = env.instance(&[]).await;
    instance.users.pause_at(Point::BeforeFill, pause.clone());
    let instance = Arc::new(instance);
    // One find of another user loads the fill script into Redis, as it is
    // on any server that has served a fill.
    pause.release();
    find(&instance, request_for("find-user.v2", other)).await;
    let reads_before = instance.users.store().reads();
    let mut counter = env.redis().await;
    let commands_before = commands_run(&mut counter).await;

    // Act: the finds start at once; the first to miss holds its fill until
    // all the others wait for it (or 2 s have passed: without single flight
    // they never do).
    let finds: Vec<_> = (0..FINDS)
        .map(|_| spawn_find(&instance, request_for("find-user.v2", id)))
        .collect();
    pause.reached().await;
    let gathered = flight_waits_reach(&instance, FINDS as u64 - 1, Duration::from_secs(2)).await;
    pause.release();
    let mut found = Vec::new();
    for task in finds {
        found.push(task.await.expect("find"));
    }
    let commands = commands_run(&mut counter).await - commands_before;
    let reads = instance.users.store().reads() - reads_before;

    // Assert
    println!(
        "{FINDS} simultaneous finds of one uncached user: {commands} Redis commands, {reads} Postgres reads"
    );
    for response in &found {
        assert_eq!(status(response), 200);
        assert_eq!(json_body(response)["email"], "hot@example.com");
    }
    assert_eq!(reads, 1);
    assert_eq!(
        commands, 5,
        "two flights: one lookup and one fill (EVALSHA, and GET and SET in the script), then one lookup"
    );
    let misses = found
        .iter()
        .filter(|response| header(response, "x-cache") == Some("miss"))
        .count();
    assert_eq!(
        misses, 1,
        "the leader that filled; every other find is a hit"
    );
    assert!(gathered, "{} flight waits", instance.users.flight_waits());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finds_of_different_users_are_not_serialized() {
    // Arrange: two uncached users; the instance parks every fill.
    let env = TestEnv::new().await;
    let ids = [
        create_user(&env.state, "ada@example.com", "Ada").await,
        create_user(&env.state, "bob@example.com", "Bob").await,
    ];
    let pause = Arc::new(PausePoint::default());
    let mut instance = env.instance(&[]).await;
    instance.users.pause_at(Point::BeforeFill, pause.clone());
    let instance = Arc::new(instance);

    // Act: each find reaches its fill while the other is parked at its own.
    let finds = ids.map(|id| spawn_find(&instance, request_for("find-user.v2", id)));
    let both_parked = tokio::time::timeout(Duration::from_secs(10), async {
        pause.reached().await;
        pause.reached().await;
    })
    .await;
    pause.release();
    pause.release();

    // Assert
    assert!(
        both_parked.is_ok(),
        "a find waited for another user's flight"
    );
    for (task, email) in finds
        .into_iter()
        .zip(["ada@example.com", "bob@example.com"])
    {
        let found = task.await.expect("find");
        assert_eq!(status(&found), 200);
        assert_eq!(json_body(&found)["email"], email);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_find_started_after_an_update_is_not_answered_by_a_flight_started_before_it() {
    // Arrange: a find on `reader` misses, reads the old row and parks
    // before its fill.
    let env = TestEnv::new().await;
    let id = create_user(&env.state, "old@example.com", "Old").await;
    let pause = Arc::new(PausePoint::default());
    let mut reader = env.instance(&[]).await;
    reader.users.pause_at(Point::BeforeFill, pause.clone());
    let reader = Arc::new(reader);
    let early = spawn_find(&reader, request_for("find-user.v2", id));
    pause.reached().await;

    // Act: an update through another instance is acknowledged; then a find
    // on `reader` starts while the early flight is still in progress.
    let body = json!({"email": "new@example.com", "name": "New"});
    let updated = update(&env.state, with_body("update-user.v2", id, &body)).await;
    let late = spawn_find(&reader, request_for("find-user.v2", id));
    until_flight_waits(&reader, 1).await;
    pause.release();
    // The late find's own fill parks too.
    pause.release();

    // Assert
    assert_eq!(status(&updated), 200);
    let (early, late) = (early.await.expect("early"), late.await.expect("late"));
    assert_eq!(
        json_body(&early)["email"],
        "old@example.com",
        "started before the update"
    );
    assert_eq!(
        json_body(&late)["email"],
        "new@example.com",
        "started after the update was acknowledged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_find_whose_leaders_are_cancelled_still_gets_an_answer() {
    // Arrange: `first` misses and parks before its fill; `second` leads the
    // next flight and `third` joins it.
    let env = TestEnv::new().await;
    let id = create_user(&env.state, "kept@example.com", "Kept").await;
    let pause = Arc::new(PausePoint::default());
    let mut instance = env.instance(&[]).await;
    instance.users.pause_at(Point::BeforeFill, pause.clone());
    let instance = Arc::new(instance);
    let first = spawn_find(&instance, request_for("find-user.v2", id));
    pause.reached().await;
    let second = spawn_find(&instance, request_for("find-user.v2", id));
    until_flight_waits(&instance, 1).await;
    let third = spawn_find(&instance, request_for("find-user.v2", id));
    until_flight_waits(&instance, 2).await;

    // Act: the next flight's leader is cancelled (its request dropped), then
    // the running flight's.
    second.abort();
    until_flight_waits(&instance, 3).await;
    first.abort();
    // Should `third` take a lease of its own, its fill parks too.
    pause.release();
    let third = tokio::time::timeout(Duration::from_secs(10), third).await;

    // Assert
    assert!(second.await.is_err_and(|error| error.is_cancelled()));
    assert!(first.await.is_err_and(|error| error.is_cancelled()));
    let third = third.expect("the find did not hang").expect("find");
    assert_eq!(status(&third), 200);
    assert_eq!(json_body(&third)["email"], "kept@example.com");
}

/// While a find of the owner's user is parked before its fill, a find by
/// `first` leads the next flight and one by `second` joins it. Returns their
/// answers.
async fn share_a_flight(
    first: Caller<'static>,
    second: Caller<'static>,
) -> (Response<Body>, Response<Body>) {
    let env = TestEnv::new().await;
    let id = create_user(&env.state, "private@example.com", "Private").await;
    let pause = Arc::new(PausePoint::default());
    let mut instance = env.instance(&[]).await;
    instance.users.pause_at(Point::BeforeFill, pause.clone());
    let instance = Arc::new(instance);
    let parked = spawn_find(&instance, request_as("find-user.v2", id, OWNER));
    pause.reached().await;
    let led = spawn_find(&instance, request_as("find-user.v2", id, first));
    until_flight_waits(&instance, 1).await;
    let joined = spawn_find(&instance, request_as("find-user.v2", id, second));
    until_flight_waits(&instance, 2).await;
    pause.release();
    assert_eq!(status(&parked.await.expect("parked find")), 200);
    (led.await.expect("led"), joined.await.expect("joined"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_find_sharing_a_flight_gets_its_own_access_check() {
    // Arrange and act: the owner leads and a stranger joins; then the other
    // way round.
    let (owner_led, stranger_joined) = share_a_flight(OWNER, STRANGER).await;
    let (stranger_led, owner_joined) = share_a_flight(STRANGER, OWNER).await;

    // Assert
    assert_eq!(status(&owner_led), 200);
    assert_eq!(status(&stranger_joined), 404, "not the leader's 200");
    assert_eq!(status(&stranger_led), 404);
    assert_eq!(status(&owner_joined), 200, "not the leader's 404");
    assert_eq!(json_body(&owner_joined)["email"], "private@example.com");
    assert_eq!(header(&owner_joined, "x-cache"), Some("hit"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finds_sharing_a_flight_that_answers_a_kept_entry_each_answer_it_stale_with_its_age() {
    // Arrange: an entry past its freshness; the instance reaches Postgres
    // through a proxy that swallows everything, so each flight's refresh
    // waits out the soft timeout.
    let env = TestEnv::with_settings(&[
        ("CACHE_TTL_SECONDS", "1"),
        ("CACHE_EAGER_REFRESH_PERCENT", "0"),
        ("CACHE_FAIL_SAFE_TIMEOUT_MS", "300"),
    ])
    .await;
    let id = create_user(&env.state, "kept@example.com", "Kept").await;
    find(&env.state, request_for("find-user.v2", id)).await;
    let proxy = test_support::proxy::FaultProxy::start(env.postgres_addr()).await;
    let url = env.database_url_through(proxy.port);
    let instance = Arc::new(env.instance(&[("DATABASE_URL", &url)]).await);
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    proxy.set(test_support::proxy::Mode::BlackHole);

    // Act: one find runs a flight; three more gather for the next one.
    let first = spawn_find(&instance, request_for("find-user.v2", id));
    tokio::time::sleep(Duration::from_millis(50)).await;
    let others: Vec<_> = (0..3)
        .map(|_| spawn_find(&instance, request_for("find-user.v2", id)))
        .collect();
    until_flight_waits(&instance, 3).await;
    let mut found = vec![first.await.expect("first")];
    for task in others {
        found.push(task.await.expect("find"));
    }

    // Assert
    for response in &found {
        assert_eq!(status(response), 200);
        assert_eq!(header(response, "x-cache"), Some("stale"));
        assert!(header(response, "age").is_some(), "an Age header");
        assert_eq!(json_body(response)["email"], "kept@example.com");
    }
}
