//! What the change records cost an API write: update, create and delete
//! through the in-process handlers, one caller on a current-thread runtime
//! (a Lambda sandbox), in two schemas of their own, alike but that one has
//! the trigger dropped. The two take turns phase by phase (which goes first
//! alternates) over [`SLICES`] slices after an uncounted one, so that both
//! see the same minutes of this shared machine; the records the trigger
//! leaves are deleted before each slice, as the consumer would.

use crate::fixtures::{self, Events, Row};
use crate::handlers::{self, Caller, Op};
use crate::measure::merge;
use crate::measure::{BoxError, Measured, micros};
use crate::world::{PRODUCTION, Plan, SLICES, fresh_ids_needed};
use std::fmt::Write;
use std::sync::Arc;
use test_support::TestEnv;

const WRITES: [Op; 3] = [Op::Update, Op::Create, Op::Delete];
const VARIANTS: [&str; 2] = ["with the trigger", "trigger dropped"];

/// The writes with and without the trigger, each merged over the slices.
pub async fn measure(plan: &Plan, events: &Events) -> Result<Vec<Measured>, BoxError> {
    let sizes = plan.sizes[0];
    let warmup = (sizes.warmup / SLICES).max(1);
    let part = (sizes.write / SLICES).max(1);
    let envs = [TestEnv::new().await, TestEnv::new().await];
    let drop_trigger = format!(
        "DROP TRIGGER users_record_change ON {}.users",
        envs[1].schema
    );
    envs[1].pg().batch_execute(&drop_trigger).await?;
    let updated = Row::many("rc-upd", 1);
    let deleted = Row::many("rc-del", fresh_ids_needed(sizes.warmup, sizes.write));
    let mut callers = Vec::new();
    for env in &envs {
        fixtures::insert(env.pg(), &env.schema, &updated).await?;
        fixtures::insert(env.pg(), &env.schema, &deleted).await?;
        callers.push(Caller {
            state: Arc::new(env.instance(&PRODUCTION).await),
            deferred: true,
            hit: updated[0].id,
            update: updated[0].id,
        });
    }
    let deleted: Vec<_> = deleted.iter().map(|row| row.id).collect();
    let applied = format!("DELETE FROM {}.user_changes", envs[0].schema);
    let mut merged = Vec::new();
    for slice in 0..=SLICES {
        envs[0].pg().batch_execute(&applied).await?;
        let fresh = vec![deleted[slice * (warmup + part)..].to_vec()];
        for op in WRITES {
            for v in [slice % 2, 1 - slice % 2] {
                let name = format!("{}, {}", op.name(), VARIANTS[v]);
                let tag = format!("rc{slice}v{v}");
                let callers = &callers[v..=v];
                let measured =
                    handlers::measure(op, &name, callers, &fresh, events, &tag, warmup, part);
                merge(&mut merged, measured.await?, slice)?;
            }
        }
    }
    Ok(merged)
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
        let named = |v: usize| {
            let name = format!("{}, {}", op.name(), VARIANTS[v]);
            costs.iter().find(|m| m.name == name)
        };
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
