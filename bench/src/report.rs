//! The results as markdown: the tables BENCHMARKS.md shows, each target with
//! its measured value and whether it was met.

use crate::concurrency::{Row, WORKERS, Workload};
use crate::floor::Floor;
use crate::footprint::Footprint;
use crate::handlers::Op;
use crate::invalidation::Invalidation;
use crate::measure::{Measured, median, micros, millis};
use crate::offload::Offload;
use crate::process::{ColdStart, LongRun};
use crate::refresh::{self, HotKey};
use crate::world::IN_FLIGHT;
use std::fmt::Write;
use std::time::Duration;

/// Labels of the reference rows the latency rounds add and the ratio table
/// reads back.
pub const HIT_METRICS_OFF: &str = "find (hit), metrics off";
pub const HIT_TELEMETRY_INLINE: &str = "find (hit), telemetry written before answering";
pub const MISS_METRICS_OFF: &str = "find (miss, fresh id), metrics off";

pub const ZIP_TARGET_BYTES: u64 = 2 * 1024 * 1024;
pub const RSS_TARGET_KB: u64 = 16 * 1024;
pub const RATIO_TARGET: f64 = 1.25;
pub const READY_TARGET: f64 = 2.0;
/// One environment's hit throughput against a raw GET client's, same C.
pub const CONCURRENT_HIT_TARGET: f64 = 0.8;

#[derive(Default)]
pub struct Report {
    pub context: Vec<(String, String)>,
    pub latency: Vec<Measured>,
    pub cold: Vec<(String, Vec<ColdStart>)>,
    pub baseline: Vec<(Duration, Duration)>,
    pub footprint: Vec<Footprint>,
    pub arm64_note: Option<String>,
    pub long_runs: Vec<(String, LongRun)>,
    pub offload: Vec<Offload>,
    pub concurrency: Vec<Row>,
    pub hot_key: Vec<HotKey>,
    pub invalidation: Option<Invalidation>,
    /// What `CACHE_GUARD_REPLICAS=1` adds to a write.
    pub guard_replicas: Vec<Measured>,
    /// What the auditor costs per audited entry.
    pub audit: Vec<crate::audit::Cost>,
    /// What traces cost find-user's cold start and size.
    pub traces: Option<crate::traces::Costs>,
}

impl Report {
    fn find(&self, name: &str, callers: usize) -> Option<&Measured> {
        self.latency
            .iter()
            .find(|m| m.name == name && m.callers == callers)
    }

    fn ratio(&self, path: &str, floor: &str, callers: usize) -> Option<f64> {
        let path = self.find(path, callers)?;
        let floor = self.find(floor, callers)?;
        Some(path.p50().as_secs_f64() / floor.p50().as_secs_f64().max(f64::EPSILON))
    }

    /// The median over slices of (path p50 / floor p50) within one slice:
    /// a path and its floor measured minutes apart can land in different
    /// wake-up regimes of the VM, back to back in one slice they rarely do.
    fn slice_ratio(&self, path: &str, floor: &str, callers: usize) -> Option<f64> {
        let path = self.find(path, callers)?;
        let floor = self.find(floor, callers)?;
        let mut ratios: Vec<f64> = path
            .slice_p50s
            .iter()
            .zip(&floor.slice_p50s)
            .map(|(path, floor)| path.as_secs_f64() / floor.as_secs_f64().max(f64::EPSILON))
            .collect();
        if ratios.is_empty() {
            return None;
        }
        ratios.sort_by(f64::total_cmp);
        let middle = ratios.len() / 2;
        Some(if ratios.len().is_multiple_of(2) {
            (ratios[middle - 1] + ratios[middle]) / 2.0
        } else {
            ratios[middle]
        })
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        self.render_context(&mut out);
        self.render_latency(&mut out);
        self.render_ratios(&mut out);
        self.render_cold(&mut out);
        self.render_footprint(&mut out);
        self.render_offload(&mut out);
        self.render_concurrency(&mut out);
        self.render_hot_key(&mut out);
        if let Some(invalidation) = &self.invalidation {
            invalidation.render(&mut out);
        }
        crate::guard_replicas::render(&self.guard_replicas, &mut out);
        crate::audit::render(&self.audit, &mut out);
        crate::traces::render(self.traces.as_ref(), &mut out);
        out
    }

