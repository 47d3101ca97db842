//! A stand-in for the AWS Parameters and Secrets Lambda Extension, speaking
//! its documented protocol on a free loopback port:
//! `GET /secretsmanager/get?secretId=<id>` with the header
//! `X-Aws-Parameters-Secrets-Token` answers 200 and the `GetSecretValue` JSON.
//!
//! Stand-in choices where the documentation is silent: a missing token is
//! 400, a wrong one 401, an unknown secret 404, any other path 404.
//! [`Behaviour`] makes it answer chunked, or never. Stops with its handle.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Answers with `Content-Length`.
    Normal,
    /// Answers with `Transfer-Encoding: chunked`.
    Chunked,
    /// Reads the request and never answers (a hung extension).
    Silent,
    /// Answers the first `n` requests 400 "not ready to serve traffic", as
    /// the extension does while it is still starting.
    NotReadyFirst(usize),
}

/// One request as the stand-in saw it.
#[derive(Debug, Clone)]
pub struct SeenRequest {
    pub method: String,
    pub path: String,
    /// The decoded `secretId` query parameter.
    pub secret_id: Option<String>,
    pub token: Option<String>,
}

pub struct SecretsExtension {
    pub port: u16,
    seen: Arc<Mutex<Vec<SeenRequest>>>,
    accept: JoinHandle<()>,
}

impl SecretsExtension {
    /// Serves `secrets` (secret id -> SecretString) to callers presenting `token`.
    pub async fn start(token: &str, secrets: &[(&str, &str)], behaviour: Behaviour) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        let secrets: Arc<HashMap<String, String>> = Arc::new(
            secrets
                .iter()
                .map(|(id, value)| (id.to_string(), value.to_string()))
                .collect(),
        );
        let token = Arc::new(token.to_owned());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let accept = {
            let seen = Arc::clone(&seen);
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let (secrets, token, seen) =
                        (Arc::clone(&secrets), Arc::clone(&token), Arc::clone(&seen));
                    tokio::spawn(async move {
                        serve(stream, &secrets, &token, &seen, behaviour).await;
                    });
                }
            })
        };
        Self { port, seen, accept }
    }

    /// The requests received so far.
    pub fn seen(&self) -> Vec<SeenRequest> {
        self.seen.lock().expect("lock").clone()
    }
}

impl Drop for SecretsExtension {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn serve(
    mut stream: TcpStream,
    secrets: &HashMap<String, String>,
    token: &str,
    seen: &Mutex<Vec<SeenRequest>>,
    behaviour: Behaviour,
) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 16 * 1024 {
        match stream.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().unwrap_or_default().split(' ');
    let method = request_line.next().unwrap_or_default().to_owned();
    let target = request_line.next().unwrap_or_default();
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let secret_id = query
        .split('&')
        .find_map(|pair| pair.strip_prefix("secretId="))
        .map(percent_decode);
    let presented = lines.find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("x-aws-parameters-secrets-token")
            .then(|| value.trim().to_owned())
    });
    let earlier = {
        let mut seen = seen.lock().expect("lock");
        seen.push(SeenRequest {
            method: method.clone(),
            path: path.to_owned(),
            secret_id: secret_id.clone(),
            token: presented.clone(),
        });
        seen.len() - 1
    };
    if behaviour == Behaviour::Silent {
        // Hold the connection open until the client gives up.
        let _ = stream.read(&mut byte).await;
        return;
    }
    let (status, body) = match behaviour {
        Behaviour::NotReadyFirst(n) if earlier < n => (
            400,
            r#"{"message":"not ready to serve traffic, please wait"}"#.to_owned(),
        ),
        _ => answer(
            presented.as_deref(),
            &method,
            path,
            secret_id.as_deref(),
            secrets,
            token,
        ),
    };
    let response = respond(status, &body, behaviour);
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

fn answer(
    presented: Option<&str>,
    method: &str,
    path: &str,
    secret_id: Option<&str>,
    secrets: &HashMap<String, String>,
    token: &str,
) -> (u16, String) {
    match (presented, method, path, secret_id) {
        (None, ..) => (400, r#"{"message":"missing token"}"#.to_owned()),
        (Some(presented), ..) if presented != token => {
            (401, r#"{"message":"bad token"}"#.to_owned())
        }
        (_, "GET", "/secretsmanager/get", Some(id)) => match secrets.get(id) {
            Some(value) => (
                200,
                serde_json::json!({
                    "ARN": format!("arn:aws:secretsmanager:us-east-1:123456789012:secret:{id}"),
                    "Name": id,
                    "SecretString": value,
                    "VersionId": "00000000-0000-0000-0000-000000000001",
                    "VersionStages": ["AWSCURRENT"],
                    "CreatedDate": "2026-11-26T00:00:00Z",
                })
                .to_string(),
            ),
            None => (404, r#"{"message":"no such secret"}"#.to_owned()),
        },
        _ => (404, r#"{"message":"not found"}"#.to_owned()),
    }
}

fn respond(status: u16, body: &str, behaviour: Behaviour) -> String {
    match behaviour {
        Behaviour::Chunked => {
            let (first, second) = body.split_at(body.len() / 2);
            format!(
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n\
                 Transfer-Encoding: chunked\r\n\r\n{:x}\r\n{first}\r\n{:x}\r\n{second}\r\n0\r\n\r\n",
                first.len(),
                second.len()
            )
        }
        _ => format!(
            "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    }
}

fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let hex = bytes
            .get(index + 1..index + 3)
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match (bytes[index], hex) {
            (b'%', Some(byte)) => {
                decoded.push(byte);
                index += 3;
            }
            (byte, _) => {
                decoded.push(byte);
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&decoded).into_owned()
}
