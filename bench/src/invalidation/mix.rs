//! The load driver's mix (`load/`): its environments of the release
//! functions, classic Lambda, and its Poisson arrivals, at its defaults, on
//! users of their own in one key space of the bench's schema.

use crate::fixtures::{self, Row};
use crate::load::fleet::{Fleet, Outcome, Shape};
use crate::load::traffic::{self, Population, Traffic};
use crate::measure::{BoxError, histogram, record};
use crate::world::World;
use hdrhistogram::Histogram;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::task::JoinHandle;

pub const FIND_ENVS: usize = 32;
pub const OTHER_ENVS: usize = 2;
pub const RATE: f64 = 1_000.0;
const USERS: usize = 10_000;
/// Users seeded for the deletes to take.
const SPARES: usize = 1_000;
const SEED: u64 = 0x19_0001;
/// The emails of the mix's users start with it.
pub const TAG: &str = "inv-mix";

/// What the mix did: sent, answered, 5xx or unanswered, latency.
pub type Tally = (u64, u64, u64, Option<Histogram<u64>>);

pub struct Mix {
    fleet: Fleet,
    generator: JoinHandle<u64>,
    tally: JoinHandle<(u64, u64, Histogram<u64>)>,
    sent: Arc<AtomicU64>,
}

impl Mix {
    /// Seeds the users, starts the environments (each ready), then the
    /// arrivals, for at most `duration`.
    pub async fn start(
        world: &World<'_>,
        bin_dir: &Path,
        env: &[(String, String)],
        duration: Duration,
    ) -> Result<Self, BoxError> {
        let spares = Row::many("inv-spare", SPARES);
        let spare_ids: Vec<_> = spares.iter().map(|row| row.id).collect();
        let rows: Vec<Row> = Row::many(TAG, USERS).into_iter().chain(spares).collect();
        fixtures::insert(world.env.pg(), &world.env.schema, &rows).await?;
        let population = Population::new(rows, USERS, 1.0, &spare_ids, "inv");
        let (done, mut outcomes) = tokio::sync::mpsc::unbounded_channel::<Outcome>();
        let shape = Shape {
            environments: [FIND_ENVS, OTHER_ENVS, OTHER_ENVS, OTHER_ENVS, 0],
            slots: 1,
            writers_prefix: None,
        };
        let fleet = Fleet::start(bin_dir, shape, env, done).await?;
        let tally = tokio::spawn(async move {
            let (mut answered, mut failed, mut latency) = (0, 0, histogram());
            while let Some(outcome) = outcomes.recv().await {
                answered += 1;
                failed += u64::from(outcome.completion.status.is_none_or(|s| s >= 500));
                record(&mut latency, outcome.latency());
            }
            (answered, failed, latency)
        });
        let sent = Arc::new(AtomicU64::new(0));
        let (router, counted) = (fleet.router(), sent.clone());
        let traffic = Traffic::Open {
            mix: crate::load::default_mix(),
            rate: RATE,
            duration,
        };
        let generator = tokio::spawn(async move {
            traffic::generate(traffic, &population, SEED, &counted, |job| router.send(job)).await
        });
        Ok(Self {
            fleet,
            generator,
            tally,
            sent,
        })
    }

    /// Stops the arrivals, takes the answers still coming for a moment, and
    /// stops the environments.
    pub async fn stop(self) -> Result<Tally, BoxError> {
        self.generator.abort();
        tokio::time::sleep(Duration::from_millis(500)).await;
        drop(self.fleet);
        let (answered, failed, latency) = self.tally.await?;
        let sent = self.sent.load(Ordering::Relaxed);
        Ok((sent, answered, failed, Some(latency)))
    }
}
