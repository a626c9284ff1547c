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

use clap::Parser;
use spillway_bench::baseline_tcp::{serve, ServeOptions};

// The command line: the server's options, whose doc comment is the help's description.
#[derive(Parser)]
#[command(name = "baseline-serve")]
struct Cli {
    #[command(flatten)]
    options: ServeOptions,
}

fn main() -> ExitCode {
    let options = Cli::parse().options;
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

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    fn parse(flags: &[&str]) -> Result<ServeOptions, clap::Error> {
        Cli::try_parse_from(std::iter::once("baseline-serve").chain(flags.iter().copied()))
            .map(|cli| cli.options)
    }

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn flags_parse_and_bad_ones_are_named() {
        assert_eq!(
            parse(&["--listen", "127.0.0.1:0"]).unwrap(),
            ServeOptions {
                listen: "127.0.0.1:0".parse().unwrap(),
                workers: None,
                service_ns: 0,
                max_connections: None,
                concurrency_limit: None,
            }
        );
        assert_eq!(
            parse(&[
                "--listen=127.0.0.1:7979",
                "--workers",
                "2",
                "--service-ns=500",
                "--max-connections",
                "100",
                "--concurrency-limit",
                "19000",
            ])
            .unwrap(),
            ServeOptions {
                listen: "127.0.0.1:7979".parse().unwrap(),
                workers: Some(2),
                service_ns: 500,
                max_connections: Some(100),
                concurrency_limit: Some(19_000),
            }
        );
        let message = parse(&["--listen", "127.0.0.1:0", "--bogus"])
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("unexpected argument '--bogus'"),
            "{message}"
        );
        let message = parse(&[]).unwrap_err().to_string();
        assert!(message.contains("--listen"), "{message}");
        let message = parse(&["--listen", "nowhere"]).unwrap_err().to_string();
        assert!(message.contains("'nowhere'"), "{message}");
        for bad in [
            &["--listen", "127.0.0.1:0", "--workers", "0"][..],
            &["--listen", "127.0.0.1:0", "--max-connections", "0"],
            &["--listen", "127.0.0.1:0", "--concurrency-limit", "0"],
            &["--listen", "127.0.0.1:0", "--service-ns", "fast"],
            &["--listen"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
