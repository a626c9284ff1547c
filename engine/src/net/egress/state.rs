//! The flow state a buffer's fill puts a connection in ([`FlowState`]), and what the client
//! is told of it ([`FlowSignal`]): the bands of fill and the instruction last given.

use super::{EgressConfig, THROTTLE_SIGNAL_STEPS};

/// The fill band a buffer is in, before time (the pause in progress) is looked at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Band {
    Normal,
    Throttled,
    Paused,
    Full,
}

impl Band {
    /// Paused and Full both tell the client to pause.
    pub(super) fn is_pausing(self) -> bool {
        matches!(self, Band::Paused | Band::Full)
    }
}

impl EgressConfig {
    /// The band `buffered` items put the buffer in.
    pub(super) fn band(&self, buffered: u32) -> Band {
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
    pub(super) fn throttle_signal_step_ns(&self) -> u64 {
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

impl FlowSignal {
    /// Kinds of signal: throttle, pause, resume.
    /// Kinds of signal: throttle, pause, resume.
    pub const KINDS: usize = 3;

    /// Its kind's place in `throttle`, `pause`, `resume` order: an index for a table of
    /// counts by kind.
    pub(crate) const fn index(self) -> usize {
        match self {
            FlowSignal::Throttle { .. } => 0,
            FlowSignal::Pause { .. } => 1,
            FlowSignal::Resume => 2,
        }
    }

    /// The kinds' names, in [`NetStats::flow_signals_by_kind`](crate::net::server::NetStats)
    /// order.
    pub const KIND_NAMES: [&'static str; Self::KINDS] = ["throttle", "pause", "resume"];
}

/// The instruction the client was last given, to tell when a new one is due.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Instruction {
    Resume,
    Throttle { delay_ns: u64 },
    Pause { until_ns: u64 },
}
