//! The control plane (SPEC 5): a thread of its own that serves commands in priority order
//! (circuit breaker, health check, drain, cancel, then set-limit, set-rate and component
//! messages), talks to each shard over a pair of SPSC rings that the shard reads before
//! every data batch, records each command type's latency, and runs the overload monitor.
//!
//! [`Control`] is the handle: cheap to clone, usable from any thread. Each call queues a
//! request for the control thread and waits for its answer, up to the handle's timeout.
//!
//! Why control stays fast under a saturated data path: a shard looks at its control ring
//! before each data batch, and batches are bounded (`admission_batch_max` messages per
//! ring, `handler_batch_max` handlers), so a command waits for at most one batch on each
//! shard it needs, however deep the data backlog. The worst case is one batch of the
//! slowest handler: `handler_batch_max` × its longest run.
//!
//! ```
//! use spillway::control::HealthKind;
//! use spillway::engine::Engine;
//! use spillway::message::Message;
//!
//! let engine = Engine::builder().handler(|_: &Message| Ok(())).start().unwrap();
//! let health = engine.control().health(HealthKind::Full).unwrap();
//! assert!(health.live && health.ready);
//! assert_eq!(health.shards.len(), engine.shards());
//! engine.shutdown();
//! ```

mod log;
pub(crate) mod thread;

pub use crate::admission::global::{GlobalQuotas, QuotaMode};
pub use crate::command::{CommandKind, FullQueue, ShardTrigger, WindowFigures, WorkerHealth};
pub use crate::metrics::{BreakerTransitionCounts, CommandLatency, ControlStats};

use std::collections::VecDeque;
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use crate::admission::breaker::{BreakerReading, BreakerState};
use crate::command::BreakerReport;
use crate::message::{ConnectionId, MessageId, Priority, Role, TenantId};
use crate::metrics::Stats;
use crate::monitor::{Alert, AlertLevel, Monitor, QueueSample, QueueStatus};
use crate::ring::Mpmc;
use crate::shared::EngineShared;
use crate::sync::{Arc, AtomicBool, Ordering};
use crate::wait::{Handshake, Sleeper};

/// How long a [`Control`] call waits for its answer unless told otherwise.
pub const TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);
/// Breaker transitions [`Control::breaker_history`] keeps: the most recent ones. The
/// counts in the stats go on past it.
///
/// ```
/// use spillway::control::BREAKER_HISTORY_MAX;
/// use spillway::engine::Engine;
/// use spillway::message::Message;
///
/// let engine = Engine::builder().handler(|_: &Message| Ok(())).start().unwrap();
/// let control = engine.control();
/// for _ in 0..BREAKER_HISTORY_MAX {
///     control.force_open().unwrap();
///     control.reset().unwrap();
/// }
/// assert_eq!(control.breaker_history().len(), BREAKER_HISTORY_MAX);
/// let counts = control.stats().control.breaker_transitions;
/// assert_eq!(counts.total(), 2 * BREAKER_HISTORY_MAX as u64);
/// engine.shutdown();
/// ```
pub const BREAKER_HISTORY_MAX: usize = 100;
/// Requests waiting for the control thread, per command class.
pub(crate) const INBOX_CAPACITY: usize = 1024;

/// Which health check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HealthKind {
    /// Every shard answers.
    Liveness,
    /// Live, taking work (not shutting down), breaker not open, no queue overloaded.
    Readiness,
    /// Readiness plus every shard's queue depth, the breaker state and the alert level.
    Full,
}

