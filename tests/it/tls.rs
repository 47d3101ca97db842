//! Postgres over TLS with the production connector (`users_api::tls`),
//! against a private server that accepts TLS connections only.

use rustls::CertificateError;
use test_support::tls::{PostgresTlsServer, TempDir, TestCa, certificate_error};
use tokio_postgres::Config;
use users_api::tls::postgres_tls;

async fn connect(
    config: &Config,
    ca_file: Option<&std::path::Path>,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let tls = postgres_tls(ca_file).expect("TLS configuration");
    let connect = config.connect(tls);
    let (client, connection) = tokio::time::timeout(std::time::Duration::from_secs(10), connect)
        .await
        .expect("connect within 10 s")?;
    tokio::spawn(connection);
    Ok(client)
}

#[tokio::test]
async fn sslmode_require_with_the_ca_bundle_connects_over_tls() {
    // Arrange
    let server = PostgresTlsServer::start();
    let config: Config = server.url("sslmode=require").parse().unwrap();

    // Act
    let client = connect(&config, Some(server.ca_file())).await.unwrap();
    let ssl: bool = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0);

    // Assert
    assert!(ssl, "pg_stat_ssl says the connection is not encrypted");
}

#[tokio::test]
async fn a_server_certificate_from_an_unknown_ca_is_refused() {
    // Arrange: Mozilla's roots only, then a bundle with another test CA.
    let server = PostgresTlsServer::start();
    let config: Config = server.url("sslmode=require").parse().unwrap();
    let other = TempDir::new("other-ca");
    let other_ca = other.write("ca.pem", &TestCa::new("some other CA").cert_pem);

    for (trusted, ca_file) in [
        ("the system roots", None),
        ("another test CA", Some(other_ca.as_path())),
    ] {
        // Act
        let Err(error) = connect(&config, ca_file).await else {
            panic!("accepted with {trusted}");
        };

        // Assert
        assert_eq!(
            certificate_error(&error),
            Some(CertificateError::UnknownIssuer),
            "{trusted}: {error:?}"
        );
    }
}

#[tokio::test]
async fn sslmode_prefer_does_not_fall_back_to_plain_text_when_the_certificate_is_refused() {
    // Arrange: the server offers TLS; only the certificate is wrong.
    let server = PostgresTlsServer::start();
    let config: Config = server.url("sslmode=prefer").parse().unwrap();

    // Act
    let error = connect(&config, None).await.expect_err("refused");

    // Assert
    assert_eq!(
        certificate_error(&error),
        Some(CertificateError::UnknownIssuer),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_trusted_certificate_for_another_host_name_is_refused() {
    // Arrange: dial 127.0.0.1 but verify as db.example.com (libpq's
    // `require` would accept this; rustls checks the name, like `verify-full`).
    let server = PostgresTlsServer::start();
    let mut config = Config::new();
    config
        .host("db.example.com")
        .hostaddr("127.0.0.1".parse().unwrap())
        .port(server.port)
        .user("postgres")
        .ssl_mode(tokio_postgres::config::SslMode::Require);

    // Act
    let error = connect(&config, Some(server.ca_file()))
        .await
        .expect_err("refused");

    // Assert
    assert!(
        matches!(
            certificate_error(&error),
            Some(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }
            )
        ),
        "{error:?}"
    );
}

#[tokio::test]
async fn without_tls_the_server_refuses_the_connection() {
    // Arrange: proves the private server's pg_hba has no plain `host` line,
    // so the successful connections above used TLS.
    let server = PostgresTlsServer::start();

    // Act
    let result =
        tokio_postgres::connect(&server.url("sslmode=disable"), tokio_postgres::NoTls).await;

    // Assert
    let Err(error) = result else {
        panic!("a plain connection was accepted");
    };
    assert_eq!(
        error.code(),
        Some(&tokio_postgres::error::SqlState::INVALID_AUTHORIZATION_SPECIFICATION),
        "{error:?}"
    );
}
