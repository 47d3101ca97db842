//! The spans of one invocation, collected where the work happens.
//!
//! The runtime runs each traced invocation inside [`collecting`], which
//! opens a task-local collector; a Redis command, a Postgres statement or a
//! flight then adds its span with [`record_client`] or [`Scope`]. Outside a
//! traced invocation (tracing off, a sampled-out request, a test calling a
//! handler directly) there is no collector, and recording is one task-local
//! look-up that finds nothing. Task-local, so invocations served at once in
//! one environment never mix their spans.
//!
//! Attributes are chosen where the span is recorded, from what is safe to
//! export: a command's name and its key's prefix, a statement's name, never
//! a value, a parameter or a body.

use super::context::{TraceContext, span_id};
use std::borrow::Cow;
use std::cell::RefCell;
use std::future::Future;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

tokio::task_local! {
    static COLLECTOR: RefCell<Option<Collector>>;
}

/// What a span is, in OpenTelemetry's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The invocation, as the server of its request.
    Server,
    /// A call out: a Redis command, a Postgres statement.
    Client,
    /// Work inside the function: a flight.
    Internal,
}

/// An attribute's value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Str(Cow<'static, str>),
    Int(i64),
    Bool(bool),
}

impl From<&'static str> for Value {
    fn from(text: &'static str) -> Self {
        Self::Str(Cow::Borrowed(text))
    }
}

impl From<String> for Value {
    fn from(text: String) -> Self {
        Self::Str(Cow::Owned(text))
    }
}

impl From<i64> for Value {
    fn from(number: i64) -> Self {
        Self::Int(number)
    }
}

impl From<bool> for Value {
    fn from(flag: bool) -> Self {
        Self::Bool(flag)
    }
}

