//! The auditor in the load's fleet: one environment of the `invalidate-cache`
//! binary (the consumer of the change records, and the auditor beside it,
//! docs/cache.md "Auditor"), invoked again and again in short runs from
//! before the load until after it, its answers summed. The report sets its
//! counts beside the checker's verdict: a healthy run has neither stale
//! reads nor inconsistent entries, a broken one both, and the run fails
//! when they disagree.

use crate::measure::BoxError;
use crate::process::Function;
use serde::Deserialize;
use std::fmt::Write;
use std::path::Path;
use std::time::Duration;
use test_support::runtime_stub::RuntimeStub;
use tokio::process::Child;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use users_api::service::Audited;

/// How long each run works: the stub gives every event a deadline 30 s out,
/// and the function stops `CHANGES_STOP_BEFORE_DEADLINE_MS` before it.
const RUN: Duration = Duration::from_secs(2);
const STUB_DEADLINE: Duration = Duration::from_secs(30);
/// How long it may take to poll for its first event, and to answer a run.
const LIMIT: Duration = Duration::from_secs(15);

/// What the runs' auditor and consumer did, summed.
#[derive(Debug, Default, Clone)]
pub struct Totals {
    pub runs: u64,
    pub audit: Audited,
    /// Change records the consumer applied.
    pub applied: u64,
}

impl Totals {
    /// Adds one run's answer (`Consumed` as JSON).
    fn add(&mut self, answer: &serde_json::Value) -> Result<(), BoxError> {
        self.runs += 1;
        self.audit += Audited::deserialize(&answer["audit"])?;
        self.applied += answer["applied"].as_u64().unwrap_or_default();
        Ok(())
    }
}

impl Totals {
    /// Whether the auditor and the checker agree: both found nothing (no
    /// inconsistent entry, no stale read), or both found something.
    pub fn agree(&self, stale: u64) -> bool {
        (stale > 0) == (self.audit.inconsistent > 0)
    }

    /// The report's section: the counts beside the checker's stale reads.
    pub fn render(&self, out: &mut String, per_second: u32, stale: u64) {
        let a = &self.audit;
        let _ = writeln!(
            out,
            "\n### Auditor\n\n`invalidate-cache` with `CACHE_AUDIT_PER_SECOND={per_second}`, {} \
             runs from the end of the cost phases to the end, beside the consumer ({} change \
             records applied).\n\n\
             | audited | inconsistent | repaired | pending (record within D) | in flight \
             (guarded) | changed between reads | failed batches | checker: stale reads | agree |\n\
             |---:|---:|---:|---:|---:|---:|---:|---:|---|\n\
             | {} | {} | {} | {} | {} | {} | {} | {stale} | {} |",
            self.runs,
            self.applied,
            a.audited,
            a.inconsistent,
            a.repaired,
            a.pending,
            a.in_flight,
            a.changed,
            a.failures,
            if self.agree(stale) { "yes" } else { "NO" },
        );
    }
}

pub struct Auditor {
    stop: watch::Sender<bool>,
    runs: JoinHandle<Result<Totals, BoxError>>,
    child: Child,
}

impl Auditor {
    /// Starts the environment with the fleet's `env` and
    /// `CACHE_AUDIT_PER_SECOND=per_second`, and its first run.
    pub async fn start(
        bin_dir: &Path,
        env: &[(String, String)],
        per_second: u32,
    ) -> Result<Self, BoxError> {
        let mut env = env.to_vec();
        env.push(("CACHE_AUDIT_PER_SECOND".into(), per_second.to_string()));
        let margin = STUB_DEADLINE.saturating_sub(RUN).as_millis();
        env.push(("CHANGES_STOP_BEFORE_DEADLINE_MS".into(), margin.to_string()));
        let binary = bin_dir.join("invalidate-cache");
        let mut stub = RuntimeStub::start("invalidate-cache").await?;
        let function = Function {
            name: "invalidate-cache",
            binary: &binary,
            env: &env,
        };
        let child = function.spawn(&stub)?;
        stub.next_poll(LIMIT)
            .await
            .ok_or("the invalidate-cache environment never polled")?;
        let (stop, stopped) = watch::channel(false);
        let runs = tokio::spawn(runs(stub, stopped));
        Ok(Self { stop, runs, child })
    }

    /// Lets the run in progress end, and sums them all.
    pub async fn stop(mut self) -> Result<Totals, BoxError> {
        let _ = self.stop.send(true);
        let totals = self.runs.await.map_err(|_| "the auditor's runs panicked")?;
        let _ = self.child.start_kill();
        totals
    }
}

/// One run after another until told to stop.
async fn runs(mut stub: RuntimeStub, stop: watch::Receiver<bool>) -> Result<Totals, BoxError> {
    let event = test_support::fixture("invalidate-cache.schedule");
    let mut totals = Totals::default();
    loop {
        stub.push(event.clone());
        let answer = stub
            .next_completion(RUN + LIMIT)
            .await
            .and_then(|completion| completion.body)
            .ok_or("invalidate-cache did not answer a run")?;
        totals.add(&serde_json::from_str(&answer)?)?;
        if *stop.borrow() {
            return Ok(totals);
        }
    }
}
