//! The TOML form of [`Config`]: [`Config::from_toml_str`], [`Config::from_toml_file`] and
//! [`Config::to_toml_string`].
//!
//! A file is read into a model whose every field is optional and which rejects unknown
//! keys; then the profile it names (production when it names none) is the base, and each key
//! present overrides that one setting. Numbers are read as `i64` (`f64` for the one float)
//! and range-checked before they are narrowed to the field's type, so a negative count is
//! reported as out of range for the field, not as a type error. Last, the whole
//! configuration is validated, which checks the ranges that depend on other fields.
//!
//! Layout (every key optional; [`Config::to_toml_string`] prints them all):
//!
//! ```toml
//! profile = "production"       # development | staging | production | high-throughput
//! shards = 0                   # and pinning, ring_capacity, admission_batch_max,
//!                              # handler_batch_max, connections_per_shard_max,
//!                              # shutdown_finishes_queued
//! [wait]
//! strategy = "spin-then-park"  # adaptive | busy-spin | spin-then-yield | spin-then-park
//! spin_iterations = 256        # spin-then-yield and spin-then-park
//! yield_iterations = 64        # spin-then-park
//! park_timeout_us = 50         # spin-then-park
//! [levels]                     # the kill switches
//! rate_limit = true
//! queue_caps = true
//! circuit_breaker = true
//! [rate]                       # RateConfig's fields
//! [caps]                       # CapsConfig's fields, and:
//! action = "refuse"            # refuse | drop | disconnect
//! drop_policy = "drop-oldest"  # drop-oldest | drop-newest
//! priority_threshold_percent = [100, 95, 80, 60]   # or a table with keys P0..P3
//! [caps.role_messages]         # session, sse, task_worker, tool_executor, transport, default
//! [breaker]                    # BreakerConfig's fields
//! [control]                    # ControlConfig's fields
//! [monitor]                    # MonitorConfig's fields
//! [egress]                     # EgressConfig's fields, and:
//! drop_policy = "drop-oldest"  # drop-oldest | drop-newest | block | drop-all
//! [net]                        # NetConfig's fields (the TCP front end)
//! [[tenants]]                  # replaces the profile's list; one table per tenant
//! tenant = 7
//! max_pending = 5000           # absent: no aggregate cap
//! priority_ceiling = "P1"      # P0 | P1 | P2 | P3; absent: P0 (no ceiling)
//! ```
//!
//! Every error is a [`ConfigError`] whose `field` is the dotted path of the key (with
//! `[index]` in the tenant list): an unknown key, a value of the wrong type, an unknown name
//! and an out-of-range number alike. A file that is not TOML at all is an error at
//! `line L, column C`.

use core::fmt::Display;
use core::ops::{Range, RangeInclusive};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use toml::de::{DeTable, DeValue};

use super::profile::one_of;
use super::{
    check, out_of_range, range, BreakerConfig, CapAction, CapsConfig, Config, ConfigError,
    ControlConfig, EgressConfig, EgressDropPolicy, Levels, MonitorConfig, NetConfig, Profile,
    QueueDropPolicy, RateConfig, TenantConfig, WaitStrategy,
};
use crate::message::{Priority, Role, TenantId};

/// Why a configuration file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigLoadError {
    /// The file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// The file was read but a setting in it is invalid (or it is not TOML).
    #[error(transparent)]
    Config(#[from] ConfigError),
}

impl Config {
    /// Reads settings from TOML text: the profile it names (production by default), with
    /// each key present overriding that setting; then validates the result.
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        let file: ConfigFile = toml::from_str(text).map_err(|error| toml_error(text, &error))?;
        let config = file.into_config()?;
        config.validate()?;
        Ok(config)
    }

    /// Reads settings from the TOML file at `path` (see [`Config::from_toml_str`]).
    pub fn from_toml_file(path: &Path) -> Result<Config, ConfigLoadError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigLoadError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Config::from_toml_str(&text)?)
    }

    /// Every setting as TOML, in the layout [`Config::from_toml_str`] reads, which parses it
    /// back to an equal `Config`. Tenants without a cap print no `max_pending`.
    pub fn to_toml_string(&self) -> String {
        toml::to_string(&ConfigFile::from_config(self))
            .expect("a configuration file model always serializes")
    }
}

// ---------------------------------------------------------------------------------------
// The file model: every field optional, unknown keys rejected.

#[derive(Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    profile: Option<String>,
    shards: Option<i64>,
    pinning: Option<bool>,
    ring_capacity: Option<i64>,
    admission_batch_max: Option<i64>,
    handler_batch_max: Option<i64>,
    connections_per_shard_max: Option<i64>,
    shutdown_finishes_queued: Option<bool>,
    wait: Option<WaitFile>,
    levels: Option<LevelsFile>,
    rate: Option<RateFile>,
    caps: Option<CapsFile>,
    breaker: Option<BreakerFile>,
    control: Option<ControlFile>,
    monitor: Option<MonitorFile>,
    egress: Option<EgressFile>,
    net: Option<NetFile>,
    tenants: Option<Vec<TenantFile>>,
}

#[derive(Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct WaitFile {
    strategy: Option<String>,
    spin_iterations: Option<i64>,
    yield_iterations: Option<i64>,
    park_timeout_us: Option<i64>,
}

#[derive(Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct LevelsFile {
    rate_limit: Option<bool>,
    queue_caps: Option<bool>,
    circuit_breaker: Option<bool>,
}

#[derive(Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RateFile {
    per_connection_per_sec: Option<i64>,
    burst: Option<i64>,
    adaptive: Option<bool>,
    adaptive_latency_threshold_ns: Option<i64>,
    adaptive_cut_percent: Option<i64>,
    adaptive_recover_percent: Option<i64>,
    adaptive_floor_per_sec: Option<i64>,
    adaptive_interval_ns: Option<i64>,
}

#[derive(Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct CapsFile {
    connection_messages: Option<i64>,
    connection_bytes: Option<i64>,
    handler_queue: Option<i64>,
    backpressure_percent: Option<i64>,
    /// An array of four (P0..P3) or a table keyed `P0`..`P3`; read by hand so that both
    /// forms give errors naming the priority.
    priority_threshold_percent: Option<toml::Value>,
    action: Option<String>,
    drop_policy: Option<String>,
    role_messages: Option<RoleMessagesFile>,
}

/// One key per [`Role::name`].
#[derive(Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RoleMessagesFile {
    session: Option<i64>,
    sse: Option<i64>,
    task_worker: Option<i64>,
    tool_executor: Option<i64>,
    transport: Option<i64>,
    default: Option<i64>,
}

#[derive(Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct TenantFile {
    tenant: Option<i64>,
    max_pending: Option<i64>,
    priority_ceiling: Option<String>,
}

#[derive(Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct BreakerFile {
    p95_latency_max_ns: Option<i64>,
    error_rate_max_percent: Option<f64>,
    window_requests: Option<i64>,
    min_samples: Option<i64>,
    recovery_timeout_ns: Option<i64>,
    good_period_ns: Option<i64>,
    trip_on_full_queue: Option<bool>,
}

#[derive(Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct ControlFile {
    health_slo_ns: Option<i64>,
    ring_capacity: Option<i64>,
    drain_finishes_queued: Option<bool>,
    drain_timeout_ns: Option<i64>,
    pinning: Option<bool>,
    nice: Option<i64>,
}

#[derive(Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct MonitorFile {
    interval_ns: Option<i64>,
    history: Option<i64>,
    warning_percent: Option<i64>,
    critical_percent: Option<i64>,
    overload_percent: Option<i64>,
}

