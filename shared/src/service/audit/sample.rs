//! Which ids the auditor samples, without scanning the keyspace (so it works
//! the same on Redis Cluster, where a `SCAN` would have to visit every
//! primary):
//!
//! - [`Recent`]: the users the consumer voided, audited again once the
//!   bound D has passed, as Meta's Polaris checks a key after its
//!   invalidation: an entry that is back with the old value by then is a
//!   lost invalidation;
//! - [`Walk`]: a walk over Postgres's ids in id order from a random start,
//!   wrapping round, so that every user's entry is looked at in turn, and a
//!   restore that moved every row back is found wherever it is.

use crate::error::ApiError;
use crate::store::UserStore;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Instant;
use uuid::Uuid;

/// The most voided ids waiting to be audited; past it the oldest go.
pub(super) const RECENT_MOST: usize = 4096;

/// Ids the consumer voided, each with when it is due for its audit.
#[derive(Default)]
pub(crate) struct Recent {
    queue: Mutex<VecDeque<(Instant, Uuid)>>,
}

impl Recent {
    /// Queues `ids` for an audit at `due`.
    pub(crate) fn push(&self, ids: &[Uuid], due: Instant) {
        let mut queue = self.lock();
        for id in ids {
            if queue.len() == RECENT_MOST {
                queue.pop_front();
            }
            queue.push_back((due, *id));
        }
    }

    /// Up to `most` ids due by `now`, oldest first.
    pub(crate) fn take_due(&self, now: Instant, most: usize) -> Vec<Uuid> {
        let mut queue = self.lock();
        let mut due = Vec::new();
        while due.len() < most && queue.front().is_some_and(|(at, _)| *at <= now) {
            if let Some((_, id)) = queue.pop_front() {
                due.push(id);
            }
        }
        due
    }

    /// A poisoned lock only means a panic elsewhere; the queue is usable.
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<(Instant, Uuid)>> {
        self.queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The walk's cursor: the last id it sampled.
pub(super) struct Walk {
    after: Uuid,
}

impl From<Uuid> for Walk {
    fn from(start: Uuid) -> Self {
        Self { after: start }
    }
}

impl Walk {
    /// The next `count` ids after the cursor, wrapping round; moves it on.
    pub(super) async fn step(
        &mut self,
        store: &UserStore,
        count: u32,
    ) -> Result<Vec<Uuid>, ApiError> {
        let ids = store.walk(self.after, count).await?;
        if let Some(last) = ids.last() {
            self.after = *last;
        }
        Ok(ids)
    }
}
