//! The open-loop schedule: when each simulated connection is meant to send.
//!
//! `connections` connections share `rate_per_sec` messages per second evenly: each sends
//! every `period = connections / rate` seconds, and connection `c` is offset by
//! `c × period / connections` so that the aggregate stream is evenly spaced instead of
//! arriving in bursts of `connections`. Send times are computed from the message's ordinal
//! (`k × 1e9 / rate`, in exact integer arithmetic) rather than by adding a rounded period, so
//! the schedule never drifts: after a million messages it is exactly where it should be.

/// One scheduled send: which connection sends, and when it is meant to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScheduledSend {
    /// The sending connection, `0..connections`.
    pub connection: u32,
    /// Intended send time in nanoseconds from the start of the run. Latency is measured from
    /// here, not from when the generator got round to sending, so a stalled system cannot
    /// hide its stall by slowing the generator down (coordinated omission).
    pub intended_ns: u64,
}

/// An evenly spread open-loop schedule over all connections, in time order.
///
/// ```
/// use spillway_loadgen::schedule::OpenLoopSchedule;
/// // 4 connections sharing 1000 msg/s: one message per millisecond, round robin.
/// let mut schedule = OpenLoopSchedule::new(4, 1000).unwrap();
/// let first: Vec<_> = (0..5).map(|_| schedule.next_send()).collect();
/// assert_eq!(first[1].connection, 1);
/// assert_eq!(first[1].intended_ns, 1_000_000);
/// assert_eq!(first[4].connection, 0); // connection 0 again after its 4 ms period
/// assert_eq!(first[4].intended_ns, 4_000_000);
/// ```
#[derive(Clone, Debug)]
pub struct OpenLoopSchedule {
    connections: u32,
    rate_per_sec: u64,
    /// Ordinal of the next message in the aggregate stream.
    next_ordinal: u64,
}

/// A schedule that cannot be built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScheduleError {
    /// No connections to send on.
    NoConnections,
    /// A rate of zero messages per second.
    ZeroRate,
}

impl core::fmt::Display for ScheduleError {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::NoConnections => write!(formatter, "connections must be at least 1"),
            Self::ZeroRate => write!(formatter, "rate must be at least 1 message per second"),
        }
    }
}

impl std::error::Error for ScheduleError {}

impl OpenLoopSchedule {
    /// A schedule for `connections` connections sending `rate_per_sec` in total.
    pub fn new(connections: u32, rate_per_sec: u64) -> Result<Self, ScheduleError> {
        if connections == 0 {
            return Err(ScheduleError::NoConnections);
        }
        if rate_per_sec == 0 {
            return Err(ScheduleError::ZeroRate);
        }
        Ok(Self {
            connections,
            rate_per_sec,
            next_ordinal: 0,
        })
    }

    /// The next send in time order. Message `k` goes to connection `k mod connections` at
    /// `k × 1e9 / rate` ns, so every connection's own sends are exactly `period` apart.
    pub fn next_send(&mut self) -> ScheduledSend {
        let ordinal = self.next_ordinal;
        self.next_ordinal += 1;
        self.send_at(ordinal)
    }

    /// Send number `ordinal` of the stream, computed from the ordinal alone: the generator
    /// recomputes a message's intended time from its id when its completion arrives, so it
    /// stores nothing per message.
    pub fn send_at(&self, ordinal: u64) -> ScheduledSend {
        ScheduledSend {
            connection: (ordinal % u64::from(self.connections)) as u32,
            intended_ns: self.intended_ns(ordinal),
        }
    }

    /// Intended send time of message `ordinal`: `ordinal × 1e9 / rate` ns.
    #[inline]
    pub fn intended_ns(&self, ordinal: u64) -> u64 {
        // u128: ordinal × 1e9 overflows u64 after 1.8e10 messages.
        (u128::from(ordinal) * 1_000_000_000 / u128::from(self.rate_per_sec))
            .try_into()
            .unwrap_or(u64::MAX)
    }

    /// Number of messages whose intended time is before `ns` (the ordinal of the first
    /// message at or after `ns`).
    pub fn messages_before(&self, ns: u64) -> u64 {
        // Smallest k with k × 1e9 / rate ≥ ns, i.e. k × 1e9 ≥ ns × rate (rounded down
        // division), is ceil(ns × rate / 1e9).
        let scaled = u128::from(ns) * u128::from(self.rate_per_sec);
        scaled
            .div_ceil(1_000_000_000)
            .try_into()
            .unwrap_or(u64::MAX)
    }

    /// Connections sharing the stream.
    pub fn connections(&self) -> u32 {
        self.connections
    }

    /// Messages per second, all connections together.
    pub fn rate_per_sec(&self) -> u64 {
        self.rate_per_sec
    }

    /// Each connection's send period in nanoseconds (rounded down; the schedule itself does
    /// not accumulate this rounding).
    pub fn period_ns(&self) -> u64 {
        u64::from(self.connections) * 1_000_000_000 / self.rate_per_sec
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_connection_keeps_its_own_period_without_drift() {
        // 3 connections at 7 msg/s: a period of 3/7 s that is not a whole number of ns.
        let mut schedule = OpenLoopSchedule::new(3, 7).unwrap();
        let sends: Vec<_> = (0..7_000).map(|_| schedule.next_send()).collect();
        // After exactly 1000 s of schedule the stream is exactly at 1000 s.
        assert_eq!(sends[6_999].intended_ns, 6_999 * 1_000_000_000 / 7);
        let connection_zero: Vec<u64> = sends
            .iter()
            .filter(|send| send.connection == 0)
            .map(|send| send.intended_ns)
            .collect();
        for pair in connection_zero.windows(2) {
            let gap = pair[1] - pair[0];
            assert!(gap == 428_571_428 || gap == 428_571_429, "gap {gap}");
        }
        assert!(sends
            .windows(2)
            .all(|pair| pair[0].intended_ns <= pair[1].intended_ns));
    }

    #[test]
    fn messages_before_is_the_first_ordinal_at_or_after() {
        let schedule = OpenLoopSchedule::new(3, 7).unwrap();
        for ns in [
            0,
            1,
            142_857_142,
            142_857_143,
            1_000_000_000,
            999_999_999_999,
        ] {
            let k = schedule.messages_before(ns);
            assert!(schedule.intended_ns(k) >= ns, "ns {ns} k {k}");
            if k > 0 {
                assert!(schedule.intended_ns(k - 1) < ns, "ns {ns} k {k}");
            }
        }
    }

    #[test]
    fn invalid_schedules_are_refused() {
        assert_eq!(
            OpenLoopSchedule::new(0, 10).unwrap_err(),
            ScheduleError::NoConnections
        );
        assert_eq!(
            OpenLoopSchedule::new(10, 0).unwrap_err().to_string(),
            "rate must be at least 1 message per second"
        );
    }

    #[test]
    fn saturation_defaults_give_each_connection_its_30ms_period() {
        let schedule = OpenLoopSchedule::new(15_000, 500_000).unwrap();
        assert_eq!(schedule.period_ns(), 30_000_000);
    }
}