    fn render_context(&self, out: &mut String) {
        let _ = writeln!(out, "### Run\n\n| | |\n|---|---|");
        for (key, value) in &self.context {
            let _ = writeln!(out, "| {key} | {value} |");
        }
    }

    fn render_latency(&self, out: &mut String) {
        if self.latency.is_empty() {
            return;
        }
        let _ = writeln!(
            out,
            "\n### Latency: floors and handlers (in-process)\n\n\
             | path | callers | calls | p50 µs | p99 µs | throughput /s | unexpected |\n\
             |---|---:|---:|---:|---:|---:|---|"
        );
        for m in &self.latency {
            let unexpected = match (&m.first_unexpected, m.unexpected) {
                (Some(first), n) => format!("{n} (first: {})", first.replace('|', "/")),
                (None, _) => "0".to_owned(),
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {:.1} | {:.1} | {:.0} | {unexpected} |",
                m.name,
                m.callers,
                m.histogram.len(),
                micros(m.p50()),
                micros(m.p99()),
                m.throughput(),
            );
        }
    }

    fn render_ratios(&self, out: &mut String) {
        if self.latency.is_empty() {
            return;
        }
        let _ = writeln!(
            out,
            "\n### Ratio to the floor (p50 / p50)\n\n\
             | path / floor | callers | p50 / p50, slices merged | median of slice ratios | target | met (slice median) |\n|---|---:|---:|---:|---:|---|"
        );
        let (hit, miss) = (Op::FindHit.name(), Op::FindMiss.name());
        let (get, fill) = (Floor::Get.name(), Floor::GetSelectSet.name());
        let (lease_get, lease_fill) = (Floor::Lease.name(), Floor::LeaseSelectSet.name());
        let pairs = [
            (hit, get, true),
            (miss, fill, true),
            (lease_get, get, false),
            (lease_fill, fill, false),
            (hit, lease_get, false),
            (miss, lease_fill, false),
            (HIT_METRICS_OFF, get, false),
            (HIT_TELEMETRY_INLINE, get, false),
            (MISS_METRICS_OFF, fill, false),
            (Op::CreateKeyed.name(), Op::Create.name(), false),
        ];
        for (path, floor, target) in pairs {
            for callers in [1, 8] {
                if let (Some(ratio), Some(sliced)) = (
                    self.ratio(path, floor, callers),
                    self.slice_ratio(path, floor, callers),
                ) {
                    let (target, met) = if target {
                        (
                            format!("<= {RATIO_TARGET}x"),
                            yes_no(sliced <= RATIO_TARGET),
                        )
                    } else {
                        ("(breakdown)".to_owned(), "")
                    };
                    let _ = writeln!(
                        out,
                        "| {path} / {floor} | {callers} | {ratio:.2}x | {sliced:.2}x | {target} | {met} |"
                    );
                }
            }
        }
    }

