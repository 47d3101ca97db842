//! The database password from AWS Secrets Manager, read once at init through
//! the AWS Parameters and Secrets Lambda Extension.
//!
//! The extension is a layer that serves cached secrets on
//! `http://localhost:{PARAMETERS_SECRETS_EXTENSION_HTTP_PORT}` (default 2773):
//! `GET /secretsmanager/get?secretId=<arn-or-name>` with the header
//! `X-Aws-Parameters-Secrets-Token: <AWS_SESSION_TOKEN>` answers the
//! `GetSecretValue` JSON, whose `SecretString` is either the password itself
//! or, for RDS-managed and rotation-template secrets, a JSON object with a
//! `password` field. A URL then needs no password, and rotation needs no
//! redeploy (new sandboxes read the new value).
//!
//! The GET goes through hyper's HTTP/1.1 client connection, which the Lambda
//! runtime links already, over one loopback socket, bounded by a timeout.
//! Errors never carry the response body, which may hold the secret.

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use std::time::Duration;
use tokio::net::TcpStream;

/// Largest answer read: a secret is at most 64 KiB, plus its metadata.
const MAX_RESPONSE_BYTES: usize = 256 * 1024;

/// Why the password could not be read. Never holds any part of the secret.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("cannot talk to the Parameters and Secrets extension on port {port}")]
    Io {
        port: u16,
        #[source]
        source: std::io::Error,
    },
    #[error("the Parameters and Secrets extension did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the Parameters and Secrets extension answered HTTP {0}")]
    Status(u16),
    #[error("the Parameters and Secrets extension sent a malformed answer ({0})")]
    Malformed(&'static str),
    #[error("the Parameters and Secrets extension's answer could not be read")]
    Http(#[source] hyper::Error),
    #[error("the secret has no SecretString (binary secrets are not supported)")]
    NoSecretString,
    #[error("the secret is a JSON object without a string \"password\" field")]
    NoPassword,
    #[error("AWS_SESSION_TOKEN is empty or contains a line break")]
    InvalidToken,
}

/// Reads secret `secret_id` (ARN or name) through the extension on
/// `127.0.0.1:port`, authenticating with `token` (the sandbox's
/// `AWS_SESSION_TOKEN`), and returns its password: the whole `SecretString`,
/// or its `password` field when it is a JSON object (the RDS format).
///
/// Lambda starts the function's init as soon as the extension has registered,
/// not when it is ready, so a refused connection or a "not ready to serve
/// traffic" answer is retried (10 ms, doubling to 100 ms) until `timeout`,
/// which bounds the whole call.
pub async fn database_password_from_extension(
    secret_id: &str,
    port: u16,
    token: &str,
    timeout: Duration,
) -> Result<String, SecretsError> {
    if token.is_empty() || token.contains(['\r', '\n']) {
        return Err(SecretsError::InvalidToken);
    }
    let path = format!("/secretsmanager/get?secretId={}", percent_encode(secret_id));
    let attempts = async {
        let mut pause = Duration::from_millis(10);
        loop {
            match http_get(port, &path, token).await {
                Ok((200, body)) => return password_from_response(&body),
                Ok((status, body)) if !is_not_ready(&body) => {
                    return Err(SecretsError::Status(status));
                }
                Err(SecretsError::Io { source, .. })
                    if source.kind() != std::io::ErrorKind::ConnectionRefused =>
                {
                    return Err(SecretsError::Io { port, source });
                }
                Err(error @ (SecretsError::Malformed(_) | SecretsError::Http(_))) => {
                    return Err(error);
                }
                // Not listening yet, or listening but not ready: try again.
                _ => {}
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    };
    tokio::time::timeout(timeout, attempts)
        .await
        .map_err(|_| SecretsError::Timeout(timeout))?
}

/// Whether an error answer says the extension has not finished starting.
fn is_not_ready(body: &[u8]) -> bool {
    find(body, b"not ready").is_some()
}

/// Sets `password` on a connection configuration parsed from a URL without
/// one (or replaces the URL's), so the secret never has to be in the URL.
pub fn apply_password<'a>(
    config: &'a mut tokio_postgres::Config,
    password: &str,
) -> &'a mut tokio_postgres::Config {
    config.password(password)
}

/// The `GetSecretValue` JSON -> the password.
fn password_from_response(body: &[u8]) -> Result<String, SecretsError> {
    #[derive(serde::Deserialize)]
    struct Answer {
        #[serde(rename = "SecretString")]
        secret_string: Option<String>,
    }
    let answer: Answer = serde_json::from_slice(body)
        .map_err(|_| SecretsError::Malformed("the body is not the GetSecretValue JSON"))?;
    let secret = answer.secret_string.ok_or(SecretsError::NoSecretString)?;
    match serde_json::from_str::<serde_json::Value>(&secret) {
        Ok(serde_json::Value::Object(fields)) => match fields.get("password") {
            Some(serde_json::Value::String(password)) => Ok(password.clone()),
            _ => Err(SecretsError::NoPassword),
        },
        // Not a JSON object (a plain password, even one that parses as a
        // JSON number or string): the whole value is the password.
        _ => Ok(secret),
    }
}

/// One GET to the extension: its status and body (at most
/// `MAX_RESPONSE_BYTES`).
async fn http_get(port: u16, path: &str, token: &str) -> Result<(u16, Vec<u8>), SecretsError> {
    let stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|source| SecretsError::Io { port, source })?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(SecretsError::Http)?;
    let request = hyper::Request::get(path)
        .header(hyper::header::HOST, format!("localhost:{port}"))
        .header("X-Aws-Parameters-Secrets-Token", token)
        .header(hyper::header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|_| SecretsError::InvalidToken)?;
    let exchange = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(SecretsError::Http)?;
        let status = response.status().as_u16();
        let body = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|_| SecretsError::Malformed("the answer is too large or cut short"))?
            .to_bytes();
        Ok((status, body.to_vec()))
    };
    let mut exchange = std::pin::pin!(exchange);
    // The connection drives the socket. When it ends first (the server
    // closed it), the exchange still holds the answer, or the reason it has
    // none.
    tokio::select! {
        result = &mut exchange => result,
        _ = connection => exchange.await,
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn percent_encode(value: &str) -> String {
    let mut encoded = String::with_capacity(value.len() * 3);
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(secret_string: &str) -> Vec<u8> {
        serde_json::json!({"ARN": "arn:aws:secretsmanager:us-east-1:1:secret:db", "Name": "db",
                           "SecretString": secret_string, "VersionId": "v1"})
        .to_string()
        .into_bytes()
    }

    #[test]
    fn a_plain_secret_string_is_the_password() {
        assert_eq!(password_from_response(&answer("s3cret")).unwrap(), "s3cret");
        assert_eq!(password_from_response(&answer("12345")).unwrap(), "12345");
        assert_eq!(password_from_response(&answer("\"q\"")).unwrap(), "\"q\"");
    }

    #[test]
    fn an_rds_style_secret_yields_its_password_field() {
        let rds =
            r#"{"username":"app","password":"s3cret","engine":"postgres","host":"db","port":5432}"#;
        assert_eq!(password_from_response(&answer(rds)).unwrap(), "s3cret");
    }

    #[test]
    fn unusable_answers_are_errors_that_do_not_echo_the_secret() {
        let cases: [(Vec<u8>, &str); 4] = [
            (answer(r#"{"username":"app","pass":"s3cret"}"#), "password"),
            (answer(r#"{"password":42}"#), "password"),
            (br#"{"SecretBinary":"czNjcmV0"}"#.to_vec(), "SecretString"),
            (b"s3cret".to_vec(), "malformed"),
        ];
        for (body, expected) in cases {
            let message = password_from_response(&body).unwrap_err().to_string();
            assert!(message.contains(expected), "{message}");
            assert!(!message.contains("s3cret"), "{message}");
        }
    }

    #[test]
    fn secret_ids_are_percent_encoded() {
        assert_eq!(
            percent_encode("arn:aws:secretsmanager:us-east-1:1:secret:db/app+x"),
            "arn%3Aaws%3Asecretsmanager%3Aus-east-1%3A1%3Asecret%3Adb%2Fapp%2Bx"
        );
    }
}
