//! Every setting of the engine in one [`Config`], with SPEC's defaults (the production
//! profile) and a [`Config::validate`] that names the field and its allowed range.
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

use crate::message::{Priority, Role, TenantId};

/// The most shards an engine runs; indices fit in a `u8` on the wire and in ring tables.
pub const SHARDS_MAX: usize = 256;
/// The most producer threads (`Ingress` handles) alive at once, per engine.
pub const INGRESSES_MAX: usize = 256;

/// All settings. `Default` is SPEC's production profile.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
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
    /// Most handlers a shard runs per loop before it looks at its rings again.
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
}

impl Default for Config {
    fn default() -> Self {
        Self {
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
    /// Busy-spin when every engine thread has a core of its own, spin-then-park otherwise
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

fn check<T: PartialOrd + core::fmt::Display>(
    field: &str,
    value: T,
    low: T,
    high: T,
) -> Result<(), ConfigError> {
    if value < low || value > high {
        return Err(ConfigError {
            field: field.to_string(),
            allowed: format!("{low}..={high}"),
            got: value.to_string(),
        });
    }
    Ok(())
}

impl Config {
    /// Checks every value; the first bad one is named in the error.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check("shards", self.shards, 0, SHARDS_MAX)?;
        check("ring_capacity", self.ring_capacity, 2, 1 << 20)?;
        check("admission_batch_max", self.admission_batch_max, 1, 1 << 16)?;
        check("handler_batch_max", self.handler_batch_max, 1, 1 << 16)?;
        check(
            "connections_per_shard_max",
            self.connections_per_shard_max,
            1,
            1 << 24,
        )?;
        if let WaitStrategy::SpinThenPark {
            park_timeout_us, ..
        } = self.wait
        {
            check("wait.park_timeout_us", park_timeout_us, 1, 1_000_000)?;
        }

        let rate = &self.rate;
        check(
            "rate.per_connection_per_sec",
            rate.per_connection_per_sec,
            1,
            1_000_000_000,
        )?;
        check("rate.burst", rate.burst, 1, u32::MAX)?;
        check(
            "rate.adaptive_cut_percent",
            rate.adaptive_cut_percent,
            1,
            99,
        )?;
        check(
            "rate.adaptive_recover_percent",
            rate.adaptive_recover_percent,
            1,
            100,
        )?;
        check(
            "rate.adaptive_floor_per_sec",
            rate.adaptive_floor_per_sec,
            1,
            rate.per_connection_per_sec,
        )?;
        check(
            "rate.adaptive_interval_ns",
            rate.adaptive_interval_ns,
            1_000_000,
            3_600_000_000_000,
        )?;
        check(
            "rate.adaptive_latency_threshold_ns",
            rate.adaptive_latency_threshold_ns,
            1,
            3_600_000_000_000,
        )?;

        let caps = &self.caps;
        check(
            "caps.connection_messages",
            caps.connection_messages,
            1,
            1 << 24,
        )?;
        check("caps.connection_bytes", caps.connection_bytes, 1, 1 << 40)?;
        check("caps.handler_queue", caps.handler_queue, 1, 1 << 24)?;
        for role in Role::ALL {
            check(
                &format!("caps.role_messages.{role}"),
                caps.role_messages[role.index()],
                1,
                1 << 24,
            )?;
        }
        check(
            "caps.backpressure_percent",
            caps.backpressure_percent,
            1,
            100,
        )?;
        let mut previous_percent = 100;
        for priority in Priority::ALL {
            let percent = caps.priority_threshold_percent[priority.index()];
            // Each priority's threshold lies between 1% and the threshold of the priority
            // above it, so a more urgent message never meets a lower cap.
            check(
                &format!("caps.priority_threshold_percent.{priority}"),
                percent,
                1,
                previous_percent,
            )?;
            previous_percent = percent;
        }

        for (index, tenant) in self.tenants.iter().enumerate() {
            if let Some(max_pending) = tenant.max_pending {
                check(
                    &format!("tenants[{index}].max_pending"),
                    max_pending,
                    1,
                    1 << 30,
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
            1,
            3_600_000_000_000,
        )?;
        check(
            "breaker.error_rate_max_percent",
            breaker.error_rate_max_percent,
            0.0,
            100.0,
        )?;
        check(
            "breaker.window_requests",
            breaker.window_requests,
            10,
            1 << 20,
        )?;
        check(
            "breaker.min_samples",
            breaker.min_samples,
            1,
            breaker.window_requests,
        )?;
        check(
            "breaker.recovery_timeout_ns",
            breaker.recovery_timeout_ns,
            1,
            86_400_000_000_000,
        )?;
        check(
            "breaker.good_period_ns",
            breaker.good_period_ns,
            1,
            86_400_000_000_000,
        )?;
        Ok(())
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
    fn automatic_shard_count_leaves_a_core_for_control_on_bigger_machines() {
        let config = Config::default();
        assert_eq!(config.effective_shards(1), 1);
        assert_eq!(config.effective_shards(2), 1);
        assert_eq!(config.effective_shards(16), 15);
    }
}
