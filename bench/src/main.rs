//! The benchmark suite of BENCHMARKS.md, in one run against the local
//! Postgres and Redis (`scripts/bench.sh` builds and runs it):
//!
//! 1. floors: raw Redis GET, Postgres SELECT by primary key, GET+SELECT+SET;
//! 2. the five handlers in-process with API Gateway v2 events, 1 and 8 callers;
//! 3. each `find` path against its floor;
//! 4. cold start of the release binaries against a Runtime API stub, against
//!    the `baseline` binary;
//! 5. footprint: binary and zip sizes, resident memory over 10,000 invocations;
//! 6. database offload under a Zipf workload;
//! 7. concurrency: one find-user environment with 1 to 64 invocations in
//!    flight, against a raw Redis client at the same concurrency;
//! 8. a hot key across its expiry, with eager refresh off, by threshold and
//!    by XFetch;
//! 9. writers outside the API: commit-to-invalidation latency under the load
//!    mix, and what the change records cost an API write.
//! 10. what `CACHE_GUARD_REPLICAS=1` adds to an update and a delete, against
//!     a private primary with a replica on loopback.
//! 11. the auditor's cost per audited entry: Postgres statements and time,
//!     Redis commands and time.
//!
//! Everything lives in one `TestEnv` (its own schema and key prefix), removed
//! at the end, also when a step fails. Progress goes to stderr, the markdown
//! report to stdout or to `--out FILE` (stdout also carries the in-process
//! handlers' EMF metric lines).
//!
//! Options: `--quick` (a tenth of the iterations, for trying it out),
//! `--bin-dir DIR` (the release binaries; default: beside this one),
//! `--arm64-dir DIR` (cargo lambda's `target/lambda`), `--arm64-note TEXT`,
//! `--out FILE`, `--no-spinner` (see `spinner.rs`), `--only SECTION` (one of
//! [`SECTIONS`]; the setup runs in full either way).

mod audit;
mod concurrency;
mod fixtures;
mod floor;
mod footprint;
mod guard_replicas;
mod handlers;
mod invalidation;
mod latency;
mod lifecycle;
mod load;
mod measure;
mod offload;
mod paired;
mod process;
mod refresh;
mod report;
mod spinner;
mod traces;
mod world;

use fixtures::Zipf;
use measure::BoxError;
use report::Report;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::OnceLock;
use std::time::Duration;
use test_support::TestEnv;
use world::{OFFLOAD_USERS, Plan, SLICES, World};

const ZIPF_EXPONENT: f64 = 1.0;
const SEED: u64 = 0x5eed_0001;
/// Every step is bounded on its own; this bounds the whole run as well.
const SUITE_LIMIT: Duration = Duration::from_secs(20 * 60);
/// What `--only` accepts, in the order they run: `latency` is sections 1-3;
/// `memory` and `footprint` are the two tables of section 5.
const SECTIONS: [&str; 11] = [
    "latency",
    "offload",
    "cold-start",
    "memory",
    "footprint",
    "concurrency",
    "hot-key",
    "invalidation",
    "guard-replicas",
    "audit",
    "traces",
];

struct Options {
    quick: bool,
    bin_dir: PathBuf,
    arm64_dir: Option<PathBuf>,
    arm64_note: Option<String>,
    out: Option<PathBuf>,
    spinner: bool,
    only: Option<String>,
}

impl Options {
    fn runs(&self, section: &str) -> bool {
        self.only.as_deref().is_none_or(|only| only == section)
    }
}

fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some("load") {
        return load_main();
    }
    let options = match parse_options() {
        Ok(options) => options,
        Err(error) => {
            eprintln!("users-api-bench: {error}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("users-api-bench: tokio runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let (report, outcome) = runtime.block_on(run(&options));
    // The handlers write their EMF metric lines to stdout, so the report
    // goes to a file of its own when asked.
    match &options.out {
        Some(path) => {
            if let Err(error) = std::fs::write(path, report.render()) {
                eprintln!("users-api-bench: {}: {error}", path.display());
                return ExitCode::FAILURE;
            }
        }
        None => print!("{}", report.render()),
    }
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("users-api-bench: failed: {error}");
            ExitCode::FAILURE
        }
    }
}

/// `users-api-bench load ...`: see `load/mod.rs`.
fn load_main() -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("users-api-bench load: tokio runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(load::main(std::env::args().skip(2).collect())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("users-api-bench load: {error}");
            ExitCode::FAILURE
        }
    }
}