/// A health check's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Health {
    /// Which check this answers.
    pub kind: HealthKind,
    /// Every shard answered and none is lost.
    pub live: bool,
    /// Live, not shutting down, breaker not open, no queue at overload.
    pub ready: bool,
    /// The lost shards, in shard order (see [`ShardHealth::lost`]); reported by every kind
    /// of check.
    pub lost_shards: Vec<usize>,
    /// The breaker's state.
    pub breaker: BreakerState,
    /// The highest alert level of any queue at the monitor's last sample.
    pub alert_level: AlertLevel,
    /// Per shard, in shard order (empty for liveness and readiness checks).
    pub shards: Vec<ShardHealth>,
    /// Some tenant's fleet-wide quota is on its fallback (Redis unavailable, or no lease
    /// yet): the process still serves, but that tenant's limit holds only here (or its
    /// messages are refused, under `on_unavailable = "refuse"`). Reported by every kind of
    /// check; it does not make the process unready.
    pub degraded: bool,
    /// Each tenant with a fleet-wide rate (`[global]`), in tenant order (empty for liveness
    /// and readiness checks).
    pub global: Vec<GlobalQuotaHealth>,
}

/// One tenant's fleet-wide quota in a full health check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GlobalQuotaHealth {
    /// The tenant.
    pub tenant: TenantId,
    /// How its rate applies now.
    pub mode: QuotaMode,
    /// The messages per second this process may admit under its lease (0 without one).
    pub share_per_sec: u64,
    /// The pending messages this process may hold under its lease, for a tenant with a
    /// fleet-wide cap (0 without a lease or a fleet cap).
    pub pending_share: u64,
}

/// One shard's part of a full health check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShardHealth {
    /// The shard.
    pub shard: usize,
    /// Messages queued on it.
    pub pending_messages: u64,
    /// Connections it holds.
    pub connections: u64,
    /// Whether it signals backpressure.
    pub backpressure: bool,
    /// Whether the shard is lost: its thread panicked outside a handler, failed what it
    /// held with `ShardLost`, and fails whatever reaches it until shutdown.
    pub lost: bool,
    /// Its workers, when its handler is a worker pool (`spillway serve --workers`); `None`
    /// for any other handler, and for a lost shard.
    pub workers: Option<WorkerHealth>,
}

/// What a drain did once the connection's queue was empty.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DrainReport {
    /// The drained connection, now closed: the shard has forgotten it, and a later message
    /// with its id is a new connection (see [`Control::drain`]).
    pub connection: ConnectionId,
    /// Queued messages that ran to completion during the drain.
    pub finished: u64,
    /// Queued messages cancelled by the drain: all of them when `drain_finishes_queued` is
    /// off, else those still queued at its deadline (`control.drain_timeout_ns`).
    pub cancelled: u64,
    /// Whether the deadline passed with messages still queued (they were cancelled).
    pub deadline_passed: bool,
}

/// One move of the circuit breaker, and why (see [`Control::breaker_history`]).
///
/// ```
/// use spillway::admission::breaker::BreakerState;
/// use spillway::control::{BreakerCause, BreakerTransition};
/// use spillway::engine::Engine;
/// use spillway::message::Message;
///
/// let engine = Engine::builder().handler(|_: &Message| Ok(())).start().unwrap();
/// engine.control().force_open().unwrap();
/// let history: Vec<BreakerTransition> = engine.control().breaker_history();
/// let last = history.last().unwrap();
/// assert_eq!((last.from, last.to), (BreakerState::Closed, BreakerState::ForcedOpen));
/// assert_eq!(last.cause, BreakerCause::ForcedOpen);
/// engine.shutdown();
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BreakerTransition {
    /// When the breaker entered `to`, ns on the engine clock (its `since_ns` reading).
    pub at_ns: u64,
    /// The state it left.
    pub from: BreakerState,
    /// The state it entered.
    pub to: BreakerState,
    /// Why.
    pub cause: BreakerCause,
}

impl BreakerTransition {
    /// The transition a shard reported.
    pub(crate) fn from_report(report: BreakerReport) -> Self {
        let from = BreakerReading::from_word(report.from_word);
        let to = BreakerReading::from_word(report.to_word);
        Self {
            at_ns: to.since_ns(),
            from: from.state(),
            to: to.state(),
            cause: BreakerCause::Shard {
                shard: report.shard,
                trigger: report.trigger,
            },
        }
    }
}

