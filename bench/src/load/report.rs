//! The load's results as markdown: the run, the cost per request, the load
//! table, the saturation steps and their knee, the checker's verdict.

use crate::load::Results;
use crate::load::phase::Phase;
use crate::measure::millis;
use std::fmt::Write;
use std::time::Duration;

pub fn render(results: &Results) -> String {
    let mut out = String::new();
    run(&mut out, results);
    costs(&mut out, &results.costs);
    let rows: Vec<&Phase> = results.load.iter().chain(&results.steps).collect();
    load(&mut out, results, &rows);
    knee(&mut out, results);
    verdict(&mut out, results);
    out
}

fn run(out: &mut String, results: &Results) {
    let o = &results.options;
    let _ = writeln!(out, "### Load run\n\n| | |\n|---|---|");
    let rows = [
        (
            "command",
            format!(
                "`scripts/load.sh{}{}`",
                if o.command.is_empty() { "" } else { " " },
                o.command
            ),
        ),
        (
            "environments",
            format!(
                "find-user {}, each other function {}; {} invocation(s) at once each{}",
                o.find_envs,
                o.envs,
                o.slots,
                if o.slots == 1 {
                    " (classic Lambda)"
                } else {
                    " (AWS_LAMBDA_MAX_CONCURRENCY)"
                }
            ),
        ),
        (
            "routing",
            "each function's requests in one queue, taken by whichever environment has a free \
             slot; waiting in it counts in the latency (queued)"
                .to_owned(),
        ),
        (
            "workload",
            format!(
                "Poisson arrivals; {}; Zipf s={} over {} users (a fiftieth of the finds on the \
                 last users created or deleted)",
                o.mix.describe(),
                o.zipf,
                o.users
            ),
        ),
        (
            "function settings",
            if o.break_invalidation {
                "BROKEN ON PURPOSE (--break-invalidation): the write functions use another \
                 CACHE_KEY_PREFIX than find-user, and the change records' trigger is off"
            } else {
                "code defaults (as the template), own database schema, CACHE_KEY_PREFIX and \
                 redis-server"
            }
            .to_owned(),
        ),
    ];
    for (key, value) in rows {
        let _ = writeln!(out, "| {key} | {value} |");
    }
    let (keys, used) = results.redis_memory;
    let _ = writeln!(
        out,
        "| Redis memory at the end | {keys} keys, used_memory {:.1} MiB over the empty \
         server's: {:.0} bytes per key |",
        used as f64 / 1_048_576.0,
        used as f64 / keys.max(1) as f64
    );
}

fn costs(out: &mut String, phases: &[Phase]) {
    if phases.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\n### Cost per request (each kind alone, counters divided by its requests)\n\n\
         | requests | n | Redis requests read | Redis commands | of which | Redis bytes in / out | \
         Postgres transactions | CPU ms: function | Redis | Postgres backend | \
         function duration p50 / p99 ms |\n\
         |---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|"
    );
    for phase in phases {
        let n = phase.answered.max(1) as f64;
        let d = &phase.delta;
        let _ = writeln!(
            out,
            "| {} | {} | {:.2} | {:.2} | {} | {:.0} / {:.0} | {:.2} | {:.3} | {:.3} | {:.3} | {:.2} / {:.2} |",
            phase.name,
            phase.answered,
            d.redis_reads as f64 / n,
            d.redis_commands() as f64 / n,
            d.redis_mix(n),
            d.redis_in as f64 / n,
            d.redis_out as f64 / n,
            d.pg_transactions as f64 / n,
            1e3 * d.functions_cpu / n,
            1e3 * d.redis_cpu / n,
            1e3 * d.pg_backends_cpu / n,
            ms(quantile(&phase.duration, 0.5)),
            ms(quantile(&phase.duration, 0.99)),
        );
    }
    let statuses: Vec<String> = phases
        .iter()
        .map(|p| format!("{}: {}", p.name, statuses(p)))
        .collect();
    let _ = writeln!(out, "\nAnswers: {}.", statuses.join("; "));
    let usec: Vec<String> = phases
        .iter()
        .map(|p| format!("{}: {}", p.name, p.delta.redis_usec()))
        .collect();
    let _ = writeln!(
        out,
        "\nRedis's own time per call (`INFO commandstats`; a script's includes what it \
         calls): {}.",
        usec.join("; ")
    );
}