    fn render_cold(&self, out: &mut String) {
        if self.cold.is_empty() {
            return;
        }
        let ready: Vec<Duration> = self.baseline.iter().map(|(ready, _)| *ready).collect();
        let exit: Vec<Duration> = self.baseline.iter().map(|(_, exit)| *exit).collect();
        let base = median(&ready);
        let _ = writeln!(
            out,
            "\n### Cold start (median of {} spawns each)\n\n\
             | binary | ready ms | first response ms | ready / baseline | target | met | answers |\n\
             |---|---:|---:|---:|---:|---|---|",
            self.baseline.len()
        );
        let _ = writeln!(
            out,
            "| baseline (connect PG + Redis, SELECT 1 + PING) | {:.2} | exit {:.2} | 1.00x | | | |",
            millis(base),
            millis(median(&exit))
        );
        for (function, runs) in &self.cold {
            let ready = median(&runs.iter().map(|r| r.ready).collect::<Vec<_>>());
            let first = median(&runs.iter().map(|r| r.first_response).collect::<Vec<_>>());
            let ratio = ready.as_secs_f64() / base.as_secs_f64().max(f64::EPSILON);
            let mut statuses: Vec<String> = runs
                .iter()
                .map(|r| r.status.map_or("error".to_owned(), |s| s.to_string()))
                .collect();
            statuses.dedup();
            let _ = writeln!(
                out,
                "| {function} | {:.2} | {:.2} | {ratio:.2}x | <= {READY_TARGET}x | {} | {} |",
                millis(ready),
                millis(first),
                yes_no(ratio <= READY_TARGET),
                statuses.join(", ")
            );
        }
    }

    fn render_footprint(&self, out: &mut String) {
        if self.footprint.is_empty() && self.long_runs.is_empty() {
            return;
        }
        let _ = writeln!(out, "\n### Footprint");
        if !self.footprint.is_empty() {
            self.render_sizes(out);
        }
        if !self.long_runs.is_empty() {
            self.render_long_runs(out);
        }
    }

    fn render_sizes(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "\n| function | binary (x86_64) | zip (x86_64) | zip (arm64, cargo lambda) | arm64 zip target | met |\n\
             |---|---:|---:|---:|---:|---|"
        );
        for f in &self.footprint {
            // The target is for the deployed (arm64) zip; the x86_64 zip
            // stands in only when the arm64 build could not run.
            let judged = f.arm64_zip_bytes.or(f.zip_bytes);
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | <= {} | {} |",
                f.function,
                bytes(Some(f.binary_bytes)),
                bytes(f.zip_bytes),
                bytes(f.arm64_zip_bytes),
                bytes(Some(ZIP_TARGET_BYTES)),
                judged.map_or("n/a", |b| yes_no(b <= ZIP_TARGET_BYTES)),
            );
        }
        if let Some(note) = &self.arm64_note {
            let _ = writeln!(out, "\narm64: {note}");
        }
    }

    fn render_long_runs(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "\n| function (through the runtime stub) | invocations | VmRSS kB | VmHWM kB | stub p50 µs | stub p99 µs | invocations/s | target | met | unexpected |\n\
             |---|---:|---:|---:|---:|---:|---:|---:|---|---|"
        );
        for (function, run) in &self.long_runs {
            let throughput = run.latency.len() as f64 / run.wall.as_secs_f64().max(f64::EPSILON);
            for (i, memory) in run.checkpoints.iter().enumerate() {
                let last = i + 1 == run.checkpoints.len();
                let _ = writeln!(
                    out,
                    "| {function} | {} | {} | {} | {} | {} | {} | <= {RSS_TARGET_KB} | {} | {} |",
                    memory.invocations,
                    memory.rss_kb,
                    memory.hwm_kb,
                    if last {
                        format!("{:.1}", micros(quantile(run, 0.5)))
                    } else {
                        String::new()
                    },
                    if last {
                        format!("{:.1}", micros(quantile(run, 0.99)))
                    } else {
                        String::new()
                    },
                    if last {
                        format!("{throughput:.0}")
                    } else {
                        String::new()
                    },
                    yes_no(memory.hwm_kb <= RSS_TARGET_KB),
                    if last {
                        run.unexpected.to_string()
                    } else {
                        String::new()
                    },
                );
            }
        }
    }

    fn render_offload(&self, out: &mut String) {
        if self.offload.is_empty() {
            return;
        }
        let _ = writeln!(
            out,
            "\n### Database offload (Zipf s=1.0 over 10,000 users)\n\n\
             | run | callers | finds | PG reads | reads / 1,000 | distinct ids | first seen / 1,000 | windows with reads > first seen | x-cache | failed | met |\n\
             |---|---:|---:|---:|---:|---:|---:|---:|---|---:|---|"
        );
        for run in &self.offload {
            let cache: Vec<String> = run.cache.iter().map(|(k, v)| format!("{k} {v}")).collect();
            let windows = if run.windows.is_empty() {
                "n/a".to_owned()
            } else {
                format!("{} of {}", run.windows_over(), run.windows.len())
            };
            let met = if run.label.starts_with("no cache") {
                "(reference)"
            } else {
                yes_no(run.reads <= run.distinct && run.windows_over() == 0)
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {:.1} | {} | {:.1} | {windows} | {} | {} | {met} |",
                run.label,
                run.callers,
                run.finds,
                run.reads,
                run.reads_per_1000(),
                run.distinct,
                run.first_seen_per_1000(),
                cache.join(", "),
                run.failed,
            );
        }
        if let Some(run) = self.offload.iter().find(|run| !run.windows.is_empty()) {
            let shown: Vec<String> = run
                .windows
                .iter()
                .map(|w| format!("{}/{}", w.reads, w.first_seen))
                .collect();
            let _ = writeln!(
                out,
                "\nPer window of 1,000 finds, PG reads / ids first seen ({}): {}",
                run.label,
                shown.join(" ")
            );
        }
    }
}

