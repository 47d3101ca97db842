//! A writer outside the API: SQL writes straight to Postgres on users of its
//! own, each timed from its commit to its user's cache key changing.

use super::{EVERY, NEVER, POLL};
use crate::fixtures::{Events, request};
use crate::measure::BoxError;
use std::sync::Arc;
use std::time::{Duration, Instant};
use users_api::AppState;
use uuid::Uuid;

/// The kinds of SQL write, each user's in turn (it exists at the start).
pub const KINDS: [&str; 3] = ["UPDATE", "DELETE", "INSERT"];
const STATEMENTS: [&str; 3] = [
    "UPDATE {users} SET name = name || '.', version = version + 1, updated_at = now() \
     WHERE id = $1",
    "DELETE FROM {users} WHERE id = $1",
    "INSERT INTO {users} (id, email, name, owner) VALUES ($1, $2, 'Inserted by SQL', $3)",
];

/// A SQL write: its kind (index of [`KINDS`]) and what its key did: voided
/// after this long, never (`None`), or not watched (`Err`: the find before
/// it left the key empty, Redis being slow).
pub type Timed = (usize, Result<Option<Duration>, ()>);

pub struct Writer {
    /// The instance whose finds fill the users' keys before each write.
    pub state: AppState,
    /// A connection of its own, as another service's or a person's.
    pub pg: tokio_postgres::Client,
    /// For reading the keys.
    pub redis: redis::aio::MultiplexedConnection,
    pub events: Arc<Events>,
    /// `schema.users`.
    pub users: String,
    /// Id, email, writes so far.
    pub probes: Vec<(Uuid, String, usize)>,
}

impl Writer {
    /// A write every [`EVERY`] (at once when behind) until `until`.
    pub async fn run(&mut self, until: Instant) -> Result<Vec<Timed>, BoxError> {
        let mut prepared = Vec::new();
        for sql in STATEMENTS {
            let sql = sql.replace("{users}", &self.users);
            prepared.push(self.pg.prepare(&sql).await?);
        }
        let mut timed = Vec::new();
        let mut next = Instant::now();
        let mut turn = 0;
        while next < until {
            tokio::time::sleep_until(next.into()).await;
            next = (next + EVERY).max(Instant::now());
            let probe = turn % self.probes.len();
            turn += 1;
            let (id, email, writes) = self.probes[probe].clone();
            self.probes[probe].2 += 1;
            let kind = writes % KINDS.len();
            // The user's entry, or after a delete its negative entry.
            find_user::handle(&self.state, request(&self.events.find(id))).await?;
            let key = self.state.users.cache().key(id);
            let Some(held) = self.get(&key).await? else {
                timed.push((kind, Err(())));
                continue;
            };
            let owner = test_support::FIXTURE_SUBJECT;
            match kind {
                0 | 1 => self.pg.execute(&prepared[kind], &[&id]).await?,
                _ => {
                    self.pg
                        .execute(&prepared[2], &[&id, &email, &owner])
                        .await?
                }
            };
            let committed = Instant::now();
            let voided = loop {
                if self.get(&key).await?.as_ref() != Some(&held) {
                    break Some(committed.elapsed());
                }
                if committed.elapsed() > NEVER {
                    break None;
                }
                tokio::time::sleep(POLL).await;
            };
            timed.push((kind, Ok(voided)));
        }
        Ok(timed)
    }

    async fn get(&mut self, key: &str) -> Result<Option<Vec<u8>>, BoxError> {
        let mut get = redis::cmd("GET");
        Ok(get.arg(key).query_async(&mut self.redis).await?)
    }
}
