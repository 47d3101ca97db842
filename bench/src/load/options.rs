//! The options of `users-api-bench load`, and `--smoke`'s small run.

use crate::load::traffic::Mix;
use crate::measure::BoxError;
use std::path::PathBuf;
use std::time::Duration;

pub const USAGE: &str = "\
users-api-bench load [options]
  --find-envs N      environments of find-user (32)
  --envs N           environments of each other function (2)
  --slots N          invocations per environment at once, AWS_LAMBDA_MAX_CONCURRENCY (1: classic Lambda)
  --users N          users the finds and updates choose from (10000)
  --zipf S           Zipf exponent of that choice (1.0)
  --mix F,U,C,D[,L]  shares of find, update, create, delete[, list] (95,3,1,1)
  --rate R           arrivals per second, Poisson (1000)
  --duration S       seconds of load (60; 0 skips it)
  --costs N          requests of each kind in the cost phases (2000; 0 skips them)
  --cost-rate R      their rate per second (400)
  --saturate         step the rate up until p99 passes --p99-ms (or errors appear)
  --start-rate R     the first step's rate (1000)
  --factor X         each step's rate over the last (1.5)
  --step-seconds S   seconds per step (15)
  --p99-ms MS        the p99 bound (50)
  --max-steps N      at most this many steps (10)
  --audit-rate N     CACHE_AUDIT_PER_SECOND of the fleet's invalidate-cache, which runs
                     from the end of the cost phases to the end (100)
  --seed N           the generator's seed
  --bin-dir DIR      the release function binaries (default: beside this one)
  --out FILE         the markdown report (default: stdout)
  --smoke            a few seconds with few environments, for CI
  --break-invalidation  give the write functions another CACHE_KEY_PREFIX, and turn
                     the change records' trigger off, so that their writes leave
                     the finds' entries in place: the checker must then report
                     stale reads, and the auditor inconsistent entries (the run
                     fails)";

pub struct Saturate {
    pub start: f64,
    pub factor: f64,
    pub step: Duration,
    pub bound: Duration,
    pub max_steps: usize,
}

pub struct Options {
    pub find_envs: usize,
    pub envs: usize,
    pub slots: usize,
    pub users: usize,
    pub zipf: f64,
    pub mix: Mix,
    pub rate: f64,
    pub duration: Duration,
    pub costs: usize,
    pub cost_rate: f64,
    pub saturate: Option<Saturate>,
    pub audit_rate: u32,
    pub seed: u64,
    pub bin_dir: PathBuf,
    pub out: Option<PathBuf>,
    pub smoke: bool,
    pub break_invalidation: bool,
    /// The arguments as given (but `--bin-dir` and `--out`), for the report.
    pub command: String,
}

impl Options {
    pub fn parse(args: Vec<String>) -> Result<Self, BoxError> {
        let mut options = Self {
            find_envs: 32,
            envs: 2,
            slots: 1,
            users: 10_000,
            zipf: 1.0,
            mix: crate::load::default_mix(),
            rate: 1_000.0,
            duration: Duration::from_secs(60),
            costs: 2_000,
            cost_rate: 400.0,
            saturate: None,
            audit_rate: 100,
            seed: 0x10ad_0001,
            bin_dir: std::env::current_exe()?
                .parent()
                .ok_or("no directory beside this binary")?
                .to_owned(),
            out: None,
            smoke: false,
            break_invalidation: false,
            command: String::new(),
        };
        let mut shown = Vec::new();
        let mut saturate = Saturate {
            start: 1_000.0,
            factor: 1.5,
            step: Duration::from_secs(15),
            bound: Duration::from_millis(50),
            max_steps: 10,
        };
        let mut saturating = false;
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let hidden = matches!(arg.as_str(), "--bin-dir" | "--out");
            if !hidden {
                shown.push(arg.clone());
            }
            let mut value = || {
                let value = args.next().ok_or(format!("{arg} needs a value"))?;
                if !hidden {
                    shown.push(value.clone());
                }
                Ok::<_, String>(value)
            };
            match arg.as_str() {
                "--find-envs" => options.find_envs = value()?.parse()?,
                "--envs" => options.envs = value()?.parse()?,
                "--slots" => options.slots = value()?.parse()?,
                "--users" => options.users = value()?.parse()?,
                "--zipf" => options.zipf = value()?.parse()?,
                "--mix" => options.mix = Mix::parse(&value()?)?,
                "--rate" => options.rate = value()?.parse()?,
                "--duration" => options.duration = Duration::from_secs(value()?.parse()?),
                "--costs" => options.costs = value()?.parse()?,
                "--cost-rate" => options.cost_rate = value()?.parse()?,
                "--saturate" => saturating = true,
                "--start-rate" => saturate.start = value()?.parse()?,
                "--factor" => saturate.factor = value()?.parse()?,
                "--step-seconds" => saturate.step = Duration::from_secs(value()?.parse()?),
                "--p99-ms" => saturate.bound = Duration::from_millis(value()?.parse()?),
                "--max-steps" => saturate.max_steps = value()?.parse()?,
                "--audit-rate" => options.audit_rate = value()?.parse()?,
                "--seed" => options.seed = value()?.parse()?,
                "--bin-dir" => options.bin_dir = value()?.into(),
                "--out" => options.out = Some(value()?.into()),
                "--smoke" => {
                    options.smoke = true;
                    options.find_envs = 4;
                    options.envs = 1;
                    options.users = 1_000;
                    options.rate = 100.0;
                    options.duration = Duration::from_secs(5);
                    options.costs = 100;
                    options.cost_rate = 200.0;
                }
                "--break-invalidation" => options.break_invalidation = true,
                "--help" | "-h" => return Err(USAGE.into()),
                other => return Err(format!("unknown argument {other}\n{USAGE}").into()),
            }
        }
        options.command = shown.join(" ");
        if options.find_envs == 0 || options.envs == 0 || options.slots == 0 {
            return Err("--find-envs, --envs and --slots must be at least 1".into());
        }
        if options.users == 0 || options.rate <= 0.0 || options.cost_rate <= 0.0 {
            return Err("--users, --rate and --cost-rate must be positive".into());
        }
        if saturating {
            if saturate.start <= 0.0 || saturate.factor <= 1.0 || saturate.max_steps == 0 {
                return Err("--start-rate > 0, --factor > 1 and --max-steps >= 1".into());
            }
            options.saturate = Some(saturate);
        }
        Ok(options)
    }
}