impl Report {
    fn render_hot_key(&self, out: &mut String) {
        if self.hot_key.is_empty() {
            return;
        }
        let _ = writeln!(
            out,
            "\n### A hot key across its expiry (entries fresh for {} s, 4 instances, Postgres {} ms away each way)\n\n\
             \"near a read\": finds that started within {} ms of a find answered `miss` or \
             `refresh` (a Postgres read); \"slow\": finds over {} ms.\n\n\
             | eager refresh | pace | finds | x-cache | PG reads | p50 µs | p99 µs | max µs | slow | finds near a read | p90 near a read µs | p99 near a read µs | max near a read µs | failed |\n\
             |---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
            refresh::TTL_SECONDS,
            refresh::PG_DELAY.as_millis(),
            refresh::NEAR.as_millis(),
            refresh::SLOW.as_millis()
        );
        for run in &self.hot_key {
            let cache: Vec<String> = run
                .cache
                .iter()
                .map(|(name, count)| format!("{name} {count}"))
                .collect();
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {:.0} | {:.0} | {:.0} | {} | {} | {:.0} | {:.0} | {:.0} | {} |",
                run.policy,
                run.pace,
                run.finds,
                cache.join(", "),
                run.reads,
                micros(run.p50),
                micros(run.p99),
                micros(run.max),
                run.slow,
                run.near_finds,
                micros(run.near_p90),
                micros(run.near_p99),
                micros(run.near_max),
                run.failed,
            );
        }
    }

    fn concurrent(&self, workload: Workload, c: usize, workers: Option<usize>) -> Option<&Row> {
        self.concurrency
            .iter()
            .find(|row| row.workload == workload && row.in_flight == c && row.workers == workers)
    }

    fn render_concurrency(&self, out: &mut String) {
        if self.concurrency.is_empty() {
            return;
        }
        let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
        let _ = writeln!(
            out,
            "\n### Concurrency: one find-user environment, C invocations in flight\n\n\
             The stub, the raw client, Redis, Postgres and the function share the \
             machine's {cores} vCPUs.\n\n\
             | path | in flight | TOKIO_WORKER_THREADS | invocations | invocations/s | p50 µs | p99 µs | most in flight seen | threads | VmHWM kB | unexpected |\n\
             |---|---:|---|---:|---:|---:|---:|---:|---:|---:|---|"
        );
        let or_blank = |value: Option<u64>| value.map_or(String::new(), |v| v.to_string());
        for row in &self.concurrency {
            let unexpected = match &row.first_unexpected {
                Some(first) => format!("{} (first: {})", row.unexpected, first.replace('|', "/")),
                None => "0".to_owned(),
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {:.0} | {:.1} | {:.1} | {} | {} | {} | {unexpected} |",
                row.workload.name(),
                row.in_flight,
                row.workers.map_or("unset".to_owned(), |w| w.to_string()),
                row.count,
                row.throughput,
                micros(row.p50),
                micros(row.p99),
                or_blank(row.peak_in_flight.map(|peak| peak as u64)),
                or_blank(row.threads),
                or_blank(row.hwm_kb),
            );
        }
        let _ = writeln!(
            out,
            "\n| in flight | find (hit) /s | raw GET /s | find (hit) / raw GET | target | met | find (hit, one hot user) / raw GET | in-process find (hit) / raw GET |\n\
             |---:|---:|---:|---:|---:|---|---:|---:|"
        );
        for c in IN_FLIGHT {
            let (Some(hit), Some(raw)) = (
                self.concurrent(Workload::Hit, c, None),
                self.concurrent(Workload::RawGet, c, None),
            ) else {
                continue;
            };
            let ratio = |row: &Row| row.throughput / raw.throughput.max(f64::EPSILON);
            let hot = self
                .concurrent(Workload::HotHit, c, None)
                .map_or(String::new(), |hot| format!("{:.2}x", ratio(hot)));
            let in_process = self
                .concurrent(Workload::InProcessHit, c, None)
                .map_or(String::new(), |row| format!("{:.2}x", ratio(row)));
            let _ = writeln!(
                out,
                "| {c} | {:.0} | {:.0} | {:.2}x | >= {CONCURRENT_HIT_TARGET}x | {} | {hot} | {in_process} |",
                hit.throughput,
                raw.throughput,
                ratio(hit),
                yes_no(ratio(hit) >= CONCURRENT_HIT_TARGET),
            );
        }
        let [one, two] = WORKERS;
        let _ = writeln!(
            out,
            "\n| path | in flight | TOKIO_WORKER_THREADS={one} /s | ={two} /s | {two} / {one} | p99 µs, {one} / {two} |\n\
             |---|---:|---:|---:|---:|---:|"
        );
        for workload in [Workload::Hit, Workload::Miss] {
            for c in IN_FLIGHT {
                let (Some(a), Some(b)) = (
                    self.concurrent(workload, c, Some(one)),
                    self.concurrent(workload, c, Some(two)),
                ) else {
                    continue;
                };
                let _ = writeln!(
                    out,
                    "| {} | {c} | {:.0} | {:.0} | {:.2}x | {:.1} / {:.1} |",
                    workload.name(),
                    a.throughput,
                    b.throughput,
                    b.throughput / a.throughput.max(f64::EPSILON),
                    micros(a.p99),
                    micros(b.p99),
                );
            }
        }
        let single: Vec<String> = [Workload::Hit, Workload::Miss]
            .into_iter()
            .filter_map(|workload| self.concurrent(workload, 1, None))
            .map(|row| format!("{} {:.0}/s", row.workload.name(), row.throughput))
            .collect();
        if !single.is_empty() {
            let _ = writeln!(
                out,
                "\nAt C = 1 (`AWS_LAMBDA_MAX_CONCURRENCY=1`, a current_thread runtime): {}.",
                single.join(", ")
            );
        }
    }
}

fn quantile(run: &LongRun, q: f64) -> Duration {
    Duration::from_nanos(run.latency.value_at_quantile(q))
}

fn yes_no(met: bool) -> &'static str {
    if met { "yes" } else { "**no**" }
}

fn bytes(value: Option<u64>) -> String {
    match value {
        Some(b) => format!("{:.2} MiB ({b})", b as f64 / (1024.0 * 1024.0)),
        None => "n/a".to_owned(),
    }
}
