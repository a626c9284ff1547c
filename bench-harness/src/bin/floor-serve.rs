//! `floor-serve`: the least a server can do for spillway's wire protocol over mio (see
//! `spillway_bench::floor`), the floor that `scripts/tcp-cost.sh` sets beside `spillway
//! serve` and the tokio twin. Run it optimised:
//!
//! ```text
//! cargo run --release -p spillway-bench --bin floor-serve -- --listen 127.0.0.1:7979
//! ```
//!
//! Prints `listening on ADDR` once bound; on SIGINT, SIGTERM or after `--duration-s` prints
//! its counters as one JSON line and exits.

use std::process::ExitCode;

use clap::Parser;
use spillway_bench::floor::{serve, ServeOptions};

// The command line: the server's options, whose doc comment is the help's description.
#[derive(Parser)]
#[command(name = "floor-serve")]
struct Cli {
    #[command(flatten)]
    options: ServeOptions,
}

fn main() -> ExitCode {
    let options = Cli::parse().options;
    if spillway_bench::machine::DEBUG_BUILD {
        eprintln!(
            "warning: unoptimised build; run with `cargo run --release -p spillway-bench --bin floor-serve`"
        );
    }
    match serve(&options, &mut std::io::stdout().lock()) {
        Ok(_) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("floor-serve: {error:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    fn parse(flags: &[&str]) -> Result<ServeOptions, clap::Error> {
        Cli::try_parse_from(std::iter::once("floor-serve").chain(flags.iter().copied()))
            .map(|cli| cli.options)
    }

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn flags_parse_and_bad_ones_are_refused() {
        assert_eq!(
            parse(&["--listen", "127.0.0.1:0"]).unwrap(),
            ServeOptions {
                listen: "127.0.0.1:0".parse().unwrap(),
                duration_s: None,
                max_connections: None,
            }
        );
        assert_eq!(
            parse(&[
                "--listen=127.0.0.1:7979",
                "--duration-s",
                "30",
                "--max-connections=16000"
            ])
            .unwrap(),
            ServeOptions {
                listen: "127.0.0.1:7979".parse().unwrap(),
                duration_s: Some(30),
                max_connections: Some(16_000),
            }
        );
        for bad in [
            &[][..],
            &["--listen", "nowhere"],
            &["--listen", "127.0.0.1:0", "--duration-s", "0"],
            &["--listen", "127.0.0.1:0", "--max-connections", "0"],
            &["--listen", "127.0.0.1:0", "--bogus"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
