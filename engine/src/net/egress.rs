//! Egress flow control (SPEC 4): the bounded send buffer of one connection's reply stream
//! toward a client that may read slower than the server replies.
//!
//! One [`EgressQueue`] per connection, owned by the shard thread that owns the connection,
//! so it is plain data: no atomics, no locks. Its storage starts small and grows on demand
//! (15,000 idle connections should not each hold a full buffer), and it never holds more
//! than [`EgressConfig::buffer_capacity`] items.
//!
//! # States
//!
//! The fill (items buffered over the capacity) puts the connection in a [`FlowState`]:
//!
//! | fill                                   | state                                         |
//! |----------------------------------------|-----------------------------------------------|
//! | under `throttle_percent` (70%)         | `Normal`                                      |
//! | `throttle_percent` to `pause_percent`  | `Throttled`, delay interpolated linearly      |
//! | `pause_percent` (90%) and over         | `Paused`, in pauses of `pause_duration_ns`    |
//! | full                                   | `Dropping`: the next offer drops, per policy  |
//!
//! Thresholds compare exactly, in integers (`buffered * 100 >= percent * capacity`), so with
//! the default 1000 slots 699 buffered items are Normal and 700 are Throttled. The throttle
//! delay runs from `throttle_delay_min_ns` at `throttle_percent` toward
//! `throttle_delay_max_ns` at `pause_percent` ([`EgressConfig::throttle_delay_ns`]).
//!
//! # Signals to the client
//!
//! What the client is told is a [`FlowSignal`]: `Throttle` (with the delay), `Pause` (for how
//! long) or `Resume`. The queue remembers the last signal it handed out and hands out a new
//! one exactly when the instruction changes: when the state moves between Normal, Throttled
//! and Paused-or-Dropping (both tell the client to pause), when a pause runs out while the
//! buffer is still at or over `pause_percent` (a new pause begins), and, within Throttled,
//! when the delay has moved by a tenth of its range ([`THROTTLE_SIGNAL_STEPS`]) since the
//! client was last told, so the client's delay follows the fill without a frame per reply.
//! [`EgressQueue::offer`] returns the signal its item made due; changes made by the socket
//! writer's pops and by the passing of time are returned by [`EgressQueue::poll_signal`],
//! which the server calls after each write batch and on its timer.
//!
//! # Accounting
//!
//! Every item offered ends exactly one way, and every drop has an [`EgressDropReason`] with
//! its own counter: `offered = sent + dropped + buffered` at all times, where `sent` counts
//! the items the socket writer took ([`EgressQueue::pop`], [`EgressQueue::drain_into`]) and
//! an item handed back by [`Offer::Blocked`] is not offered yet (it is the caller's until it
//! offers it again). [`EgressQueue::dropped_since_last_report`] tells the server how many
//! replies to report to the client as dropped.
//!
//! # Health
//!
//! The drop rate is `dropped / offered` over the last [`EgressConfig::health_window_ns`]
//! (counted in [`HEALTH_WINDOW_SLOTS`] slots, so the window covers between nine and ten
//! tenths of that span): under `warning_drop_percent` (10%) healthy, up to
//! `unhealthy_drop_percent` (30%) a warning, over it unhealthy, with the recommendation to
//! disconnect when [`EgressConfig::disconnect_unhealthy`] is set. Drops made by
//! [`EgressQueue::close`] do not count: they are the server's doing, not the client's.
//!
//! # Time
//!
//! Every call that can change the state takes `now_ns`, monotonic nanoseconds from
//! [`Clock::now_ns`](crate::clock::Clock::now_ns) read once per batch; the queue never reads
//! a clock, so tests drive it with hand-made readings.

use std::collections::VecDeque;

use crate::config::{range, ConfigError, EgressConfig, EgressDropPolicy};

/// Within Throttled, the client is told the delay again once it has moved by
/// `1 / THROTTLE_SIGNAL_STEPS` of `throttle_delay_max_ns - throttle_delay_min_ns` since the
/// last signal (at least 1 ns), so one pass through the throttle band sends at most this many
/// Throttle signals beyond the first.
pub const THROTTLE_SIGNAL_STEPS: u64 = 10;

/// Slots of the drop-rate window: each counts `health_window_ns / HEALTH_WINDOW_SLOTS` of time.
pub const HEALTH_WINDOW_SLOTS: usize = 10;

// The shortest window still has slots of at least 1 ms.
const _: () =
    assert!(*range::EGRESS_HEALTH_WINDOW_NS.start() / HEALTH_WINDOW_SLOTS as u64 >= 1_000_000);
// A buffered count fits the `u32` of `EgressStats::buffered`, and times 100 a `u64`.
const _: () = assert!(*range::EGRESS_BUFFER_CAPACITY.end() <= u32::MAX / 100);

/// The fill band a buffer is in, before time (the pause in progress) is looked at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Band {
    Normal,
    Throttled,
    Paused,
    Full,
}

impl Band {
    /// Paused and Full both tell the client to pause.
    fn is_pausing(self) -> bool {
        matches!(self, Band::Paused | Band::Full)
    }
}

impl EgressConfig {
    /// The band `buffered` items put the buffer in.
    fn band(&self, buffered: u32) -> Band {
        let capacity = u64::from(self.buffer_capacity);
        let fill = u64::from(buffered) * 100;
        if buffered >= self.buffer_capacity {
            Band::Full
        } else if fill >= u64::from(self.pause_percent) * capacity {
            Band::Paused
        } else if fill >= u64::from(self.throttle_percent) * capacity {
            Band::Throttled
        } else {
            Band::Normal
        }
    }

    /// The smallest change of the throttle delay worth a new Throttle signal, in ns.
    fn throttle_signal_step_ns(&self) -> u64 {
        let range_ns = self
            .throttle_delay_max_ns
            .saturating_sub(self.throttle_delay_min_ns);
        (range_ns / THROTTLE_SIGNAL_STEPS).max(1)
    }
}

/// The flow state of a connection's reply stream, from its fill (SPEC 4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowState {
    /// Under `throttle_percent` full: the client sends at will.
    Normal,
    /// From `throttle_percent` to under `pause_percent` full: the client should space its
    /// requests `delay_ns` apart.
    Throttled {
        /// The delay for the current fill ([`EgressConfig::throttle_delay_ns`]), in ns.
        delay_ns: u64,
    },
    /// From `pause_percent` full to one under full: the client should send nothing until
    /// `until_ns`.
    Paused {
        /// End of the current pause, on the queue's clock. Pauses follow each other every
        /// `pause_duration_ns` from the moment the buffer reached `pause_percent`.
        until_ns: u64,
    },
    /// Full: the next offer drops (or blocks) per the drop policy. The client is paused as
    /// in `Paused`.
    Dropping,
}

