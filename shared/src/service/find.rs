//! `find`, cache-aside: a hit is answered from Redis; a miss takes the key's
//! fill lease, goes to Postgres and fills only if the lease survived. Callers
//! that miss while another fills wait for it briefly (`CACHE_FILL_WAIT_MS`)
//! instead of all querying Postgres. [`next_step`] is the whole decision,
//! pure; docs/cache.md says why it is safe. Within one process, simultaneous
//! finds of one user run as one flight (`flight.rs`) and share its result,
//! each with its own access check and cache status.

use super::flight::Role;
use super::{UserService, log_cache_error, to_body};
use crate::auth::Caller;
use crate::cache::{CacheError, Entry, Lease, Lookup};
use crate::error::ApiError;
use crate::hooks::Point;
use crate::telemetry::{self, CacheStatus};
use std::sync::Arc;
use tokio::time::Instant;
use uuid::Uuid;

/// How often a caller waiting for another's fill asks Redis again.
const FILL_POLL: std::time::Duration = std::time::Duration::from_millis(3);

/// A user's JSON body and how it was obtained.
#[derive(Debug)]
pub struct Found {
    pub body: Vec<u8>,
    /// The user's version, sent as the ETag.
    pub version: i64,
    pub cache: CacheStatus,
}

/// What `find` does with what the cache answered.
#[derive(Debug)]
enum Step {
    /// Answer the cached body, if the caller may see its owner's user.
    Hit {
        version: i64,
        owner: Option<String>,
        body: Vec<u8>,
    },
    /// Answer 404 from the negative entry.
    NotFound,
    /// Read Postgres and fill under this lease.
    Fill(Lease),
    /// Another caller is filling: ask Redis again at this instant.
    WaitUntil(Instant),
    /// Read Postgres without filling (a write is in progress, or the wait
    /// for another caller's fill is over).
    ReadThrough,
    /// Redis failed: read Postgres without it.
    Bypass(CacheError),
    /// Replace this unreadable value with a lease, then go on as a miss.
    Replace(Vec<u8>),
}

/// The decision for one cache answer, given the time and until when this
/// caller may wait for another's fill.
fn next_step(lookup: Result<Lookup, CacheError>, now: Instant, give_up_waiting: Instant) -> Step {
    match lookup {
        Ok(Lookup::Hit {
            version,
            owner,
            body,
        }) => Step::Hit {
            version,
            owner,
            body,
        },
        Ok(Lookup::NotFound) => Step::NotFound,
        Ok(Lookup::Leased(lease)) => Step::Fill(lease),
        Ok(Lookup::Filling) if now < give_up_waiting => {
            Step::WaitUntil((now + FILL_POLL).min(give_up_waiting))
        }
        Ok(Lookup::Filling | Lookup::Writing) => Step::ReadThrough,
        Ok(Lookup::Unreadable(value)) => Step::Replace(value),
        Err(error) => Step::Bypass(error),
    }
}

/// What a find learned about a user, whoever asked: the one result of a
/// flight, shared by its callers. Each then applies its own access check.
#[derive(Debug)]
pub(super) struct Resolved {
    source: Source,
    answer: Result<Answer, Arc<ApiError>>,
}

#[derive(Debug)]
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
    /// An entry or a negative entry in Redis.
    Cache,
    /// Postgres, read under the fill lease.
    Fill,
    /// Postgres, without filling (a write was in progress, or the wait for
    /// another instance's fill was over).
    ReadThrough,
    /// Postgres, because Redis failed.
    Bypass,
}

impl Resolved {
    /// How the cache answered one caller of the flight. The leader's is
    /// what it did. A member served by the leader's fill made no Postgres
    /// read of its own, like another instance's caller waiting for a fill:
    /// a hit. A failed read is the leader's status for everyone.
    fn status(&self, role: Role) -> CacheStatus {
        match (self.source, role, &self.answer) {
            (Source::Cache, ..) | (Source::Fill, Role::Member, Ok(_)) => CacheStatus::Hit,
            (Source::Fill | Source::ReadThrough, ..) => CacheStatus::Miss,
            (Source::Bypass, ..) => CacheStatus::Bypass,
        }
    }
}

impl UserService {
    /// User `id`, if `caller` may see it: another owner's user is
    /// [`ApiError::NotFound`], decided from the cache entry on a hit.
    ///
    /// Simultaneous finds of one user in this process share one lookup and,
    /// on a miss, one Postgres read and fill (`flight.rs`); a find only
    /// shares work that starts after it arrived.
    pub async fn find(&self, caller: &Caller, id: Uuid) -> Result<Found, ApiError> {
        let (resolved, role) = self.flights.run(&id, || self.resolve(id)).await;
        let cache = resolved.status(role);
        telemetry::record_cache(cache);
        match &resolved.answer {
            Ok(Answer::User {
                version,
                owner,
                body,
            }) if caller.may_see(owner.as_deref()) => Ok(Found {
                body: body.clone(),
                version: *version,
                cache,
            }),
            Ok(_) => Err(ApiError::NotFound(id)),
            Err(error) => Err(ApiError::shared(error)),
        }
    }