/// Why the breaker moved. A shard decides from its own traffic (its window, its queues) and
/// from the time spent in a state; the control plane decides on the monitor's overload and
/// on forcing commands.
///
/// ```
/// use spillway::control::BreakerCause;
/// use spillway::engine::Engine;
/// use spillway::message::Message;
///
/// let engine = Engine::builder().handler(|_: &Message| Ok(())).start().unwrap();
/// engine.control().force_closed().unwrap();
/// engine.control().reset().unwrap();
/// let causes: Vec<BreakerCause> = engine
///     .control()
///     .breaker_history()
///     .iter()
///     .map(|transition| transition.cause)
///     .collect();
/// assert_eq!(causes, [BreakerCause::ForcedClosed, BreakerCause::Reset]);
/// engine.shutdown();
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum BreakerCause {
    /// A shard moved it, for `trigger` (with the figures it judged): a trip by error rate,
    /// p95 latency or a full queue, or a step towards closed (recovery timeout, good
    /// period).
    Shard {
        /// The shard.
        shard: usize,
        /// What it saw.
        trigger: ShardTrigger,
    },
    /// The overload monitor sampled this queue at 100% of its cap (the first overloaded
    /// queue in the monitor's order; [`Control::overloaded`] lists them all).
    Overload(QueueSample),
    /// [`Control::force_open`].
    ForcedOpen,
    /// [`Control::force_closed`].
    ForcedClosed,
    /// [`Control::reset`].
    Reset,
}

impl BreakerCause {
    fn count_in(&self, counts: &mut BreakerTransitionCounts) {
        let count = match self {
            Self::Shard { trigger, .. } => match trigger {
                ShardTrigger::ErrorRate(_) => &mut counts.error_rate,
                ShardTrigger::P95Latency(_) => &mut counts.p95_latency,
                ShardTrigger::QueueFull { .. } => &mut counts.queue_full,
                ShardTrigger::RecoveryTimeout { .. } => &mut counts.recovery_timeout,
                ShardTrigger::GoodPeriod { .. } => &mut counts.good_period,
            },
            Self::Overload(_) => &mut counts.overload,
            Self::ForcedOpen => &mut counts.forced_open,
            Self::ForcedClosed => &mut counts.forced_closed,
            Self::Reset => &mut counts.reset,
        };
        *count += 1;
    }
}

/// The breaker's last [`BREAKER_HISTORY_MAX`] transitions, in time order. Control path only.
#[derive(Debug, Default)]
pub(crate) struct BreakerHistory {
    transitions: VecDeque<BreakerTransition>,
    /// Every transition recorded, by cause, including those no longer kept.
    counts: BreakerTransitionCounts,
}

impl BreakerHistory {
    /// Adds `transition` in time order (shards report theirs a little after the fact, so it
    /// may be older than the latest); the oldest goes when the history is full.
    pub(crate) fn record(&mut self, transition: BreakerTransition) {
        transition.cause.count_in(&mut self.counts);
        let position = self
            .transitions
            .iter()
            .rposition(|earlier| earlier.at_ns <= transition.at_ns)
            .map_or(0, |index| index + 1);
        if self.transitions.len() == BREAKER_HISTORY_MAX {
            if position == 0 {
                return; // older than everything kept
            }
            self.transitions.pop_front();
            self.transitions.insert(position - 1, transition);
        } else {
            self.transitions.insert(position, transition);
        }
    }

    fn to_vec(&self) -> Vec<BreakerTransition> {
        self.transitions.iter().copied().collect()
    }
}

/// A cap to change at run time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// A role's pending-message cap, on every shard.
    Role {
        /// The role.
        role: Role,
        /// Its new cap.
        max_pending: u32,
    },
    /// One connection's pending-message cap.
    Connection {
        /// The connection.
        connection: ConnectionId,
        /// Its new cap.
        max_pending: u32,
    },
    /// The caps' per-priority thresholds (`caps.priority_threshold_percent`), on every
    /// shard and for every tenant cap: each 1 to 100, none above the one of the priority
    /// before it.
    PriorityThresholds {
        /// Percent of each cap that P0, P1, P2 and P3 may fill.
        percent: [u32; Priority::COUNT],
    },
    /// A configured tenant's aggregate cap across shards (`None`: no cap).
    Tenant {
        /// The tenant (it must have settings).
        tenant: TenantId,
        /// Its new cap.
        max_pending: Option<u32>,
    },
}

