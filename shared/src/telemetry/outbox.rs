//! Where each request's record waits until its response is out.
//!
//! Under the Lambda runtime ([`crate::runtime`]) each invocation runs inside
//! [`Outbox::holding`], which keeps the records it submits; the runtime writes
//! them once the invocation's response has been posted (and, on classic
//! Lambda, before the next event is asked for, so before the sandbox can be
//! frozen): the client never waits for a log write, nothing is lost, and
//! invocations running at once in one environment each write their own
//! record after their own response. Everywhere else (tests, in-process
//! callers) records are written as the request ends.

use super::Record;
use super::emf::{self, Unit};
use super::trace::{Collected, Invocation, TraceContext};
use crate::config::TracesConfig;
use std::cell::RefCell;
use std::future::Future;
use std::io::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

tokio::task_local! {
    /// The records of the invocation running in this task, while held.
    static HELD: RefCell<Vec<Record>>;
}

pub struct Outbox {
    /// CloudWatch namespace of the EMF lines; `None`: no metrics.
    namespace: Option<String>,
    /// True until the environment's first record: its cold start.
    cold: AtomicBool,
    /// Where EMF lines go: stdout, where Lambda picks them up.
    metrics_out: Mutex<Box<dyn Write + Send>>,
    /// Where spans go; `None`: no traces.
    #[cfg(feature = "traces")]
    exporter: Option<super::trace::Exporter>,
}

impl Outbox {
    /// An outbox writing EMF lines under `namespace` (none: no metrics) and
    /// exporting spans to the collector of `traces` (none: no traces).
    pub fn new(namespace: Option<String>, traces: Option<&TracesConfig>) -> Self {
        #[cfg(not(feature = "traces"))]
        if traces.is_some() {
            lambda_http::tracing::warn!(
                "OTEL_EXPORTER_OTLP_ENDPOINT is set, but this function was built without the \
                 `traces` feature: no spans are exported"
            );
        }
        Self {
            namespace,
            cold: AtomicBool::new(true),
            metrics_out: Mutex::new(Box::new(std::io::stdout())),
            #[cfg(feature = "traces")]
            exporter: traces.map(super::trace::Exporter::new),
        }
    }

    /// The trace an invocation with X-Ray trace header `header` records:
    /// `None` when traces are off, or the header says `Sampled=0`. An
    /// invocation without a header (or with a malformed one) starts a trace
    /// of its own.
    pub fn traced(&self, header: Option<&str>) -> Option<TraceContext> {
        #[cfg(feature = "traces")]
        if self.exporter.is_some() {
            return Some(
                header
                    .and_then(TraceContext::parse)
                    .unwrap_or_else(TraceContext::fresh),
            )
            .filter(|context| context.sampled);
        }
        let _ = header;
        None
    }

    /// The export of a traced invocation's spans, its server span made from
    /// its `records`: work for after the response, bounded by the
    /// exporter's timeout, and what completes once its request is on the
    /// socket. `None` when there is nothing to send, or too many exports are
    /// already waiting for the collector (then the spans are dropped, and
    /// that logged once).
    pub fn export(
        &'static self,
        collected: Collected,
        invocation: Invocation,
        records: &[Record],
    ) -> Option<(
        impl Future<Output = ()> + Send + 'static + use<>,
        tokio::sync::oneshot::Receiver<()>,
    )> {
        #[cfg(feature = "traces")]
        {
            let exporter = self.exporter.as_ref()?;
            let slot = exporter.reserve()?;
            let server = super::trace::server_span(&collected, invocation, records.first());
            let trace_id = collected.context.trace_id;
            let mut spans = collected.spans;
            spans.push(server);
            let (handed_off, on_socket) = tokio::sync::oneshot::channel();
            Some((exporter.send(slot, trace_id, spans, handed_off), on_socket))
        }
        #[cfg(not(feature = "traces"))]
        {
            let _ = (collected, invocation, records);
            None::<(std::future::Ready<()>, tokio::sync::oneshot::Receiver<()>)>
        }
    }

