//! Section 7: one execution environment serving several invocations at once,
//! as on a Lambda Managed Instance (issue 12), where the platform sets
//! `AWS_LAMBDA_MAX_CONCURRENCY` and the runtime keeps that many `next` polls
//! open. One process of the release `find-user` is kept busy by a closed loop
//! of C events in flight through the runtime stub ([`process::closed_loop`]),
//! for each C of [`IN_FLIGHT`], on three workloads:
//!
//! - hit: users cycled from a pool cached beforehand, so no two finds out at
//!   once share a key (merging concurrent finds of one key would not help);
//! - hit on one hot user: every find on the same key;
//! - miss: each find on a user the row's own key space never held (lookup,
//!   lease, SELECT, fill).
//!
//! The hit's throughput is compared with a raw client at the same C: C GETs +
//! decode in flight from one process on one multiplexed redis connection
//! ([`Floor::Get`], with every lane sharing one set of clients), on the
//! runtime a function builds at that C (current_thread at 1, tokio's default
//! multi-thread otherwise). At each C > 1, hit and miss run again with
//! `TOKIO_WORKER_THREADS` set to each of [`WORKERS`], to choose the flavour by
//! measurement.
//!
//! A binary that serves one invocation at a time works too: the stub then
//! hands out one event at a time (its *most in flight* stays 1) and the rest
//! wait in its queue, outside the measured latency.

use crate::fixtures::request;
use crate::floor::{self, Floor};
use crate::handlers::{self, Op};
use crate::measure::{BoxError, Lane, Measured, micros, phase};
use crate::process::{self, Function};
use crate::world::{IN_FLIGHT, Plan, World, concurrent_warmup};
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// The `TOKIO_WORKER_THREADS` values of the runtime-flavour comparison.
pub const WORKERS: [usize; 2] = [1, 2];
/// The key space the hit rows read, filled once for all of them.
const HIT_SPACE: &str = "ch";
/// Numbers the raw client's key apart from the latency floors' (0..8).
const RAW_CALLER: usize = 1_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    RawGet,
    /// The hit without the Runtime API: the handlers called by C tasks on
    /// one `AppState`, so what the transport costs can be told apart.
    InProcessHit,
    Hit,
    HotHit,
    Miss,
}

impl Workload {
    pub fn name(self) -> &'static str {
        match self {
            Self::RawGet => "raw: GET + decode, one multiplexed connection",
            Self::InProcessHit => "find (hit) in-process: one AppState, no Runtime API",
            Self::Hit => "find (hit, a different user each)",
            Self::HotHit => "find (hit, one hot user)",
            Self::Miss => "find (miss, fresh id)",
        }
    }
}

/// One measured row: a workload at one C.
pub struct Row {
    pub workload: Workload,
    pub in_flight: usize,
    /// `TOKIO_WORKER_THREADS` given to the process; `None`: tokio's default.
    pub workers: Option<usize>,
    pub count: u64,
    pub throughput: f64,
    pub p50: Duration,
    pub p99: Duration,
    /// Of the function's process (`None` for the raw client): the most
    /// events it had been handed at once, its threads and its VmHWM in kB.
    pub peak_in_flight: Option<usize>,
    pub threads: Option<u64>,
    pub hwm_kb: Option<u64>,
    pub unexpected: u64,
    pub first_unexpected: Option<String>,
}

impl Row {
    fn print(&self) {
        eprintln!(
            "  {:<46} C={:<2} workers {:<7}: {:>7.0}/s  p50 {:>8.1} us  p99 {:>8.1} us{}{}",
            self.workload.name(),
            self.in_flight,
            self.workers.map_or("default".to_owned(), |w| w.to_string()),
            self.throughput,
            micros(self.p50),
            micros(self.p99),
            self.peak_in_flight
                .map_or(String::new(), |peak| format!("  most in flight {peak}")),
            if self.unexpected > 0 {
                format!("  ({} unexpected)", self.unexpected)
            } else {
                String::new()
            }
        );
    }
}

