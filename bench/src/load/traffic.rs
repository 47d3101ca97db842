//! What the load sends: an open loop of Poisson arrivals (the next request is
//! due after an exponential gap, whatever the answers are doing), each an op
//! drawn from the mix on a user drawn from Zipf(s) over the seeded users; or
//! a fixed list of requests at a steady rate (the cost phases).
//!
//! Creates and deletes work on the churn: each create adds its user to the
//! back of it, each delete takes the oldest user from the front (spare users
//! are seeded there, so the first deletes have something to take). A fiftieth
//! of the finds reads one of the last users created or deleted, so that the
//! checker sees finds of deleted and just-created users too.

use crate::fixtures::{Events, Rng, Row, Zipf};
use crate::load::fleet::{Job, Op};
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Recent churn users a find may read.
const RECENT: usize = 64;
/// One find in this many reads a recent churn user.
const CHURN_FIND_EVERY: u64 = 50;

/// Shares of find, update, create, delete, list (any scale).
#[derive(Clone, Copy, Debug)]
pub struct Mix(pub [u32; 5]);

impl Mix {
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut weights = [0u32; 5];
        let parts: Vec<&str> = text.split(',').collect();
        if !(4..=5).contains(&parts.len()) {
            return Err("--mix takes find,update,create,delete[,list]".to_owned());
        }
        for (weight, part) in weights.iter_mut().zip(parts) {
            *weight = part.trim().parse().map_err(|_| format!("--mix: {part}"))?;
        }
        if weights.iter().sum::<u32>() == 0 {
            return Err("--mix is all zero".to_owned());
        }
        Ok(Self(weights))
    }

    fn draw(&self, rng: &mut Rng) -> Op {
        let total: u32 = self.0.iter().sum();
        let mut pick = (rng.next_f64() * f64::from(total)) as u32;
        for (op, &weight) in Op::ALL.iter().zip(&self.0) {
            if pick < weight {
                return *op;
            }
            pick -= weight;
        }
        Op::Find
    }

    pub fn describe(&self) -> String {
        let total: u32 = self.0.iter().sum();
        let names = ["find", "update", "create", "delete", "list"];
        let parts: Vec<String> = names
            .iter()
            .zip(&self.0)
            .filter(|(_, w)| **w > 0)
            .map(|(name, &w)| format!("{:.0}% {name}", 100.0 * f64::from(w) / f64::from(total)))
            .collect();
        parts.join(", ")
    }
}

/// One request of a fixed list: what, on which user.
pub type Planned = (Op, Option<Uuid>);

/// What a phase sends.
pub enum Traffic {
    /// Poisson arrivals at `rate` per second for `duration`.
    Open {
        mix: Mix,
        rate: f64,
        duration: Duration,
    },
    /// These requests, evenly spaced at `rate` per second.
    Fixed {
        jobs: Vec<(Op, Option<Uuid>)>,
        rate: f64,
    },
}

/// The users, the churn and the events.
pub struct Population {
    rows: Vec<Row>,
    index: HashMap<Uuid, usize>,
    zipf: Zipf,
    events: Events,
    churn: Mutex<Churn>,
    writes: AtomicU64,
    finds: AtomicU64,
    tag: String,
}

#[derive(Default)]
struct Churn {
    live: VecDeque<Uuid>,
    recent: VecDeque<Uuid>,
}

impl Population {
    /// `rows[..zipf_users]` are drawn by Zipf(s); `spares` start the churn.
    pub fn new(rows: Vec<Row>, zipf_users: usize, s: f64, spares: &[Uuid], tag: &str) -> Self {
        let index = rows.iter().enumerate().map(|(i, r)| (r.id, i)).collect();
        let churn = Churn {
            live: spares.iter().copied().collect(),
            recent: VecDeque::new(),
        };
        Self {
            rows,
            index,
            zipf: Zipf::new(zipf_users, s),
            events: Events::load(),
            churn: Mutex::new(churn),
            writes: AtomicU64::new(0),
            finds: AtomicU64::new(0),
            tag: tag.to_owned(),
        }
    }

    /// A created user joins the churn.
    pub fn created(&self, id: Uuid) {
        if let Ok(mut churn) = self.churn.lock() {
            churn.live.push_back(id);
            churn.remember(id);
        }
    }

    pub fn deleted(&self, id: Uuid) {
        if let Ok(mut churn) = self.churn.lock() {
            churn.remember(id);
        }
    }