/// Whose rate to change at run time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RateTarget {
    /// One connection.
    Connection(ConnectionId),
    /// Every connection of a tenant (those the shards hold now).
    Tenant(TenantId),
    /// Every connection, those the shards hold now and those they add later: the
    /// per-connection default (`rate.per_connection_per_sec`) changes with it.
    AllConnections,
}

/// Whether a cancel found its message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CancelOutcome {
    /// It was queued; it completes `Cancelled` and nothing else changed.
    Cancelled,
    /// It is not queued: unknown, already run, or never admitted. Nothing was touched.
    NotFound,
}

/// A control command that could not be carried out.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// No answer within the handle's timeout.
    #[error("no answer from the control plane within {0:?}")]
    Timeout(Duration),
    /// The engine has stopped.
    #[error("the engine has stopped")]
    Stopped,
    /// Too many requests are waiting for the control thread.
    #[error("the control plane's inbox is full")]
    Busy,
    /// The tenant has no settings (or only a fleet-wide rate, which keeps no pending count),
    /// so it has no cap to change.
    #[error("tenant {0} has no [[tenants]] settings (so no cap to change)")]
    UnknownTenant(u32),
    /// A value out of range, naming it.
    #[error("{field} must be in {allowed}, got {got}")]
    Invalid {
        /// The argument.
        field: &'static str,
        /// Its allowed range.
        allowed: &'static str,
        /// What was given.
        got: String,
    },
    /// No component of that name is registered.
    #[error("no component named {0:?}")]
    UnknownComponent(String),
    /// A component of that name is already registered.
    #[error("a component named {0:?} is already registered")]
    ComponentExists(String),
    /// The shard that owns the connection has no room to track it.
    #[error("the shard has no room for connection {0}")]
    NoRoom(u64),
}

/// A component's handler for control messages: bytes in, bytes out, run on the control
/// thread.
pub type ComponentHandler = Box<dyn FnMut(&[u8]) -> Vec<u8> + Send>;

/// A command for the control thread.
pub(crate) enum Command {
    ForceOpen,
    ForceClosed,
    Reset,
    Health(HealthKind),
    Drain(ConnectionId),
    Cancel(ConnectionId, MessageId),
    SetLimit(Limit),
    SetRate(RateTarget, core::num::NonZeroU32),
    Register(String, ComponentHandler),
    Unregister(String),
    Send(String, Vec<u8>),
}

impl Command {
    pub(crate) fn kind(&self) -> CommandKind {
        match self {
            Command::ForceOpen | Command::ForceClosed | Command::Reset => CommandKind::Breaker,
            Command::Health(_) => CommandKind::Health,
            Command::Drain(_) => CommandKind::Drain,
            Command::Cancel(..) => CommandKind::Cancel,
            Command::SetLimit(_) => CommandKind::SetLimit,
            Command::SetRate(..) => CommandKind::SetRate,
            Command::Register(..) | Command::Unregister(_) | Command::Send(..) => {
                CommandKind::Component
            }
        }
    }
}

/// The control thread's answer.
#[derive(Debug)]
pub(crate) enum Answer {
    Done,
    Health(Health),
    Drained(DrainReport),
    Cancel(CancelOutcome),
    Bytes(Vec<u8>),
    Error(ControlError),
}

/// A command with where its answer goes and when it arrived.
pub(crate) struct Request {
    pub(crate) command: Command,
    pub(crate) answer: SyncSender<Answer>,
    pub(crate) received_ns: u64,
}