/// What the server tells the client, in a flow-signal frame, when its instruction changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowSignal {
    /// Throttled: space requests at least `delay_ns` apart.
    Throttle {
        /// The delay, in ns.
        delay_ns: u64,
    },
    /// Paused (or dropping): send nothing for `duration_ns`.
    Pause {
        /// Time left in the current pause, from the `now_ns` of the call that returned the
        /// signal, in ns.
        duration_ns: u64,
    },
    /// Back to Normal: send at will.
    Resume,
}

/// Why a reply was dropped. Each has its own counter in [`EgressStats::dropped_by_reason`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EgressDropReason {
    /// The oldest buffered reply, evicted for a new one ([`EgressDropPolicy::DropOldest`]).
    DropOldest,
    /// The new reply, refused by a full buffer ([`EgressDropPolicy::DropNewest`]).
    DropNewest,
    /// The new reply, refused for `block_timeout_ns` ([`EgressDropPolicy::Block`]).
    BlockTimeout,
    /// A buffered reply, cleared with all the others ([`EgressDropPolicy::DropAll`]).
    DropAll,
    /// A buffered reply, never sent because the connection closed ([`EgressQueue::close`]).
    Closed,
}

impl EgressDropReason {
    /// Every reason, in counter order.
    pub const ALL: [EgressDropReason; 5] = [
        EgressDropReason::DropOldest,
        EgressDropReason::DropNewest,
        EgressDropReason::BlockTimeout,
        EgressDropReason::DropAll,
        EgressDropReason::Closed,
    ];
    /// Number of reasons.
    pub const COUNT: usize = Self::ALL.len();

    /// Counter index, in [`EgressDropReason::ALL`] order.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// A stable snake_case name for reports.
    pub const fn name(self) -> &'static str {
        match self {
            EgressDropReason::DropOldest => "drop_oldest",
            EgressDropReason::DropNewest => "drop_newest",
            EgressDropReason::BlockTimeout => "block_timeout",
            EgressDropReason::DropAll => "drop_all",
            EgressDropReason::Closed => "closed",
        }
    }
}

/// What became of an offered reply. Items that were not queued come back to the caller.
#[must_use = "a dropped or blocked reply is handed back, and a signal may be due to the client"]
#[derive(Debug, PartialEq, Eq)]
pub enum Offer<T> {
    /// Queued. `signal` is what to tell the client when this offer changed its instruction
    /// (or an earlier change was still unreported), as [`EgressQueue::poll_signal`] would.
    Queued {
        /// The flow signal now due, if any.
        signal: Option<FlowSignal>,
    },
    /// The buffer was full and `item` was dropped and counted under `reason`: the offered
    /// reply for [`EgressDropReason::DropNewest`] and [`EgressDropReason::BlockTimeout`], the
    /// oldest buffered one (the offered reply took its place) for
    /// [`EgressDropReason::DropOldest`]. The fill is unchanged.
    Dropped {
        /// The reply that was dropped.
        item: T,
        /// Why; its counter has been incremented.
        reason: EgressDropReason,
    },
    /// [`EgressDropPolicy::Block`] and the buffer is full: `item` was not taken. Offer it
    /// again with [`EgressQueue::offer_again`] and this deadline (before any other reply, to
    /// keep their order); an offer at or after `deadline_ns` that still finds the buffer
    /// full drops it ([`EgressDropReason::BlockTimeout`]). The deadline is the item's own:
    /// each reply waits at most `block_timeout_ns` for room, however many wait with it.
    Blocked {
        /// The reply, handed back; not counted as offered.
        item: T,
        /// When the blocking offer times out, on the queue's clock.
        deadline_ns: u64,
    },
    /// [`EgressDropPolicy::DropAll`] and the buffer was full: its `dropped_count` replies were
    /// dropped (counted under [`EgressDropReason::DropAll`]) and the offered one queued.
    DroppedAll {
        /// How many buffered replies were dropped.
        dropped_count: u32,
        /// The flow signal now due (a `Resume`, unless the capacity is tiny).
        signal: Option<FlowSignal>,
    },
}

/// The health of a connection by its drop rate over the window (SPEC 4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EgressHealth {
    /// Drop rate under `warning_drop_percent`, or fewer than `health_min_offered` offers in
    /// the window.
    Healthy,
    /// Drop rate from `warning_drop_percent` up to `unhealthy_drop_percent`.
    Warning,
    /// Drop rate over `unhealthy_drop_percent`.
    Unhealthy {
        /// The configuration says to disconnect unhealthy clients
        /// ([`EgressConfig::disconnect_unhealthy`]).
        recommend_disconnect: bool,
    },
}

/// A connection's egress counters and gauges: SPEC 4's per-connection stats, and the drops by
/// reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EgressStats {
    /// The buffer size (SPEC): replies it holds when full.
    pub buffer_capacity: u32,
    /// The fill (SPEC): replies buffered now.
    pub buffered: u32,
    /// The state (SPEC) at the time asked.
    pub state: FlowState,
    /// Replies sent (SPEC): taken from the buffer by the socket writer.
    pub sent: u64,
    /// Replies dropped (SPEC), all reasons; the sum of `dropped_by_reason`.
    pub dropped: u64,
    /// Replies dropped, by [`EgressDropReason::index`].
    pub dropped_by_reason: [u64; EgressDropReason::COUNT],
    /// Total pause time (SPEC), in ns: time spent Paused or Dropping, the current stretch up
    /// to the time asked included.
    pub pause_ns_total: u64,
    /// The current delay (SPEC), in ns: the throttle delay while Throttled, else 0.
    pub delay_ns: u64,
    /// Throttle events (SPEC): Throttle signals handed out (entering Throttled, and each
    /// later step of the delay).
    pub throttle_events: u64,
    /// Pause events (SPEC): Pause signals handed out (entering Paused or Dropping, and each
    /// pause that follows one run out).
    pub pause_events: u64,
}

