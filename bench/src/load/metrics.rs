//! What the servers and processes did during a phase: a snapshot before and
//! after, and their difference.
//!
//! - Postgres: `xact_commit + xact_rollback` of `pg_stat_database` for the
//!   load's own database (every statement of the functions runs in a
//!   transaction of its own, so this counts statements once the prepared
//!   statements are cached), and its client backends in `pg_stat_activity`:
//!   their number (the environments' connections) and their CPU.
//! - Redis: `INFO commandstats` calls per command, `INFO stats` bytes in and
//!   out, of the load's own `redis-server`.
//! - CPU: `utime + stime` of `/proc/<pid>/stat` for the function processes,
//!   the Redis server, the database's backends, every process named
//!   `postgres` (the whole server: shared with anything else using it), and
//!   this driver.

use crate::measure::BoxError;
use std::collections::HashMap;

pub struct Snapshot {
    pub pg_transactions: u64,
    pub pg_connections: u64,
    /// CPU ticks per client backend of the load's database.
    pub pg_backends: HashMap<u32, u64>,
    pub postgres_ticks: u64,
    /// Command -> (calls, microseconds spent).
    pub redis_calls: HashMap<String, (u64, u64)>,
    pub redis_in: u64,
    pub redis_out: u64,
    pub redis_reads: u64,
    pub redis_ticks: u64,
    pub functions_ticks: u64,
    pub driver_ticks: u64,
}

/// Where the snapshot reads from.
pub struct Sources<'a> {
    /// A connection to another database of the same server (so its own
    /// queries are not counted).
    pub admin: &'a tokio_postgres::Client,
    pub database: &'a str,
    pub redis: &'a mut redis::aio::MultiplexedConnection,
    pub redis_pid: u32,
    pub function_pids: &'a [u32],
}

impl Sources<'_> {
    pub async fn snapshot(&mut self) -> Result<Snapshot, BoxError> {
        let row = self
            .admin
            .query_one(
                "SELECT (xact_commit + xact_rollback)::bigint FROM pg_stat_database \
                 WHERE datname = $1",
                &[&self.database],
            )
            .await?;
        let pg_transactions = u64::try_from(row.get::<_, i64>(0))?;
        let backends = self
            .admin
            .query(
                "SELECT pid FROM pg_stat_activity \
                 WHERE datname = $1 AND backend_type = 'client backend'",
                &[&self.database],
            )
            .await?;
        let pg_backends: HashMap<u32, u64> = backends
            .iter()
            .filter_map(|row| u32::try_from(row.get::<_, i32>(0)).ok())
            .map(|pid| (pid, ticks(pid)))
            .collect();
        let commandstats: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(self.redis)
            .await?;
        let stats: String = redis::cmd("INFO")
            .arg("stats")
            .query_async(self.redis)
            .await?;
        Ok(Snapshot {
            pg_transactions,
            pg_connections: pg_backends.len() as u64,
            pg_backends,
            postgres_ticks: processes_named("postgres").iter().map(|&p| ticks(p)).sum(),
            redis_calls: command_calls(&commandstats),
            redis_in: info_field(&stats, "total_net_input_bytes"),
            redis_out: info_field(&stats, "total_net_output_bytes"),
            redis_reads: info_field(&stats, "total_reads_processed"),
            redis_ticks: ticks(self.redis_pid),
            functions_ticks: self.function_pids.iter().map(|&p| ticks(p)).sum(),
            driver_ticks: ticks(std::process::id()),
        })
    }
}

/// The difference of two snapshots, CPU in seconds.
#[derive(Clone, Default)]
pub struct Delta {
    pub pg_transactions: u64,
    /// At the end of the phase.
    pub pg_connections: u64,
    pub pg_backends_cpu: f64,
    pub postgres_cpu: f64,
    /// Calls and microseconds spent per command, most calls first.
    pub redis_calls: Vec<(String, u64, u64)>,
    pub redis_in: u64,
    pub redis_out: u64,
    /// Reads of client requests: about one per round trip (a script and the
    /// commands it calls are one), where the command counts count each.
    pub redis_reads: u64,
    pub redis_cpu: f64,
    pub functions_cpu: f64,
    pub driver_cpu: f64,
}

