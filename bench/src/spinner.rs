//! Keeps one vCPU awake while latencies are measured.
//!
//! On this kind of VM an idle vCPU halts, and waking it for the answer of a
//! loopback round trip costs about 30 µs: a Redis GET takes ~23 µs with a vCPU
//! awake and ~55 µs without, and a run flips between the two as other
//! processes come and go. That would swamp the few µs the library adds and
//! make a path and its floor land in different regimes. A thread spinning
//! under `SCHED_IDLE` keeps one vCPU out of halt but gives way to any other
//! thread at once, so every call is measured in the awake regime. The
//! concurrency section runs with it too (with one invocation in flight, or a
//! runtime that serves one at a time, it is as wake-up bound); the cold
//! start and memory sections run without it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

/// Spins until dropped.
pub struct Spinner {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<bool>>,
}

impl Spinner {
    pub fn start() -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("idle-spinner".to_owned())
            .spawn(move || {
                let param = libc::sched_param { sched_priority: 0 };
                // SAFETY: pid 0 is the calling thread; `param` is a valid,
                // initialized sched_param that outlives the call.
                let idle = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) } == 0;
                // At normal priority it would compete with the work measured.
                if idle {
                    while !flag.load(Ordering::Relaxed) {
                        std::hint::spin_loop();
                    }
                }
                idle
            })
            .ok();
        Self { stop, thread }
    }

    /// Whether the thread runs under `SCHED_IDLE` (it spins only then).
    pub fn stop(mut self) -> bool {
        self.halt()
    }

    fn halt(&mut self) -> bool {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .is_some_and(|thread| thread.join().unwrap_or(false))
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        self.halt();
    }
}
