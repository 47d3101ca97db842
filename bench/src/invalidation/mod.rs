//! Section 9: writers outside the API (issue 19).
//!
//! **Commit to invalidation.** The load driver's mix ([`mix`]) runs against
//! one key space of the bench's schema, beside `BENCH_CONSUMERS` (1)
//! consumers, the real `invalidate-cache` handler each on a thread and a
//! current-thread runtime of its own, as its function runs ([`consumer`]),
//! and [`WRITERS`] writers outside the API ([`writer`]) on users the mix never
//! reads, so that no find of the mix refills their keys. Before each SQL write a find leaves its user's key
//! holding a known value; the write commits, and the key is read every
//! [`POLL`] until it no longer holds that value. The latency is from the
//! commit's return to that read's return; a key still holding the value
//! after [`NEVER`] counts as never invalidated. The consumers' own
//! `InvalidationLag` (from the change's statement) is reported beside it.
//!
//! **A backfill**: one statement changes the mix's users at once, and one
//! consumer applies their records in full batches ([`consumer::backfill`]):
//! how many a second it can apply, at what CPU a record.
//!
//! **What the records cost an API write**: [`records`].

mod consumer;
mod mix;
mod records;
mod writer;

use crate::fixtures::{self, Row};
use crate::measure::{BoxError, Measured, histogram, millis, record};
use crate::world::{Plan, SLICES, World};
use consumer::Backfill;
use hdrhistogram::Histogram;
use mix::{FIND_ENVS, Mix, OTHER_ENVS, RATE, Tally};
use std::collections::HashMap;
use std::fmt::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use users_api::service::Consumed;
use writer::{KINDS, Writer};

/// The key space of the mix, the consumers and the writers.
const SPACE: &str = "inv";
/// The mix and the consumers only, before the first SQL write.
const WARMUP: Duration = Duration::from_secs(2);
const WRITERS: usize = 4;
/// Users per writer, written in turn.
const PROBES: usize = 6;
/// Each writer's pace: 40 SQL writes a second together.
const EVERY: Duration = Duration::from_millis(100);
const POLL: Duration = Duration::from_millis(1);
const NEVER: Duration = Duration::from_secs(3);
const TARGET: Duration = Duration::from_secs(1);

#[derive(Default)]
pub struct Invalidation {
    pub seconds: u64,
    pub consumers: usize,
    /// Per kind of SQL write: the latencies of those voided, and how many
    /// never were.
    pub voided: Vec<(Histogram<u64>, u64)>,
    pub skipped: u64,
    pub consumed: Consumed,
    pub consumer_cpu: Duration,
    /// Change records no consumer had deleted at the end.
    pub left: i64,
    pub mix: Tally,
    pub backfill: Backfill,
    pub costs: Vec<Measured>,
}

pub async fn run(
    world: &World<'_>,
    plan: &Plan,
    quick: bool,
    bin_dir: &Path,
) -> Result<Invalidation, BoxError> {
    let consumers = std::env::var("BENCH_CONSUMERS").map_or(Ok(1), |n| n.parse())?;
    let seconds = if quick { 5 } else { 20 };
    eprintln!("== commit to invalidation: the load mix, {consumers} consumer(s), {seconds} s");
    let probes = Row::many("inv-probe", WRITERS * PROBES);
    fixtures::insert(world.env.pg(), &world.env.schema, &probes).await?;
    let length = Duration::from_secs(seconds);
    let run_for = WARMUP + length + NEVER + Duration::from_secs(1);
    let env = world.function_env(SPACE);
    let mix = Mix::start(world, bin_dir, &env, run_for).await?;
    // The seeding's records (every user inserted so far), applied as a
    // consumer before this one would have: not a backlog to measure.
    let records = format!("{}.user_changes", world.env.schema);
    world
        .env
        .pg()
        .batch_execute(&format!("DELETE FROM {records}"))
        .await?;
    let settings: Arc<HashMap<String, String>> = Arc::new(env.into_iter().collect());
    let consumers: Vec<_> = (0..consumers)
        .map(|_| {
            let settings = settings.clone();
            tokio::task::spawn_blocking(move || consumer::run(&settings, run_for))
        })
        .collect();
    let mut writers = Vec::new();
    for mine in probes.chunks(PROBES) {
        let mut writer = Writer {
            state: world.instance(SPACE, &[]).await,
            pg: world.env.own_pg().await,
            redis: world.env.redis().await,
            events: world.events.clone(),
            users: format!("{}.users", world.env.schema),
            probes: mine.iter().map(|r| (r.id, r.email.clone(), 0)).collect(),
        };
        writers.push(tokio::spawn(async move {
            tokio::time::sleep(WARMUP).await;
            writer.run(Instant::now() + length).await
        }));
    }
    let mut result = Invalidation {
        seconds,
        consumers: consumers.len(),
        voided: KINDS.iter().map(|_| (histogram(), 0)).collect(),
        ..Invalidation::default()
    };
    for writer in writers {
        for (kind, outcome) in writer.await?? {
            match outcome {
                Ok(Some(latency)) => record(&mut result.voided[kind].0, latency),
                Ok(None) => result.voided[kind].1 += 1,
                Err(()) => result.skipped += 1,
            }
        }
    }
    result.mix = mix.stop().await?;
    for consumer in consumers {
        let (consumed, cpu) = consumer.await??;
        let total = &mut result.consumed;
        total.applied += consumed.applied;
        total.voided += consumed.voided;
        total.batches += consumed.batches;
        total.failures += consumed.failures;
        total.max_lag_ms = total.max_lag_ms.max(consumed.max_lag_ms);
        result.consumer_cpu += cpu;
    }
    let left = format!("SELECT count(*) FROM {records}");
    result.left = world.env.pg().query_one(&left, &[]).await?.get(0);
    eprintln!("== a backfill: one UPDATE of the mix's users, one consumer");
    let pattern = format!("{}-%", mix::TAG);
    result.backfill = consumer::backfill(world.env, settings, &pattern).await?;
    eprintln!("== what the change records cost an API write, 1 caller, {SLICES} slices");
    // A function serves one request at a time on a current_thread runtime.
    result.costs = std::thread::scope(|scope| {
        let round = || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(records::measure(plan, &world.events))
        };
        scope.spawn(round).join()
    })
    .map_err(|_| "the cost round panicked")??;
    Ok(result)
}

