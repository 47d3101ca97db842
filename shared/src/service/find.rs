//! `find`, cache-aside: a fresh entry is answered from Redis; a miss takes
//! the key's fill lease, goes to Postgres and fills only if the lease
//! survived. An entry past its freshness is refreshed the same way, under a
//! refresh lease that leaves it readable, and answered stale when Postgres
//! fails (fail-safe); near the end of its freshness one hit refreshes it
//! early. Callers that miss while another fills wait for it briefly
//! (`CACHE_FILL_WAIT_MS`) instead of all querying Postgres. The decision is
//! `decide.rs`, pure; docs/cache.md says why it is safe. Within one process,
//! simultaneous finds of one user run as one flight (`flight.rs`) and share
//! its result, each with its own access check and cache status.

use super::decide::{Due, Moment, Step, next_step};
use super::flight::Role;
use super::{UserService, log_cache_error, to_body};
use crate::auth::Caller;
use crate::cache::{self, Cached, Entry, Lease, Lookup};
use crate::error::ApiError;
use crate::hooks::Point;
use crate::telemetry::{self, CacheStatus};
use crate::user::User;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::time::Instant;
use uuid::Uuid;

/// A user's JSON body and how it was obtained.
#[derive(Debug)]
pub struct Found {
    pub body: Vec<u8>,
    /// The user's version, sent as the ETag.
    pub version: i64,
    pub cache: CacheStatus,
    /// For a stale answer, seconds since its entry was stored (`Age`).
    pub age: Option<u64>,
}

/// What a find learned about a user, whoever asked: the one result of a
/// flight, shared by its callers. Each then applies its own access check.
#[derive(Debug)]
pub(super) struct Resolved {
    source: Source,
    answer: Result<Answer, Arc<ApiError>>,
}

#[derive(Debug, Clone)]
enum Answer {
    User {
        version: i64,
        owner: Option<String>,
        body: Vec<u8>,
    },
    Missing,
}

/// Where a flight's answer came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// A fresh entry or a negative entry in Redis.
    Cache,
    /// Postgres, read under the fill lease (a miss, or an entry past its
    /// freshness).
    Fill,
    /// Postgres, read under the refresh lease of a fresh entry (eager).
    Refresh,
    /// An entry past its freshness: Postgres failed, or another caller
    /// is refreshing it. The entry's stored time, in ms since the epoch.
    Stale(u64),
    /// Postgres, without filling (a write was in progress, or the wait for
    /// another instance's fill was over).
    ReadThrough,
    /// Postgres, because Redis failed.
    Bypass,
}

impl Resolved {
    /// How the cache answered one caller of the flight. The leader's is
    /// what it did. A member served by the leader's fill or refresh made no
    /// Postgres read of its own, like another instance's caller waiting for
    /// a fill: a hit. A stale answer is stale for everyone; a failed read is
    /// the leader's status for everyone.
    fn status(&self, role: Role) -> CacheStatus {
        match (self.source, role, &self.answer) {
            (Source::Cache, ..) | (Source::Fill | Source::Refresh, Role::Member, Ok(_)) => {
                CacheStatus::Hit
            }
            (Source::Refresh, ..) => CacheStatus::Refresh,
            (Source::Stale(_), ..) => CacheStatus::Stale,
            (Source::Fill | Source::ReadThrough, ..) => CacheStatus::Miss,
            (Source::Bypass, ..) => CacheStatus::Bypass,
        }
    }

    /// Seconds since a stale answer's entry was stored, at `now_ms`.
    fn age(&self, now_ms: u64) -> Option<u64> {
        match self.source {
            Source::Stale(stored_ms) => Some(now_ms.saturating_sub(stored_ms) / 1000),
            _ => None,
        }
    }

    /// The entry as it is, from `source`.
    fn cached(cached: Cached, source: Source) -> Self {
        let (version, owner, body) = cached.into_parts();
        Self {
            source,
            answer: Ok(Answer::User {
                version,
                owner,
                body,
            }),
        }
    }
}

/// Milliseconds since the epoch, the clock entries are stamped with
/// (docs/cache.md, "Clocks").
pub(super) fn now_ms() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
}

/// Whether Postgres failed to answer rather than answered an error: then a
/// kept entry is answered instead.
fn is_outage(error: &ApiError) -> bool {
    matches!(error, ApiError::Unavailable { .. } | ApiError::Timeout(_))
}