/// A service the control thread runs in its own event loop ([`Control::host`]): the admin
/// endpoint's HTTP, so that a health check read from a socket reaches the control plane,
/// and its answer the socket, with no other thread woken in between (each wake-up is a
/// wait for a core when the shards keep every core busy).
///
/// The control thread registers nothing itself: the service registers its sources in the
/// thread's poll at [`register`](Self::register), with tokens below [`HOSTED_TOKENS_MAX`],
/// and is given a turn after every poll, events or not. A turn must not block.
pub(crate) trait Hosted: Send {
    /// Registers the service's event sources.
    fn register(&mut self, registry: &mio::Registry) -> std::io::Result<()>;
    /// Handles `events` (those of its tokens; maybe none) and whatever answers it awaits.
    /// `desk` serves control commands on this thread. Returns whether it did anything
    /// (the control thread then looks again at once instead of waiting).
    fn turn(&mut self, events: &mio::Events, desk: &mut dyn ControlDesk) -> bool;
    /// The longest the control thread may wait before the next turn (timers, sweeps).
    fn wait_max(&self) -> Duration;
    /// Whether its owner asked it to stop: the control thread then drops it.
    fn stopped(&self) -> bool;
}

/// Tokens a hosted service may use: `0..HOSTED_TOKENS_MAX` (the control thread's own
/// waker sits above).
pub(crate) const HOSTED_TOKENS_MAX: usize = usize::MAX - 16;

/// What a [`Hosted`] service may ask of the control thread it runs on.
pub(crate) trait ControlDesk {
    /// Serves `command` now, as a request from a handle would be; its answer comes to the
    /// receiver when it is done (a health check: when every shard has replied).
    fn submit(&mut self, command: Command) -> Receiver<Answer>;
}

/// A health check's answer as [`Control::health`] gives it.
pub(crate) fn health_of(answer: Answer) -> Result<Health, ControlError> {
    match answer {
        Answer::Health(health) => Ok(health),
        other => Err(unexpected(other)),
    }
}

/// State the control thread shares with the handles.
pub(crate) struct ControlShared {
    /// One inbox per command kind, served in kind order.
    pub(crate) inboxes: Box<[Mpmc<Request>]>,
    /// The control thread: handles unpark it, shards wake it after a reply.
    pub(crate) sleeper: Sleeper,
    /// Set after the shards have exited: answer what is left with `Stopped` and exit.
    pub(crate) stopping: AtomicBool,
    /// Set by the control thread under this lock when it drains its inboxes for the last
    /// time; handles push under the same lock. So a request is either queued before the
    /// final drain (and answered `Stopped` by it) or refused at once: never left unanswered.
    /// Control path only.
    pub(crate) closed: Mutex<bool>,
    /// The niceness the control thread runs at, once it has applied `control.nice`:
    /// `Some(nice)` if applied, `None` if the system refused (or it was 0, or not Linux).
    pub(crate) nice: OnceLock<Option<i32>>,
    pub(crate) latency: Mutex<thread::LatencyBook>,
    pub(crate) monitor: Mutex<Monitor>,
    /// Written by the control thread, read by [`Control::breaker_history`].
    pub(crate) breaker_history: Mutex<BreakerHistory>,
    /// A service for the control thread to take into its loop ([`Control::host`]), raised
    /// in `hosting` until it does.
    pub(crate) hosted: Mutex<Option<Box<dyn Hosted>>>,
    pub(crate) hosting: AtomicBool,
}

impl ControlShared {
    pub(crate) fn new(monitor: Monitor) -> Self {
        Self {
            inboxes: (0..CommandKind::COUNT)
                .map(|_| Mpmc::new(INBOX_CAPACITY))
                .collect(),
            sleeper: Sleeper::default(),
            stopping: AtomicBool::new(false),
            closed: Mutex::new(false),
            nice: OnceLock::new(),
            latency: Mutex::new(thread::LatencyBook::new()),
            monitor: Mutex::new(monitor),
            breaker_history: Mutex::new(BreakerHistory::default()),
            hosted: Mutex::new(None),
            hosting: AtomicBool::new(false),
        }
    }

    /// Unparks the control thread if it is parked, never missing one that is about to
    /// (fenced: requests are rare next to messages).
    pub(crate) fn wake(&self) {
        self.sleeper.unpark_if_sleeping(Handshake::Fenced);
    }

