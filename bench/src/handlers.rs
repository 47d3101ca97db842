//! The five handlers called in-process, as the Lambda runtime calls them:
//! `handle(&AppState, Request)` with a parsed API Gateway v2 event. Each
//! caller is its own function instance (its own pool and Redis connection),
//! as concurrent callers on Lambda are separate sandboxes.

use crate::fixtures::{Events, request};
use crate::measure::{BoxError, Check, Lane, Measured, phase};
use lambda_http::{Body, Request, Response};
use std::sync::Arc;
use users_api::AppState;
use users_api::telemetry::Outbox;
use uuid::Uuid;

/// One caller: an instance and the users it works on.
pub struct Caller {
    pub state: Arc<AppState>,
    /// Writes its telemetry after the call, outside its timing, as the
    /// Lambda runtime does; otherwise inside the call.
    pub deferred: bool,
    /// Read by `find` hit (kept cached).
    pub hit: Uuid,
    /// Rewritten by `update`.
    pub update: Uuid,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    FindHit,
    FindMiss,
    Update,
    Delete,
    Create,
    /// A create with a new `Idempotency-Key` each time: the cost of
    /// recording the answer in the write's transaction.
    CreateKeyed,
    List,
}

impl Op {
    pub fn name(self) -> &'static str {
        match self {
            Self::FindHit => "find (hit)",
            Self::FindMiss => "find (miss, fresh id)",
            Self::Update => "update",
            Self::Delete => "delete",
            Self::Create => "create",
            Self::CreateKeyed => "create, Idempotency-Key",
            Self::List => "list (limit=20)",
        }
    }

    /// The status and `x-cache` a correct answer has.
    fn expected(self) -> (u16, Option<&'static str>) {
        match self {
            Self::FindHit => (200, Some("hit")),
            Self::FindMiss => (200, Some("miss")),
            Self::Update | Self::List => (200, None),
            Self::Delete => (204, None),
            Self::Create | Self::CreateKeyed => (201, None),
        }
    }

    /// Whether each call needs an id nobody used before (a row to delete,
    /// an id never cached).
    pub fn needs_fresh_ids(self) -> bool {
        matches!(self, Self::FindMiss | Self::Delete)
    }
}

/// Times `op` with one lane per caller, as `name`. `fresh[c]` holds caller
/// c's unused ids when the op needs them (warm-up first, then the timed
/// calls); `tag` keeps the emails of this phase apart from every other phase's.
#[allow(clippy::too_many_arguments)]
pub async fn measure(
    op: Op,
    name: &str,
    callers: &[Caller],
    fresh: &[Vec<Uuid>],
    events: &Events,
    tag: &str,
    warmup: usize,
    iterations: usize,
) -> Result<Measured, BoxError> {
    let mut lanes = Vec::with_capacity(callers.len());
    for (c, caller) in callers.iter().enumerate() {
        let fresh_ids = if op.needs_fresh_ids() {
            let ids = fresh.get(c).ok_or("no fresh ids for this caller")?;
            if ids.len() < warmup + iterations {
                return Err(
                    format!("{} fresh ids, need {}", ids.len(), warmup + iterations).into(),
                );
            }
            &ids[..]
        } else {
            &[]
        };
        let event = |i: usize| match op {
            Op::FindHit => events.find(caller.hit),
            Op::FindMiss => events.find(fresh_ids[i]),
            Op::Delete => events.delete(fresh_ids[i]),
            Op::Update => events.update(
                caller.update,
                &format!("upd-{tag}-{c}-{i}@bench.example.com"),
                "Ada King, Countess of Lovelace",
            ),
            Op::Create => events.create(
                &format!("new-{tag}-{c}-{i}@bench.example.com"),
                "Ada Lovelace",
            ),
            Op::CreateKeyed => events.create_keyed(
                &format!("key-{tag}-{c}-{i}@bench.example.com"),
                "Ada Lovelace",
                &format!("{tag}-{c}-{i}"),
            ),
            Op::List => events.list(20),
        };
        let warmup_requests: Vec<Request> = (0..warmup).map(|i| request(&event(i))).collect();
        let requests: Vec<Request> = (warmup..warmup + iterations)
            .map(|i| request(&event(i)))
            .collect();
        let state = caller.state.clone();
        let flushed = caller.state.clone();
        let deferred = caller.deferred;
        let held = Arc::new(std::sync::Mutex::new(Vec::new()));
        let written = held.clone();
        lanes.push(Lane {
            warmup: warmup_requests,
            items: requests,
            op: move |request: Request| {
                let state = state.clone();
                let held = held.clone();
                async move {
                    let handled = handle(op, &state, request);
                    let response = if deferred {
                        let (response, records) = Outbox::holding(handled).await;
                        *held.lock().unwrap() = records;
                        response
                    } else {
                        handled.await
                    };
                    check(op, response)
                }
            },
            // As under the Lambda runtime (`users_api::runtime`): the
            // records of a deferred call are written after it.
            after: Some(Box::new(move || {
                flushed
                    .telemetry
                    .write(&std::mem::take(&mut *written.lock().unwrap()));
            })),
        });
    }
    phase(name, lanes).await
}

pub async fn handle(
    op: Op,
    state: &AppState,
    request: Request,
) -> Result<Response<Body>, lambda_http::Error> {
    match op {
        Op::FindHit | Op::FindMiss => find_user::handle(state, request).await,
        Op::Update => update_user::handle(state, request).await,
        Op::Delete => delete_user::handle(state, request).await,
        Op::Create | Op::CreateKeyed => create_user::handle(state, request).await,
        Op::List => list_users::handle(state, request).await,
    }
}

/// `None` when the response is what `op` should answer.
pub fn check(op: Op, response: Result<Response<Body>, lambda_http::Error>) -> Check {
    let response = match response {
        Ok(response) => response,
        Err(error) => return Some(format!("handler error: {error}")),
    };
    let (status, cache) = op.expected();
    let got_cache = x_cache(&response);
    if response.status().as_u16() != status {
        return Some(format!(
            "status {} ({})",
            response.status().as_u16(),
            String::from_utf8_lossy(response.body().as_ref())
        ));
    }
    match cache {
        Some(expected) if got_cache != Some(expected) => {
            Some(format!("x-cache {}", got_cache.unwrap_or("absent")))
        }
        _ => None,
    }
}

pub fn x_cache(response: &Response<Body>) -> Option<&str> {
    response
        .headers()
        .get(users_api::http::X_CACHE)
        .and_then(|value| value.to_str().ok())
}