impl Delta {
    pub fn between(before: &Snapshot, after: &Snapshot) -> Self {
        let tick = clock_tick();
        let cpu = |before: u64, after: u64| after.saturating_sub(before) as f64 / tick;
        // A backend that connected during the phase counts from zero.
        let backends: u64 = after
            .pg_backends
            .iter()
            .map(|(pid, &t)| t.saturating_sub(before.pg_backends.get(pid).copied().unwrap_or(0)))
            .sum();
        let mut redis_calls: Vec<(String, u64, u64)> = after
            .redis_calls
            .iter()
            .map(|(name, &(n, usec))| {
                let (was, was_usec) = before.redis_calls.get(name).copied().unwrap_or((0, 0));
                (
                    name.clone(),
                    n.saturating_sub(was),
                    usec.saturating_sub(was_usec),
                )
            })
            .filter(|(name, n, _)| *n > 0 && !matches!(name.as_str(), "info"))
            .collect();
        redis_calls.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        Self {
            pg_transactions: after.pg_transactions.saturating_sub(before.pg_transactions),
            pg_connections: after.pg_connections,
            pg_backends_cpu: backends as f64 / tick,
            postgres_cpu: cpu(before.postgres_ticks, after.postgres_ticks),
            redis_calls,
            redis_in: after.redis_in.saturating_sub(before.redis_in),
            redis_out: after.redis_out.saturating_sub(before.redis_out),
            redis_reads: after.redis_reads.saturating_sub(before.redis_reads),
            redis_cpu: cpu(before.redis_ticks, after.redis_ticks),
            functions_cpu: cpu(before.functions_ticks, after.functions_ticks),
            driver_cpu: cpu(before.driver_ticks, after.driver_ticks),
        }
    }

    /// Redis commands, all of them, those a script calls included (the
    /// snapshots' own `INFO` left out).
    pub fn redis_commands(&self) -> u64 {
        self.redis_calls.iter().map(|(_, n, _)| n).sum()
    }

    /// `evalsha 2.1 µs, set 0.9 µs`: Redis's own time per call of each command
    /// (a script's includes the commands it calls).
    pub fn redis_usec(&self) -> String {
        let list: Vec<String> = self
            .redis_calls
            .iter()
            .map(|(name, n, usec)| format!("{name} {:.1} µs", *usec as f64 / (*n).max(1) as f64))
            .collect();
        list.join(", ")
    }

    /// `evalsha 3, get 2`: the commands, most first.
    pub fn redis_mix(&self, per: f64) -> String {
        let list: Vec<String> = self
            .redis_calls
            .iter()
            .map(|(name, n, _)| format!("{name} {:.2}", *n as f64 / per))
            .collect();
        list.join(", ")
    }
}

/// The keys in Redis and its `used_memory` (bytes): what a cached user takes.
pub async fn memory(redis: &mut redis::aio::MultiplexedConnection) -> Result<(u64, u64), BoxError> {
    let keys: u64 = redis::cmd("DBSIZE").query_async(redis).await?;
    let info: String = redis::cmd("INFO").arg("memory").query_async(redis).await?;
    Ok((keys, info_field(&info, "used_memory")))
}

/// `utime + stime` of a process in clock ticks; 0 once it is gone.
pub fn ticks(pid: u32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // The command name is in parentheses and may hold spaces: count fields
    // after its closing one (state is field 3, utime 14, stime 15).
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
    field(14).unwrap_or(0) + field(15).unwrap_or(0)
}

fn clock_tick() -> f64 {
    // SAFETY: sysconf reads a constant of the system and has no preconditions.
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if tick > 0 { tick as f64 } else { 100.0 }
}

/// Pids whose `comm` is `name`.
fn processes_named(name: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.trim_end() == name)
        })
        .collect()
}

/// `cmdstat_get:calls=12,usec=30,...` lines -> command -> (calls, usec).
fn command_calls(info: &str) -> HashMap<String, (u64, u64)> {
    info.lines()
        .filter_map(|line| {
            let (name, rest) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let field = |key: &str| {
                rest.split(',')
                    .find_map(|kv| kv.strip_prefix(key))?
                    .trim()
                    .parse::<u64>()
                    .ok()
            };
            Some((name.to_owned(), (field("calls=")?, field("usec=")?)))
        })
        .collect()
}

fn info_field(info: &str, name: &str) -> u64 {
    info.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_calls_and_fields_are_read_from_info() {
        let info = "# Commandstats\r\ncmdstat_get:calls=12,usec=30,usec_per_call=2.50\r\n\
                    cmdstat_evalsha:calls=3,usec=9\r\ntotal_net_input_bytes:4096\r\n";

        let calls = command_calls(info);

        assert_eq!(calls["get"], (12, 30));
        assert_eq!(calls["evalsha"], (3, 9));
        assert_eq!(info_field(info, "total_net_input_bytes"), 4096);
        assert_eq!(info_field(info, "missing"), 0);
    }

    #[test]
    fn a_process_that_is_gone_has_no_cpu_ticks() {
        assert_eq!(ticks(u32::MAX), 0);
        assert!(processes_named("no-such-process-name").is_empty());
    }
}