    /// The engine's counters with the control plane's latency figures.
    pub(crate) fn stats(&self, engine: &EngineShared) -> Stats {
        let mut stats = engine.stats();
        if let Ok(book) = self.latency.lock() {
            stats.control = book.stats();
        }
        if let Ok(history) = self.breaker_history.lock() {
            stats.control.breaker_transitions = history.counts;
        }
        stats
    }
}

/// A handle to the engine's control plane. Cheap to clone; any thread may use it.
#[derive(Clone)]
pub struct Control {
    engine: Arc<EngineShared>,
    control: Arc<ControlShared>,
    timeout: Duration,
}

/// A registered component; dropping it removes the component.
pub struct Component {
    control: Control,
    name: String,
}

impl Component {
    /// The component's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for Component {
    fn drop(&mut self) {
        // Fire and forget: the control thread removes it at its next turn.
        let _ = self
            .control
            .enqueue(Command::Unregister(core::mem::take(&mut self.name)));
    }
}

/// Asks the scheduler to favour the calling thread as the control thread is favoured
/// (`nice` in -20..=19, as `control.nice`; 0 asks nothing). Returns the niceness in force if
/// the system granted it (on Linux it needs CAP_SYS_NICE or a permissive RLIMIT_NICE).
///
/// For a thread of the embedding application that must stay responsive beside a saturated
/// data path, such as an in-process health checker: on a machine with no idle core a
/// normal-priority thread can wait a scheduler slice (about a millisecond) to read an answer
/// the control plane gave in microseconds.
pub fn raise_thread_priority(nice: i32) -> Option<i32> {
    thread::raise_priority(nice)
}

impl Control {
    /// The niceness the control-plane thread runs at (see
    /// [`Engine::control_nice`](crate::engine::Engine::control_nice)).
    pub fn thread_nice(&self) -> Option<i32> {
        self.control.nice.get().copied().flatten()
    }

    pub(crate) fn new(engine: Arc<EngineShared>, control: Arc<ControlShared>) -> Self {
        Self {
            engine,
            control,
            timeout: TIMEOUT_DEFAULT,
        }
    }

    /// A handle whose calls wait at most `timeout` for their answer.
    pub fn with_timeout(&self, timeout: Duration) -> Self {
        Self {
            timeout,
            ..self.clone()
        }
    }

    /// Holds the circuit breaker open: P2 and P3 are shed until [`reset`](Self::reset).
    pub fn force_open(&self) -> Result<(), ControlError> {
        self.call(Command::ForceOpen).map(|_| ())
    }

    /// Holds the circuit breaker closed until [`reset`](Self::reset).
    pub fn force_closed(&self) -> Result<(), ControlError> {
        self.call(Command::ForceClosed).map(|_| ())
    }

    /// Returns the breaker to automatic control, closed.
    pub fn reset(&self) -> Result<(), ControlError> {
        self.call(Command::Reset).map(|_| ())
    }

    /// Runs a health check; every kind asks every shard, so a stuck shard shows as a
    /// timeout.
    pub fn health(&self, kind: HealthKind) -> Result<Health, ControlError> {
        health_of(self.call(Command::Health(kind))?)
    }

    /// How long this handle's calls wait for their answer.
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Has the control thread run `service` in its own loop, from its next turn until the
    /// service says it stopped. One at a time: a second replaces a first not yet taken.
    pub(crate) fn host(&self, service: Box<dyn Hosted>) {
        *self
            .control
            .hosted
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(service);
        // Release: pairs with the control thread's Acquire load, which then takes the
        // service from the slot under the lock.
        self.control.hosting.store(true, Ordering::Release);
        self.wake_thread();
    }

    /// Takes back a service given to [`host`](Self::host) that the control thread has not
    /// taken (it has stopped, say); `None` once taken.
    pub(crate) fn unhost(&self) -> Option<Box<dyn Hosted>> {
        self.control
            .hosted
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()
    }

