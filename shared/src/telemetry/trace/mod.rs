//! Traces: each sampled invocation's spans, exported over OTLP/HTTP to a
//! collector beside the function when `OTEL_EXPORTER_OTLP_ENDPOINT` is set
//! (docs/deploy.md, "Traces"; docs/configuration.md).
//!
//! - [`context`]: the invocation's X-Ray trace header, read as an
//!   OpenTelemetry trace id and parent, and span ids;
//! - [`span`]: the spans, collected per invocation where the work happens
//!   (a Redis command, a Postgres statement, a flight);
//! - [`server_span`]: the invocation's own span, from its log record;
//! - `export` (cargo feature `traces`): the OTLP request, sent after the
//!   response.
//!
//! The trace is X-Ray's: the spans carry the invocation's trace id and hang
//! from its `Parent`, so X-Ray shows them under the function's segment, and
//! a sampled-out invocation (`Sampled=0`) records nothing. The OpenTelemetry
//! SDK is not used: its pipeline (a global provider, a batch processor with
//! a thread of its own, an HTTP client) is more than one POST of an
//! invocation's few spans needs (BENCHMARKS-history.md, 2026-12-05,
//! measured it beside this: +322 kB of zip against +12 kB); BENCHMARKS.md
//! gives what traces cost find-user.

mod context;
#[cfg(feature = "traces")]
mod export;
mod span;

pub use context::{TraceContext, root_of, span_id};
#[cfg(feature = "traces")]
pub use export::{Exporter, MAX_IN_FLIGHT};
pub use span::{Collected, Kind, Scope, Span, Value, collecting, record_client, unix_nanos};

use super::Record;
use std::borrow::Cow;
use std::time::SystemTime;

/// What the runtime knows of an invocation beside its record.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub request_id: String,
    /// The ARN the function was invoked by (with its alias or version).
    pub function_arn: String,
}

/// The invocation's server span, ending now, with the id its children
/// already name. From its `record` (route, status, cache outcome, cold
/// start); an invocation answered without one (a malformed event, a panic)
/// is named `invocation` and marked failed.
pub fn server_span(collected: &Collected, invocation: Invocation, record: Option<&Record>) -> Span {
    let mut attributes: Vec<(&'static str, Value)> = vec![
        ("faas.trigger", "http".into()),
        ("faas.invocation_id", invocation.request_id.into()),
        ("cloud.resource_id", invocation.function_arn.into()),
    ];
    let (name, failed) = match record {
        Some(record) => {
            let (method, route) = record.route.split_once(' ').unwrap_or(("", record.route));
            attributes.extend([
                ("faas.coldstart", record.cold_start.into()),
                ("http.request.method", Value::from(method)),
                ("http.route", Value::from(route)),
                ("http.response.status_code", i64::from(record.status).into()),
            ]);
            if let Some(cache) = record.measured.cache {
                attributes.push(("users_api.cache", cache.as_str().into()));
            }
            (Cow::Borrowed(record.route), record.status >= 500)
        }
        None => (Cow::Borrowed("invocation"), true),
    };
    Span {
        id: collected.server,
        parent: collected.context.parent,
        name,
        kind: Kind::Server,
        start: collected.start,
        end: unix_nanos(SystemTime::now()).max(collected.start),
        attributes,
        failed,
    }
}
