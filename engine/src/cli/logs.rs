//! The logs of `spillway serve`: tracing events to stderr, as text or JSON lines, filtered
//! by `RUST_LOG` (default `info`).

use std::io::IsTerminal;

use clap::ValueEnum;
use tracing_subscriber::filter::{EnvFilter, LevelFilter};

/// How each log event is written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One line per event: time, level, target, message, then its fields as `key=value`.
    #[default]
    Text,
    /// One JSON object per line, its fields under `fields` (the message as `message`).
    Json,
}

/// Installs the process's subscriber. `RUST_LOG` directives that do not parse are ignored
/// (the rest apply); without any, `info` and above are logged.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::builder()
        .with_default_directive(LevelFilter::INFO.into())
        .from_env_lossy();
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        // Colours only for a person at a terminal: scripts grep the plain text.
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => logs.json().init(),
    }
}