    /// Wakes the control thread wherever it waits, whatever it is doing: for news its
    /// inboxes and rings do not show (a hosted service's answer from another thread), so
    /// no sleeping flag can say whether it is needed.
    pub(crate) fn wake_thread(&self) {
        self.control.sleeper.unpark();
    }

    /// Drains `connection`: new messages are refused `Draining`, its queued messages run
    /// (or are cancelled, per `control.drain_finishes_queued`), then it is closed. Returns
    /// when the drain is done: at the latest at `control.drain_timeout_ns`, when what is
    /// still queued is cancelled, so every queued message has its outcome by then.
    ///
    /// Closed means forgotten: the shard frees the connection's slot (so drains never use up
    /// `connections_per_shard_max`), with its rate, caps and disconnected state. A message
    /// with the same id after the drain completed is a new connection and is admitted as
    /// any other. Messages are refused `Draining` only while the drain runs. Why: a drained
    /// connection is closed, and an id that comes back is a new connection (a server may
    /// reuse ids); refusing the id for ever would have to remember every drained id, the
    /// very growth a drain is meant to end. A producer that must not send after a drain
    /// stops sending before it asks for one.
    pub fn drain(&self, connection: ConnectionId) -> Result<DrainReport, ControlError> {
        match self.call(Command::Drain(connection))? {
            Answer::Drained(report) => Ok(report),
            other => Err(unexpected(other)),
        }
    }

    /// Cancels the queued message `message` of `connection`, ahead of the data queue.
    pub fn cancel(
        &self,
        connection: ConnectionId,
        message: MessageId,
    ) -> Result<CancelOutcome, ControlError> {
        match self.call(Command::Cancel(connection, message))? {
            Answer::Cancel(outcome) => Ok(outcome),
            other => Err(unexpected(other)),
        }
    }

    /// Changes a cap; it applies from each shard's next batch.
    pub fn set_limit(&self, limit: Limit) -> Result<(), ControlError> {
        self.call(Command::SetLimit(limit)).map(|_| ())
    }

    /// Changes a nominal rate (messages per second); it applies from each shard's next
    /// batch, and the adaptive controller recovers towards it.
    pub fn set_rate(&self, target: RateTarget, rate_per_sec: u32) -> Result<(), ControlError> {
        let rate = core::num::NonZeroU32::new(rate_per_sec)
            .filter(|rate| rate.get() <= 1_000_000_000)
            .ok_or_else(|| ControlError::Invalid {
                field: "rate_per_sec",
                allowed: "1..=1000000000",
                got: rate_per_sec.to_string(),
            })?;
        self.call(Command::SetRate(target, rate)).map(|_| ())
    }

    /// Registers a component that answers control messages sent to `name`. It is removed
    /// when the returned [`Component`] is dropped.
    pub fn register(
        &self,
        name: &str,
        handler: impl FnMut(&[u8]) -> Vec<u8> + Send + 'static,
    ) -> Result<Component, ControlError> {
        self.call(Command::Register(name.to_string(), Box::new(handler)))?;
        Ok(Component {
            control: self.clone(),
            name: name.to_string(),
        })
    }

    /// Sends `message` to the component `name` and returns its answer.
    pub fn send(&self, name: &str, message: &[u8]) -> Result<Vec<u8>, ControlError> {
        match self.call(Command::Send(name.to_string(), message.to_vec()))? {
            Answer::Bytes(bytes) => Ok(bytes),
            other => Err(unexpected(other)),
        }
    }

    /// The breaker's state now (a read, not a command).
    pub fn breaker_state(&self) -> BreakerState {
        self.engine.breaker.read().state()
    }

