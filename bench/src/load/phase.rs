//! One phase: the traffic sent while the answers are collected, a progress
//! line each second, the servers' counters before and after.

use crate::load::fleet::{Op, Outcome, Router};
use crate::load::history::{Entry, Event, History};
use crate::load::metrics::{Delta, Sources};
use crate::load::traffic::{self, Population, Traffic};
use crate::measure::{BoxError, histogram, millis, record};
use hdrhistogram::Histogram;
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// How long answers may still come in after the last request was sent.
const DRAIN_LIMIT: Duration = Duration::from_secs(10);
/// A Postgres (15+) backend reports its counters to `pg_stat_database` at
/// most once a second while busy, and 10 s after it goes idle: waiting this
/// long after a phase lets every backend's last statements be counted.
const PG_STATS_SETTLE: Duration = Duration::from_secs(11);

pub struct Phase {
    pub name: String,
    /// The arrival rate asked for.
    pub offered: f64,
    pub sent: u64,
    pub answered: u64,
    /// First arrival to last answer.
    pub wall: Duration,
    /// Sent to answered: queueing plus the function.
    pub latency: Histogram<u64>,
    pub queued: Histogram<u64>,
    /// How late the generator sent each request (see `Job::arrival`).
    pub lag: Histogram<u64>,
    /// The function's part: event handed out to answer posted.
    pub duration: Histogram<u64>,
    pub by_op: BTreeMap<&'static str, Histogram<u64>>,
    /// `x-cache` of the finds.
    pub cache: BTreeMap<String, u64>,
    /// Status class ("2xx", "404", "5xx", "error") -> count.
    pub statuses: BTreeMap<String, u64>,
    pub first_5xx: Option<String>,
    pub delta: Delta,
}

impl Phase {
    pub fn achieved(&self) -> f64 {
        self.answered as f64 / self.wall.as_secs_f64().max(f64::EPSILON)
    }

    pub fn status(&self, class: &str) -> u64 {
        self.statuses.get(class).copied().unwrap_or(0)
    }

    pub fn failures(&self) -> u64 {
        self.status("5xx") + self.status("error") + (self.sent - self.answered)
    }

    pub fn p(&self, quantile: f64) -> Duration {
        Duration::from_nanos(self.latency.value_at_quantile(quantile))
    }
}

/// What a phase runs against.
pub struct Stage<'a> {
    pub router: Router,
    pub outcomes: &'a mut mpsc::UnboundedReceiver<Outcome>,
    pub population: Arc<Population>,
    pub history: &'a mut History,
    pub sources: Sources<'a>,
    /// Wait [`PG_STATS_SETTLE`] after each phase (off for the smoke run,
    /// whose Postgres counts are then short by up to a second's worth).
    pub settle: bool,
}

pub async fn run(
    stage: &mut Stage<'_>,
    name: &str,
    traffic: Traffic,
    seed: u64,
) -> Result<Phase, BoxError> {
    let (offered, planned) = match &traffic {
        Traffic::Open { rate, duration, .. } => (*rate, *duration),
        Traffic::Fixed { jobs, rate } => (*rate, Duration::from_secs_f64(jobs.len() as f64 / rate)),
    };
    let before = stage.sources.snapshot().await?;
    let started = Instant::now();
    let sent = Arc::new(AtomicU64::new(0));
    let generator = {
        let (sent, population, router) =
            (sent.clone(), stage.population.clone(), stage.router.clone());
        tokio::spawn(async move {
            traffic::generate(traffic, &population, seed, &sent, |job| router.send(job)).await
        })
    };
    let mut generator = std::pin::pin!(generator);
    let mut phase = Phase {
        name: name.to_owned(),
        offered,
        sent: 0,
        answered: 0,
        wall: Duration::ZERO,
        latency: histogram(),
        queued: histogram(),
        lag: histogram(),
        duration: histogram(),
        by_op: BTreeMap::new(),
        cache: BTreeMap::new(),
        statuses: BTreeMap::new(),
        first_5xx: None,
        delta: Delta::default(),
    };
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    let mut total: Option<u64> = None;
    // A starved generator may run late; it gets twice its time, then stops.
    let mut deadline = started + 2 * planned + DRAIN_LIMIT;
    let mut last_answer = started;
    while total.is_none_or(|total| phase.answered < total) && Instant::now() < deadline {
        tokio::select! {
            outcome = stage.outcomes.recv() => {
                let Some(outcome) = outcome else { break };
                // A late answer of an earlier phase: history only.
                if outcome.due < started {
                    remember(stage, &outcome);
                    continue;
                }
                last_answer = outcome.completion.at;
                absorb(&mut phase, stage, outcome);
            }
            _ = ticker.tick() => progress(&phase, started, planned, sent.load(Ordering::Relaxed)),
            result = &mut generator, if total.is_none() => {
                total = Some(result?);
                deadline = Instant::now() + DRAIN_LIMIT;
            }
        }
    }
    generator.abort();
    phase.sent = sent.load(Ordering::Relaxed);
    phase.wall = last_answer.saturating_duration_since(started);
    eprintln!();
    if stage.settle {
        tokio::time::sleep(PG_STATS_SETTLE).await;
    }
    let after = stage.sources.snapshot().await?;
    phase.delta = Delta::between(&before, &after);
    Ok(phase)
}