impl UserService {
    /// User `id`, if `caller` may see it: another owner's user is
    /// [`ApiError::NotFound`], decided from the cache entry on a hit.
    ///
    /// Simultaneous finds of one user in this process share one lookup and,
    /// on a miss, one Postgres read and fill (`flight.rs`); a find only
    /// shares work that starts after it arrived.
    pub async fn find(&self, caller: &Caller, id: Uuid) -> Result<Found, ApiError> {
        // The flight's span: a leader's Redis and Postgres calls hang from it.
        let mut flight = telemetry::trace::Scope::open("flight");
        let (resolved, role) = self.flights.run(&id, || self.resolve(id)).await;
        flight.set("users_api.flight.led", role == Role::Leader);
        drop(flight);
        let cache = resolved.status(role);
        telemetry::record_cache(cache);
        let age = resolved.age(now_ms());
        // A caller alone in its flight takes the answer; members copy it.
        let answer = Arc::try_unwrap(resolved)
            .map_or_else(|shared| shared.answer.clone(), |alone| alone.answer);
        match answer {
            Ok(Answer::User {
                version,
                owner,
                body,
            }) if caller.may_see(owner.as_deref()) => Ok(Found {
                body,
                version,
                cache,
                age,
            }),
            Ok(_) => Err(ApiError::NotFound(id)),
            Err(error) => Err(ApiError::shared(&error)),
        }
    }

    /// One flight's work: the cache, then Postgres when it must.
    async fn resolve(&self, id: Uuid) -> Arc<Resolved> {
        let give_up_waiting = Instant::now() + self.fill_wait;
        let mut lookup = self.cache.lookup(id).await;
        let resolved = loop {
            let at = Moment {
                now: Instant::now(),
                now_ms: now_ms(),
                draw: cache::draw(),
            };
            match next_step(lookup, at, give_up_waiting, self.policy) {
                Step::Hit(cached) => break Resolved::cached(cached, Source::Cache),
                Step::Stale(cached) => {
                    let stored = cached.stored_ms;
                    break Resolved::cached(cached, Source::Stale(stored));
                }
                Step::NotFound => {
                    break Resolved {
                        source: Source::Cache,
                        answer: Ok(Answer::Missing),
                    };
                }
                Step::Fill(lease) => break self.fill(id, &lease).await,
                Step::Refresh(cached, due) => {
                    match self.cache.take_refresh(id, &cached, at.now_ms).await {
                        Ok(Some(lease)) => break self.refresh(id, cached, Some(&lease), due).await,
                        // The entry is fresh: it is still the answer when
                        // another caller took the lease, or Redis failed.
                        Ok(None) if due == Due::Early => {
                            break Resolved::cached(cached, Source::Cache);
                        }
                        Err(error) if due == Due::Early => {
                            log_cache_error("refresh", &error);
                            break Resolved::cached(cached, Source::Cache);
                        }
                        // Changed meanwhile (refreshed, being refreshed, written).
                        Ok(None) => lookup = self.cache.lookup(id).await,
                        Err(error) => {
                            log_cache_error("refresh", &error);
                            break self.refresh(id, cached, None, due).await;
                        }
                    }
                }
                Step::WaitUntil(instant) => {
                    tokio::time::sleep_until(instant).await;
                    lookup = self.cache.lookup(id).await;
                }
                Step::ReadThrough => break self.read_through(id, Source::ReadThrough).await,
                Step::Bypass(error) => {
                    log_cache_error("find", &error);
                    break self.read_through(id, Source::Bypass).await;
                }
                Step::Replace(value) => {
                    lookup = match self.cache.take_over(id, &value).await {
                        Ok(Some(lease)) => Ok(Lookup::Leased(lease)),
                        Ok(None) => self.cache.lookup(id).await,
                        Err(error) => Err(error),
                    };
                }
            }
        };
        Arc::new(resolved)
    }

    /// The lease holder's miss: read Postgres, then fill if the lease
    /// survived. The entry is the user's whoever asked. A failed read gives
    /// the lease back at once, so the next find after Postgres returns fills.
    async fn fill(&self, id: Uuid, lease: &Lease) -> Resolved {
        let answer = match self.store.get(id).await {
            Ok(user) => self.store_read(id, Some(lease), user).await,
            Err(error) => Err(error),
        };
        if answer.is_err() {
            self.give_back(id, lease).await;
        }
        Resolved {
            source: Source::Fill,
            answer: answer.map_err(Arc::new),
        }
    }

    /// A refresh of `cached` under `lease` (none when Redis failed): read
    /// Postgres within the soft timeout and store what it says, a user that
    /// is gone included. If Postgres fails or is too slow, the lease is given
    /// back and `cached` is the answer: stale when it is past its freshness.
    /// On Lambda the read cannot go on after the response, so it stops here.
    async fn refresh(&self, id: Uuid, cached: Cached, lease: Option<&Lease>, due: Due) -> Resolved {
        let read = tokio::time::timeout(self.fail_safe_timeout, self.store.get(id)).await;
        let read = match read {
            Ok(Ok(user)) => self.store_read(id, lease, user).await,
            Ok(Err(error)) if !is_outage(&error) => Err(error),
            outage => {
                match outage {
                    Ok(Err(error)) => log_postgres_outage(&error),
                    _ => log_postgres_outage(&"no answer within the soft timeout"),
                }
                if let Some(lease) = lease {
                    self.give_back(id, lease).await;
                }
                let source = match due {
                    Due::Early => Source::Cache,
                    Due::Expired => Source::Stale(cached.stored_ms),
                };
                return Resolved::cached(cached, source);
            }
        };
        if let (Err(_), Some(lease)) = (&read, lease) {
            self.give_back(id, lease).await;
        }
        let source = match (lease, due) {
            (None, _) => Source::Bypass,
            (Some(_), Due::Early) => Source::Refresh,
            (Some(_), Due::Expired) => Source::Fill,
        };
        Resolved {
            source,
            answer: read.map_err(Arc::new),
        }
    }

