//! The users service: where cache-aside and invalidation live. Handlers call
//! it; it calls the store (Postgres) and the cache (Redis).
//!
//! - [`find`](UserService::find) (`find.rs`): a hit is answered from Redis; a
//!   miss takes the key's fill lease, reads Postgres and fills; an entry
//!   past its freshness is refreshed, or answered stale when Postgres fails;
//!   the decision per key state is `decide.rs`; simultaneous finds of one
//!   user in the process share that work (`flight.rs`);
//! - [`create`](UserService::create), [`update`](UserService::update) and
//!   [`delete`](UserService::delete) (`write.rs`): a write to an existing user
//!   runs under the key's write guard; a write with an `Idempotency-Key` is
//!   answered from its record when it has one;
//! - `list`, here;
//! - [`consume_changes`](UserService::consume_changes) (`changes.rs`): the
//!   consumer of the change records, which voids the keys of users changed
//!   by any writer, the API or not;
//! - [`audit`](UserService::audit) (`audit.rs`): the auditor beside the
//!   consumer, which samples cached users against Postgres and voids the
//!   entries that break the guarantee.
//!
//! Together they guarantee that once `update` or `delete` has returned
//! success, no later `find` returns the previous value: docs/cache.md.

mod audit;
mod changes;
pub(crate) mod decide;
mod find;
mod flight;
mod write;

pub use audit::Audited;
pub use changes::Consumed;
pub use decide::EagerRefresh;
pub use find::Found;
pub use write::Respond;

use crate::cache::{CacheError, UserCache};
use crate::config::CacheConfig;
use crate::error::ApiError;
use crate::hooks::Hooks;
use crate::store::UserStore;
use crate::user::User;
use flight::Flights;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// One page of `list`.
#[derive(Debug, serde::Serialize)]
pub struct Page {
    pub items: Vec<User>,
    pub next_cursor: Option<Uuid>,
}

#[derive(Clone)]
pub struct UserService {
    store: UserStore,
    cache: UserCache,
    /// How long a miss waits for another caller's fill (`CACHE_FILL_WAIT_MS`).
    fill_wait: Duration,
    /// Eager refresh and fail-safe, as `find`'s decision needs them.
    policy: decide::Policy,
    /// How long a refresh waits for Postgres before answering the entry it
    /// has (`CACHE_FAIL_SAFE_TIMEOUT_MS`).
    fail_safe_timeout: Duration,
    /// The finds in flight in this process, shared by the service's clones.
    flights: Arc<Flights<Uuid, Arc<find::Resolved>>>,
    /// Users the consumer voided, for the auditor to look at again.
    recent: Arc<audit::Recent>,
    hooks: Hooks,
}

impl UserService {
    pub fn new(store: UserStore, cache: UserCache, config: &CacheConfig) -> Self {
        Self {
            store,
            cache,
            fill_wait: config.fill_wait,
            policy: decide::Policy {
                eager: EagerRefresh::from_percent(config.eager_refresh_percent),
                fail_safe: !config.fail_safe.is_zero(),
            },
            fail_safe_timeout: config.fail_safe_timeout,
            flights: Arc::new(Flights::new()),
            recent: Arc::default(),
            hooks: Hooks::default(),
        }
    }

    pub async fn list(&self, after: Option<Uuid>, limit: u32) -> Result<Page, ApiError> {
        let mut items = self.store.list(after, i64::from(limit) + 1).await?;
        let next_cursor = if items.len() > limit as usize {
            items.truncate(limit as usize);
            items.last().map(|user| user.id)
        } else {
            None
        };
        Ok(Page { items, next_cursor })
    }
}

/// Test hooks (feature `test-hooks`): pause points and the parts.
#[cfg(feature = "test-hooks")]
impl UserService {
    /// Parks every caller reaching `point` at `pause`.
    pub fn pause_at(
        &mut self,
        point: crate::hooks::Point,
        pause: std::sync::Arc<crate::hooks::PausePoint>,
    ) {
        if point == crate::hooks::Point::BeforeCommit {
            self.store.pause_at(point, pause);
        } else {
            self.hooks.pause_at(point, pause);
        }
    }

    /// Refreshes entries early by `eager` instead of the configured
    /// threshold (the bench compares XFetch with it).
    pub fn set_eager_refresh(&mut self, eager: EagerRefresh) {
        self.policy.eager = eager;
    }

    pub fn store(&self) -> &UserStore {
        &self.store
    }

    pub fn cache(&self) -> &UserCache {
        &self.cache
    }

    /// Finds so far that waited for another find's flight: members of a
    /// flight, and leaders of a next flight waiting for the running one.
    pub fn flight_waits(&self) -> u64 {
        self.flights.waits()
    }
}

/// Serializes a user once; the bytes are both the response and the cache entry.
fn to_body(user: &User) -> Result<Vec<u8>, ApiError> {
    serde_json::to_vec(user).map_err(|error| ApiError::Internal(error.into()))
}

/// Logs a failed cache call with what Redis said (the error's [`cause`]:
/// `redis call failed` alone says nothing of why), never a key's value.
fn log_cache_error(operation: &str, error: &CacheError) {
    lambda_http::tracing::warn!(
        operation,
        error = %error,
        cause = %cause(error),
        "cache unavailable, using Postgres only"
    );
}

/// What lies under `error` (its source), for a log line; `-` when nothing.
fn cause(error: &dyn std::error::Error) -> String {
    error
        .source()
        .map_or_else(|| "-".to_owned(), ToString::to_string)
}
