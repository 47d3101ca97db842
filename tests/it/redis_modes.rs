//! The redis crate, with the features the functions link (`tokio-rustls-comp`,
//! `cluster-async`), against a TLS-only server and a three-primary cluster.

use redis::TlsCertificates;
use redis::cluster::ClusterClient;
use std::collections::HashSet;
use std::time::Duration;
use test_support::redis_modes::{RedisCluster, RedisTlsServer};
use test_support::tls::{TestCa, certificate_error};
use users_api::testing::lookup_command;

const TIMEOUT: Duration = Duration::from_secs(5);

fn tls_client(url: &str, ca_pem: &str) -> redis::Client {
    redis::Client::build_with_tls(
        url,
        TlsCertificates {
            client_tls: None,
            root_cert: Some(ca_pem.as_bytes().to_vec()),
        },
    )
    .expect("client")
}

async fn connect(client: &redis::Client) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
    tokio::time::timeout(TIMEOUT, client.get_multiplexed_async_connection())
        .await
        .expect("connect within 5 s")
}

#[tokio::test]
async fn rediss_with_the_ca_trusted_round_trips_a_value() {
    // Arrange
    let server = RedisTlsServer::start();
    let client = tls_client(&server.url(), &server.ca.cert_pem);

    // Act
    let mut connection = connect(&client).await.unwrap();
    let () = redis::cmd("SET")
        .arg("greeting")
        .arg("hello")
        .query_async(&mut connection)
        .await
        .unwrap();
    let value: String = redis::cmd("GET")
        .arg("greeting")
        .query_async(&mut connection)
        .await
        .unwrap();

    // Assert
    assert_eq!(value, "hello");
}

#[tokio::test]
async fn rediss_refuses_a_server_certificate_from_an_untrusted_ca() {
    // Arrange: another test CA, then the system roots (no root_cert).
    let server = RedisTlsServer::start();
    let clients = [
        (
            "another test CA",
            tls_client(&server.url(), &TestCa::new("some other CA").cert_pem),
        ),
        (
            "the system roots",
            redis::Client::open(server.url()).unwrap(),
        ),
    ];

    for (trusted, client) in &clients {
        // Act
        let Err(error) = connect(client).await else {
            panic!("accepted with {trusted}");
        };

        // Assert
        assert_eq!(
            certificate_error(&error),
            Some(rustls::CertificateError::UnknownIssuer),
            "{trusted}: {error:?}"
        );
    }
}

async fn cluster_connection(cluster: &RedisCluster) -> redis::cluster_async::ClusterConnection {
    let mut builder = ClusterClient::builder(cluster.urls())
        .connection_timeout(TIMEOUT)
        .response_timeout(TIMEOUT);
    if let Some(ca) = &cluster.ca {
        builder = builder.certs(TlsCertificates {
            client_tls: None,
            root_cert: Some(ca.cert_pem.as_bytes().to_vec()),
        });
    }
    let client = builder.build().unwrap();
    tokio::time::timeout(TIMEOUT, client.get_async_connection())
        .await
        .expect("connect within 5 s")
        .unwrap()
}

#[tokio::test]
async fn the_lease_lookup_works_on_keys_of_every_cluster_node() {
    // Arrange
    let cluster = RedisCluster::start();

    // Act and assert
    the_lease_lookup_works_on_every_node_of(cluster).await;
}

#[tokio::test]
async fn the_lease_lookup_works_on_every_node_of_a_tls_cluster() {
    // Arrange
    let cluster = RedisCluster::start_with_tls();

    // Act and assert
    the_lease_lookup_works_on_every_node_of(cluster).await;
}

async fn the_lease_lookup_works_on_every_node_of(cluster: RedisCluster) {
    // Arrange
    let mut connection = cluster_connection(&cluster).await;
    let keys: Vec<String> = (0..30).map(|i| format!("users-api:v1:user:{i}")).collect();

    // Act: the first call on each key takes the lease, the second reads it.
    for key in &keys {
        let token = format!("lease-{key}");
        let first: Option<String> = lookup_command(key, token.as_bytes(), 60_000)
            .query_async(&mut connection)
            .await
            .unwrap();
        assert_eq!(first, None, "{key} was empty");
        let second: Option<String> = lookup_command(key, b"other", 60_000)
            .query_async(&mut connection)
            .await
            .unwrap();

        // Assert
        assert_eq!(second.as_deref(), Some(token.as_str()), "{key}");
    }
    let mut nodes_with_keys = HashSet::new();
    for index in 0..cluster.ports.len() {
        let mut node = connect(&cluster.node_client(index)).await.unwrap();
        let size: u64 = redis::cmd("DBSIZE").query_async(&mut node).await.unwrap();
        if size > 0 {
            nodes_with_keys.insert(index);
        }
    }
    assert_eq!(
        nodes_with_keys.len(),
        3,
        "the keys spread over all three primaries"
    );
}

#[tokio::test]
async fn a_script_on_keys_of_different_slots_is_refused_by_the_cluster() {
    // Arrange: why the cache's scripts touch one key each.
    let cluster = RedisCluster::start();
    let mut connection = cluster_connection(&cluster).await;
    let script = redis::Script::new("return redis.call('MGET', KEYS[1], KEYS[2])");

    // Act
    let result: redis::RedisResult<Vec<Option<String>>> = script
        .key("users-api:v1:user:1")
        .key("users-api:v1:user:2")
        .invoke_async(&mut connection)
        .await;

    // Assert
    let error = result.expect_err("cross-slot script refused");
    assert_eq!(
        error.kind(),
        redis::ErrorKind::Server(redis::ServerErrorKind::CrossSlot),
        "{error:?}"
    );
}
