//! Test support shared by the suite and the benchmarks: an isolated world per
//! test (its own Postgres schema, its own Redis key prefix, both removed on
//! drop), the event fixtures of `events/`, and calls into the real handlers.
//!
//! The services are the real local ones: `TEST_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`; the suite creates and uses a
//! database `users_api_test` beside it) and `TEST_REDIS_URL` (default
//! `redis://127.0.0.1:6379`).

use lambda_http::{Body, Request, Response};
use std::collections::HashMap;
use std::path::PathBuf;
use tokio_postgres::NoTls;
use users_api::{AppState, Config};
use uuid::Uuid;

pub mod capture;
pub mod contract;
pub mod functions;
pub mod otlp;
pub mod postgres_server;
pub mod proxy;
pub mod redis_modes;
pub mod replication;
pub mod runtime_stub;
pub mod secrets_extension;
pub mod servers;
pub mod tls;

/// The user id written in the find/update/delete fixtures; tests replace it.
pub const FIXTURE_ID: &str = "0190f0c2-1111-7000-8000-000000000001";

/// The caller (`sub`) of every fixture's authorizer context.
pub const FIXTURE_SUBJECT: &str = "7d0f3b1e-2c4a-4f6e-9b8d-1a2b3c4d5e6f";

const TEST_DATABASE: &str = "users_api_test";

pub fn admin_database_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

pub fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// The shared Redis's address, for a fault proxy in front of it.
pub fn redis_addr() -> std::net::SocketAddr {
    redis_url()
        .trim_start_matches("redis://")
        .parse()
        .expect("TEST_REDIS_URL is redis://ip:port")
}

/// The URL of the shared test database, with `search_path` set to `schema`.
fn schema_database_url(schema: &str) -> String {
    let admin: tokio_postgres::Config = admin_database_url().parse().expect("TEST_DATABASE_URL");
    let host = match &admin.get_hosts()[0] {
        tokio_postgres::config::Host::Tcp(host) => host.clone(),
        tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
    };
    let port = admin.get_ports().first().copied().unwrap_or(5432);
    let user = admin.get_user().unwrap_or("postgres");
    format!("postgres://{user}@{host}:{port}/{TEST_DATABASE}?options=-c%20search_path%3D{schema}")
}

/// One test's world: a migrated schema, a key prefix and the function state
/// built from them. Dropping it removes the schema and the keys.
pub struct TestEnv {
    pub state: AppState,
    pub schema: String,
    pub key_prefix: String,
    pub settings: HashMap<String, String>,
    pg: tokio_postgres::Client,
}

impl TestEnv {
    pub async fn new() -> Self {
        Self::with_settings(&[]).await
    }

    /// `settings` override the environment the functions would read.
    pub async fn with_settings(overrides: &[(&str, &str)]) -> Self {
        let tag = Uuid::new_v4().simple().to_string();
        let schema = format!("t_{tag}");
        let key_prefix = format!("test-{tag}");
        ensure_test_database().await;
        let pg = connect(&schema_database_url("public")).await;
        pg.batch_execute(&format!("CREATE SCHEMA {schema}"))
            .await
            .expect("create schema");
        let mut migrator = connect(&schema_database_url(&schema)).await;
        users_api::migrate::run(&mut migrator)
            .await
            .expect("migrate");
        let settings = test_settings(schema_database_url(&schema), &key_prefix, overrides);
        let state = state_from(&settings).await;
        Self {
            state,
            schema,
            key_prefix,
            settings,
            pg,
        }
    }

    /// Another function instance on the same database and key prefix, as a
    /// second Lambda sandbox would be: its own pool and Redis connection.
    pub async fn instance(&self, overrides: &[(&str, &str)]) -> AppState {
        let mut settings = self.settings.clone();
        for (key, value) in overrides {
            settings.insert((*key).to_owned(), (*value).to_owned());
        }
        state_from(&settings).await
    }

    /// A direct Postgres connection into this test's schema, for assertions.
    pub fn pg(&self) -> &tokio_postgres::Client {
        &self.pg
    }

    pub async fn row_count(&self) -> i64 {
        self.pg
            .query_one(&format!("SELECT count(*) FROM {}.users", self.schema), &[])
            .await
            .expect("count")
            .get(0)
    }

    /// A Postgres connection of its own into this test's schema: a writer
    /// outside the API.
    pub async fn own_pg(&self) -> tokio_postgres::Client {
        connect(&self.settings["DATABASE_URL"]).await
    }

    /// The name stored in Postgres for user `id`.
    pub async fn stored_name(&self, id: Uuid) -> String {
        self.stored("name", id).await
    }

    /// The email stored in Postgres for user `id`.
    pub async fn stored_email(&self, id: Uuid) -> String {
        self.stored("email", id).await
    }

