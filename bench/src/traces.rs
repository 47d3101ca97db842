//! What traces cost `find-user` (issue 22): its cold start and size built
//! without the `traces` feature (the code before traces, for the spans'
//! part), built with it and tracing off (no `OTEL_EXPORTER_OTLP_ENDPOINT`),
//! and with it on, exporting its first invocation's spans to a real OTLP
//! receiver on loopback (`test_support::otlp`, standing where the collector
//! extension would). The three variants' spawns are interleaved, as in the
//! cold-start section, so that all see the same machine, and each round
//! starts with the next one, so that no variant always comes right after
//! the other variant of its binary.

use crate::lifecycle::cold_find_event;
use crate::measure::{BoxError, median};
use crate::process::{self, ColdStart, Function};
use crate::world::{COLD_WARMUP, Plan, World};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;
use test_support::otlp::{Behaviour, Receiver};

/// Cold start with tracing off at most this much above the binary without it.
pub const OFF_TARGET: f64 = 1.05;
/// Cold start with tracing on at most this much above the binary without it.
pub const ON_TARGET: Duration = Duration::from_millis(2);
/// The arm64 zip with traces in, at most.
pub const ZIP_TARGET: u64 = 3_000_000;

/// The variants measured, in the table's order.
const VARIANTS: [&str; 3] = ["without the feature", "feature in, off", "feature in, on"];

pub struct Costs {
    /// Cold starts per variant.
    pub cold: Vec<Vec<ColdStart>>,
    /// Spans the receiver got from the runs with tracing on.
    pub spans: usize,
    /// Sizes: binary, x86_64 zip, arm64 zip, without and with the feature.
    pub sizes: [Sizes; 2],
}

#[derive(Default)]
pub struct Sizes {
    pub binary: Option<u64>,
    pub zip: Option<u64>,
    pub arm64_zip: Option<u64>,
}

/// Where `scripts/bench.sh` leaves the build of find-user without the
/// feature: the binary, and the arm64 zip when it could build one.
fn without_dir(bin_dir: &Path) -> PathBuf {
    bin_dir.join("../bench/without-traces")
}

pub async fn run(
    world: &World<'_>,
    plan: &Plan,
    bin_dir: &Path,
    arm64_dir: Option<&Path>,
) -> Result<Costs, BoxError> {
    eprintln!(
        "== traces: find-user without the feature, off and on ({} spawns each, interleaved, rotating)",
        plan.cold_runs
    );
    let without = without_dir(bin_dir).join("find-user");
    let with = bin_dir.join("find-user");
    if !without.exists() {
        return Err(format!(
            "{} is missing: scripts/bench.sh builds it (cargo build --release -p find-user --no-default-features)",
            without.display()
        )
        .into());
    }
    let receiver = Receiver::start(Behaviour::Answer).await?;
    let off_env = world.function_env("t");
    let mut on_env = off_env.clone();
    on_env.push((
        "OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(),
        receiver.endpoint(),
    ));
    let variants = [(&without, &off_env), (&with, &off_env), (&with, &on_env)];
    let mut cold: Vec<Vec<ColdStart>> = VARIANTS.iter().map(|_| Vec::new()).collect();
    for run in 0..plan.cold_runs + COLD_WARMUP {
        let counted = run >= COLD_WARMUP;
        // Each round starts with the next variant, so that none always
        // follows the other spawn of its own binary (warm in the page cache).
        for k in 0..variants.len() {
            let i = (run + k) % variants.len();
            let (binary, env) = variants[i];
            let event = cold_find_event(world, "t").await;
            let function = Function {
                name: "find-user",
                binary,
                env,
            };
            // With tracing on, the function is stopped only once its spans
            // (5 for a miss) have come: they leave after the answer.
            let expected = if i == 2 {
                receiver.spans().len() + 5
            } else {
                0
            };
            let spans_in = async {
                receiver.wait_for(expected, Duration::from_secs(2)).await;
            };
            let sample = process::cold_start_until(&function, event, spans_in).await?;
            if sample.status != Some(200) {
                return Err(format!("{}: answered {:?}", VARIANTS[i], sample.status).into());
            }
            if counted {
                cold[i].push(sample);
            }
        }
    }
    let runs = plan.cold_runs + COLD_WARMUP;
    let spans = receiver.spans().len();
    if spans != runs * 5 {
        return Err(
            format!("tracing on: {spans} spans received, not 5 for each of {runs} runs").into(),
        );
    }
    let arm64_without = without_dir(bin_dir).join("bootstrap.zip");
    let sizes = [
        sizes(&without, Some(&arm64_without))?,
        sizes(
            &with,
            arm64_dir
                .map(|dir| dir.join("find-user/bootstrap.zip"))
                .as_deref(),
        )?,
    ];
    Ok(Costs { cold, spans, sizes })
}

