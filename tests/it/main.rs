//! The cross-function test suite, one binary with a module per area. The
//! support library (`test_support`, in `tests/support/`) gives each test its
//! own Postgres schema and Redis key prefix, the event fixtures and calls into
//! the real handlers; the benchmarks share it.
//!
//! Run one area with a filter on the module, e.g. `scripts/test.sh faults::`
//! or `cargo nextest run -p users-api-tests -E 'test(/^faults::/)'`.

mod access;
mod api;
mod audit;
mod cache_races;
mod changes;
mod conditional;
mod contract;
mod fail_safe;
mod faults;
mod idempotency;
mod key_formats;
mod model;
mod postgres_failover;
mod production;
mod redis_failover;
mod redis_modes;
mod runtime;
mod secrets;
mod single_flight;
mod telemetry;
mod template;
mod tls;
mod traces;
