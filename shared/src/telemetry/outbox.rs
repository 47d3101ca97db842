//! Where each request's record waits until its response is out.
//!
//! Under the Lambda runtime ([`crate::runtime::run`]) records are written
//! after the response has been posted to the Runtime API and before the next
//! event is asked for (so before the sandbox can be frozen): the client never
//! waits for a log write, and nothing is lost. Everywhere else (tests,
//! in-process callers) they are written as the request ends.

use super::Record;
use std::io::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

pub struct Outbox {
    /// CloudWatch namespace of the EMF lines; `None`: no metrics.
    namespace: Option<String>,
    /// True until the sandbox's first record: its cold start.
    cold: AtomicBool,
    deferred: AtomicBool,
    pending: Mutex<Vec<Record>>,
    /// Where EMF lines go: stdout, where Lambda picks them up.
    metrics_out: Mutex<Box<dyn Write + Send>>,
}

impl Outbox {
    pub fn new(namespace: Option<String>) -> Self {
        Self {
            namespace,
            cold: AtomicBool::new(true),
            deferred: AtomicBool::new(false),
            pending: Mutex::default(),
            metrics_out: Mutex::new(Box::new(std::io::stdout())),
        }
    }

    /// From now on records wait for [`Outbox::flush`]; whoever calls this
    /// must call it after every request ([`crate::runtime::run`] does).
    pub fn defer(&self) {
        self.deferred.store(true, Ordering::Relaxed);
    }

    /// Sends EMF lines to `out` instead of stdout.
    #[cfg(feature = "test-hooks")]
    pub fn send_metrics_to(&self, out: Box<dyn Write + Send>) {
        *lock(&self.metrics_out) = out;
    }

    /// Takes one request's record: kept for [`Outbox::flush`] when deferred,
    /// written now otherwise. The first record of an instance is its cold start.
    pub fn submit(&self, mut record: Record) {
        record.cold_start = self.cold.swap(false, Ordering::Relaxed);
        if self.deferred.load(Ordering::Relaxed) {
            lock(&self.pending).push(record);
        } else {
            self.write(&[record]);
        }
    }

    /// Writes every record waiting: the log records through `tracing`, the
    /// EMF lines in one write.
    pub fn flush(&self) {
        let mut pending = lock(&self.pending);
        if !pending.is_empty() {
            self.write(&pending);
            // Cleared in place: the next request's push does not allocate.
            pending.clear();
        }
    }

    fn write(&self, records: &[Record]) {
        let mut lines = String::new();
        for record in records {
            record.log();
            if let Some(namespace) = &self.namespace {
                lines.push_str(&record.emf_line(namespace));
                lines.push('\n');
            }
        }
        if !lines.is_empty() {
            // A failed write loses metrics, never a request.
            let mut out = lock(&self.metrics_out);
            let _ = out.write_all(lines.as_bytes());
            let _ = out.flush();
        }
    }
}

/// A poisoned lock only means a panic elsewhere; the data is still usable.
fn lock<T: ?Sized>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::Measured;
    use std::sync::Arc;
    use std::time::Duration;

    /// A writer the test can read back.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            lock(&self.0).extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn record() -> Record {
        Record {
            request_id: "-".into(),
            route: "POST /users",
            function: "create-user",
            status: 201,
            latency: Duration::from_millis(1),
            measured: Measured::default(),
            cold_start: false,
        }
    }

    #[test]
    fn a_deferred_record_waits_for_the_flush_and_only_the_first_is_a_cold_start() {
        // Arrange
        let out = Shared::default();
        let outbox = Outbox::new(Some("ns".into()));
        *lock(&outbox.metrics_out) = Box::new(out.clone());
        outbox.defer();

        // Act
        outbox.submit(record());
        outbox.submit(record());
        let before_flush = lock(&out.0).len();
        outbox.flush();

        // Assert
        assert_eq!(before_flush, 0);
        let text = String::from_utf8(lock(&out.0).clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].contains("\"ColdStart\":1.0"), "{}", lines[0]);
        assert!(!lines[1].contains("ColdStart"), "{}", lines[1]);
    }
}
