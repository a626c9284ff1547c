//! Every setting of the engine in one [`Config`], with SPEC's defaults (the production
//! profile) and a [`Config::validate`] that names the field and its allowed range.
//!
//! The same `Config` comes from code (start from [`Config::default`] or
//! [`Config::for_profile`] and set fields, then hand it to
//! [`Engine::builder`](crate::engine::Engine::builder)) or from a TOML file
//! ([`Config::from_toml_file`], [`Config::from_toml_str`]) whose keys are the field paths
//! below: a file names a [`Profile`] to start from and overrides only what it names.
//! [`Config::to_toml_string`] prints every effective setting in that format.
//!
//! ```
//! use spillway::config::{CapAction, Config};
//! let mut config = Config::default();
//! config.shards = 2;
//! config.caps.action = CapAction::Disconnect;
//! config.validate().unwrap();
//! config.rate.per_connection_per_sec = 0;
//! assert_eq!(
//!     config.validate().unwrap_err().to_string(),
//!     "rate.per_connection_per_sec must be in 1..=1000000000, got 0"
//! );
//! ```
//!
//! ```
//! use spillway::config::{Config, Profile};
//! let config = Config::from_toml_str(
//!     r#"
//!     profile = "staging"
//!     shards = 4
//!
//!     [rate]
//!     per_connection_per_sec = 2000
//!     burst = 4000
//!     "#,
//! )
//! .unwrap();
//! let mut expected = Config::for_profile(Profile::Staging);
//! expected.shards = 4;
//! expected.rate.per_connection_per_sec = 2000;
//! expected.rate.burst = 4000;
//! assert_eq!(config, expected);
//!
//! let error = Config::from_toml_str("[rate]\nper_connection_per_sec = -5").unwrap_err();
//! assert_eq!(error.field, "rate.per_connection_per_sec");
//! assert_eq!(
//!     error.to_string(),
//!     "rate.per_connection_per_sec must be in 1..=1000000000, got -5"
//! );
//! ```

use core::ops::RangeInclusive;

use crate::message::{Priority, Role, TenantId};

mod egress;
mod file;
mod profile;

pub use egress::{EgressConfig, EgressDropPolicy};
pub use file::ConfigLoadError;
pub use profile::Profile;

/// The most shards an engine runs; indices fit in a `u8` on the wire and in ring tables.
pub const SHARDS_MAX: usize = 256;
/// The most producer threads (`Ingress` handles) alive at once, per engine.
pub const INGRESSES_MAX: usize = 256;
/// The smallest frame limit a TCP server may announce, header included: every server frame
/// and a Submit with some payload fit under it ([`FrameLimit`](crate::net::protocol::FrameLimit)).
pub const FRAME_BYTES_MIN: u32 = 512;
/// The largest frame limit: 16 MiB, so a buffer for one frame always fits in memory.
pub const FRAME_BYTES_MAX: u32 = 16 * 1024 * 1024;
/// The default frame limit: 64 KiB, so a Submit payload of up to 65,512 bytes.
pub const FRAME_BYTES_DEFAULT: u32 = 64 * 1024;

/// All settings. `Default` is SPEC's production profile; [`Config::for_profile`] gives the
/// others.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// The profile these settings started from. Informational: the engine reads only the
    /// values below, and a file's `profile` key names the base its other keys override.
    pub profile: Profile,
    /// Data shards (worker threads); `0` picks one per available core, less one for the
    /// control plane when there are more than two cores.
    pub shards: usize,
    /// Pin each shard to its own core with core_affinity.
    pub pinning: bool,
    /// How an idle shard waits for work.
    pub wait: WaitStrategy,
    /// Slots in each submission ring (producer -> shard) and each completion ring back.
    pub ring_capacity: usize,
    /// Most messages a shard takes from one submission ring per loop, so one producer
    /// cannot starve the others or the control ring.
    pub admission_batch_max: usize,
    /// Most handlers a shard runs in one batch, between looks at its control ring. Batches
    /// are sized by time (as many as fit in about 5 µs at the mean handler cost, at least
    /// one), so this cap binds only for handlers cheaper than about 80 ns.
    pub handler_batch_max: usize,
    /// Most connections whose state a shard keeps; idle ones are evicted to make room.
    pub connections_per_shard_max: usize,
    /// Kill switches: each admission level can be turned off.
    pub levels: Levels,
    /// Level 1: per-connection token bucket and its adaptive controller.
    pub rate: RateConfig,
    /// Level 2: hard caps on pending work.
    pub caps: CapsConfig,
    /// Per-tenant aggregate caps and priority ceilings.
    pub tenants: Vec<TenantConfig>,
    /// Level 3: the global circuit breaker.
    pub breaker: BreakerConfig,
    /// On shutdown, run what is queued (`true`) or cancel it (`false`).
    pub shutdown_finishes_queued: bool,
    /// The control-plane thread and its rings.
    pub control: ControlConfig,
    /// The overload monitor.
    pub monitor: MonitorConfig,
    /// Egress flow control of each connection's reply stream (SPEC 4), for the TCP front end.
    pub egress: EgressConfig,
    /// The TCP front end's limits and timers (`spillway serve`,
    /// [`ServerConfig::from_config`](crate::net::server::ServerConfig::from_config)).
    pub net: NetConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            profile: Profile::Production,
            shards: 0,
            pinning: false,
            wait: WaitStrategy::Adaptive,
            ring_capacity: 4096,
            admission_batch_max: 256,
            handler_batch_max: 64,
            connections_per_shard_max: 32_768,
            levels: Levels::default(),
            rate: RateConfig::default(),
            caps: CapsConfig::default(),
            tenants: Vec::new(),
            breaker: BreakerConfig::default(),
            shutdown_finishes_queued: true,
            control: ControlConfig::default(),
            monitor: MonitorConfig::default(),
            egress: EgressConfig::default(),
            net: NetConfig::default(),
        }
    }
}

