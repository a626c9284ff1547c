//! The command line of `spillway` (clap, derive): its subcommands and what they share.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use spillway::config::{Config, ConfigLoadError};

pub mod logs;
pub mod serve;

/// The file could not be loaded, or `serve` failed; the error is already printed.
pub const EXIT_INVALID: u8 = 1;

/// spillway: a thread-per-core data-plane engine that keeps a server fast under overload.
///
/// Exit status: 0 success, 1 invalid or unreadable configuration (or `serve` failed),
/// 2 wrong usage.
#[derive(Debug, Parser)]
#[command(name = "spillway", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the wire protocol (docs/PROTOCOL.md) until SIGINT or SIGTERM
    ///
    /// Each message is acknowledged after busy-waiting --service-ns, or, with --workers,
    /// served by worker processes (docs/WORKERS.md). The first SIGINT or SIGTERM stops
    /// gracefully: the listener closes, queued messages run until the stop deadline and are
    /// cancelled then, every Reply is written, the final counters are logged (and printed on
    /// stdout), and the exit status is 0. A second signal exits at once: 130 after SIGINT,
    /// 143 after SIGTERM. Logs go to stderr, filtered by RUST_LOG (default `info`).
    Serve(serve::ServeArgs),
    /// Validate a TOML configuration file and print its effective settings
    ///
    /// Prints `FILE: valid (profile NAME)` and every effective setting (the file's profile
    /// with the file's keys applied) in the file layout, or the error naming the field.
    /// Profiles: development, staging, production (the default), high-throughput.
    CheckConfig {
        /// The configuration file to check
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}

impl Cli {
    pub fn run(self) -> ExitCode {
        match self.command {
            Command::Serve(args) => serve::main(args),
            Command::CheckConfig { file } => check_config(&file).unwrap_or_else(|error| {
                eprintln!("error: {error:#}");
                ExitCode::from(EXIT_INVALID)
            }),
        }
    }
}

/// Loads `file`; prints `FILE: valid (profile NAME)` and the effective settings on stdout
/// (output, not a log), or the error naming the field on stderr.
fn check_config(file: &Path) -> anyhow::Result<ExitCode> {
    let config = match Config::from_toml_file(file) {
        Ok(config) => config,
        Err(error @ ConfigLoadError::Io { .. }) => {
            eprintln!("error: {error}");
            return Ok(ExitCode::from(EXIT_INVALID));
        }
        Err(ConfigLoadError::Config(error)) => {
            eprintln!("error: {}: {error}", file.display());
            return Ok(ExitCode::from(EXIT_INVALID));
        }
    };
    let mut out = std::io::stdout().lock();
    let written = writeln!(
        out,
        "{}: valid (profile {})\n",
        file.display(),
        config.profile
    )
    .and_then(|()| out.write_all(config.to_toml_string().as_bytes()))
    .and_then(|()| out.flush());
    match written {
        // A reader that stops early (`| head`) is not an error of the file's.
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        written => {
            written.context("cannot write to standard output")?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
