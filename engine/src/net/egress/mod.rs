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
//! The fill puts the connection in a [`FlowState`]: items buffered over the capacity or, for
//! a queue whose items have a size ([`EgressQueue::sized`], the server's Replies with their
//! responses), their bytes over [`EgressConfig::buffer_bytes`], whichever is fuller:
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

use crate::config::{range, ConfigError, EgressConfig, EgressDropPolicy};

mod health;
mod queue;
mod state;
mod stats;
#[cfg(test)]
mod tests;

pub use health::EgressHealth;
pub use queue::{EgressQueue, Offer, INITIAL_SLOTS};
pub use state::{FlowSignal, FlowState};
pub use stats::{EgressDropReason, EgressStats};

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
