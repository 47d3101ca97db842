//! Access control (docs/access-control.md): only verified callers, each with
//! its operation's scope, each only to the users it created unless it is an
//! admin. Through the real handlers, REST (v1) and HTTP API (v2) events, on
//! the real Postgres and Redis.

use lambda_http::tracing;
use lambda_http::{Body, Request, Response};
use test_support::capture::Captured;
use test_support::functions;
use test_support::{
    Caller, FIXTURE_SUBJECT, TestEnv, header, json_body, request_as, request_from, request_with,
    status,
};
use users_api::AppState;
use uuid::Uuid;

const VERSIONS: [&str; 2] = ["v1", "v2"];
const READ: &str = "users/read";
const WRITE: &str = "users/write";
const ADMIN: &str = "users/admin";
const OTHER: &str = "9a1c2b3d-other-caller";

/// The owner of the fixtures, with read and write.
fn owner() -> Caller<'static> {
    Caller::Verified {
        subject: FIXTURE_SUBJECT,
        scopes: &[READ, WRITE],
    }
}

/// Somebody else, with read and write but not admin.
fn other() -> Caller<'static> {
    Caller::Verified {
        subject: OTHER,
        scopes: &[READ, WRITE],
    }
}

/// Somebody else, with every scope.
fn admin() -> Caller<'static> {
    Caller::Verified {
        subject: "root-admin",
        scopes: &[READ, WRITE, ADMIN],
    }
}

/// The five operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operation {
    Create,
    Find,
    List,
    Update,
    Delete,
}

impl Operation {
    const ALL: [Operation; 5] = [
        Operation::Create,
        Operation::Find,
        Operation::List,
        Operation::Update,
        Operation::Delete,
    ];

    fn fixture(self, version: &str) -> String {
        let function = match self {
            Self::Create => "create-user",
            Self::Find => "find-user",
            Self::List => "list-users",
            Self::Update => "update-user",
            Self::Delete => "delete-user",
        };
        format!("{function}.{version}")
    }

    /// The scope the operation needs.
    fn scope(self) -> &'static str {
        match self {
            Self::Find => READ,
            Self::List => ADMIN,
            Self::Create | Self::Update | Self::Delete => WRITE,
        }
    }

    async fn call(self, state: &AppState, request: Request) -> Response<Body> {
        match self {
            Self::Create => functions::create(state, request).await,
            Self::Find => functions::find(state, request).await,
            Self::List => functions::list(state, request).await,
            Self::Update => functions::update(state, request).await,
            Self::Delete => functions::delete(state, request).await,
        }
    }

    /// The operation on user `id`, from `caller`, as a `version` event.
    async fn run(
        self,
        state: &AppState,
        version: &str,
        id: Uuid,
        caller: Caller<'_>,
    ) -> Response<Body> {
        let request = request_as(&self.fixture(version), id, caller);
        self.call(state, request).await
    }
}

/// A user created by `caller` through a `version` event.
async fn create_as(env: &TestEnv, version: &str, caller: Caller<'_>, email: &str) -> Uuid {
    let body = serde_json::json!({"email": email, "name": "Owned User"});
    let request = request_with(
        &format!("create-user.{version}"),
        Uuid::nil(),
        caller,
        Some(&body),
    );
    let response = functions::create(&env.state, request).await;
    test_support::created_id(&response)
}

fn assert_error(response: &Response<Body>, expected: u16, code: &str, case: &str) {
    assert_eq!(status(response), expected, "{case}: {:?}", response.body());
    assert_eq!(json_body(response)["code"], code, "{case}");
}

