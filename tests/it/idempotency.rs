//! Retry-safe writes: an `Idempotency-Key` makes a repeat of a create, update
//! or delete answer the first request's answer instead of writing again,
//! through the real handlers, v1 and v2 events, on the real Postgres and
//! Redis.

use lambda_http::http::HeaderValue;
use lambda_http::{Body, Request, Response};
use serde_json::json;
use std::sync::Arc;
use test_support::functions;
use test_support::{Caller, FIXTURE_SUBJECT, TestEnv, header, json_body, status};
use users_api::AppState;
use users_api::hooks::{PausePoint, Point};
use uuid::Uuid;

const VERSIONS: [&str; 2] = ["v1", "v2"];

fn owner() -> Caller<'static> {
    Caller::Verified {
        subject: FIXTURE_SUBJECT,
        scopes: &["users/read", "users/write"],
    }
}

/// The fixture `name` (`{function}.{version}`) for user `id` from `caller`,
/// with `body` when given and `key` as its Idempotency-Key.
fn keyed(
    name: &str,
    id: Uuid,
    caller: Caller<'_>,
    body: Option<serde_json::Value>,
    key: &[u8],
) -> Request {
    let mut request = test_support::request_with(name, id, caller, body.as_ref());
    request.headers_mut().insert(
        "idempotency-key",
        HeaderValue::from_bytes(key).expect("a header value"),
    );
    request
}

fn ada(name: &str) -> serde_json::Value {
    json!({"email": "ada@example.com", "name": name})
}

async fn create(
    state: &AppState,
    version: &str,
    key: &[u8],
    body: serde_json::Value,
) -> Response<Body> {
    let request = keyed(
        &format!("create-user.{version}"),
        Uuid::nil(),
        owner(),
        Some(body),
        key,
    );
    functions::create(state, request).await
}

/// Everything a client sees of an answer but the replay header.
fn seen(response: &Response<Body>) -> (u16, Vec<u8>, Option<String>, Option<String>) {
    (
        status(response),
        response.body().to_vec(),
        header(response, "location").map(str::to_owned),
        header(response, "etag").map(str::to_owned),
    )
}

/// Waits until a request is parked at `pause`, for 10 s at most.
async fn reached(pause: &PausePoint) {
    tokio::time::timeout(std::time::Duration::from_secs(10), pause.reached())
        .await
        .expect("a request reached the pause point before its commit");
}

async fn records(env: &TestEnv) -> i64 {
    let sql = format!("SELECT count(*) FROM {}.idempotency_keys", env.schema);
    env.pg().query_one(&sql, &[]).await.unwrap().get(0)
}

#[tokio::test]
async fn a_retry_after_a_lost_answer_replays_the_same_201_and_id_with_one_row() {
    for version in VERSIONS {
        // Arrange
        let env = TestEnv::new().await;
        let first = create(&env.state, version, b"create-1", ada("Ada")).await;

        // Act: the client never saw `first` and sends the same request again.
        let retry = create(&env.state, version, b"create-1", ada("Ada")).await;

        // Assert
        assert_eq!(status(&first), 201, "{version}: {:?}", first.body());
        assert_eq!(seen(&retry), seen(&first), "{version}");
        assert_eq!(header(&first, "idempotent-replayed"), None, "{version}");
        assert_eq!(
            header(&retry, "idempotent-replayed"),
            Some("true"),
            "{version}"
        );
        assert_eq!(
            header(&retry, "content-type"),
            Some("application/json"),
            "{version}"
        );
        assert_eq!(env.row_count().await, 1, "{version}");
        assert_eq!(records(&env).await, 1, "{version}");
    }
}