pub async fn run(
    world: &World<'_>,
    plan: &Plan,
    bin_dir: &Path,
    rows: &mut Vec<Row>,
) -> Result<(), BoxError> {
    eprintln!("== concurrency: one find-user environment, {IN_FLIGHT:?} invocations in flight");
    fill(world, HIT_SPACE, &world.users.concurrent_hit).await?;
    let binary = bin_dir.join("find-user");
    for in_flight in IN_FLIGHT {
        let row = raw_get(world, in_flight, plan.concurrent_hits)?;
        row.print();
        rows.push(row);
        let row = in_process_hit(world, in_flight, plan.concurrent_hits)?;
        row.print();
        rows.push(row);
        let mut runs = vec![
            (Workload::Hit, None),
            (Workload::HotHit, None),
            (Workload::Miss, None),
        ];
        if in_flight > 1 {
            for workload in [Workload::Hit, Workload::Miss] {
                runs.extend(WORKERS.map(|workers| (workload, Some(workers))));
            }
        }
        for (workload, workers) in runs {
            let row = function_row(world, plan, &binary, workload, in_flight, workers).await?;
            row.print();
            rows.push(row);
        }
    }
    Ok(())
}

/// Caches `ids` under `key_space` through the library's own find (each a
/// miss that fills), so the hit rows read what a function wrote.
async fn fill(world: &World<'_>, key_space: &str, ids: &[Uuid]) -> Result<(), BoxError> {
    // Setup, not measured: a looser Redis bound than production's 50 ms, so
    // a busy machine does not turn a fill into a bypass.
    let state = world
        .instance(key_space, &[("REDIS_RESPONSE_TIMEOUT_MS", "1000")])
        .await;
    for &id in ids {
        let event = request(&world.events.find(id));
        let response = handlers::handle(Op::FindMiss, &state, event).await;
        if let Some(what) = handlers::check(Op::FindMiss, response) {
            return Err(format!("caching {id} before the hit rows: {what}").into());
        }
    }
    Ok(())
}

/// `in_flight` GETs + decode out at once on one multiplexed connection.
fn raw_get(world: &World<'_>, in_flight: usize, count: usize) -> Result<Row, BoxError> {
    let warmup = concurrent_warmup(count, in_flight);
    in_process(Workload::RawGet, in_flight, async {
        let clients = floor::Clients::connect(
            &world.database_url,
            &world.redis_url,
            &world.prefix,
            RAW_CALLER,
            world.users.concurrent_hit[0],
        )
        .await?;
        // One set of clients, so one multiplexed connection, for all lanes.
        let shared = Arc::new(clients);
        let lanes = vec![shared; in_flight];
        let per_lane = |n: usize| n.div_ceil(in_flight);
        floor::measure(Floor::Get, &lanes, 0, per_lane(warmup), per_lane(count)).await
    })
}

/// `in_flight` tasks calling the find handler on one `AppState` (one Redis
/// connection, one pool): the environment's own work, without the Runtime
/// API's two HTTP exchanges per invocation (which the stub, on the same
/// vCPUs, serves).
fn in_process_hit(world: &World<'_>, in_flight: usize, count: usize) -> Result<Row, BoxError> {
    let warmup = concurrent_warmup(count, in_flight);
    let per_lane = |n: usize| n.div_ceil(in_flight);
    let users = &world.users.concurrent_hit;
    in_process(Workload::InProcessHit, in_flight, async {
        let concurrency = in_flight.to_string();
        let settings = [("AWS_LAMBDA_MAX_CONCURRENCY", concurrency.as_str())];
        let state = Arc::new(world.instance(HIT_SPACE, &settings).await);
        let lanes = (0..in_flight)
            .map(|lane| {
                // Lane `lane` reads every C-th user, so no two finds out at
                // once share a key.
                let mut ids = users.iter().copied().skip(lane).step_by(in_flight).cycle();
                let mut take = |n| -> Vec<_> {
                    (&mut ids)
                        .take(n)
                        .map(|id| request(&world.events.find(id)))
                        .collect()
                };
                let warmup = take(per_lane(warmup));
                let items = take(per_lane(count));
                let state = state.clone();
                Lane {
                    warmup,
                    items,
                    op: move |event| {
                        let state = state.clone();
                        async move {
                            let answer = handlers::handle(Op::FindHit, &state, event).await;
                            handlers::check(Op::FindHit, answer)
                        }
                    },
                    after: None,
                }
            })
            .collect();
        phase(Workload::InProcessHit.name(), lanes).await
    })
}

