//! The users API library, linked by every function.
//!
//! # Layout
//!
//! A request goes down the layers and its answer comes back up: the handler
//! (in `functions/<name>`) -> [`state`] (runs it with its telemetry) ->
//! [`http`] (parse the event, shape the response) -> [`service`]
//! (cache-aside) -> [`store`] (Postgres) and [`cache`] (Redis).
//!
//! Imports run one way, from a layer to the layers below it, never up:
//!
//! | layer | modules |
//! |---|---|
//! | runtime | [`runtime`], [`state`], [`migrate`] |
//! | HTTP | [`http`] |
//! | cache-aside | [`service`] (`find.rs`: a miss goes to Postgres; `flight.rs`; `write.rs`) |
//! | I/O | [`store`] (Postgres), [`cache`] (Redis) |
//! | telemetry | [`telemetry`] (nothing from the domain) |
//! | domain | [`user`], [`auth`], [`idempotency`], [`config`], [`error`], [`tls`], [`secrets`], [`hooks`] |
//!
//! The `layers` test fails when an import goes up or round in a circle.
//! docs/cache.md describes the cache protocol; docs/configuration.md every
//! setting.

pub mod auth;
pub mod cache;
pub mod config;
pub mod error;
pub mod hooks;
pub mod http;
pub mod idempotency;
pub mod migrate;
pub mod runtime;
pub mod secrets;
pub mod service;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod user;

#[cfg(test)]
mod layers;

pub use config::Config;
pub use error::ApiError;
pub use state::AppState;

/// The cache's raw protocol and `find`'s decision, for tests that drive Redis
/// directly, the bench's floors and the model checker (`model/`), which
/// takes its finds' decisions through this same code (feature `test-hooks`).
#[cfg(feature = "test-hooks")]
pub mod testing {
    pub use crate::cache::protocol::{
        COMPARE_AND_SET_SCRIPT, GUARD_SCRIPT, LEASE, RELEASE_SCRIPT, Stored, TOKEN_LEN, decode,
        encode_not_found, encode_refreshing, encode_user, lookup_command,
    };
    pub use crate::service::decide::{Due, Moment, Policy, Step, next_step};

    /// What a lookup that got `found` hands to [`next_step`], as
    /// `UserCache::lookup` makes it; a new lease when `found` is `None`.
    pub fn lookup_of(found: Option<Vec<u8>>) -> crate::cache::Lookup {
        crate::cache::Lookup::read(found, crate::cache::Lease::new())
    }
}
