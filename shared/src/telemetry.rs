//! What a function tells CloudWatch: one JSON log record per request and one
//! Embedded Metric Format (EMF) line per request.
//!
//! Logs go through `tracing` (the runtime's subscriber writes JSON when the
//! function's log format is JSON, with the invocation's request id in its
//! span). Metrics are EMF lines written straight to stdout: CloudWatch turns
//! them into metrics without an API call, an agent or extra latency
//! (<https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html>).
//! A line that already is a JSON object passes through Lambda's JSON log
//! format untouched, so EMF extraction works in either format.
//!
//! Nothing here takes a connection string or a secret; [`redacted_endpoint`]
//! is the only way a URL should reach a log.

use crate::service::CacheStatus;
use lambda_http::tracing;
use std::io::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// EMF units this service uses (a subset of CloudWatch's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Milliseconds,
    Count,
}

impl Unit {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Milliseconds => "Milliseconds",
            Self::Count => "Count",
        }
    }
}

/// One EMF line, stamped now: every metric under `namespace`, with one
/// dimension set made of all `dimensions`. Dimension and metric names must
/// differ (they share the top level of the object); CloudWatch accepts at
/// most 30 dimensions and 100 metrics per line.
pub fn emf_line(
    namespace: &str,
    dimensions: &[(&str, &str)],
    metrics: &[(&str, f64, Unit)],
) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    emf_line_at(now, namespace, dimensions, metrics)
}

