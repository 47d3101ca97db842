//! The production set-up through the real handlers: Postgres over verified
//! TLS with the password read from the secrets extension at init, Redis over
//! TLS, and Redis Cluster (plain and TLS, as ElastiCache Serverless is). Every
//! server is a private one started by the test on a free loopback port.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use test_support::functions::{find, update};
use test_support::redis_modes::{RedisCluster, RedisTlsServer};
use test_support::secrets_extension::{Behaviour, SecretsExtension};
use test_support::tls::{PostgresTlsServer, TempDir};
use test_support::*;
use users_api::hooks::{PausePoint, Point};
use users_api::{AppState, Config};
use uuid::Uuid;

const TOKEN: &str = "session-token-of-the-test";
const SECRET_ARN: &str = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:users-db-AbCdEf";
const PASSWORD: &str = "pg-password-from-the-secret";

/// A migrated private TLS Postgres that wants `PASSWORD`.
async fn tls_postgres() -> PostgresTlsServer {
    let server = PostgresTlsServer::start_with_password(Some(PASSWORD));
    let tls = users_api::tls::postgres_tls(Some(server.ca_file())).unwrap();
    let url = server.url(&format!("sslmode=require&password={PASSWORD}"));
    let (mut client, connection) = tokio_postgres::connect(&url, tls)
        .await
        .expect("connect over TLS");
    tokio::spawn(connection);
    users_api::migrate::run(&mut client).await.expect("migrate");
    server
}

/// Settings for a function whose password comes from `extension`.
fn with_secret(
    postgres: &PostgresTlsServer,
    extension: &SecretsExtension,
    sslmode: &str,
) -> HashMap<&'static str, String> {
    HashMap::from([
        ("DATABASE_URL", postgres.url(&format!("sslmode={sslmode}"))),
        ("PG_CA_FILE", postgres.ca_file().display().to_string()),
        ("DATABASE_SECRET_ARN", SECRET_ARN.to_owned()),
        ("AWS_SESSION_TOKEN", TOKEN.to_owned()),
        (
            "PARAMETERS_SECRETS_EXTENSION_HTTP_PORT",
            extension.port.to_string(),
        ),
        ("REDIS_URL", redis_url()),
        (
            "CACHE_KEY_PREFIX",
            format!("test-{}", Uuid::new_v4().simple()),
        ),
    ])
}

async fn state_from(settings: &HashMap<&str, String>) -> AppState {
    let config = Config::from_lookup(|name| settings.get(name).cloned()).expect("config");
    AppState::connect(&config).await.expect("init")
}

