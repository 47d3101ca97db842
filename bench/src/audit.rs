//! Section 11: what the auditor costs (issue 23): per audited entry, the
//! Postgres statements and time, and the Redis commands and time. One
//! in-process `invalidate-cache` state audits a schema of its own, against a
//! Redis server of its own whose `INFO commandstats` counts every command it
//! sent; Postgres statements are the auditor's own count, its time that of
//! the statements' round trips as the functions' records measure it. Twice:
//! with every user cached, and with a tenth of them (the walk then reads
//! keys that hold nothing, and those cost too). No consumer runs, so every
//! sample comes from the walk. Redis time is the server's own (`usec` of
//! `commandstats`): the auditor's `GET`s are concurrent, so the sum of their
//! round trips would count the same wait many times.

use crate::fixtures::{self, Row};
use crate::measure::{BoxError, micros};
use crate::world::PRODUCTION;
use std::fmt::Write;
use std::time::{Duration, Instant};
use test_support::functions::find;
use test_support::servers::RedisServer;
use test_support::{TestEnv, request_for};
use users_api::config::AuditConfig;
use users_api::service::Audited;
use users_api::telemetry::{Outbox, measure};

const USERS: usize = 2_000;
const RATE: u32 = 200;
/// The share of the users cached: every one, every tenth.
const CACHED: [(&str, usize); 2] = [("every user cached", 1), ("a tenth cached", 10)];

/// One audit run and what it cost.
pub struct Cost {
    pub name: &'static str,
    pub seconds: u64,
    pub audited: Audited,
    /// Redis commands by name: calls and the server's µs.
    pub commands: Vec<(String, u64, u64)>,
    /// The Postgres statements' round trips, one after another.
    pub postgres: Duration,
}

impl Cost {
    fn redis_commands(&self) -> u64 {
        self.commands.iter().map(|(_, calls, _)| calls).sum()
    }

    fn redis_micros(&self) -> u64 {
        self.commands.iter().map(|(_, _, usec)| usec).sum()
    }
}

pub async fn run(quick: bool) -> Result<Vec<Cost>, BoxError> {
    let seconds = if quick { 3 } else { 10 };
    let mut costs = Vec::new();
    for (name, every) in CACHED {
        eprintln!("== the auditor's cost: {USERS} users, {name}, {RATE}/s for {seconds} s");
        let redis = RedisServer::start();
        let url = redis.url();
        let mut settings = PRODUCTION.to_vec();
        settings.push(("REDIS_URL", &url));
        let env = TestEnv::with_settings(&settings).await;
        let rows = Row::many("audit", USERS);
        fixtures::insert(env.pg(), &env.schema, &rows).await?;
        for row in rows.iter().step_by(every) {
            find(&env.state, request_for("find-user.v2", row.id)).await;
        }
        let mut connection = redis::Client::open(url.as_str())?
            .get_multiplexed_async_connection()
            .await?;
        let _: () = redis::cmd("CONFIG")
            .arg("RESETSTAT")
            .query_async(&mut connection)
            .await?;
        let config = AuditConfig {
            per_second: RATE,
            bound: Duration::from_secs(1),
        };
        let until = Instant::now() + Duration::from_secs(seconds);
        let outbox = Outbox::new(None, None);
        let (audited, measured) = measure(env.state.users.audit(until, &config, &outbox)).await;
        let stats: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut connection)
            .await?;
        costs.push(Cost {
            name,
            seconds,
            audited,
            commands: calls(&stats),
            postgres: measured.postgres.unwrap_or_default(),
        });
    }
    Ok(costs)
}

/// `cmdstat_<name>:calls=<n>,usec=<µs>,...` lines, but the bench's own
/// `INFO` and `CONFIG`.
fn calls(stats: &str) -> Vec<(String, u64, u64)> {
    stats
        .lines()
        .filter_map(|line| {
            let (name, rest) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let field = |key: &str| -> Option<u64> {
                let value = rest.split(',').find_map(|pair| pair.strip_prefix(key))?;
                value.parse().ok()
            };
            let (calls, usec) = (field("calls=")?, field("usec=")?);
            let own = name == "info" || name.starts_with("config");
            (!own).then(|| (name.to_owned(), calls, usec))
        })
        .collect()
}

pub fn render(costs: &[Cost], out: &mut String) {
    if costs.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\n## The auditor's cost ({USERS} users, CACHE_AUDIT_PER_SECOND={RATE}, in-process, \
         a Redis of its own)\n\n\
         | cache | s | batches | keys read | audited | inconsistent | Postgres statements | \
         Redis commands | per audited entry: Postgres statements | Postgres round trip µs | \
         Redis commands | Redis server µs |\n|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|"
    );
    for cost in costs {
        let a = &cost.audited;
        let per = |x: f64| x / a.audited.max(1) as f64;
        let commands: Vec<String> = cost
            .commands
            .iter()
            .map(|(name, calls, _)| format!("{name} {calls}"))
            .collect();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} ({}) | {:.3} | {:.1} | {:.2} | {:.1} |",
            cost.name,
            cost.seconds,
            a.batches,
            a.sampled,
            a.audited,
            a.inconsistent,
            a.statements,
            cost.redis_commands(),
            commands.join(", "),
            per(a.statements as f64),
            per(micros(cost.postgres)),
            per(cost.redis_commands() as f64),
            per(cost.redis_micros() as f64),
        );
    }
}
