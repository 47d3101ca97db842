//! Database offload: a Zipf-distributed `find` workload over the bulk-inserted
//! users, counting what reaches Postgres (`store().reads()`, the library's
//! count of single-user reads) against what no cache could avoid (the first
//! request for each id).

use crate::fixtures::{Events, Zipf, request};
use crate::handlers::{Op, check, handle, x_cache};
use crate::measure::BoxError;
use crate::world::{CALLERS, Plan, World};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use users_api::AppState;
use uuid::Uuid;

pub const WINDOW: usize = 1_000;

pub struct Window {
    pub reads: u64,
    pub first_seen: u64,
}

pub struct Offload {
    pub label: String,
    pub callers: usize,
    pub finds: usize,
    pub reads: u64,
    pub distinct: u64,
    /// Per window of 1,000 finds; single-caller runs only.
    pub windows: Vec<Window>,
    /// How many answers carried each `x-cache` value.
    pub cache: BTreeMap<String, u64>,
    pub failed: u64,
    pub wall: Duration,
}

impl Offload {
    pub fn reads_per_1000(&self) -> f64 {
        self.reads as f64 * 1000.0 / self.finds.max(1) as f64
    }

    pub fn first_seen_per_1000(&self) -> f64 {
        self.distinct as f64 * 1000.0 / self.finds.max(1) as f64
    }

    /// Windows where Postgres saw more reads than new ids.
    pub fn windows_over(&self) -> usize {
        self.windows
            .iter()
            .filter(|window| window.reads > window.first_seen)
            .count()
    }
}

/// Section 6: the same Zipf sequence with one caller, with eight instances
/// sharing a key prefix, and (for reference) with Redis unreachable.
pub async fn run(
    world: &World<'_>,
    plan: &Plan,
    zipf: &Zipf,
    seed: u64,
    runs: &mut Vec<Offload>,
) -> Result<(), BoxError> {
    eprintln!("== database offload");
    let ranks = zipf.sequence(seed, plan.offload_finds);
    let ids = &world.users.offload;
    let events = &world.events;
    let limit = Duration::from_secs(120);

    let state = world.instance("o1", &[]).await;
    let run = sequential("cache, 1 caller", &state, ids, &ranks, events, limit);
    runs.push(run.await?);
    drop(state);

    let mut states = Vec::new();
    for _ in 0..CALLERS {
        states.push(Arc::new(world.instance("o8", &[]).await));
    }
    let ranks_shared = Arc::new(ranks.clone());
    let run = concurrent(
        "cache, 8 callers",
        &states,
        ids.clone(),
        ranks_shared,
        events.clone(),
    );
    runs.push(run.await?);
    drop(states);

    // Nothing listens on a free port: every find bypasses the cache.
    let closed = format!("redis://127.0.0.1:{}", test_support::servers::free_port());
    let overrides = [
        ("REDIS_URL", closed.as_str()),
        ("REDIS_RESPONSE_TIMEOUT_MS", "50"),
        ("REDIS_CONNECT_TIMEOUT_MS", "50"),
    ];
    let state = world.instance("o0", &overrides).await;
    let ranks = &ranks[..plan.offload_finds / 10];
    let label = "no cache (Redis port closed)";
    let run = sequential(label, &state, ids, ranks, events, Duration::from_secs(60));
    runs.push(run.await?);

    for run in runs.iter() {
        eprintln!(
            "  {:<30} {} finds, {} PG reads, {} distinct ids",
            run.label, run.finds, run.reads, run.distinct
        );
    }
    Ok(())
}

/// One caller, window by window, over `ranks` (indexes into `ids`).
pub async fn sequential(
    label: &str,
    state: &AppState,
    ids: &[Uuid],
    ranks: &[usize],
    events: &Events,
    limit: Duration,
) -> Result<Offload, BoxError> {
    let started = Instant::now();
    let mut seen = HashSet::new();
    let mut run = empty(label, 1);
    for window in ranks.chunks(WINDOW) {
        if started.elapsed() > limit {
            break;
        }
        let reads_before = state.users.store().reads();
        let mut first_seen = 0;
        for &rank in window {
            if seen.insert(rank) {
                first_seen += 1;
            }
            let response = handle(Op::FindHit, state, request(&events.find(ids[rank]))).await;
            tally(&mut run, response);
        }
        let reads = state.users.store().reads() - reads_before;
        run.windows.push(Window { reads, first_seen });
        run.reads += reads;
        run.finds += window.len();
    }
    run.distinct = seen.len() as u64;
    run.wall = started.elapsed();
    Ok(run)
}

/// Several instances on the same key prefix drawing from one sequence, as
/// concurrent sandboxes behind one API would.
pub async fn concurrent(
    label: &str,
    states: &[Arc<AppState>],
    ids: Arc<Vec<Uuid>>,
    ranks: Arc<Vec<usize>>,
    events: Arc<Events>,
) -> Result<Offload, BoxError> {
    let started = Instant::now();
    let reads_before: u64 = states.iter().map(|s| s.users.store().reads()).sum();
    let cursor = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for state in states {
        let (state, ids, ranks, events, cursor) = (
            state.clone(),
            ids.clone(),
            ranks.clone(),
            events.clone(),
            cursor.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut run = empty("", 1);
            loop {
                let i = cursor.fetch_add(1, Ordering::Relaxed);
                let Some(&rank) = ranks.get(i) else { break };
                let event = events.find(ids[rank]);
                let response = handle(Op::FindHit, &state, request(&event)).await;
                tally(&mut run, response);
                run.finds += 1;
            }
            run
        }));
    }
    let mut run = empty(label, states.len());
    for task in tasks {
        let part = task.await?;
        run.finds += part.finds;
        run.failed += part.failed;
        for (value, count) in part.cache {
            *run.cache.entry(value).or_default() += count;
        }
    }
    let reads_after: u64 = states.iter().map(|s| s.users.store().reads()).sum();
    run.reads = reads_after - reads_before;
    run.distinct = ranks.iter().collect::<HashSet<_>>().len() as u64;
    run.wall = started.elapsed();
    Ok(run)
}

fn empty(label: &str, callers: usize) -> Offload {
    Offload {
        label: label.to_owned(),
        callers,
        finds: 0,
        reads: 0,
        distinct: 0,
        windows: Vec::new(),
        cache: BTreeMap::new(),
        failed: 0,
        wall: Duration::ZERO,
    }
}

fn tally(
    run: &mut Offload,
    response: Result<lambda_http::Response<lambda_http::Body>, lambda_http::Error>,
) {
    let value = response
        .as_ref()
        .ok()
        .and_then(x_cache)
        .unwrap_or("none")
        .to_owned();
    *run.cache.entry(value).or_default() += 1;
    // Any status but 200 is a failure; hit or miss does not matter here.
    if check(Op::FindMiss, response).is_some_and(|what| !what.starts_with("x-cache")) {
        run.failed += 1;
    }
}
