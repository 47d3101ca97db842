//! Turning API Gateway requests into typed input and results into responses.
//!
//! Works the same for HTTP API (payload v2) and REST API (payload v1) events,
//! and for `cargo lambda watch`, whose requests may lack path parameters: the
//! id is then taken from the last segment of the path. Every error becomes a
//! JSON body `{"code": ..., "message": ...}`; server errors are logged with
//! their cause chain and answered with our own message only.

//!
//! [`request`] reads, [`response`] writes; both are re-exported here, so a
//! handler says `http::path_id`, `http::respond`.

mod request;
mod response;

pub use request::*;
pub use response::*;

use crate::auth::Scope;

/// What a function serves: its route and every status it can answer with.
/// `openapi.yaml`, `template.yaml` and the local router must say the same;
/// `tests/it/contract.rs` checks they do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub function: &'static str,
    /// `METHOD path`, as logged: the route template, never the raw path.
    pub name: &'static str,
    pub method: &'static str,
    pub path: &'static str,
    pub statuses: &'static [u16],
    /// The OAuth scope a caller needs (`security` of the operation).
    pub scope: Scope,
}

/// Response header telling where a `find` answer came from: `hit`, `miss` or `bypass`.
pub const X_CACHE: &str = "x-cache";
