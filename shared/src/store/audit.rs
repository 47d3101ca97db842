//! What the auditor asks of Postgres (docs/cache.md, "Auditor"): a step of
//! its walk over the users' ids, and, in one statement, each sampled user's
//! current version and whether a change record for it still waits for the
//! consumer.

use super::UserStore;
use crate::error::ApiError;
use std::time::Duration;
use uuid::Uuid;

/// Up to `$2` ids after `$1` in id order, wrapping round to the first ids
/// when fewer follow it: a walk over the whole table that an index scan
/// serves, from wherever it starts.
const WALK: &str = "SELECT id FROM (\
     (SELECT id, 0 AS lap FROM users WHERE id > $1 ORDER BY id LIMIT $2) UNION ALL \
     (SELECT id, 1 AS lap FROM users WHERE id <= $1 ORDER BY id LIMIT $2)) AS walk \
     ORDER BY lap, id LIMIT $2";

/// For each id of `$1`: its row's version (NULL: no such user) and the age
/// in ms of its youngest change record still waiting (NULL: none), in one
/// snapshot. `user_changes` has no index on the user: the consumer keeps it
/// nearly empty, so one scan per statement, not one per id, is cheapest.
const SAMPLE: &str = "SELECT s.id, u.version, p.youngest_ms \
     FROM unnest($1::uuid[]) AS s(id) \
     LEFT JOIN users u ON u.id = s.id \
     LEFT JOIN (SELECT user_id, \
     (extract(epoch FROM clock_timestamp() - max(recorded_at)) * 1000)::float8 AS youngest_ms \
     FROM user_changes WHERE user_id = ANY($1) GROUP BY user_id) p ON p.user_id = s.id";

/// One sampled user, as Postgres has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sampled {
    pub id: Uuid,
    /// The row's version; `None` when Postgres has no such user.
    pub version: Option<i64>,
    /// How long ago its youngest change record still waiting for the
    /// consumer was recorded; `None` when none waits.
    pub pending: Option<Duration>,
}

impl UserStore {
    /// Up to `limit` user ids following `after`, wrapping round (see [`WALK`]).
    pub async fn walk(&self, after: Uuid, limit: u32) -> Result<Vec<Uuid>, ApiError> {
        let rows = self
            .query("audit_walk", WALK, &[&after, &i64::from(limit)])
            .await?;
        Ok(rows.iter().map(|row| row.get(0)).collect())
    }

    /// Each of `ids` as Postgres has it, in one statement (see [`SAMPLE`]).
    pub async fn sample(&self, ids: &[Uuid]) -> Result<Vec<Sampled>, ApiError> {
        let rows = self.query("audit_sample", SAMPLE, &[&ids]).await?;
        Ok(rows
            .iter()
            .map(|row| Sampled {
                id: row.get(0),
                version: row.get(1),
                pending: row
                    .get::<_, Option<f64>>(2)
                    .map(|ms| Duration::from_secs_f64(ms.max(0.0) / 1000.0)),
            })
            .collect())
    }
}
