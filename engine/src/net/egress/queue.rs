//! The bounded send buffer of one connection ([`EgressQueue`]) and what an offer to it
//! does ([`Offer`]).

use std::collections::VecDeque;

use super::health::HealthWindow;
use super::state::{Band, Instruction};
use super::{
    ConfigError, EgressConfig, EgressDropPolicy, EgressDropReason, EgressHealth, EgressStats,
    FlowSignal, FlowState,
};

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
    /// [`EgressDropReason::DropOldest`]. The fill in replies is unchanged (in bytes it may
    /// not be, for items with a size: [`EgressQueue::sized`]).
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
    /// [`EgressDropPolicy::DropOldest`], and the offered reply needed the bytes of more than
    /// one buffered reply ([`EgressQueue::sized`]): the `dropped_count` oldest were dropped
    /// (counted under [`EgressDropReason::DropOldest`]) and it was queued. One eviction is
    /// [`Offer::Dropped`].
    DroppedOldest {
        /// How many buffered replies were dropped, at least 2.
        dropped_count: u32,
        /// The flow signal now due, if any.
        signal: Option<FlowSignal>,
    },
}

/// The bounded send buffer of one connection, with its flow state, drop policy, signals,
/// counters and health (SPEC 4; see the [module documentation](crate::net::egress)).
///
/// It bounds replies ([`EgressConfig::buffer_capacity`]) and, for a queue made with
/// [`EgressQueue::sized`], their bytes ([`EgressConfig::buffer_bytes`]): the fill that
/// decides the state is the larger of the two, counted in replies (bytes over
/// `buffer_bytes` times the capacity, rounded down), and a reply that would take the bytes
/// over the bound meets the drop policy as one that finds every slot taken. An empty buffer
/// takes one reply of any size.
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
    /// The size of an item, in bytes: what [`EgressConfig::buffer_bytes`] bounds.
    item_bytes: fn(&T) -> u64,
    /// The sum of `item_bytes` over the buffer. At most `config.buffer_bytes`, but for a
    /// lone item larger than that.
    buffered_bytes: u64,
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
    /// Its items have no size: only the count bounds it ([`EgressQueue::sized`] bounds
    /// bytes too).
    pub fn new(config: EgressConfig) -> Result<Self, ConfigError> {
        Self::sized(config, |_| 0)
    }

    /// [`EgressQueue::new`], with items of `item_bytes(item)` bytes each, which
    /// [`EgressConfig::buffer_bytes`] bounds as well. `item_bytes` must give an item the same
    /// size every time it is asked.
    ///
    /// ```
    /// use spillway::config::EgressConfig;
    /// use spillway::net::egress::{EgressDropReason, EgressQueue, FlowSignal, Offer};
    /// let mut config = EgressConfig::default();
    /// (config.buffer_capacity, config.buffer_bytes) = (10, 1024);
    /// let mut queue = EgressQueue::sized(config, |reply: &Vec<u8>| reply.len() as u64).unwrap();
    /// // One reply, but 800 of 1024 bytes: 7 replies' worth, which throttles.
    /// let throttle = Some(FlowSignal::Throttle { delay_ns: 0 });
    /// assert_eq!(queue.offer(vec![0; 800], 0), Offer::Queued { signal: throttle });
    /// assert_eq!(queue.buffered_bytes(), 800);
    /// // 300 more bytes do not fit: the drop policy (drop the oldest) makes room.
    /// let dropped = Offer::Dropped { item: vec![0; 800], reason: EgressDropReason::DropOldest };
    /// assert_eq!(queue.offer(vec![1; 300], 0), dropped);
    /// assert_eq!((queue.len(), queue.buffered_bytes()), (1, 300));
    /// assert_eq!(queue.pop(0), Some(vec![1; 300]));
    /// assert_eq!(queue.buffered_bytes(), 0);
    /// ```
    pub fn sized(config: EgressConfig, item_bytes: fn(&T) -> u64) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self {
            config,
            item_bytes,
            buffered_bytes: 0,
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

    /// Changes the settings at `now_ns`, buffered replies kept. The caller keeps the
    /// buffer's size (`buffer_capacity`, `buffer_bytes`) as it was, and passes settings
    /// already validated; a new health window starts empty. The fill is judged against the
    /// new thresholds at once, so a pause starts (or ends) and is timed from now.
    pub fn set_config(&mut self, config: EgressConfig, now_ns: u64) {
        if config.health_window_ns != self.config.health_window_ns {
            self.health = HealthWindow::new(config.health_window_ns);
        }
        self.config = config;
        self.fill_changed(now_ns);
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

    /// Bytes of the replies buffered ([`EgressQueue::sized`]; 0 for items without a size).
    ///
    /// See the example on [`EgressQueue::sized`].
    pub fn buffered_bytes(&self) -> u64 {
        self.buffered_bytes
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
        let item_bytes = (self.item_bytes)(&item);
        if self.has_room_for(item_bytes) {
            self.push(item, item_bytes);
            self.health.record(now_ns, 1, 0);
            self.fill_changed(now_ns);
            return Offer::Queued {
                signal: self.poll_signal(now_ns),
            };
        }
        match self.config.drop_policy {
            EgressDropPolicy::DropOldest => {
                let oldest = self
                    .take_front()
                    .expect("a full buffer of at least one slot has a front");
                let mut dropped_count = 1;
                while !self.has_room_for(item_bytes) {
                    // Empty, the buffer has room for any item: this ends.
                    self.take_front();
                    dropped_count += 1;
                }
                self.push(item, item_bytes);
                self.health.record(now_ns, 1, 0);
                self.count_drops(EgressDropReason::DropOldest, dropped_count, now_ns);
                self.fill_changed(now_ns);
                if dropped_count == 1 {
                    return Offer::Dropped {
                        item: oldest,
                        reason: EgressDropReason::DropOldest,
                    };
                }
                Offer::DroppedOldest {
                    // At most the capacity, 2^20.
                    dropped_count: dropped_count as u32,
                    signal: self.poll_signal(now_ns),
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
                self.buffered_bytes = 0;
                self.push(item, item_bytes);
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
        let item = self.take_front()?;
        self.sent += 1;
        self.fill_changed(now_ns);
        Some(item)
    }

    /// Takes up to `max_items` of the oldest replies out, in order, onto the end of `out`, at
    /// `now_ns`, and counts them sent; returns how many. A flow signal this makes due is
    /// returned by the next [`poll_signal`](Self::poll_signal).
    pub fn drain_into(&mut self, out: &mut Vec<T>, max_items: usize, now_ns: u64) -> usize {
        let count = max_items.min(self.buffer.len());
        let item_bytes = self.item_bytes;
        let drained_bytes: u64 = self.buffer.range(..count).map(item_bytes).sum();
        self.buffered_bytes -= drained_bytes;
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
        self.buffered_bytes = 0;
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
    /// signal this queue handed out (see the [module documentation](crate::net::egress)); each signal is
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
            buffered: self.buffer.len() as u32,
            buffer_bytes: self.config.buffer_bytes,
            buffered_bytes: self.buffered_bytes,
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

    /// The fill in replies: the replies buffered or, when more, their bytes over
    /// `buffer_bytes` times the capacity (rounded down), at most the capacity.
    fn buffered(&self) -> u32 {
        debug_assert!(self.buffer.len() <= self.capacity());
        // At most the capacity, 2^20.
        let replies = self.buffer.len() as u32;
        // Both factors are below 2^64 and 2^21: exact in u128, and the quotient is clamped
        // to the capacity before it narrows.
        let by_bytes = u128::from(self.buffered_bytes) * u128::from(self.config.buffer_capacity)
            / u128::from(self.config.buffer_bytes.max(1));
        let by_bytes = by_bytes.min(u128::from(self.config.buffer_capacity)) as u32;
        replies.max(by_bytes)
    }

    /// Whether an item of `item_bytes` can be queued now without a drop: a slot is free and
    /// its bytes fit, or the buffer is empty (which takes one item of any size).
    fn has_room_for(&self, item_bytes: u64) -> bool {
        self.buffer.len() < self.capacity()
            && (self.buffer.is_empty()
                || self.buffered_bytes.saturating_add(item_bytes) <= self.config.buffer_bytes)
    }

    fn push(&mut self, item: T, item_bytes: u64) {
        self.buffered_bytes += item_bytes;
        self.buffer.push_back(item);
    }

    fn take_front(&mut self) -> Option<T> {
        let item = self.buffer.pop_front()?;
        self.buffered_bytes -= (self.item_bytes)(&item);
        Some(item)
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
impl<T> EgressQueue<T> {
    /// Slots reserved now, for the test of its growth.
    pub(super) fn reserved_slots(&self) -> usize {
        self.buffer.capacity()
    }
}
