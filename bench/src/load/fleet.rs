//! The environments and the router in front of them, as API Gateway and
//! Lambda would be.
//!
//! Each environment is one process of a release function binary with a
//! runtime stub of its own ([`RuntimeStub`], its own loopback port) and
//! `slots` invocations at once (`AWS_LAMBDA_MAX_CONCURRENCY`; 1, unset, is
//! classic Lambda). A request goes to its function's queue; every environment
//! of that function takes the next request from it whenever it has a free
//! slot. So a request is served by whichever environment frees a slot first,
//! and when all are busy it waits in the queue, first come first served.
//! Lambda would start another environment instead (a cold start) or, at the
//! concurrency limit, refuse it (429); here the number of environments is
//! fixed and the wait is part of the request's latency, reported apart as
//! its queueing.

use crate::measure::BoxError;
use crate::process::Function;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use test_support::runtime_stub::{Completion, RuntimeStub};
use tokio::process::Child;
use tokio::sync::{Mutex, mpsc};
use tokio::task::JoinHandle;
use uuid::Uuid;

/// The five functions, in [`Op`] order.
pub const FUNCTIONS: [&str; 5] = [
    "find-user",
    "update-user",
    "create-user",
    "delete-user",
    "list-users",
];
/// How long an environment may take to poll for its first event.
const READY_LIMIT: Duration = Duration::from_secs(15);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    Find,
    Update,
    Create,
    Delete,
    List,
}

impl Op {
    pub const ALL: [Op; 5] = [Op::Find, Op::Update, Op::Create, Op::Delete, Op::List];
}

/// One request as API Gateway hands it on.
pub struct Job {
    pub op: Op,
    /// The user it names (`None` for a create or a list).
    pub user: Option<Uuid>,
    pub event: String,
    /// When the generator meant to send it.
    pub due: Instant,
    /// When it was sent, the start of its latency (a little after `due`: the
    /// timer's granularity, or a driver falling behind, see [`Outcome::lag`]).
    pub arrival: Instant,
}

/// One request answered.
pub struct Outcome {
    pub op: Op,
    pub user: Option<Uuid>,
    pub due: Instant,
    pub arrival: Instant,
    /// When an environment took it from the queue.
    pub dispatched: Instant,
    pub completion: Completion,
}

impl Outcome {
    pub fn latency(&self) -> Duration {
        self.completion.at - self.arrival
    }

    pub fn queued(&self) -> Duration {
        self.dispatched - self.arrival
    }

    /// How late the generator sent it.
    pub fn lag(&self) -> Duration {
        self.arrival.saturating_duration_since(self.due)
    }
}

/// Environments per function, and invocations per environment.
#[derive(Clone, Copy)]
pub struct Shape {
    pub environments: [usize; 5],
    pub slots: usize,
    /// A deliberately broken deployment, to see the checker fail: the write
    /// functions get this `CACHE_KEY_PREFIX`, so their guards and
    /// invalidations miss the keys the finds read.
    pub writers_prefix: Option<&'static str>,
}

pub struct Fleet {
    queues: Vec<mpsc::UnboundedSender<Job>>,
    tasks: Vec<JoinHandle<()>>,
    children: Vec<Child>,
}

impl Fleet {
    /// Starts every environment and waits until each has polled for its
    /// first event (its init done: connections open). Answers go to `done`.
    pub async fn start(
        bin_dir: &Path,
        shape: Shape,
        env: &[(String, String)],
        done: mpsc::UnboundedSender<Outcome>,
    ) -> Result<Self, BoxError> {
        let mut env = env.to_vec();
        if shape.slots > 1 {
            env.push((
                "AWS_LAMBDA_MAX_CONCURRENCY".to_owned(),
                shape.slots.to_string(),
            ));
        }
        let mut fleet = Self {
            queues: Vec::new(),
            tasks: Vec::new(),
            children: Vec::new(),
        };
        for (name, &count) in FUNCTIONS.iter().zip(&shape.environments) {
            let (queue, jobs) = mpsc::unbounded_channel();
            fleet.queues.push(queue);
            let jobs = Arc::new(Mutex::new(jobs));
            let binary = bin_dir.join(name);
            let mut env = env.clone();
            if let Some(prefix) = shape.writers_prefix
                && *name != "find-user"
            {
                env.push(("CACHE_KEY_PREFIX".to_owned(), prefix.to_owned()));
            }
            let function = Function {
                name,
                binary: &binary,
                env: &env,
            };
            for _ in 0..count {
                let mut stub = RuntimeStub::start(name).await?;
                fleet.children.push(function.spawn(&stub)?);
                stub.next_poll(READY_LIMIT)
                    .await
                    .ok_or_else(|| format!("an environment of {name} never polled"))?;
                let task = environment(stub, shape.slots, jobs.clone(), done.clone());
                fleet.tasks.push(tokio::spawn(task));
            }
        }
        Ok(fleet)
    }

    /// What sends requests to the environments.
    pub fn router(&self) -> Router {
        Router {
            queues: self.queues.clone(),
        }
    }

    pub fn pids(&self) -> Vec<u32> {
        self.children.iter().filter_map(Child::id).collect()
    }

    /// Whether every process still runs.
    pub fn alive(&mut self) -> bool {
        self.children
            .iter_mut()
            .all(|child| matches!(child.try_wait(), Ok(None)))
    }
}

/// API Gateway's part: each request to its function's queue.
#[derive(Clone)]
pub struct Router {
    queues: Vec<mpsc::UnboundedSender<Job>>,
}

impl Router {
    pub fn send(&self, job: Job) {
        let _ = self.queues[job.op as usize].send(job);
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        for child in &mut self.children {
            let _ = child.start_kill();
        }
    }
}

/// One environment: takes a request from its function's queue whenever it
/// has a free slot, hands it to its process through the stub, and reports
/// the answer.
async fn environment(
    mut stub: RuntimeStub,
    slots: usize,
    jobs: Arc<Mutex<mpsc::UnboundedReceiver<Job>>>,
    done: mpsc::UnboundedSender<Outcome>,
) {
    let mut out: HashMap<String, (Job, Instant)> = HashMap::new();
    let mut closed = false;
    while !(closed && out.is_empty()) {
        tokio::select! {
            completion = stub.completion() => {
                let Some(completion) = completion else { break };
                if let Some((job, dispatched)) = out.remove(&completion.request_id) {
                    let _ = done.send(Outcome {
                        op: job.op,
                        user: job.user,
                        due: job.due,
                        arrival: job.arrival,
                        dispatched,
                        completion,
                    });
                }
            }
            job = async { jobs.lock().await.recv().await }, if !closed && out.len() < slots => {
                match job {
                    Some(mut job) => {
                        let dispatched = Instant::now();
                        let id = stub.push(std::mem::take(&mut job.event));
                        out.insert(id, (job, dispatched));
                    }
                    None => closed = true,
                }
            }
        }
    }
}