    /// A text `column` of user `id`'s row.
    async fn stored(&self, column: &str, id: Uuid) -> String {
        let sql = format!("SELECT {column} FROM {}.users WHERE id = $1", self.schema);
        self.pg
            .query_one(&sql, &[&id])
            .await
            .expect("the user's row")
            .get(0)
    }

    /// A direct Redis connection, for assertions on the cache.
    pub async fn redis(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.settings["REDIS_URL"].as_str())
            .expect("redis url")
            .get_multiplexed_async_connection()
            .await
            .expect("redis connection")
    }

    /// The address of the test Postgres, to put a fault proxy in front of it.
    pub fn postgres_addr(&self) -> std::net::SocketAddr {
        let admin: tokio_postgres::Config =
            admin_database_url().parse().expect("TEST_DATABASE_URL");
        let port = admin.get_ports().first().copied().unwrap_or(5432);
        std::net::SocketAddr::from(([127, 0, 0, 1], port))
    }

    /// This test's `DATABASE_URL`, but through `127.0.0.1:port` (a proxy).
    pub fn database_url_through(&self, port: u16) -> String {
        let url = &self.settings["DATABASE_URL"];
        let path = &url[url.find('/').map(|i| i + 2).unwrap_or(0)..];
        let path = &path[path.find('/').unwrap_or(path.len())..];
        format!("postgres://postgres@127.0.0.1:{port}{path}")
    }

    pub fn cache_key(&self, id: Uuid) -> String {
        self.state.users.cache().key(id)
    }

    /// What Redis holds for user `id`'s key, as text.
    pub async fn cached(&self, id: Uuid) -> Option<String> {
        self.redis_text(&self.cache_key(id)).await
    }

    /// What Redis holds at `key`, as text (entries' bodies are JSON).
    pub async fn redis_text(&self, key: &str) -> Option<String> {
        let mut redis = self.redis().await;
        let value: Option<Vec<u8>> = redis::AsyncCommands::get(&mut redis, key)
            .await
            .expect("redis get");
        value.map(|value| String::from_utf8_lossy(&value).into_owned())
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        let schema = self.schema.clone();
        let prefix = self.key_prefix.clone();
        let redis = self.settings["REDIS_URL"].clone();
        // Drop runs inside the test's runtime; clean up from a thread of our own.
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let pg = connect(&schema_database_url("public")).await;
                let _ = pg
                    .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                    .await;
                // A proxied or private Redis may be gone by now; keys that
                // went through a proxy live in the shared one.
                delete_keys(&redis, &format!("{prefix}:*")).await;
                if redis != redis_url() {
                    delete_keys(&redis_url(), &format!("{prefix}:*")).await;
                }
            });
        });
        let _ = cleanup.join();
    }
}

/// The settings a test's functions read: its database and key prefix, the
/// shared Redis with bounds generous on a loaded 2-core CI machine (fault
/// tests set their own), then `overrides`.
pub fn test_settings(
    database_url: String,
    key_prefix: &str,
    overrides: &[(&str, &str)],
) -> HashMap<String, String> {
    let mut settings: HashMap<String, String> = [
        ("DATABASE_URL", database_url),
        ("REDIS_URL", redis_url()),
        ("CACHE_KEY_PREFIX", key_prefix.to_owned()),
        ("REDIS_RESPONSE_TIMEOUT_MS", "1000".to_owned()),
        ("REDIS_CONNECT_TIMEOUT_MS", "1000".to_owned()),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_owned(), value))
    .collect();
    for (key, value) in overrides {
        settings.insert((*key).to_owned(), (*value).to_owned());
    }
    settings
}

/// A function's state built from `settings`, as its cold start builds it.
pub async fn state_from(settings: &HashMap<String, String>) -> AppState {
    let config = Config::from_lookup(|name| settings.get(name).cloned()).expect("config");
    AppState::connect(&config).await.expect("state")
}

/// Deletes the keys matching `pattern` (never the whole Redis).
pub async fn delete_keys(redis_url: &str, pattern: &str) {
    let Ok(client) = redis::Client::open(redis_url) else {
        return;
    };
    let connect = client.get_multiplexed_async_connection();
    let Ok(Ok(mut connection)) =
        tokio::time::timeout(std::time::Duration::from_secs(2), connect).await
    else {
        return;
    };
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut connection)
            .await
            .unwrap_or((0, Vec::new()));
        if !keys.is_empty() {
            let _: redis::RedisResult<()> = redis::cmd("DEL")
                .arg(&keys)
                .query_async(&mut connection)
                .await;
        }
        if next == 0 {
            break;
        }
        cursor = next;
    }
}

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .expect("connect to test Postgres");
    tokio::spawn(connection);
    client
}