    /// After a Postgres read: stores what it found under `lease` (if the
    /// lease survived), and returns it as the answer.
    async fn store_read(
        &self,
        id: Uuid,
        lease: Option<&Lease>,
        user: Option<User>,
    ) -> Result<Answer, ApiError> {
        let body = user.as_ref().map(to_body).transpose()?;
        self.hooks.pass(Point::BeforeFill).await;
        if let Some(lease) = lease {
            let entry = match (&user, &body) {
                (Some(user), Some(body)) => Entry::User {
                    version: user.version,
                    owner: user.owner.as_deref(),
                    body,
                },
                _ => Entry::NotFound,
            };
            if let Err(error) = self.cache.fill(id, lease, entry, now_ms()).await {
                log_cache_error("fill", &error);
            }
        }
        Ok(match (user, body) {
            (Some(user), Some(body)) => Answer::User {
                version: user.version,
                owner: user.owner,
                body,
            },
            _ => Answer::Missing,
        })
    }

    /// Gives a lease back after a failed fill or refresh; if Redis fails
    /// here, the lease expires by itself.
    async fn give_back(&self, id: Uuid, lease: &Lease) {
        if let Err(error) = self.cache.give_back(id, lease).await {
            log_cache_error("give back", &error);
        }
    }

    /// Postgres only, without touching the cache.
    async fn read_through(&self, id: Uuid, source: Source) -> Resolved {
        let answer = async {
            Ok::<_, ApiError>(match self.store.get(id).await? {
                Some(user) => Answer::User {
                    body: to_body(&user)?,
                    version: user.version,
                    owner: user.owner,
                },
                None => Answer::Missing,
            })
        };
        Resolved {
            source,
            answer: answer.await.map_err(Arc::new),
        }
    }
}

fn log_postgres_outage(error: &dyn std::fmt::Display) {
    lambda_http::tracing::warn!(error = %error, "postgres unavailable, answering the kept entry");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_caller_of_a_flight_gets_its_own_cache_status() {
        // Arrange
        let user = || {
            Ok(Answer::User {
                version: 1,
                owner: None,
                body: Vec::new(),
            })
        };
        let failed = || Err(Arc::new(ApiError::Internal("broken".into())));
        let cases = [
            (Source::Cache, user(), CacheStatus::Hit, CacheStatus::Hit),
            (Source::Fill, user(), CacheStatus::Miss, CacheStatus::Hit),
            (Source::Fill, failed(), CacheStatus::Miss, CacheStatus::Miss),
            (
                Source::Refresh,
                user(),
                CacheStatus::Refresh,
                CacheStatus::Hit,
            ),
            (
                Source::Stale(0),
                user(),
                CacheStatus::Stale,
                CacheStatus::Stale,
            ),
            (
                Source::ReadThrough,
                user(),
                CacheStatus::Miss,
                CacheStatus::Miss,
            ),
            (
                Source::Bypass,
                user(),
                CacheStatus::Bypass,
                CacheStatus::Bypass,
            ),
        ];

        for (source, answer, leader, member) in cases {
            // Act
            let resolved = Resolved { source, answer };

            // Assert
            assert_eq!(resolved.status(Role::Leader), leader, "{source:?}");
            assert_eq!(resolved.status(Role::Member), member, "{source:?}");
        }
    }

    #[test]
    fn only_a_stale_answer_has_an_age_counted_from_when_its_entry_was_stored() {
        // Arrange
        let resolved = |source| Resolved {
            source,
            answer: Ok(Answer::Missing),
        };

        // Act and assert
        assert_eq!(resolved(Source::Stale(10_000)).age(72_999), Some(62));
        assert_eq!(resolved(Source::Stale(10_000)).age(9_000), Some(0));
        assert_eq!(resolved(Source::Cache).age(72_999), None);
        assert_eq!(resolved(Source::Refresh).age(72_999), None);
    }

    /// Compiles only if many requests can share the service on a
    /// multi-thread runtime: `UserService` is `Send + Sync`, `find` is `Send`.
    #[test]
    fn the_service_and_its_find_can_cross_threads() {
        fn send_sync<T: Send + Sync>() {}
        fn send<T: Send>(_: &T) {}
        send_sync::<UserService>();
        let _ = |service: &UserService, caller: &Caller| send(&service.find(caller, Uuid::nil()));
    }
}