/// Kill switches for the three admission levels (SPEC 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Levels {
    /// Level 1, the per-connection token bucket.
    pub rate_limit: bool,
    /// Level 2, the caps on pending work (connection, tenant, role, handler queue).
    pub queue_caps: bool,
    /// Level 3, the circuit breaker (a forced state from the control plane still applies).
    pub circuit_breaker: bool,
}

impl Default for Levels {
    fn default() -> Self {
        Self {
            rate_limit: true,
            queue_caps: true,
            circuit_breaker: true,
        }
    }
}

/// Level 1 settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateConfig {
    /// Messages per second per connection (SPEC: 500).
    pub per_connection_per_sec: u32,
    /// Burst in messages (SPEC: twice the rate).
    pub burst: u32,
    /// Lower a connection's rate when its latency is high.
    pub adaptive: bool,
    /// Latency above which the adaptive controller cuts, in ns (SPEC: 100 ms).
    pub adaptive_latency_threshold_ns: u64,
    /// Cut per adjustment, percent (SPEC: 10).
    pub adaptive_cut_percent: u32,
    /// Recovery per interval, percent (SPEC: 5).
    pub adaptive_recover_percent: u32,
    /// The rate is never cut below this, messages per second.
    pub adaptive_floor_per_sec: u32,
    /// Length of an adjustment interval, in ns.
    pub adaptive_interval_ns: u64,
}

impl Default for RateConfig {
    fn default() -> Self {
        Self {
            per_connection_per_sec: 500,
            burst: 1000,
            adaptive: true,
            adaptive_latency_threshold_ns: 100_000_000,
            adaptive_cut_percent: 10,
            adaptive_recover_percent: 5,
            adaptive_floor_per_sec: 50,
            adaptive_interval_ns: 1_000_000_000,
        }
    }
}

/// What happens to a message that meets a full cap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CapAction {
    /// Refuse it with the cap's reason and a retry-after (SPEC default).
    Refuse,
    /// Admit it by dropping queued work per [`QueueDropPolicy`], or drop it.
    Drop,
    /// Refuse it, drop everything its connection has queued, and refuse the connection's
    /// later messages with [`RefusalReason::Disconnected`](crate::outcome::RefusalReason).
    Disconnect,
}

/// Which message goes when the `drop` action meets a full cap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueDropPolicy {
    /// Evict the connection's oldest queued message of the lowest priority not above the
    /// incoming one (and, at a role cap, of the same role), then admit the new one; if there
    /// is none to evict, refuse.
    DropOldest,
    /// Drop the incoming message (it completes `Dropped`).
    DropNewest,
}

/// Level 2 settings. Caps are counts of pending (admitted, not yet finished) messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CapsConfig {
    /// Pending messages per connection (SPEC: 1000).
    pub connection_messages: u32,
    /// Pending payload bytes per connection (SPEC: 50 MiB).
    pub connection_bytes: u64,
    /// Pending messages per role on one shard, in [`Role::ALL`] order
    /// (SPEC: session 10000, sse 5000, task_worker 1000, tool_executor 500, transport 2000,
    /// default 1000).
    pub role_messages: [u32; Role::COUNT],
    /// Pending messages on one shard's handler queue, all roles together.
    pub handler_queue: u32,
    /// Fill percentage of the handler queue at which the shard raises backpressure (SPEC: 80).
    pub backpressure_percent: u32,
    /// Fill percentage of any cap from which each priority is refused, in P0..P3 order
    /// (SPEC: 100, 95, 80, 60); must not increase from P0 to P3.
    pub priority_threshold_percent: [u32; Priority::COUNT],
    /// What happens at a cap.
    pub action: CapAction,
    /// Which message goes under [`CapAction::Drop`].
    pub drop_policy: QueueDropPolicy,
}

