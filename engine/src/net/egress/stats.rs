//! What a connection's egress counts: the drops by [`EgressDropReason`], and the
//! [`EgressStats`] of SPEC 4.

use super::FlowState;
#[cfg(doc)]
use super::{EgressDropPolicy, EgressQueue};

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

/// A connection's egress counters and gauges: SPEC 4's per-connection stats, and the drops by
/// reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EgressStats {
    /// The buffer size (SPEC): replies it holds when full.
    pub buffer_capacity: u32,
    /// The fill (SPEC): replies buffered now.
    pub buffered: u32,
    /// The bound on the bytes of the replies buffered ([`EgressQueue::sized`]).
    pub buffer_bytes: u64,
    /// Bytes of the replies buffered now (0 for items without a size).
    pub buffered_bytes: u64,
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
    /// The fill as a percentage: of the capacity in replies, or of the bound on bytes,
    /// whichever is fuller.
    pub fn fill_percent(&self) -> f64 {
        let by_replies = f64::from(self.buffered) * 100.0 / f64::from(self.buffer_capacity.max(1));
        let by_bytes = self.buffered_bytes as f64 * 100.0 / self.buffer_bytes.max(1) as f64;
        by_replies.max(by_bytes)
    }
}
