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
use spillway_bench::baseline_tcp::{self, ServeCommand, SERVE_USAGE};
use spillway_bench::e2e::tcp::{self as e2e_tcp, SERVE_SUBCOMMAND};
use spillway_bench::e2e::{self, Command, USAGE};

fn run() -> anyhow::Result<bool> {
    let command = Command::parse(std::env::args().skip(1))?;
    if spillway_bench::machine::DEBUG_BUILD {
        eprintln!(
            "warning: unoptimised build; run with `cargo run --release -p spillway-bench --bin e2e`"
        );
    }
    let started = Instant::now();
    let (report, json) = match command {
        Command::Help => {
            print!("{USAGE}");
            return Ok(true);
        }
        Command::Run { settings, json } => {
            (e2e::run(&settings, |line| eprintln!("[e2e] {line}"))?, json)
        }
        Command::RunTcp {
            settings,
            spillway,
            json,
        } => {
            let program =
                std::env::current_exe().context("finding this program to run the twin")?;
            let report = e2e_tcp::run(&settings, spillway, &program, |line| {
                eprintln!("[e2e --tcp] {line}")
            })?;
            (report, json)
        }
    };
    eprintln!("[e2e] done in {:.1} s", started.elapsed().as_secs_f64());
    spillway_loadgen::report::print(&report, json, || report.to_table())?;
    Ok(report.reconciled())
}

/// `e2e serve-baseline ...`: the twin, as `baseline-serve` runs it.
fn serve_baseline(args: Vec<String>) -> ExitCode {
    let options = match ServeCommand::parse(args) {
        Ok(ServeCommand::Help) => {
            print!("{SERVE_USAGE}");
            return ExitCode::SUCCESS;
        }
        Ok(ServeCommand::Serve(options)) => options,
        Err(error) => {
            eprintln!("e2e {SERVE_SUBCOMMAND}: {error:#}");
            return ExitCode::from(2);
        }
    };
    match baseline_tcp::serve(&options, &mut std::io::stdout().lock()) {
        Ok(_) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("e2e {SERVE_SUBCOMMAND}: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1).peekable();
    if args.peek().map(String::as_str) == Some(SERVE_SUBCOMMAND) {
        return serve_baseline(args.skip(1).collect());
    }
    match run() {
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
