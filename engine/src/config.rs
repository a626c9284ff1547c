//! Every setting of the engine in one [`Config`], with SPEC's defaults (the production
//! profile, `config/production.toml`) and a [`Config::validate`] that names the field and
//! its allowed range.
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

use core::fmt::Display;
use core::ops::RangeInclusive;
use std::sync::LazyLock;

use serde::{Deserialize, Serialize};

use crate::message::{Priority, Role, TenantId};

/// `check_fields!(config, "prefix."; a.b in RANGE; ...)` checks `config.a.b` against
/// `RANGE`, naming the field `prefix.a.b`: a field's path is its access path.
macro_rules! check_fields {
    ($config:expr, $prefix:literal; $($first:ident $(.$rest:ident)* in $range:expr;)*) => {$(
        check(
            concat!($prefix, stringify!($first) $(, ".", stringify!($rest))*),
            $config.$first $(.$rest)*,
            $range,
        )?;
    )*};
}

mod egress;
mod file;
mod global;
mod profile;

pub use egress::{EgressConfig, EgressDropPolicy};
pub use file::ConfigLoadError;
pub use global::{GlobalConfig, GlobalTenantConfig, OnUnavailable};
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
/// A Reply frame's bytes before its response or detail (protocol version 2): the 8-byte
/// header and 20 bytes of fixed fields. A response may be the frame limit less this.
///
/// ```
/// use spillway::config::REPLY_FRAME_FIXED_BYTES;
/// use spillway::message::MessageId;
/// use spillway::net::protocol::{ProtocolVersion, ServerFrame};
/// use spillway::outcome::Outcome;
///
/// let reply = ServerFrame::Reply {
///     message_id: MessageId(42),
///     outcome: Outcome::Delivered,
///     response: b"world",
///     detail: "",
/// };
/// let mut v2 = Vec::new();
/// assert_eq!(reply.encode_in(ProtocolVersion::V2, &mut v2), REPLY_FRAME_FIXED_BYTES as usize + 5);
/// assert_eq!(&v2[REPLY_FRAME_FIXED_BYTES as usize..], b"world");
/// // Version 1 sends the fixed part alone.
/// let mut v1 = Vec::new();
/// assert_eq!(reply.encode_in(ProtocolVersion::V1, &mut v1), REPLY_FRAME_FIXED_BYTES as usize);
/// ```
pub const REPLY_FRAME_FIXED_BYTES: u32 = 28;

/// All settings. `Default` is SPEC's production profile; [`Config::for_profile`] gives the
/// others. A file has the same keys, in this order when printed: plain values, then one
/// table per section, the tenants last.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The profile these settings started from. Informational: the engine reads only the
    /// values below, and a file's `profile` key names the base its other keys override.
    pub profile: Profile,
    /// Data shards (worker threads); `0` picks one per available core, less one for the
    /// control plane when there are more than two cores.
    #[serde(deserialize_with = "range::shards")]
    pub shards: usize,
    /// Pin each shard to its own core with core_affinity.
    pub pinning: bool,
    /// Slots in each submission ring (producer -> shard) and each completion ring back.
    #[serde(deserialize_with = "range::ring_capacity")]
    pub ring_capacity: usize,
    /// Most messages a shard takes from one submission ring per loop, so one producer
    /// cannot starve the others or the control ring.
    #[serde(deserialize_with = "range::batch")]
    pub admission_batch_max: usize,
    /// Most handlers a shard runs in one batch, between looks at its control ring. Batches
    /// are sized by time (as many as fit in about 5 µs at the mean handler cost, at least
    /// one), so this cap binds only for handlers cheaper than about 80 ns.
    #[serde(deserialize_with = "range::batch")]
    pub handler_batch_max: usize,
    /// Most connections whose state a shard keeps; idle ones are evicted to make room.
    #[serde(deserialize_with = "range::connections_per_shard")]
    pub connections_per_shard_max: usize,
    /// On shutdown, run what is queued (`true`) or cancel it (`false`).
    pub shutdown_finishes_queued: bool,
    /// How an idle shard waits for work.
    pub wait: WaitStrategy,
    /// Kill switches: each admission level can be turned off.
    pub levels: Levels,
    /// Level 1: per-connection token bucket and its adaptive controller.
    pub rate: RateConfig,
    /// Level 2: hard caps on pending work.
    pub caps: CapsConfig,
    /// Level 3: the global circuit breaker.
    pub breaker: BreakerConfig,
    /// The control-plane thread and its rings.
    pub control: ControlConfig,
    /// The overload monitor.
    pub monitor: MonitorConfig,
    /// Egress flow control of each connection's reply stream (SPEC 4), for the TCP front end.
    pub egress: EgressConfig,
    /// The TCP front end's limits and timers (`spillway serve`,
    /// [`ServerConfig::from_config`](crate::net::server::ServerConfig::from_config)).
    pub net: NetConfig,
    /// Worker processes that serve the messages (`spillway serve --workers`,
    /// `docs/WORKERS.md`): their limits and the answer deadline.
    pub workers: WorkersConfig,
    /// The operator's HTTP endpoint (`spillway::admin`): metrics, health, drain, breaker,
    /// limits. Off unless `listen` is set (`spillway serve` sets it).
    pub admin: AdminConfig,
    /// Fleet-wide tenant rates shared through Redis leases (`[global]`); off unless it
    /// names a Redis server and a tenant.
    pub global: GlobalConfig,
    /// Per-tenant aggregate caps and priority ceilings.
    #[serde(default)]
    pub tenants: Vec<TenantConfig>,
}