impl Default for CapsConfig {
    fn default() -> Self {
        Self {
            connection_messages: 1000,
            connection_bytes: 50 * 1024 * 1024,
            role_messages: [10_000, 5_000, 1_000, 500, 2_000, 1_000],
            handler_queue: 20_000,
            backpressure_percent: 80,
            priority_threshold_percent: [100, 95, 80, 60],
            action: CapAction::Refuse,
            drop_policy: QueueDropPolicy::DropOldest,
        }
    }
}

/// One tenant's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TenantConfig {
    /// Which tenant.
    pub tenant: TenantId,
    /// Aggregate cap on the tenant's pending messages across all shards; `None`: no cap.
    pub max_pending: Option<u32>,
    /// The most urgent priority the tenant's messages may claim; higher claims are lowered
    /// to it and counted.
    pub priority_ceiling: Priority,
}

/// Level 3 settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BreakerConfig {
    /// Open when the window's p95 latency (admission to completion) is over this, in ns
    /// (SPEC: 200 ms).
    pub p95_latency_max_ns: u64,
    /// Open when the window's error rate is over this percentage (SPEC: 1).
    pub error_rate_max_percent: f64,
    /// Rolling window: the last this many finished requests, per shard (SPEC: 1000).
    pub window_requests: u32,
    /// No verdict until the window holds at least this many.
    pub min_samples: u32,
    /// Open -> half-open after this long, in ns (SPEC: 60 s).
    pub recovery_timeout_ns: u64,
    /// Half-open -> closed once metrics stayed good this long, in ns (SPEC: 30 s).
    pub good_period_ns: u64,
    /// Trip when a queue reaches 100% of its cap.
    pub trip_on_full_queue: bool,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            p95_latency_max_ns: 200_000_000,
            error_rate_max_percent: 1.0,
            window_requests: 1000,
            min_samples: 100,
            recovery_timeout_ns: 60_000_000_000,
            good_period_ns: 30_000_000_000,
            trip_on_full_queue: true,
        }
    }
}

/// Control-plane settings (SPEC 5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ControlConfig {
    /// A health check slower than this is an SLO violation, in ns (SPEC: 100 ms); 1 µs to
    /// 60 s.
    pub health_slo_ns: u64,
    /// Slots in each control ring (control -> shard and back); 2 to 65536.
    pub ring_capacity: usize,
    /// A drained connection finishes what it has queued (`true`) or cancels it (`false`).
    pub drain_finishes_queued: bool,
    /// Longest a drain waits for the connection's queued messages to finish, in ns (default
    /// 5 s); 1 ms to 1 h. At the deadline what is still queued is cancelled and the drain
    /// completes, so a drain ends in bounded time however deep the shard's backlog (under
    /// overload, fair service gives one connection a small share of the handlers).
    pub drain_timeout_ns: u64,
    /// Pin the control-plane thread to a core of its own when one is spare.
    pub pinning: bool,
    /// Scheduling niceness the control-plane thread asks for, -20 (most favoured) to 19; 0
    /// leaves it as it is. When threads outnumber cores, a busy data path would otherwise
    /// keep the control thread waiting for the scheduler for milliseconds. Best effort:
    /// without the privilege (CAP_SYS_NICE) the thread keeps its niceness, and
    /// [`Engine::control_nice`](crate::engine::Engine::control_nice) says which. The control
    /// thread never spins, so its priority costs the data path nothing while it waits.
    pub nice: i32,
}

impl Default for ControlConfig {
    fn default() -> Self {
        Self {
            health_slo_ns: 100_000_000,
            ring_capacity: 256,
            drain_finishes_queued: true,
            drain_timeout_ns: 5_000_000_000,
            pinning: true,
            nice: -20,
        }
    }
}

/// Overload-monitor settings (SPEC 5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MonitorConfig {
    /// How often every queue is sampled against its cap, in ns (SPEC: 5 s); 1 ms to 1 h.
    pub interval_ns: u64,
    /// Alerts kept (SPEC: the last 100); 1 to 100000.
    pub history: usize,
    /// Fill percentage of a cap that raises a warning (SPEC: 80); below `critical_percent`.
    pub warning_percent: u32,
    /// Fill percentage that raises a critical alert (SPEC: 90); at most `overload_percent`.
    pub critical_percent: u32,
    /// Fill percentage that raises an overload alert, which trips the breaker (SPEC: 100);
    /// at most 100.
    pub overload_percent: u32,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        Self {
            interval_ns: 5_000_000_000,
            history: 100,
            warning_percent: 80,
            critical_percent: 90,
            overload_percent: 100,
        }
    }
}

