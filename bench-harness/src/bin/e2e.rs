//! `e2e`: spillway, then a tokio/tower baseline built the way a typical Rust user would,
//! driven by loadgen's generator and measured the same way, in one run; prints both rows of
//! each measurement and the ratios (see `spillway_bench::e2e` for the method and its
//! known bias). Progress goes to stderr; the table, or with `--json` one JSON object, to
//! stdout. Exits 1 when a run's counts do not reconcile. Run it optimised:
//!
//! ```text
//! cargo run --release -p spillway-bench --bin e2e -- [--duration SECS] [--json] ...
//! ```

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use spillway_bench::e2e::{self, Command, USAGE};

fn run() -> anyhow::Result<bool> {
    let (settings, json) = match Command::parse(std::env::args().skip(1))? {
        Command::Help => {
            print!("{USAGE}");
            return Ok(true);
        }
        Command::Run { settings, json } => (settings, json),
    };
    if spillway_bench::machine::DEBUG_BUILD {
        eprintln!(
            "warning: unoptimised build; run with `cargo run --release -p spillway-bench --bin e2e`"
        );
    }
    let started = Instant::now();
    let report = e2e::run(&settings, |line| eprintln!("[e2e] {line}"))?;
    eprintln!("[e2e] done in {:.1} s", started.elapsed().as_secs_f64());

    let mut stdout = std::io::stdout().lock();
    if json {
        let text = serde_json::to_string_pretty(&report.to_json()).context("encoding the JSON")?;
        writeln!(stdout, "{text}").context("writing to stdout")?;
    } else {
        write!(stdout, "{}", report.to_table()).context("writing to stdout")?;
    }
    stdout.flush().context("writing to stdout")?;
    Ok(report.reconciled())
}

fn main() -> ExitCode {
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