/// Production's settings, read from `config/production.toml` on first use.
static PRODUCTION: LazyLock<Config> = LazyLock::new(|| Config::for_profile(Profile::Production));

/// SPEC's defaults: the production profile, whose file `config/production.toml` gives every
/// setting once, with a comment on what it means.
impl Default for Config {
    fn default() -> Self {
        PRODUCTION.clone()
    }
}

/// `SECTION: Type` makes `Type::default()` production's `[SECTION]`.
macro_rules! production_sections {
    ($($section:ident: $type:ty,)*) => {$(
        impl Default for $type {
            fn default() -> Self {
                PRODUCTION.$section.clone()
            }
        }
    )*};
}

production_sections! {
    levels: Levels,
    rate: RateConfig,
    caps: CapsConfig,
    breaker: BreakerConfig,
    control: ControlConfig,
    monitor: MonitorConfig,
    egress: EgressConfig,
    net: NetConfig,
    workers: WorkersConfig,
    admin: AdminConfig,
    global: GlobalConfig,
}

/// Kill switches for the three admission levels (SPEC 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Levels {
    /// Level 1, the per-connection token bucket.
    pub rate_limit: bool,
    /// Level 2, the caps on pending work (connection, tenant, role, handler queue).
    pub queue_caps: bool,
    /// Level 3, the circuit breaker (a forced state from the control plane still applies).
    pub circuit_breaker: bool,
}

/// Level 1 settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateConfig {
    /// Messages per second per connection (SPEC: 500).
    #[serde(deserialize_with = "range::rate_per_sec")]
    pub per_connection_per_sec: u32,
    /// Burst in messages (SPEC: twice the rate).
    #[serde(deserialize_with = "range::burst")]
    pub burst: u32,
    /// Lower a connection's rate when its latency is high.
    pub adaptive: bool,
    /// Latency above which the adaptive controller cuts, in ns (SPEC: 100 ms).
    #[serde(deserialize_with = "range::latency_ns")]
    pub adaptive_latency_threshold_ns: u64,
    /// Cut per adjustment, percent (SPEC: 10).
    #[serde(deserialize_with = "range::cut_percent")]
    pub adaptive_cut_percent: u32,
    /// Recovery per interval, percent (SPEC: 5).
    #[serde(deserialize_with = "range::percent")]
    pub adaptive_recover_percent: u32,
    /// The rate is never cut below this, messages per second.
    #[serde(deserialize_with = "range::rate_per_sec")]
    pub adaptive_floor_per_sec: u32,
    /// Length of an adjustment interval, in ns.
    #[serde(deserialize_with = "range::adaptive_interval_ns")]
    pub adaptive_interval_ns: u64,
}

/// What happens to a message that meets a full cap.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum QueueDropPolicy {
    /// Evict the connection's oldest queued message of the lowest priority not above the
    /// incoming one (and, at a role cap, of the same role), then admit the new one; if there
    /// is none to evict, refuse.
    DropOldest,
    /// Drop the incoming message (it completes `Dropped`).
    DropNewest,
}

/// Level 2 settings. Caps are counts of pending (admitted, not yet finished) messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapsConfig {
    /// Pending messages per connection (SPEC: 1000).
    #[serde(deserialize_with = "range::cap_messages")]
    pub connection_messages: u32,
    /// Pending payload bytes per connection (SPEC: 50 MiB).
    #[serde(deserialize_with = "range::cap_bytes")]
    pub connection_bytes: u64,
    /// Pending messages per role on one shard, in [`Role::ALL`] order
    /// (SPEC: session 10000, sse 5000, task_worker 1000, tool_executor 500, transport 2000,
    /// default 1000). In a file, a table keyed by [`Role::name`].
    #[serde(with = "file::role_messages")]
    pub role_messages: [u32; Role::COUNT],
    /// Pending messages on one shard's handler queue, all roles together.
    #[serde(deserialize_with = "range::cap_messages")]
    pub handler_queue: u32,
    /// Fill percentage of the handler queue at which the shard raises backpressure (SPEC: 80).
    #[serde(deserialize_with = "range::percent")]
    pub backpressure_percent: u32,
    /// Fill percentage of any cap from which each priority is refused, in P0..P3 order
    /// (SPEC: 100, 95, 80, 60); must not increase from P0 to P3. In a file, an array of four
    /// or a table keyed `P0`..`P3` that overrides only the priorities it names.
    #[serde(deserialize_with = "file::thresholds")]
    pub priority_threshold_percent: [u32; Priority::COUNT],
    /// What happens at a cap.
    pub action: CapAction,
    /// Which message goes under [`CapAction::Drop`].
    pub drop_policy: QueueDropPolicy,
}

