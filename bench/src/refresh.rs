//! Section 8: a hot key across its expiry (issue 13). Entries are fresh for
//! [`TTL_SECONDS`]; four in-process instances (separate pools and Redis
//! connections, one key space) keep finding one user, each from several
//! callers at a steady pace, over a few TTLs. Postgres is reached through
//! the tests' fault proxy holding every chunk [`PG_DELAY`] each way, a
//! database a few milliseconds away as RDS is from Lambda, rather than the
//! loopback one whose reads take a fraction of a millisecond and hide the
//! gap a refill leaves. Run once per policy of eager refresh (off, the
//! threshold of `CACHE_EAGER_REFRESH_PERCENT`, XFetch) and at two paces
//! (busy and light), counting the `x-cache` answers and the Postgres reads,
//! and timing every find.
//!
//! The figure the section is for is the p99 of the finds *around each
//! Postgres read* (those that started within [`NEAR`] of a find answered
//! `miss` or `refresh`): where, without eager refresh, the callers that
//! arrive while the entry is refilled wait for the fill.

use crate::fixtures::request;
use crate::handlers::x_cache;
use crate::measure::{BoxError, histogram, record};
use crate::world::World;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use test_support::proxy::{FaultProxy, Mode};
use users_api::AppState;
use users_api::service::EagerRefresh;

/// How long an entry is fresh in this section.
pub const TTL_SECONDS: u64 = 2;
const INSTANCES: usize = 4;
/// What the proxy in front of Postgres holds each chunk for, each way.
pub const PG_DELAY: Duration = Duration::from_millis(2);
/// How close to a Postgres read a find must start to count as "near" it.
pub const NEAR: Duration = Duration::from_millis(50);

/// How hard the key is read: callers per instance, and the pause between
/// one caller's finds.
#[derive(Clone, Copy, Debug)]
pub struct Pace {
    pub name: &'static str,
    pub callers: usize,
    pub every: Duration,
}

pub const PACES: [Pace; 2] = [
    Pace {
        name: "busy: 4 x 4 callers, a find each every 20 ms",
        callers: 4,
        every: Duration::from_millis(20),
    },
    Pace {
        name: "light: 4 x 1 caller, a find each every 100 ms",
        callers: 1,
        every: Duration::from_millis(100),
    },
];

/// One run: a policy at a pace.
pub struct HotKey {
    pub policy: String,
    pub pace: &'static str,
    pub finds: u64,
    pub cache: BTreeMap<String, u64>,
    pub reads: u64,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
    pub near_finds: u64,
    pub near_p90: Duration,
    pub near_p99: Duration,
    pub near_max: Duration,
    pub failed: u64,
    /// Finds that took longer than [`SLOW`]: a hit takes a fraction of it.
    pub slow: u64,
}

/// What counts as a slow find: a Postgres read, or a wait for another's.
pub const SLOW: Duration = Duration::from_millis(2);

/// One timed find: when it started (since the run's start), how long it
/// took, its `x-cache`.
struct Timed {
    start: Duration,
    took: Duration,
    cache: Option<String>,
    ok: bool,
}

pub async fn run(
    world: &World<'_>,
    quick: bool,
    context: &mut Vec<(String, String)>,
    runs: &mut Vec<HotKey>,
) -> Result<(), BoxError> {
    eprintln!("== hot key across its expiry");
    let ttls = if quick { 2 } else { 3 };
    let length = Duration::from_secs(TTL_SECONDS * ttls) + Duration::from_millis(500);
    let proxy = FaultProxy::start(world.env.postgres_addr()).await;
    proxy.set(Mode::Latency(PG_DELAY));
    let database_url = world.env.database_url_through(proxy.port);
    let delta = refresh_time(world, &database_url).await?;
    context.push((
        "hot key: XFetch delta (median miss, measured)".to_owned(),
        format!("{:.2} ms, beta 1", delta.as_secs_f64() * 1e3),
    ));
    let policies = [
        ("off", EagerRefresh::Off),
        ("threshold 10%", EagerRefresh::Threshold { percent: 10 }),
        (
            "XFetch",
            EagerRefresh::XFetch {
                beta: 1.0,
                delta_ms: delta.as_secs_f64() * 1e3,
            },
        ),
    ];
    let hot = world.users.hit[0];
    // Every policy at both paces with fail-safe on (the default), then the
    // busy pace without fail-safe, where an expired entry leaves Redis.
    let mut plan: Vec<(Pace, (&str, EagerRefresh), bool)> = Vec::new();
    for pace in PACES {
        plan.extend(policies.iter().map(|policy| (pace, *policy, true)));
    }
    plan.extend(
        policies[..2]
            .iter()
            .map(|policy| (PACES[0], *policy, false)),
    );
    for (index, (pace, (name, policy), fail_safe)) in plan.into_iter().enumerate() {
        let space = format!("hk{index}");
        let setup = (world, database_url.as_str(), space.as_str(), hot);
        let label = if fail_safe {
            name.to_owned()
        } else {
            format!("{name}, fail-safe off")
        };
        let run = one_run(setup, pace, &label, policy, fail_safe, length).await?;
        eprintln!(
            "  {:<14} {:<44} {} finds, {:?}, {} PG reads, p99 near a read {:.0} µs",
            run.policy,
            run.pace,
            run.finds,
            run.cache,
            run.reads,
            run.near_p99.as_secs_f64() * 1e6
        );
        runs.push(run);
    }
    Ok(())
}