/// The TCP front end's limits and timers, which
/// [`ServerConfig`](crate::net::server::ServerConfig) holds beside egress flow control. The
/// same in every profile; each field's range is checked by [`Config::validate`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetConfig {
    /// Open connections, all shards together; one more is accepted, told
    /// `too_many_connections`, and closed. 1 to 2^24.
    pub max_connections: usize,
    /// The largest frame accepted, header included, announced in Welcome; 512 B to 16 MiB.
    pub max_frame_bytes: u32,
    /// Time from accept to Hello before the connection is cut, in ns; 1 ms to 1 h.
    pub hello_timeout_ns: u64,
    /// Time from a frame's first byte to its last before the connection is cut, in ns;
    /// 1 ms to 1 h. An idle connection with no partial frame is never cut.
    pub frame_timeout_ns: u64,
    /// Time a closing connection has to take its last frames before it is closed
    /// regardless, in ns; 1 ms to 1 h.
    pub close_timeout_ns: u64,
    /// How long a shard stops accepting after the process runs out of descriptors, in ns;
    /// 1 µs to 1 min.
    pub accept_backoff_ns: u64,
    /// Connections one shard accepts per turn; 1 to 65536.
    pub accepts_per_turn_max: usize,
    /// Bytes read from one connection per turn before the others get theirs; 1 KiB to 64 MiB.
    pub read_bytes_per_turn_max: usize,
    /// Frames one shard serves per turn, all its connections together; 1 to 65536.
    pub frames_per_turn_max: usize,
    /// Bytes of encoded frames a connection keeps ready to write; 1 KiB to 64 MiB.
    pub write_buffer_bytes_max: usize,
    /// Readiness events taken from epoll per turn; 1 to 65536.
    pub events_per_turn_max: usize,
    /// How often the timers are checked, in ns; 100 µs to 1 min.
    pub housekeeping_interval_ns: u64,
}

impl Default for NetConfig {
    fn default() -> Self {
        Self {
            max_connections: 16_384,
            max_frame_bytes: FRAME_BYTES_DEFAULT,
            hello_timeout_ns: 10_000_000_000,
            frame_timeout_ns: 10_000_000_000,
            close_timeout_ns: 1_000_000_000,
            accept_backoff_ns: 10_000_000,
            accepts_per_turn_max: 256,
            read_bytes_per_turn_max: 64 * 1024,
            frames_per_turn_max: 256,
            write_buffer_bytes_max: 64 * 1024,
            events_per_turn_max: 1024,
            housekeeping_interval_ns: 10_000_000,
        }
    }
}

impl NetConfig {
    /// Checks every field against its range; the error names the field (`net.…`).
    ///
    /// # Errors
    /// The first field out of its range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let net = self;
        check(
            "net.max_connections",
            net.max_connections,
            range::NET_CONNECTIONS,
        )?;
        check(
            "net.max_frame_bytes",
            net.max_frame_bytes,
            range::NET_FRAME_BYTES,
        )?;
        for (field, value) in [
            ("net.hello_timeout_ns", net.hello_timeout_ns),
            ("net.frame_timeout_ns", net.frame_timeout_ns),
            ("net.close_timeout_ns", net.close_timeout_ns),
        ] {
            check(field, value, range::NET_TIMEOUT_NS)?;
        }
        check(
            "net.accept_backoff_ns",
            net.accept_backoff_ns,
            range::NET_BACKOFF_NS,
        )?;
        for (field, value) in [
            ("net.accepts_per_turn_max", net.accepts_per_turn_max),
            ("net.frames_per_turn_max", net.frames_per_turn_max),
            ("net.events_per_turn_max", net.events_per_turn_max),
        ] {
            check(field, value, range::NET_PER_TURN)?;
        }
        for (field, value) in [
            ("net.read_bytes_per_turn_max", net.read_bytes_per_turn_max),
            ("net.write_buffer_bytes_max", net.write_buffer_bytes_max),
        ] {
            check(field, value, range::NET_BUFFER_BYTES)?;
        }
        check(
            "net.housekeeping_interval_ns",
            net.housekeeping_interval_ns,
            range::NET_HOUSEKEEPING_NS,
        )?;
        Ok(())
    }
}