/// One tenant's settings. In a file, one `[[tenants]]` table; only `tenant` is required.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    /// Which tenant.
    #[serde(with = "file::TenantIdNumber")]
    pub tenant: TenantId,
    /// Aggregate cap on the tenant's pending messages across all shards; `None`: no cap.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "range::tenant_pending"
    )]
    pub max_pending: Option<u32>,
    /// The most urgent priority the tenant's messages may claim; higher claims are lowered
    /// to it and counted. Absent from a file: P0, no ceiling.
    #[serde(default = "file::no_ceiling", with = "file::PriorityName")]
    pub priority_ceiling: Priority,
}

/// Level 3 settings.
///
/// What the breaker counts: each shard keeps a window of its last `window_requests`
/// messages that ran and count against the service: delivered, failed with
/// [`HandlerError`](crate::outcome::FailureReason::HandlerError) (the handler's
/// `HandlerError::failed`), [`HandlerPanic`](crate::outcome::FailureReason::HandlerPanic).
/// A message the handler refused as the client's mistake
/// ([`InvalidRequest`](crate::outcome::FailureReason::InvalidRequest),
/// `HandlerError::invalid`) is not in the window at all, so malformed input from one client
/// cannot open the breaker for everyone; nor is a message that did not run (refused, shed,
/// cancelled, dropped). Its latency runs from admission to the end of its handler batch.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerConfig {
    /// Open when the window's p95 latency (admission to completion) is over this, in ns
    /// (SPEC: 200 ms).
    #[serde(deserialize_with = "range::latency_ns")]
    pub p95_latency_max_ns: u64,
    /// Open when the window's error rate (service failures and panics over the window's
    /// messages) is over this percentage (SPEC: 1).
    pub error_rate_max_percent: f64,
    /// Rolling window: the last this many finished requests, per shard (SPEC: 1000).
    #[serde(deserialize_with = "range::window_requests")]
    pub window_requests: u32,
    /// No verdict until the window holds at least this many.
    #[serde(deserialize_with = "range::min_samples")]
    pub min_samples: u32,
    /// Open -> half-open after this long, in ns (SPEC: 60 s).
    #[serde(deserialize_with = "range::breaker_period_ns")]
    pub recovery_timeout_ns: u64,
    /// Half-open -> closed once metrics stayed good this long, in ns (SPEC: 30 s).
    #[serde(deserialize_with = "range::breaker_period_ns")]
    pub good_period_ns: u64,
    /// Trip when a queue reaches 100% of its cap.
    pub trip_on_full_queue: bool,
}

/// Control-plane settings (SPEC 5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlConfig {
    /// A health check slower than this is an SLO violation, in ns (SPEC: 100 ms); 1 µs to
    /// 60 s.
    #[serde(deserialize_with = "range::health_slo_ns")]
    pub health_slo_ns: u64,
    /// Slots in each control ring (control -> shard and back); 2 to 65536.
    #[serde(deserialize_with = "range::control_ring_capacity")]
    pub ring_capacity: usize,
    /// A drained connection finishes what it has queued (`true`) or cancels it (`false`).
    pub drain_finishes_queued: bool,
    /// Longest a drain waits for the connection's queued messages to finish, in ns (default
    /// 5 s); 1 ms to 1 h. At the deadline what is still queued is cancelled and the drain
    /// completes, so a drain ends in bounded time however deep the shard's backlog (under
    /// overload, fair service gives one connection a small share of the handlers).
    #[serde(deserialize_with = "range::drain_timeout_ns")]
    pub drain_timeout_ns: u64,
    /// Pin the control-plane thread to a core of its own when one is spare.
    pub pinning: bool,
    /// Scheduling niceness the control-plane thread asks for, -20 (most favoured) to 19; 0
    /// leaves it as it is. When threads outnumber cores, a busy data path would otherwise
    /// keep the control thread waiting for the scheduler for milliseconds. Best effort:
    /// without the privilege (CAP_SYS_NICE) the thread keeps its niceness, and
    /// [`Engine::control_nice`](crate::engine::Engine::control_nice) says which. The control
    /// thread never spins, so its priority costs the data path nothing while it waits.
    #[serde(deserialize_with = "range::nice")]
    pub nice: i32,
}