fn sizes(binary: &Path, arm64_zip: Option<&Path>) -> Result<Sizes, BoxError> {
    let footprint = crate::footprint::measure("find-user", binary, None)?;
    Ok(Sizes {
        binary: Some(footprint.binary_bytes),
        zip: footprint.zip_bytes,
        arm64_zip: arm64_zip
            .and_then(|zip| std::fs::metadata(zip).ok())
            .map(|metadata| metadata.len()),
    })
}

pub fn render(costs: Option<&Costs>, out: &mut String) {
    let Some(costs) = costs else {
        return;
    };
    let medians: Vec<(Duration, Duration)> = costs
        .cold
        .iter()
        .map(|runs| {
            let ready: Vec<Duration> = runs.iter().map(|run| run.ready).collect();
            let first: Vec<Duration> = runs.iter().map(|run| run.first_response).collect();
            (median(&ready), median(&first))
        })
        .collect();
    let ms = |duration: Duration| duration.as_secs_f64() * 1000.0;
    let (base_ready, base_first) = medians[0];
    let _ = writeln!(
        out,
        "\n### Traces: what they cost find-user\n\n\
         Medians of {} spawns each, interleaved; *first response* is spawn -> the first \
         answer (a miss). With tracing on, the spans of each first invocation go to an OTLP \
         receiver on loopback ({} spans received).\n\n\
         | find-user | ready ms | first response ms | ready vs without | first response vs without | target | met |\n\
         |---|---:|---:|---:|---:|---|---|",
        costs.cold[0].len(),
        costs.spans
    );
    for (i, (ready, first)) in medians.iter().enumerate() {
        let (target, met) = match i {
            0 => (String::new(), String::new()),
            1 => {
                let ratio = ms(*first) / ms(base_first).max(f64::EPSILON);
                let ready_ratio = ms(*ready) / ms(base_ready).max(f64::EPSILON);
                (
                    format!("<= {OFF_TARGET:.2}x"),
                    yes(ratio <= OFF_TARGET && ready_ratio <= OFF_TARGET),
                )
            }
            _ => (
                format!("<= +{} ms", ON_TARGET.as_millis()),
                yes(*first <= base_first + ON_TARGET && *ready <= base_ready + ON_TARGET),
            ),
        };
        let _ = writeln!(
            out,
            "| {} | {:.2} | {:.2} | {:+.2} ms ({:.3}x) | {:+.2} ms ({:.3}x) | {target} | {met} |",
            VARIANTS[i],
            ms(*ready),
            ms(*first),
            ms(*ready) - ms(base_ready),
            ms(*ready) / ms(base_ready).max(f64::EPSILON),
            ms(*first) - ms(base_first),
            ms(*first) / ms(base_first).max(f64::EPSILON),
        );
    }
    let bytes = |size: Option<u64>| size.map_or_else(|| "-".to_owned(), |bytes| bytes.to_string());
    let _ = writeln!(
        out,
        "\n| find-user | binary bytes | zip x86_64 | zip arm64 | arm64 target | met |\n\
         |---|---:|---:|---:|---|---|"
    );
    for (label, sizes) in ["without the feature", "feature in"]
        .iter()
        .zip(&costs.sizes)
    {
        let met = match (*label, sizes.arm64_zip) {
            ("feature in", Some(zip)) => yes(zip <= ZIP_TARGET),
            ("feature in", None) => "not built".to_owned(),
            _ => String::new(),
        };
        let target = if *label == "feature in" {
            format!("<= {ZIP_TARGET}")
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "| {label} | {} | {} | {} | {target} | {met} |",
            bytes(sizes.binary),
            bytes(sizes.zip),
            bytes(sizes.arm64_zip),
        );
    }
}

fn yes(met: bool) -> String {
    if met { "yes" } else { "no" }.to_owned()
}