/// How an idle thread waits for work (LMAX Disruptor's wait strategies).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitStrategy {
    /// Spin on the rings forever: lowest latency, burns its core. Only for machines with a
    /// core per thread.
    BusySpin,
    /// Spin `spin_iterations` times, then yield the core between polls.
    SpinThenYield {
        /// Polls before the first yield.
        spin_iterations: u32,
    },
    /// Spin, then yield, then park with a timeout; producers unpark a parked shard, and the
    /// timeout bounds the delay when a wake-up races the park.
    SpinThenPark {
        /// Polls before the first yield.
        spin_iterations: u32,
        /// Yields before the first park.
        yield_iterations: u32,
        /// Longest park, in microseconds.
        park_timeout_us: u32,
    },
    /// Spin then yield when every engine thread has a core of its own, spin-then-park otherwise
    /// (the default: spinning threads must not starve others on a small machine).
    Adaptive,
}

/// An invalid setting: the field's path, its allowed range, and the value given.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field} must be in {allowed}, got {got}")]
pub struct ConfigError {
    /// Dotted path of the field, as in the TOML file.
    pub field: String,
    /// The allowed range or values.
    pub allowed: String,
    /// The value that was given.
    pub got: String,
}

/// The allowed range of each bounded setting, shared by [`Config::validate`],
/// [`EgressConfig::validate`] and the TOML
/// loader (which range-checks a file's numbers before they are narrowed to the field's type,
/// so that `-5` is reported as out of range, not as a type error). Ranges that depend on
/// another field (a floor under the rate, thresholds under each other) are checked by
/// `validate` against that field; the loader checks their outer bound.
pub(crate) mod range {
    use super::{RangeInclusive, FRAME_BYTES_MAX, FRAME_BYTES_MIN, SHARDS_MAX};

    const HOUR_NS: u64 = 3_600_000_000_000;
    const DAY_NS: u64 = 86_400_000_000_000;

    pub(super) const SHARDS: RangeInclusive<usize> = 0..=SHARDS_MAX;
    pub(super) const RING_CAPACITY: RangeInclusive<usize> = 2..=1 << 20;
    pub(super) const BATCH: RangeInclusive<usize> = 1..=1 << 16;
    pub(super) const CONNECTIONS_PER_SHARD: RangeInclusive<usize> = 1..=1 << 24;
    pub(super) const WAIT_ITERATIONS: RangeInclusive<u32> = 0..=u32::MAX;
    pub(super) const PARK_TIMEOUT_US: RangeInclusive<u32> = 1..=1_000_000;
    pub(super) const NICE: RangeInclusive<i32> = -20..=19;

    pub(super) const RATE_PER_SEC: RangeInclusive<u32> = 1..=1_000_000_000;
    pub(super) const BURST: RangeInclusive<u32> = 1..=u32::MAX;
    pub(super) const CUT_PERCENT: RangeInclusive<u32> = 1..=99;
    pub(crate) const PERCENT: RangeInclusive<u32> = 1..=100;
    pub(super) const ADAPTIVE_INTERVAL_NS: RangeInclusive<u64> = 1_000_000..=HOUR_NS;
    pub(super) const LATENCY_NS: RangeInclusive<u64> = 1..=HOUR_NS;

    pub(super) const CAP_MESSAGES: RangeInclusive<u32> = 1..=1 << 24;
    pub(super) const CAP_BYTES: RangeInclusive<u64> = 1..=1 << 40;
    pub(super) const TENANT_ID: RangeInclusive<u32> = 0..=u32::MAX;
    pub(super) const TENANT_PENDING: RangeInclusive<u32> = 1..=1 << 30;

    pub(super) const ERROR_RATE_PERCENT: RangeInclusive<f64> = 0.0..=100.0;
    pub(super) const WINDOW_REQUESTS: RangeInclusive<u32> = 10..=1 << 20;
    pub(super) const MIN_SAMPLES: RangeInclusive<u32> = 1..=1 << 20;
    pub(super) const BREAKER_PERIOD_NS: RangeInclusive<u64> = 1..=DAY_NS;

    pub(super) const HEALTH_SLO_NS: RangeInclusive<u64> = 1_000..=60_000_000_000;
    pub(super) const CONTROL_RING_CAPACITY: RangeInclusive<usize> = 2..=65_536;
    pub(crate) const DRAIN_TIMEOUT_NS: RangeInclusive<u64> = 1_000_000..=HOUR_NS;
    pub(super) const MONITOR_INTERVAL_NS: RangeInclusive<u64> = 1_000_000..=HOUR_NS;
    pub(super) const MONITOR_HISTORY: RangeInclusive<usize> = 1..=100_000;