    /// Sends EMF lines to `out` instead of stdout.
    #[cfg(feature = "test-hooks")]
    pub fn send_metrics_to(&self, out: Box<dyn Write + Send>) {
        *lock(&self.metrics_out) = out;
    }

    /// Runs `invocation`, keeping the records it submits instead of writing
    /// them; the caller writes them with [`Outbox::write`] when it chooses.
    pub async fn holding<F: Future>(invocation: F) -> (F::Output, Vec<Record>) {
        HELD.scope(RefCell::default(), async {
            let output = invocation.await;
            (output, HELD.with(RefCell::take))
        })
        .await
    }

    /// Takes one request's record: kept when it runs inside
    /// [`Outbox::holding`], written now otherwise. The first record of an
    /// environment is its cold start.
    pub fn submit(&self, mut record: Record) {
        record.cold_start = self.cold.swap(false, Ordering::Relaxed);
        if HELD.try_with(|_| ()).is_ok() {
            HELD.with(|held| held.borrow_mut().push(record));
        } else {
            self.write(&[record]);
        }
    }

    /// Writes `records`: the log records through `tracing`, the EMF lines in
    /// one write.
    pub fn write(&self, records: &[Record]) {
        let mut lines = String::new();
        for record in records {
            record.log();
            if let Some(namespace) = &self.namespace {
                lines.push_str(&record.emf_line(namespace));
                lines.push('\n');
            }
        }
        self.emit(&lines);
    }

    /// Writes EMF `lines` to stdout (or a test's writer) in one write. A
    /// failed write loses metrics, never a request.
    fn emit(&self, lines: &str) {
        if lines.is_empty() {
            return;
        }
        let mut out = lock(&self.metrics_out);
        let _ = out.write_all(lines.as_bytes());
        let _ = out.flush();
    }
}

impl Outbox {
    /// Writes one EMF line of `function`'s `metrics` now: for work that is
    /// not a request, such as the consumer of the change records.
    pub fn write_metrics(&self, function: &str, metrics: &[(&str, f64, Unit)]) {
        let Some(namespace) = &self.namespace else {
            return;
        };
        let mut line = emf::line(namespace, &[("Function", function)], metrics);
        line.push('\n');
        self.emit(&line);
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
            xray_trace_id: None,
            route: "POST /users",
            function: "create-user",
            status: 201,
            latency: Duration::from_millis(1),
            measured: Measured::default(),
            cold_start: false,
        }
    }

    #[tokio::test]
    async fn held_records_wait_for_their_own_holder_and_one_is_the_cold_start() {
        // Arrange: two invocations at once, each submitting one record.
        let out = Shared::default();
        let outbox = Outbox::new(Some("ns".into()), None);
        *lock(&outbox.metrics_out) = Box::new(out.clone());
        let invocation = |id: &'static str| {
            let outbox = &outbox;
            async move {
                tokio::task::yield_now().await;
                outbox.submit(Record {
                    request_id: id.into(),
                    ..record()
                });
            }
        };

        // Act
        let ((_, first), (_, second)) = tokio::join!(
            Outbox::holding(invocation("one")),
            Outbox::holding(invocation("two"))
        );
        let written_while_held = lock(&out.0).len();
        outbox.write(&second);
        outbox.write(&first);
        outbox.submit(record());

        // Assert: nothing written while held, each holder got its own
        // record, and an unheld record is written at once.
        assert_eq!(written_while_held, 0);
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].request_id, "one");
        assert_eq!(second.len(), 1);
        assert_eq!(second[0].request_id, "two");
        let text = String::from_utf8(lock(&out.0).clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert_eq!(
            lines
                .iter()
                .filter(|line| line.contains("\"ColdStart\":1.0"))
                .count(),
            1,
            "{text}"
        );
        assert!(
            first[0].cold_start != second[0].cold_start,
            "exactly one held record is the cold start"
        );
    }
}
