//! The adaptive rate controller of SPEC 3, level 1: when a connection's handler latency goes
//! over a threshold its rate is cut by a percentage per adjustment, down to a floor; once the
//! latency is back under the threshold it recovers by a smaller percentage per interval, up to
//! the nominal rate (additive-increase would be too slow from a deep cut; multiplicative both
//! ways, with a cut twice the recovery, settles without oscillating at the threshold).
//!
//! The controller owns no clock and no latency statistic: its owner (the shard that owns the
//! connection) calls [`AdaptiveRate::on_interval`] once per adjustment interval with the
//! latency it observed in that interval, and the controller drives
//! [`TokenBucket::set_rate`](super::TokenBucket::set_rate).

use core::num::NonZeroU32;

use super::TokenBucket;

/// Settings of the controller. Defaults are SPEC 3's: threshold 100 ms, cut 10%, recover 5%.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdaptiveSettings {
    /// Latency above which the rate is cut, in nanoseconds.
    pub latency_threshold_ns: u64,
    /// Percentage the rate is cut by per adjustment, `1..=99`.
    pub cut_percent: u32,
    /// Percentage the rate recovers by per interval, `1..=100`.
    pub recover_percent: u32,
    /// The rate is never cut below this, in messages per second; at most the nominal rate.
    pub floor_per_sec: NonZeroU32,
}

impl Default for AdaptiveSettings {
    fn default() -> Self {
        Self {
            latency_threshold_ns: 100_000_000,
            cut_percent: 10,
            recover_percent: 5,
            floor_per_sec: NonZeroU32::MIN,
        }
    }
}

/// An invalid [`AdaptiveSettings`] value, naming the field and its allowed range.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AdaptiveError {
    /// `cut_percent` outside `1..=99`.
    #[error("cut_percent must be in 1..=99, got {0}")]
    CutPercent(u32),
    /// `recover_percent` outside `1..=100`.
    #[error("recover_percent must be in 1..=100, got {0}")]
    RecoverPercent(u32),
    /// `floor_per_sec` above the nominal rate.
    #[error(
        "floor_per_sec must be in 1..={nominal_per_sec} (the nominal rate), got {floor_per_sec}"
    )]
    FloorAboveNominal {
        /// The floor asked for.
        floor_per_sec: u32,
        /// The nominal rate it must not exceed.
        nominal_per_sec: u32,
    },
}

/// What one [`AdaptiveRate::on_interval`] call did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RateDecision {
    /// Latency was over the threshold and the rate was cut.
    Cut {
        /// Rate before, in messages per second.
        from_per_sec: u32,
        /// Rate after.
        to_per_sec: u32,
    },
    /// Latency was under the threshold and the rate moved back toward nominal.
    Recovered {
        /// Rate before, in messages per second.
        from_per_sec: u32,
        /// Rate after.
        to_per_sec: u32,
    },
    /// Nothing to change: at the floor while slow, or at nominal while fast.
    Held,
}

/// Drives one bucket's rate from observed handler latency.
///
/// ```
/// use core::num::NonZeroU32;
/// use spillway::bucket::{AdaptiveRate, AdaptiveSettings, RateDecision, TokenBucket};
/// let nominal = NonZeroU32::new(500).unwrap();
/// let bucket = TokenBucket::new(nominal, NonZeroU32::new(1000).unwrap());
/// let mut controller = AdaptiveRate::new(nominal, AdaptiveSettings::default()).unwrap();
/// // An interval whose handler latency was 150 ms: cut by 10%.
/// assert_eq!(
///     controller.on_interval(150_000_000, &bucket),
///     RateDecision::Cut { from_per_sec: 500, to_per_sec: 450 }
/// );
/// assert_eq!(bucket.rate_per_sec().get(), 450);
/// // Back under 100 ms: recover by 5% per interval.
/// assert_eq!(
///     controller.on_interval(20_000_000, &bucket),
///     RateDecision::Recovered { from_per_sec: 450, to_per_sec: 473 }
/// );
/// ```
#[derive(Clone, Debug)]
pub struct AdaptiveRate {
    settings: AdaptiveSettings,
    nominal_per_sec: u32,
    current_per_sec: u32,
}

impl AdaptiveRate {
    /// A controller at `nominal` whose settings are checked here, once.
    pub fn new(nominal: NonZeroU32, settings: AdaptiveSettings) -> Result<Self, AdaptiveError> {
        if !(1..=99).contains(&settings.cut_percent) {
            return Err(AdaptiveError::CutPercent(settings.cut_percent));
        }
        if !(1..=100).contains(&settings.recover_percent) {
            return Err(AdaptiveError::RecoverPercent(settings.recover_percent));
        }
        if settings.floor_per_sec > nominal {
            return Err(AdaptiveError::FloorAboveNominal {
                floor_per_sec: settings.floor_per_sec.get(),
                nominal_per_sec: nominal.get(),
            });
        }
        Ok(Self {
            settings,
            nominal_per_sec: nominal.get(),
            current_per_sec: nominal.get(),
        })
    }

    /// The rate the controller last set, in messages per second.
    pub fn current_per_sec(&self) -> u32 {
        self.current_per_sec
    }

