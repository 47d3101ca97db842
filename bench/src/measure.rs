//! Timing: HDR histograms of single calls and the caller loop that every
//! in-process measurement shares.
//!
//! A phase runs one lane per caller, each on its own task with its own
//! connections (a caller is a Lambda sandbox). Lanes warm up, meet at a
//! barrier, then time each call alone; everything a call needs (the parsed
//! event, a fresh id) is prepared before the barrier, so the timed section is
//! the call and nothing else, and the phase's wall time is a fair basis for
//! throughput.

use hdrhistogram::Histogram;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Barrier;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Latencies in nanoseconds, 1 ns to 60 s, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("constant bounds are valid")
}

pub fn record(histogram: &mut Histogram<u64>, elapsed: Duration) {
    histogram.saturating_record(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX));
}

/// What a timed call returns: `None` when it answered as expected, or what
/// was unexpected (a status, an `x-cache` value, an error), counted and shown.
pub type Check = Option<String>;

/// One caller's work: untimed warm-up items, then the timed items.
pub struct Lane<T, F> {
    pub warmup: Vec<T>,
    pub items: Vec<T>,
    pub op: F,
    /// Run after each call, outside its timing: what the Lambda runtime does
    /// once the response has been posted (writing the deferred telemetry).
    pub after: Option<Box<dyn Fn() + Send + Sync>>,
}

/// The outcome of one phase.
pub struct Measured {
    pub name: String,
    pub callers: usize,
    pub histogram: Histogram<u64>,
    pub wall: Duration,
    pub unexpected: u64,
    pub first_unexpected: Option<String>,
    /// The p50 of each slice absorbed so far, in slice order (see
    /// [`Measured::absorb`]); empty for a lone slice.
    pub slice_p50s: Vec<Duration>,
}

impl Measured {
    pub fn p50(&self) -> Duration {
        Duration::from_nanos(self.histogram.value_at_quantile(0.50))
    }

    pub fn p99(&self) -> Duration {
        Duration::from_nanos(self.histogram.value_at_quantile(0.99))
    }

    /// Calls per second over the phase's wall time, all callers together.
    pub fn throughput(&self) -> f64 {
        self.histogram.len() as f64 / self.wall.as_secs_f64().max(f64::EPSILON)
    }

    /// Starts the merge of a phase's slices with its first one.
    pub fn first_slice(mut self) -> Self {
        self.slice_p50s = vec![self.p50()];
        self
    }

    /// Adds another slice of the same phase.
    pub fn absorb(&mut self, slice: Measured) -> Result<(), BoxError> {
        self.slice_p50s.push(slice.p50());
        self.histogram.add(&slice.histogram)?;
        self.wall += slice.wall;
        self.unexpected += slice.unexpected;
        if self.first_unexpected.is_none() {
            self.first_unexpected = slice.first_unexpected;
        }
        Ok(())
    }

    /// One progress line on stderr.
    pub fn print(&self) {
        eprintln!(
            "  {:<48} x{}: p50 {:>8.1} us  p99 {:>8.1} us  {:>8.0}/s{}",
            self.name,
            self.callers,
            micros(self.p50()),
            micros(self.p99()),
            self.throughput(),
            if self.unexpected > 0 {
                format!("  ({} unexpected)", self.unexpected)
            } else {
                String::new()
            }
        );
    }
}

struct LaneResult {
    histogram: Histogram<u64>,
    start: Instant,
    end: Instant,
    unexpected: u64,
    first_unexpected: Option<String>,
}

/// Runs the lanes concurrently and merges their histograms.
pub async fn phase<T, F, Fut>(name: &str, lanes: Vec<Lane<T, F>>) -> Result<Measured, BoxError>
where
    T: Send + 'static,
    F: Fn(T) -> Fut + Send + 'static,
    Fut: Future<Output = Check> + Send + 'static,
{
    let callers = lanes.len();
    let barrier = Arc::new(Barrier::new(callers));
    let tasks: Vec<_> = lanes
        .into_iter()
        .map(|lane| tokio::spawn(run_lane(lane, barrier.clone())))
        .collect();
    let mut merged = histogram();
    let mut start: Option<Instant> = None;
    let mut end: Option<Instant> = None;
    let mut unexpected = 0;
    let mut first_unexpected = None;
    for task in tasks {
        let lane = task.await?;
        merged.add(&lane.histogram)?;
        start = Some(start.map_or(lane.start, |s| s.min(lane.start)));
        end = Some(end.map_or(lane.end, |e| e.max(lane.end)));
        unexpected += lane.unexpected;
        first_unexpected = first_unexpected.or(lane.first_unexpected);
    }
    let wall = match (start, end) {
        (Some(start), Some(end)) => end - start,
        _ => Duration::ZERO,
    };
    Ok(Measured {
        name: name.to_owned(),
        callers,
        histogram: merged,
        wall,
        unexpected,
        first_unexpected,
        slice_p50s: Vec::new(),
    })
}

async fn run_lane<T, F, Fut>(lane: Lane<T, F>, barrier: Arc<Barrier>) -> LaneResult
where
    F: Fn(T) -> Fut,
    Fut: Future<Output = Check>,
{
    let after = || {
        if let Some(after) = &lane.after {
            after();
        }
    };
    for item in lane.warmup {
        (lane.op)(item).await;
        after();
    }
    barrier.wait().await;
    let mut histogram = histogram();
    let mut unexpected = 0;
    let mut first_unexpected = None;
    let start = Instant::now();
    for item in lane.items {
        let began = Instant::now();
        let check = (lane.op)(item).await;
        record(&mut histogram, began.elapsed());
        after();
        if let Some(what) = check {
            unexpected += 1;
            first_unexpected.get_or_insert(what);
        }
    }
    LaneResult {
        histogram,
        start,
        end: Instant::now(),
        unexpected,
        first_unexpected,
    }
}

pub fn micros(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e6
}

pub fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

/// The median of a handful of samples (cold starts).
pub fn median(samples: &[Duration]) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    match sorted.len() {
        0 => Duration::ZERO,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2,
    }
}

/// Adds a slice to the phase of the same name, or starts that phase;
/// slice 0 is the uncounted one. `BENCH_PRINT_SLICES=1` prints every slice,
/// to see a run's drift.
pub fn merge(merged: &mut Vec<Measured>, slice: Measured, index: usize) -> Result<(), BoxError> {
    if std::env::var_os("BENCH_PRINT_SLICES").is_some() {
        slice.print();
    }
    if index == 0 {
        return Ok(());
    }
    match merged.iter_mut().find(|m| m.name == slice.name) {
        Some(phase) => phase.absorb(slice),
        None => {
            merged.push(slice.first_slice());
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        let ms = Duration::from_millis;

        assert_eq!(median(&[ms(5), ms(1), ms(3)]), ms(3));
        assert_eq!(
            median(&[ms(4), ms(1), ms(3), ms(2)]),
            Duration::from_micros(2500)
        );
        assert_eq!(median(&[]), Duration::ZERO);
    }
}