/// The median time of a miss (lookup, Postgres read, fill) in this run's
/// conditions: XFetch's delta, the time a refresh takes.
async fn refresh_time(world: &World<'_>, database_url: &str) -> Result<Duration, BoxError> {
    let state = world
        .instance("hk-delta", &[("DATABASE_URL", database_url)])
        .await;
    let mut times = Vec::new();
    for id in world.users.hit.iter().take(8) {
        for _ in 0..3 {
            state.users.cache().invalidate(*id).await?;
            let started = Instant::now();
            find_user::handle(&state, request(&world.events.find(*id))).await?;
            times.push(started.elapsed());
        }
    }
    times.sort();
    Ok(times[times.len() / 2])
}

/// The world, the Postgres URL through the proxy, the key space, the user.
type Setup<'a, 'w> = (&'a World<'w>, &'a str, &'a str, uuid::Uuid);

async fn one_run(
    (world, database_url, space, hot): Setup<'_, '_>,
    pace: Pace,
    policy_name: &str,
    policy: EagerRefresh,
    fail_safe: bool,
    length: Duration,
) -> Result<HotKey, BoxError> {
    let ttl = TTL_SECONDS.to_string();
    let kept = if fail_safe { "86400" } else { "0" };
    let mut instances = Vec::new();
    for _ in 0..INSTANCES {
        let mut state = world
            .instance(
                space,
                &[
                    ("CACHE_TTL_SECONDS", &ttl),
                    ("CACHE_FAIL_SAFE_SECONDS", kept),
                    ("DATABASE_URL", database_url),
                ],
            )
            .await;
        state.users.set_eager_refresh(policy);
        instances.push(Arc::new(state));
    }
    let event = Arc::new(world.events.find(hot));
    // The first fill, outside the timing.
    find_user::handle(&instances[0], request(&event)).await?;
    let reads_before: u64 = instances.iter().map(|s| s.users.store().reads()).sum();
    let started = Instant::now();
    let mut callers = tokio::task::JoinSet::new();
    for state in &instances {
        for caller in 0..pace.callers {
            let (state, event) = (state.clone(), event.clone());
            callers.spawn(async move {
                pace_finds(&state, &event, pace, caller, started, length).await
            });
        }
    }
    let mut timed = Vec::new();
    while let Some(found) = callers.join_next().await {
        timed.extend(found?);
    }
    let reads: u64 = instances.iter().map(|s| s.users.store().reads()).sum();
    Ok(summarize(
        policy_name,
        pace.name,
        &timed,
        reads - reads_before,
    ))
}

/// One caller: a find every `pace.every` (at once when behind), starting
/// at an offset of its own so that callers do not move in step.
async fn pace_finds(
    state: &AppState,
    event: &str,
    pace: Pace,
    caller: usize,
    started: Instant,
    length: Duration,
) -> Vec<Timed> {
    let offset =
        pace.every * u32::try_from(caller).unwrap_or(0) / u32::try_from(pace.callers).unwrap_or(1);
    let mut next = started + offset;
    let mut timed = Vec::new();
    while next < started + length {
        tokio::time::sleep_until(next.into()).await;
        let request = request(event);
        let start = Instant::now();
        let response = find_user::handle(state, request).await;
        let took = start.elapsed();
        let (ok, cache) = match &response {
            Ok(response) => (
                response.status().as_u16() == 200,
                x_cache(response).map(str::to_owned),
            ),
            Err(_) => (false, None),
        };
        timed.push(Timed {
            start: start - started,
            took,
            cache,
            ok,
        });
        next = (next + pace.every).max(Instant::now());
    }
    timed
}

fn summarize(policy: &str, pace: &'static str, timed: &[Timed], reads: u64) -> HotKey {
    let mut all = histogram();
    let mut near = histogram();
    let mut cache = BTreeMap::new();
    let reads_at: Vec<Duration> = timed
        .iter()
        .filter(|find| matches!(find.cache.as_deref(), Some("miss" | "refresh")))
        .map(|find| find.start)
        .collect();
    for find in timed {
        record(&mut all, find.took);
        let label = find.cache.clone().unwrap_or_else(|| "none".to_owned());
        *cache.entry(label).or_insert(0) += 1;
        let is_near = reads_at
            .iter()
            .any(|read| find.start.abs_diff(*read) <= NEAR);
        if is_near {
            record(&mut near, find.took);
        }
    }
    let at =
        |h: &hdrhistogram::Histogram<u64>, q: f64| Duration::from_nanos(h.value_at_quantile(q));
    HotKey {
        policy: policy.to_owned(),
        pace,
        finds: all.len(),
        cache,
        reads,
        p50: at(&all, 0.5),
        p99: at(&all, 0.99),
        max: Duration::from_nanos(all.max()),
        near_finds: near.len(),
        near_p90: at(&near, 0.90),
        near_p99: at(&near, 0.99),
        near_max: Duration::from_nanos(near.max()),
        failed: timed.iter().filter(|find| !find.ok).count() as u64,
        slow: timed.iter().filter(|find| find.took > SLOW).count() as u64,
    }
}
