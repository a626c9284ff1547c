//! Command-line pieces the project's binaries share (`loadgen`, and bench-harness's `e2e` and
//! `baseline-serve`): each parses its own flags by hand, with these two steps in common.

use std::fmt::Display;
use std::str::FromStr;

/// Splits `--flag=value` into the flag and its inline value; any other argument (a flag
/// without `=`, a value, `-h`) is the flag with none.
///
/// ```
/// use spillway_loadgen::cli::split_flag;
/// assert_eq!(split_flag("--rate=5"), ("--rate".to_string(), Some("5".to_string())));
/// assert_eq!(split_flag("--json"), ("--json".to_string(), None));
/// ```
pub fn split_flag(arg: &str) -> (String, Option<String>) {
    match arg.split_once('=') {
        Some((flag, value)) if flag.starts_with("--") => {
            (flag.to_string(), Some(value.to_string()))
        }
        _ => (arg.to_string(), None),
    }
}

/// `value` parsed as `T`, or an error naming the flag, the value and why.
///
/// # Errors
/// When `value` does not parse as `T`.
pub fn parse_value<T: FromStr>(flag: &str, value: &str) -> anyhow::Result<T>
where
    T::Err: Display,
{
    value
        .parse()
        .map_err(|error| anyhow::anyhow!("{flag}: bad value {value:?}: {error}"))
}
