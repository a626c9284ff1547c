//! `workers-vs-nats`: `spillway serve --workers` with 4 Rust echo workers against
//! nats-server request/reply with 4 NATS echo workers in a queue group, the same client
//! load on both, in one run (see `spillway_bench::workers_vs_nats`). Build the release
//! binaries first; they are looked for beside this one:
//!
//! ```text
//! cargo build --release -p spillway --bin spillway --example echo_worker
//! cargo build --release -p spillway-bench --bin workers-vs-nats --bin nats-echo-worker
//! target/release/workers-vs-nats [--rates 50000] [--window 8] [--duration-s 5] [--reps 3]
//!     [--nats-url URL] [--json FILE]
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use spillway_bench::workers_vs_nats::{self, Settings};

/// The command line.
#[derive(Parser)]
#[command(
    about = "spillway serve --workers against NATS request/reply with a queue group: the same echo workers, the same client load"
)]
struct Options {
    #[command(flatten)]
    settings: Settings,
    /// Also write every run's full report (loadgen's) as one JSON object to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn main() -> anyhow::Result<ExitCode> {
    let options = Options::parse();
    let outcome = workers_vs_nats::run(&options.settings, |line| {
        eprintln!("workers-vs-nats: {line}")
    })?;
    print!("{}", workers_vs_nats::table(&outcome));
    if let Some(path) = &options.json {
        let text = serde_json::to_string_pretty(&outcome)?;
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(if outcome.problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn cli_is_consistent() {
        Options::command().debug_assert();
    }
}
