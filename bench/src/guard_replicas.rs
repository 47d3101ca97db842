//! Section 10: what `CACHE_GUARD_REPLICAS=1` adds to a write (issue 20):
//! update and delete through the in-process handlers, one caller on a
//! current-thread runtime (a Lambda sandbox), against a primary of the
//! bench's own with one replica beside it on loopback, where the guard and
//! the release are each followed by `WAIT 1`; and the same writes with `0`
//! on the same primary, the two settings side by side (`paired.rs`).

use crate::fixtures::Events;
use crate::handlers::Op;
use crate::measure::{BoxError, Measured, micros};
use crate::paired::{self, Pair, phase};
use crate::world::{PRODUCTION, Plan};
use std::fmt::Write;
use std::time::Duration;
use test_support::TestEnv;
use test_support::replication::replicated;
use test_support::servers::RedisServer;
use test_support::tls::TempDir;

const WRITES: [Op; 2] = [Op::Update, Op::Delete];
const SETTINGS: [&str; 2] = ["1", "0"];
const NAMES: [&str; 2] = ["CACHE_GUARD_REPLICAS=1", "CACHE_GUARD_REPLICAS=0"];
/// Five times the plan's writes: the difference sought, two loopback round
/// trips, is a fifth of a write, and this machine is shared.
const SCALE: usize = 5;

/// The writes with each setting, merged over the slices.
pub async fn measure(plan: &Plan, events: &Events) -> Result<Vec<Measured>, BoxError> {
    let writes = plan.sizes[0].write * SCALE;
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
    let mut connection = redis::Client::open(primary.url())?
        .get_multiplexed_async_connection()
        .await?;
    if !replicated(&mut connection, Duration::from_secs(20)).await? {
        return Err("the replica did not synchronize within 20 s".into());
    }
    let url = primary.url();
    let redis = [("REDIS_URL", url.as_str())];
    let envs = [
        TestEnv::with_settings(&redis).await,
        TestEnv::with_settings(&redis).await,
    ];
    let with = [("CACHE_GUARD_REPLICAS", SETTINGS[0])];
    let without = [("CACHE_GUARD_REPLICAS", SETTINGS[1])];
    let pair = Pair {
        envs: &envs,
        settings: [
            PRODUCTION.iter().chain(&with).copied().collect(),
            PRODUCTION.iter().chain(&without).copied().collect(),
        ],
        names: NAMES,
        tag: "gr",
        writes,
        before_slice: None,
    };
    paired::measure_writes(pair, &WRITES, plan, events).await
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
        let named = |v: usize| costs.iter().find(|m| m.name == phase(op, NAMES[v]));
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
