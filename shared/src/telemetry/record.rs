//! The one record of a request: written as a log record and as an EMF line.

use super::emf::{self, Unit};
use super::{CacheStatus, Measured};
use lambda_http::tracing;
use std::time::Duration;

/// What one request did, as [`crate::state::AppState::serve`] hands it to the
/// [`super::Outbox`].
#[derive(Debug, Clone)]
pub struct Record {
    /// The Lambda request id (`lambda_context().request_id`), `-` without one.
    pub request_id: String,
    /// The `Root` of the invocation's X-Ray trace header
    /// (`1-67cef5e4-8ddab48fb765b86d4e572b04`), to find its trace; `None`
    /// when Lambda gave none.
    pub xray_trace_id: Option<String>,
    /// The route template (`GET /users/{id}`), never the raw path.
    pub route: &'static str,
    /// The function's name, the EMF dimension.
    pub function: &'static str,
    pub status: u16,
    pub latency: Duration,
    /// Postgres and Redis time, the cache outcome and the caller.
    pub measured: Measured,
    /// Whether this was the first request of its sandbox; set by the outbox.
    pub cold_start: bool,
}

impl Record {
    /// The log record: one structured event at info level.
    pub fn log(&self) {
        tracing::info!(
            request_id = self.request_id,
            xray_trace_id = self.xray_trace_id.as_deref(),
            route = self.route,
            subject = self.measured.subject.as_deref(),
            status = self.status,
            cache = self.measured.cache.map(CacheStatus::as_str),
            latency_ms = millis(self.latency),
            "request"
        );
    }

    /// The EMF line, dimension `Function`. The cache outcome is five
    /// 0-or-1 counts, so the average of `CacheHit` is the hit ratio. Only
    /// what the request did is declared.
    pub fn emf_line(&self, namespace: &str) -> String {
        let mut metrics = Vec::with_capacity(8);
        if let Some(cache) = self.measured.cache {
            for (name, outcome) in [
                ("CacheHit", CacheStatus::Hit),
                ("CacheMiss", CacheStatus::Miss),
                ("CacheBypass", CacheStatus::Bypass),
                ("CacheStale", CacheStatus::Stale),
                ("CacheRefresh", CacheStatus::Refresh),
            ] {
                metrics.push((name, f64::from(u8::from(cache == outcome)), Unit::Count));
            }
        }
        if let Some(latency) = self.measured.postgres {
            metrics.push(("PostgresLatency", millis(latency), Unit::Milliseconds));
        }
        if let Some(latency) = self.measured.redis {
            metrics.push(("RedisLatency", millis(latency), Unit::Milliseconds));
        }
        if self.cold_start {
            metrics.push(("ColdStart", 1.0, Unit::Count));
        }
        emf::line(namespace, &[("Function", self.function)], &metrics)
    }
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn record(measured: Measured, cold_start: bool) -> Record {
        Record {
            request_id: "r-1".into(),
            xray_trace_id: None,
            route: "GET /users/{id}",
            function: "find-user",
            status: 200,
            latency: Duration::from_millis(3),
            measured,
            cold_start,
        }
    }

    #[test]
    fn the_emf_line_reports_the_cache_outcome_as_five_counts() {
        // Arrange
        let measured = Measured {
            cache: Some(CacheStatus::Bypass),
            postgres: Some(Duration::from_micros(2500)),
            redis: Some(Duration::from_millis(50)),
            subject: Some("ada".into()),
        };

        // Act
        let text = record(measured, true).emf_line("users-api");
        let line: Value = serde_json::from_str(&text).unwrap();

        // Assert
        assert_eq!(line["CacheHit"], 0.0);
        assert_eq!(line["CacheMiss"], 0.0);
        assert_eq!(line["CacheBypass"], 1.0);
        assert_eq!(line["CacheStale"], 0.0);
        assert_eq!(line["CacheRefresh"], 0.0);
        assert_eq!(line["PostgresLatency"], 2.5);
        assert_eq!(line["RedisLatency"], 50.0);
        assert_eq!(line["ColdStart"], 1.0);
        assert_eq!(line["Function"], "find-user");
        assert!(!text.contains("ada"), "no caller in metrics: {text}");
        let declared = line["_aws"]["CloudWatchMetrics"][0]["Metrics"]
            .as_array()
            .unwrap();
        assert_eq!(declared.len(), 8);
        assert!(line["_aws"]["Timestamp"].as_u64().unwrap() > 1_700_000_000_000);
    }

    #[test]
    fn a_warm_request_without_cache_or_database_declares_no_metrics_of_them() {
        // Arrange
        let warm = record(Measured::default(), false);

        // Act
        let line: Value = serde_json::from_str(&warm.emf_line("users-api")).unwrap();

        // Assert
        assert_eq!(line["_aws"]["CloudWatchMetrics"][0]["Metrics"], json!([]));
        assert!(line.get("CacheHit").is_none() && line.get("ColdStart").is_none());
    }
}