    /// One flight's work: the cache, then Postgres when it must.
    async fn resolve(&self, id: Uuid) -> Arc<Resolved> {
        let give_up_waiting = Instant::now() + self.fill_wait;
        let mut lookup = self.cache.lookup(id).await;
        let resolved = loop {
            match next_step(lookup, Instant::now(), give_up_waiting) {
                Step::Hit {
                    version,
                    owner,
                    body,
                } => {
                    break Resolved {
                        source: Source::Cache,
                        answer: Ok(Answer::User {
                            version,
                            owner,
                            body,
                        }),
                    };
                }
                Step::NotFound => {
                    break Resolved {
                        source: Source::Cache,
                        answer: Ok(Answer::Missing),
                    };
                }
                Step::Fill(lease) => break self.fill(id, &lease).await,
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
    /// survived. The entry is the user's whoever asked.
    async fn fill(&self, id: Uuid, lease: &Lease) -> Resolved {
        let answer = async {
            let user = self.store.get(id).await?;
            let body = user.as_ref().map(to_body).transpose()?;
            self.hooks.pass(Point::BeforeFill).await;
            let entry = match (&user, &body) {
                (Some(user), Some(body)) => Entry::User {
                    version: user.version,
                    owner: user.owner.as_deref(),
                    body,
                },
                _ => Entry::NotFound,
            };
            if let Err(error) = self.cache.fill(id, lease, entry).await {
                log_cache_error("fill", &error);
            }
            Ok::<_, ApiError>(match (user, body) {
                (Some(user), Some(body)) => Answer::User {
                    version: user.version,
                    owner: user.owner,
                    body,
                },
                _ => Answer::Missing,
            })
        };
        Resolved {
            source: Source::Fill,
            answer: answer.await.map_err(Arc::new),
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// `now`, and a deadline that is `left` later (or earlier, when negative).
    fn times(left_ms: i64) -> (Instant, Instant) {
        let now = Instant::now() + Duration::from_secs(10);
        let deadline = if left_ms >= 0 {
            now + Duration::from_millis(left_ms.unsigned_abs())
        } else {
            now - Duration::from_millis(left_ms.unsigned_abs())
        };
        (now, deadline)
    }

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

    /// Compiles only if many requests can share the service on a
    /// multi-thread runtime: `UserService` is `Send + Sync`, `find` is `Send`.
    #[test]
    fn the_service_and_its_find_can_cross_threads() {
        fn send_sync<T: Send + Sync>() {}
        fn send<T: Send>(_: &T) {}
        send_sync::<UserService>();
        let _ = |service: &UserService, caller: &Caller| send(&service.find(caller, Uuid::nil()));
    }

    #[test]
    fn hits_negative_entries_and_leases_decide_the_same_before_and_after_the_deadline() {
        for left in [40, 0, -5] {
            // Arrange
            let (now, deadline) = times(left);

            // Act
            let hit = next_step(
                Ok(Lookup::Hit {
                    version: 7,
                    owner: Some("ada".into()),
                    body: b"{}".to_vec(),
                }),
                now,
                deadline,
            );
            let negative = next_step(Ok(Lookup::NotFound), now, deadline);
            let leased = next_step(Ok(Lookup::Leased(Lease::new())), now, deadline);

            // Assert
            assert!(
                matches!(hit, Step::Hit { version: 7, ref owner, ref body } if body == b"{}" && owner.as_deref() == Some("ada")),
                "{left} ms left: {hit:?}"
            );
            assert!(
                matches!(negative, Step::NotFound),
                "{left} ms left: {negative:?}"
            );
            assert!(
                matches!(leased, Step::Fill(_)),
                "{left} ms left: {leased:?}"
            );
        }
    }

    #[test]
    fn while_another_fills_a_miss_polls_until_the_deadline_and_never_past_it() {
        // Arrange
        let (now, far) = times(40);
        let (_, near) = times(1);

        // Act
        let early = next_step(Ok(Lookup::Filling), now, far);
        let late = next_step(Ok(Lookup::Filling), now, near);

        // Assert
        assert!(
            matches!(early, Step::WaitUntil(at) if at == now + FILL_POLL),
            "{early:?}"
        );
        assert!(
            matches!(late, Step::WaitUntil(at) if at == near),
            "{late:?}"
        );
    }

    #[test]
    fn once_the_wait_is_over_a_miss_reads_postgres_without_filling() {
        for left in [0, -5] {
            // Arrange
            let (now, deadline) = times(left);

            // Act
            let step = next_step(Ok(Lookup::Filling), now, deadline);

            // Assert
            assert!(
                matches!(step, Step::ReadThrough),
                "{left} ms left: {step:?}"
            );
        }
    }

    #[test]
    fn during_a_write_a_miss_reads_postgres_at_once_without_filling() {
        for left in [40, 0, -5] {
            // Arrange
            let (now, deadline) = times(left);

            // Act
            let step = next_step(Ok(Lookup::Writing), now, deadline);

            // Assert
            assert!(
                matches!(step, Step::ReadThrough),
                "{left} ms left: {step:?}"
            );
        }
    }

    #[test]
    fn an_unreadable_value_is_replaced_and_a_redis_failure_bypasses_the_cache() {
        // Arrange
        let (now, deadline) = times(40);
        let timeout = CacheError::Timeout(Duration::from_millis(50));

        // Act
        let unreadable = next_step(Ok(Lookup::Unreadable(b"x".to_vec())), now, deadline);
        let failed = next_step(Err(timeout), now, deadline);

        // Assert
        assert!(
            matches!(unreadable, Step::Replace(ref value) if value == b"x"),
            "{unreadable:?}"
        );
        assert!(
            matches!(failed, Step::Bypass(CacheError::Timeout(_))),
            "{failed:?}"
        );
    }
}
