//! The `spillway` command.
//!
//! `spillway serve --listen ADDR` runs the engine behind its TCP front end
//! (`spillway::net::server`, protocol in docs/PROTOCOL.md) with a handler that acknowledges
//! each message after an optional simulated cost, until SIGINT or SIGTERM (or
//! `--duration-s`), then prints the engine's and the server's counters.
//!
//! `spillway check-config FILE` validates a TOML configuration file and prints the
//! effective settings (the file's profile with the file's keys applied), in the same TOML
//! layout. Exit status: 0 valid, 1 invalid or unreadable, 2 wrong usage.

use std::ffi::OsString;
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;

#[path = "cli/serve.rs"]
mod serve;
use spillway::config::{Config, ConfigLoadError};

const USAGE: &str = "\
spillway: a thread-per-core data-plane engine that keeps a server fast under overload

Usage:
  spillway serve [--listen ADDR] [--config FILE] [--shards N] [--service-ns NS]
                 [--max-connections N] [--duration-s S] [--workers ADDR]
                               serve the wire protocol (docs/PROTOCOL.md) on ADDR
                               (default 127.0.0.1:7878); each message is acknowledged
                               after busy-waiting NS ns (default 0); stops on SIGINT or
                               SIGTERM, or after S seconds, and prints its counters;
                               FILE's [net] and [egress] set the server, --shards and
                               --max-connections override FILE; with --workers, worker
                               processes connect to ADDR (HOST:PORT or unix:PATH) and
                               serve every message instead (docs/WORKERS.md)
  spillway check-config FILE   validate the TOML configuration FILE and print the
                               effective settings (its profile with its keys applied)
  spillway --help              print this help
  spillway --version           print the version

Exit status: 0 valid, 1 invalid or unreadable file, 2 wrong usage.
Profiles: development, staging, production (the default), high-throughput.
";

/// The file could not be loaded; the message is already printed.
const EXIT_INVALID: u8 = 1;
/// The command line is wrong.
const EXIT_USAGE: u8 = 2;

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let Some(command) = args.first() else {
        eprint!("{USAGE}");
        return ExitCode::from(EXIT_USAGE);
    };
    match command.to_str() {
        Some("--help" | "-h" | "help") => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        Some("--version" | "-V") => {
            println!("spillway {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Some("serve") => match serve::parse(&args[1..]) {
            Ok(options) => serve::run(options).unwrap_or_else(|error| {
                eprintln!("error: {error:#}");
                ExitCode::from(EXIT_INVALID)
            }),
            Err(error) => usage_error(&format!("{error:#}")),
        },
        Some("check-config") => match &args[1..] {
            [file] => check_config(Path::new(file)).unwrap_or_else(|error| {
                eprintln!("error: {error:#}");
                ExitCode::from(EXIT_INVALID)
            }),
            _ => usage_error("check-config takes one argument, the FILE to check"),
        },
        _ => usage_error(&format!("unknown command {command:?}")),
    }
}

fn usage_error(message: &str) -> ExitCode {
    eprintln!("error: {message}\n");
    eprint!("{USAGE}");
    ExitCode::from(EXIT_USAGE)
}

/// Loads `file`; prints `FILE: valid (profile NAME)` and the effective settings, or the
/// error naming the field.
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