#[tokio::test]
async fn the_same_key_with_another_request_is_422_and_writes_nothing() {
    for version in VERSIONS {
        // Arrange
        let env = TestEnv::new().await;
        let first = create(&env.state, version, b"k", ada("Ada")).await;
        let id = test_support::created_id(&first);

        // Act
        let other_body = create(&env.state, version, b"k", ada("Ada King")).await;
        let other_route = functions::update(
            &env.state,
            keyed(
                &format!("update-user.{version}"),
                id,
                owner(),
                Some(ada("Ada")),
                b"k",
            ),
        )
        .await;

        // Assert
        for (case, response) in [
            ("another body", &other_body),
            ("another route", &other_route),
        ] {
            assert_eq!(
                status(response),
                422,
                "{version}, {case}: {:?}",
                response.body()
            );
            assert_eq!(
                json_body(response)["code"],
                "idempotency_key_reused",
                "{version}, {case}"
            );
        }
        assert_eq!(env.row_count().await, 1, "{version}");
        assert_eq!(
            json_body(
                &functions::find(
                    &env.state,
                    test_support::request_for(&format!("find-user.{version}"), id)
                )
                .await
            )["name"],
            "Ada",
            "{version}"
        );
    }
}

#[tokio::test]
async fn a_retried_put_moves_the_version_once_and_touches_no_cache_entry() {
    for version in VERSIONS {
        // Arrange
        let env = TestEnv::new().await;
        let id = test_support::created_id(&create(&env.state, version, b"c", ada("Ada")).await);
        let put = || {
            keyed(
                &format!("update-user.{version}"),
                id,
                owner(),
                Some(ada("Ada King")),
                b"put-1",
            )
        };
        let first = functions::update(&env.state, put()).await;
        let find = || test_support::request_for(&format!("find-user.{version}"), id);
        let filled = functions::find(&env.state, find()).await;

        // Act
        let retry = functions::update(&env.state, put()).await;
        let after = functions::find(&env.state, find()).await;

        // Assert
        assert_eq!(status(&first), 200, "{version}: {:?}", first.body());
        assert_eq!(header(&first, "etag"), Some("\"2\""), "{version}");
        assert_eq!(seen(&retry), seen(&first), "{version}");
        assert_eq!(
            header(&retry, "idempotent-replayed"),
            Some("true"),
            "{version}"
        );
        assert_eq!(header(&filled, "x-cache"), Some("miss"), "{version}");
        assert_eq!(
            header(&after, "x-cache"),
            Some("hit"),
            "{version}: the replay left the entry"
        );
        let version_stored: i64 = env
            .pg()
            .query_one(
                &format!("SELECT version FROM {}.users WHERE id = $1", env.schema),
                &[&id],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(version_stored, 2, "{version}");
    }
}

#[tokio::test]
async fn a_retried_delete_answers_204_twice() {
    for version in VERSIONS {
        // Arrange
        let env = TestEnv::new().await;
        let id = test_support::created_id(&create(&env.state, version, b"c", ada("Ada")).await);
        let delete = || {
            keyed(
                &format!("delete-user.{version}"),
                id,
                owner(),
                None,
                b"delete-1",
            )
        };

        // Act
        let first = functions::delete(&env.state, delete()).await;
        let retry = functions::delete(&env.state, delete()).await;
        let unkeyed = functions::delete(
            &env.state,
            test_support::request_for(&format!("delete-user.{version}"), id),
        )
        .await;

        // Assert
        assert_eq!(status(&first), 204, "{version}");
        assert_eq!(status(&retry), 204, "{version}");
        assert_eq!(
            header(&retry, "idempotent-replayed"),
            Some("true"),
            "{version}"
        );
        assert_eq!(
            status(&unkeyed),
            404,
            "{version}: without the key, as before"
        );
        assert_eq!(env.row_count().await, 0, "{version}");
    }
}

#[tokio::test]
async fn an_expired_key_executes_anew_and_keyed_writes_sweep_expired_records() {
    // Arrange: one answer recorded, then expired; and 40 expired records.
    let env = TestEnv::new().await;
    let first = create(&env.state, "v2", b"old", ada("Ada")).await;
    let expire = format!(
        "UPDATE {}.idempotency_keys SET expires_at = now() - interval '1 second'",
        env.schema
    );
    env.pg().execute(&expire, &[]).await.unwrap();
    let stale = format!(
        "INSERT INTO {}.idempotency_keys (subject, key, fingerprint, status, body, expires_at) \
         SELECT 'someone', 'k' || n, '', 201, '', now() - interval '1 hour' FROM generate_series(1, 40) n",
        env.schema
    );
    env.pg().execute(&stale, &[]).await.unwrap();

    // Act
    let again = create(
        &env.state,
        "v2",
        b"old",
        json!({"email": "ada2@example.com", "name": "Ada"}),
    )
    .await;

    // Assert
    assert_eq!(status(&again), 201, "{:?}", again.body());
    assert_eq!(header(&again, "idempotent-replayed"), None);
    assert_ne!(
        test_support::created_id(&again),
        test_support::created_id(&first)
    );
    assert_eq!(env.row_count().await, 2);
    // 41 expired: the write removed the 16 oldest, no more, and took the
    // expired record of its own key over in place.
    assert_eq!(records(&env).await, 41 - 16);
}

#[tokio::test]
async fn a_malformed_key_is_400_and_writes_nothing() {
    // Arrange
    let env = TestEnv::new().await;
    let too_long = vec![b'k'; 256];

    for (case, key) in [
        ("empty", &b""[..]),
        ("256 characters", &too_long[..]),
        ("a tab", b"a\tb"),
        ("not ASCII", "clé".as_bytes()),
    ] {
        // Act
        let response = create(&env.state, "v2", key, ada("Ada")).await;

        // Assert
        assert_eq!(status(&response), 400, "{case}: {:?}", response.body());
        assert_eq!(
            json_body(&response)["code"],
            "invalid_idempotency_key",
            "{case}"
        );
    }
    assert_eq!(env.row_count().await, 0);
    assert_eq!(records(&env).await, 0);
}

#[tokio::test]
async fn keys_belong_to_their_caller() {
    // Arrange
    let env = TestEnv::new().await;
    let mine = create(&env.state, "v2", b"shared-key", ada("Ada")).await;
    let someone_else = Caller::Verified {
        subject: "someone-else",
        scopes: &["users/write"],
    };
    let request = keyed(
        "create-user.v2",
        Uuid::nil(),
        someone_else,
        Some(json!({"email": "bob@example.com", "name": "Bob"})),
        b"shared-key",
    );

    // Act
    let theirs = functions::create(&env.state, request).await;

    // Assert
    assert_eq!(status(&theirs), 201, "{:?}", theirs.body());
    assert_eq!(header(&theirs, "idempotent-replayed"), None);
    assert_ne!(
        test_support::created_id(&theirs),
        test_support::created_id(&mine)
    );
    assert_eq!(env.row_count().await, 2);
}

#[tokio::test]
async fn a_repeat_sent_while_the_first_is_in_flight_on_another_instance_waits_and_replays() {
    // Arrange: the first request parked just before its commit.
    let env = TestEnv::new().await;
    let mut first_instance = env.instance(&[]).await;
    let parked = Arc::new(PausePoint::default());
    first_instance
        .users
        .pause_at(Point::BeforeCommit, parked.clone());
    let second_instance = env.instance(&[]).await;

    // Act
    let (first, second) = tokio::join!(
        create(&first_instance, "v2", b"together", ada("Ada")),
        async {
            reached(&parked).await;
            let second = create(&second_instance, "v2", b"together", ada("Ada"));
            let release = async {
                // Let the second reach its wait on the first's record.
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                parked.release();
            };
            tokio::join!(second, release).0
        }
    );

    // Assert
    assert_eq!(status(&first), 201, "{:?}", first.body());
    assert_eq!(seen(&second), seen(&first));
    assert_eq!(header(&second, "idempotent-replayed"), Some("true"));
    assert_eq!(env.row_count().await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_simultaneous_repeats_from_two_instances_create_one_row_without_a_5xx() {
    // Arrange
    let env = TestEnv::new().await;
    let instances = [
        Arc::new(env.instance(&[]).await),
        Arc::new(env.instance(&[]).await),
    ];
    let mut requests = tokio::task::JoinSet::new();

    // Act
    for n in 0..8 {
        let state = instances[n % 2].clone();
        requests.spawn(async move { create(&state, "v2", b"burst", ada("Ada")).await });
    }
    let answers = requests.join_all().await;

    // Assert: one effect; each answer is that effect's 201, or 409 in flight.
    let created: Vec<&Response<Body>> = answers
        .iter()
        .filter(|answer| status(answer) == 201)
        .collect();
    assert!(!created.is_empty());
    for answer in &answers {
        match status(answer) {
            201 => assert_eq!(seen(answer), seen(created[0])),
            409 => assert_eq!(json_body(answer)["code"], "idempotency_key_in_flight"),
            other => panic!("{other}: {:?}", answer.body()),
        }
    }
    assert_eq!(env.row_count().await, 1);
}

#[tokio::test]
async fn the_record_and_the_write_commit_together_or_not_at_all() {
    // Arrange: an instance whose connections we can tell apart, parked before
    // its commit (twice: the store tries a dead connection once more).
    let env = TestEnv::new().await;
    let name = format!("atomic_{}", Uuid::new_v4().simple());
    let url = format!("{}&application_name={name}", env.settings["DATABASE_URL"]);
    let mut state = env.instance(&[("DATABASE_URL", url.as_str())]).await;
    let parked = Arc::new(PausePoint::default());
    state.users.pause_at(Point::BeforeCommit, parked.clone());
    let cut = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
               WHERE application_name = $1 AND state = 'idle in transaction'";

    // Act: cut the connection each time the write is about to commit.
    let (answer, ()) = tokio::join!(create(&state, "v2", b"atomic", ada("Ada")), async {
        for _ in 0..2 {
            reached(&parked).await;
            let cut_off: Vec<tokio_postgres::Row> = env.pg().query(cut, &[&name]).await.unwrap();
            assert_eq!(cut_off.len(), 1, "one connection in the transaction");
            parked.release();
        }
    });

    // Assert
    assert_eq!(status(&answer), 503, "{:?}", answer.body());
    assert_eq!(env.row_count().await, 0);
    assert_eq!(records(&env).await, 0);
}

#[tokio::test]
async fn each_idempotent_fixture_sent_twice_has_one_effect_and_one_answer() {
    for (fixture, operation) in [
        ("create-user.idempotent.v1", Operation::Create),
        ("create-user.idempotent.v2", Operation::Create),
        ("update-user.idempotent.v2", Operation::Update),
        ("delete-user.idempotent.v2", Operation::Delete),
    ] {
        // Arrange: a user for the update and the delete (no key).
        let env = TestEnv::new().await;
        let setup = json!({"email": "setup@example.com", "name": "Setup"});
        let id = test_support::created_id(&create(&env.state, "v2", b"setup", setup).await);
        let rows_before = env.row_count().await;

        // Act
        let first = operation
            .call(&env.state, test_support::request_for(fixture, id))
            .await;
        let second = operation
            .call(&env.state, test_support::request_for(fixture, id))
            .await;

        // Assert
        assert!(status(&first) < 300, "{fixture}: {:?}", first.body());
        assert_eq!(seen(&second), seen(&first), "{fixture}");
        assert_eq!(
            header(&second, "idempotent-replayed"),
            Some("true"),
            "{fixture}"
        );
        let effect = match operation {
            Operation::Create => 1,
            Operation::Update => 0,
            Operation::Delete => -1,
        };
        assert_eq!(env.row_count().await, rows_before + effect, "{fixture}");
    }
}

/// The three keyed writes.
#[derive(Debug, Clone, Copy)]
enum Operation {
    Create,
    Update,
    Delete,
}

impl Operation {
    async fn call(self, state: &AppState, request: Request) -> Response<Body> {
        match self {
            Self::Create => functions::create(state, request).await,
            Self::Update => functions::update(state, request).await,
            Self::Delete => functions::delete(state, request).await,
        }
    }
}
