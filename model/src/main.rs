//! `scripts/model-check.sh`: checks every scenario of the protocol, or one
//! deliberately broken variant (`--broken NAME`). Exit 0: every property
//! holds; 1: a counterexample, printed as a trace; 2: a bad argument.

use std::process::ExitCode;
use users_api_model::broken::Broken;
use users_api_model::redis::key_text;
use users_api_model::{Protocol, Report, scenarios};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let broken = match args.as_slice() {
        [] => None,
        [flag, name] if flag == "--broken" => match Broken::parse(name) {
            Some(broken) => Some(broken),
            None => return usage(&format!("unknown variant {name:?}")),
        },
        _ => return usage("unexpected arguments"),
    };
    let mut failed = false;
    for scenario in scenarios() {
        if broken.is_some_and(|broken| broken.scenario() != scenario.name) {
            continue;
        }
        let report = Protocol::new(scenario, broken).check();
        print_report(&report);
        if let Some(counterexample) = &report.violation {
            failed = true;
            println!("counterexample: {}", counterexample.property);
            let initial = &counterexample.initial;
            println!(
                "   initially: key {}, Postgres at v{}",
                key_text(initial.redis.primary()),
                initial.postgres.version
            );
            for (number, (action, effects, state)) in counterexample.steps.iter().enumerate() {
                let what: Vec<String> = effects.iter().map(ToString::to_string).collect();
                let what = if what.is_empty() {
                    format!("{action:?}")
                } else {
                    what.join("; ")
                };
                println!(
                    "{:>4}. t{} {what}\n        key: {}",
                    number + 1,
                    state.now,
                    key_text(state.redis.primary())
                );
            }
        } else if !report.examples_missing.is_empty() {
            failed = true;
            println!("not reached: {:?}", report.examples_missing);
        }
    }
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn print_report(report: &Report) {
    let verdict = if report.violation.is_some() {
        "VIOLATED"
    } else {
        "holds"
    };
    println!(
        "{:<15} {:>10} states, depth {:>3}, {:>6.1} s: {verdict}",
        report.scenario,
        report.states,
        report.max_depth,
        report.duration.as_secs_f64()
    );
}

fn usage(problem: &str) -> ExitCode {
    let names: Vec<&str> = Broken::ALL.iter().map(|broken| broken.name()).collect();
    eprintln!(
        "{problem}\nusage: model-check [--broken NAME]\n  NAME: {}",
        names.join(", ")
    );
    ExitCode::from(2)
}
