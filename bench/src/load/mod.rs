//! `users-api-bench load`: many environments of the release functions under
//! an open-loop load (issue 15; `scripts/load.sh` builds and runs it).
//!
//! 1. Setup: the load's own database schema and Redis server
//!    ([`setup`]), U users plus spares for the churn and users for the cost
//!    phases, and the environments ([`fleet`]), each ready.
//! 2. Warm-up: a few seconds of the mix, not reported.
//! 3. Costs: one kind of request at a time at a steady rate (find miss, find
//!    hit, update, create, delete), each phase's counters divided by its
//!    requests: Redis commands and bytes, Postgres transactions and the CPU of
//!    each component per request ([`metrics`]).
//! 4. Load: Poisson arrivals of the mix for the duration ([`traffic`]).
//! 5. With `--saturate`: the rate stepped up until p99 passes the bound, or
//!    errors appear; the knee is the last rate within the bound.
//!
//! Every answer goes into the history the checker reads at the end
//! ([`history`]): no find may return a value older than an acknowledged
//! write. From the end of the cost phases until the end, the fleet's
//! `invalidate-cache` environment applies the change records and audits the
//! cache ([`auditor`]); its counts must agree with the checker's verdict. The report (markdown) goes to stdout or `--out`, progress to
//! stderr. Everything stays on loopback and is bounded: each phase by its
//! duration plus a drain limit, the whole run by [`RUN_LIMIT`]; Ctrl-C stops
//! it, and the environments, the Redis server and the schema go with it.

mod auditor;
pub mod fleet;
mod history;
mod metrics;
mod options;
mod phase;
mod report;
mod setup;
pub mod traffic;

use crate::fixtures::Row;
use crate::measure::BoxError;
use fleet::{Fleet, Op, Shape};
use history::History;
use metrics::Sources;
use options::Options;
use phase::{Phase, Stage};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use traffic::{Mix, Planned, Population, Traffic};

/// The whole run, whatever the options.
const RUN_LIMIT: Duration = Duration::from_secs(30 * 60);
const WARMUP: Duration = Duration::from_secs(3);
const SPARES: usize = 1_000;

/// Everything measured, for the report.
pub struct Results {
    pub options: Options,
    pub costs: Vec<Phase>,
    pub load: Option<Phase>,
    pub steps: Vec<Phase>,
    pub verdict: history::Verdict,
    /// What the fleet's auditor (and consumer) did during the load.
    pub audit: auditor::Totals,
    /// Keys in the load's Redis at the end, and its `used_memory` in bytes
    /// over that of the empty server.
    pub redis_memory: (u64, u64),
}

/// Runs `users-api-bench load ARGS`; the report goes to `--out` or stdout.
pub async fn main(args: Vec<String>) -> Result<(), BoxError> {
    let options = Options::parse(args)?;
    eprintln!("== load: setting up a database schema and a Redis server of its own");
    let servers = setup::Servers::start().await?;
    let outcome = tokio::select! {
        outcome = tokio::time::timeout(RUN_LIMIT, run(&servers, options)) => {
            outcome.unwrap_or_else(|_| Err(format!("the run went past {RUN_LIMIT:?}").into()))
        }
        _ = tokio::signal::ctrl_c() => Err("interrupted".into()),
    };
    // The environments were stopped when `run` ended (or was dropped).
    servers.stop().await;
    let results = outcome?;
    let text = report::render(&results);
    match &results.options.out {
        Some(path) => std::fs::write(path, text)?,
        None => print!("{text}"),
    }
    // A 5xx under load is reported, not fatal (a write refused when Redis is
    // slow is the protocol working); a stale read is the guarantee broken,
    // and an auditor that does not see what the checker sees is broken too.
    let (verdict, audit) = (&results.verdict, &results.audit);
    let mut failed = Vec::new();
    if verdict.stale > 0 || verdict.unexplained_404 > 0 {
        failed.push(format!(
            "the checker found {} stale reads and {} 404s without a delete",
            verdict.stale, verdict.unexplained_404
        ));
    }
    if !audit.agree(verdict.stale) {
        failed.push(format!(
            "the auditor ({} inconsistent of {} audited) and the checker ({} stale reads) disagree",
            audit.audit.inconsistent, audit.audit.audited, verdict.stale
        ));
    }
    match failed.is_empty() {
        true => Ok(()),
        false => Err(failed.join("; ").into()),
    }
}

