//! CloudWatch Embedded Metric Format lines, written by hand.
//!
//! CloudWatch turns a JSON line on stdout into metrics without an API call,
//! an agent or extra latency
//! (<https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html>).
//! Built by hand rather than through `serde_json::Value`: this runs on every
//! request, and building a map of values per request cost more than the rest
//! of a cache hit (BENCHMARKS-history.md, "Tuning").

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The EMF units this service uses (a subset of CloudWatch's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Milliseconds,
    Count,
}

impl Unit {
    fn as_str(self) -> &'static str {
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
pub fn line(namespace: &str, dimensions: &[(&str, &str)], metrics: &[(&str, f64, Unit)]) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    line_at(now, namespace, dimensions, metrics)
}

/// [`line`] at `timestamp` since the epoch.
fn line_at(
    timestamp: Duration,
    namespace: &str,
    dimensions: &[(&str, &str)],
    metrics: &[(&str, f64, Unit)],
) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    #[test]
    fn an_emf_line_declares_its_metrics_and_carries_their_values_at_top_level() {
        // Arrange
        let timestamp = Duration::from_millis(1_764_130_000_123);
        let metrics = [
            ("PostgresLatency", 1.5, Unit::Milliseconds),
            ("ColdStart", 1.0, Unit::Count),
        ];

        // Act
        let line = line_at(
            timestamp,
            "users-api",
            &[("Function", "find-user")],
            &metrics,
        );

        // Assert
        assert!(!line.contains('\n'), "one line");
        assert_eq!(
            serde_json::from_str::<Value>(&line).unwrap(),
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
    fn names_with_quotes_and_control_characters_stay_valid_json() {
        // Arrange
        let name = "a\"b\\c\u{1}";

        // Act
        let line = line("ns", &[(name, name)], &[]);

        // Assert
        let parsed: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(parsed[name], name);
    }
}