#[derive(Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct EgressFile {
    buffer_capacity: Option<i64>,
    throttle_percent: Option<i64>,
    pause_percent: Option<i64>,
    throttle_delay_min_ns: Option<i64>,
    throttle_delay_max_ns: Option<i64>,
    pause_duration_ns: Option<i64>,
    drop_policy: Option<String>,
    block_timeout_ns: Option<i64>,
    health_window_ns: Option<i64>,
    health_min_offered: Option<i64>,
    warning_drop_percent: Option<i64>,
    unhealthy_drop_percent: Option<i64>,
    disconnect_unhealthy: Option<bool>,
}

#[derive(Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct NetFile {
    max_connections: Option<i64>,
    max_frame_bytes: Option<i64>,
    hello_timeout_ns: Option<i64>,
    frame_timeout_ns: Option<i64>,
    close_timeout_ns: Option<i64>,
    accept_backoff_ns: Option<i64>,
    accepts_per_turn_max: Option<i64>,
    read_bytes_per_turn_max: Option<i64>,
    frames_per_turn_max: Option<i64>,
    write_buffer_bytes_max: Option<i64>,
    events_per_turn_max: Option<i64>,
    housekeeping_interval_ns: Option<i64>,
}

// ---------------------------------------------------------------------------------------
// Names of the enumerated settings, shared by reading and printing.

const STRATEGY_ADAPTIVE: &str = "adaptive";
const STRATEGY_BUSY_SPIN: &str = "busy-spin";
const STRATEGY_SPIN_THEN_YIELD: &str = "spin-then-yield";
const STRATEGY_SPIN_THEN_PARK: &str = "spin-then-park";
const STRATEGIES: [&str; 4] = [
    STRATEGY_ADAPTIVE,
    STRATEGY_BUSY_SPIN,
    STRATEGY_SPIN_THEN_YIELD,
    STRATEGY_SPIN_THEN_PARK,
];

/// The name of `strategy` in a file.
fn strategy_name(strategy: WaitStrategy) -> &'static str {
    match strategy {
        WaitStrategy::Adaptive => STRATEGY_ADAPTIVE,
        WaitStrategy::BusySpin => STRATEGY_BUSY_SPIN,
        WaitStrategy::SpinThenYield { .. } => STRATEGY_SPIN_THEN_YIELD,
        WaitStrategy::SpinThenPark { .. } => STRATEGY_SPIN_THEN_PARK,
    }
}

/// Settings of a strategy the file switches to without giving them (the numbers `Adaptive`
/// uses on a machine with a core per thread, and on an oversubscribed one).
const DEFAULT_YIELD_SPINS: u32 = 4096;
const DEFAULT_PARK_SPINS: u32 = 256;
const DEFAULT_PARK_YIELDS: u32 = 64;
const DEFAULT_PARK_TIMEOUT_US: u32 = 50;

const ACTIONS: [(&str, CapAction); 3] = [
    ("refuse", CapAction::Refuse),
    ("drop", CapAction::Drop),
    ("disconnect", CapAction::Disconnect),
];

const DROP_POLICIES: [(&str, QueueDropPolicy); 2] = [
    ("drop-oldest", QueueDropPolicy::DropOldest),
    ("drop-newest", QueueDropPolicy::DropNewest),
];

const EGRESS_DROP_POLICIES: [(&str, EgressDropPolicy); 4] = [
    ("drop-oldest", EgressDropPolicy::DropOldest),
    ("drop-newest", EgressDropPolicy::DropNewest),
    ("block", EgressDropPolicy::Block),
    ("drop-all", EgressDropPolicy::DropAll),
];

const PRIORITIES: [(&str, Priority); Priority::COUNT] = [
    ("P0", Priority::P0),
    ("P1", Priority::P1),
    ("P2", Priority::P2),
    ("P3", Priority::P3),
];

/// The option called `name`, or an error on `field` listing the names.
fn choose<T: Copy>(field: &str, name: &str, options: &[(&str, T)]) -> Result<T, ConfigError> {
    options
        .iter()
        .find(|(option, _)| *option == name)
        .map(|(_, value)| *value)
        .ok_or_else(|| ConfigError {
            field: field.to_string(),
            allowed: one_of(options.iter().map(|(option, _)| *option)),
            got: format!("{name:?}"),
        })
}

