//! Egress flow-control settings (SPEC 4): the `[egress]` section of [`Config`](super::Config).
//! The flow control itself is [`net::egress`](crate::net::egress).

use serde::{Deserialize, Serialize};

use super::{check, range, ConfigError};

/// Which item goes when a reply meets a full send buffer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EgressDropPolicy {
    /// Drop the oldest buffered reply and queue the new one (SPEC default).
    #[default]
    DropOldest,
    /// Drop the new reply.
    DropNewest,
    /// Hand the new reply back with a deadline ([`Offer::Blocked`](crate::net::egress::Offer::Blocked)); the caller offers it
    /// again, and once `block_timeout_ns` has passed since the first refusal it is dropped.
    Block,
    /// Drop every buffered reply, then queue the new one.
    DropAll,
}

/// Egress flow-control settings of one connection (SPEC 4), the `[egress]` section of
/// [`Config`](crate::config::Config). Defaults are SPEC's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressConfig {
    /// Replies the send buffer holds (SPEC: 1000); 1 to 2^20. Reserved when a queue is made.
    #[serde(deserialize_with = "range::egress_buffer_capacity")]
    pub buffer_capacity: u32,
    /// Bytes of Reply frames the send buffer holds (default 4 MiB); 1 KiB to 4 GiB. The
    /// fill is the larger of the replies over `buffer_capacity` and these bytes over this,
    /// so large responses throttle, pause and meet the drop policy as many small replies
    /// do. An empty buffer takes one reply of any size, so a response larger than this
    /// still goes out, alone.
    #[serde(deserialize_with = "range::egress_buffer_bytes")]
    pub buffer_bytes: u64,
    /// Fill percentage from which the connection is Throttled (SPEC: 70); below
    /// `pause_percent`.
    #[serde(deserialize_with = "range::percent")]
    pub throttle_percent: u32,
    /// Fill percentage from which the connection is Paused (SPEC: 90); 2 to 100.
    #[serde(deserialize_with = "range::egress_pause_percent")]
    pub pause_percent: u32,
    /// Throttle delay at `throttle_percent`, in ns (SPEC: 0); at most `throttle_delay_max_ns`.
    #[serde(deserialize_with = "range::egress_delay_ns")]
    pub throttle_delay_min_ns: u64,
    /// Throttle delay at `pause_percent`, the end of the linear ramp, in ns (SPEC: 500 ms);
    /// at most 60 s.
    #[serde(deserialize_with = "range::egress_delay_ns")]
    pub throttle_delay_max_ns: u64,
    /// Length of one pause, in ns (SPEC: 50 ms); 1 µs to 60 s.
    #[serde(deserialize_with = "range::egress_period_ns")]
    pub pause_duration_ns: u64,
    /// What happens to a reply that meets a full buffer (SPEC: drop oldest).
    pub drop_policy: EgressDropPolicy,
    /// Under [`EgressDropPolicy::Block`], how long an offer may be refused before its item
    /// is dropped, in ns; 1 µs to 60 s.
    #[serde(deserialize_with = "range::egress_period_ns")]
    pub block_timeout_ns: u64,
    /// The span the drop rate is measured over, in ns; 10 ms to 1 h.
    #[serde(deserialize_with = "range::egress_health_window_ns")]
    pub health_window_ns: u64,
    /// No health verdict (healthy) until the window holds at least this many offers; 1 to
    /// 2^24.
    #[serde(deserialize_with = "range::egress_health_min_offered")]
    pub health_min_offered: u32,
    /// Drop rate, in percent of offers, from which the connection is a warning (SPEC: 10);
    /// at most `unhealthy_drop_percent`.
    #[serde(deserialize_with = "range::percent")]
    pub warning_drop_percent: u32,
    /// Drop rate, in percent of offers, over which the connection is unhealthy (SPEC: 30);
    /// 1 to 100.
    #[serde(deserialize_with = "range::percent")]
    pub unhealthy_drop_percent: u32,
    /// Recommend disconnecting an unhealthy client ([`EgressHealth::Unhealthy`](crate::net::egress::EgressHealth::Unhealthy)'s
    /// `recommend_disconnect`); off by default.
    pub disconnect_unhealthy: bool,
}

impl EgressConfig {
    /// Checks every value; the first bad one is named (as `egress.FIELD`, its path in a
    /// configuration file) with its allowed range.
    ///
    /// ```
    /// use spillway::config::EgressConfig;
    /// let mut config = EgressConfig::default();
    /// config.validate().unwrap();
    /// config.throttle_percent = 95;
    /// assert_eq!(
    ///     config.validate().unwrap_err().to_string(),
    ///     "egress.throttle_percent must be in 1..=89, got 95"
    /// );
    /// ```
    pub fn validate(&self) -> Result<(), ConfigError> {
        // throttle < pause <= 100 and warning <= unhealthy, each checked from the top down so
        // that the field named is the one out of order with the level above it.
        check_fields!(self, "egress.";
            buffer_capacity in range::EGRESS_BUFFER_CAPACITY;
            buffer_bytes in range::EGRESS_BUFFER_BYTES;
            pause_percent in range::EGRESS_PAUSE_PERCENT;
            throttle_percent in 1..=self.pause_percent - 1;
            throttle_delay_max_ns in range::EGRESS_DELAY_NS;
            throttle_delay_min_ns in 0..=self.throttle_delay_max_ns;
            pause_duration_ns in range::EGRESS_PERIOD_NS;
            block_timeout_ns in range::EGRESS_PERIOD_NS;
            health_window_ns in range::EGRESS_HEALTH_WINDOW_NS;
            health_min_offered in range::EGRESS_HEALTH_MIN_OFFERED;
            unhealthy_drop_percent in range::PERCENT;
            warning_drop_percent in 1..=self.unhealthy_drop_percent;
        );
        Ok(())
    }

    /// The throttle delay for `buffered` items, in ns: `throttle_delay_min_ns` at and below
    /// `throttle_percent` of the capacity, `throttle_delay_max_ns` at and above
    /// `pause_percent`, linear in between (rounded down). Exact in integers: the product is
    /// at most 60 s in ns (2^36) times 100 * 2^20 (2^27), computed in `u128`.
    ///
    /// ```
    /// use spillway::config::EgressConfig;
    /// let config = EgressConfig::default(); // 1000 slots, 70% to 90%, 0 to 500 ms
    /// assert_eq!(config.throttle_delay_ns(700), 0);
    /// assert_eq!(config.throttle_delay_ns(800), 250_000_000);
    /// assert_eq!(config.throttle_delay_ns(899), 497_500_000);
    /// assert_eq!(config.throttle_delay_ns(900), 500_000_000);
    /// ```
    pub fn throttle_delay_ns(&self, buffered: u32) -> u64 {
        let capacity = u64::from(self.buffer_capacity);
        let fill = u64::from(buffered) * 100;
        let start = u64::from(self.throttle_percent) * capacity;
        let end = u64::from(self.pause_percent) * capacity;
        if fill <= start {
            return self.throttle_delay_min_ns;
        }
        if fill >= end {
            return self.throttle_delay_max_ns;
        }
        // Here start < fill < end, so the divisor is not zero.
        let range_ns = self
            .throttle_delay_max_ns
            .saturating_sub(self.throttle_delay_min_ns);
        let ramp_ns = u128::from(range_ns) * u128::from(fill - start) / u128::from(end - start);
        // ramp_ns < range_ns, which fits a u64.
        self.throttle_delay_min_ns + ramp_ns as u64
    }
}
