//! `baseline-serve`: the tokio/tower baseline's TCP twin, a tokio server speaking spillway's
//! wire protocol (see `spillway_bench::baseline_tcp`), to drive with
//! `loadgen --target tcp://ADDR` side by side with `spillway serve`. Run it optimised:
//!
//! ```text
//! cargo run --release -p spillway-bench --bin baseline-serve -- --listen 127.0.0.1:7979
//! ```
//!
//! Prints `listening on ADDR` once bound; on SIGINT or SIGTERM prints its counters as one
//! JSON line and exits.

use std::process::ExitCode;

use spillway_bench::baseline_tcp::{serve, ServeCommand, SERVE_USAGE};

fn main() -> ExitCode {
    let options = match ServeCommand::parse(std::env::args().skip(1)) {
        Ok(ServeCommand::Help) => {
            print!("{SERVE_USAGE}");
            return ExitCode::SUCCESS;
        }
        Ok(ServeCommand::Serve(options)) => options,
        Err(error) => {
            eprintln!("baseline-serve: {error:#}");
            return ExitCode::from(2);
        }
    };
    if spillway_bench::machine::DEBUG_BUILD {
        eprintln!(
            "warning: unoptimised build; run with `cargo run --release -p spillway-bench --bin baseline-serve`"
        );
    }
    match serve(&options, &mut std::io::stdout().lock()) {
        Ok(stats) => {
            let errors = stats.self_check();
            if errors.is_empty() {
                ExitCode::SUCCESS
            } else {
                eprintln!(
                    "baseline-serve: counts do not reconcile: {}",
                    errors.join("; ")
                );
                ExitCode::FAILURE
            }
        }
        Err(error) => {
            eprintln!("baseline-serve: {error:#}");
            ExitCode::FAILURE
        }
    }
}
