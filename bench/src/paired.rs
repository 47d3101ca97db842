//! Two variants of the functions measured side by side on the writes
//! (`guard_replicas.rs`, `invalidation/records.rs`): each variant has a
//! schema of its own holding the same rows (a delete needs ids of its own)
//! and one caller on a current-thread runtime (a Lambda sandbox) built with
//! its settings; the two take turns phase by phase (which goes first
//! alternates) over [`SLICES`] slices after an uncounted one, so that both
//! see the same minutes of this shared machine.

use crate::fixtures::{self, Events, Row};
use crate::handlers::{self, Caller, Op};
use crate::measure::{BoxError, Measured, merge};
use crate::world::{Plan, SLICES, fresh_ids_needed};
use std::sync::Arc;
use test_support::TestEnv;

/// What the two variants are.
pub struct Pair<'a> {
    /// Each variant's world.
    pub envs: &'a [TestEnv; 2],
    /// Each variant's settings, over its world's.
    pub settings: [Vec<(&'a str, &'a str)>; 2],
    /// Each variant's name in its phases' names ([`phase`]).
    pub names: [&'a str; 2],
    /// Tags the fixtures' rows and the phases' events.
    pub tag: &'a str,
    /// How many of each write are measured, over all slices.
    pub writes: usize,
    /// Run in the first variant's world before each slice.
    pub before_slice: Option<String>,
}

/// The name of the phase of `op` in the variant named `variant`.
pub fn phase(op: Op, variant: &str) -> String {
    format!("{}, {variant}", op.name())
}

/// `ops` through each variant, each phase merged over the slices.
pub async fn measure_writes(
    pair: Pair<'_>,
    ops: &[Op],
    plan: &Plan,
    events: &Events,
) -> Result<Vec<Measured>, BoxError> {
    let sizes = plan.sizes[0];
    let warmup = (sizes.warmup / SLICES).max(1);
    let part = (pair.writes / SLICES).max(1);
    let updated = Row::many(&format!("{}-upd", pair.tag), 1);
    let deleted = Row::many(
        &format!("{}-del", pair.tag),
        fresh_ids_needed(sizes.warmup, pair.writes),
    );
    let mut callers = Vec::new();
    for (env, settings) in pair.envs.iter().zip(&pair.settings) {
        fixtures::insert(env.pg(), &env.schema, &updated).await?;
        fixtures::insert(env.pg(), &env.schema, &deleted).await?;
        callers.push(Caller {
            state: Arc::new(env.instance(settings).await),
            deferred: true,
            hit: updated[0].id,
            update: updated[0].id,
        });
    }
    let deleted: Vec<_> = deleted.iter().map(|row| row.id).collect();
    let mut merged = Vec::new();
    for slice in 0..=SLICES {
        if let Some(sql) = &pair.before_slice {
            pair.envs[0].pg().batch_execute(sql).await?;
        }
        let fresh = vec![deleted[slice * (warmup + part)..].to_vec()];
        for &op in ops {
            for v in [slice % 2, 1 - slice % 2] {
                let name = phase(op, pair.names[v]);
                let tag = format!("{}{slice}v{v}", pair.tag);
                let callers = &callers[v..=v];
                let measured =
                    handlers::measure(op, &name, callers, &fresh, events, &tag, warmup, part);
                merge(&mut merged, measured.await?, slice)?;
            }
        }
    }
    Ok(merged)
}