#[tokio::test]
async fn functions_reach_postgres_over_verified_tls_with_the_password_from_the_secrets_extension() {
    // Arrange
    let postgres = tls_postgres().await;
    let secret = format!(r#"{{"username":"postgres","password":"{PASSWORD}"}}"#);
    let extension =
        SecretsExtension::start(TOKEN, &[(SECRET_ARN, secret.as_str())], Behaviour::Normal).await;
    let settings = with_secret(&postgres, &extension, "verify-full");
    let prefix = settings["CACHE_KEY_PREFIX"].clone();

    // Act
    let state = state_from(&settings).await;
    let id = create_user(&state, "tls@example.com", "Over TLS").await;
    let miss = find(&state, request_for("find-user.v2", id)).await;
    let hit = find(&state, request_for("find-user.v2", id)).await;

    // Assert
    assert_eq!(header(&miss, "x-cache"), Some("miss"));
    assert_eq!(header(&hit, "x-cache"), Some("hit"));
    assert_eq!(json_body(&hit)["email"], "tls@example.com");
    let seen = extension.seen();
    assert_eq!(seen.len(), 1, "read once, at init");
    assert_eq!(seen[0].token.as_deref(), Some(TOKEN));
    delete_keys(&redis_url(), &format!("{prefix}:*")).await;
}

#[tokio::test]
async fn an_untrusted_postgres_certificate_is_refused_and_requests_answer_503() {
    // Arrange
    let postgres = tls_postgres().await;
    let settings = HashMap::from([
        (
            "DATABASE_URL",
            postgres.url(&format!("sslmode=require&password={PASSWORD}")),
        ),
        ("REDIS_URL", redis_url()),
        (
            "CACHE_KEY_PREFIX",
            format!("test-{}", Uuid::new_v4().simple()),
        ),
        // Far above the bound below: a handshake that hung instead of being
        // refused would run into this timeout and fail the test.
        ("PG_CONNECT_TIMEOUT_MS", "10000".to_owned()),
    ]);

    // Act
    let state = state_from(&settings).await;
    let started = Instant::now();
    let found = find(&state, request_for("find-user.v2", Uuid::now_v7())).await;
    let elapsed = started.elapsed();

    // Assert
    assert_eq!(
        status(&found),
        503,
        "the test CA is not among the trusted roots"
    );
    // A refused certificate takes no timeout: well within 3 s, where a hung
    // handshake would wait for the 10 s connect timeout.
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
}

#[tokio::test]
async fn a_wrong_secret_fails_requests_and_a_missing_one_fails_init_without_leaking_it() {
    // Arrange
    let postgres = tls_postgres().await;
    let extension = SecretsExtension::start(
        TOKEN,
        &[(SECRET_ARN, "not-the-password")],
        Behaviour::Normal,
    )
    .await;
    let mut settings = with_secret(&postgres, &extension, "require");

    // Act
    let state = state_from(&settings).await;
    let found = find(&state, request_for("find-user.v2", Uuid::now_v7())).await;
    settings.insert(
        "DATABASE_SECRET_ARN",
        "arn:aws:secretsmanager:eu-west-1:1:secret:unknown".to_owned(),
    );
    let config = Config::from_lookup(|name| settings.get(name).cloned()).unwrap();
    let init = AppState::connect(&config).await;

    // Assert
    assert_eq!(status(&found), 503);
    let message = init
        .err()
        .expect("init fails without the password")
        .to_string();
    assert!(message.contains("secrets extension"), "{message}");
    assert!(
        !message.contains("not-the-password") && !message.contains(TOKEN),
        "{message}"
    );
}

#[tokio::test]
async fn functions_use_a_tls_redis_that_they_verify() {
    // Arrange
    let redis = RedisTlsServer::start();
    let dir = TempDir::new("redis-ca");
    let ca_file = dir.write("ca.pem", &redis.ca.cert_pem);
    let env = TestEnv::with_settings(&[
        ("REDIS_URL", &redis.url()),
        ("REDIS_CA_FILE", ca_file.to_str().unwrap()),
    ])
    .await;
    let untrusted = env.instance(&[("REDIS_CA_FILE", "")]).await;
    let id = create_user(&env.state, "rediss@example.com", "Redis TLS").await;

    // Act
    let miss = find(&env.state, request_for("find-user.v2", id)).await;
    let hit = find(&env.state, request_for("find-user.v2", id)).await;
    let refused = find(&untrusted, request_for("find-user.v2", id)).await;

    // Assert
    assert_eq!(header(&miss, "x-cache"), Some("miss"));
    assert_eq!(header(&hit, "x-cache"), Some("hit"));
    assert_eq!(
        header(&refused, "x-cache"),
        Some("bypass"),
        "system roots do not trust the test CA"
    );
}

/// Cache-aside, invalidation and the fill lease on a cluster: the scripts
/// touch one key each, so every slot's primary can run them.
async fn exercise_cluster(cluster: &RedisCluster, extra: &[(&str, &str)]) {
    // Arrange
    let seeds = cluster.urls().join(",");
    let mut settings = vec![("REDIS_URL", seeds.as_str()), ("REDIS_CLUSTER", "true")];
    settings.extend_from_slice(extra);
    let env = TestEnv::with_settings(&settings).await;
    let pause = Arc::new(PausePoint::default());
    let mut reader = env.instance(&[]).await;
    reader.users.pause_at(Point::BeforeFill, pause.clone());
    let mut ids = Vec::new();
    for n in 0..6 {
        ids.push(create_user(&env.state, &format!("c{n}@example.com"), "Clustered").await);
    }

    // Act and assert: cache-aside on keys spread over the slots.
    for &id in &ids {
        let miss = find(&env.state, request_for("find-user.v2", id)).await;
        let hit = find(&env.state, request_for("find-user.v2", id)).await;
        assert_eq!(header(&miss, "x-cache"), Some("miss"), "user {id}");
        assert_eq!(header(&hit, "x-cache"), Some("hit"), "user {id}");
    }

    // Arrange: an update empties the key, so the parked find below misses.
    let id = ids[0];
    let emptied = update(&env.state, request_for("update-user.v2", id)).await;
    assert_eq!(status(&emptied), 200);
    let update_id = async {
        pause.reached().await;
        let body = serde_json::json!({"email": "c0@example.com", "name": "Renamed"});
        let updated = update(&env.state, with_body("update-user.v2", id, &body)).await;
        pause.release();
        updated
    };

    // Act: a find parked before its fill while another update runs.
    let (parked, updated) = tokio::join!(find(&reader, request_for("find-user.v2", id)), update_id);

    // Assert
    assert_eq!(status(&updated), 200);
    assert_eq!(status(&parked), 200);
    let after = find(&env.state, request_for("find-user.v2", id)).await;
    assert_eq!(
        json_body(&after)["name"],
        "Renamed",
        "the parked fill was refused"
    );
}

#[tokio::test]
async fn functions_use_a_redis_cluster() {
    // Arrange
    let cluster = RedisCluster::start();

    // Act and assert
    exercise_cluster(&cluster, &[]).await;
}

#[tokio::test]
async fn functions_use_a_tls_redis_cluster_like_elasticache_serverless() {
    // Arrange
    let cluster = RedisCluster::start_with_tls();
    let dir = TempDir::new("cluster-ca");
    let ca_file = dir.write("ca.pem", &cluster.ca.as_ref().unwrap().cert_pem);

    // Act and assert
    exercise_cluster(&cluster, &[("REDIS_CA_FILE", ca_file.to_str().unwrap())]).await;
}
