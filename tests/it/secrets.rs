//! The database password through the Parameters and Secrets extension's
//! documented protocol, against a local stand-in.

use std::time::{Duration, Instant};
use test_support::secrets_extension::{Behaviour, SecretsExtension};
use users_api::secrets::{SecretsError, apply_password, database_password_from_extension};

const TOKEN: &str = "IQoJb3JpZ2luX2VjEXAMPLEtoken/+=";
const ARN: &str = "arn:aws:secretsmanager:us-east-1:123456789012:secret:users-api/db-AbCdEf";
const RDS_SECRET: &str = r#"{"username":"app","password":"pa ss:w/rd@1","engine":"postgres"}"#;
const TIMEOUT: Duration = Duration::from_secs(2);

#[tokio::test]
async fn the_password_is_read_with_the_session_token_and_the_secret_arn() {
    // Arrange
    let extension = SecretsExtension::start(TOKEN, &[(ARN, RDS_SECRET)], Behaviour::Normal).await;

    // Act
    let password = database_password_from_extension(ARN, extension.port, TOKEN, TIMEOUT)
        .await
        .unwrap();

    // Assert
    assert_eq!(password, "pa ss:w/rd@1");
    let seen = extension.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, "GET");
    assert_eq!(seen[0].path, "/secretsmanager/get");
    assert_eq!(seen[0].secret_id.as_deref(), Some(ARN));
    assert_eq!(seen[0].token.as_deref(), Some(TOKEN));
}

#[tokio::test]
async fn a_plain_secret_in_a_chunked_answer_is_the_password() {
    // Arrange
    let extension =
        SecretsExtension::start(TOKEN, &[("users-api-db", "s3cret")], Behaviour::Chunked).await;

    // Act
    let password = database_password_from_extension("users-api-db", extension.port, TOKEN, TIMEOUT)
        .await
        .unwrap();

    // Assert
    assert_eq!(password, "s3cret");
}

#[tokio::test]
async fn refusals_are_http_statuses_and_never_show_the_secret() {
    // Arrange
    let extension = SecretsExtension::start(TOKEN, &[(ARN, RDS_SECRET)], Behaviour::Normal).await;
    let cases = [
        ("a wrong token", ARN, "not-the-token", 401),
        ("an unknown secret", "other-secret", TOKEN, 404),
    ];

    for (case, secret_id, token, status) in cases {
        // Act
        let error = database_password_from_extension(secret_id, extension.port, token, TIMEOUT)
            .await
            .expect_err(case);

        // Assert
        assert!(
            matches!(error, SecretsError::Status(s) if s == status),
            "{case}: {error:?}"
        );
        assert!(
            !format!("{error} {error:?}").contains("pa ss"),
            "{case}: {error:?}"
        );
    }
}

#[tokio::test]
async fn the_stand_in_answers_400_without_a_token_and_the_client_never_sends_none() {
    // Arrange
    let extension = SecretsExtension::start(TOKEN, &[(ARN, RDS_SECRET)], Behaviour::Normal).await;
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", extension.port))
        .await
        .unwrap();

    // Act
    tokio::io::AsyncWriteExt::write_all(
        &mut stream,
        b"GET /secretsmanager/get?secretId=x HTTP/1.1\r\nHost: localhost\r\n\r\n",
    )
    .await
    .unwrap();
    let mut answer = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut stream, &mut answer)
        .await
        .unwrap();
    let empty_token = database_password_from_extension(ARN, extension.port, "", TIMEOUT).await;

    // Assert
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    assert!(matches!(empty_token, Err(SecretsError::InvalidToken)));
    assert_eq!(extension.seen().len(), 1, "the client sent nothing");
}

/// A read from `port` with a 200 ms bound fails with `Timeout` within 2 s:
/// ten times the bound, room for a loaded machine; without the bound the
/// read would wait for the extension forever.
async fn assert_times_out(port: u16) {
    let started = Instant::now();

    let error = database_password_from_extension(ARN, port, TOKEN, Duration::from_millis(200))
        .await
        .unwrap_err();
    let elapsed = started.elapsed();

    assert!(matches!(error, SecretsError::Timeout(_)), "{error:?}");
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
}

#[tokio::test]
async fn a_hung_extension_fails_the_read_after_the_timeout() {
    // Arrange
    let extension = SecretsExtension::start(TOKEN, &[(ARN, RDS_SECRET)], Behaviour::Silent).await;

    // Act and assert
    assert_times_out(extension.port).await;
}

#[tokio::test]
async fn an_extension_still_starting_is_asked_again_until_it_answers() {
    // Arrange: Lambda runs init once the extension registered, maybe before
    // it serves.
    let extension =
        SecretsExtension::start(TOKEN, &[(ARN, RDS_SECRET)], Behaviour::NotReadyFirst(2)).await;

    // Act
    let password = database_password_from_extension(ARN, extension.port, TOKEN, TIMEOUT)
        .await
        .unwrap();

    // Assert
    assert_eq!(password, "pa ss:w/rd@1");
    assert_eq!(extension.seen().len(), 3);
}

#[tokio::test]
async fn no_extension_listening_fails_after_the_timeout() {
    // Arrange: a port that was free a moment ago.
    let port = test_support::servers::free_port();

    // Act and assert
    assert_times_out(port).await;
}

#[test]
fn the_password_goes_into_a_url_that_has_none() {
    // Arrange
    let mut config: tokio_postgres::Config =
        "postgres://app@db.example.com:5432/users?sslmode=require"
            .parse()
            .unwrap();

    // Act
    apply_password(&mut config, "pa ss:w/rd@1");

    // Assert
    assert_eq!(config.get_password(), Some("pa ss:w/rd@1".as_bytes()));
    assert_eq!(config.get_user(), Some("app"));
}