/// Runs `measure` on a runtime of its own, built as a function's would be
/// at `in_flight` (current-thread at 1, multi-thread otherwise), and makes
/// its row.
fn in_process(
    workload: Workload,
    in_flight: usize,
    measure: impl Future<Output = Result<Measured, BoxError>> + Send,
) -> Result<Row, BoxError> {
    let measured = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let mut builder = if in_flight == 1 {
                    tokio::runtime::Builder::new_current_thread()
                } else {
                    tokio::runtime::Builder::new_multi_thread()
                };
                builder.enable_all().build()?.block_on(measure)
            })
            .join()
    })
    .map_err(|_| format!("{} panicked", workload.name()))??;
    Ok(Row {
        workload,
        in_flight,
        workers: None,
        count: measured.histogram.len(),
        throughput: measured.throughput(),
        p50: measured.p50(),
        p99: measured.p99(),
        peak_in_flight: None,
        threads: None,
        hwm_kb: None,
        unexpected: measured.unexpected,
        first_unexpected: measured.first_unexpected,
    })
}

/// One process of `find-user` with `AWS_LAMBDA_MAX_CONCURRENCY=in_flight`
/// (and `TOKIO_WORKER_THREADS=workers`), in a closed loop of that many.
async fn function_row(
    world: &World<'_>,
    plan: &Plan,
    binary: &Path,
    workload: Workload,
    in_flight: usize,
    workers: Option<usize>,
) -> Result<Row, BoxError> {
    let users = &world.users;
    let (count, expected) = match workload {
        Workload::Miss => (plan.concurrent_misses, "miss"),
        _ => (plan.concurrent_hits, "hit"),
    };
    let warmup = concurrent_warmup(count, in_flight);
    let ids: Vec<Uuid> = match workload {
        Workload::Hit => (users.concurrent_hit.iter().copied().cycle())
            .take(warmup + count)
            .collect(),
        Workload::HotHit => vec![users.concurrent_hit[0]; warmup + count],
        Workload::Miss => users.concurrent_miss.clone(),
        Workload::RawGet | Workload::InProcessHit => {
            return Err("not a function process".into());
        }
    };
    if ids.len() < warmup + count {
        return Err(format!("{} users for {} misses", ids.len(), warmup + count).into());
    }
    let events = ids
        .iter()
        .take(warmup + count)
        .map(|&id| world.events.find(id))
        .collect();
    // A miss row reads users its own key space has never held.
    let key_space = match workload {
        Workload::Miss => format!("cm{in_flight}w{}", workers.unwrap_or(0)),
        _ => HIT_SPACE.to_owned(),
    };
    let mut env = world.function_env(&key_space);
    env.push((
        "AWS_LAMBDA_MAX_CONCURRENCY".to_owned(),
        in_flight.to_string(),
    ));
    if let Some(workers) = workers {
        env.push(("TOKIO_WORKER_THREADS".to_owned(), workers.to_string()));
    }
    let function = Function {
        name: "find-user",
        binary,
        env: &env,
    };
    let run = process::closed_loop(&function, events, warmup, in_flight, (200, expected)).await;
    if workload == Workload::Miss {
        let keys = format!("{}:{key_space}:*", world.prefix);
        test_support::delete_keys(&world.redis_url, &keys).await;
    }
    let run = run?;
    let count = run.latency.len();
    Ok(Row {
        workload,
        in_flight,
        workers,
        count,
        throughput: count as f64 / run.wall.as_secs_f64().max(f64::EPSILON),
        p50: Duration::from_nanos(run.latency.value_at_quantile(0.50)),
        p99: Duration::from_nanos(run.latency.value_at_quantile(0.99)),
        peak_in_flight: Some(run.peak_in_flight),
        threads: Some(run.threads),
        hwm_kb: Some(run.hwm_kb),
        unexpected: run.unexpected,
        first_unexpected: run.first_unexpected,
    })
}
