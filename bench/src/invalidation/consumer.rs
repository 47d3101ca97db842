//! A consumer of the change records, as its function runs it: a state of
//! its own on a current-thread runtime, on a thread of its own.

use crate::measure::BoxError;
use std::collections::HashMap;
use std::time::Duration;
use users_api::service::Consumed;
use users_api::{AppState, Config};

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
