//! Sections 1-3: the floors and the five handlers, with one caller and then
//! eight.
//!
//! A path and its floor must see the same machine, and a shared 2-core VM
//! drifts by tens of percent within minutes. So every phase of a round is cut
//! into slices, run in turn (floors, references, handlers, floors again, ...)
//! and merged: each ratio compares calls spread over the same minutes.

use crate::floor::{self, Floor};
use crate::handlers::{self, Caller, Op};
use crate::measure::{BoxError, Measured, merge};
use crate::report::{HIT_METRICS_OFF, HIT_TELEMETRY_INLINE, MISS_METRICS_OFF, Report};
use crate::world::{CALLERS, Plan, SLICES, World};
use std::sync::Arc;
use uuid::Uuid;

pub async fn run(world: &World<'_>, plan: &Plan, report: &mut Report) -> Result<(), BoxError> {
    // A function serves one request at a time on a current_thread runtime;
    // the one-caller round runs on one too, with connections of its own.
    eprintln!("== floors and handlers, 1 caller, current_thread runtime, {SLICES} slices");
    let one = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                runtime.block_on(round(world, plan, 0))
            })
            .join()
    })
    .map_err(|_| "the one-caller round panicked")??;
    eprintln!("== floors and handlers, {CALLERS} callers, multi-thread runtime, {SLICES} slices");
    let eight = round(world, plan, 1).await?;
    for measured in one.latency.iter().chain(&eight.latency) {
        measured.print();
    }
    report.latency.extend(one.latency);
    report.latency.extend(eight.latency);
    report.context.extend(one.context);
    Ok(())
}

struct Round {
    latency: Vec<Measured>,
    context: Vec<(String, String)>,
}

/// Round 0: one caller (plus the same instance with metrics off); round 1:
/// eight callers, each its own instance and raw clients.
async fn round(world: &World<'_>, plan: &Plan, round: usize) -> Result<Round, BoxError> {
    let users = &world.users;
    let n = [1, CALLERS][round];
    let mut callers = Vec::new();
    let mut clients = Vec::new();
    for c in 0..n {
        let state = world.instance("h", &[]).await;
        callers.push(Caller {
            state: Arc::new(state),
            // As under the Lambda runtime: the log record and EMF line are
            // written after the call (the response), see `handlers::measure`.
            deferred: true,
            hit: users.hit[c],
            update: users.update[c],
        });
        let floor = floor::Clients::connect(
            &world.database_url,
            &world.redis_url,
            &world.prefix,
            c,
            users.hit[c],
        );
        clients.push(Arc::new(floor.await?));
    }
    // The same instance with its EMF metric line switched off: the share of
    // a `find` that goes to building and writing it.
    let mut quiet = Vec::new();
    let mut inline = Vec::new();
    if round == 0 {
        quiet.push(Caller {
            state: Arc::new(world.instance("h", &[("METRICS_ENABLED", "false")]).await),
            deferred: false,
            hit: users.hit[0],
            update: users.update[0],
        });
        // Not deferred: the record and EMF line are written inside the call.
        inline.push(Caller {
            state: Arc::new(world.instance("h", &[]).await),
            deferred: false,
            hit: users.hit[0],
            update: users.update[0],
        });
    }
    let sizes = plan.sizes[round];
    let warmup = (sizes.warmup / SLICES).max(1);
    let mut merged: Vec<Measured> = Vec::new();
    for slice in 0..=SLICES {
        let first = round * 10_000_000 + slice * 1_000_000;
        for (f, count) in [
            (Floor::Get, sizes.floor),
            (Floor::GetManager, sizes.floor),
            (Floor::Select, sizes.floor),
            (Floor::GetSelectSet, sizes.fill),
            (Floor::Lease, sizes.floor),
            (Floor::LeaseSelectSet, sizes.fill),
        ] {
            let part = (count / SLICES).max(1);
            let measured = floor::measure(f, &clients, first, warmup, part).await?;
            merge(&mut merged, measured, slice)?;
        }
        let tag = format!("r{round}s{slice}");
        let mut phases = vec![
            (Op::FindHit, Op::FindHit.name(), &callers[..], sizes.hit),
            (Op::FindMiss, Op::FindMiss.name(), &callers[..], sizes.miss),
            (Op::Update, Op::Update.name(), &callers[..], sizes.write),
            (Op::Delete, Op::Delete.name(), &callers[..], sizes.write),
            (Op::Create, Op::Create.name(), &callers[..], sizes.write),
            (
                Op::CreateKeyed,
                Op::CreateKeyed.name(),
                &callers[..],
                sizes.write,
            ),
            (Op::List, Op::List.name(), &callers[..], sizes.list),
        ];
        if round == 0 {
            phases.push((Op::FindHit, HIT_METRICS_OFF, &quiet[..], sizes.hit));
            phases.push((Op::FindHit, HIT_TELEMETRY_INLINE, &inline[..], sizes.hit));
            phases.push((Op::FindMiss, MISS_METRICS_OFF, &quiet[..], sizes.miss));
        }
        for (op, name, callers, count) in phases {
            let part = (count / SLICES).max(1);
            let pool: &[Vec<Uuid>] = match (op, name) {
                (Op::FindMiss, MISS_METRICS_OFF) => &users.miss_quiet,
                (Op::FindMiss, _) => &users.miss[round],
                (Op::Delete, _) => &users.delete[round],
                _ => &[],
            };
            // This slice's share of each caller's fresh ids.
            let span = warmup + part;
            let fresh: Vec<Vec<Uuid>> = pool
                .iter()
                .map(|ids| ids[(slice * span).min(ids.len())..].to_vec())
                .collect();
            let events = &world.events;
            let measured = handlers::measure(op, name, callers, &fresh, events, &tag, warmup, part);
            merge(&mut merged, measured.await?, slice)?;
        }
    }
    let mut context = Vec::new();
    if round == 0 {
        let event = world.events.find(callers[0].hit);
        let request = crate::fixtures::request(&event);
        let hit = handlers::handle(Op::FindHit, &callers[0].state, request).await?;
        context.push((
            "value read by the GET floor / hit body".to_owned(),
            format!(
                "{} bytes / {} bytes",
                clients[0].value_len().await?,
                hit.body().as_ref().len()
            ),
        ));
    }
    Ok(Round {
        latency: merged,
        context,
    })
}