/// Overload-monitor settings (SPEC 5).
///
/// **Where it bites: the monitor samples.** Queue depths are read every `interval_ns` (5 s
/// by default), so an alert can come up to that long after a queue filled, and after the
/// breaker, which trips on a full queue at once from the shard, already opened. Lower the
/// interval for faster alerts (1 ms at the least; each sample reads every shard's published
/// counters, off the data path).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonitorConfig {
    /// How often every queue is sampled against its cap, in ns (SPEC: 5 s); 1 ms to 1 h.
    #[serde(deserialize_with = "range::monitor_interval_ns")]
    pub interval_ns: u64,
    /// Alerts kept (SPEC: the last 100); 1 to 100000.
    #[serde(deserialize_with = "range::monitor_history")]
    pub history: usize,
    /// Fill percentage of a cap that raises a warning (SPEC: 80); below `critical_percent`.
    #[serde(deserialize_with = "range::percent")]
    pub warning_percent: u32,
    /// Fill percentage that raises a critical alert (SPEC: 90); at most `overload_percent`.
    #[serde(deserialize_with = "range::percent")]
    pub critical_percent: u32,
    /// Fill percentage that raises an overload alert, which trips the breaker (SPEC: 100);
    /// at most 100.
    #[serde(deserialize_with = "range::percent")]
    pub overload_percent: u32,
}

/// The TCP front end's limits and timers, which
/// [`ServerConfig`](crate::net::server::ServerConfig) holds beside egress flow control. The
/// same in every profile; each field's range is checked by [`Config::validate`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetConfig {
    /// Open connections, all shards together; one more is accepted, told
    /// `too_many_connections`, and closed. 1 to 2^24.
    #[serde(deserialize_with = "range::net_connections")]
    pub max_connections: usize,
    /// The largest frame accepted, header included, announced in Welcome; 512 B to 16 MiB.
    #[serde(deserialize_with = "range::net_frame_bytes")]
    pub max_frame_bytes: u32,
    /// The longest response a handler may answer, in bytes; 0 to `max_frame_bytes` less a
    /// Reply's header and fixed fields (28 bytes), so that every response fits a Reply
    /// frame. Unset (the default), it is that most: 65,508 under the default 64 KiB frame
    /// ([`NetConfig::response_bytes_max`]). A longer response fails its message with
    /// [`FailureReason::ResponseTooLarge`](crate::outcome::FailureReason::ResponseTooLarge),
    /// decided and counted by the shard, in process as over TCP.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "range::net_response_bytes"
    )]
    pub max_response_bytes: Option<u32>,
    /// Time from accept to Hello before the connection is cut, in ns; 1 ms to 1 h.
    #[serde(deserialize_with = "range::net_timeout_ns")]
    pub hello_timeout_ns: u64,
    /// Time from a frame's first byte to its last before the connection is cut, in ns;
    /// 1 ms to 1 h. An idle connection with no partial frame is never cut.
    #[serde(deserialize_with = "range::net_timeout_ns")]
    pub frame_timeout_ns: u64,
    /// Time a closing connection has to take its last frames before it is closed
    /// regardless, in ns; 1 ms to 1 h.
    #[serde(deserialize_with = "range::net_timeout_ns")]
    pub close_timeout_ns: u64,
    /// How long a shard stops accepting after the process runs out of descriptors, in ns;
    /// 1 µs to 1 min.
    #[serde(deserialize_with = "range::net_backoff_ns")]
    pub accept_backoff_ns: u64,
    /// Connections one shard accepts per turn; 1 to 65536.
    #[serde(deserialize_with = "range::net_per_turn")]
    pub accepts_per_turn_max: usize,
    /// Bytes read from one connection per turn before the others get theirs; 1 KiB to 64 MiB.
    #[serde(deserialize_with = "range::net_buffer_bytes")]
    pub read_bytes_per_turn_max: usize,
    /// Frames one shard serves per turn, all its connections together; 1 to 65536.
    #[serde(deserialize_with = "range::net_per_turn")]
    pub frames_per_turn_max: usize,
    /// Bytes of encoded frames a connection keeps ready to write; 1 KiB to 64 MiB.
    #[serde(deserialize_with = "range::net_buffer_bytes")]
    pub write_buffer_bytes_max: usize,
    /// Readiness events taken from epoll per turn; 1 to 65536.
    #[serde(deserialize_with = "range::net_per_turn")]
    pub events_per_turn_max: usize,
    /// How often the timers are checked, in ns; 100 µs to 1 min.
    #[serde(deserialize_with = "range::net_housekeeping_ns")]
    pub housekeeping_interval_ns: u64,
}

impl NetConfig {
    /// The longest response a handler may answer: `max_response_bytes`, or when unset the
    /// most a Reply frame under `max_frame_bytes` carries.
    ///
    /// ```
    /// use spillway::config::NetConfig;
    /// let mut net = NetConfig::default();
    /// assert_eq!(net.response_bytes_max(), 65_536 - 28);
    /// net.max_frame_bytes = 1024;
    /// assert_eq!(net.response_bytes_max(), 996);
    /// net.max_response_bytes = Some(100);
    /// assert_eq!(net.response_bytes_max(), 100);
    /// ```
    pub fn response_bytes_max(&self) -> u32 {
        self.max_response_bytes
            .unwrap_or(self.max_frame_bytes.saturating_sub(REPLY_FRAME_FIXED_BYTES))
    }

