//! The release binaries as separate processes: cold start (spawn -> first
//! `next` poll, spawn -> first response) against the runtime stub, the
//! connect-and-query baseline, the resident memory of a long-lived
//! instance (`VmRSS`/`VmHWM` of `/proc/<pid>/status`), and one instance kept
//! busy with several invocations in flight.

use crate::measure::{BoxError, histogram, record};
use hdrhistogram::Histogram;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};
use test_support::runtime_stub::RuntimeStub;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How long any one step may take before the run is declared failed.
const STEP_LIMIT: Duration = Duration::from_secs(15);

/// A function binary and the environment it reads (`DATABASE_URL`, ...).
pub struct Function<'a> {
    pub name: &'a str,
    pub binary: &'a Path,
    pub env: &'a [(String, String)],
}

impl Function<'_> {
    pub fn spawn(&self, stub: &RuntimeStub) -> std::io::Result<Child> {
        Command::new(self.binary)
            .env_clear()
            .env("AWS_LAMBDA_RUNTIME_API", stub.address.to_string())
            .env("AWS_LAMBDA_FUNCTION_NAME", self.name)
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_LOG_STREAM_NAME", "2026/01/01/[$LATEST]bench")
            .env(
                "AWS_LAMBDA_LOG_GROUP_NAME",
                format!("/aws/lambda/{}", self.name),
            )
            .envs(self.env.iter().map(|(key, value)| (key, value)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
    }
}

/// One cold start: spawn -> first poll (ready) and spawn -> first answer.
pub struct ColdStart {
    pub ready: Duration,
    pub first_response: Duration,
    pub status: Option<u16>,
}

/// Spawns the function with `event` queued, and stops it after its answer.
pub async fn cold_start(function: &Function<'_>, event: String) -> Result<ColdStart, BoxError> {
    cold_start_until(function, event, std::future::ready(())).await
}

/// As [`cold_start`], stopping the function only once `done` completes
/// after its answer (at most [`STEP_LIMIT`] later): for work it does after
/// the response, such as exporting spans.
pub async fn cold_start_until(
    function: &Function<'_>,
    event: String,
    done: impl std::future::Future<Output = ()>,
) -> Result<ColdStart, BoxError> {
    let mut stub = RuntimeStub::start(function.name).await?;
    stub.push(event);
    let spawned = Instant::now();
    let mut child = function.spawn(&stub)?;
    let outcome = async {
        let ready = stub
            .next_poll(STEP_LIMIT)
            .await
            .ok_or_else(|| format!("{} never polled for an event", function.name))?;
        let completion = stub
            .next_completion(STEP_LIMIT)
            .await
            .ok_or_else(|| format!("{} never answered", function.name))?;
        let _ = tokio::time::timeout(STEP_LIMIT, done).await;
        Ok::<_, BoxError>(ColdStart {
            ready: ready.at - spawned,
            first_response: completion.at - spawned,
            status: completion.status,
        })
    }
    .await;
    stop(&mut child).await;
    outcome
}

/// The baseline binary: spawn -> its `ready` line, and spawn -> exit.
pub async fn baseline(
    binary: &Path,
    env: &[(String, String)],
) -> Result<(Duration, Duration), BoxError> {
    let spawned = Instant::now();
    let mut child = Command::new(binary)
        .env_clear()
        .envs(env.iter().map(|(key, value)| (key, value)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(STEP_LIMIT, lines.next_line()).await??;
    let ready = spawned.elapsed();
    if line.as_deref() != Some("ready") {
        stop(&mut child).await;
        return Err(format!("baseline printed {line:?}").into());
    }
    let status = tokio::time::timeout(STEP_LIMIT, child.wait()).await??;
    if !status.success() {
        return Err(format!("baseline exited with {status}").into());
    }
    Ok((ready, spawned.elapsed()))
}

/// Resident memory at each checkpoint of a long run.
pub struct Memory {
    pub invocations: usize,
    pub rss_kb: u64,
    pub hwm_kb: u64,
}

pub struct LongRun {
    pub checkpoints: Vec<Memory>,
    /// Event handed out -> answer received, as the stub sees it.
    pub latency: Histogram<u64>,
    pub wall: Duration,
    pub unexpected: u64,
    pub first_unexpected: Option<String>,
}

/// Runs one instance through `events`, reading its memory after each count
/// in `checkpoints` (the instance is then idle, waiting for its next event).
pub async fn long_run(
    function: &Function<'_>,
    events: Vec<String>,
    checkpoints: &[usize],
    expected_status: u16,
) -> Result<LongRun, BoxError> {
    let mut stub = RuntimeStub::start(function.name).await?;
    let mut child = function.spawn(&stub)?;
    let pid = child.id().ok_or("child has no pid")?;
    let outcome = async {
        let mut run = LongRun {
            checkpoints: Vec::new(),
            latency: histogram(),
            wall: Duration::ZERO,
            unexpected: 0,
            first_unexpected: None,
        };
        let started = Instant::now();
        let mut events = events.into_iter();
        let mut done = 0;
        for &checkpoint in checkpoints {
            let batch: Vec<String> = events.by_ref().take(checkpoint - done).collect();
            let count = batch.len();
            for event in batch {
                stub.push(event);
            }
            for _ in 0..count {
                let completion = stub
                    .next_completion(STEP_LIMIT)
                    .await
                    .ok_or_else(|| format!("{} stopped answering", function.name))?;
                record(&mut run.latency, completion.latency);
                if completion.status != Some(expected_status) {
                    run.unexpected += 1;
                    run.first_unexpected.get_or_insert(format!(
                        "status {:?} for {}",
                        completion.status, completion.request_id
                    ));
                }
            }
            done += count;
            let (rss_kb, hwm_kb) = memory(pid)?;
            run.checkpoints.push(Memory {
                invocations: done,
                rss_kb,
                hwm_kb,
            });
        }
        run.wall = started.elapsed();
        Ok::<_, BoxError>(run)
    }
    .await;
    stop(&mut child).await;
    outcome
}

/// One instance kept busy by a closed loop, `in_flight` events out at once.
pub struct ClosedLoop {
    /// Event handed out -> answer received, of the answers after the warm-up.
    pub latency: Histogram<u64>,
    /// From the last warm-up answer to the last answer.
    pub wall: Duration,
    /// The most events the instance had been handed at once (see the stub).
    pub peak_in_flight: usize,
    /// `VmHWM` and `Threads` of `/proc/<pid>/status` after the run.
    pub hwm_kb: u64,
    pub threads: u64,
    pub unexpected: u64,
    pub first_unexpected: Option<String>,
}

/// Runs one instance through `events` as a closed loop: `in_flight` events
/// are queued at the start, and each answer queues the next, so the stub
/// always holds `in_flight` events out or waiting (fewer only at the end).
/// The first `warmup` answers are not counted. An answer other than
/// `expected` (status, `x-cache`) is counted as unexpected.
pub async fn closed_loop(
    function: &Function<'_>,
    events: Vec<String>,
    warmup: usize,
    in_flight: usize,
    expected: (u16, &str),
) -> Result<ClosedLoop, BoxError> {
    let total = events.len();
    if total <= warmup || in_flight == 0 {
        return Err(
            format!("{total} events for {warmup} of warm-up, {in_flight} in flight").into(),
        );
    }
    let mut stub = RuntimeStub::start(function.name).await?;
    let mut child = function.spawn(&stub)?;
    let pid = child.id().ok_or("child has no pid")?;
    let outcome = async {
        let mut events = events.into_iter();
        for event in events.by_ref().take(in_flight) {
            stub.push(event);
        }
        let mut latency = histogram();
        let (mut unexpected, mut first_unexpected) = (0, None);
        let (mut started, mut ended) = (Instant::now(), Instant::now());
        for answered in 1..=total {
            let completion = stub
                .next_completion(STEP_LIMIT)
                .await
                .ok_or_else(|| format!("{} stopped answering", function.name))?;
            if let Some(event) = events.next() {
                stub.push(event);
            }
            if answered <= warmup {
                started = completion.at;
                continue;
            }
            ended = completion.at;
            record(&mut latency, completion.latency);
            let answer = (completion.status, completion.cache.as_deref());
            if answer != (Some(expected.0), Some(expected.1)) {
                unexpected += 1;
                first_unexpected.get_or_insert(format!(
                    "status {:?}, x-cache {:?}",
                    completion.status, completion.cache
                ));
            }
        }
        Ok::<_, BoxError>(ClosedLoop {
            latency,
            wall: ended - started,
            peak_in_flight: stub.peak_in_flight(),
            hwm_kb: status_field(pid, "VmHWM:")?,
            threads: status_field(pid, "Threads:")?,
            unexpected,
            first_unexpected,
        })
    }
    .await;
    stop(&mut child).await;
    outcome
}

/// `VmRSS` and `VmHWM` of a running process, in kB.
fn memory(pid: u32) -> Result<(u64, u64), BoxError> {
    Ok((status_field(pid, "VmRSS:")?, status_field(pid, "VmHWM:")?))
}

/// A numeric field of `/proc/<pid>/status` (`VmHWM:` in kB, `Threads:`).
fn status_field(pid: u32, name: &str) -> Result<u64, BoxError> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|line| line.starts_with(name))
        .ok_or_else(|| format!("{name} not in /proc/{pid}/status"))?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .ok_or("empty field")?
        .parse()?)
}

async fn stop(child: &mut Child) {
    let _ = child.start_kill();
    let _ = tokio::time::timeout(STEP_LIMIT, child.wait()).await;
}
