//! What the control thread and a shard say to each other over their pair of SPSC rings:
//! commands one way, replies the other. A shard reads its command ring before every data
//! batch, so a command waits for at most one bounded batch whatever the data load.
//!
//! Besides its answers, a shard reports on its reply ring each breaker transition it made
//! ([`ShardReply::BreakerMoved`]), with the figures it decided by, so the control plane can
//! keep the breaker's history without the data path taking a lock.
//!
//! Vocabulary: both the control plane and the shard speak it, so it lives below both.

use core::num::NonZeroU32;

use crate::message::{ConnectionId, MessageId, Priority, Role, TenantId};

/// Slots of each reply ring kept for breaker reports: the control thread keeps at most
/// `control.ring_capacity - BREAKER_REPORT_ROOM` commands outstanding to a shard, and the
/// shard sends a report only while its reply ring holds fewer than this many replies. So at
/// most this many reports are ever in the ring unread, and every answer still finds room.
pub(crate) const BREAKER_REPORT_ROOM: usize = 1;

/// A command to one shard. `request` ties the reply to the control-plane request.
#[derive(Clone, Copy, Debug)]
pub(crate) enum ShardCommand {
    /// Reply with the shard's queue depth and connection count (health checks).
    Ping { request: u64 },
    /// Drain a connection this shard owns.
    Drain {
        request: u64,
        connection: ConnectionId,
        finish_queued: bool,
        /// When what is still queued is cancelled (engine clock, ns).
        deadline_ns: u64,
    },
    /// Cancel one queued message.
    Cancel {
        request: u64,
        connection: ConnectionId,
        message: MessageId,
    },
    /// Set a role's pending-message cap on this shard.
    SetRoleCap {
        request: u64,
        role: Role,
        max_pending: u32,
    },
    /// Set the caps' priority percentages on this shard.
    SetPriorityPercent {
        request: u64,
        percent: [u32; Priority::COUNT],
    },
    /// Set one connection's pending-message cap.
    SetConnectionCap {
        request: u64,
        connection: ConnectionId,
        max_pending: u32,
    },
    /// Set the nominal rate of a connection or of a tenant's connections.
    SetRate {
        request: u64,
        scope: RateScope,
        rate_per_sec: NonZeroU32,
    },
}

/// A shard's answer.
#[derive(Clone, Copy, Debug)]
pub(crate) enum ShardReply {
    Pong {
        request: u64,
        shard: usize,
        pending_messages: u64,
        connections: u64,
        backpressure: bool,
        /// The shard thread panicked outside a handler and now fails what reaches it.
        lost: bool,
        /// What its handler last published of its workers (`ShardContext::publish_workers`).
        workers: Option<WorkerHealth>,
    },
    Drained {
        request: u64,
        result: DrainResult,
    },
    Cancelled {
        request: u64,
        found: bool,
    },
    Applied {
        request: u64,
        changed: usize,
    },
    /// Not an answer: the shard moved the breaker (no request asked for it, so it is not
    /// counted as outstanding; see [`BREAKER_REPORT_ROOM`]).
    BreakerMoved(BreakerReport),
}

impl ShardReply {
    /// The request this answers; `None` for a report no request asked for.
    pub(crate) fn request(&self) -> Option<u64> {
        match *self {
            ShardReply::Pong { request, .. }
            | ShardReply::Drained { request, .. }
            | ShardReply::Cancelled { request, .. }
            | ShardReply::Applied { request, .. } => Some(request),
            ShardReply::BreakerMoved(_) => None,
        }
    }
}

/// One shard's worker figures in a full health check ([`ShardHealth::workers`]), as its
/// worker pool (`spillway serve --workers`, `WorkerPool`) last published them through
/// `ShardContext::publish_workers`, at most one shard turn old.
///
/// [`ShardHealth::workers`]: crate::control::ShardHealth::workers
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WorkerHealth {
    /// Worker connections open on the shard (those still to say Hello included).
    pub open: u64,
    /// Credit its workers declared, all together: the messages they may hold at once.
    pub credit_total: u64,
    /// Of it, free now: messages the shard may still send before its queue waits.
    pub credit_free: u64,
    /// Answers received on the shard, ever.
    pub answers: u64,
    /// Mean answer latency (Work sent to Answer read), ns; 0 before the first answer.
    pub answer_latency_ns_mean: u64,
    /// The longest answer latency, ns.
    pub answer_latency_ns_max: u64,
}