#[tokio::test]
async fn a_request_without_a_verified_caller_is_401_and_changes_nothing() {
    for version in VERSIONS {
        // Arrange
        let env = TestEnv::new().await;
        let id = create_as(&env, version, owner(), "kept@example.com").await;

        for operation in Operation::ALL {
            // Act
            let response = operation
                .run(&env.state, version, id, Caller::Anonymous)
                .await;

            // Assert
            let case = format!("{operation:?} {version}");
            assert_error(&response, 401, "unauthorized", &case);
            assert_eq!(env.row_count().await, 1, "{case}");
            assert_eq!(env.stored_email(id).await, "kept@example.com", "{case}");
        }
    }
}

#[tokio::test]
async fn a_caller_with_an_empty_subject_is_401() {
    for version in VERSIONS {
        // Arrange
        let env = TestEnv::new().await;
        let nobody = Caller::Verified {
            subject: "",
            scopes: &[READ, WRITE, ADMIN],
        };

        // Act
        let response = Operation::Create
            .run(&env.state, version, Uuid::nil(), nobody)
            .await;

        // Assert
        assert_error(&response, 401, "unauthorized", version);
        assert_eq!(env.row_count().await, 0, "{version}");
    }
}

#[tokio::test]
async fn each_operation_without_its_scope_is_403_and_changes_nothing() {
    for version in VERSIONS {
        // Arrange
        let env = TestEnv::new().await;
        let id = create_as(&env, version, owner(), "kept@example.com").await;

        for operation in Operation::ALL {
            let others: Vec<&str> = [READ, WRITE, ADMIN]
                .into_iter()
                .filter(|scope| *scope != operation.scope())
                .collect();
            let lacking = Caller::Verified {
                subject: FIXTURE_SUBJECT,
                scopes: &others,
            };

            // Act
            let response = operation.run(&env.state, version, id, lacking).await;

            // Assert
            let case = format!("{operation:?} {version} without {}", operation.scope());
            assert_error(&response, 403, "forbidden", &case);
            let message = json_body(&response)["message"].to_string();
            assert!(message.contains(operation.scope()), "{case}: {message}");
            assert_eq!(env.row_count().await, 1, "{case}");
            assert_eq!(env.stored_email(id).await, "kept@example.com", "{case}");
        }
    }
}

#[tokio::test]
async fn another_callers_user_is_404_for_find_update_and_delete_and_stays_unchanged() {
    for version in VERSIONS {
        // Arrange: one user cached by its owner's find, one never cached.
        let env = TestEnv::new().await;
        let cached = create_as(&env, version, owner(), "cached@example.com").await;
        let uncached = create_as(&env, version, owner(), "uncached@example.com").await;
        let warm = Operation::Find
            .run(&env.state, version, cached, owner())
            .await;
        assert_eq!(status(&warm), 200, "{version}");
        let missing = Operation::Find
            .run(&env.state, version, Uuid::now_v7(), other())
            .await;

        for (id, email) in [
            (cached, "cached@example.com"),
            (uncached, "uncached@example.com"),
        ] {
            for operation in [Operation::Find, Operation::Update, Operation::Delete] {
                // Act
                let response = operation.run(&env.state, version, id, other()).await;

                // Assert: the same answer as for a user that does not exist.
                let case = format!("{operation:?} {version} of {email}");
                assert_error(&response, 404, "not_found", &case);
                assert_eq!(
                    json_body(&response)["message"],
                    json_body(&missing)["message"]
                        .as_str()
                        .unwrap()
                        .replace(&missing_id(&missing), &id.to_string()),
                    "{case}"
                );
                assert_eq!(header(&response, "x-cache"), None, "{case}");
                assert_eq!(env.stored_email(id).await, email, "{case}");
            }
        }
        assert_eq!(env.row_count().await, 2, "{version}");
    }
}

/// The id named in a 404's message.
fn missing_id(response: &Response<Body>) -> String {
    let message = json_body(response)["message"].as_str().unwrap().to_owned();
    message.rsplit(' ').next().unwrap().to_owned()
}