async fn run(servers: &setup::Servers, options: Options) -> Result<Results, BoxError> {
    let rows = Row::many("load", options.users);
    let spares = Row::many("spare", SPARES);
    let costs = Row::many("cost", options.costs);
    let spare_ids: Vec<_> = spares.iter().map(|row| row.id).collect();
    let cost_ids: Vec<_> = costs.iter().map(|row| row.id).collect();
    let all: Vec<Row> = rows.into_iter().chain(spares).chain(costs).collect();
    servers.seed(&all).await?;
    eprintln!(
        "   {} users in {}.{}",
        all.len(),
        setup::DATABASE,
        servers.schema
    );
    let population = Arc::new(Population::new(
        all,
        options.users,
        options.zipf,
        &spare_ids,
        &servers.schema[5..13],
    ));

    let shape = Shape {
        environments: [
            options.find_envs,
            options.envs,
            options.envs,
            options.envs,
            options.envs,
        ],
        slots: options.slots,
        writers_prefix: options.break_invalidation.then_some("load-writers"),
    };
    let env = vec![
        ("DATABASE_URL".to_owned(), servers.database_url.clone()),
        ("REDIS_URL".to_owned(), servers.redis_url.clone()),
        ("CACHE_KEY_PREFIX".to_owned(), "load".to_owned()),
    ];
    eprintln!(
        "== starting {} environments ({} of find-user, {} of each other function, {} at once each)",
        shape.environments.iter().sum::<usize>(),
        options.find_envs,
        options.envs,
        options.slots
    );
    let (done, mut outcomes) = mpsc::unbounded_channel();
    let mut fleet = Fleet::start(&options.bin_dir, shape, &env, done).await?;
    if options.break_invalidation {
        // Nor does the broken deployment leave change records for the
        // consumer to void the finds' keys with.
        servers.disable_change_records().await?;
    }
    let pids = fleet.pids();
    let mut redis = servers.redis().await?;
    let (_, empty_memory) = metrics::memory(&mut redis).await?;
    let mut history = History::default();
    let mut stage = Stage {
        router: fleet.router(),
        outcomes: &mut outcomes,
        population: population.clone(),
        history: &mut history,
        sources: Sources {
            admin: &servers.admin,
            database: setup::DATABASE,
            redis: &mut redis,
            redis_pid: servers.redis_pid,
            function_pids: &pids,
        },
        settle: !options.smoke,
    };
    let mut seed = options.seed;
    let mut next_seed = || {
        seed += 1;
        seed
    };

    let warmup = Traffic::Open {
        mix: options.mix,
        rate: options.rate,
        duration: WARMUP,
    };
    phase::run(&mut stage, "warm-up", warmup, next_seed()).await?;

    let mut cost_phases = Vec::new();
    if !cost_ids.is_empty() {
        eprintln!(
            "== costs: {} requests of each kind at {}/s",
            cost_ids.len(),
            options.cost_rate
        );
        let on = |op: Op| -> Vec<Planned> { cost_ids.iter().map(|&id| (op, Some(id))).collect() };
        let creates = vec![(Op::Create, None); cost_ids.len()];
        let kinds: [(&str, Vec<Planned>); 4] = [
            ("find, miss", on(Op::Find)),
            ("find, hit", on(Op::Find)),
            ("update (user cached)", on(Op::Update)),
            ("create", creates),
        ];
        for (name, jobs) in kinds {
            let traffic = Traffic::Fixed {
                jobs,
                rate: options.cost_rate,
            };
            cost_phases.push(phase::run(&mut stage, name, traffic, next_seed()).await?);
        }
        let deletes: Vec<_> = population
            .take_churn(cost_ids.len())
            .into_iter()
            .map(|id| (Op::Delete, Some(id)))
            .collect();
        let traffic = Traffic::Fixed {
            jobs: deletes,
            rate: options.cost_rate,
        };
        cost_phases.push(phase::run(&mut stage, "delete", traffic, next_seed()).await?);
    }

    eprintln!(
        "== the auditor: invalidate-cache, CACHE_AUDIT_PER_SECOND={}, in runs of a few seconds",
        options.audit_rate
    );
    let auditor = auditor::Auditor::start(&options.bin_dir, &env, options.audit_rate).await?;
    let mut load = None;
    if options.duration > Duration::ZERO {
        eprintln!(
            "== load: {}/s for {:?}, {}, Zipf s={} over {} users",
            options.rate,
            options.duration,
            options.mix.describe(),
            options.zipf,
            options.users
        );
        let traffic = Traffic::Open {
            mix: options.mix,
            rate: options.rate,
            duration: options.duration,
        };
        load = Some(phase::run(&mut stage, "load", traffic, next_seed()).await?);
    }

    let mut steps = Vec::new();
    if let Some(saturate) = &options.saturate {
        eprintln!(
            "== saturation: from {}/s, x{} every {:?}, until p99 > {:?}",
            saturate.start, saturate.factor, saturate.step, saturate.bound
        );
        let mut rate = saturate.start;
        for n in 0..saturate.max_steps {
            let traffic = Traffic::Open {
                mix: options.mix,
                rate,
                duration: saturate.step,
            };
            let step =
                phase::run(&mut stage, &format!("step {}", n + 1), traffic, next_seed()).await?;
            let over = step.p(0.99) > saturate.bound || step.failures() > 0;
            steps.push(step);
            if over || !fleet.alive() {
                break;
            }
            rate = (rate * saturate.factor).round();
        }
    }
    let audit = auditor.stop().await?;
    if !fleet.alive() {
        return Err("an environment exited during the run".into());
    }
    drop(stage);
    let (keys, used) = metrics::memory(&mut redis).await?;
    let redis_memory = (keys, used.saturating_sub(empty_memory));
    let verdict = history.check();
    Ok(Results {
        options,
        costs: cost_phases,
        load,
        steps,
        verdict,
        audit,
        redis_memory,
    })
}

/// The mix of the default load.
pub fn default_mix() -> Mix {
    Mix([95, 3, 1, 1, 0])
}
