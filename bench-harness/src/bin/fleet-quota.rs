//! `fleet-quota`: one tenant's fleet-wide limit enforced by the engine's Redis leases and by
//! one Redis round trip per message (Envoy's ratelimit algorithm), the same open-loop load
//! on both, alternating, one table (see `spillway_bench::fleet_quota`).
//! `scripts/fleet-quota-bench.sh` builds it, starts a private Redis and runs it:
//!
//! ```text
//! cargo build --profile bench -p spillway-bench --bin fleet-quota
//! target/release/fleet-quota --redis-url redis://127.0.0.1:PORT [--offered 150000]
//!     [--producers 2] [--limit 50000] [--duration-s 5] [--warmup-s 1] [--reps 3]
//! ```
//!
//! Exits 1 when a run's counts do not reconcile (the table lists why).

use std::process::ExitCode;

use clap::Parser;
use spillway_bench::fleet_quota::{self, Settings};

/// The command line.
#[derive(Parser)]
#[command(
    about = "One tenant's fleet-wide limit: the engine's Redis leases against one Redis round trip per message (Envoy's ratelimit algorithm), side by side"
)]
struct Options {
    #[command(flatten)]
    settings: Settings,
}

fn main() -> anyhow::Result<ExitCode> {
    let options = Options::parse();
    let comparison = fleet_quota::run(&options.settings, |line| eprintln!("fleet-quota: {line}"))?;
    print!("{}", fleet_quota::table(&comparison));
    Ok(if comparison.problems().is_empty() {
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
