//! Section 10: what `CACHE_GUARD_REPLICAS=1` adds to a write (issue 20):
//! update and delete through the in-process handlers, one caller on a
//! current-thread runtime (a Lambda sandbox), against a primary of the
//! bench's own with one replica beside it on loopback, where the guard and
//! the release are each followed by `WAIT 1`; and the same writes with `0`
//! on the same primary. Each setting has a schema of its own (a delete needs
//! ids of its own); the two take turns phase by phase (which goes first
//! alternates) over [`SLICES`] slices after an uncounted one, as in
//! `invalidation/records.rs`, so that both see the same minutes of this
//! shared machine.

use crate::fixtures::{self, Events, Row};
use crate::handlers::{self, Caller, Op};
use crate::measure::merge;
use crate::measure::{BoxError, Measured, micros};
use crate::world::{PRODUCTION, Plan, SLICES, fresh_ids_needed};
use std::fmt::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};
use test_support::TestEnv;
use test_support::servers::RedisServer;
use test_support::tls::TempDir;

const WRITES: [Op; 2] = [Op::Update, Op::Delete];
const SETTINGS: [&str; 2] = ["1", "0"];
/// Five times the plan's writes: the difference sought, two loopback round
/// trips, is a fifth of a write, and this machine is shared.
const SCALE: usize = 5;

/// The writes with each setting, merged over the slices.
pub async fn measure(plan: &Plan, events: &Events) -> Result<Vec<Measured>, BoxError> {
    let sizes = plan.sizes[0];
    let writes = sizes.write * SCALE;
    let warmup = (sizes.warmup / SLICES).max(1);
    let part = (writes / SLICES).max(1);
    let dir = TempDir::new("bench-replica");
    let primary = RedisServer::start_with(&["--repl-diskless-sync-delay", "0"]);
    let (primary_port, replica_dir) = (primary.port.to_string(), dir.path().display().to_string());
    let _replica = RedisServer::start_with(&[
        "--replicaof",
        "127.0.0.1",
        &primary_port,
        "--dir",
        &replica_dir,
    ]);
    replicated(&primary.url()).await?;
    let url = primary.url();
    let redis = [("REDIS_URL", url.as_str())];
    let envs = [
        TestEnv::with_settings(&redis).await,
        TestEnv::with_settings(&redis).await,
    ];
    let updated = Row::many("gr-upd", 1);
    let deleted = Row::many("gr-del", fresh_ids_needed(sizes.warmup, writes));
    let mut callers = Vec::new();
    for (env, replicas) in envs.iter().zip(SETTINGS) {
        fixtures::insert(env.pg(), &env.schema, &updated).await?;
        fixtures::insert(env.pg(), &env.schema, &deleted).await?;
        let mut settings = PRODUCTION.to_vec();
        settings.push(("CACHE_GUARD_REPLICAS", replicas));
        callers.push(Caller {
            state: Arc::new(env.instance(&settings).await),
            deferred: true,
            hit: updated[0].id,
            update: updated[0].id,
        });
    }
    let deleted: Vec<_> = deleted.iter().map(|row| row.id).collect();
    let mut merged = Vec::new();
    for slice in 0..=SLICES {
        let fresh = vec![deleted[slice * (warmup + part)..].to_vec()];
        for op in WRITES {
            for v in [slice % 2, 1 - slice % 2] {
                let name = name(op, v);
                let tag = format!("gr{slice}v{v}");
                let callers = &callers[v..=v];
                let measured =
                    handlers::measure(op, &name, callers, &fresh, events, &tag, warmup, part);
                merge(&mut merged, measured.await?, slice)?;
            }
        }
    }
    Ok(merged)
}

fn name(op: Op, setting: usize) -> String {
    format!("{}, CACHE_GUARD_REPLICAS={}", op.name(), SETTINGS[setting])
}

/// Returns once the replica acknowledges a write on the primary at `url`.
async fn replicated(url: &str) -> Result<(), BoxError> {
    let mut primary = redis::Client::open(url)?
        .get_multiplexed_async_connection()
        .await?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let () = redis::cmd("SET")
            .arg("bench:replication")
            .arg(1)
            .query_async(&mut primary)
            .await?;
        let acknowledged: i64 = redis::cmd("WAIT")
            .arg(1)
            .arg(200)
            .query_async(&mut primary)
            .await?;
        if acknowledged >= 1 {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err("the replica did not synchronize within 20 s".into());
        }
    }
}

/// The table: each write with 1 and 0, and what 1 adds.
pub fn render(costs: &[Measured], out: &mut String) {
    if costs.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\n## What CACHE_GUARD_REPLICAS=1 adds to a write (1 caller, in-process, a replica on \
         loopback)\n\n\
         | write | `1` p50 / p99 µs | `0` p50 / p99 µs | p50 difference µs | p99 difference µs \
         | unexpected answers |\n|---|---:|---:|---:|---:|---:|"
    );
    for op in WRITES {
        let named = |v: usize| costs.iter().find(|m| m.name == name(op, v));
        let (Some(with), Some(without)) = (named(0), named(1)) else {
            continue;
        };
        let _ = writeln!(
            out,
            "| {} | {:.1} / {:.1} | {:.1} / {:.1} | {:+.1} | {:+.1} | {} / {} |",
            op.name(),
            micros(with.p50()),
            micros(with.p99()),
            micros(without.p50()),
            micros(without.p99()),
            micros(with.p50()) - micros(without.p50()),
            micros(with.p99()) - micros(without.p99()),
            with.unexpected,
            without.unexpected,
        );
    }
}
