//! The end of an environment: SIGTERM, and the no-op internal extension
//! without which Lambda sends none.
//!
//! Lambda sends SIGTERM to the runtime before it ends an environment only
//! when an extension is registered, and then kills it 500 ms later (with an
//! internal extension only). The extension registered here subscribes to no
//! event: it exists for the signal. `lambda_runtime`'s own helper
//! (`spawn_graceful_shutdown_handler`) does the same but panics when the
//! Extensions API is missing (local emulators, the bench's Runtime API);
//! this one logs and goes on without.

use lambda_http::tracing;
use lambda_runtime_api_client::body::Body;
use lambda_runtime_api_client::{PooledClient, build_request};
use std::future::Future;

const EXTENSION_NAME: &str = "users-api-graceful-shutdown";

/// Completes when the process receives SIGTERM. Listens from the call on,
/// so it is called at init.
pub fn sigterm() -> std::io::Result<impl Future<Output = ()>> {
    let mut signal = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    Ok(async move {
        signal.recv().await;
    })
}

/// Registers the no-op internal extension and keeps it polling for the
/// events it never gets; must run before the runtime's first poll, which
/// ends the init. Failing, it logs and returns.
pub async fn register_extension() {
    let client = PooledClient::builder().build();
    let registered = async {
        let request = build_request()
            .method("POST")
            .uri("/2020-01-01/extension/register")
            .header("Lambda-Extension-Name", EXTENSION_NAME)
            .body(Body::from(r#"{"events":[]}"#))?;
        let response = client.call(request).await?;
        if !response.status().is_success() {
            return Err(format!("HTTP {}", response.status()).into());
        }
        let identifier = response
            .headers()
            .get("Lambda-Extension-Identifier")
            .cloned()
            .ok_or("no Lambda-Extension-Identifier")?;
        Ok::<_, lambda_http::Error>(identifier)
    };
    match registered.await {
        Ok(identifier) => {
            // The extension is ready once it polls; no event ever comes, so
            // the poll just stays open.
            tokio::spawn(async move {
                let next = build_request()
                    .uri("/2020-01-01/extension/event/next")
                    .header("Lambda-Extension-Identifier", identifier)
                    .body(Body::empty());
                if let Ok(next) = next {
                    let _ = client.call(next).await;
                }
            });
        }
        Err(error) => tracing::warn!(
            error = %error,
            "cannot register the shutdown extension: no SIGTERM before this environment ends"
        ),
    }
}
