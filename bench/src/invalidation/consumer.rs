//! A consumer of the change records, as its function runs it: a state of
//! its own on a current-thread runtime, on a thread of its own; and how fast
//! one applies a backfill's records.

use crate::measure::BoxError;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use test_support::TestEnv;
use users_api::service::Consumed;
use users_api::{AppState, Config};

/// How long the backfill's consumer runs.
const BACKFILL_RUN: Duration = Duration::from_secs(5);

/// One statement changed many users at once; one consumer applied them.
#[derive(Default)]
pub struct Backfill {
    pub records: u64,
    /// From the statement's commit to the last record deleted.
    pub applied_in: Option<Duration>,
    pub consumed: Consumed,
    pub cpu: Duration,
}

/// One consumer, as its function runs: a state of its own on a current-thread
/// runtime, the real handler until `run_for` has passed. Also its CPU time.
pub fn run(
    settings: &HashMap<String, String>,
    run_for: Duration,
) -> Result<(Consumed, Duration), BoxError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let config = Config::from_lookup(|name| settings.get(name).cloned())?;
        let state = AppState::connect(&config).await?;
        let cpu = thread_cpu();
        let schedule = "invalidate-cache.schedule";
        let consumed = test_support::functions::invalidate(&state, schedule, run_for).await;
        Ok::<_, BoxError>((consumed, thread_cpu().saturating_sub(cpu)))
    })
}

/// This thread's user and system CPU time.
fn thread_cpu() -> Duration {
    // SAFETY: getrusage only writes into the struct it is given.
    let usage = unsafe {
        let mut usage = std::mem::zeroed::<libc::rusage>();
        libc::getrusage(libc::RUSAGE_THREAD, &mut usage);
        usage
    };
    let time = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec.unsigned_abs())
            + Duration::from_micros(t.tv_usec.unsigned_abs())
    };
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// Changes every user whose email is `LIKE pattern` in one statement (as a
/// migration or a backfill would), and runs one consumer until the records
/// are gone, in full batches.
pub async fn backfill(
    env: &TestEnv,
    settings: Arc<HashMap<String, String>>,
    pattern: &str,
) -> Result<Backfill, BoxError> {
    let schema = &env.schema;
    let update = format!("UPDATE {schema}.users SET version = version + 1 WHERE email LIKE $1");
    let records = env.pg().execute(&update, &[&pattern]).await?;
    let committed = Instant::now();
    let consumer = tokio::task::spawn_blocking(move || run(&settings, BACKFILL_RUN));
    let left = format!("SELECT count(*) FROM {schema}.user_changes");
    let mut applied_in = None;
    while applied_in.is_none() && committed.elapsed() < BACKFILL_RUN {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let left: i64 = env.pg().query_one(&left, &[]).await?.get(0);
        applied_in = (left == 0).then(|| committed.elapsed());
    }
    let (consumed, cpu) = consumer.await??;
    Ok(Backfill {
        records,
        applied_in,
        consumed,
        cpu,
    })
}