#[tokio::test]
async fn a_cached_user_is_refused_to_another_caller_without_reading_postgres() {
    for version in VERSIONS {
        // Arrange
        let env = TestEnv::new().await;
        let id = create_as(&env, version, owner(), "hit@example.com").await;
        let first = Operation::Find.run(&env.state, version, id, owner()).await;
        let second = Operation::Find.run(&env.state, version, id, owner()).await;
        assert_eq!(header(&first, "x-cache"), Some("miss"), "{version}");
        assert_eq!(header(&second, "x-cache"), Some("hit"), "{version}");
        let reads = env.state.users.store().reads();

        // Act
        let refused = Operation::Find.run(&env.state, version, id, other()).await;

        // Assert
        assert_error(&refused, 404, "not_found", version);
        assert_eq!(env.state.users.store().reads(), reads, "{version}");
    }
}

#[tokio::test]
async fn the_owner_and_an_admin_find_update_and_delete_the_user() {
    for (version, caller, who) in [
        ("v1", owner(), "the owner"),
        ("v2", owner(), "the owner"),
        ("v1", admin(), "an admin"),
        ("v2", admin(), "an admin"),
    ] {
        // Arrange
        let env = TestEnv::new().await;
        let id = create_as(&env, version, owner(), "reach@example.com").await;
        let case = format!("{who} {version}");

        // Act
        let found = Operation::Find.run(&env.state, version, id, caller).await;
        let cached = Operation::Find.run(&env.state, version, id, caller).await;
        let updated = Operation::Update.run(&env.state, version, id, caller).await;
        let deleted = Operation::Delete.run(&env.state, version, id, caller).await;

        // Assert
        assert_eq!(status(&found), 200, "{case}");
        assert_eq!(header(&cached, "x-cache"), Some("hit"), "{case}");
        assert_eq!(status(&updated), 200, "{case}: {:?}", updated.body());
        assert_eq!(status(&deleted), 204, "{case}");
        assert_eq!(env.row_count().await, 0, "{case}");
    }
}

#[tokio::test]
async fn only_admins_list_users_and_they_see_every_owners() {
    for version in VERSIONS {
        // Arrange
        let env = TestEnv::new().await;
        create_as(&env, version, owner(), "mine@example.com").await;
        create_as(&env, version, other(), "theirs@example.com").await;

        // Act
        let refused = Operation::List
            .run(&env.state, version, Uuid::nil(), owner())
            .await;
        let listed = Operation::List
            .run(&env.state, version, Uuid::nil(), admin())
            .await;

        // Assert
        assert_error(&refused, 403, "forbidden", version);
        assert_eq!(status(&listed), 200, "{version}");
        let emails: Vec<String> = json_body(&listed)["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|user| user["email"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            emails,
            ["mine@example.com", "theirs@example.com"],
            "{version}"
        );
    }
}

#[tokio::test]
async fn a_user_stored_before_access_control_is_reachable_by_admins_only() {
    for version in VERSIONS {
        // Arrange: a row without an owner, as the migration leaves old rows.
        let env = TestEnv::new().await;
        let id = Uuid::now_v7();
        let insert = format!(
            "INSERT INTO {}.users (id, email, name) VALUES ($1, 'old@example.com', 'Old')",
            env.schema
        );
        env.pg().execute(&insert, &[&id]).await.expect("insert");

        // Act
        let by_owner_of_fixtures = Operation::Find.run(&env.state, version, id, owner()).await;
        let cached_for_non_admin = Operation::Find.run(&env.state, version, id, owner()).await;
        let by_admin = Operation::Find.run(&env.state, version, id, admin()).await;
        let updated_by_non_admin = Operation::Update
            .run(&env.state, version, id, owner())
            .await;

        // Assert
        assert_error(&by_owner_of_fixtures, 404, "not_found", version);
        assert_error(&cached_for_non_admin, 404, "not_found", version);
        assert_eq!(status(&by_admin), 200, "{version}");
        assert_eq!(header(&by_admin, "x-cache"), Some("hit"), "{version}");
        assert_error(&updated_by_non_admin, 404, "not_found", version);
        assert_eq!(env.stored_email(id).await, "old@example.com", "{version}");
    }
}