/// A breaker transition one shard made: it won the compare-exchange, so it is the only one
/// to report this transition.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BreakerReport {
    pub(crate) shard: usize,
    /// The breaker word the shard moved from, and the one it wrote, in
    /// `admission::breaker`'s encoding (the state and the time it was entered): this layer
    /// does not know the breaker's types, the control plane decodes them.
    pub(crate) from_word: u64,
    pub(crate) to_word: u64,
    pub(crate) trigger: ShardTrigger,
}

/// Why a shard moved the breaker, with the figures it decided by.
///
/// ```
/// use spillway::config::Config;
/// use spillway::control::{BreakerCause, ShardTrigger};
/// use spillway::handler::HandlerError;
/// use spillway::message::{ConnectionId, Message, MessageId};
/// use spillway::simulation::Simulation;
///
/// let mut config = Config::default();
/// config.levels.rate_limit = false;
/// (config.breaker.window_requests, config.breaker.min_samples) = (10, 10);
/// let failing = |_: &Message| Err::<(), _>(HandlerError::failed("backend down"));
/// let mut simulation = Simulation::new(config, failing).unwrap();
/// for id in 0..10 {
///     simulation.submit(0, Message::new(ConnectionId(id), MessageId(id))).unwrap();
/// }
/// simulation.run(0, 1_000, 10);
/// let trip = simulation.take_breaker_transitions()[0];
/// let BreakerCause::Shard { trigger: ShardTrigger::ErrorRate(figures), .. } = trip.cause else {
///     panic!("a trip by error rate, not {:?}", trip.cause);
/// };
/// assert_eq!((figures.samples, figures.failed, figures.error_rate_percent), (10, 10, 100.0));
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ShardTrigger {
    /// The error rate of the shard's window was over `breaker.error_rate_max_percent`:
    /// closed or half-open -> open.
    ErrorRate(WindowFigures),
    /// The p95 latency of the shard's window was over `breaker.p95_latency_max_ns`: closed
    /// or half-open -> open. When both limits are crossed at once the trigger is this one
    /// (SPEC 3 names latency first); the figures show both.
    P95Latency(WindowFigures),
    /// One of the shard's queues reached 100% of its cap (`breaker.trip_on_full_queue`):
    /// closed or half-open -> open.
    QueueFull {
        /// Which queue.
        queue: FullQueue,
        /// Its messages pending then.
        pending: u64,
        /// Its cap.
        cap: u64,
    },
    /// The breaker had been open for `breaker.recovery_timeout_ns`: open -> half-open.
    RecoveryTimeout {
        /// How long it had been open, ns.
        open_for_ns: u64,
        /// The setting it was held against, ns.
        recovery_timeout_ns: u64,
    },
    /// The breaker had been half-open for `breaker.good_period_ns` without the shard's
    /// window going bad: half-open -> closed.
    GoodPeriod {
        /// How long it had been half-open, ns.
        half_open_for_ns: u64,
        /// The setting it was held against, ns.
        good_period_ns: u64,
        /// The shard's window over the half-open period (it may hold fewer samples than
        /// `breaker.min_samples`: a quiet probe closes the breaker too).
        window: WindowFigures,
    },
}

impl ShardTrigger {
    /// Whether this trigger opened the breaker (a trip), rather than moved it towards
    /// closed.
    ///
    /// ```
    /// use spillway::control::{FullQueue, ShardTrigger};
    ///
    /// let full = ShardTrigger::QueueFull { queue: FullQueue::Handler, pending: 50, cap: 50 };
    /// assert!(full.is_trip());
    /// let recovered = ShardTrigger::RecoveryTimeout {
    ///     open_for_ns: 60_000_000_000,
    ///     recovery_timeout_ns: 60_000_000_000,
    /// };
    /// assert!(!recovered.is_trip());
    /// ```
    pub fn is_trip(&self) -> bool {
        matches!(
            self,
            ShardTrigger::ErrorRate(_)
                | ShardTrigger::P95Latency(_)
                | ShardTrigger::QueueFull { .. }
        )
    }
}