    const MINUTE_NS: u64 = 60_000_000_000;
    pub(crate) const EGRESS_BUFFER_CAPACITY: RangeInclusive<u32> = 1..=1 << 20;
    pub(crate) const EGRESS_PAUSE_PERCENT: RangeInclusive<u32> = 2..=100;
    pub(crate) const EGRESS_DELAY_NS: RangeInclusive<u64> = 0..=MINUTE_NS;
    pub(crate) const EGRESS_PERIOD_NS: RangeInclusive<u64> = 1_000..=MINUTE_NS;
    pub(crate) const EGRESS_HEALTH_WINDOW_NS: RangeInclusive<u64> = 10_000_000..=HOUR_NS;
    pub(crate) const EGRESS_HEALTH_MIN_OFFERED: RangeInclusive<u32> = 1..=1 << 24;

    pub(crate) const NET_CONNECTIONS: RangeInclusive<usize> = 1..=1 << 24;
    pub(crate) const NET_FRAME_BYTES: RangeInclusive<u32> = FRAME_BYTES_MIN..=FRAME_BYTES_MAX;
    pub(crate) const NET_TIMEOUT_NS: RangeInclusive<u64> = 1_000_000..=HOUR_NS;
    pub(crate) const NET_BACKOFF_NS: RangeInclusive<u64> = 1_000..=MINUTE_NS;
    pub(crate) const NET_PER_TURN: RangeInclusive<usize> = 1..=1 << 16;
    pub(crate) const NET_BUFFER_BYTES: RangeInclusive<usize> = 1024..=1 << 26;
    pub(crate) const NET_HOUSEKEEPING_NS: RangeInclusive<u64> = 100_000..=MINUTE_NS;
}

/// The error for `got` outside `range`.
fn out_of_range<T: core::fmt::Display>(
    field: &str,
    range: &RangeInclusive<T>,
    got: impl core::fmt::Display,
) -> ConfigError {
    ConfigError {
        field: field.to_string(),
        allowed: format!("{}..={}", range.start(), range.end()),
        got: got.to_string(),
    }
}

/// `Ok` when `value` lies in `range`; NaN lies in no range.
pub(crate) fn check<T: PartialOrd + core::fmt::Display>(
    field: &str,
    value: T,
    range: RangeInclusive<T>,
) -> Result<(), ConfigError> {
    if range.contains(&value) {
        Ok(())
    } else {
        Err(out_of_range(field, &range, value))
    }
}

impl Config {
    /// The settings of `profile`; [`Profile::Production`] gives [`Config::default`].
    pub fn for_profile(profile: Profile) -> Config {
        profile::settings(profile)
    }

    /// Checks every value; the first bad one is named in the error.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check("shards", self.shards, range::SHARDS)?;
        check("ring_capacity", self.ring_capacity, range::RING_CAPACITY)?;
        check(
            "admission_batch_max",
            self.admission_batch_max,
            range::BATCH,
        )?;
        check("handler_batch_max", self.handler_batch_max, range::BATCH)?;
        check(
            "connections_per_shard_max",
            self.connections_per_shard_max,
            range::CONNECTIONS_PER_SHARD,
        )?;
        if let WaitStrategy::SpinThenPark {
            park_timeout_us, ..
        } = self.wait
        {
            check(
                "wait.park_timeout_us",
                park_timeout_us,
                range::PARK_TIMEOUT_US,
            )?;
        }

        let rate = &self.rate;
        check(
            "rate.per_connection_per_sec",
            rate.per_connection_per_sec,
            range::RATE_PER_SEC,
        )?;
        check("rate.burst", rate.burst, range::BURST)?;
        check(
            "rate.adaptive_cut_percent",
            rate.adaptive_cut_percent,
            range::CUT_PERCENT,
        )?;
        check(
            "rate.adaptive_recover_percent",
            rate.adaptive_recover_percent,
            range::PERCENT,
        )?;
        check(
            "rate.adaptive_floor_per_sec",
            rate.adaptive_floor_per_sec,
            1..=rate.per_connection_per_sec,
        )?;
        check(
            "rate.adaptive_interval_ns",
            rate.adaptive_interval_ns,
            range::ADAPTIVE_INTERVAL_NS,
        )?;
        check(
            "rate.adaptive_latency_threshold_ns",
            rate.adaptive_latency_threshold_ns,
            range::LATENCY_NS,
        )?;

        let caps = &self.caps;
        check(
            "caps.connection_messages",
            caps.connection_messages,
            range::CAP_MESSAGES,
        )?;
        check(
            "caps.connection_bytes",
            caps.connection_bytes,
            range::CAP_BYTES,
        )?;
        check(
            "caps.handler_queue",
            caps.handler_queue,
            range::CAP_MESSAGES,
        )?;
        for role in Role::ALL {
            check(
                &format!("caps.role_messages.{role}"),
                caps.role_messages[role.index()],
                range::CAP_MESSAGES,
            )?;
        }
        check(
            "caps.backpressure_percent",
            caps.backpressure_percent,
            range::PERCENT,
        )?;
        let mut previous_percent = *range::PERCENT.end();
        for priority in Priority::ALL {
            let percent = caps.priority_threshold_percent[priority.index()];
            // Each priority's threshold lies between 1% and the threshold of the priority
            // above it, so a more urgent message never meets a lower cap.
            check(
                &format!("caps.priority_threshold_percent.{priority}"),
                percent,
                1..=previous_percent,
            )?;
            previous_percent = percent;
        }