#[tokio::test]
async fn local_headers_name_the_caller_only_when_the_local_setting_is_on() {
    // Arrange
    let captured = Captured::default();
    let _guard = captured.install(tracing::Level::WARN);
    let env = TestEnv::new().await;
    let local = env.instance(&[("AUTH_LOCAL_HEADERS", "true")]).await;
    let anonymous_with_headers = || {
        let mut event: serde_json::Value = serde_json::from_str(&test_support::event_as(
            &test_support::fixture("create-user.v2"),
            Caller::Anonymous,
        ))
        .unwrap();
        event["headers"]["x-local-sub"] = "local-dev".into();
        event["headers"]["x-local-scopes"] = "users/read users/write".into();
        request_from(&event.to_string())
    };

    // Act
    let deployed = functions::create(&env.state, anonymous_with_headers()).await;
    let local_create = functions::create(&local, anonymous_with_headers()).await;
    let id = test_support::created_id(&local_create);
    let as_fixture_owner = Operation::Find.run(&local, "v2", id, owner()).await;

    // Assert
    assert_error(&deployed, 401, "unauthorized", "setting off");
    let stored_owner: Option<String> = env
        .pg()
        .query_one(
            &format!("SELECT owner FROM {}.users WHERE id = $1", env.schema),
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored_owner.as_deref(), Some("local-dev"));
    assert_error(
        &as_fixture_owner,
        404,
        "not_found",
        "a verified context wins",
    );
    let logs = captured.text();
    assert_eq!(
        logs.matches("AUTH_LOCAL_HEADERS is on").count(),
        1,
        "{logs}"
    );
}

#[tokio::test]
async fn the_log_record_names_the_caller_by_its_subject_and_never_the_token() {
    for version in VERSIONS {
        // Arrange
        let captured = Captured::default();
        let _guard = captured.install(tracing::Level::INFO);
        let env = TestEnv::new().await;
        let id = create_as(&env, version, owner(), "logged@example.com").await;
        let token = "eyJhbGciOiJSUzI1NiJ9.c2VjcmV0LXRva2Vu.c2lnbmF0dXJl";
        let mut event: serde_json::Value = serde_json::from_str(&test_support::event_as(
            &test_support::fixture(&format!("find-user.{version}"))
                .replace(test_support::FIXTURE_ID, &id.to_string()),
            owner(),
        ))
        .unwrap();
        event["headers"]["authorization"] = format!("Bearer {token}").into();

        // Act
        let found = functions::find(&env.state, request_from(&event.to_string())).await;

        // Assert
        assert_eq!(status(&found), 200, "{version}");
        let logs = captured.text();
        let record = logs
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .find(|record| record["fields"]["route"] == "GET /users/{id}")
            .unwrap_or_else(|| panic!("{version}: no request record in {logs}"));
        assert_eq!(record["fields"]["subject"], FIXTURE_SUBJECT, "{version}");
        assert!(!logs.contains(token), "{version}: the token leaked: {logs}");
    }
}

#[tokio::test]
async fn the_fixtures_without_a_caller_or_without_admin_are_refused() {
    // Arrange
    let env = TestEnv::new().await;
    let id = create_as(&env, "v2", owner(), "fixture@example.com").await;

    // Act
    let anonymous = functions::find(
        &env.state,
        test_support::request_for("find-user.no-auth.v2", id),
    )
    .await;
    let not_admin = functions::list(
        &env.state,
        test_support::request_for("list-users.no-admin.v2", id),
    )
    .await;

    // Assert
    assert_error(&anonymous, 401, "unauthorized", "find-user.no-auth.v2");
    assert_error(&not_admin, 403, "forbidden", "list-users.no-admin.v2");
}