    /// Checks every field against its range; the first bad one is named (`net.FIELD`).
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_fields!(self, "net.";
            max_connections in range::NET_CONNECTIONS;
            max_frame_bytes in range::NET_FRAME_BYTES;
        );
        if let Some(max_response_bytes) = self.max_response_bytes {
            check(
                "net.max_response_bytes",
                max_response_bytes,
                0..=self.max_frame_bytes.saturating_sub(REPLY_FRAME_FIXED_BYTES),
            )?;
        }
        check_fields!(self, "net.";
            hello_timeout_ns in range::NET_TIMEOUT_NS;
            frame_timeout_ns in range::NET_TIMEOUT_NS;
            close_timeout_ns in range::NET_TIMEOUT_NS;
            accept_backoff_ns in range::NET_BACKOFF_NS;
            accepts_per_turn_max in range::NET_PER_TURN;
            frames_per_turn_max in range::NET_PER_TURN;
            events_per_turn_max in range::NET_PER_TURN;
            read_bytes_per_turn_max in range::NET_BUFFER_BYTES;
            write_buffer_bytes_max in range::NET_BUFFER_BYTES;
            housekeeping_interval_ns in range::NET_HOUSEKEEPING_NS;
        );
        Ok(())
    }
}

/// The worker pool's settings (`spillway serve --workers`, `docs/WORKERS.md`). The same in
/// every profile; each field's range is checked by [`Config::validate`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkersConfig {
    /// How long a worker may hold a message without answering it, in ns; 1 ms to 1 h. Past
    /// it the worker is cut and every message it held fails `worker_timeout`.
    #[serde(deserialize_with = "range::net_timeout_ns")]
    pub answer_timeout_ns: u64,
    /// Worker connections, all shards together; one more is told `too_many_workers` and
    /// closed. 1 to 65536.
    #[serde(deserialize_with = "range::net_per_turn")]
    pub max_workers: usize,
    /// The largest frame either side sends, header included, announced in the Welcome;
    /// 512 B to 16 MiB. A message whose Work frame would be larger fails
    /// `invalid_request` (a Work carries 40 bytes besides its payload).
    #[serde(deserialize_with = "range::net_frame_bytes")]
    pub max_frame_bytes: u32,
}

impl WorkersConfig {
    /// Checks every field against its range; the first bad one is named (`workers.FIELD`).
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_fields!(self, "workers.";
            answer_timeout_ns in range::NET_TIMEOUT_NS;
            max_workers in range::NET_PER_TURN;
            max_frame_bytes in range::NET_FRAME_BYTES;
        );
        Ok(())
    }
}

/// The admin HTTP endpoint's settings (`spillway::admin`, `[admin]` in a file). Every
/// bound is there so that a misbehaving scraper or a port scan costs the admin thread a
/// bounded amount of memory and time, never the shards anything.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// `HOST:PORT` to serve on (port 0 picks one); absent: no admin endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// Open admin connections at once; one more is closed at accept. 1 to 65536.
    #[serde(deserialize_with = "range::net_per_turn")]
    pub max_connections: usize,
    /// Largest request, head and body together; a longer one is answered 413 and the
    /// connection closed. 1 KiB to 64 MiB.
    #[serde(deserialize_with = "range::net_buffer_bytes")]
    pub max_request_bytes: usize,
    /// Most header lines in a request; more is answered 431. 1 to 65536.
    #[serde(deserialize_with = "range::net_per_turn")]
    pub max_headers: usize,
    /// A connection idle this long (no request under way), in ns, is closed; 1 ms to 1 h.
    #[serde(deserialize_with = "range::net_timeout_ns")]
    pub idle_timeout_ns: u64,
    /// Tenants that get their own series in `/metrics`, the most active by submitted
    /// messages; the others are summed under `tenant="other"`, so that the number of series
    /// stays bounded whatever the number of tenants. 0 to 65536.
    #[serde(deserialize_with = "range::top_tenants")]
    pub top_tenants: usize,
}

/// The first priority whose cap threshold is out of its range, with that range: each lies
/// between 1% and the threshold of the priority above it (P0's at most 100%), so a more
/// urgent message never meets a lower cap. `None` when all are in order. The file's
/// validation, `PUT /limits` and the control plane's `Limit::PriorityThresholds` all ask
/// this.
pub fn priority_thresholds_out_of_order(
    percent: &[u32; Priority::COUNT],
) -> Option<(Priority, RangeInclusive<u32>)> {
    let mut previous = *range::PERCENT.end();
    for priority in Priority::ALL {
        let allowed = 1..=previous;
        let value = percent[priority.index()];
        if !allowed.contains(&value) {
            return Some((priority, allowed));
        }
        previous = value;
    }
    None
}