fn absorb(phase: &mut Phase, stage: &mut Stage<'_>, outcome: Outcome) {
    phase.answered += 1;
    record(&mut phase.latency, outcome.latency());
    record(&mut phase.queued, outcome.queued());
    record(&mut phase.lag, outcome.lag());
    record(&mut phase.duration, outcome.completion.latency);
    let op_name = op_name(outcome.op);
    record(
        phase.by_op.entry(op_name).or_insert_with(histogram),
        outcome.latency(),
    );
    let status = outcome.completion.status;
    let class = match status {
        None => "error".to_owned(),
        Some(404) => "404".to_owned(),
        Some(s) => format!("{}xx", s / 100),
    };
    if matches!(class.as_str(), "5xx" | "error") && phase.first_5xx.is_none() {
        phase.first_5xx = Some(format!(
            "{op_name}: status {status:?}, body {:?}",
            outcome.completion.body.as_deref().unwrap_or("")
        ));
    }
    *phase.statuses.entry(class).or_default() += 1;
    if outcome.op == Op::Find
        && let Some(cache) = &outcome.completion.cache
    {
        *phase.cache.entry(cache.clone()).or_default() += 1;
    }
    remember(stage, &outcome);
}

/// Puts the answer into the history (and a create's user into the churn).
fn remember(stage: &mut Stage<'_>, outcome: &Outcome) {
    let body = outcome.completion.body.as_deref().unwrap_or("");
    let field = |name: &str| -> Option<serde_json::Value> {
        serde_json::from_str::<serde_json::Value>(body)
            .ok()
            .map(|value| value[name].clone())
    };
    // The user's version is its ETag, `"3"`.
    let version = || {
        let etag = outcome.completion.etag.as_deref()?;
        etag.trim_start_matches("W/")
            .trim_matches('"')
            .parse::<i64>()
            .ok()
    };
    let (start, end) = (outcome.dispatched, outcome.completion.at);
    let status = outcome.completion.status;
    let entry = |event| Entry { event, start, end };
    match (outcome.op, status, outcome.user) {
        (Op::Find, Some(200), Some(user)) => {
            if let Some(version) = version() {
                stage
                    .history
                    .record(user, entry(Event::Read(Some(version))));
            }
        }
        (Op::Find, Some(404), Some(user)) => stage.history.record(user, entry(Event::Read(None))),
        (Op::Update, Some(200), Some(user)) => {
            if let Some(version) = version() {
                stage.history.record(user, entry(Event::Wrote(version)));
            }
        }
        (Op::Create, Some(201), _) => {
            let id = field("id").and_then(|id| id.as_str()?.parse().ok());
            if let (Some(id), Some(version)) = (id, version()) {
                stage.history.record(id, entry(Event::Wrote(version)));
                stage.population.created(id);
            }
        }
        (Op::Delete, _, Some(user)) => {
            stage.history.record(user, entry(Event::DeleteSent));
            if status == Some(204) {
                stage.history.record(user, entry(Event::Deleted));
                stage.population.deleted(user);
            }
        }
        _ => {}
    }
}

pub fn op_name(op: Op) -> &'static str {
    match op {
        Op::Find => "find",
        Op::Update => "update",
        Op::Create => "create",
        Op::Delete => "delete",
        Op::List => "list",
    }
}

/// One line a second, redrawn in place on a terminal; every fifth second, a
/// line of its own, in a log.
fn progress(phase: &Phase, started: Instant, planned: Duration, sent: u64) {
    let elapsed = started.elapsed();
    let terminal = std::io::stderr().is_terminal();
    if !terminal && elapsed.as_secs() % 5 != 4 {
        return;
    }
    let p99 = if phase.answered > 0 {
        format!("{:.1} ms", millis(phase.p(0.99)))
    } else {
        "-".to_owned()
    };
    eprint!(
        "{}  {:<22} {:>4.0}/{:.0} s  sent {:>7}  answered {:>7}  in flight {:>5}  \
         {:>6.0}/s  p99 {p99:>9}  5xx {}   {}",
        if terminal { "\r" } else { "" },
        phase.name,
        elapsed.as_secs_f64(),
        planned.as_secs_f64(),
        sent,
        phase.answered,
        sent.saturating_sub(phase.answered),
        phase.answered as f64 / elapsed.as_secs_f64().max(f64::EPSILON),
        phase.status("5xx") + phase.status("error"),
        if terminal { "" } else { "\n" },
    );
}
