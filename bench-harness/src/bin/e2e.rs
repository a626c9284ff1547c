//! `e2e`: spillway, then a tokio/tower baseline built the way a typical Rust user would,
//! driven by loadgen's generator and measured the same way, in one run; prints both rows of
//! each measurement and the ratios (see `spillway_bench::e2e` for the method and its
//! known bias). With `--tcp` the same measurements run over TCP against the baseline's
//! tokio twin and, with `--spillway HOST:PORT`, `spillway serve` (see
//! `spillway_bench::e2e::tcp`). Progress goes to stderr; the table, or with `--json` one
//! JSON object, to stdout. Exits 1 when a run's counts do not reconcile. Run it optimised:
//!
//! ```text
//! cargo run --release -p spillway-bench --bin e2e -- [--duration SECS] [--json] ...
//! cargo run --release -p spillway-bench --bin e2e -- --tcp [--spillway 127.0.0.1:7878]
//! ```
//!
//! `e2e serve-baseline --listen ADDR ...` runs the twin itself, as `baseline-serve` does;
//! `--tcp` starts it that way as a child process.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use spillway_bench::baseline_tcp::{self, ServeOptions};
use spillway_bench::e2e::tcp::{self as e2e_tcp, SERVE_SUBCOMMAND};
use spillway_bench::e2e::{self, Command, E2eReport};

/// Runs the measurements and prints the report; whether every run's counts reconcile.
fn run(measure: impl FnOnce() -> anyhow::Result<E2eReport>, json: bool) -> anyhow::Result<bool> {
    if spillway_bench::machine::DEBUG_BUILD {
        eprintln!(
            "warning: unoptimised build; run with `cargo run --release -p spillway-bench --bin e2e`"
        );
    }
    let started = Instant::now();
    let report = measure()?;
    eprintln!("[e2e] done in {:.1} s", started.elapsed().as_secs_f64());
    spillway_loadgen::report::print(&report, json, || report.to_table())?;
    Ok(report.reconciled())
}

/// `e2e serve-baseline ...`: the twin, as `baseline-serve` runs it.
fn serve_baseline(options: &ServeOptions) -> ExitCode {
    match baseline_tcp::serve(options, &mut std::io::stdout().lock()) {
        Ok(_) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("e2e {SERVE_SUBCOMMAND}: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let outcome =
        match Command::parse_from(std::env::args_os()).unwrap_or_else(|error| error.exit()) {
            Command::ServeBaseline(options) => return serve_baseline(&options),
            Command::Run { settings, json } => run(
                || e2e::run(&settings, |line| eprintln!("[e2e] {line}")),
                json,
            ),
            Command::RunTcp {
                settings,
                spillway,
                json,
            } => run(
                || {
                    let program =
                        std::env::current_exe().context("finding this program to run the twin")?;
                    e2e_tcp::run(&settings, spillway, &program, |line| {
                        eprintln!("[e2e --tcp] {line}")
                    })
                },
                json,
            ),
        };
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("e2e: counts do not reconcile (see the report)");
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("e2e: {error:#}");
            ExitCode::FAILURE
        }
    }
}
