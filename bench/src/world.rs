//! What every section shares: the run's sizes, the users inserted for each
//! purpose, and how a function instance (in-process or spawned) is configured.

use crate::fixtures::{self, Events, Row};
use crate::measure::BoxError;
use std::collections::HashMap;
use std::sync::Arc;
use test_support::TestEnv;
use users_api::AppState;
use uuid::Uuid;

/// Each latency phase is run in this many interleaved slices, after one more
/// slice that is not counted (the first minute of a round runs slow).
pub const SLICES: usize = 10;

/// Fresh ids one caller needs for `count` timed calls after `warmup`.
pub fn fresh_ids_needed(warmup: usize, count: usize) -> usize {
    (SLICES + 1) * ((warmup / SLICES).max(1) + (count / SLICES).max(1))
}

pub const CALLERS: usize = 8;
pub const OFFLOAD_USERS: usize = 10_000;
/// Users the concurrency section's hit rows cycle through, all cached
/// beforehand: more than any number in flight, so no two finds out at once
/// share a key.
pub const CONCURRENT_HIT_USERS: usize = 2_000;
/// Spawns before the counted cold starts: page cache, first connections.
pub const COLD_WARMUP: usize = 2;
/// The functions' production Redis bounds (the test defaults are looser).
pub const PRODUCTION: [(&str, &str); 2] = [
    ("REDIS_RESPONSE_TIMEOUT_MS", "50"),
    ("REDIS_CONNECT_TIMEOUT_MS", "200"),
];

/// Iterations of one caller in a latency phase.
#[derive(Clone, Copy)]
pub struct Sizes {
    pub warmup: usize,
    pub floor: usize,
    pub fill: usize,
    pub hit: usize,
    pub miss: usize,
    pub write: usize,
    pub list: usize,
}

/// How much of everything one run does.
pub struct Plan {
    /// `[one caller, each of eight callers]`.
    pub sizes: [Sizes; 2],
    pub cold_runs: usize,
    /// Invocations of each function's memory run; find-user goes on to `rss_long`.
    pub rss_short: usize,
    pub rss_long: usize,
    pub offload_finds: usize,
    /// Counted invocations of each concurrency row (after its warm-up).
    pub concurrent_hits: usize,
    pub concurrent_misses: usize,
}

/// Uncounted invocations before a concurrency row's `count`: a tenth, and at
/// least twice the number in flight.
pub fn concurrent_warmup(count: usize, in_flight: usize) -> usize {
    (count / 10).max(2 * in_flight)
}

/// Invocations in flight in one environment, in the concurrency section.
pub const IN_FLIGHT: [usize; 4] = [1, 8, 32, 64];

impl Plan {
    pub fn new(quick: bool) -> Self {
        let s = |n: usize| if quick { (n / 10).max(1) } else { n };
        let sizes = |warmup, floor, fill, hit, miss, write, list| Sizes {
            warmup: s(warmup),
            floor: s(floor),
            fill: s(fill),
            hit: s(hit),
            miss: s(miss),
            write: s(write),
            list: s(list),
        };
        Self {
            sizes: [
                sizes(200, 5_000, 2_000, 5_000, 2_000, 1_000, 2_000),
                sizes(25, 1_000, 300, 1_000, 300, 150, 300),
            ],
            cold_runs: if quick { 5 } else { 20 },
            rss_short: s(1_000),
            rss_long: s(10_000),
            offload_finds: if quick { 5_000 } else { 20_000 },
            concurrent_hits: s(20_000),
            concurrent_misses: s(10_000),
        }
    }
}

/// Ids of the inserted users, by purpose. `[0]` of a pair is the one-caller
/// round, `[1]` the eight-caller round; the inner vectors are per caller.
pub struct Users {
    pub hit: Vec<Uuid>,
    pub update: Vec<Uuid>,
    pub miss: [Vec<Vec<Uuid>>; 2],
    /// For the one-caller misses of an instance with metrics off.
    pub miss_quiet: Vec<Vec<Uuid>>,
    pub delete: [Vec<Vec<Uuid>>; 2],
    pub offload: Arc<Vec<Uuid>>,
    pub cold_find: Uuid,
    pub cold_update: Uuid,
    pub cold_delete: Vec<Uuid>,
    pub rss_delete: Vec<Uuid>,
    /// Cached before the concurrency section's hit rows.
    pub concurrent_hit: Vec<Uuid>,
    /// Each read once per miss row (each row has a key space of its own).
    pub concurrent_miss: Vec<Uuid>,
}

pub struct World<'a> {
    pub env: &'a TestEnv,
    pub events: Arc<Events>,
    pub users: Users,
    pub database_url: String,
    pub redis_url: String,
    /// The TestEnv's key prefix; every key of the run starts with it.
    pub prefix: String,
}

