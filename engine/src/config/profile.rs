//! The four named profiles (SPEC 7), whose settings are the shipped files `config/*.toml`.

use core::fmt;
use core::str::FromStr;

use serde::{Deserialize, Serialize};

use serde_value::Value;

use super::{file, ConfigError};

/// A named starting point for the settings: `Config::for_profile(profile)`, or
/// `profile = "NAME"` in a TOML file. Production is the default. Each profile but
/// production is production's settings with the keys of its file in the repository's
/// `config/` directory laid over them; each file says why it differs where it does. None
/// turns an admission level off, so development and staging run production's code paths.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Profile {
    /// `development` (`config/development.toml`): relaxed, for a laptop running the server
    /// under a debugger and its tests, where a refusal is noise rather than protection.
    Development,
    /// `staging` (`config/staging.toml`): production's admission limits unchanged, so that
    /// a load test in staging predicts production's refusals, with faster feedback around
    /// them.
    Staging,
    /// `production` (`config/production.toml`, which shows every key): SPEC's defaults,
    /// [`Config::default`](super::Config::default); strict.
    #[default]
    Production,
    /// `high-throughput` (`config/high-throughput.toml`): a dedicated multicore machine
    /// moving hundreds of thousands of messages per second over fewer, busier connections.
    HighThroughput,
}

impl Profile {
    /// Every profile, from the most relaxed.
    pub const ALL: [Profile; 4] = [
        Profile::Development,
        Profile::Staging,
        Profile::Production,
        Profile::HighThroughput,
    ];

    /// The name in files and on the command line: `development`, `staging`, `production`,
    /// `high-throughput`.
    pub const fn name(self) -> &'static str {
        match self {
            Profile::Development => "development",
            Profile::Staging => "staging",
            Profile::Production => "production",
            Profile::HighThroughput => "high-throughput",
        }
    }

    /// The profile called `name`; anything else is an error on the field `profile` that
    /// lists the four names.
    pub fn from_name(name: &str) -> Result<Profile, ConfigError> {
        let key = |text: &str| Value::String(text.to_string());
        let table = Value::Map([(key("profile"), key(name))].into_iter().collect());
        file::deserialize(table).map(|file::ProfileKey { profile }| profile)
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())
    }
}

impl FromStr for Profile {
    type Err = ConfigError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Profile::from_name(name)
    }
}