impl AdminConfig {
    /// Checks every field against its range; the first bad one is named (`admin.FIELD`).
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_fields!(self, "admin.";
            max_connections in range::NET_PER_TURN;
            max_request_bytes in range::NET_BUFFER_BYTES;
            max_headers in range::NET_PER_TURN;
            idle_timeout_ns in range::NET_TIMEOUT_NS;
            top_tenants in range::TOP_TENANTS;
        );
        Ok(())
    }
}

/// How an idle thread waits for work (LMAX Disruptor's wait strategies). In a file, the
/// `[wait]` table: `strategy` (`adaptive`, `busy-spin`, `spin-then-yield`,
/// `spin-then-park`) and the numbers that strategy takes; its `Deserialize` is in
/// `config/file.rs`, which fills in the numbers a file leaves out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "strategy", rename_all = "kebab-case")]
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

impl WaitStrategy {
    /// What [`Adaptive`](Self::Adaptive) does when every engine thread has a core of its
    /// own; also the numbers a file that picks `spin-then-yield` without them gets.
    pub const ADAPTIVE_DEDICATED: WaitStrategy = WaitStrategy::SpinThenYield {
        spin_iterations: 4096,
    };
    /// What [`Adaptive`](Self::Adaptive) does when threads outnumber cores: park after 256
    /// polls and 64 yields, for at most 50 µs (the worst extra delay of a missed wake-up);
    /// also the numbers a file that picks `spin-then-park` without them gets.
    pub const ADAPTIVE_OVERSUBSCRIBED: WaitStrategy = WaitStrategy::SpinThenPark {
        spin_iterations: 256,
        yield_iterations: 64,
        park_timeout_us: 50,
    };
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

/// The allowed range of each bounded setting, declared once. [`Config::validate`] checks
/// the ranges (those that depend on another field against that field); each range's reader
/// (the lower-case name, a `deserialize_with` of the fields it bounds) only uses it to report
/// a number from a file that does not even fit the field's type, such as a negative count.
pub(crate) mod range {
    use core::fmt::Display;
    use core::ops::RangeInclusive;

    use serde::de::{Deserializer, Error, Unexpected};
    use serde::Deserialize;

    use super::{span, FRAME_BYTES_MAX, FRAME_BYTES_MIN, REPLY_FRAME_FIXED_BYTES, SHARDS_MAX};

    const MINUTE_NS: u64 = 60_000_000_000;
    const HOUR_NS: u64 = 3_600_000_000_000;
    const DAY_NS: u64 = 86_400_000_000_000;

    /// `NAME, reader: type = range;` declares the range and its reader.
    macro_rules! ranges {
        ($($name:ident, $reader:ident: $type:ty = $range:expr;)*) => {$(
            pub(crate) const $name: RangeInclusive<$type> = $range;

            pub(crate) fn $reader<'de, D, T>(deserializer: D) -> Result<T, D::Error>
            where
                D: Deserializer<'de>,
                T: From<$type>,
            {
                fitting(deserializer, &$name).map(T::from)
            }
        )*};
    }