/// [`emf_line`] at a given time since the epoch (for tests).
///
/// Written by hand rather than through `serde_json::Value`: this runs on every
/// request, and building a map of values per request cost more than the rest
/// of a cache hit (see BENCHMARKS.md).
pub fn emf_line_at(
    timestamp: Duration,
    namespace: &str,
    dimensions: &[(&str, &str)],
    metrics: &[(&str, f64, Unit)],
) -> String {
    use std::fmt::Write as _;
    debug_assert!(dimensions.len() <= 30 && metrics.len() <= 100);
    let mut line = String::with_capacity(256 + 48 * metrics.len());
    let millis = u64::try_from(timestamp.as_millis()).unwrap_or(u64::MAX);
    let _ = write!(
        line,
        r#"{{"_aws":{{"Timestamp":{millis},"CloudWatchMetrics":[{{"Namespace":"#
    );
    push_json_string(&mut line, namespace);
    line.push_str(r#","Dimensions":[["#);
    for (index, (name, _)) in dimensions.iter().enumerate() {
        if index > 0 {
            line.push(',');
        }
        push_json_string(&mut line, name);
    }
    line.push_str(r#"]],"Metrics":["#);
    for (index, (name, _, unit)) in metrics.iter().enumerate() {
        if index > 0 {
            line.push(',');
        }
        line.push_str(r#"{"Name":"#);
        push_json_string(&mut line, name);
        let _ = write!(line, r#","Unit":"{}"}}"#, unit.as_str());
    }
    line.push_str("]}]}");
    for (name, value) in dimensions {
        line.push(',');
        push_json_string(&mut line, name);
        line.push(':');
        push_json_string(&mut line, value);
    }
    for (name, value, _) in metrics {
        line.push(',');
        push_json_string(&mut line, name);
        // Finite by construction (counts and durations); JSON has no NaN.
        let value = if value.is_finite() { *value } else { 0.0 };
        let _ = write!(line, ":{value:?}");
    }
    line.push('}');
    line
}

/// Appends `text` as a JSON string literal.
fn push_json_string(line: &mut String, text: &str) {
    use std::fmt::Write as _;
    line.push('"');
    for character in text.chars() {
        match character {
            '"' => line.push_str("\\\""),
            '\\' => line.push_str("\\\\"),
            control if u32::from(control) < 0x20 => {
                let _ = write!(line, "\\u{:04x}", u32::from(control));
            }
            other => line.push(other),
        }
    }
    line.push('"');
}

/// Where each request's log record and EMF line wait until its response is
/// out. Under the Lambda runtime ([`crate::runtime::run`]) they are written
/// after the response has been posted to the Runtime API, and before the next
/// event is asked for (so before the sandbox can be frozen): the client never
/// waits for a log write, and nothing is lost. Everywhere else (tests,
/// in-process callers) they are written as the request ends.
pub struct Outbox {
    /// CloudWatch namespace of the EMF lines; `None`: no metrics.
    namespace: Option<String>,
    cold_start: ColdStart,
    deferred: AtomicBool,
    pending: Mutex<Vec<Pending>>,
    /// Where EMF lines go: stdout, where Lambda picks them up.
    metrics_out: Mutex<Box<dyn Write + Send>>,
}

/// One request's telemetry, as [`crate::http::serve`] hands it over.
#[derive(Debug, Clone)]
pub struct Record {
    /// The Lambda request id (`lambda_context().request_id`), `-` without one.
    pub request_id: String,
    /// The route template (`GET /users/{id}`), never the raw path.
    pub route: &'static str,
    /// The function's name, the EMF dimension.
    pub function: &'static str,
    pub status: u16,
    pub cache: Option<CacheStatus>,
    pub latency: Duration,
    pub postgres: Option<Duration>,
    pub redis: Option<Duration>,
}

impl Outbox {
    pub fn new(namespace: Option<String>) -> Self {
        Self {
            namespace,
            cold_start: ColdStart::default(),
            deferred: AtomicBool::new(false),
            pending: Mutex::default(),
            metrics_out: Mutex::new(Box::new(std::io::stdout())),
        }
    }

    /// From now on records wait for [`Outbox::flush`]; whoever calls this
    /// must call it after every request ([`crate::runtime::run`] does).
    pub fn defer(&self) {
        self.deferred.store(true, Ordering::Relaxed);
    }

    /// Sends EMF lines to `out` instead of stdout (tests).
    pub fn send_metrics_to(&self, out: Box<dyn Write + Send>) {
        *lock(&self.metrics_out) = out;
    }

    /// Takes one request's record: kept for [`Outbox::flush`] when deferred,
    /// written now otherwise. The first record of an instance is its cold start.
    pub fn submit(&self, record: Record) {
        let entry = Pending {
            record,
            cold_start: self.cold_start.take(),
        };
        if self.deferred.load(Ordering::Relaxed) {
            lock(&self.pending).push(entry);
        } else {
            self.write(&[entry]);
        }
    }

    /// Writes every record waiting: the log records through `tracing`, the
    /// EMF lines in one write.
    pub fn flush(&self) {
        let mut pending = lock(&self.pending);
        if !pending.is_empty() {
            self.write(&pending);
            // Cleared in place: the next request's push does not allocate.
            pending.clear();
        }
    }

    fn write(&self, records: &[Pending]) {
        let mut lines = String::new();
        for Pending { record, cold_start } in records {
            RequestLog {
                request_id: &record.request_id,
                route: record.route,
                status: record.status,
                cache: record.cache,
                latency: record.latency,
            }
            .emit();
            if let Some(namespace) = &self.namespace {
                let metrics = RequestMetrics {
                    cache: record.cache,
                    postgres: record.postgres,
                    redis: record.redis,
                    cold_start: *cold_start,
                };
                lines.push_str(&metrics.emf_line(namespace, record.function));
                lines.push('\n');
            }
        }
        if !lines.is_empty() {
            // A failed write loses metrics, never a request.
            let mut out = lock(&self.metrics_out);
            let _ = out.write_all(lines.as_bytes());
            let _ = out.flush();
        }
    }
}

/// A record, and whether it was the instance's first.
struct Pending {
    record: Record,
    cold_start: bool,
}

/// A poisoned lock only means a panic elsewhere; the data is still usable.
fn lock<T: ?Sized>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

tokio::task_local! {
    /// Time one request spent in Postgres and in Redis; see [`measure`].
    static TIMINGS: Timings;
}

#[derive(Default)]
struct Timings {
    postgres: std::cell::Cell<Option<Duration>>,
    redis: std::cell::Cell<Option<Duration>>,
}

/// Runs `work` (one request) and returns what it spent in Postgres and Redis,
/// as recorded by the store and the cache. Per request, not per instance, so
/// concurrent requests in one process (tests, benchmarks) do not mix.
pub async fn measure<F: std::future::Future>(
    work: F,
) -> (F::Output, Option<Duration>, Option<Duration>) {
    TIMINGS
        .scope(Timings::default(), async {
            let output = work.await;
            let (postgres, redis) = TIMINGS.with(|t| (t.postgres.get(), t.redis.get()));
            (output, postgres, redis)
        })
        .await
}

/// Adds `spent` to the current request's Postgres time (no-op outside [`measure`]).
pub fn record_postgres(spent: Duration) {
    let _ = TIMINGS.try_with(|t| {
        t.postgres
            .set(Some(t.postgres.get().unwrap_or_default() + spent))
    });
}

/// Adds `spent` to the current request's Redis time (no-op outside [`measure`]).
pub fn record_redis(spent: Duration) {
    let _ = TIMINGS.try_with(|t| t.redis.set(Some(t.redis.get().unwrap_or_default() + spent)));
}

/// True for the first request a sandbox serves. Lives in the function's
/// state (built once per cold start, in its [`Outbox`]), not in a global.
#[derive(Debug)]
pub struct ColdStart(AtomicBool);

impl Default for ColdStart {
    fn default() -> Self {
        Self(AtomicBool::new(true))
    }
}

impl ColdStart {
    /// Whether this is the first call; every later call returns false.
    pub fn take(&self) -> bool {
        self.0.swap(false, Ordering::Relaxed)
    }
}

/// What one request measured; becomes one EMF line.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestMetrics {
    /// The cache outcome of a `find`; `None` for routes that do not read it.
    pub cache: Option<CacheStatus>,
    /// Time spent in Postgres calls, if any were made.
    pub postgres: Option<Duration>,
    /// Time spent in Redis calls, if any were made.
    pub redis: Option<Duration>,
    pub cold_start: bool,
}

impl RequestMetrics {
    /// The EMF line, dimension `Function`. The cache outcome is three
    /// 0-or-1 counts, so the average of `CacheHit` is the hit ratio.
    pub fn emf_line(&self, namespace: &str, function: &str) -> String {
        let mut metrics = Vec::with_capacity(6);
        if let Some(cache) = self.cache {
            for (name, outcome) in [
                ("CacheHit", CacheStatus::Hit),
                ("CacheMiss", CacheStatus::Miss),
                ("CacheBypass", CacheStatus::Bypass),
            ] {
                metrics.push((name, f64::from(u8::from(cache == outcome)), Unit::Count));
            }
        }
        if let Some(latency) = self.postgres {
            metrics.push(("PostgresLatency", millis(latency), Unit::Milliseconds));
        }
        if let Some(latency) = self.redis {
            metrics.push(("RedisLatency", millis(latency), Unit::Milliseconds));
        }
        if self.cold_start {
            metrics.push(("ColdStart", 1.0, Unit::Count));
        }
        emf_line(namespace, &[("Function", function)], &metrics)
    }
}

/// The log record of one request.
#[derive(Debug, Clone, Copy)]
pub struct RequestLog<'a> {
    /// The Lambda request id (`lambda_context().request_id`).
    pub request_id: &'a str,
    /// The route template (`GET /users/{id}`), never the raw path.
    pub route: &'a str,
    pub status: u16,
    pub cache: Option<CacheStatus>,
    pub latency: Duration,
}

impl RequestLog<'_> {
    /// Logs the record at info level, one structured event.
    pub fn emit(&self) {
        tracing::info!(
            request_id = self.request_id,
            route = self.route,
            status = self.status,
            cache = self.cache.map(CacheStatus::as_str),
            latency_ms = millis(self.latency),
            "request"
        );
    }
}

/// `scheme://host:port/path` of a URL: no user, password or query (where
/// libpq URLs may carry `password=`). For saying where a connection goes.
pub fn redacted_endpoint(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let end = rest.find(['?', '#']).unwrap_or(rest.len());
    let rest = &rest[..end];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let host = match rest[..authority_end].rsplit_once('@') {
        Some((_, host)) => host,
        None => &rest[..authority_end],
    };
    format!("{scheme}://{host}{}", &rest[authority_end..])
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn parse(line: &str) -> Value {
        assert!(!line.contains('\n'), "one line");
        serde_json::from_str(line).unwrap()
    }

    #[test]
    fn an_emf_line_declares_its_metrics_and_carries_their_values_at_top_level() {
        let line = emf_line_at(
            Duration::from_millis(1_764_130_000_123),
            "users-api",
            &[("Function", "find-user")],
            &[
                ("PostgresLatency", 1.5, Unit::Milliseconds),
                ("ColdStart", 1.0, Unit::Count),
            ],
        );
        assert_eq!(
            parse(&line),
            json!({
                "_aws": {
                    "Timestamp": 1_764_130_000_123_u64,
                    "CloudWatchMetrics": [{
                        "Namespace": "users-api",
                        "Dimensions": [["Function"]],
                        "Metrics": [
                            {"Name": "PostgresLatency", "Unit": "Milliseconds"},
                            {"Name": "ColdStart", "Unit": "Count"},
                        ],
                    }],
                },
                "Function": "find-user",
                "PostgresLatency": 1.5,
                "ColdStart": 1.0,
            })
        );
    }

    #[test]
    fn request_metrics_report_the_cache_outcome_as_three_counts() {
        let metrics = RequestMetrics {
            cache: Some(CacheStatus::Bypass),
            postgres: Some(Duration::from_micros(2500)),
            redis: Some(Duration::from_millis(50)),
            cold_start: true,
        };
        let line = parse(&metrics.emf_line("users-api", "find-user"));
        assert_eq!(line["CacheHit"], 0.0);
        assert_eq!(line["CacheMiss"], 0.0);
        assert_eq!(line["CacheBypass"], 1.0);
        assert_eq!(line["PostgresLatency"], 2.5);
        assert_eq!(line["RedisLatency"], 50.0);
        assert_eq!(line["ColdStart"], 1.0);
        let declared = line["_aws"]["CloudWatchMetrics"][0]["Metrics"]
            .as_array()
            .unwrap()
            .len();
        assert_eq!(declared, 6);
        assert!(line["_aws"]["Timestamp"].as_u64().unwrap() > 1_700_000_000_000);
    }

    #[test]
    fn a_warm_request_without_cache_or_database_declares_no_metrics_of_them() {
        let line = parse(&RequestMetrics::default().emf_line("users-api", "create-user"));
        let declared = &line["_aws"]["CloudWatchMetrics"][0]["Metrics"];
        assert_eq!(declared, &json!([]));
        assert!(line.get("CacheHit").is_none() && line.get("ColdStart").is_none());
    }

    #[test]
    fn cold_start_is_true_once() {
        let cold = ColdStart::default();
        assert!(cold.take());
        assert!(!cold.take());
    }

    #[test]
    fn endpoints_lose_credentials_and_query() {
        let cases = [
            (
                "postgres://app:s3cret@db.example.com:5432/users?sslmode=require&password=s3cret",
                "postgres://db.example.com:5432/users",
            ),
            ("rediss://:s3cret@cache:6379/0", "rediss://cache:6379/0"),
            ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379"),
            ("postgres://u:p@ss@h/d", "postgres://h/d"),
        ];
        for (url, expected) in cases {
            assert_eq!(redacted_endpoint(url), expected);
        }
    }
}
