//! Sections 4-5 for the release binaries: a series of cold starts of each
//! function, interleaved with the baseline so that all see the same machine,
//! then one long-lived instance of each through the runtime stub, for memory.

use crate::fixtures::Zipf;
use crate::measure::BoxError;
use crate::process::{self, ColdStart, Function};
use crate::report::Report;
use crate::world::{COLD_WARMUP, Plan, World};
use std::path::{Path, PathBuf};

pub const FUNCTIONS: [&str; 5] = [
    "find-user",
    "create-user",
    "update-user",
    "delete-user",
    "list-users",
];

pub fn binaries(bin_dir: &Path) -> Vec<PathBuf> {
    FUNCTIONS.iter().map(|name| bin_dir.join(name)).collect()
}

pub async fn cold_starts(
    world: &World<'_>,
    plan: &Plan,
    bin_dir: &Path,
    report: &mut Report,
) -> Result<(), BoxError> {
    eprintln!(
        "== cold start ({} spawns each, interleaved)",
        plan.cold_runs
    );
    let (users, events) = (&world.users, &world.events);
    let key_space = "c";
    let env = world.function_env(key_space);
    let baseline_env = [
        ("DATABASE_URL".to_owned(), world.database_url.clone()),
        ("REDIS_URL".to_owned(), world.redis_url.clone()),
    ];
    let baseline = bin_dir.join("baseline");
    let binaries = binaries(bin_dir);
    let mut samples: Vec<Vec<ColdStart>> = FUNCTIONS.iter().map(|_| Vec::new()).collect();
    for (run, &delete_id) in users.cold_delete.iter().enumerate() {
        let counted = run >= COLD_WARMUP;
        let sample = process::baseline(&baseline, &baseline_env).await?;
        if counted {
            report.baseline.push(sample);
        }
        for (i, name) in FUNCTIONS.iter().enumerate() {
            let event = match *name {
                "find-user" => cold_find_event(world, key_space).await,
                "create-user" => events.create(&format!("cold-new-{run}@bench.example.com"), "Ada"),
                "update-user" => {
                    let email = format!("cold-upd-{run}@bench.example.com");
                    events.update(users.cold_update, &email, "Ada King")
                }
                "delete-user" => events.delete(delete_id),
                _ => events.list(20),
            };
            let function = Function {
                name,
                binary: &binaries[i],
                env: &env,
            };
            let sample = process::cold_start(&function, event).await?;
            if counted {
                samples[i].push(sample);
            }
        }
    }
    report.cold = FUNCTIONS
        .iter()
        .map(|name| (*name).to_owned())
        .zip(samples)
        .collect();
    Ok(())
}

/// The event of a cold find: a miss, its key space emptied first, so that
/// the first answer reads Postgres and fills.
pub async fn cold_find_event(world: &World<'_>, key_space: &str) -> String {
    let keys = format!("{}:{key_space}:*", world.prefix);
    test_support::delete_keys(&world.redis_url, &keys).await;
    world.events.find(world.users.cold_find)
}

/// One instance of each function through `rss_short` invocations (find-user
/// on to `rss_long`, Zipf over the offload users), memory read at each mark.
pub async fn memory(
    world: &World<'_>,
    plan: &Plan,
    bin_dir: &Path,
    zipf: &Zipf,
    seed: u64,
    report: &mut Report,
) -> Result<(), BoxError> {
    eprintln!("== resident memory through the runtime stub");
    let (users, events) = (&world.users, &world.events);
    let env = world.function_env("r");
    let binaries = binaries(bin_dir);
    let short = plan.rss_short;
    for (i, name) in FUNCTIONS.iter().enumerate() {
        let (events, marks, status): (Vec<String>, Vec<usize>, u16) = match *name {
            "find-user" => (
                zipf.sequence(seed, plan.rss_long)
                    .into_iter()
                    .map(|rank| events.find(users.offload[rank]))
                    .collect(),
                vec![short, plan.rss_long],
                200,
            ),
            "create-user" => (
                (0..short)
                    .map(|i| events.create(&format!("rss-new-{i}@bench.example.com"), "Ada"))
                    .collect(),
                vec![short],
                201,
            ),
            "update-user" => (
                (0..short)
                    .map(|i| {
                        let email = format!("rss-upd-{i}@bench.example.com");
                        events.update(users.cold_update, &email, "Ada King")
                    })
                    .collect(),
                vec![short],
                200,
            ),
            "delete-user" => (
                users
                    .rss_delete
                    .iter()
                    .map(|id| events.delete(*id))
                    .collect(),
                vec![short],
                204,
            ),
            _ => (
                (0..short).map(|_| events.list(20)).collect(),
                vec![short],
                200,
            ),
        };
        let function = Function {
            name,
            binary: &binaries[i],
            env: &env,
        };
        let run = process::long_run(&function, events, &marks, status).await?;
        if let Some(last) = run.checkpoints.last() {
            eprintln!(
                "  {name:<12} {} invocations: VmRSS {} kB, VmHWM {} kB",
                last.invocations, last.rss_kb, last.hwm_kb
            );
        }
        report.long_runs.push(((*name).to_owned(), run));
    }
    Ok(())
}