fn load(out: &mut String, results: &Results, rows: &[&Phase]) {
    if rows.is_empty() {
        return;
    }
    let o = &results.options;
    let _ = writeln!(
        out,
        "\n### Load ({} find-user environments, {} of each other function, {} at once each)\n\n\
         | phase | s | offered /s | achieved /s | p50 ms | p99 ms | p99.9 ms | queued p99 ms | sender lag p99 ms | \
         function mean ms | busy slots | \
         find x-cache | answers | Postgres tx/s | Postgres conns | Redis requests / commands per s | Redis KB/s in / out | \
         CPU s: functions / Redis / Postgres backends / all postgres / driver |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---:|---:|---:|---:|---|",
        o.find_envs, o.envs, o.slots
    );
    for phase in rows {
        let d = &phase.delta;
        let s = phase.wall.as_secs_f64().max(f64::EPSILON);
        let _ = writeln!(
            out,
            "| {} | {:.0} | {:.0} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.1} | {} | {} | {:.0} | {} | {:.0} / {:.0} | {:.0} / {:.0} | {:.1} / {:.1} / {:.1} / {:.1} / {:.1} |",
            phase.name,
            phase.wall.as_secs_f64(),
            phase.offered,
            phase.achieved(),
            ms(phase.p(0.5)),
            ms(phase.p(0.99)),
            ms(phase.p(0.999)),
            ms(quantile(&phase.queued, 0.99)),
            ms(quantile(&phase.lag, 0.99)),
            phase.duration.mean() / 1e6,
            // Little's law: the slots busy on average, from the durations.
            phase.duration.mean() / 1e9 * phase.duration.len() as f64 / s,
            cache_mix(phase),
            statuses(phase),
            d.pg_transactions as f64 / s,
            d.pg_connections,
            d.redis_reads as f64 / s,
            d.redis_commands() as f64 / s,
            d.redis_in as f64 / s / 1024.0,
            d.redis_out as f64 / s / 1024.0,
            d.functions_cpu,
            d.redis_cpu,
            d.pg_backends_cpu,
            d.postgres_cpu,
            d.driver_cpu,
        );
    }
    let per_op: Vec<String> = rows
        .iter()
        .map(|phase| {
            let ops: Vec<String> = phase
                .by_op
                .iter()
                .map(|(op, h)| {
                    format!(
                        "{op} {} {:.2}/{:.2}",
                        h.len(),
                        ms(Duration::from_nanos(h.value_at_quantile(0.5))),
                        ms(Duration::from_nanos(h.value_at_quantile(0.99)))
                    )
                })
                .collect();
            format!("{}: {}", phase.name, ops.join(", "))
        })
        .collect();
    let _ = writeln!(
        out,
        "\nBy request (count, p50/p99 ms): {}.",
        per_op.join("; ")
    );
    if let Some(first) = rows.iter().find_map(|p| p.first_5xx.as_ref()) {
        let _ = writeln!(out, "\nFirst 5xx or error: {}.", first.replace('|', "/"));
    }
}

fn knee(out: &mut String, results: &Results) {
    let Some(saturate) = &results.options.saturate else {
        return;
    };
    let bound = millis(saturate.bound);
    let within: Vec<&Phase> = results
        .steps
        .iter()
        .take_while(|p| p.p(0.99) <= saturate.bound && p.failures() == 0)
        .collect();
    let _ = match (within.last(), results.steps.len() > within.len()) {
        (Some(last), true) => writeln!(
            out,
            "\nKnee: {:.0}/s offered ({:.0}/s achieved) is the last step with p99 <= {bound:.0} ms \
             and no errors; the next step passed it.",
            last.offered,
            last.achieved()
        ),
        (Some(last), false) => writeln!(
            out,
            "\nKnee: not reached; every step up to {:.0}/s kept p99 <= {bound:.0} ms.",
            last.offered
        ),
        (None, _) => writeln!(out, "\nKnee: below the first step's rate."),
    };
}

fn verdict(out: &mut String, results: &Results) {
    let v = &results.verdict;
    let failures: u64 = results
        .costs
        .iter()
        .chain(&results.load)
        .chain(&results.steps)
        .map(Phase::failures)
        .sum();
    let _ = writeln!(
        out,
        "\n### Checker\n\n{} finds checked against {} acknowledged writes: {} stale, {} 404s \
         without a delete{}; {} 5xx, errors or unanswered.",
        v.reads,
        v.writes,
        v.stale,
        v.unexplained_404,
        v.first
            .as_ref()
            .map_or(String::new(), |first| format!(" (first: {first})")),
        failures
    );
    results
        .audit
        .render(out, results.options.audit_rate, results.verdict.stale);
}

fn cache_mix(phase: &Phase) -> String {
    let total: u64 = phase.cache.values().sum();
    let parts: Vec<String> = phase
        .cache
        .iter()
        .map(|(name, n)| format!("{name} {:.1}%", 100.0 * *n as f64 / total.max(1) as f64))
        .collect();
    parts.join(", ")
}

fn statuses(phase: &Phase) -> String {
    let mut parts: Vec<String> = phase
        .statuses
        .iter()
        .map(|(class, n)| format!("{class} {n}"))
        .collect();
    let unanswered = phase.sent.saturating_sub(phase.answered);
    if unanswered > 0 {
        parts.push(format!("unanswered {unanswered}"));
    }
    parts.join(", ")
}

fn quantile(histogram: &hdrhistogram::Histogram<u64>, q: f64) -> Duration {
    Duration::from_nanos(histogram.value_at_quantile(q))
}

fn ms(duration: Duration) -> f64 {
    millis(duration)
}