/// One finished span.
#[derive(Debug, Clone)]
pub struct Span {
    pub id: [u8; 8],
    pub parent: [u8; 8],
    pub name: Cow<'static, str>,
    pub kind: Kind,
    /// Unix time, in nanoseconds.
    pub start: u64,
    pub end: u64,
    pub attributes: Vec<(&'static str, Value)>,
    /// The work failed: the span's status is an error.
    pub failed: bool,
}

/// A traced invocation's spans, as [`collecting`] hands them back.
#[derive(Debug)]
pub struct Collected {
    pub context: TraceContext,
    /// The id the invocation's own (server) span must have: the parent of
    /// the spans recorded at the top.
    pub server: [u8; 8],
    /// When the invocation started, Unix nanoseconds.
    pub start: u64,
    pub spans: Vec<Span>,
}

struct Collector {
    collected: Collected,
    /// The span new spans hang from: the server span, or an open [`Scope`].
    current: [u8; 8],
}

/// Runs `invocation`, collecting its spans when `context` is a sampled
/// trace; `None` otherwise (and then nothing is collected).
pub async fn collecting<F: Future>(
    context: Option<TraceContext>,
    invocation: F,
) -> (F::Output, Option<Collected>) {
    let collector = context.filter(|context| context.sampled).map(|context| {
        let server = span_id();
        Collector {
            collected: Collected {
                context,
                server,
                start: unix_nanos(SystemTime::now()),
                spans: Vec::new(),
            },
            current: server,
        }
    });
    COLLECTOR
        .scope(RefCell::new(collector), async {
            let output = invocation.await;
            let collected = COLLECTOR.with(|collector| collector.take().map(|c| c.collected));
            (output, collected)
        })
        .await
}

/// Adds a finished call out (a Redis command, a Postgres statement) that
/// started at `started` and ends now, under the current span. `attributes`
/// is only called when the invocation is traced.
pub fn record_client(
    name: &'static str,
    started: Instant,
    failed: bool,
    attributes: impl FnOnce() -> Vec<(&'static str, Value)>,
) {
    let _ = COLLECTOR.try_with(|collector| {
        let mut collector = collector.borrow_mut();
        let Some(collector) = collector.as_mut() else {
            return;
        };
        let (start, end) = interval(started.elapsed());
        let span = Span {
            id: span_id(),
            parent: collector.current,
            name: Cow::Borrowed(name),
            kind: Kind::Client,
            start,
            end,
            attributes: attributes(),
            failed,
        };
        collector.collected.spans.push(span);
    });
}

/// An internal span open while this lives: the spans recorded meanwhile in
/// this invocation hang from it. Ended (and recorded) when dropped, also
/// when its future is cancelled; does nothing outside a traced invocation.
pub struct Scope {
    open: Option<Open>,
}

struct Open {
    span: Span,
    started: Instant,
    /// The current span before this one, restored when it ends.
    outer: [u8; 8],
}

impl Scope {
    pub fn open(name: &'static str) -> Self {
        let open = COLLECTOR
            .try_with(|collector| {
                let mut collector = collector.borrow_mut();
                let collector = collector.as_mut()?;
                let id = span_id();
                let outer = std::mem::replace(&mut collector.current, id);
                Some(Open {
                    span: Span {
                        id,
                        parent: outer,
                        name: Cow::Borrowed(name),
                        kind: Kind::Internal,
                        start: 0,
                        end: 0,
                        attributes: Vec::new(),
                        failed: false,
                    },
                    started: Instant::now(),
                    outer,
                })
            })
            .ok()
            .flatten();
        Self { open }
    }

    /// Sets an attribute of the span (nothing when not traced).
    pub fn set(&mut self, key: &'static str, value: impl Into<Value>) {
        if let Some(open) = &mut self.open {
            open.span.attributes.push((key, value.into()));
        }
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        let Some(Open {
            mut span,
            started,
            outer,
        }) = self.open.take()
        else {
            return;
        };
        (span.start, span.end) = interval(started.elapsed());
        let _ = COLLECTOR.try_with(|collector| {
            if let Some(collector) = collector.borrow_mut().as_mut() {
                if collector.current == span.id {
                    collector.current = outer;
                }
                collector.collected.spans.push(span);
            }
        });
    }
}

/// Unix nanoseconds of a span that lasted `elapsed` and ends now.
fn interval(elapsed: Duration) -> (u64, u64) {
    let end = unix_nanos(SystemTime::now());
    let elapsed = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
    (end.saturating_sub(elapsed), end)
}

pub fn unix_nanos(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |since| {
        u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context(sampled: bool) -> Option<TraceContext> {
        Some(TraceContext {
            sampled,
            ..TraceContext::fresh()
        })
    }

    #[tokio::test]
    async fn spans_hang_from_the_open_scope_and_invocations_never_mix() {
        // Arrange
        let invocation = |name: &'static str| async move {
            let mut flight = Scope::open("flight");
            flight.set("flight.led", true);
            tokio::task::yield_now().await;
            record_client(name, Instant::now(), false, || {
                vec![("db.system", "redis".into())]
            });
            drop(flight);
            record_client("after", Instant::now(), true, Vec::new);
        };

        // Act
        let ((_, one), (_, two)) = tokio::join!(
            collecting(context(true), invocation("one")),
            collecting(context(true), invocation("two"))
        );

        // Assert
        for (collected, name) in [(one.unwrap(), "one"), (two.unwrap(), "two")] {
            let names: Vec<&str> = collected.spans.iter().map(|span| &*span.name).collect();
            assert_eq!(names, [name, "flight", "after"]);
            let [call, flight, after] = &collected.spans[..] else {
                unreachable!()
            };
            assert_eq!(call.parent, flight.id);
            assert_eq!(flight.parent, collected.server);
            assert_eq!(after.parent, collected.server);
            assert_eq!(flight.attributes, [("flight.led", Value::Bool(true))]);
            assert!(after.failed && !call.failed);
            assert!(flight.start <= call.start && call.end <= flight.end);
        }
    }

    #[tokio::test]
    async fn nothing_is_collected_when_sampled_out_untraced_or_outside() {
        // Arrange
        let invocation = || async {
            record_client("call", Instant::now(), false, || -> Vec<_> {
                panic!("not traced")
            });
            let mut flight = Scope::open("flight");
            flight.set("users_api.flight.led", true);
            flight.open.is_some()
        };

        // Act
        let (sampled_out, none) = collecting(context(false), invocation()).await;
        let (untraced, nothing) = collecting(None, invocation()).await;
        let outside = invocation().await;

        // Assert
        assert!(none.is_none() && nothing.is_none());
        assert!(!sampled_out && !untraced && !outside);
    }
}