impl<'a> World<'a> {
    /// Inserts the users `plan` needs into the env's schema.
    pub async fn set_up(env: &'a TestEnv, plan: &Plan) -> Result<Self, BoxError> {
        let [one, eight] = plan.sizes;
        let fresh = |sizes: Sizes, count| fresh_ids_needed(sizes.warmup, count);
        let mut seed = Seed::default();
        let longest_warmup = IN_FLIGHT
            .iter()
            .map(|&c| concurrent_warmup(plan.concurrent_misses, c))
            .max()
            .unwrap_or(0);
        let users = Users {
            hit: seed.take("hit", CALLERS),
            update: seed.take("upd", CALLERS),
            miss: [
                seed.lanes("miss-a", 1, fresh(one, one.miss)),
                seed.lanes("miss-b", CALLERS, fresh(eight, eight.miss)),
            ],
            miss_quiet: seed.lanes("miss-q", 1, fresh(one, one.miss)),
            delete: [
                seed.lanes("del-a", 1, fresh(one, one.write)),
                seed.lanes("del-b", CALLERS, fresh(eight, eight.write)),
            ],
            offload: Arc::new(seed.take("zipf", OFFLOAD_USERS)),
            cold_find: seed.take("cold-find", 1)[0],
            cold_update: seed.take("cold-upd", 1)[0],
            cold_delete: seed.take("cold-del", plan.cold_runs + COLD_WARMUP),
            rss_delete: seed.take("rss-del", plan.rss_short),
            concurrent_hit: seed.take("conc-hit", CONCURRENT_HIT_USERS),
            concurrent_miss: seed.take("conc-miss", plan.concurrent_misses + longest_warmup),
        };
        fixtures::insert(env.pg(), &env.schema, &seed.rows).await?;
        eprintln!("   {} users inserted into {}", seed.rows.len(), env.schema);
        Ok(Self {
            env,
            events: Arc::new(Events::load()),
            users,
            database_url: env.settings["DATABASE_URL"].clone(),
            redis_url: env.settings["REDIS_URL"].clone(),
            prefix: env.key_prefix.clone(),
        })
    }

    /// An in-process function instance with the production Redis bounds,
    /// its cache keys under `{prefix}:{key_space}`, and `overrides`.
    pub async fn instance(&self, key_space: &str, overrides: &[(&str, &str)]) -> AppState {
        let key_prefix = format!("{}:{key_space}", self.prefix);
        let mut settings: Vec<(&str, &str)> = PRODUCTION.to_vec();
        settings.push(("CACHE_KEY_PREFIX", &key_prefix));
        settings.extend_from_slice(overrides);
        self.env.instance(&settings).await
    }

    /// The environment of a spawned function: the same settings as
    /// [`World::instance`], as variables.
    pub fn function_env(&self, key_space: &str) -> Vec<(String, String)> {
        let mut env: HashMap<String, String> = self.env.settings.clone();
        for (key, value) in PRODUCTION {
            env.insert(key.to_owned(), value.to_owned());
        }
        env.insert(
            "CACHE_KEY_PREFIX".to_owned(),
            format!("{}:{key_space}", self.prefix),
        );
        env.into_iter().collect()
    }

    /// Server versions and settings, for the report's header (`context`).
    pub async fn describe(&self, context: &mut Vec<(String, String)>) -> Result<(), BoxError> {
        let postgres: String = self
            .env
            .pg()
            .query_one("SHOW server_version", &[])
            .await?
            .get(0);
        let mut redis = self.env.redis().await;
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query_async(&mut redis)
            .await?;
        let redis_version = info
            .lines()
            .find_map(|line| line.strip_prefix("redis_version:"))
            .unwrap_or("unknown")
            .trim()
            .to_owned();
        let workers = std::thread::available_parallelism().map_or(0, |n| n.get());
        context.extend([
            (
                "PostgreSQL / Redis".to_owned(),
                format!("{postgres} / {redis_version}, loopback"),
            ),
            (
                "bench runtime".to_owned(),
                format!(
                    "1 caller: tokio current_thread (as in a function); \
                     8 callers: tokio multi-thread, {workers} workers; one AppState per caller"
                ),
            ),
            (
                "function settings".to_owned(),
                "defaults (PG_POOL_MAX_SIZE unset: 2, or the environment's \
                 concurrency up to 16; REDIS_RESPONSE_TIMEOUT_MS=50, CACHE_TTL_SECONDS=3600)"
                    .to_owned(),
            ),
        ]);
        Ok(())
    }
}

/// Rows to insert before the run, handed out by purpose.
#[derive(Default)]
struct Seed {
    rows: Vec<Row>,
}

impl Seed {
    fn take(&mut self, tag: &str, count: usize) -> Vec<Uuid> {
        let rows = Row::many(tag, count);
        let ids = rows.iter().map(|row| row.id).collect();
        self.rows.extend(rows);
        ids
    }

    fn lanes(&mut self, tag: &str, lanes: usize, per_lane: usize) -> Vec<Vec<Uuid>> {
        (0..lanes)
            .map(|lane| self.take(&format!("{tag}{lane}"), per_lane))
            .collect()
    }
}