/// Creates the suite's own database once; parallel test processes may race
/// on it, and losing the race is fine.
async fn ensure_test_database() {
    let admin = connect(&admin_database_url()).await;
    let exists = admin
        .query_opt(
            "SELECT 1 FROM pg_database WHERE datname = $1",
            &[&TEST_DATABASE],
        )
        .await
        .expect("query pg_database")
        .is_some();
    if exists {
        return;
    }
    if let Err(error) = admin
        .batch_execute(&format!("CREATE DATABASE {TEST_DATABASE}"))
        .await
    {
        let raced = error.code().is_some_and(|code| {
            *code == tokio_postgres::error::SqlState::DUPLICATE_DATABASE
                || *code == tokio_postgres::error::SqlState::UNIQUE_VIOLATION
        });
        assert!(raced, "create test database: {error}");
    }
}

pub fn events_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../events")
}

/// The fixture `events/{name}.json` as text.
pub fn fixture(name: &str) -> String {
    let path = events_dir().join(format!("{name}.json"));
    std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

/// Parses fixture text as API Gateway does it reach the function.
pub fn request_from(text: &str) -> Request {
    lambda_http::request::from_str(text).expect("fixture parses as an API Gateway event")
}

/// The fixture `name` aimed at user `id`.
pub fn request_for(name: &str, id: Uuid) -> Request {
    request_from(&fixture(name).replace(FIXTURE_ID, &id.to_string()))
}

/// The fixture `name` with its JSON body replaced by `body`.
pub fn with_body(name: &str, id: Uuid, body: &serde_json::Value) -> Request {
    let mut event: serde_json::Value =
        serde_json::from_str(&fixture(name).replace(FIXTURE_ID, &id.to_string())).expect("json");
    event["body"] = serde_json::Value::String(body.to_string());
    request_from(&event.to_string())
}

/// Who a request comes from, as API Gateway's authorizer would say.
#[derive(Debug, Clone, Copy)]
pub enum Caller<'a> {
    /// No authorizer context at all.
    Anonymous,
    /// A verified `subject` whose token carries `scopes`.
    Verified {
        subject: &'a str,
        scopes: &'a [&'a str],
    },
}

/// The fixture `name` aimed at user `id`, coming from `caller`: the claims
/// of its authorizer context (v2: `jwt.claims` and `jwt.scopes`; v1: the
/// Cognito `claims`) replaced, or the context removed.
pub fn request_as(name: &str, id: Uuid, caller: Caller<'_>) -> Request {
    request_with(name, id, caller, None)
}

/// [`request_as`], with the JSON body replaced by `body` when given.
pub fn request_with(
    name: &str,
    id: Uuid,
    caller: Caller<'_>,
    body: Option<&serde_json::Value>,
) -> Request {
    let text = event_as(&fixture(name).replace(FIXTURE_ID, &id.to_string()), caller);
    let Some(body) = body else {
        return request_from(&text);
    };
    let mut event: serde_json::Value = serde_json::from_str(&text).expect("fixture JSON");
    event["body"] = serde_json::Value::String(body.to_string());
    request_from(&event.to_string())
}

/// `event` (fixture text) coming from `caller`; see [`request_as`].
pub fn event_as(event: &str, caller: Caller<'_>) -> String {
    let mut event: serde_json::Value = serde_json::from_str(event).expect("fixture JSON");
    let context = event["requestContext"]
        .as_object_mut()
        .expect("requestContext");
    let v2 = context.contains_key("http");
    match caller {
        Caller::Anonymous => {
            context.remove("authorizer");
        }
        Caller::Verified { subject, scopes } => {
            let mut claims = serde_json::json!({
                "sub": subject,
                "scope": scopes.join(" "),
                "iss": "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_EXAMPLE",
                "client_id": "example-client-id",
                "token_use": "access",
            });
            if subject.is_empty() {
                claims.as_object_mut().expect("claims").remove("sub");
            }
            let authorizer = if v2 {
                serde_json::json!({"jwt": {"claims": claims, "scopes": scopes}})
            } else {
                serde_json::json!({"claims": claims})
            };
            context.insert("authorizer".to_owned(), authorizer);
        }
    }
    event.to_string()
}

/// Creates a user through the real `create-user` handler; returns its id.
pub async fn create_user(state: &AppState, email: &str, name: &str) -> Uuid {
    let body = serde_json::json!({"email": email, "name": name});
    let response = functions::create(state, with_body("create-user.v2", Uuid::nil(), &body)).await;
    created_id(&response)
}

/// The id of the user a 201 response created.
pub fn created_id(response: &Response<Body>) -> Uuid {
    assert_eq!(status(response), 201, "{:?}", response.body());
    json_body(response)["id"]
        .as_str()
        .and_then(|id| id.parse().ok())
        .expect("a user id")
}

pub fn status(response: &Response<Body>) -> u16 {
    response.status().as_u16()
}

pub fn json_body(response: &Response<Body>) -> serde_json::Value {
    serde_json::from_slice(response.body().as_ref()).expect("response body is JSON")
}

pub fn header<'a>(response: &'a Response<Body>, name: &str) -> Option<&'a str> {
    response
        .headers()
        .get(name)
        .and_then(|value| value.to_str().ok())
}