    /// The breaker's last [`BREAKER_HISTORY_MAX`] transitions, oldest first, each with its
    /// time and cause (a read, not a command). A transition a shard made shows here once the
    /// control thread has read the shard's report, within a turn of each (a shard sends it
    /// between batches).
    ///
    /// ```
    /// use spillway::admission::breaker::BreakerState::{Closed, ForcedOpen};
    /// use spillway::engine::Engine;
    /// use spillway::message::Message;
    ///
    /// let engine = Engine::builder().handler(|_: &Message| Ok(())).start().unwrap();
    /// engine.control().force_open().unwrap();
    /// engine.control().reset().unwrap();
    /// let history = engine.control().breaker_history();
    /// let moves: Vec<_> = history.iter().map(|moved| (moved.from, moved.to)).collect();
    /// assert_eq!(moves, [(Closed, ForcedOpen), (ForcedOpen, Closed)]);
    /// assert!(history[0].at_ns <= history[1].at_ns);
    /// engine.shutdown();
    /// ```
    pub fn breaker_history(&self) -> Vec<BreakerTransition> {
        self.control
            .breaker_history
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .to_vec()
    }

    /// Messages of `tenant` pending across all shards now, if the tenant has settings:
    /// the shared count its cap is charged against.
    pub fn tenant_pending(&self, tenant: TenantId) -> Option<u64> {
        let index = self.engine.tenants.find(tenant)?;
        Some(self.engine.tenants.pending(index))
    }

    /// Every counter, with the control plane's latencies (see
    /// [`Engine::stats`](crate::engine::Engine::stats)).
    pub fn stats(&self) -> Stats {
        self.control.stats(&self.engine)
    }

    /// This process's fleet-wide tenant quotas (`[global]`): what every shard charges, and
    /// what the lease thread did. Read directly, not through the control ring: it is a
    /// handful of atomics.
    pub fn global_quotas(&self) -> &GlobalQuotas {
        &self.engine.global
    }

    /// Every queue's status at the monitor's last sample.
    pub fn queues(&self) -> Vec<QueueStatus> {
        self.with_monitor(|monitor| monitor.queues().copied().collect())
    }

    /// The role queues of `role` at the monitor's last sample.
    pub fn queues_of_role(&self, role: Role) -> Vec<QueueStatus> {
        self.with_monitor(|monitor| monitor.queues_of_role(role).copied().collect())
    }

    /// The queues at overload at the monitor's last sample.
    pub fn overloaded(&self) -> Vec<QueueStatus> {
        self.with_monitor(|monitor| monitor.overloaded().copied().collect())
    }

    /// The monitor's recent alerts, oldest first.
    pub fn alerts(&self) -> Vec<Alert> {
        self.with_monitor(|monitor| monitor.history().iter().copied().collect())
    }

    fn with_monitor<R>(&self, read: impl FnOnce(&Monitor) -> R) -> R {
        let monitor = self
            .control
            .monitor
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        read(&monitor)
    }

    /// Queues `command` without waiting for its answer.
    fn enqueue(&self, command: Command) -> Result<std::sync::mpsc::Receiver<Answer>, ControlError> {
        let closed = self
            .control
            .closed
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if *closed {
            return Err(ControlError::Stopped);
        }
        let (answer, receiver) = sync_channel(1);
        let kind = command.kind();
        let request = Request {
            command,
            answer,
            received_ns: self.engine.clock.now_ns(),
        };
        let control = &self.control;
        if control.inboxes[kind.index()].push(request).is_err() {
            return Err(ControlError::Busy);
        }
        drop(closed);
        control.wake();
        Ok(receiver)
    }

    fn call(&self, command: Command) -> Result<Answer, ControlError> {
        let receiver = self.enqueue(command)?;
        match receiver.recv_timeout(self.timeout) {
            Ok(Answer::Error(error)) => Err(error),
            Ok(answer) => Ok(answer),
            Err(RecvTimeoutError::Timeout) => Err(ControlError::Timeout(self.timeout)),
            Err(RecvTimeoutError::Disconnected) => Err(ControlError::Stopped),
        }
    }
}

fn unexpected(answer: Answer) -> ControlError {
    match answer {
        Answer::Error(error) => error,
        _ => ControlError::Stopped,
    }
}

impl core::fmt::Debug for Control {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        formatter
            .debug_struct("Control")
            .field("breaker", &self.breaker_state())
            .field("timeout", &self.timeout)
            .finish()
    }
}