/// A shard's breaker window at the moment it decided: what it judged against the two
/// limits of SPEC 3.
///
/// ```
/// use spillway::config::Config;
/// use spillway::control::{BreakerCause, ShardTrigger};
/// use spillway::message::{ConnectionId, Message, MessageId};
/// use spillway::simulation::Simulation;
///
/// let mut config = Config::default();
/// config.levels.rate_limit = false;
/// (config.breaker.window_requests, config.breaker.min_samples) = (10, 10);
/// config.breaker.p95_latency_max_ns = 5_000;
/// let mut simulation = Simulation::new(config, |_: &Message| Ok(())).unwrap();
/// // Message i is admitted at i µs and all finish at 10 µs: latencies 10, 9, ..., 1 µs.
/// for id in 0..10 {
///     simulation.submit(id * 1_000, Message::new(ConnectionId(id), MessageId(id))).unwrap();
/// }
/// simulation.run(9_000, 10_000, 10);
/// let trip = simulation.take_breaker_transitions()[0];
/// let BreakerCause::Shard { trigger: ShardTrigger::P95Latency(figures), .. } = trip.cause else {
///     panic!("a trip by p95 latency, not {:?}", trip.cause);
/// };
/// assert_eq!((figures.p95_latency_ns, figures.p95_latency_max_ns), (10_000, 5_000));
/// assert_eq!((figures.samples, figures.failed), (10, 0));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct WindowFigures {
    /// Finished messages in the window (at most `breaker.window_requests`).
    pub samples: u64,
    /// Of those, the failed ones (handler error or panic).
    pub failed: u64,
    /// `failed` as a percentage of `samples` (0 with no samples).
    pub error_rate_percent: f64,
    /// The limit: `breaker.error_rate_max_percent`.
    pub error_rate_max_percent: f64,
    /// The window's 95th percentile of latency, admission to completion, ns: the sample of
    /// rank `ceil(0.95 × samples)` (0 with no samples).
    pub p95_latency_ns: u64,
    /// The limit: `breaker.p95_latency_max_ns`.
    pub p95_latency_max_ns: u64,
}

/// Which of a shard's queues reached its cap.
///
/// ```
/// use spillway::config::Config;
/// use spillway::control::{BreakerCause, FullQueue, ShardTrigger};
/// use spillway::message::{ConnectionId, Message, MessageId, Priority, Role};
/// use spillway::simulation::Simulation;
///
/// let mut config = Config::default();
/// config.levels.rate_limit = false;
/// config.caps.role_messages[Role::Session.index()] = 2;
/// let mut simulation = Simulation::new(config, |_: &Message| Ok(())).unwrap();
/// for id in 0..2 {
///     let session = Message::new(ConnectionId(id), MessageId(id))
///         .with_role(Role::Session)
///         .with_priority(Priority::P0);
///     simulation.submit(0, session).unwrap();
/// }
/// let trigger = ShardTrigger::QueueFull {
///     queue: FullQueue::Role(Role::Session),
///     pending: 2,
///     cap: 2,
/// };
/// let trip = simulation.take_breaker_transitions()[0];
/// assert_eq!(trip.cause, BreakerCause::Shard { shard: 0, trigger });
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FullQueue {
    /// The handler queue: every message pending on the shard (`caps.handler_queue`).
    Handler,
    /// The messages of one role pending on the shard (`caps.role_messages`).
    Role(Role),
}

/// How a drain ended: messages that ran to completion and messages cancelled, and whether
/// its deadline cancelled what was left.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct DrainResult {
    pub(crate) finished: u64,
    pub(crate) cancelled: u64,
    pub(crate) deadline_passed: bool,
}

/// Which connections a rate change applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RateScope {
    Connection(ConnectionId),
    Tenant(TenantId),
    /// Every connection, and the default of those added later.
    All,
}

/// The command types, in the order the control thread serves them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CommandKind {
    /// Force the breaker open or closed, or reset it.
    Breaker,
    /// Liveness, readiness or full health.
    Health,
    /// Drain a connection.
    Drain,
    /// Cancel a queued message.
    Cancel,
    /// Change a cap at run time.
    SetLimit,
    /// Change a rate at run time.
    SetRate,
    /// Register, remove or message a named component.
    Component,
}

impl CommandKind {
    /// Every kind, in serving order.
    pub const ALL: [CommandKind; 7] = [
        CommandKind::Breaker,
        CommandKind::Health,
        CommandKind::Drain,
        CommandKind::Cancel,
        CommandKind::SetLimit,
        CommandKind::SetRate,
        CommandKind::Component,
    ];
    /// Number of kinds.
    pub const COUNT: usize = Self::ALL.len();

    /// Position in serving order.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// A stable snake_case name for reports.
    pub const fn name(self) -> &'static str {
        match self {
            CommandKind::Breaker => "breaker",
            CommandKind::Health => "health",
            CommandKind::Drain => "drain",
            CommandKind::Cancel => "cancel",
            CommandKind::SetLimit => "set_limit",
            CommandKind::SetRate => "set_rate",
            CommandKind::Component => "component",
        }
    }
}