    ranges! {
        SHARDS, shards: usize = 0..=SHARDS_MAX;
        RING_CAPACITY, ring_capacity: usize = 2..=1 << 20;
        BATCH, batch: usize = 1..=1 << 16;
        CONNECTIONS_PER_SHARD, connections_per_shard: usize = 1..=1 << 24;
        WAIT_ITERATIONS, wait_iterations: u32 = 0..=u32::MAX;
        PARK_TIMEOUT_US, park_timeout_us: u32 = 1..=1_000_000;
        NICE, nice: i32 = -20..=19;

        RATE_PER_SEC, rate_per_sec: u32 = 1..=1_000_000_000;
        BURST, burst: u32 = 1..=u32::MAX;
        CUT_PERCENT, cut_percent: u32 = 1..=99;
        PERCENT, percent: u32 = 1..=100;
        ADAPTIVE_INTERVAL_NS, adaptive_interval_ns: u64 = 1_000_000..=HOUR_NS;
        LATENCY_NS, latency_ns: u64 = 1..=HOUR_NS;

        CAP_MESSAGES, cap_messages: u32 = 1..=1 << 24;
        CAP_BYTES, cap_bytes: u64 = 1..=1 << 40;
        TENANT_ID, tenant_id: u32 = 0..=u32::MAX;
        TENANT_PENDING, tenant_pending: u32 = 1..=1 << 30;

        WINDOW_REQUESTS, window_requests: u32 = 10..=1 << 20;
        MIN_SAMPLES, min_samples: u32 = 1..=1 << 20;
        BREAKER_PERIOD_NS, breaker_period_ns: u64 = 1..=DAY_NS;

        HEALTH_SLO_NS, health_slo_ns: u64 = 1_000..=MINUTE_NS;
        CONTROL_RING_CAPACITY, control_ring_capacity: usize = 2..=65_536;
        DRAIN_TIMEOUT_NS, drain_timeout_ns: u64 = 1_000_000..=HOUR_NS;
        MONITOR_INTERVAL_NS, monitor_interval_ns: u64 = 1_000_000..=HOUR_NS;
        MONITOR_HISTORY, monitor_history: usize = 1..=100_000;

        EGRESS_BUFFER_CAPACITY, egress_buffer_capacity: u32 = 1..=1 << 20;
        EGRESS_BUFFER_BYTES, egress_buffer_bytes: u64 = 1024..=1 << 32;
        EGRESS_PAUSE_PERCENT, egress_pause_percent: u32 = 2..=100;
        EGRESS_DELAY_NS, egress_delay_ns: u64 = 0..=MINUTE_NS;
        EGRESS_PERIOD_NS, egress_period_ns: u64 = 1_000..=MINUTE_NS;
        EGRESS_HEALTH_WINDOW_NS, egress_health_window_ns: u64 = 10_000_000..=HOUR_NS;
        EGRESS_HEALTH_MIN_OFFERED, egress_health_min_offered: u32 = 1..=1 << 24;

        NET_CONNECTIONS, net_connections: usize = 1..=1 << 24;
        NET_FRAME_BYTES, net_frame_bytes: u32 = FRAME_BYTES_MIN..=FRAME_BYTES_MAX;
        NET_RESPONSE_BYTES, net_response_bytes: u32 = 0..=FRAME_BYTES_MAX - REPLY_FRAME_FIXED_BYTES;
        NET_TIMEOUT_NS, net_timeout_ns: u64 = 1_000_000..=HOUR_NS;
        NET_BACKOFF_NS, net_backoff_ns: u64 = 1_000..=MINUTE_NS;
        NET_PER_TURN, net_per_turn: usize = 1..=1 << 16;
        NET_BUFFER_BYTES, net_buffer_bytes: usize = 1024..=1 << 26;
        NET_HOUSEKEEPING_NS, net_housekeeping_ns: u64 = 100_000..=MINUTE_NS;
        TOP_TENANTS, top_tenants: usize = 0..=1 << 16;

        GLOBAL_REFRESH_NS, global_refresh_ns: u64 = 10_000_000..=10_000_000_000;
        GLOBAL_LEASE_NS, global_lease_ns: u64 = 20_000_000..=MINUTE_NS;
        GLOBAL_TIMEOUT_NS, global_timeout_ns: u64 = 1_000_000..=10_000_000_000;
        GLOBAL_BURST_NS, global_burst_ns: u64 = 1_000_000..=10_000_000_000;
        GLOBAL_BACKOFF_NS, global_backoff_ns: u64 = 1_000_000..=MINUTE_NS;
        GLOBAL_BYTES_PER_SEC, global_bytes_per_sec: u32 = 1..=u32::MAX;
    }

    /// The one float setting's range (NaN lies in none).
    pub(crate) const ERROR_RATE_PERCENT: RangeInclusive<f64> = 0.0..=100.0;

    /// An integer of the field's type `T`; one that does not fit `T` is out of `range`.
    /// Every tree read is parsed TOML, whose integers are `i64`.
    pub(crate) fn fitting<'de, D, T>(
        deserializer: D,
        range: &RangeInclusive<T>,
    ) -> Result<T, D::Error>
    where
        D: Deserializer<'de>,
        T: TryFrom<i64> + Display,
    {
        let wide = i64::deserialize(deserializer)?;
        T::try_from(wide).map_err(|_| {
            D::Error::invalid_value(Unexpected::Other(&wide.to_string()), &span(range).as_str())
        })
    }
}

/// `start..=end`, as errors print a range.
fn span<T: Display>(range: &RangeInclusive<T>) -> String {
    format!("{}..={}", range.start(), range.end())
}

/// `Ok` unless a tenant is listed twice in `section` (`tenants`, `global.tenants`): the
/// error names the second listing and the first.
pub(crate) fn no_tenant_twice(section: &str, tenants: &[TenantId]) -> Result<(), ConfigError> {
    for (index, tenant) in tenants.iter().enumerate() {
        if let Some(duplicate) = tenants[..index].iter().position(|other| other == tenant) {
            return Err(ConfigError {
                field: format!("{section}[{index}].tenant"),
                allowed: "a tenant id not listed before".to_string(),
                got: format!("{} (also {section}[{duplicate}])", tenant.0),
            });
        }
    }
    Ok(())
}

