//! The users API library, linked by every function.
//!
//! Request flow: handler (in `functions/<name>`) -> [`http`] (parse the event,
//! shape the response) -> [`service`] (cache-aside and invalidation) ->
//! [`store`] (Postgres) and [`cache`] (Redis). [`state`] builds the clients
//! once per cold start from [`config`].

pub mod cache;
pub mod config;
pub mod error;
pub mod http;
pub mod migrate;
pub mod pause;
pub mod runtime;
pub mod secrets;
pub mod service;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod user;

pub use config::Config;
pub use error::ApiError;
pub use state::AppState;