        for (index, tenant) in self.tenants.iter().enumerate() {
            if let Some(max_pending) = tenant.max_pending {
                check(
                    &format!("tenants[{index}].max_pending"),
                    max_pending,
                    range::TENANT_PENDING,
                )?;
            }
            if let Some(duplicate) = self.tenants[..index]
                .iter()
                .position(|other| other.tenant == tenant.tenant)
            {
                return Err(ConfigError {
                    field: format!("tenants[{index}].tenant"),
                    allowed: "a tenant id not listed before".to_string(),
                    got: format!("{} (also tenants[{duplicate}])", tenant.tenant.0),
                });
            }
        }

        let breaker = &self.breaker;
        check(
            "breaker.p95_latency_max_ns",
            breaker.p95_latency_max_ns,
            range::LATENCY_NS,
        )?;
        check(
            "breaker.error_rate_max_percent",
            breaker.error_rate_max_percent,
            range::ERROR_RATE_PERCENT,
        )?;
        check(
            "breaker.window_requests",
            breaker.window_requests,
            range::WINDOW_REQUESTS,
        )?;
        check(
            "breaker.min_samples",
            breaker.min_samples,
            1..=breaker.window_requests,
        )?;
        check(
            "breaker.recovery_timeout_ns",
            breaker.recovery_timeout_ns,
            range::BREAKER_PERIOD_NS,
        )?;
        check(
            "breaker.good_period_ns",
            breaker.good_period_ns,
            range::BREAKER_PERIOD_NS,
        )?;

        let control = &self.control;
        check(
            "control.health_slo_ns",
            control.health_slo_ns,
            range::HEALTH_SLO_NS,
        )?;
        check(
            "control.ring_capacity",
            control.ring_capacity,
            range::CONTROL_RING_CAPACITY,
        )?;
        check("control.nice", control.nice, range::NICE)?;
        check(
            "control.drain_timeout_ns",
            control.drain_timeout_ns,
            range::DRAIN_TIMEOUT_NS,
        )?;

        let monitor = &self.monitor;
        check(
            "monitor.interval_ns",
            monitor.interval_ns,
            range::MONITOR_INTERVAL_NS,
        )?;
        check("monitor.history", monitor.history, range::MONITOR_HISTORY)?;
        // warning < critical <= overload <= 100, checked from the top down so that the
        // field named is the one out of order with the levels above it.
        check(
            "monitor.overload_percent",
            monitor.overload_percent,
            range::PERCENT,
        )?;
        check(
            "monitor.critical_percent",
            monitor.critical_percent,
            1..=monitor.overload_percent,
        )?;
        check(
            "monitor.warning_percent",
            monitor.warning_percent,
            1..=monitor.critical_percent - 1,
        )?;

        self.net.validate()?;