impl EgressStats {
    /// The fill as a percentage of the capacity.
    pub fn fill_percent(&self) -> f64 {
        f64::from(self.buffered) * 100.0 / f64::from(self.buffer_capacity.max(1))
    }
}

/// The instruction the client was last given, to tell when a new one is due.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Instruction {
    Resume,
    Throttle { delay_ns: u64 },
    Pause { until_ns: u64 },
}

/// Offers and drops in one slot of the health window.
#[derive(Clone, Copy, Debug, Default)]
struct HealthSlot {
    /// `now_ns / slot_ns` of the counts below; a slot of another period is stale.
    period: u64,
    offered: u64,
    dropped: u64,
}

/// A rolling count of offers and drops over the last `HEALTH_WINDOW_SLOTS` slots of time.
#[derive(Clone, Debug)]
struct HealthWindow {
    /// Length of a slot, in ns: at least 1 ms (the window is at least 10 ms).
    slot_ns: u64,
    slots: [HealthSlot; HEALTH_WINDOW_SLOTS],
}

impl HealthWindow {
    fn new(window_ns: u64) -> Self {
        Self {
            slot_ns: (window_ns / HEALTH_WINDOW_SLOTS as u64).max(1),
            slots: [HealthSlot::default(); HEALTH_WINDOW_SLOTS],
        }
    }

    fn record(&mut self, now_ns: u64, offered: u64, dropped: u64) {
        let period = now_ns / self.slot_ns;
        let slot = &mut self.slots[(period % HEALTH_WINDOW_SLOTS as u64) as usize];
        if slot.period != period {
            *slot = HealthSlot {
                period,
                offered: 0,
                dropped: 0,
            };
        }
        slot.offered += offered;
        slot.dropped += dropped;
    }

    /// `(offered, dropped)` in the slots of the window that ends at `now_ns`.
    fn totals(&self, now_ns: u64) -> (u64, u64) {
        let current = now_ns / self.slot_ns;
        self.slots
            .iter()
            .filter(|slot| {
                slot.period <= current && current - slot.period < HEALTH_WINDOW_SLOTS as u64
            })
            .fold((0, 0), |(offered, dropped), slot| {
                (offered + slot.offered, dropped + slot.dropped)
            })
    }
}

/// The bounded send buffer of one connection, with its flow state, drop policy, signals,
/// counters and health (SPEC 4; see the [module documentation](self)).
///
/// The socket writer takes a reply out ([`pop`](EgressQueue::pop),
/// [`drain_into`](EgressQueue::drain_into)) before it writes it, and keeps a partly written
/// reply outside the queue: under [`EgressDropPolicy::DropOldest`] any offer may drop the
/// front.
///
/// ```
/// use spillway::config::EgressConfig;
/// use spillway::net::egress::{EgressDropReason, EgressQueue, FlowSignal, FlowState, Offer};
/// let mut config = EgressConfig::default();
/// config.buffer_capacity = 10; // Throttled from 7 replies, Paused from 9, Dropping at 10.
/// let mut queue = EgressQueue::new(config).unwrap();
/// for reply in 0..6 {
///     assert_eq!(queue.offer(reply, 0), Offer::Queued { signal: None });
/// }
/// // 70%: throttle, at the minimum delay; 80%: halfway up the ramp to 500 ms.
/// let throttle = |delay_ns| Some(FlowSignal::Throttle { delay_ns });
/// assert_eq!(queue.offer(6, 0), Offer::Queued { signal: throttle(0) });
/// assert_eq!(queue.offer(7, 0), Offer::Queued { signal: throttle(250_000_000) });
/// // 90%: pause for 50 ms; full: still paused, and the next reply drops the oldest.
/// let pause = Some(FlowSignal::Pause { duration_ns: 50_000_000 });
/// assert_eq!(queue.offer(8, 0), Offer::Queued { signal: pause });
/// assert_eq!(queue.offer(9, 0), Offer::Queued { signal: None });
/// assert_eq!(queue.state(0), FlowState::Dropping);
/// assert_eq!(
///     queue.offer(10, 0),
///     Offer::Dropped { item: 0, reason: EgressDropReason::DropOldest }
/// );
/// assert_eq!(queue.dropped_since_last_report(), 1); // tell the client
///
/// // The socket accepts bytes 1 ms later: the writer takes a batch, then asks what to
/// // tell the client.
/// let mut batch = Vec::new();
/// assert_eq!(queue.drain_into(&mut batch, 8, 1_000_000), 8);
/// assert_eq!(batch, [1, 2, 3, 4, 5, 6, 7, 8]);
/// assert_eq!(queue.poll_signal(1_000_000), Some(FlowSignal::Resume));
/// let stats = queue.stats(1_000_000);
/// assert_eq!((stats.sent, stats.dropped, stats.buffered), (8, 1, 2)); // 11 offered
/// assert_eq!(stats.pause_ns_total, 1_000_000);
/// ```
#[derive(Debug)]
pub struct EgressQueue<T> {
    config: EgressConfig,
    /// Never longer than `config.buffer_capacity`. Starts small and grows on demand: a
    /// server holds one per connection (15,000 of them), and most never fill, so reserving
    /// the whole capacity up front would cost megabytes for nothing.
    buffer: VecDeque<T>,
    /// When the current stretch of Paused or Dropping began; `None` while Normal or
    /// Throttled. Pause `k` (from 0) of a stretch runs from `since + k * pause_duration_ns`.
    pausing_since_ns: Option<u64>,
    /// Time spent Paused or Dropping in the stretches that ended, in ns.
    pause_ns_finished: u64,
    /// The last instruction handed out; the client starts unthrottled.
    told: Instruction,
    sent: u64,
    dropped_by_reason: [u64; EgressDropReason::COUNT],
    /// Drops not yet returned by `dropped_since_last_report`.
    dropped_unreported: u64,
    throttle_events: u64,
    pause_events: u64,
    health: HealthWindow,
}

/// Reply slots an [`EgressQueue`] reserves when it is made.
pub const INITIAL_SLOTS: usize = 16;

