//! The four named profiles (SPEC 7) and the settings each one starts from.
//!
//! Every profile keeps all three admission levels on: a profile changes how much each level
//! allows, never whether it runs, so that a test in development or staging exercises the
//! same code paths as production. The kill switches (`levels`) stay a deliberate, per-file
//! decision.

use core::fmt;
use core::str::FromStr;

use serde::{Deserialize, Serialize};

use serde_value::Value;

use super::{file, Config, ConfigError, WaitStrategy};

/// A named starting point for the settings: `Config::for_profile(profile)`, or
/// `profile = "NAME"` in a TOML file. Production is the default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Profile {
    /// `development`: relaxed, for a laptop running the server under a debugger and its
    /// tests, where a refusal is noise rather than protection.
    ///
    /// Against production: 2 shards, spin-then-park waiting (parks up to 1 ms) and no
    /// pinning of shards or control thread (a shared machine, where an idle engine must cost
    /// no CPU); 4096 connections per shard (small start-up allocation); 20x the
    /// per-connection rate (10000/s, burst 20000) with the adaptive controller off (pauses
    /// in a debugger would otherwise cut rates; its floor stays 10% of the rate); 10x the
    /// per-connection caps (10000 messages, 500 MiB) and 2x the role and handler-queue caps;
    /// a breaker that trips only on p95 over 2 s or errors over 50% (debug builds are slow
    /// and handlers in progress fail), recovers after 5 s and 5 s of good metrics, and does
    /// not trip on a full queue; a 1 s health-check SLO; the monitor samples every second.
    Development,
    /// `staging`: production's admission limits unchanged, so that a load test in staging
    /// predicts production's refusals, with faster feedback around them.
    ///
    /// Against production: the breaker recovers after 15 s (not 60 s) and closes after 10 s
    /// of good metrics (not 30 s), so test runs do not wait a minute after each trip; the
    /// health-check SLO is 250 ms (staging hardware is usually smaller and shared); the
    /// monitor samples every second and keeps the last 1000 alerts for analysis afterwards.
    Staging,
    /// `production`: SPEC's defaults, [`Config::default`]; strict.
    #[default]
    Production,
    /// `high-throughput`: a dedicated multicore machine moving hundreds of thousands of
    /// messages per second over fewer, busier connections.
    ///
    /// Against production: shards pinned to their cores; 16384-slot rings and 1024-message
    /// admission batches (fewer ring hand-offs per message; admission stays cheap); 256
    /// handlers per batch (this bounds control latency at one batch, well inside the
    /// unchanged 100 ms SLO for sub-microsecond handlers); 65536 connections per shard;
    /// 10x the per-connection rate (5000/s, burst 10000, adaptive floor 10% of it as in
    /// production) and 4x the per-connection,
    /// role and handler-queue caps; a breaker window of 10000 requests with 1000 minimum
    /// samples (at these rates a shard's last 1000 requests span only tens of milliseconds,
    /// too short a window for a steady p95).
    /// The wait strategy stays adaptive: it spins (then yields) only when every engine thread has a
    /// core of its own, so a smaller machine is not starved.
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

/// The settings of `profile` (documented on each [`Profile`] variant).
pub(super) fn settings(profile: Profile) -> Config {
    let mut config = Config::default();
    config.profile = profile;
    match profile {
        Profile::Production => {}
        Profile::Development => {
            config.shards = 2;
            config.pinning = false;
            config.wait = WaitStrategy::SpinThenPark {
                spin_iterations: 256,
                yield_iterations: 64,
                park_timeout_us: 1_000,
            };
            config.connections_per_shard_max = 4_096;

            config.rate.per_connection_per_sec = 10_000;
            config.rate.burst = 20_000;
            config.rate.adaptive = false;
            config.rate.adaptive_floor_per_sec = 1_000;

            config.caps.connection_messages = 10_000;
            config.caps.connection_bytes = 500 << 20;
            config.caps.role_messages = [20_000, 10_000, 2_000, 1_000, 4_000, 2_000];
            config.caps.handler_queue = 40_000;

            config.breaker.p95_latency_max_ns = 2_000_000_000;
            config.breaker.error_rate_max_percent = 50.0;
            config.breaker.recovery_timeout_ns = 5_000_000_000;
            config.breaker.good_period_ns = 5_000_000_000;
            config.breaker.trip_on_full_queue = false;

            config.control.health_slo_ns = 1_000_000_000;
            config.control.pinning = false;
            config.monitor.interval_ns = 1_000_000_000;
        }
        Profile::Staging => {
            config.breaker.recovery_timeout_ns = 15_000_000_000;
            config.breaker.good_period_ns = 10_000_000_000;

            config.control.health_slo_ns = 250_000_000;
            config.monitor.interval_ns = 1_000_000_000;
            config.monitor.history = 1_000;
        }
        Profile::HighThroughput => {
            config.pinning = true;
            config.ring_capacity = 16_384;
            config.admission_batch_max = 1_024;
            config.handler_batch_max = 256;
            config.connections_per_shard_max = 65_536;

            config.rate.per_connection_per_sec = 5_000;
            config.rate.burst = 10_000;
            config.rate.adaptive_floor_per_sec = 500;

            config.caps.connection_messages = 4_000;
            config.caps.connection_bytes = 200 << 20;
            config.caps.role_messages = [40_000, 20_000, 4_000, 2_000, 8_000, 4_000];
            config.caps.handler_queue = 80_000;

            config.breaker.window_requests = 10_000;
            config.breaker.min_samples = 1_000;
        }
    }
    config
}