fn parse_options() -> Result<Options, BoxError> {
    let mut options = Options {
        quick: false,
        bin_dir: std::env::current_exe()?
            .parent()
            .ok_or("no directory beside this binary")?
            .to_owned(),
        arm64_dir: None,
        arm64_note: None,
        out: None,
        spinner: true,
        only: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--quick" => options.quick = true,
            "--bin-dir" => options.bin_dir = value()?.into(),
            "--arm64-dir" => options.arm64_dir = Some(value()?.into()),
            "--arm64-note" => options.arm64_note = Some(value()?),
            "--out" => options.out = Some(value()?.into()),
            "--no-spinner" => options.spinner = false,
            "--only" => {
                let section = value()?;
                if !SECTIONS.contains(&section.as_str()) {
                    return Err(format!("--only takes one of {}", SECTIONS.join(", ")).into());
                }
                options.only = Some(section);
            }
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    Ok(options)
}

/// Runs the suite in an env of its own, removed whatever the outcome; the
/// report holds whatever was measured before a failure.
async fn run(options: &Options) -> (Report, Result<(), BoxError>) {
    let mut report = Report {
        arm64_note: options.arm64_note.clone(),
        ..Report::default()
    };
    eprintln!("== setting up a schema and key prefix of our own");
    let env = TestEnv::new().await;
    clean_up_on_panic(&env);
    let outcome = tokio::time::timeout(SUITE_LIMIT, suite(&env, options, &mut report))
        .await
        .unwrap_or_else(|_| Err(format!("the suite ran past {SUITE_LIMIT:?}").into()));
    drop(env);
    (report, outcome)
}

async fn suite(env: &TestEnv, options: &Options, report: &mut Report) -> Result<(), BoxError> {
    let plan = Plan::new(options.quick);
    let world = World::set_up(env, &plan).await?;
    world.describe(&mut report.context).await?;
    if options.runs("latency") {
        let spinner = options.spinner.then(spinner::Spinner::start);
        latency::run(&world, &plan, report).await?;
        report.context.push((
            "idle spinner during the latency sections".to_owned(),
            spinning(spinner).to_owned(),
        ));
    }
    let zipf = Zipf::new(OFFLOAD_USERS, ZIPF_EXPONENT);
    if options.runs("offload") {
        offload::run(&world, &plan, &zipf, SEED, &mut report.offload).await?;
    }
    if options.runs("cold-start") {
        lifecycle::cold_starts(&world, &plan, &options.bin_dir, report).await?;
    }
    if options.runs("memory") {
        lifecycle::memory(&world, &plan, &options.bin_dir, &zipf, SEED + 1, report).await?;
    }
    if options.runs("concurrency") {
        let spinner = options.spinner.then(spinner::Spinner::start);
        concurrency::run(&world, &plan, &options.bin_dir, &mut report.concurrency).await?;
        report.context.push((
            "idle spinner during the concurrency section".to_owned(),
            spinning(spinner).to_owned(),
        ));
    }
    if options.runs("hot-key") {
        refresh::run(
            &world,
            options.quick,
            &mut report.context,
            &mut report.hot_key,
        )
        .await?;
    }
    if options.runs("invalidation") {
        let section = invalidation::run(&world, &plan, options.quick, &options.bin_dir).await;
        report.invalidation = Some(section?);
    }
    if options.runs("guard-replicas") {
        eprintln!("== what CACHE_GUARD_REPLICAS=1 adds to a write, 1 caller, {SLICES} slices");
        // A function serves one request at a time on a current_thread runtime.
        let events = &world.events;
        report.guard_replicas = std::thread::scope(|scope| {
            let round = || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                runtime.block_on(guard_replicas::measure(&plan, events))
            };
            scope.spawn(round).join()
        })
        .map_err(|_| "the guard-replicas round panicked")??;
    }
    if options.runs("audit") {
        report.audit = audit::run(options.quick).await?;
    }
    if options.runs("traces") {
        let costs = traces::run(
            &world,
            &plan,
            &options.bin_dir,
            options.arm64_dir.as_deref(),
        )
        .await;
        report.traces = Some(costs?);
    }
    if options.runs("footprint") {
        eprintln!("== footprint");
        let binaries = lifecycle::binaries(&options.bin_dir);
        for (name, binary) in lifecycle::FUNCTIONS.iter().zip(&binaries) {
            let footprint = footprint::measure(name, binary, options.arm64_dir.as_deref())?;
            report.footprint.push(footprint);
        }
    }
    Ok(())
}

/// Stops the spinner of a section and says how it ran, for the report.
fn spinning(spinner: Option<spinner::Spinner>) -> &'static str {
    match spinner.map(spinner::Spinner::stop) {
        Some(true) => "on: one SCHED_IDLE thread kept a vCPU awake",
        Some(false) => "off: SCHED_IDLE was refused",
        None => "off (--no-spinner)",
    }
}

/// The release profile aborts on panic, so `TestEnv`'s drop would not run:
/// remove the schema and keys from the panic hook instead.
fn clean_up_on_panic(env: &TestEnv) {
    static TARGET: OnceLock<(String, String, String, String)> = OnceLock::new();
    let _ = TARGET.set((
        env.settings["DATABASE_URL"].clone(),
        env.schema.clone(),
        env.settings["REDIS_URL"].clone(),
        env.key_prefix.clone(),
    ));
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default_hook(info);
        let Some((database_url, schema, redis_url, prefix)) = TARGET.get().cloned() else {
            return;
        };
        let cleanup = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                if let Ok((client, connection)) =
                    tokio_postgres::connect(&database_url, tokio_postgres::NoTls).await
                {
                    tokio::spawn(connection);
                    let drop_schema = format!("DROP SCHEMA IF EXISTS {schema} CASCADE");
                    let _ = client.batch_execute(&drop_schema).await;
                }
                test_support::delete_keys(&redis_url, &format!("{prefix}:*")).await;
            });
        });
        let _ = cleanup.join();
        eprintln!("users-api-bench: removed the benchmark's schema and keys after the panic");
    }));
}