impl<T> EgressQueue<T> {
    /// An empty queue holding up to `config.buffer_capacity` replies, with room for
    /// [`INITIAL_SLOTS`] reserved (it grows to the capacity on demand, never beyond the
    /// next power of two); the settings are checked here, once ([`EgressConfig::validate`]).
    pub fn new(config: EgressConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self {
            config,
            buffer: VecDeque::with_capacity(INITIAL_SLOTS.min(config.buffer_capacity as usize)),
            pausing_since_ns: None,
            pause_ns_finished: 0,
            told: Instruction::Resume,
            sent: 0,
            dropped_by_reason: [0; EgressDropReason::COUNT],
            dropped_unreported: 0,
            throttle_events: 0,
            pause_events: 0,
            health: HealthWindow::new(config.health_window_ns),
        })
    }

    /// The settings.
    pub fn config(&self) -> &EgressConfig {
        &self.config
    }

    /// Replies buffered.
    pub fn len(&self) -> usize {
        self.buffer.len()
    }

    /// Whether no reply is buffered.
    pub fn is_empty(&self) -> bool {
        self.buffer.is_empty()
    }

    /// Offers a reply to the buffer at `now_ns`; see [`Offer`] for the answers. A full
    /// buffer applies the drop policy; every drop is counted with its reason. Under
    /// [`EgressDropPolicy::Block`] the reply begins to wait now: it may wait until
    /// `now_ns + block_timeout_ns`.
    pub fn offer(&mut self, item: T, now_ns: u64) -> Offer<T> {
        let deadline_ns = now_ns.saturating_add(self.config.block_timeout_ns);
        self.offer_again(item, deadline_ns, now_ns)
    }

    /// Offers again, at `now_ns`, a reply that [`Offer::Blocked`] handed back with
    /// `deadline_ns`, or one the caller held back behind it (to keep the order) since some
    /// time `t`, with `t + block_timeout_ns`. Answers as [`offer`](Self::offer) does, except
    /// that under [`EgressDropPolicy::Block`] a full buffer drops the reply once `now_ns`
    /// reaches `deadline_ns`, and until then hands it back with that same deadline.
    pub fn offer_again(&mut self, item: T, deadline_ns: u64, now_ns: u64) -> Offer<T> {
        if self.buffer.len() < self.capacity() {
            self.buffer.push_back(item);
            self.health.record(now_ns, 1, 0);
            self.fill_changed(now_ns);
            return Offer::Queued {
                signal: self.poll_signal(now_ns),
            };
        }
        match self.config.drop_policy {
            EgressDropPolicy::DropOldest => {
                let oldest = self
                    .buffer
                    .pop_front()
                    .expect("a full buffer of at least one slot has a front");
                self.buffer.push_back(item);
                self.health.record(now_ns, 1, 0);
                self.count_drops(EgressDropReason::DropOldest, 1, now_ns);
                Offer::Dropped {
                    item: oldest,
                    reason: EgressDropReason::DropOldest,
                }
            }
            EgressDropPolicy::DropNewest => {
                self.health.record(now_ns, 1, 0);
                self.count_drops(EgressDropReason::DropNewest, 1, now_ns);
                Offer::Dropped {
                    item,
                    reason: EgressDropReason::DropNewest,
                }
            }
            EgressDropPolicy::Block => {
                if now_ns < deadline_ns {
                    return Offer::Blocked { item, deadline_ns };
                }
                self.health.record(now_ns, 1, 0);
                self.count_drops(EgressDropReason::BlockTimeout, 1, now_ns);
                Offer::Dropped {
                    item,
                    reason: EgressDropReason::BlockTimeout,
                }
            }
            EgressDropPolicy::DropAll => {
                let dropped = self.buffer.len();
                self.buffer.clear();
                self.buffer.push_back(item);
                self.health.record(now_ns, 1, 0);
                self.count_drops(EgressDropReason::DropAll, dropped as u64, now_ns);
                self.fill_changed(now_ns);
                Offer::DroppedAll {
                    // At most the capacity, 2^20.
                    dropped_count: dropped as u32,
                    signal: self.poll_signal(now_ns),
                }
            }
        }
    }

    /// The oldest buffered reply, the next to send.
    pub fn front(&self) -> Option<&T> {
        self.buffer.front()
    }

    /// Takes the oldest reply out for the socket writer, at `now_ns`, and counts it sent.
    /// A flow signal this makes due is returned by the next [`poll_signal`](Self::poll_signal)
    /// (call it after the write batch).
    pub fn pop(&mut self, now_ns: u64) -> Option<T> {
        let item = self.buffer.pop_front()?;
        self.sent += 1;
        self.fill_changed(now_ns);
        Some(item)
    }

    /// Takes up to `max_items` of the oldest replies out, in order, onto the end of `out`, at
    /// `now_ns`, and counts them sent; returns how many. A flow signal this makes due is
    /// returned by the next [`poll_signal`](Self::poll_signal).
    pub fn drain_into(&mut self, out: &mut Vec<T>, max_items: usize, now_ns: u64) -> usize {
        let count = max_items.min(self.buffer.len());
        out.extend(self.buffer.drain(..count));
        self.sent += count as u64;
        self.fill_changed(now_ns);
        count
    }

    /// The connection is closing at `now_ns`: drops every buffered reply, counted under
    /// [`EgressDropReason::Closed`] (not in the health window), and returns how many.
    pub fn close(&mut self, now_ns: u64) -> u64 {
        let dropped = self.buffer.len() as u64;
        self.buffer.clear();
        self.dropped_by_reason[EgressDropReason::Closed.index()] += dropped;
        self.dropped_unreported += dropped;
        self.fill_changed(now_ns);
        dropped
    }

    /// The flow state at `now_ns`.
    pub fn state(&self, now_ns: u64) -> FlowState {
        let buffered = self.buffered();
        match self.config.band(buffered) {
            Band::Normal => FlowState::Normal,
            Band::Throttled => FlowState::Throttled {
                delay_ns: self.config.throttle_delay_ns(buffered),
            },
            Band::Paused => FlowState::Paused {
                until_ns: self.pause_until_ns(now_ns),
            },
            Band::Full => FlowState::Dropping,
        }
    }

    /// The flow signal to send the client now, if its instruction changed since the last
    /// signal this queue handed out (see the [module documentation](self)); each signal is
    /// handed out once. Call it after each write batch and on a timer (at the latest when the
    /// current pause ends), so pops and expired pauses reach the client.
    pub fn poll_signal(&mut self, now_ns: u64) -> Option<FlowSignal> {
        let current = self.instruction(now_ns);
        let due = match (self.told, current) {
            (Instruction::Resume, Instruction::Resume) => false,
            (Instruction::Throttle { delay_ns: told_ns }, Instruction::Throttle { delay_ns }) => {
                told_ns.abs_diff(delay_ns) >= self.config.throttle_signal_step_ns()
            }
            (Instruction::Pause { until_ns: told_ns }, Instruction::Pause { until_ns }) => {
                told_ns != until_ns
            }
            _ => true,
        };
        if !due {
            return None;
        }
        self.told = current;
        Some(match current {
            Instruction::Resume => FlowSignal::Resume,
            Instruction::Throttle { delay_ns } => {
                self.throttle_events += 1;
                FlowSignal::Throttle { delay_ns }
            }
            Instruction::Pause { until_ns } => {
                self.pause_events += 1;
                FlowSignal::Pause {
                    duration_ns: until_ns.saturating_sub(now_ns),
                }
            }
        })
    }

    /// The health verdict at `now_ns`, by the drop rate over the window.
    pub fn health(&self, now_ns: u64) -> EgressHealth {
        let (offered, dropped) = self.health.totals(now_ns);
        if offered < u64::from(self.config.health_min_offered) {
            return EgressHealth::Healthy;
        }
        // dropped / offered against percent / 100, exact in u128 (counts below 2^64).
        let dropped_scaled = u128::from(dropped) * 100;
        let threshold_scaled = |percent: u32| u128::from(percent) * u128::from(offered);
        if dropped_scaled > threshold_scaled(self.config.unhealthy_drop_percent) {
            EgressHealth::Unhealthy {
                recommend_disconnect: self.config.disconnect_unhealthy,
            }
        } else if dropped_scaled >= threshold_scaled(self.config.warning_drop_percent) {
            EgressHealth::Warning
        } else {
            EgressHealth::Healthy
        }
    }

    /// Replies dropped since the last call (or since the queue was made): how many to report
    /// to the client as dropped.
    pub fn dropped_since_last_report(&mut self) -> u64 {
        core::mem::take(&mut self.dropped_unreported)
    }

    /// The counters and gauges at `now_ns`.
    pub fn stats(&self, now_ns: u64) -> EgressStats {
        let state = self.state(now_ns);
        let ongoing_pause_ns = self
            .pausing_since_ns
            .map_or(0, |since_ns| now_ns.saturating_sub(since_ns));
        EgressStats {
            buffer_capacity: self.config.buffer_capacity,
            buffered: self.buffered(),
            state,
            sent: self.sent,
            dropped: self.dropped_by_reason.iter().sum(),
            dropped_by_reason: self.dropped_by_reason,
            pause_ns_total: self.pause_ns_finished + ongoing_pause_ns,
            delay_ns: match state {
                FlowState::Throttled { delay_ns } => delay_ns,
                _ => 0,
            },
            throttle_events: self.throttle_events,
            pause_events: self.pause_events,
        }
    }

    fn capacity(&self) -> usize {
        self.config.buffer_capacity as usize
    }

    fn buffered(&self) -> u32 {
        debug_assert!(self.buffer.len() <= self.capacity());
        // At most the capacity, 2^20.
        self.buffer.len() as u32
    }

    /// Counts `count` drops for `reason` at `now_ns`, in the health window too.
    fn count_drops(&mut self, reason: EgressDropReason, count: u64, now_ns: u64) {
        self.dropped_by_reason[reason.index()] += count;
        self.dropped_unreported += count;
        self.health.record(now_ns, 0, count);
    }

    /// Starts or ends a stretch of pausing when the fill crossed `pause_percent`.
    fn fill_changed(&mut self, now_ns: u64) {
        let pausing = self.config.band(self.buffered()).is_pausing();
        match (self.pausing_since_ns, pausing) {
            (None, true) => self.pausing_since_ns = Some(now_ns),
            (Some(since_ns), false) => {
                self.pause_ns_finished += now_ns.saturating_sub(since_ns);
                self.pausing_since_ns = None;
            }
            _ => {}
        }
    }

    /// End of the pause in progress at `now_ns`: pauses follow each other every
    /// `pause_duration_ns` from the start of the stretch.
    fn pause_until_ns(&self, now_ns: u64) -> u64 {
        let since_ns = self.pausing_since_ns.unwrap_or(now_ns);
        let duration_ns = self.config.pause_duration_ns.max(1);
        let pauses_begun = now_ns.saturating_sub(since_ns) / duration_ns + 1;
        since_ns.saturating_add(pauses_begun.saturating_mul(duration_ns))
    }

    /// What the client should be doing at `now_ns`.
    fn instruction(&self, now_ns: u64) -> Instruction {
        let buffered = self.buffered();
        match self.config.band(buffered) {
            Band::Normal => Instruction::Resume,
            Band::Throttled => Instruction::Throttle {
                delay_ns: self.config.throttle_delay_ns(buffered),
            },
            Band::Paused | Band::Full => Instruction::Pause {
                until_ns: self.pause_until_ns(now_ns),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn config_with(policy: EgressDropPolicy) -> EgressConfig {
        EgressConfig {
            drop_policy: policy,
            ..EgressConfig::default()
        }
    }

    /// A queue of `config` holding `count` replies, offered at time 0.
    fn filled(config: EgressConfig, count: u32) -> EgressQueue<u32> {
        let mut queue = EgressQueue::new(config).unwrap();
        for item in 0..count {
            assert!(matches!(queue.offer(item, 0), Offer::Queued { .. }));
        }
        queue
    }

    /// `offered` replies of which `dropped` are dropped, all at `now_ns`, on a one-slot
    /// drop-newest queue: each drop is an offer to the full buffer, each other offer is
    /// queued after a pop.
    fn with_drop_rate(config: EgressConfig, offered: u64, dropped: u64) -> EgressQueue<u64> {
        let mut queue = EgressQueue::new(EgressConfig {
            buffer_capacity: 1,
            drop_policy: EgressDropPolicy::DropNewest,
            ..config
        })
        .unwrap();
        let _ = queue.offer(0, 0);
        for item in 1..offered {
            if item > dropped {
                queue.pop(0);
            }
            let _ = queue.offer(item, 0);
        }
        let stats = queue.stats(0);
        assert_eq!(stats.dropped, dropped);
        assert_eq!(
            stats.sent + stats.dropped + u64::from(stats.buffered),
            offered
        );
        queue
    }

    #[test]
    fn state_boundaries_at_69_9_70_89_9_90_and_100_percent() {
        let config = EgressConfig::default();
        assert_eq!(filled(config, 0).state(0), FlowState::Normal);
        assert_eq!(filled(config, 699).state(0), FlowState::Normal);
        assert_eq!(
            filled(config, 700).state(0),
            FlowState::Throttled { delay_ns: 0 }
        );
        assert_eq!(
            filled(config, 899).state(0),
            FlowState::Throttled {
                delay_ns: 497_500_000
            }
        );
        assert_eq!(
            filled(config, 900).state(0),
            FlowState::Paused { until_ns: 50 * MS }
        );
        assert_eq!(
            filled(config, 999).state(0),
            FlowState::Paused { until_ns: 50 * MS }
        );
        assert_eq!(filled(config, 1000).state(0), FlowState::Dropping);
        // The same boundaries on a small buffer: 7 of 10 throttle, 9 pause, 10 drop.
        let small = EgressConfig {
            buffer_capacity: 10,
            ..config
        };
        assert_eq!(filled(small, 6).state(0), FlowState::Normal);
        assert!(matches!(
            filled(small, 7).state(0),
            FlowState::Throttled { .. }
        ));
        assert!(matches!(
            filled(small, 9).state(0),
            FlowState::Paused { .. }
        ));
        assert_eq!(filled(small, 10).state(0), FlowState::Dropping);
    }

    #[test]
    fn delay_interpolates_linearly_between_its_endpoints() {
        let config = EgressConfig::default();
        assert_eq!(config.throttle_delay_ns(0), 0);
        assert_eq!(config.throttle_delay_ns(700), 0);
        assert_eq!(config.throttle_delay_ns(750), 125_000_000);
        assert_eq!(config.throttle_delay_ns(800), 250_000_000);
        assert_eq!(config.throttle_delay_ns(900), 500_000_000);
        assert_eq!(config.throttle_delay_ns(1000), 500_000_000);
        let config = EgressConfig {
            throttle_delay_min_ns: 100 * MS,
            throttle_delay_max_ns: 300 * MS,
            ..config
        };
        assert_eq!(config.throttle_delay_ns(700), 100 * MS);
        assert_eq!(config.throttle_delay_ns(800), 200 * MS);
        assert_eq!(config.throttle_delay_ns(900), 300 * MS);
        // A flat ramp and the largest values do not overflow.
        let config = EgressConfig {
            buffer_capacity: 1 << 20,
            throttle_percent: 1,
            pause_percent: 100,
            throttle_delay_min_ns: 0,
            throttle_delay_max_ns: 60_000_000_000,
            ..config
        };
        config.validate().unwrap();
        // 60 s * (99 * 2^20 - 100) / (99 * 2^20), rounded down.
        assert_eq!(config.throttle_delay_ns((1 << 20) - 1), 59_999_942_201);
        assert_eq!(config.throttle_delay_ns(1 << 20), 60_000_000_000);
    }

    #[test]
    fn stats_report_the_current_delay_only_while_throttled() {
        let config = EgressConfig::default();
        assert_eq!(filled(config, 800).stats(0).delay_ns, 250_000_000);
        assert_eq!(filled(config, 600).stats(0).delay_ns, 0);
        assert_eq!(filled(config, 950).stats(0).delay_ns, 0);
    }

    #[test]
    fn drop_oldest_hands_back_the_oldest_and_keeps_the_newest() {
        let mut queue = filled(config_with(EgressDropPolicy::DropOldest), 1000);
        assert_eq!(
            queue.offer(1000, 5),
            Offer::Dropped {
                item: 0,
                reason: EgressDropReason::DropOldest
            }
        );
        assert_eq!(queue.len(), 1000);
        assert_eq!(queue.front(), Some(&1));
        let mut all = Vec::new();
        queue.drain_into(&mut all, usize::MAX, 5);
        assert_eq!(all.last(), Some(&1000));
        let stats = queue.stats(5);
        assert_eq!(
            stats.dropped_by_reason[EgressDropReason::DropOldest.index()],
            1
        );
        assert_eq!((stats.sent, stats.dropped), (1000, 1));
    }

    #[test]
    fn drop_newest_hands_back_the_new_reply() {
        let mut queue = filled(config_with(EgressDropPolicy::DropNewest), 1000);
        assert_eq!(
            queue.offer(1000, 5),
            Offer::Dropped {
                item: 1000,
                reason: EgressDropReason::DropNewest
            }
        );
        assert_eq!(queue.front(), Some(&0));
        assert_eq!(queue.len(), 1000);
        assert_eq!(
            queue.stats(5).dropped_by_reason[EgressDropReason::DropNewest.index()],
            1
        );
    }

    #[test]
    fn drop_all_clears_the_buffer_counts_every_reply_and_queues_the_new_one() {
        let mut queue = filled(config_with(EgressDropPolicy::DropAll), 1000);
        // Filling told the client to throttle, then to pause.
        assert_eq!(queue.poll_signal(0), None);
        assert_eq!(
            queue.offer(1000, 10 * MS),
            Offer::DroppedAll {
                dropped_count: 1000,
                signal: Some(FlowSignal::Resume)
            }
        );
        assert_eq!(queue.len(), 1);
        assert_eq!(queue.front(), Some(&1000));
        assert_eq!(queue.state(10 * MS), FlowState::Normal);
        let stats = queue.stats(10 * MS);
        assert_eq!(stats.dropped, 1000);
        assert_eq!(
            stats.dropped_by_reason[EgressDropReason::DropAll.index()],
            1000
        );
        assert_eq!(stats.pause_ns_total, 10 * MS);
        assert_eq!(queue.dropped_since_last_report(), 1000);
    }

    #[test]
    fn block_hands_the_reply_back_until_there_is_room() {
        let config = EgressConfig {
            block_timeout_ns: 100 * MS,
            ..config_with(EgressDropPolicy::Block)
        };
        let mut queue = filled(config, 1000);
        let deadline_ns = 10 * MS + 100 * MS;
        assert_eq!(
            queue.offer(1000, 10 * MS),
            Offer::Blocked {
                item: 1000,
                deadline_ns
            }
        );
        // A retry keeps the first refusal's deadline.
        assert_eq!(
            queue.offer_again(1000, deadline_ns, 50 * MS),
            Offer::Blocked {
                item: 1000,
                deadline_ns
            }
        );
        assert_eq!(queue.pop(60 * MS), Some(0));
        assert!(matches!(
            queue.offer_again(1000, deadline_ns, 70 * MS),
            Offer::Queued { .. }
        ));
        // The next refusal starts a new deadline.
        assert_eq!(
            queue.offer(1001, 200 * MS),
            Offer::Blocked {
                item: 1001,
                deadline_ns: 300 * MS
            }
        );
        let stats = queue.stats(200 * MS);
        assert_eq!((stats.sent, stats.dropped, stats.buffered), (1, 0, 1000));
    }

    #[test]
    fn block_drops_the_reply_once_the_timeout_has_passed() {
        let config = EgressConfig {
            block_timeout_ns: 100 * MS,
            ..config_with(EgressDropPolicy::Block)
        };
        let mut queue = filled(config, 1000);
        assert!(matches!(queue.offer(1000, 0), Offer::Blocked { .. }));
        assert!(matches!(
            queue.offer_again(1000, 100 * MS, 100 * MS - 1),
            Offer::Blocked { .. }
        ));
        assert_eq!(
            queue.offer_again(1000, 100 * MS, 100 * MS),
            Offer::Dropped {
                item: 1000,
                reason: EgressDropReason::BlockTimeout
            }
        );
        let stats = queue.stats(100 * MS);
        assert_eq!(
            stats.dropped_by_reason[EgressDropReason::BlockTimeout.index()],
            1
        );
        assert_eq!(stats.dropped, 1);
        // The next reply blocks afresh.
        assert_eq!(
            queue.offer(1001, 150 * MS),
            Offer::Blocked {
                item: 1001,
                deadline_ns: 250 * MS
            }
        );
    }

    #[test]
    fn under_block_each_held_reply_waits_for_its_own_deadline() {
        let config = EgressConfig {
            block_timeout_ns: 100 * MS,
            ..config_with(EgressDropPolicy::Block)
        };
        let mut queue = filled(config, 1000);
        assert_eq!(
            queue.offer(1000, 0),
            Offer::Blocked {
                item: 1000,
                deadline_ns: 100 * MS
            }
        );
        // A second reply the caller held behind the first since 50 ms.
        let second_deadline_ns = 50 * MS + 100 * MS;
        assert_eq!(
            queue.offer_again(1000, 100 * MS, 100 * MS),
            Offer::Dropped {
                item: 1000,
                reason: EgressDropReason::BlockTimeout
            }
        );
        // The first one's timeout does not restart the second's wait.
        assert_eq!(
            queue.offer_again(1001, second_deadline_ns, 100 * MS),
            Offer::Blocked {
                item: 1001,
                deadline_ns: second_deadline_ns
            }
        );
        assert_eq!(
            queue.offer_again(1001, second_deadline_ns, second_deadline_ns),
            Offer::Dropped {
                item: 1001,
                reason: EgressDropReason::BlockTimeout
            }
        );
        assert_eq!(queue.stats(150 * MS).dropped, 2);
    }

    #[test]
    fn close_drops_what_is_buffered_with_its_own_reason() {
        let mut queue = filled(EgressConfig::default(), 950);
        assert_eq!(queue.close(20 * MS), 950);
        assert!(queue.is_empty());
        let stats = queue.stats(30 * MS);
        assert_eq!(
            stats.dropped_by_reason[EgressDropReason::Closed.index()],
            950
        );
        assert_eq!(stats.pause_ns_total, 20 * MS);
        assert_eq!(stats.state, FlowState::Normal);
        // Not the client's doing: no effect on its health.
        assert_eq!(queue.health(30 * MS), EgressHealth::Healthy);
    }

    #[test]
    fn health_thresholds_at_9_9_10_30_and_30_1_percent() {
        let config = EgressConfig::default();
        assert_eq!(
            with_drop_rate(config, 1000, 99).health(0),
            EgressHealth::Healthy
        );
        assert_eq!(
            with_drop_rate(config, 1000, 100).health(0),
            EgressHealth::Warning
        );
        assert_eq!(
            with_drop_rate(config, 1000, 300).health(0),
            EgressHealth::Warning
        );
        assert_eq!(
            with_drop_rate(config, 1000, 301).health(0),
            EgressHealth::Unhealthy {
                recommend_disconnect: false
            }
        );
        let disconnecting = EgressConfig {
            disconnect_unhealthy: true,
            ..config
        };
        assert_eq!(
            with_drop_rate(disconnecting, 1000, 301).health(0),
            EgressHealth::Unhealthy {
                recommend_disconnect: true
            }
        );
    }

    #[test]
    fn no_verdict_before_the_minimum_offers_and_old_drops_leave_the_window() {
        let config = EgressConfig::default();
        // 99 offers, 90 dropped: too few to judge.
        assert_eq!(
            with_drop_rate(config, 99, 90).health(0),
            EgressHealth::Healthy
        );
        let mut queue = with_drop_rate(config, 100, 90);
        assert!(matches!(queue.health(0), EgressHealth::Unhealthy { .. }));
        // The window is 10 s in 1 s slots: at 9.999 s the drops at 0 still count, at 10 s
        // they are gone.
        assert!(matches!(
            queue.health(10_000 * MS - 1),
            EgressHealth::Unhealthy { .. }
        ));
        assert_eq!(queue.health(10_000 * MS), EgressHealth::Healthy);
        // New clean traffic dilutes what is left in the window.
        queue.pop(5_000 * MS);
        for item in 0..900 {
            let _ = queue.offer(item, 5_000 * MS);
            queue.pop(5_000 * MS);
        }
        // 1000 offers, 90 dropped: 9%.
        assert_eq!(queue.health(5_000 * MS), EgressHealth::Healthy);
    }

    #[test]
    fn counters_reconcile_under_every_policy() {
        for policy in [
            EgressDropPolicy::DropOldest,
            EgressDropPolicy::DropNewest,
            EgressDropPolicy::Block,
            EgressDropPolicy::DropAll,
        ] {
            let config = EgressConfig {
                buffer_capacity: 20,
                block_timeout_ns: 2_000,
                ..config_with(policy)
            };
            let mut queue = EgressQueue::new(config).unwrap();
            let mut offered = 0u64;
            let mut reported = 0u64;
            let mut held = None;
            let mut batch = Vec::new();
            for step in 0..500u64 {
                let now_ns = step * 1_000;
                let offer = match held.take() {
                    Some((item, deadline_ns)) => queue.offer_again(item, deadline_ns, now_ns),
                    None => queue.offer(step, now_ns),
                };
                match offer {
                    Offer::Blocked { item, deadline_ns } => held = Some((item, deadline_ns)),
                    _ => offered += 1,
                }
                if step % 4 == 0 {
                    queue.pop(now_ns);
                }
                if step % 50 == 0 {
                    queue.drain_into(&mut batch, 4, now_ns);
                    reported += queue.dropped_since_last_report();
                }
                let stats = queue.stats(now_ns);
                assert!(stats.buffered <= stats.buffer_capacity);
                assert_eq!(
                    stats.sent + stats.dropped + u64::from(stats.buffered),
                    offered,
                    "{policy:?}"
                );
                assert_eq!(stats.dropped, stats.dropped_by_reason.iter().sum::<u64>());
            }
            let stats = queue.stats(500_000);
            assert!(stats.dropped > 0, "{policy:?}");
            assert_eq!(reported + queue.dropped_since_last_report(), stats.dropped);
        }
    }

    #[test]
    fn the_buffer_starts_small_and_never_grows_past_its_capacity() {
        let mut queue = EgressQueue::new(config_with(EgressDropPolicy::DropOldest)).unwrap();
        assert!(queue.buffer.capacity() < 100);
        for item in 0..5000u32 {
            let _ = queue.offer(item, u64::from(item));
            assert!(queue.len() <= 1000);
        }
        // VecDeque grows by doubling: at most the next power of two over the capacity.
        assert!(
            queue.buffer.capacity() <= 1024,
            "{}",
            queue.buffer.capacity()
        );
    }

    #[test]
    fn signals_are_handed_out_once_when_the_instruction_changes() {
        let config = EgressConfig::default();
        let mut queue = filled(config, 699);
        assert_eq!(queue.poll_signal(0), None);
        assert_eq!(
            queue.offer(699, 0),
            Offer::Queued {
                signal: Some(FlowSignal::Throttle { delay_ns: 0 })
            }
        );
        assert_eq!(queue.poll_signal(0), None);
        // The delay steps by a tenth of its range (50 ms = 20 replies) before it is re-sent.
        for item in 700..719 {
            assert_eq!(queue.offer(item, 0), Offer::Queued { signal: None });
        }
        assert_eq!(
            queue.offer(719, 0),
            Offer::Queued {
                signal: Some(FlowSignal::Throttle { delay_ns: 50 * MS })
            }
        );
        // Down by less than a step: nothing to say.
        queue.pop(0);
        assert_eq!(queue.poll_signal(0), None);
        // Back under 70%: resume, once.
        let mut batch = Vec::new();
        queue.drain_into(&mut batch, 100, 0);
        assert_eq!(queue.poll_signal(0), Some(FlowSignal::Resume));
        assert_eq!(queue.poll_signal(0), None);
        let stats = queue.stats(0);
        assert_eq!((stats.throttle_events, stats.pause_events), (2, 0));
    }

    #[test]
    fn pauses_follow_each_other_while_the_buffer_stays_full_enough() {
        // Filling handed out a Throttle at 70% and one per 20 replies after: 10 in all.
        let mut queue = filled(EgressConfig::default(), 899);
        assert_eq!(queue.stats(0).throttle_events, 10);
        assert_eq!(queue.poll_signal(0), None);
        assert_eq!(
            queue.offer(899, 10 * MS),
            Offer::Queued {
                signal: Some(FlowSignal::Pause {
                    duration_ns: 50 * MS
                })
            }
        );
        assert_eq!(
            queue.state(10 * MS),
            FlowState::Paused { until_ns: 60 * MS }
        );
        // Full: still the same pause.
        for item in 900..1000 {
            assert_eq!(queue.offer(item, 20 * MS), Offer::Queued { signal: None });
        }
        assert_eq!(queue.state(20 * MS), FlowState::Dropping);
        assert_eq!(queue.poll_signal(59 * MS), None);
        // The pause ran out with the buffer still full: a new one.
        assert_eq!(
            queue.poll_signal(70 * MS),
            Some(FlowSignal::Pause {
                duration_ns: 40 * MS
            })
        );
        assert_eq!(queue.poll_signal(70 * MS), None);
        queue.pop(80 * MS);
        assert_eq!(
            queue.state(80 * MS),
            FlowState::Paused { until_ns: 110 * MS }
        );
        assert_eq!(queue.poll_signal(80 * MS), None);
        // Down to 80%: throttle again; the stretch of pausing lasted 10 ms to 90 ms.
        let mut batch = Vec::new();
        queue.drain_into(&mut batch, 199, 90 * MS);
        assert_eq!(
            queue.poll_signal(90 * MS),
            Some(FlowSignal::Throttle { delay_ns: 250 * MS })
        );
        let stats = queue.stats(200 * MS);
        assert_eq!(stats.pause_ns_total, 80 * MS);
        assert_eq!((stats.throttle_events, stats.pause_events), (11, 2));
        assert_eq!(stats.sent, 200);
        // Pausing again starts a new stretch, counted from its own start.
        for item in 0..100 {
            let _ = queue.offer(item, 300 * MS);
        }
        assert_eq!(
            queue.state(300 * MS),
            FlowState::Paused { until_ns: 350 * MS }
        );
        assert_eq!(queue.stats(320 * MS).pause_ns_total, 100 * MS);
    }

    #[test]
    fn an_invalid_config_is_refused_with_the_field_named() {
        let config = EgressConfig {
            pause_percent: 1,
            ..EgressConfig::default()
        };
        let error = EgressQueue::<u8>::new(config).unwrap_err();
        assert_eq!(
            error.to_string(),
            "egress.pause_percent must be in 2..=100, got 1"
        );
        let config = EgressConfig {
            block_timeout_ns: 0,
            ..EgressConfig::default()
        };
        assert_eq!(
            EgressQueue::<u8>::new(config).unwrap_err().field,
            "egress.block_timeout_ns"
        );
    }

    #[test]
    fn drop_reason_names_are_distinct_and_indices_follow_all() {
        for (index, reason) in EgressDropReason::ALL.into_iter().enumerate() {
            assert_eq!(reason.index(), index);
        }
        let mut names = EgressDropReason::ALL.map(EgressDropReason::name).to_vec();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), EgressDropReason::COUNT);
    }
}