    /// Takes up to `count` users off the front of the churn.
    pub fn take_churn(&self, count: usize) -> Vec<Uuid> {
        let Ok(mut churn) = self.churn.lock() else {
            return Vec::new();
        };
        let count = count.min(churn.live.len());
        churn.live.drain(..count).collect()
    }

    /// A request of `op` drawn as the mix does; `None` for a delete when the
    /// churn is empty.
    fn draw(&self, op: Op, rng: &mut Rng, due: Instant) -> Option<Job> {
        let user = match op {
            Op::Find => {
                let n = self.finds.fetch_add(1, Ordering::Relaxed);
                let recent = (n % CHURN_FIND_EVERY == CHURN_FIND_EVERY - 1)
                    .then(|| self.recent(rng))
                    .flatten();
                Some(recent.unwrap_or_else(|| self.rows[self.zipf.sample(rng)].id))
            }
            Op::Update => Some(self.rows[self.zipf.sample(rng)].id),
            Op::Delete => Some(self.take_churn(1).pop()?),
            Op::Create | Op::List => None,
        };
        Some(self.job(op, user, due))
    }

    fn recent(&self, rng: &mut Rng) -> Option<Uuid> {
        let churn = self.churn.lock().ok()?;
        let n = churn.recent.len();
        (n > 0).then(|| churn.recent[(rng.next_u64() % n as u64) as usize])
    }

    /// The event of `op` on `user`, due at `due`.
    pub fn job(&self, op: Op, user: Option<Uuid>, due: Instant) -> Job {
        let id = user.unwrap_or_default();
        let event = match op {
            Op::Find => self.events.find(id),
            Op::Delete => self.events.delete(id),
            Op::List => self.events.list(20),
            Op::Update => {
                let n = self.writes.fetch_add(1, Ordering::Relaxed);
                let email = self.index.get(&id).map_or("", |&i| &self.rows[i].email);
                self.events.update(id, email, &name(&self.tag, n))
            }
            Op::Create => {
                let n = self.writes.fetch_add(1, Ordering::Relaxed);
                let email = format!("{}-{n:08}@load.example.com", self.tag);
                self.events.create(&email, &name(&self.tag, n))
            }
        };
        Job {
            op,
            user,
            event,
            due,
            arrival: Instant::now(),
        }
    }
}

impl Churn {
    fn remember(&mut self, id: Uuid) {
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(id);
    }
}

/// A name of about the seeded users' length (a ~300-byte body).
fn name(tag: &str, n: u64) -> String {
    let mut name = format!("Load User {tag} {n:08}, Countess of Lovelace");
    while name.len() < 112 {
        name.push_str(" and Analytical Engine");
    }
    name.truncate(112);
    name.trim_end().to_owned()
}

/// Sends the phase's requests through `send`, each at its due time; returns
/// how many were sent.
pub async fn generate(
    traffic: Traffic,
    population: &Population,
    seed: u64,
    sent: &AtomicU64,
    send: impl Fn(Job),
) -> u64 {
    let mut rng = Rng::new(seed);
    let start = Instant::now();
    match traffic {
        Traffic::Open {
            mix,
            rate,
            duration,
        } => {
            let mut due = start;
            loop {
                let gap = -(1.0 - rng.next_f64()).ln() / rate;
                due += Duration::from_secs_f64(gap);
                if due > start + duration {
                    break;
                }
                tokio::time::sleep_until(due.into()).await;
                if let Some(job) = population.draw(mix.draw(&mut rng), &mut rng, due) {
                    send(job);
                    sent.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        Traffic::Fixed { jobs, rate } => {
            for (n, (op, user)) in jobs.into_iter().enumerate() {
                let due = start + Duration::from_secs_f64(n as f64 / rate);
                tokio::time::sleep_until(due.into()).await;
                send(population.job(op, user, due));
                sent.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    sent.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mix_draws_each_op_about_as_often_as_its_share() {
        let mix = Mix::parse("95,3,1,1").unwrap();
        let mut rng = Rng::new(3);
        let mut counts = [0u32; 5];
        for _ in 0..100_000 {
            counts[mix.draw(&mut rng) as usize] += 1;
        }

        assert!((94_000..96_000).contains(&counts[0]), "{counts:?}");
        assert!((2_500..3_500).contains(&counts[1]), "{counts:?}");
        assert_eq!(counts[4], 0);
        assert_eq!(mix.describe(), "95% find, 3% update, 1% create, 1% delete");
        assert!(Mix::parse("1,2").is_err());
        assert!(Mix::parse("0,0,0,0").is_err());
    }
}