impl Invalidation {
    pub fn render(&self, out: &mut String) {
        let at = |h: &Histogram<u64>, q: f64| millis(Duration::from_nanos(h.value_at_quantile(q)));
        // p50, p99, max.
        let figures = |h: &Histogram<u64>| {
            if h.is_empty() {
                return "- | - | -".to_owned();
            }
            format!("{:.2} | {:.2} | {:.2}", at(h, 0.5), at(h, 0.99), at(h, 1.0))
        };
        let _ = writeln!(
            out,
            "\n### Writers outside the API: commit to invalidation\n\n\
             {} s of SQL writes ({WRITERS} writers, each a write every {} ms on users of its own) \
             beside the load mix ({FIND_ENVS} find-user environments and {OTHER_ENVS} of each \
             writing function, {RATE}/s, {}) and {} consumer(s). Latency: from the commit's \
             return to a read of the key (one every {} ms) that no longer finds the value it \
             held; never: still held after {} s.\n\n\
             | SQL write | writes | voided | never | p50 ms | p99 ms | max ms | target | met |\n\
             |---|---:|---:|---:|---:|---:|---:|---|---|",
            self.seconds,
            EVERY.as_millis(),
            crate::load::default_mix().describe(),
            self.consumers,
            POLL.as_millis(),
            NEVER.as_secs()
        );
        let (mut all, mut never) = (histogram(), 0);
        for (kind, (voided, missed)) in KINDS.iter().zip(&self.voided) {
            let _ = all.add(voided);
            never += missed;
            let _ = writeln!(
                out,
                "| {kind} | {} | {} | {missed} | {} | | |",
                voided.len() + missed,
                voided.len(),
                figures(voided),
            );
        }
        let p99 = at(&all, 0.99);
        let met = never == 0 && !all.is_empty() && p99 <= millis(TARGET);
        let _ = writeln!(
            out,
            "| all | {} | {} | {never} | {} | p99 <= {} ms | {} |",
            all.len() + never,
            all.len(),
            figures(&all),
            TARGET.as_millis(),
            if met { "yes" } else { "**no**" }
        );
        let c = &self.consumed;
        let (sent, answered, failed, latency) = &self.mix;
        let (p50, p99) = latency
            .as_ref()
            .map_or((0.0, 0.0), |h| (at(h, 0.5), at(h, 0.99)));
        let _ = writeln!(
            out,
            "\nConsumers: {} records applied (the API's writes' too) in {} batches, {} keys \
             voided, {} failures; their own `InvalidationLag` at most {} ms; CPU {:.3} ms a \
             record; {} records left at the end. Writes not watched (the find left the key \
             empty): {}. The mix: {sent} sent, {answered} answered, {failed} 5xx or \
             unanswered; p50 {p50:.2} ms, p99 {p99:.2} ms.",
            c.applied,
            c.batches,
            c.voided,
            c.failures,
            c.max_lag_ms,
            millis(self.consumer_cpu) / c.applied.max(1) as f64,
            self.left,
            self.skipped,
        );
        let b = &self.backfill;
        let applied_in = b
            .applied_in
            .map_or("not all within 5 s".to_owned(), |took| {
                let rate = b.records as f64 / took.as_secs_f64();
                format!("all in {:.0} ms ({rate:.0} a second)", millis(took))
            });
        let _ = writeln!(
            out,
            "\nA backfill, one UPDATE of {} users: one consumer applied {} records {applied_in}, \
             in {} batches, CPU {:.3} ms a record.",
            b.records,
            b.consumed.applied,
            b.consumed.batches,
            millis(b.cpu) / b.consumed.applied.max(1) as f64,
        );
        if !self.costs.is_empty() {
            records::render(&self.costs, out);
        }
    }
}