/// `Ok` when `value` lies in `range`; NaN lies in no range.
pub(crate) fn check<T: PartialOrd + Display>(
    field: &str,
    value: T,
    range: RangeInclusive<T>,
) -> Result<(), ConfigError> {
    if range.contains(&value) {
        return Ok(());
    }
    Err(ConfigError {
        field: field.to_string(),
        allowed: span(&range),
        got: value.to_string(),
    })
}

impl Config {
    /// Checks every value; the first bad one is named in the error. A range that depends
    /// on another field (a floor under the rate, thresholds under each other) is checked
    /// after that field, against its value.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_fields!(self, "";
            shards in range::SHARDS;
            ring_capacity in range::RING_CAPACITY;
            admission_batch_max in range::BATCH;
            handler_batch_max in range::BATCH;
            connections_per_shard_max in range::CONNECTIONS_PER_SHARD;
        );
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
        check_fields!(self, "";
            rate.per_connection_per_sec in range::RATE_PER_SEC;
            rate.burst in range::BURST;
            rate.adaptive_cut_percent in range::CUT_PERCENT;
            rate.adaptive_recover_percent in range::PERCENT;
            rate.adaptive_floor_per_sec in 1..=self.rate.per_connection_per_sec;
            rate.adaptive_interval_ns in range::ADAPTIVE_INTERVAL_NS;
            rate.adaptive_latency_threshold_ns in range::LATENCY_NS;
            caps.connection_messages in range::CAP_MESSAGES;
            caps.connection_bytes in range::CAP_BYTES;
            caps.handler_queue in range::CAP_MESSAGES;
        );
        let caps = &self.caps;
        for role in Role::ALL {
            check(
                &format!("caps.role_messages.{role}"),
                caps.role_messages[role.index()],
                range::CAP_MESSAGES,
            )?;
        }
        check_fields!(self, ""; caps.backpressure_percent in range::PERCENT;);
        if let Some((priority, allowed)) =
            priority_thresholds_out_of_order(&caps.priority_threshold_percent)
        {
            check(
                &format!("caps.priority_threshold_percent.{priority}"),
                caps.priority_threshold_percent[priority.index()],
                allowed,
            )?;
        }

        for (index, tenant) in self.tenants.iter().enumerate() {
            if let Some(max_pending) = tenant.max_pending {
                check(
                    &format!("tenants[{index}].max_pending"),
                    max_pending,
                    range::TENANT_PENDING,
                )?;
            }
        }
        no_tenant_twice(
            "tenants",
            &self
                .tenants
                .iter()
                .map(|tenant| tenant.tenant)
                .collect::<Vec<_>>(),
        )?;

        check_fields!(self, "";
            breaker.p95_latency_max_ns in range::LATENCY_NS;
            breaker.error_rate_max_percent in range::ERROR_RATE_PERCENT;
            breaker.window_requests in range::WINDOW_REQUESTS;
            breaker.min_samples in 1..=self.breaker.window_requests;
            breaker.recovery_timeout_ns in range::BREAKER_PERIOD_NS;
            breaker.good_period_ns in range::BREAKER_PERIOD_NS;
            control.health_slo_ns in range::HEALTH_SLO_NS;
            control.ring_capacity in range::CONTROL_RING_CAPACITY;
            control.drain_timeout_ns in range::DRAIN_TIMEOUT_NS;
            control.nice in range::NICE;
            monitor.interval_ns in range::MONITOR_INTERVAL_NS;
            monitor.history in range::MONITOR_HISTORY;
            // warning < critical <= overload <= 100, checked from the top down so that the
            // field named is the one out of order with the levels above it.
            monitor.overload_percent in range::PERCENT;
            monitor.critical_percent in 1..=self.monitor.overload_percent;
            monitor.warning_percent in 1..=self.monitor.critical_percent - 1;
        );

        self.net.validate()?;
        self.workers.validate()?;
        self.admin.validate()?;
        self.global.validate()?;

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

    /// The `[global]` tenants with neither `[[tenants]]` settings nor a fleet-wide cap: in
    /// the tenant table for their fleet-wide rate only, they keep no pending count (it would
    /// cost a shared read-modify-write per message for no cap), so no cap can be set on
    /// them at run time.
    pub fn rate_only_tenants(&self) -> Vec<TenantId> {
        self.global
            .tenants
            .iter()
            .filter(|global| global.max_pending.is_none() && self.tenant(global.tenant).is_none())
            .map(|global| global.tenant)
            .collect()
    }

    /// Every tenant the engine keeps shared state for: `tenants`, then each `[global]`
    /// tenant not listed there (no cap, no ceiling), so that a fleet-wide rate has a place in
    /// the tenant table.
    pub fn tenant_settings(&self) -> Vec<TenantConfig> {
        let mut settings = self.tenants.clone();
        for global in &self.global.tenants {
            if self.tenant(global.tenant).is_none() {
                settings.push(TenantConfig {
                    tenant: global.tenant,
                    max_pending: None,
                    priority_ceiling: Priority::P0,
                });
            }
        }
        settings
    }
}
