//! What a function tells CloudWatch: one JSON log record and one Embedded
//! Metric Format (EMF) line per request.
//!
//! - [`timings`]: Postgres and Redis time and the cache outcome, recorded
//!   where they happen and collected per request;
//! - [`Record`] ([`record`]): the one record of a request, as a log record
//!   and as an EMF line ([`emf`]);
//! - [`Outbox`] ([`outbox`]): writes records after the response is out,
//!   and hands a traced invocation's spans to the collector;
//! - [`trace`]: the spans of an invocation, and their export.
//!
//! Logs go through `tracing` (the runtime's subscriber writes JSON when the
//! function's log format is JSON, with the invocation's request id in its
//! span); EMF lines go straight to stdout, and a line that already is a JSON
//! object passes through Lambda's JSON log format untouched. This module
//! imports nothing from the domain, and nothing here takes a token or a
//! secret, nor any URL but the trace collector's: the log record names the
//! caller by its subject only, and spans carry no caller at all.

mod emf;
mod outbox;
mod record;
mod timings;
pub mod trace;

pub use emf::Unit;
pub use outbox::Outbox;
pub use record::Record;
pub use timings::{Measured, measure, record_cache, record_postgres, record_redis, record_subject};

/// How the cache answered a `find`; sent as the `x-cache` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    /// Served from Redis.
    Hit,
    /// Read from Postgres (and stored in Redis when this caller held the lease).
    Miss,
    /// Redis was unavailable; read from Postgres without it.
    Bypass,
    /// Served from Redis past its freshness: Postgres failed, or another
    /// caller was refreshing the entry.
    Stale,
    /// Read from Postgres shortly before the entry's freshness ended, and
    /// stored (eager refresh).
    Refresh,
}

impl CacheStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::Miss => "miss",
            Self::Bypass => "bypass",
            Self::Stale => "stale",
            Self::Refresh => "refresh",
        }
    }
}
