//! The `spillway` command: `spillway serve` runs the engine behind its TCP front end,
//! `spillway check-config FILE` validates a configuration file (`spillway --help`; the
//! command line is in `cli`).

use std::process::ExitCode;

use clap::Parser;

mod cli;

fn main() -> ExitCode {
    // Usage errors exit 2 from here, `--help` and `--version` 0.
    cli::Cli::parse().run()
}