    /// Adjusts `bucket` for one interval in which the handler latency was `latency_ns`.
    pub fn on_interval(&mut self, latency_ns: u64, bucket: &TokenBucket) -> RateDecision {
        let decision = decide(
            &self.settings,
            self.nominal_per_sec,
            self.current_per_sec,
            latency_ns,
        );
        if let Some(to_per_sec) = decision.new_rate() {
            self.current_per_sec = to_per_sec;
            bucket.set_rate(NonZeroU32::new(to_per_sec).expect("rates stay at or above the floor"));
        }
        decision
    }
}

impl RateDecision {
    /// The rate to set, if the decision changes it.
    pub fn new_rate(self) -> Option<u32> {
        match self {
            RateDecision::Cut { to_per_sec, .. } | RateDecision::Recovered { to_per_sec, .. } => {
                Some(to_per_sec)
            }
            RateDecision::Held => None,
        }
    }
}

/// The controller's rule as a pure function, for owners that keep only the current rate per
/// connection (a shard with thousands of connections shares one `settings` and `nominal`).
/// `settings` must have passed [`AdaptiveRate::new`]'s checks.
pub fn decide(
    settings: &AdaptiveSettings,
    nominal_per_sec: u32,
    current_per_sec: u32,
    latency_ns: u64,
) -> RateDecision {
    let from_per_sec = current_per_sec;
    let to_per_sec = if latency_ns > settings.latency_threshold_ns {
        // u64: from ≤ u32::MAX and the factor ≤ 99 cannot overflow. Rounds down, so a cut
        // always lowers a rate above the floor by at least one.
        let cut = u64::from(from_per_sec) * u64::from(100 - settings.cut_percent) / 100;
        (cut as u32).max(settings.floor_per_sec.get())
    } else {
        // Rounds the step up to at least one message per second, so small rates recover.
        let step = (u64::from(from_per_sec) * u64::from(settings.recover_percent))
            .div_ceil(100)
            .max(1);
        (u64::from(from_per_sec) + step).min(u64::from(nominal_per_sec)) as u32
    };
    match to_per_sec.cmp(&from_per_sec) {
        core::cmp::Ordering::Less => RateDecision::Cut {
            from_per_sec,
            to_per_sec,
        },
        core::cmp::Ordering::Greater => RateDecision::Recovered {
            from_per_sec,
            to_per_sec,
        },
        core::cmp::Ordering::Equal => RateDecision::Held,
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn rate(value: u32) -> NonZeroU32 {
        NonZeroU32::new(value).unwrap()
    }

    #[test]
    fn cuts_to_the_floor_and_holds_there() {
        let bucket = TokenBucket::new(rate(500), rate(1000));
        let settings = AdaptiveSettings {
            floor_per_sec: rate(300),
            ..AdaptiveSettings::default()
        };
        let mut controller = AdaptiveRate::new(rate(500), settings).unwrap();
        let mut rates = Vec::new();
        for _ in 0..8 {
            controller.on_interval(200_000_000, &bucket);
            rates.push(controller.current_per_sec());
        }
        assert_eq!(rates, [450, 405, 364, 327, 300, 300, 300, 300]);
        assert_eq!(
            controller.on_interval(200_000_000, &bucket),
            RateDecision::Held
        );
        assert_eq!(bucket.rate_per_sec().get(), 300);
    }

    #[test]
    fn recovers_to_nominal_and_never_past_it() {
        let bucket = TokenBucket::new(rate(20), rate(40));
        let mut controller = AdaptiveRate::new(rate(20), AdaptiveSettings::default()).unwrap();
        for _ in 0..30 {
            controller.on_interval(u64::MAX, &bucket);
        }
        assert_eq!(controller.current_per_sec(), 1);
        let mut intervals = 0;
        while controller.on_interval(0, &bucket) != RateDecision::Held {
            intervals += 1;
            assert!(intervals < 100, "recovery must make progress");
        }
        assert_eq!(controller.current_per_sec(), 20);
        assert_eq!(bucket.rate_per_sec().get(), 20);
    }

    #[test]
    fn latency_exactly_at_the_threshold_is_not_slow() {
        let bucket = TokenBucket::new(rate(100), rate(200));
        let mut controller = AdaptiveRate::new(rate(100), AdaptiveSettings::default()).unwrap();
        assert_eq!(
            controller.on_interval(100_000_000, &bucket),
            RateDecision::Held
        );
    }

    #[test]
    fn invalid_settings_name_the_field() {
        let nominal = rate(100);
        let bad_cut = AdaptiveSettings {
            cut_percent: 0,
            ..AdaptiveSettings::default()
        };
        assert_eq!(
            AdaptiveRate::new(nominal, bad_cut).unwrap_err().to_string(),
            "cut_percent must be in 1..=99, got 0"
        );
        let bad_recover = AdaptiveSettings {
            recover_percent: 101,
            ..AdaptiveSettings::default()
        };
        assert!(matches!(
            AdaptiveRate::new(nominal, bad_recover),
            Err(AdaptiveError::RecoverPercent(101))
        ));
        let bad_floor = AdaptiveSettings {
            floor_per_sec: rate(101),
            ..AdaptiveSettings::default()
        };
        assert!(AdaptiveRate::new(nominal, bad_floor)
            .unwrap_err()
            .to_string()
            .starts_with("floor_per_sec must be in 1..=100"));
    }
}
