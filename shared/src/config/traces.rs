//! Where traces go: the standard OpenTelemetry variables
//! (docs/configuration.md; docs/deploy.md, "Traces").
//!
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is the full URL of the POST;
//! otherwise `OTEL_EXPORTER_OTLP_ENDPOINT` with `/v1/traces` after it, as
//! the OpenTelemetry specification has it. Only `http://`: the collector
//! runs beside the function, on localhost. Neither set: no traces, and
//! nothing set up for them.

use super::{ConfigError, Env};
use std::time::Duration;

/// The collector of the spans, and what they say about the function.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TracesConfig {
    /// An address to connect to (`localhost` is read as 127.0.0.1, so that
    /// connecting never waits for the resolver).
    pub host: String,
    pub port: u16,
    /// `host:port` as written, for the `Host` header and the logs.
    pub authority: String,
    pub path: String,
    /// `OTEL_EXPORTER_OTLP_TIMEOUT`: the bound of one export.
    pub timeout: Duration,
    /// The resource attributes: the service and the Lambda function.
    pub resource: Vec<(&'static str, String)>,
}

const TRACES_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
const ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";

pub(super) fn from_env(env: &Env<'_>) -> Result<Option<TracesConfig>, ConfigError> {
    let (variable, url) = match (env.optional(TRACES_ENDPOINT), env.optional(ENDPOINT)) {
        (Some(url), _) => (TRACES_ENDPOINT, url.trim().to_owned()),
        (None, Some(base)) => (
            ENDPOINT,
            format!("{}/v1/traces", base.trim().trim_end_matches('/')),
        ),
        (None, None) => return Ok(None),
    };
    let malformed = ConfigError {
        variable,
        problem: "must be an http:// URL with a host (the collector beside the function)",
    };
    let rest = url.strip_prefix("http://").ok_or(malformed.clone())?;
    let (authority, path) = rest.find('/').map_or((rest, "/"), |at| rest.split_at(at));
    let port = |text: &str| text.parse::<u16>().map_err(|_| malformed.clone());
    let (host, port) = match authority.strip_prefix('[') {
        // An IPv6 address: [::1]:4318.
        Some(bracketed) => match bracketed.split_once(']') {
            Some((host, "")) => (host, 80),
            Some((host, after)) => (host, port(after.strip_prefix(':').unwrap_or(after))?),
            None => return Err(malformed),
        },
        None => match authority.split_once(':') {
            Some((host, after)) => (host, port(after)?),
            None => (authority, 80),
        },
    };
    if host.is_empty() || authority.contains('@') {
        return Err(malformed);
    }
    let function = env.optional("AWS_LAMBDA_FUNCTION_NAME");
    let mut resource = vec![
        (
            "service.name",
            env.optional("OTEL_SERVICE_NAME")
                .or_else(|| function.clone())
                .unwrap_or_else(|| "users-api".to_owned()),
        ),
        ("cloud.provider", "aws".to_owned()),
        ("cloud.platform", "aws_lambda".to_owned()),
    ];
    for (attribute, variable) in [
        ("cloud.region", "AWS_REGION"),
        ("faas.name", "AWS_LAMBDA_FUNCTION_NAME"),
        ("faas.version", "AWS_LAMBDA_FUNCTION_VERSION"),
        ("faas.instance", "AWS_LAMBDA_LOG_STREAM_NAME"),
    ] {
        if let Some(value) = env.optional(variable) {
            resource.push((attribute, value));
        }
    }
    Ok(Some(TracesConfig {
        host: if host == "localhost" {
            "127.0.0.1"
        } else {
            host
        }
        .to_owned(),
        port,
        authority: authority.to_owned(),
        path: path.to_owned(),
        timeout: env.millis("OTEL_EXPORTER_OTLP_TIMEOUT", 1000)?,
        resource,
    }))
}