/// The name of `value` among `options`.
fn name_of<T: PartialEq>(value: T, options: &[(&'static str, T)]) -> &'static str {
    options
        .iter()
        .find(|(_, option)| *option == value)
        .map(|(name, _)| *name)
        .expect("every value of the enum is named")
}

// ---------------------------------------------------------------------------------------
// File -> Config.

/// `value`, when it lies in `range`, in the field's own type.
fn narrow<T>(field: &str, value: i64, range: RangeInclusive<T>) -> Result<T, ConfigError>
where
    T: TryFrom<i64> + PartialOrd + Display,
{
    match T::try_from(value) {
        Ok(narrowed) if range.contains(&narrowed) => Ok(narrowed),
        _ => Err(out_of_range(field, &range, value)),
    }
}

/// Overrides `slot` with `value`, if given, range-checked.
fn set<T>(
    slot: &mut T,
    field: &str,
    value: Option<i64>,
    range: RangeInclusive<T>,
) -> Result<(), ConfigError>
where
    T: TryFrom<i64> + PartialOrd + Display,
{
    if let Some(value) = value {
        *slot = narrow(field, value, range)?;
    }
    Ok(())
}

/// Overrides a switch, if given.
fn set_flag(slot: &mut bool, value: Option<bool>) {
    if let Some(value) = value {
        *slot = value;
    }
}

impl ConfigFile {
    fn into_config(self) -> Result<Config, ConfigError> {
        let profile = match &self.profile {
            Some(name) => Profile::from_name(name)?,
            None => Profile::Production,
        };
        let mut config = Config::for_profile(profile);

        set(&mut config.shards, "shards", self.shards, range::SHARDS)?;
        set_flag(&mut config.pinning, self.pinning);
        set(
            &mut config.ring_capacity,
            "ring_capacity",
            self.ring_capacity,
            range::RING_CAPACITY,
        )?;
        set(
            &mut config.admission_batch_max,
            "admission_batch_max",
            self.admission_batch_max,
            range::BATCH,
        )?;
        set(
            &mut config.handler_batch_max,
            "handler_batch_max",
            self.handler_batch_max,
            range::BATCH,
        )?;
        set(
            &mut config.connections_per_shard_max,
            "connections_per_shard_max",
            self.connections_per_shard_max,
            range::CONNECTIONS_PER_SHARD,
        )?;
        set_flag(
            &mut config.shutdown_finishes_queued,
            self.shutdown_finishes_queued,
        );
        if let Some(wait) = self.wait {
            config.wait = wait.apply(config.wait)?;
        }
        if let Some(levels) = self.levels {
            levels.apply(&mut config.levels);
        }
        if let Some(rate) = self.rate {
            rate.apply(&mut config.rate)?;
        }
        if let Some(caps) = self.caps {
            caps.apply(&mut config.caps)?;
        }
        if let Some(breaker) = self.breaker {
            breaker.apply(&mut config.breaker)?;
        }
        if let Some(control) = self.control {
            control.apply(&mut config.control)?;
        }
        if let Some(monitor) = self.monitor {
            monitor.apply(&mut config.monitor)?;
        }
        if let Some(egress) = self.egress {
            egress.apply(&mut config.egress)?;
        }
        if let Some(net) = self.net {
            net.apply(&mut config.net)?;
        }
        if let Some(tenants) = self.tenants {
            config.tenants = tenants
                .into_iter()
                .enumerate()
                .map(|(index, tenant)| tenant.into_tenant(index))
                .collect::<Result<_, _>>()?;
        }
        Ok(config)
    }

    fn from_config(config: &Config) -> ConfigFile {
        ConfigFile {
            profile: Some(config.profile.name().to_string()),
            shards: wide(config.shards),
            pinning: Some(config.pinning),
            ring_capacity: wide(config.ring_capacity),
            admission_batch_max: wide(config.admission_batch_max),
            handler_batch_max: wide(config.handler_batch_max),
            connections_per_shard_max: wide(config.connections_per_shard_max),
            shutdown_finishes_queued: Some(config.shutdown_finishes_queued),
            wait: Some(WaitFile::from_strategy(config.wait)),
            levels: Some(LevelsFile {
                rate_limit: Some(config.levels.rate_limit),
                queue_caps: Some(config.levels.queue_caps),
                circuit_breaker: Some(config.levels.circuit_breaker),
            }),
            rate: Some(RateFile::from_config(&config.rate)),
            caps: Some(CapsFile::from_config(&config.caps)),
            breaker: Some(BreakerFile::from_config(&config.breaker)),
            control: Some(ControlFile {
                health_slo_ns: wide(config.control.health_slo_ns),
                ring_capacity: wide(config.control.ring_capacity),
                drain_finishes_queued: Some(config.control.drain_finishes_queued),
                drain_timeout_ns: wide(config.control.drain_timeout_ns),
                pinning: Some(config.control.pinning),
                nice: wide(config.control.nice),
            }),
            monitor: Some(MonitorFile {
                interval_ns: wide(config.monitor.interval_ns),
                history: wide(config.monitor.history),
                warning_percent: wide(config.monitor.warning_percent),
                critical_percent: wide(config.monitor.critical_percent),
                overload_percent: wide(config.monitor.overload_percent),
            }),
            egress: Some(EgressFile::from_config(&config.egress)),
            net: Some(NetFile::from_config(&config.net)),
            tenants: Some(config.tenants.iter().map(TenantFile::from_tenant).collect()),
        }
    }
}

/// A setting as the file's `i64`; no valid setting exceeds `i64::MAX`, and an invalid one
/// that does prints as `i64::MAX`.
fn wide<T: TryInto<i64>>(value: T) -> Option<i64> {
    Some(value.try_into().unwrap_or(i64::MAX))
}

impl WaitFile {
    /// The strategy the file names (or `base`'s, when it names none) with the numbers it
    /// gives; numbers it leaves out come from `base` when `base` is the same strategy, else
    /// from the defaults above. A number the strategy does not take is an error.
    fn apply(self, base: WaitStrategy) -> Result<WaitStrategy, ConfigError> {
        let name = match &self.strategy {
            Some(name) => {
                let options = STRATEGIES.map(|name| (name, name));
                choose("wait.strategy", name, &options)?
            }
            None => strategy_name(base),
        };
        let takes: &[&str] = match name {
            STRATEGY_SPIN_THEN_YIELD => &["spin_iterations"],
            STRATEGY_SPIN_THEN_PARK => &["spin_iterations", "yield_iterations", "park_timeout_us"],
            _ => &[],
        };
        for (key, value) in [
            ("spin_iterations", self.spin_iterations),
            ("yield_iterations", self.yield_iterations),
            ("park_timeout_us", self.park_timeout_us),
        ] {
            if let (Some(value), false) = (value, takes.contains(&key)) {
                let allowed = if takes.is_empty() {
                    format!("(unset: strategy {name:?} takes no settings)")
                } else {
                    format!("(unset: strategy {name:?} takes only {})", takes.join(", "))
                };
                return Err(ConfigError {
                    field: format!("wait.{key}"),
                    allowed,
                    got: value.to_string(),
                });
            }
        }
        let spins = |default: u32| -> Result<u32, ConfigError> {
            let mut spins = default;
            set(
                &mut spins,
                "wait.spin_iterations",
                self.spin_iterations,
                range::WAIT_ITERATIONS,
            )?;
            Ok(spins)
        };
        Ok(match name {
            STRATEGY_BUSY_SPIN => WaitStrategy::BusySpin,
            STRATEGY_SPIN_THEN_YIELD => {
                let base_spins = match base {
                    WaitStrategy::SpinThenYield { spin_iterations } => spin_iterations,
                    _ => DEFAULT_YIELD_SPINS,
                };
                WaitStrategy::SpinThenYield {
                    spin_iterations: spins(base_spins)?,
                }
            }
            STRATEGY_SPIN_THEN_PARK => {
                let (base_spins, mut yields, mut park) = match base {
                    WaitStrategy::SpinThenPark {
                        spin_iterations,
                        yield_iterations,
                        park_timeout_us,
                    } => (spin_iterations, yield_iterations, park_timeout_us),
                    _ => (
                        DEFAULT_PARK_SPINS,
                        DEFAULT_PARK_YIELDS,
                        DEFAULT_PARK_TIMEOUT_US,
                    ),
                };
                set(
                    &mut yields,
                    "wait.yield_iterations",
                    self.yield_iterations,
                    range::WAIT_ITERATIONS,
                )?;
                set(
                    &mut park,
                    "wait.park_timeout_us",
                    self.park_timeout_us,
                    range::PARK_TIMEOUT_US,
                )?;
                WaitStrategy::SpinThenPark {
                    spin_iterations: spins(base_spins)?,
                    yield_iterations: yields,
                    park_timeout_us: park,
                }
            }
            _ => WaitStrategy::Adaptive,
        })
    }

    fn from_strategy(strategy: WaitStrategy) -> WaitFile {
        let (spins, yields, park) = match strategy {
            WaitStrategy::Adaptive | WaitStrategy::BusySpin => (None, None, None),
            WaitStrategy::SpinThenYield { spin_iterations } => (Some(spin_iterations), None, None),
            WaitStrategy::SpinThenPark {
                spin_iterations,
                yield_iterations,
                park_timeout_us,
            } => (
                Some(spin_iterations),
                Some(yield_iterations),
                Some(park_timeout_us),
            ),
        };
        WaitFile {
            strategy: Some(strategy_name(strategy).to_string()),
            spin_iterations: spins.map(i64::from),
            yield_iterations: yields.map(i64::from),
            park_timeout_us: park.map(i64::from),
        }
    }
}

impl LevelsFile {
    fn apply(self, levels: &mut Levels) {
        set_flag(&mut levels.rate_limit, self.rate_limit);
        set_flag(&mut levels.queue_caps, self.queue_caps);
        set_flag(&mut levels.circuit_breaker, self.circuit_breaker);
    }
}

impl RateFile {
    fn apply(self, rate: &mut RateConfig) -> Result<(), ConfigError> {
        set(
            &mut rate.per_connection_per_sec,
            "rate.per_connection_per_sec",
            self.per_connection_per_sec,
            range::RATE_PER_SEC,
        )?;
        set(&mut rate.burst, "rate.burst", self.burst, range::BURST)?;
        set_flag(&mut rate.adaptive, self.adaptive);
        set(
            &mut rate.adaptive_latency_threshold_ns,
            "rate.adaptive_latency_threshold_ns",
            self.adaptive_latency_threshold_ns,
            range::LATENCY_NS,
        )?;
        set(
            &mut rate.adaptive_cut_percent,
            "rate.adaptive_cut_percent",
            self.adaptive_cut_percent,
            range::CUT_PERCENT,
        )?;
        set(
            &mut rate.adaptive_recover_percent,
            "rate.adaptive_recover_percent",
            self.adaptive_recover_percent,
            range::PERCENT,
        )?;
        set(
            &mut rate.adaptive_floor_per_sec,
            "rate.adaptive_floor_per_sec",
            self.adaptive_floor_per_sec,
            range::RATE_PER_SEC,
        )?;
        set(
            &mut rate.adaptive_interval_ns,
            "rate.adaptive_interval_ns",
            self.adaptive_interval_ns,
            range::ADAPTIVE_INTERVAL_NS,
        )
    }

    fn from_config(rate: &RateConfig) -> RateFile {
        RateFile {
            per_connection_per_sec: wide(rate.per_connection_per_sec),
            burst: wide(rate.burst),
            adaptive: Some(rate.adaptive),
            adaptive_latency_threshold_ns: wide(rate.adaptive_latency_threshold_ns),
            adaptive_cut_percent: wide(rate.adaptive_cut_percent),
            adaptive_recover_percent: wide(rate.adaptive_recover_percent),
            adaptive_floor_per_sec: wide(rate.adaptive_floor_per_sec),
            adaptive_interval_ns: wide(rate.adaptive_interval_ns),
        }
    }
}

const THRESHOLDS_FIELD: &str = "caps.priority_threshold_percent";

impl CapsFile {
    fn apply(self, caps: &mut CapsConfig) -> Result<(), ConfigError> {
        set(
            &mut caps.connection_messages,
            "caps.connection_messages",
            self.connection_messages,
            range::CAP_MESSAGES,
        )?;
        set(
            &mut caps.connection_bytes,
            "caps.connection_bytes",
            self.connection_bytes,
            range::CAP_BYTES,
        )?;
        set(
            &mut caps.handler_queue,
            "caps.handler_queue",
            self.handler_queue,
            range::CAP_MESSAGES,
        )?;
        set(
            &mut caps.backpressure_percent,
            "caps.backpressure_percent",
            self.backpressure_percent,
            range::PERCENT,
        )?;
        if let Some(thresholds) = &self.priority_threshold_percent {
            apply_thresholds(&mut caps.priority_threshold_percent, thresholds)?;
        }
        if let Some(action) = &self.action {
            caps.action = choose("caps.action", action, &ACTIONS)?;
        }
        if let Some(policy) = &self.drop_policy {
            caps.drop_policy = choose("caps.drop_policy", policy, &DROP_POLICIES)?;
        }
        if let Some(roles) = self.role_messages {
            for (role, value) in roles.by_role() {
                set(
                    &mut caps.role_messages[role.index()],
                    &format!("caps.role_messages.{role}"),
                    value,
                    range::CAP_MESSAGES,
                )?;
            }
        }
        Ok(())
    }

    fn from_config(caps: &CapsConfig) -> CapsFile {
        let role = |role: Role| wide(caps.role_messages[role.index()]);
        CapsFile {
            connection_messages: wide(caps.connection_messages),
            connection_bytes: wide(caps.connection_bytes),
            handler_queue: wide(caps.handler_queue),
            backpressure_percent: wide(caps.backpressure_percent),
            priority_threshold_percent: Some(toml::Value::Array(
                caps.priority_threshold_percent
                    .iter()
                    .map(|percent| toml::Value::Integer(i64::from(*percent)))
                    .collect(),
            )),
            action: Some(name_of(caps.action, &ACTIONS).to_string()),
            drop_policy: Some(name_of(caps.drop_policy, &DROP_POLICIES).to_string()),
            role_messages: Some(RoleMessagesFile {
                session: role(Role::Session),
                sse: role(Role::Sse),
                task_worker: role(Role::TaskWorker),
                tool_executor: role(Role::ToolExecutor),
                transport: role(Role::Transport),
                default: role(Role::Default),
            }),
        }
    }
}

impl RoleMessagesFile {
    fn by_role(self) -> [(Role, Option<i64>); Role::COUNT] {
        [
            (Role::Session, self.session),
            (Role::Sse, self.sse),
            (Role::TaskWorker, self.task_worker),
            (Role::ToolExecutor, self.tool_executor),
            (Role::Transport, self.transport),
            (Role::Default, self.default),
        ]
    }
}

/// `priority_threshold_percent` as an array of four percentages in P0..P3 order, or as a
/// table keyed `P0`..`P3` (`p0`..`p3` also accepted) that overrides only the keys it has.
fn apply_thresholds(
    slot: &mut [u32; Priority::COUNT],
    value: &toml::Value,
) -> Result<(), ConfigError> {
    let percent = |priority: Priority, value: &toml::Value| -> Result<u32, ConfigError> {
        let field = format!("{THRESHOLDS_FIELD}.{priority}");
        match value {
            toml::Value::Integer(percent) => narrow(&field, *percent, range::PERCENT),
            other => Err(ConfigError {
                field,
                allowed: "integers".to_string(),
                got: describe_value(other),
            }),
        }
    };
    match value {
        toml::Value::Array(items) if items.len() == Priority::COUNT => {
            for (priority, item) in Priority::ALL.into_iter().zip(items) {
                slot[priority.index()] = percent(priority, item)?;
            }
            Ok(())
        }
        toml::Value::Array(items) => Err(ConfigError {
            field: THRESHOLDS_FIELD.to_string(),
            allowed: "arrays of 4 percentages (P0 to P3)".to_string(),
            got: format!("an array of {} values", items.len()),
        }),
        toml::Value::Table(table) => {
            for (key, item) in table {
                let priority = PRIORITIES
                    .iter()
                    .find(|(name, _)| name.eq_ignore_ascii_case(key))
                    .map(|(_, priority)| *priority)
                    .ok_or_else(|| ConfigError {
                        field: format!("{THRESHOLDS_FIELD}.{key}"),
                        allowed: one_of(PRIORITIES.iter().map(|(name, _)| *name)),
                        got: "an unknown key".to_string(),
                    })?;
                slot[priority.index()] = percent(priority, item)?;
            }
            Ok(())
        }
        other => Err(ConfigError {
            field: THRESHOLDS_FIELD.to_string(),
            allowed: "arrays of 4 percentages (P0 to P3) and tables with keys P0 to P3".to_string(),
            got: describe_value(other),
        }),
    }
}

/// A TOML value as an error's `got`.
fn describe_value(value: &toml::Value) -> String {
    match value {
        toml::Value::String(text) => format!("string {text:?}"),
        toml::Value::Integer(_)
        | toml::Value::Float(_)
        | toml::Value::Boolean(_)
        | toml::Value::Datetime(_) => format!("{} {value}", value.type_str()),
        toml::Value::Array(_) | toml::Value::Table(_) => value.type_str().to_string(),
    }
}

impl TenantFile {
    fn into_tenant(self, index: usize) -> Result<TenantConfig, ConfigError> {
        let field = |key: &str| format!("tenants[{index}].{key}");
        let tenant = match self.tenant {
            Some(tenant) => narrow(&field("tenant"), tenant, range::TENANT_ID)?,
            None => {
                return Err(ConfigError {
                    field: field("tenant"),
                    allowed: format!(
                        "{}..={} (required)",
                        range::TENANT_ID.start(),
                        range::TENANT_ID.end()
                    ),
                    got: "nothing".to_string(),
                })
            }
        };
        let max_pending = match self.max_pending {
            Some(max) => Some(narrow(&field("max_pending"), max, range::TENANT_PENDING)?),
            None => None,
        };
        let priority_ceiling = match &self.priority_ceiling {
            Some(name) => choose(&field("priority_ceiling"), name, &PRIORITIES)?,
            None => Priority::P0,
        };
        Ok(TenantConfig {
            tenant: TenantId(tenant),
            max_pending,
            priority_ceiling,
        })
    }

    fn from_tenant(tenant: &TenantConfig) -> TenantFile {
        TenantFile {
            tenant: wide(tenant.tenant.0),
            max_pending: tenant.max_pending.map(i64::from),
            priority_ceiling: Some(name_of(tenant.priority_ceiling, &PRIORITIES).to_string()),
        }
    }
}

impl BreakerFile {
    fn apply(self, breaker: &mut BreakerConfig) -> Result<(), ConfigError> {
        set(
            &mut breaker.p95_latency_max_ns,
            "breaker.p95_latency_max_ns",
            self.p95_latency_max_ns,
            range::LATENCY_NS,
        )?;
        if let Some(percent) = self.error_rate_max_percent {
            check(
                "breaker.error_rate_max_percent",
                percent,
                range::ERROR_RATE_PERCENT,
            )?;
            breaker.error_rate_max_percent = percent;
        }
        set(
            &mut breaker.window_requests,
            "breaker.window_requests",
            self.window_requests,
            range::WINDOW_REQUESTS,
        )?;
        set(
            &mut breaker.min_samples,
            "breaker.min_samples",
            self.min_samples,
            range::MIN_SAMPLES,
        )?;
        set(
            &mut breaker.recovery_timeout_ns,
            "breaker.recovery_timeout_ns",
            self.recovery_timeout_ns,
            range::BREAKER_PERIOD_NS,
        )?;
        set(
            &mut breaker.good_period_ns,
            "breaker.good_period_ns",
            self.good_period_ns,
            range::BREAKER_PERIOD_NS,
        )?;
        set_flag(&mut breaker.trip_on_full_queue, self.trip_on_full_queue);
        Ok(())
    }

    fn from_config(breaker: &BreakerConfig) -> BreakerFile {
        BreakerFile {
            p95_latency_max_ns: wide(breaker.p95_latency_max_ns),
            error_rate_max_percent: Some(breaker.error_rate_max_percent),
            window_requests: wide(breaker.window_requests),
            min_samples: wide(breaker.min_samples),
            recovery_timeout_ns: wide(breaker.recovery_timeout_ns),
            good_period_ns: wide(breaker.good_period_ns),
            trip_on_full_queue: Some(breaker.trip_on_full_queue),
        }
    }
}

impl ControlFile {
    fn apply(self, control: &mut ControlConfig) -> Result<(), ConfigError> {
        set(
            &mut control.health_slo_ns,
            "control.health_slo_ns",
            self.health_slo_ns,
            range::HEALTH_SLO_NS,
        )?;
        set(
            &mut control.ring_capacity,
            "control.ring_capacity",
            self.ring_capacity,
            range::CONTROL_RING_CAPACITY,
        )?;
        set_flag(
            &mut control.drain_finishes_queued,
            self.drain_finishes_queued,
        );
        set(
            &mut control.drain_timeout_ns,
            "control.drain_timeout_ns",
            self.drain_timeout_ns,
            range::DRAIN_TIMEOUT_NS,
        )?;
        set_flag(&mut control.pinning, self.pinning);
        set(&mut control.nice, "control.nice", self.nice, range::NICE)?;
        Ok(())
    }
}

impl MonitorFile {
    fn apply(self, monitor: &mut MonitorConfig) -> Result<(), ConfigError> {
        set(
            &mut monitor.interval_ns,
            "monitor.interval_ns",
            self.interval_ns,
            range::MONITOR_INTERVAL_NS,
        )?;
        set(
            &mut monitor.history,
            "monitor.history",
            self.history,
            range::MONITOR_HISTORY,
        )?;
        set(
            &mut monitor.warning_percent,
            "monitor.warning_percent",
            self.warning_percent,
            range::PERCENT,
        )?;
        set(
            &mut monitor.critical_percent,
            "monitor.critical_percent",
            self.critical_percent,
            range::PERCENT,
        )?;
        set(
            &mut monitor.overload_percent,
            "monitor.overload_percent",
            self.overload_percent,
            range::PERCENT,
        )
    }
}

impl NetFile {
    fn apply(self, net: &mut NetConfig) -> Result<(), ConfigError> {
        let NetFile {
            max_connections,
            max_frame_bytes,
            hello_timeout_ns,
            frame_timeout_ns,
            close_timeout_ns,
            accept_backoff_ns,
            accepts_per_turn_max,
            read_bytes_per_turn_max,
            frames_per_turn_max,
            write_buffer_bytes_max,
            events_per_turn_max,
            housekeeping_interval_ns,
        } = self;
        set(
            &mut net.max_connections,
            "net.max_connections",
            max_connections,
            range::NET_CONNECTIONS,
        )?;
        set(
            &mut net.max_frame_bytes,
            "net.max_frame_bytes",
            max_frame_bytes,
            range::NET_FRAME_BYTES,
        )?;
        for (slot, field, value) in [
            (
                &mut net.hello_timeout_ns,
                "net.hello_timeout_ns",
                hello_timeout_ns,
            ),
            (
                &mut net.frame_timeout_ns,
                "net.frame_timeout_ns",
                frame_timeout_ns,
            ),
            (
                &mut net.close_timeout_ns,
                "net.close_timeout_ns",
                close_timeout_ns,
            ),
        ] {
            set(slot, field, value, range::NET_TIMEOUT_NS)?;
        }
        set(
            &mut net.accept_backoff_ns,
            "net.accept_backoff_ns",
            accept_backoff_ns,
            range::NET_BACKOFF_NS,
        )?;
        for (slot, field, value) in [
            (
                &mut net.accepts_per_turn_max,
                "net.accepts_per_turn_max",
                accepts_per_turn_max,
            ),
            (
                &mut net.frames_per_turn_max,
                "net.frames_per_turn_max",
                frames_per_turn_max,
            ),
            (
                &mut net.events_per_turn_max,
                "net.events_per_turn_max",
                events_per_turn_max,
            ),
        ] {
            set(slot, field, value, range::NET_PER_TURN)?;
        }
        for (slot, field, value) in [
            (
                &mut net.read_bytes_per_turn_max,
                "net.read_bytes_per_turn_max",
                read_bytes_per_turn_max,
            ),
            (
                &mut net.write_buffer_bytes_max,
                "net.write_buffer_bytes_max",
                write_buffer_bytes_max,
            ),
        ] {
            set(slot, field, value, range::NET_BUFFER_BYTES)?;
        }
        set(
            &mut net.housekeeping_interval_ns,
            "net.housekeeping_interval_ns",
            housekeeping_interval_ns,
            range::NET_HOUSEKEEPING_NS,
        )
    }

    fn from_config(net: &NetConfig) -> NetFile {
        NetFile {
            max_connections: wide(net.max_connections),
            max_frame_bytes: wide(net.max_frame_bytes),
            hello_timeout_ns: wide(net.hello_timeout_ns),
            frame_timeout_ns: wide(net.frame_timeout_ns),
            close_timeout_ns: wide(net.close_timeout_ns),
            accept_backoff_ns: wide(net.accept_backoff_ns),
            accepts_per_turn_max: wide(net.accepts_per_turn_max),
            read_bytes_per_turn_max: wide(net.read_bytes_per_turn_max),
            frames_per_turn_max: wide(net.frames_per_turn_max),
            write_buffer_bytes_max: wide(net.write_buffer_bytes_max),
            events_per_turn_max: wide(net.events_per_turn_max),
            housekeeping_interval_ns: wide(net.housekeeping_interval_ns),
        }
    }
}

impl EgressFile {
    fn apply(self, egress: &mut EgressConfig) -> Result<(), ConfigError> {
        set(
            &mut egress.buffer_capacity,
            "egress.buffer_capacity",
            self.buffer_capacity,
            range::EGRESS_BUFFER_CAPACITY,
        )?;
        set(
            &mut egress.throttle_percent,
            "egress.throttle_percent",
            self.throttle_percent,
            range::PERCENT,
        )?;
        set(
            &mut egress.pause_percent,
            "egress.pause_percent",
            self.pause_percent,
            range::EGRESS_PAUSE_PERCENT,
        )?;
        set(
            &mut egress.throttle_delay_min_ns,
            "egress.throttle_delay_min_ns",
            self.throttle_delay_min_ns,
            range::EGRESS_DELAY_NS,
        )?;
        set(
            &mut egress.throttle_delay_max_ns,
            "egress.throttle_delay_max_ns",
            self.throttle_delay_max_ns,
            range::EGRESS_DELAY_NS,
        )?;
        set(
            &mut egress.pause_duration_ns,
            "egress.pause_duration_ns",
            self.pause_duration_ns,
            range::EGRESS_PERIOD_NS,
        )?;
        if let Some(policy) = &self.drop_policy {
            egress.drop_policy = choose("egress.drop_policy", policy, &EGRESS_DROP_POLICIES)?;
        }
        set(
            &mut egress.block_timeout_ns,
            "egress.block_timeout_ns",
            self.block_timeout_ns,
            range::EGRESS_PERIOD_NS,
        )?;
        set(
            &mut egress.health_window_ns,
            "egress.health_window_ns",
            self.health_window_ns,
            range::EGRESS_HEALTH_WINDOW_NS,
        )?;
        set(
            &mut egress.health_min_offered,
            "egress.health_min_offered",
            self.health_min_offered,
            range::EGRESS_HEALTH_MIN_OFFERED,
        )?;
        set(
            &mut egress.warning_drop_percent,
            "egress.warning_drop_percent",
            self.warning_drop_percent,
            range::PERCENT,
        )?;
        set(
            &mut egress.unhealthy_drop_percent,
            "egress.unhealthy_drop_percent",
            self.unhealthy_drop_percent,
            range::PERCENT,
        )?;
        set_flag(&mut egress.disconnect_unhealthy, self.disconnect_unhealthy);
        Ok(())
    }

    fn from_config(egress: &EgressConfig) -> EgressFile {
        EgressFile {
            buffer_capacity: wide(egress.buffer_capacity),
            throttle_percent: wide(egress.throttle_percent),
            pause_percent: wide(egress.pause_percent),
            throttle_delay_min_ns: wide(egress.throttle_delay_min_ns),
            throttle_delay_max_ns: wide(egress.throttle_delay_max_ns),
            pause_duration_ns: wide(egress.pause_duration_ns),
            drop_policy: Some(name_of(egress.drop_policy, &EGRESS_DROP_POLICIES).to_string()),
            block_timeout_ns: wide(egress.block_timeout_ns),
            health_window_ns: wide(egress.health_window_ns),
            health_min_offered: wide(egress.health_min_offered),
            warning_drop_percent: wide(egress.warning_drop_percent),
            unhealthy_drop_percent: wide(egress.unhealthy_drop_percent),
            disconnect_unhealthy: Some(egress.disconnect_unhealthy),
        }
    }
}

// ---------------------------------------------------------------------------------------
// toml's errors -> ConfigError naming the key.

/// Turns a parse or deserialization error into a [`ConfigError`] whose field is the dotted
/// path of the key at the error's position.
fn toml_error(text: &str, error: &toml::de::Error) -> ConfigError {
    let document = match DeTable::parse(text) {
        Ok(document) => document,
        // Not TOML at all: no key to name, so name the position.
        Err(syntax) => {
            return ConfigError {
                field: position(text, syntax.span().or(error.span())),
                allowed: "TOML syntax".to_string(),
                got: syntax.message().to_string(),
            }
        }
    };
    let field = error
        .span()
        .and_then(|span| {
            let mut best = None;
            key_at(document.get_ref(), span.start, "", &mut best);
            best.map(|(path, _)| path)
        })
        .unwrap_or_else(|| position(text, error.span()));
    let message = error.message();
    let (what, expected) = match message.split_once(", expected ") {
        Some((what, expected)) => (what, Some(expected)),
        None => (message, None),
    };
    if what.starts_with("unknown field ") {
        // Serde lists the known keys in backquotes after "expected".
        let known: Vec<&str> = expected
            .unwrap_or_default()
            .split('`')
            .skip(1)
            .step_by(2)
            .collect();
        return ConfigError {
            field,
            allowed: one_of(known),
            got: "an unknown key".to_string(),
        };
    }
    match (what.strip_prefix("invalid type: "), expected) {
        (Some(got), Some(expected)) => ConfigError {
            field,
            allowed: match expected {
                // An integer that does not fit an i64 is out of every range.
                "i64" if got.starts_with("integer") => "64-bit integers".to_string(),
                "i64" => "integers".to_string(),
                "f64" => "numbers".to_string(),
                "a boolean" => "{true, false}".to_string(),
                "a string" => "strings".to_string(),
                "a sequence" => "arrays".to_string(),
                expected if expected.starts_with("struct ") => "tables".to_string(),
                expected => expected.to_string(),
            },
            // "integer `1e30` as i128": the type serde tried last is noise.
            got: got.split(" as ").next().unwrap_or(got).to_string(),
        },
        _ => ConfigError {
            field,
            allowed: "a valid value".to_string(),
            got: message.to_string(),
        },
    }
}

/// The key whose name or value spans `offset`, the narrowest when several do (a table's
/// span holds its keys'), as `(dotted path, span length)`.
fn key_at(table: &DeTable<'_>, offset: usize, prefix: &str, best: &mut Option<(String, usize)>) {
    for (key, value) in table.iter() {
        let path = if prefix.is_empty() {
            key.get_ref().to_string()
        } else {
            format!("{prefix}.{}", key.get_ref())
        };
        consider(best, offset, &path, key.span());
        consider(best, offset, &path, value.span());
        match value.get_ref() {
            DeValue::Table(inner) => key_at(inner, offset, &path, best),
            DeValue::Array(items) => {
                for (index, item) in items.iter().enumerate() {
                    let path = format!("{path}[{index}]");
                    consider(best, offset, &path, item.span());
                    if let DeValue::Table(inner) = item.get_ref() {
                        key_at(inner, offset, &path, best);
                    }
                }
            }
            _ => {}
        }
    }
}

/// Keeps `path` as the best match for `offset` when its span holds `offset` and is
/// narrower than the best so far.
fn consider(best: &mut Option<(String, usize)>, offset: usize, path: &str, span: Range<usize>) {
    let narrower = best.as_ref().is_none_or(|(_, length)| span.len() < *length);
    if span.contains(&offset) && narrower {
        *best = Some((path.to_string(), span.len()));
    }
}

/// `line L, column C` (1-based) of a byte offset, for errors with no key to name.
fn position(text: &str, span: Option<Range<usize>>) -> String {
    let Some(span) = span else {
        return "file".to_string();
    };
    let before = text.get(..span.start).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    format!("line {line}, column {column}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(text: &str) -> ConfigError {
        Config::from_toml_str(text).unwrap_err()
    }

    /// A configuration with a value other than its profile's everywhere it can.
    fn everything_changed() -> Config {
        let mut config = Config::for_profile(Profile::Staging);
        config.shards = 3;
        config.pinning = true;
        config.wait = WaitStrategy::SpinThenPark {
            spin_iterations: 7,
            yield_iterations: 8,
            park_timeout_us: 9,
        };
        config.ring_capacity = 1024;
        config.admission_batch_max = 17;
        config.handler_batch_max = 18;
        config.connections_per_shard_max = 19;
        config.levels = Levels {
            rate_limit: false,
            queue_caps: false,
            circuit_breaker: false,
        };
        config.rate = RateConfig {
            per_connection_per_sec: 21,
            burst: 22,
            adaptive: false,
            adaptive_latency_threshold_ns: 23,
            adaptive_cut_percent: 24,
            adaptive_recover_percent: 25,
            adaptive_floor_per_sec: 20,
            adaptive_interval_ns: 27_000_000,
        };
        config.caps = CapsConfig {
            connection_messages: 31,
            connection_bytes: 32,
            role_messages: [33, 34, 35, 36, 37, 38],
            handler_queue: 39,
            backpressure_percent: 40,
            priority_threshold_percent: [99, 98, 50, 1],
            action: CapAction::Drop,
            drop_policy: QueueDropPolicy::DropNewest,
        };
        config.tenants = vec![
            TenantConfig {
                tenant: TenantId(0),
                max_pending: None,
                priority_ceiling: Priority::P3,
            },
            TenantConfig {
                tenant: TenantId(u32::MAX),
                max_pending: Some(1 << 30),
                priority_ceiling: Priority::P0,
            },
        ];
        config.breaker = BreakerConfig {
            p95_latency_max_ns: 41,
            error_rate_max_percent: 0.125,
            window_requests: 42,
            min_samples: 42,
            recovery_timeout_ns: 43,
            good_period_ns: 44,
            trip_on_full_queue: false,
        };
        config.shutdown_finishes_queued = false;
        config.control = ControlConfig {
            health_slo_ns: 51_000,
            ring_capacity: 52,
            drain_finishes_queued: false,
            drain_timeout_ns: 53_000_000,
            pinning: false,
            nice: 5,
        };
        config.monitor = MonitorConfig {
            interval_ns: 61_000_000,
            history: 62,
            warning_percent: 63,
            critical_percent: 64,
            overload_percent: 64,
        };
        config.egress = EgressConfig {
            buffer_capacity: 71,
            throttle_percent: 50,
            pause_percent: 100,
            throttle_delay_min_ns: 72,
            throttle_delay_max_ns: 73,
            pause_duration_ns: 74_000,
            drop_policy: EgressDropPolicy::Block,
            block_timeout_ns: 75_000,
            health_window_ns: 76_000_000,
            health_min_offered: 77,
            warning_drop_percent: 78,
            unhealthy_drop_percent: 79,
            disconnect_unhealthy: true,
        };
        config.net = NetConfig {
            max_connections: 81,
            max_frame_bytes: 8_200,
            hello_timeout_ns: 83_000_000,
            frame_timeout_ns: 84_000_000,
            close_timeout_ns: 85_000_000,
            accept_backoff_ns: 86_000,
            accepts_per_turn_max: 87,
            read_bytes_per_turn_max: 88_000,
            frames_per_turn_max: 89,
            write_buffer_bytes_max: 90_000,
            events_per_turn_max: 91,
            housekeeping_interval_ns: 92_000_000,
        };
        config
    }

    #[test]
    fn every_setting_round_trips_through_toml() {
        let config = everything_changed();
        config.validate().unwrap();
        assert_eq!(Config::from_toml_str(&config.to_toml_string()), Ok(config));
        for strategy in [
            WaitStrategy::Adaptive,
            WaitStrategy::BusySpin,
            WaitStrategy::SpinThenYield { spin_iterations: 0 },
        ] {
            let mut config = everything_changed();
            config.wait = strategy;
            assert_eq!(Config::from_toml_str(&config.to_toml_string()), Ok(config));
        }
        for policy in EGRESS_DROP_POLICIES.map(|(_, policy)| policy) {
            let mut config = everything_changed();
            config.egress.drop_policy = policy;
            assert_eq!(Config::from_toml_str(&config.to_toml_string()), Ok(config));
        }
        for profile in Profile::ALL {
            let config = Config::for_profile(profile);
            assert_eq!(Config::from_toml_str(&config.to_toml_string()), Ok(config));
        }
    }

    #[test]
    fn egress_settings_load_and_errors_name_the_field() {
        let config = Config::from_toml_str(
            "[egress]\n\
             buffer_capacity = 200\n\
             drop_policy = \"drop-all\"\n\
             disconnect_unhealthy = true\n",
        )
        .unwrap();
        let mut expected = Config::default();
        expected.egress.buffer_capacity = 200;
        expected.egress.drop_policy = EgressDropPolicy::DropAll;
        expected.egress.disconnect_unhealthy = true;
        assert_eq!(config, expected);
        assert_eq!(
            error("[egress]\nbuffer_capacity = -1").to_string(),
            "egress.buffer_capacity must be in 1..=1048576, got -1"
        );
        assert_eq!(
            error("[egress]\ndrop_policy = \"drop-some\"").to_string(),
            "egress.drop_policy must be in {drop-oldest, drop-newest, block, drop-all}, \
             got \"drop-some\""
        );
        // Ranges that depend on another field are checked once both are known.
        assert_eq!(
            error("[egress]\npause_percent = 60").to_string(),
            "egress.throttle_percent must be in 1..=59, got 70"
        );
        assert_eq!(
            error("[egress]\nthrottle_delay_min_ns = 600_000_000").to_string(),
            "egress.throttle_delay_min_ns must be in 0..=500000000, got 600000000"
        );
        assert_eq!(error("[egress]\npause_ns = 1").field, "egress.pause_ns");
        assert_eq!(
            error("[egress]\ndisconnect_unhealthy = \"yes\"").field,
            "egress.disconnect_unhealthy"
        );
    }

    #[test]
    fn net_settings_load_and_errors_name_the_field() {
        let config = Config::from_toml_str(
            "[net]\n\
             max_connections = 500\n\
             max_frame_bytes = 4096\n\
             hello_timeout_ns = 2_000_000_000\n\
             frames_per_turn_max = 64\n",
        )
        .unwrap();
        let mut expected = Config::default();
        expected.net.max_connections = 500;
        expected.net.max_frame_bytes = 4096;
        expected.net.hello_timeout_ns = 2_000_000_000;
        expected.net.frames_per_turn_max = 64;
        assert_eq!(config, expected);
        let server = crate::net::server::ServerConfig::from_config(&config);
        assert_eq!(server.net, config.net);
        assert_eq!(server.frame_limit().max_frame_bytes(), 4096);
        assert_eq!(server.egress, config.egress);
        assert_eq!(
            error("[net]\nmax_connections = 0").to_string(),
            "net.max_connections must be in 1..=16777216, got 0"
        );
        assert_eq!(
            error("[net]\nmax_frame_bytes = 100").to_string(),
            "net.max_frame_bytes must be in 512..=16777216, got 100"
        );
        assert_eq!(
            error("[net]\nframe_timeout_ns = -5").to_string(),
            "net.frame_timeout_ns must be in 1000000..=3600000000000, got -5"
        );
        assert_eq!(
            error("[net]\nevents_per_turn_max = 100000").field,
            "net.events_per_turn_max"
        );
        assert_eq!(error("[net]\nlisten = 1").field, "net.listen");
        // The builder side checks the same ranges.
        let mut config = Config::default();
        config.net.write_buffer_bytes_max = 10;
        assert_eq!(
            config.validate().unwrap_err().field,
            "net.write_buffer_bytes_max"
        );
    }

    #[test]
    fn an_empty_file_is_production_and_a_profile_alone_is_that_profile() {
        assert_eq!(Config::from_toml_str(""), Ok(Config::default()));
        for profile in Profile::ALL {
            let text = format!("profile = {:?}", profile.name());
            assert_eq!(
                Config::from_toml_str(&text),
                Ok(Config::for_profile(profile))
            );
        }
    }

    #[test]
    fn a_partial_file_overrides_only_what_it_names() {
        let config = Config::from_toml_str(
            "profile = \"development\"\n\
             [caps]\n\
             action = \"disconnect\"\n\
             priority_threshold_percent = { P3 = 40 }\n\
             [caps.role_messages]\n\
             sse = 123\n",
        )
        .unwrap();
        let mut expected = Config::for_profile(Profile::Development);
        expected.caps.action = CapAction::Disconnect;
        expected.caps.priority_threshold_percent[Priority::P3.index()] = 40;
        expected.caps.role_messages[Role::Sse.index()] = 123;
        assert_eq!(config, expected);
    }

    #[test]
    fn wait_numbers_come_from_the_base_or_the_defaults() {
        // Development spins then parks for up to 1000 us; a file changing only the spins
        // keeps the rest.
        let config =
            Config::from_toml_str("profile = \"development\"\n[wait]\nspin_iterations = 5\n")
                .unwrap();
        assert_eq!(
            config.wait,
            WaitStrategy::SpinThenPark {
                spin_iterations: 5,
                yield_iterations: 64,
                park_timeout_us: 1000,
            }
        );
        let config =
            Config::from_toml_str("[wait]\nstrategy = \"spin-then-park\"\nyield_iterations = 3")
                .unwrap();
        assert_eq!(
            config.wait,
            WaitStrategy::SpinThenPark {
                spin_iterations: DEFAULT_PARK_SPINS,
                yield_iterations: 3,
                park_timeout_us: DEFAULT_PARK_TIMEOUT_US,
            }
        );
        let config = Config::from_toml_str("[wait]\nstrategy = \"spin-then-yield\"").unwrap();
        assert_eq!(
            config.wait,
            WaitStrategy::SpinThenYield {
                spin_iterations: DEFAULT_YIELD_SPINS
            }
        );
        assert_eq!(
            error("[wait]\nspin_iterations = 5").field,
            "wait.spin_iterations"
        );
        assert_eq!(
            error("[wait]\nstrategy = \"spin-then-yield\"\npark_timeout_us = 5").to_string(),
            "wait.park_timeout_us must be in (unset: strategy \"spin-then-yield\" takes only \
             spin_iterations), got 5"
        );
        assert_eq!(
            error("[wait]\nstrategy = \"spin-then-park\"\npark_timeout_us = 0").to_string(),
            "wait.park_timeout_us must be in 1..=1000000, got 0"
        );
    }

    #[test]
    fn numbers_are_range_checked_before_they_are_narrowed() {
        assert_eq!(
            error("[rate]\nper_connection_per_sec = -5").to_string(),
            "rate.per_connection_per_sec must be in 1..=1000000000, got -5"
        );
        assert_eq!(
            error("[rate]\nburst = 0").to_string(),
            "rate.burst must be in 1..=4294967295, got 0"
        );
        assert_eq!(
            error("[rate]\nburst = 4294967296").to_string(),
            "rate.burst must be in 1..=4294967295, got 4294967296"
        );
        assert_eq!(
            error("shards = -1").to_string(),
            "shards must be in 0..=256, got -1"
        );
        assert_eq!(
            error("[[tenants]]\ntenant = -1").to_string(),
            "tenants[0].tenant must be in 0..=4294967295, got -1"
        );
        assert_eq!(
            error("[breaker]\nerror_rate_max_percent = nan").to_string(),
            "breaker.error_rate_max_percent must be in 0..=100, got NaN"
        );
        assert_eq!(
            error("[caps]\npriority_threshold_percent = [100, 95, 96, 60]").to_string(),
            "caps.priority_threshold_percent.P2 must be in 1..=95, got 96"
        );
        // Ranges that depend on another field are checked once both are known.
        assert_eq!(
            error("[rate]\nper_connection_per_sec = 40").to_string(),
            "rate.adaptive_floor_per_sec must be in 1..=40, got 50"
        );
    }

    #[test]
    fn unknown_keys_are_named_with_their_path_and_the_known_keys() {
        assert_eq!(
            error("[rate]\nbogus = 1").to_string(),
            "rate.bogus must be in {per_connection_per_sec, burst, adaptive, \
             adaptive_latency_threshold_ns, adaptive_cut_percent, adaptive_recover_percent, \
             adaptive_floor_per_sec, adaptive_interval_ns}, got an unknown key"
        );
        assert_eq!(error("shard = 1").field, "shard");
        assert_eq!(error("[bogus]\nx = 1").field, "bogus");
        assert_eq!(error("rate.bogus = 1").field, "rate.bogus");
        assert_eq!(error("[rate]\nbogus.deeper = 1").field, "rate.bogus");
        assert_eq!(
            error("[caps.role_messages]\nsesion = 1").field,
            "caps.role_messages.sesion"
        );
        assert_eq!(
            error("[caps.priority_threshold_percent]\nP4 = 1").field,
            "caps.priority_threshold_percent.P4"
        );
        assert_eq!(
            error("[[tenants]]\ntenant = 1\n[[tenants]]\ntenant = 2\nceiling = \"P1\"").field,
            "tenants[1].ceiling"
        );
    }

    #[test]
    fn wrong_types_and_names_are_errors_on_the_field() {
        assert_eq!(
            error("[rate]\nburst = \"ten\"").to_string(),
            "rate.burst must be in integers, got string \"ten\""
        );
        assert_eq!(
            error("[levels]\nrate_limit = 1").to_string(),
            "levels.rate_limit must be in {true, false}, got integer `1`"
        );
        assert_eq!(error("rate = 5").field, "rate");
        assert_eq!(error("[rate]\nburst = 1e99").field, "rate.burst");
        assert_eq!(
            error("[rate]\nburst = 99999999999999999999").field,
            "rate.burst"
        );
        assert_eq!(
            error("[caps]\naction = \"explode\"").to_string(),
            "caps.action must be in {refuse, drop, disconnect}, got \"explode\""
        );
        assert_eq!(
            error("[caps]\ndrop_policy = \"drop-all\"").field,
            "caps.drop_policy"
        );
        assert_eq!(
            error("[wait]\nstrategy = \"spin\"").to_string(),
            "wait.strategy must be in {adaptive, busy-spin, spin-then-yield, spin-then-park}, \
             got \"spin\""
        );
        assert_eq!(
            error("[[tenants]]\ntenant = 1\npriority_ceiling = \"P4\"").to_string(),
            "tenants[0].priority_ceiling must be in {P0, P1, P2, P3}, got \"P4\""
        );
        assert_eq!(
            error("[caps]\npriority_threshold_percent = [100, 90]").field,
            "caps.priority_threshold_percent"
        );
        assert_eq!(
            error("[caps]\npriority_threshold_percent = [100, 90, \"x\", 10]").field,
            "caps.priority_threshold_percent.P2"
        );
        assert_eq!(
            error("profile = \"dev\"").to_string(),
            "profile must be in {development, staging, production, high-throughput}, got \"dev\""
        );
        assert_eq!(error("profile = 3").field, "profile");
    }

    #[test]
    fn text_that_is_not_toml_names_the_position() {
        let error = error("shards = 1\n[rate\n");
        assert!(error.field.starts_with("line 2, column "), "{error}");
        assert_eq!(error.allowed, "TOML syntax");
        // A key given twice is a syntax error too.
        assert!(error_field_starts("shards = 1\nshards = 2", "line 2"));
    }

    fn error_field_starts(text: &str, prefix: &str) -> bool {
        error(text).field.starts_with(prefix)
    }

    #[test]
    fn tenants_load_and_replace_the_profiles_list() {
        let config = Config::from_toml_str(
            "[[tenants]]\n\
             tenant = 7\n\
             max_pending = 5000\n\
             priority_ceiling = \"P1\"\n\
             [[tenants]]\n\
             tenant = 8\n",
        )
        .unwrap();
        assert_eq!(
            config.tenants,
            vec![
                TenantConfig {
                    tenant: TenantId(7),
                    max_pending: Some(5000),
                    priority_ceiling: Priority::P1,
                },
                TenantConfig {
                    tenant: TenantId(8),
                    max_pending: None,
                    priority_ceiling: Priority::P0,
                },
            ]
        );
        assert_eq!(
            error("[[tenants]]\nmax_pending = 3").to_string(),
            "tenants[0].tenant must be in 0..=4294967295 (required), got nothing"
        );
        assert_eq!(
            error("[[tenants]]\ntenant = 1\n[[tenants]]\ntenant = 1").field,
            "tenants[1].tenant"
        );
        assert_eq!(Config::from_toml_str("tenants = []").unwrap().tenants, []);
    }

    #[test]
    fn a_missing_file_is_an_io_error_naming_it() {
        let path = Path::new("/nonexistent/spillway.toml");
        let error = Config::from_toml_file(path).unwrap_err();
        assert!(matches!(&error, ConfigLoadError::Io { path: p, .. } if p == path));
        assert!(error
            .to_string()
            .starts_with("cannot read /nonexistent/spillway.toml: "));
    }
}
