//! What the change records cost an API write: update, create and delete
//! through the in-process handlers, one caller on a current-thread runtime
//! (a Lambda sandbox), in two schemas of their own, alike but that one has
//! the trigger dropped, side by side (`crate::paired`); the records the
//! trigger leaves are deleted before each slice, as the consumer would.

use crate::fixtures::Events;
use crate::handlers::Op;
use crate::measure::{BoxError, Measured, micros};
use crate::paired::{self, Pair, phase};
use crate::world::{PRODUCTION, Plan};
use std::fmt::Write;
use test_support::TestEnv;

const WRITES: [Op; 3] = [Op::Update, Op::Create, Op::Delete];
const VARIANTS: [&str; 2] = ["with the trigger", "trigger dropped"];

/// The writes with and without the trigger, each merged over the slices.
pub async fn measure(plan: &Plan, events: &Events) -> Result<Vec<Measured>, BoxError> {
    let envs = [TestEnv::new().await, TestEnv::new().await];
    let drop_trigger = format!(
        "DROP TRIGGER users_record_change ON {}.users",
        envs[1].schema
    );
    envs[1].pg().batch_execute(&drop_trigger).await?;
    let pair = Pair {
        envs: &envs,
        settings: [PRODUCTION.to_vec(), PRODUCTION.to_vec()],
        names: VARIANTS,
        tag: "rc",
        writes: plan.sizes[0].write,
        // The records the trigger leaves, deleted as the consumer would.
        before_slice: Some(format!("DELETE FROM {}.user_changes", envs[0].schema)),
    };
    paired::measure_writes(pair, &WRITES, plan, events).await
}

/// The table: each write with and without the trigger, and their ratio.
pub fn render(costs: &[Measured], out: &mut String) {
    let _ = writeln!(
        out,
        "\n### What the change records cost an API write (1 caller, in-process)\n\n\
         | write | {} p50 / p99 µs | {} p50 / p99 µs | p50 ratio, slices merged | \
         median of slice ratios | p50 difference µs |\n|---|---:|---:|---:|---:|---:|",
        VARIANTS[0], VARIANTS[1]
    );
    for op in WRITES {
        let named = |v: usize| costs.iter().find(|m| m.name == phase(op, VARIANTS[v]));
        let (Some(with), Some(without)) = (named(0), named(1)) else {
            continue;
        };
        let ratio = |a: std::time::Duration, b: std::time::Duration| {
            a.as_secs_f64() / b.as_secs_f64().max(f64::EPSILON)
        };
        let mut ratios: Vec<f64> = (with.slice_p50s.iter().zip(&without.slice_p50s))
            .map(|(a, b)| ratio(*a, *b))
            .collect();
        ratios.sort_by(f64::total_cmp);
        let middle = ratios.len() / 2;
        let median = match ratios.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => ratios[middle],
            _ => (ratios[middle - 1] + ratios[middle]) / 2.0,
        };
        let _ = writeln!(
            out,
            "| {} | {:.1} / {:.1} | {:.1} / {:.1} | {:.2}x | {median:.2}x | {:+.1} |",
            op.name(),
            micros(with.p50()),
            micros(with.p99()),
            micros(without.p50()),
            micros(without.p99()),
            ratio(with.p50(), without.p50()),
            micros(with.p50()) - micros(without.p50()),
        );
    }
}
