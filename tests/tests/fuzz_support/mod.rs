//! What the stable fuzz runs (`fuzz_*.rs`) share: how many cases each property runs and
//! where failing cases are kept.
//!
//! A plain `cargo test` runs each property for [`SMOKE_CASES`] cases, which replays the
//! saved failures and keeps the properties working; `scripts/fuzz.sh` sets `FUZZ_CASES` to
//! run the full count once. Failing cases are saved by proptest under
//! `tests/proptest-regressions/`, one file per fuzz file, replayed first by every run.

use proptest::test_runner::{Config, FileFailurePersistence};

/// Cases per property when `FUZZ_CASES` is not set.
pub const SMOKE_CASES: u32 = 16;

/// The proptest settings of a fuzz property: `FUZZ_CASES` cases (or [`SMOKE_CASES`]),
/// failing cases saved to `regressions_file`.
pub fn config(regressions_file: &'static str) -> Config {
    let cases = match std::env::var("FUZZ_CASES") {
        Ok(cases) => cases
            .parse()
            .unwrap_or_else(|_| panic!("FUZZ_CASES must be a number of cases, got {cases:?}")),
        Err(_) => SMOKE_CASES,
    };
    Config {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(regressions_file))),
        ..Config::default()
    }
}

/// The path of a fuzz file's saved failures: `tests/proptest-regressions/<name>.txt`.
macro_rules! regressions_file {
    ($name:literal) => {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/proptest-regressions/",
            $name,
            ".txt"
        )
    };
}