        self.egress.validate()
    }

    /// The shard count to run: `shards`, or the automatic choice when it is `0`.
    pub fn effective_shards(&self, cores: usize) -> usize {
        match self.shards {
            0 if cores > 2 => cores - 1,
            0 => 1,
            shards => shards,
        }
    }

    /// The tenant's settings, if it has any.
    pub fn tenant(&self, tenant: TenantId) -> Option<&TenantConfig> {
        self.tenants.iter().find(|config| config.tenant == tenant)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_are_the_spec_values() {
        let config = Config::default();
        config.validate().unwrap();
        assert_eq!(config.rate.per_connection_per_sec, 500);
        assert_eq!(config.rate.burst, 1000);
        assert_eq!(config.caps.connection_messages, 1000);
        assert_eq!(config.caps.connection_bytes, 50 << 20);
        assert_eq!(config.caps.role_messages[Role::ToolExecutor.index()], 500);
        assert_eq!(config.caps.priority_threshold_percent, [100, 95, 80, 60]);
        assert_eq!(config.breaker.window_requests, 1000);
    }

    #[test]
    fn errors_name_the_field_and_range() {
        let mut config = Config::default();
        config.caps.priority_threshold_percent = [100, 95, 96, 60];
        assert_eq!(
            config.validate().unwrap_err().to_string(),
            "caps.priority_threshold_percent.P2 must be in 1..=95, got 96"
        );
        let mut config = Config::default();
        config.rate.burst = 0;
        assert_eq!(config.validate().unwrap_err().field, "rate.burst");
        let mut config = Config::default();
        config.caps.role_messages[Role::Sse.index()] = 0;
        assert_eq!(
            config.validate().unwrap_err().field,
            "caps.role_messages.sse"
        );
        let mut config = Config::default();
        let tenant = TenantConfig {
            tenant: TenantId(4),
            max_pending: Some(10),
            priority_ceiling: Priority::P1,
        };
        config.tenants = vec![tenant, tenant];
        assert_eq!(config.validate().unwrap_err().field, "tenants[1].tenant");
    }

    #[test]
    fn control_and_monitor_are_validated() {
        let config = Config::default();
        assert_eq!(config.control.health_slo_ns, 100_000_000);
        assert_eq!(config.monitor.interval_ns, 5_000_000_000);
        assert_eq!(config.monitor.history, 100);
        let mut config = Config::default();
        config.control.health_slo_ns = 999;
        assert_eq!(
            config.validate().unwrap_err().to_string(),
            "control.health_slo_ns must be in 1000..=60000000000, got 999"
        );
        let mut config = Config::default();
        config.control.ring_capacity = 1;
        assert_eq!(
            config.validate().unwrap_err().field,
            "control.ring_capacity"
        );
        let mut config = Config::default();
        config.monitor.history = 0;
        assert_eq!(config.validate().unwrap_err().field, "monitor.history");
        let mut config = Config::default();
        config.monitor.interval_ns = 999_999;
        assert_eq!(config.validate().unwrap_err().field, "monitor.interval_ns");
        // warning < critical <= overload <= 100.
        let mut config = Config::default();
        config.monitor.warning_percent = 90;
        assert_eq!(
            config.validate().unwrap_err().to_string(),
            "monitor.warning_percent must be in 1..=89, got 90"
        );
        let mut config = Config::default();
        config.monitor.overload_percent = 85;
        assert_eq!(
            config.validate().unwrap_err().to_string(),
            "monitor.critical_percent must be in 1..=85, got 90"
        );
        let mut config = Config::default();
        config.monitor.overload_percent = 101;
        assert_eq!(
            config.validate().unwrap_err().field,
            "monitor.overload_percent"
        );
        let mut config = Config::default();
        config.monitor.critical_percent = 100;
        config.validate().unwrap();
    }

    #[test]
    fn egress_defaults_are_the_spec_values_and_are_validated() {
        let egress = Config::default().egress;
        assert_eq!(egress, EgressConfig::default());
        assert_eq!(egress.buffer_capacity, 1000);
        assert_eq!((egress.throttle_percent, egress.pause_percent), (70, 90));
        assert_eq!(egress.throttle_delay_min_ns, 0);
        assert_eq!(egress.throttle_delay_max_ns, 500_000_000);
        assert_eq!(egress.pause_duration_ns, 50_000_000);
        assert_eq!(
            (egress.warning_drop_percent, egress.unhealthy_drop_percent),
            (10, 30)
        );
        assert!(!egress.disconnect_unhealthy);
        for profile in Profile::ALL {
            assert_eq!(Config::for_profile(profile).egress, egress, "{profile}");
        }
        let mut config = Config::default();
        config.egress.buffer_capacity = 0;
        assert_eq!(
            config.validate().unwrap_err().to_string(),
            "egress.buffer_capacity must be in 1..=1048576, got 0"
        );
        let mut config = Config::default();
        config.egress.throttle_percent = 90;
        assert_eq!(
            config.validate().unwrap_err().to_string(),
            "egress.throttle_percent must be in 1..=89, got 90"
        );
        let mut config = Config::default();
        config.egress.throttle_delay_min_ns = 600_000_000;
        assert_eq!(
            config.validate().unwrap_err().field,
            "egress.throttle_delay_min_ns"
        );
        let mut config = Config::default();
        config.egress.warning_drop_percent = 31;
        assert_eq!(
            config.validate().unwrap_err().to_string(),
            "egress.warning_drop_percent must be in 1..=30, got 31"
        );
        let mut config = Config::default();
        config.egress.health_window_ns = 9_999_999;
        assert_eq!(
            config.validate().unwrap_err().field,
            "egress.health_window_ns"
        );
    }

    #[test]
    fn nan_is_in_no_range() {
        let mut config = Config::default();
        config.breaker.error_rate_max_percent = f64::NAN;
        assert_eq!(
            config.validate().unwrap_err().to_string(),
            "breaker.error_rate_max_percent must be in 0..=100, got NaN"
        );
    }

    #[test]
    fn automatic_shard_count_leaves_a_core_for_control_on_bigger_machines() {
        let config = Config::default();
        assert_eq!(config.effective_shards(1), 1);
        assert_eq!(config.effective_shards(2), 1);
        assert_eq!(config.effective_shards(16), 15);
    }
}
