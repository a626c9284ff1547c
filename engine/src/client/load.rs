//! Dynamic rate limiting by CPU load (SPEC 6): the machine's load per core, sampled every
//! 5 s, picks how many Submits a sender sends in a batch and how long it waits between
//! batches.
//!
//! | load per core | batch | wait |
//! |---|---|---|
//! | over 80% | 5 | 200 ms |
//! | over 50% | 10 | 100 ms |
//! | otherwise | 20 | 50 ms |
//!
//! "Over" is strict: exactly 80% is the middle row, exactly 50% the last. Every figure is a
//! setting ([`LoadConfig`]); the mapping is the pure function [`pace_for_load`], and the
//! sampling is a [`LoadSource`] that tests replace.
//!
//! The load is the 1-minute load average of `/proc/loadavg` divided by
//! [`std::thread::available_parallelism`] (which follows CPU affinity and cgroup quotas), as
//! a percentage. On Linux the load average counts runnable tasks and tasks in
//! uninterruptible sleep (mostly disk I/O), so it can exceed 100% per core. Where there is no
//! `/proc/loadavg` (macOS, Windows, a sandbox without `/proc`) the load is unknown, and an
//! unknown load gets the **middle** row: a sender that cannot see the machine should
//! neither hammer it nor crawl.

use core::num::{NonZeroU32, NonZeroUsize};
use core::time::Duration;

use super::ClientError;
use crate::backoff::duration_ns;

/// How a sender paces itself: send `batch` Submits, then wait `wait`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pace {
    /// Submits per batch.
    pub batch: NonZeroU32,
    /// The wait after each batch.
    pub wait: Duration,
}

impl Pace {
    /// A pace of `batch` Submits then `wait`; `None` for an empty batch.
    pub const fn new(batch: u32, wait: Duration) -> Option<Pace> {
        match NonZeroU32::new(batch) {
            Some(batch) => Some(Pace { batch, wait }),
            None => None,
        }
    }
}

/// Settings of [`LoadAdaptation`]; the defaults are SPEC 6's.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LoadConfig {
    /// How often the load is sampled (5 s). Zero samples on every call.
    pub sample_interval: Duration,
    /// Load per core, in percent, over which [`LoadConfig::high_load_pace`] applies (80).
    pub high_load_percent: f64,
    /// Load per core, in percent, over which [`LoadConfig::medium_load_pace`] applies (50);
    /// at most `high_load_percent`.
    pub medium_load_percent: f64,
    /// The pace over `high_load_percent`: batch 5, wait 200 ms.
    pub high_load_pace: Pace,
    /// The pace over `medium_load_percent` (and when the load is unknown): batch 10, wait
    /// 100 ms.
    pub medium_load_pace: Pace,
    /// The pace otherwise: batch 20, wait 50 ms.
    pub low_load_pace: Pace,
}

impl LoadConfig {
    /// Checks what the types cannot: both thresholds are finite and not negative, and the
    /// medium one is at most the high one. The error names the field.
    pub fn validate(&self) -> Result<(), ClientError> {
        for (field, percent) in [
            ("high_load_percent", self.high_load_percent),
            ("medium_load_percent", self.medium_load_percent),
        ] {
            if !percent.is_finite() || percent < 0.0 {
                return Err(ClientError::InvalidSetting {
                    field,
                    reason: format!("{percent} is not a percentage from 0 up"),
                });
            }
        }
        if self.medium_load_percent > self.high_load_percent {
            return Err(ClientError::InvalidSetting {
                field: "medium_load_percent",
                reason: format!(
                    "{} is above high_load_percent ({})",
                    self.medium_load_percent, self.high_load_percent
                ),
            });
        }
        Ok(())
    }
}

impl LoadConfig {
    /// SPEC 6's pace over 80% load per core: batch 5, wait 200 ms.
    pub const DEFAULT_HIGH_LOAD_PACE: Pace = Pace::new(5, Duration::from_millis(200)).unwrap();
    /// SPEC 6's pace over 50% load per core: batch 10, wait 100 ms.
    pub const DEFAULT_MEDIUM_LOAD_PACE: Pace = Pace::new(10, Duration::from_millis(100)).unwrap();
    /// SPEC 6's pace otherwise: batch 20, wait 50 ms.
    pub const DEFAULT_LOW_LOAD_PACE: Pace = Pace::new(20, Duration::from_millis(50)).unwrap();
}

impl Default for LoadConfig {
    fn default() -> Self {
        Self {
            sample_interval: Duration::from_secs(5),
            high_load_percent: 80.0,
            medium_load_percent: 50.0,
            high_load_pace: Self::DEFAULT_HIGH_LOAD_PACE,
            medium_load_pace: Self::DEFAULT_MEDIUM_LOAD_PACE,
            low_load_pace: Self::DEFAULT_LOW_LOAD_PACE,
        }
    }
}

/// The pace for a load per core of `load_percent` (`None`: unknown, which gets the middle
/// row, as does a NaN).
///
/// ```
/// use spillway::client::{pace_for_load, LoadConfig};
///
/// let config = LoadConfig::default();
/// assert_eq!(pace_for_load(&config, Some(80.0)).batch.get(), 10);
/// assert_eq!(pace_for_load(&config, Some(80.01)).batch.get(), 5);
/// ```
pub fn pace_for_load(config: &LoadConfig, load_percent: Option<f64>) -> Pace {
    match load_percent {
        Some(percent) if percent > config.high_load_percent => config.high_load_pace,
        Some(percent) if percent > config.medium_load_percent => config.medium_load_pace,
        Some(percent) if percent.is_nan() => config.medium_load_pace,
        Some(_) => config.low_load_pace,
        None => config.medium_load_pace,
    }
}

/// Where [`LoadAdaptation`] gets the load from.
pub trait LoadSource {
    /// The load per core now, in percent, or `None` if it cannot be known.
    fn load_percent(&mut self) -> Option<f64>;
}

/// The machine's load: `/proc/loadavg`'s 1-minute average over the cores this process may
/// use. Reads a file of a few dozen bytes per sample.
#[derive(Clone, Copy, Debug)]
pub struct SystemLoad {
    /// From [`std::thread::available_parallelism`], 1 when that cannot tell.
    cores: NonZeroUsize,
}

impl SystemLoad {
    /// The file read.
    pub const LOADAVG_PATH: &'static str = "/proc/loadavg";

    /// Counts the cores once, now.
    pub fn new() -> Self {
        Self {
            cores: std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN),
        }
    }

    /// The cores the load is divided by.
    pub fn cores(&self) -> NonZeroUsize {
        self.cores
    }
}

impl Default for SystemLoad {
    fn default() -> Self {
        Self::new()
    }
}

impl LoadSource for SystemLoad {
    fn load_percent(&mut self) -> Option<f64> {
        let text = std::fs::read_to_string(Self::LOADAVG_PATH).ok()?;
        load_percent_per_core(&text, self.cores)
    }
}

/// The load per core in percent from the text of `/proc/loadavg` (`"0.52 0.58 0.59 1/467
/// 12345"`: the 1-minute figure first), or `None` if the text does not start with a
/// finite, non-negative number.
pub fn load_percent_per_core(loadavg: &str, cores: NonZeroUsize) -> Option<f64> {
    let one_minute: f64 = loadavg.split_ascii_whitespace().next()?.parse().ok()?;
    if !one_minute.is_finite() || one_minute < 0.0 {
        return None;
    }
    Some(one_minute / cores.get() as f64 * 100.0)
}

/// SPEC 6's CPU-load adaptation: the current [`Pace`], re-sampled from a [`LoadSource`]
/// once per [`LoadConfig::sample_interval`]. Plain data with the clock passed in.
///
/// ```
/// use spillway::client::{LoadAdaptation, LoadConfig};
///
/// let mut adaptation = LoadAdaptation::new(LoadConfig::default()).unwrap();
/// let pace = adaptation.pace(0);
/// assert!([5, 10, 20].contains(&pace.batch.get()));
/// ```
#[derive(Clone, Debug)]
pub struct LoadAdaptation<S = SystemLoad> {
    config: LoadConfig,
    source: S,
    /// The pace of the last sample.
    pace: Pace,
    /// The load of the last sample, in percent per core.
    load_percent: Option<f64>,
    /// When the last sample was taken, in ns; `None` before the first.
    sampled_at_ns: Option<u64>,
}

impl LoadAdaptation<SystemLoad> {
    /// Adapts to this machine's load, or says which setting is invalid.
    pub fn new(config: LoadConfig) -> Result<Self, ClientError> {
        Self::with_source(config, SystemLoad::new())
    }
}

impl<S: LoadSource> LoadAdaptation<S> {
    /// Adapts to the load `source` reports, or says which setting is invalid.
    pub fn with_source(config: LoadConfig, source: S) -> Result<Self, ClientError> {
        config.validate()?;
        Ok(Self {
            pace: pace_for_load(&config, None),
            config,
            source,
            load_percent: None,
            sampled_at_ns: None,
        })
    }

    /// The pace at `now_ns` (monotonic nanoseconds): samples the load first if it never
    /// has, or if `sample_interval` has passed since it last did.
    pub fn pace(&mut self, now_ns: u64) -> Pace {
        let due = self.sampled_at_ns.is_none_or(|sampled_at_ns| {
            now_ns.saturating_sub(sampled_at_ns) >= duration_ns(self.config.sample_interval)
        });
        if due {
            self.load_percent = self.source.load_percent();
            self.pace = pace_for_load(&self.config, self.load_percent);
            self.sampled_at_ns = Some(now_ns);
        }
        self.pace
    }

    /// The load of the last sample, in percent per core; `None` before the first sample or
    /// when it was unknown.
    pub fn load_percent(&self) -> Option<f64> {
        self.load_percent
    }

    /// The settings.
    pub fn config(&self) -> &LoadConfig {
        &self.config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch_and_wait_ms(pace: Pace) -> (u32, u128) {
        (pace.batch.get(), pace.wait.as_millis())
    }

    #[test]
    fn the_mapping_follows_spec_6_at_its_boundaries() {
        let config = LoadConfig::default();
        let at = |percent: f64| batch_and_wait_ms(pace_for_load(&config, Some(percent)));
        assert_eq!(at(0.0), (20, 50));
        assert_eq!(at(50.0), (20, 50));
        assert_eq!(at(50.01), (10, 100));
        assert_eq!(at(80.0), (10, 100));
        assert_eq!(at(80.01), (5, 200));
        assert_eq!(at(400.0), (5, 200));
        assert_eq!(at(f64::INFINITY), (5, 200));
    }

    #[test]
    fn an_unknown_load_gets_the_middle_row() {
        let config = LoadConfig::default();
        assert_eq!(pace_for_load(&config, None), config.medium_load_pace);
        assert_eq!(
            pace_for_load(&config, Some(f64::NAN)),
            config.medium_load_pace
        );
    }

    #[test]
    fn thresholds_and_paces_are_settings() {
        let mut config = LoadConfig::default();
        config.high_load_percent = 90.0;
        config.medium_load_percent = 10.0;
        config.low_load_pace = Pace::new(100, Duration::from_millis(1)).unwrap();
        assert_eq!(
            batch_and_wait_ms(pace_for_load(&config, Some(10.0))),
            (100, 1)
        );
        assert_eq!(
            batch_and_wait_ms(pace_for_load(&config, Some(90.0))),
            (10, 100)
        );
        assert!(Pace::new(0, Duration::ZERO).is_none());
    }

    #[test]
    fn invalid_thresholds_are_named() {
        let mut config = LoadConfig::default();
        config.medium_load_percent = 85.0;
        let error = config.validate().unwrap_err();
        assert!(
            matches!(
                error,
                ClientError::InvalidSetting {
                    field: "medium_load_percent",
                    ..
                }
            ),
            "{error}"
        );
        let mut config = LoadConfig::default();
        config.high_load_percent = f64::NAN;
        assert!(matches!(
            config.validate(),
            Err(ClientError::InvalidSetting {
                field: "high_load_percent",
                ..
            })
        ));
        let mut config = LoadConfig::default();
        config.medium_load_percent = -1.0;
        assert!(LoadAdaptation::with_source(config, Fixed(vec![])).is_err());
        assert!(LoadConfig::default().validate().is_ok());
    }

    #[test]
    fn loadavg_is_divided_by_the_cores() {
        let four = NonZeroUsize::new(4).unwrap();
        let percent = load_percent_per_core("3.20 2.10 1.00 3/512 9876\n", four).unwrap();
        assert!((percent - 80.0).abs() < 1e-9, "{percent}");
        assert_eq!(
            load_percent_per_core("0.00 0.01 0.05 1/1 1", four),
            Some(0.0)
        );
        assert_eq!(load_percent_per_core("", four), None);
        assert_eq!(load_percent_per_core("busy 1 2", four), None);
        assert_eq!(load_percent_per_core("-1.0 1 2", four), None);
        assert_eq!(load_percent_per_core("inf 1 2", four), None);
    }

    #[test]
    fn the_system_source_answers_a_load_or_unknown() {
        let mut source = SystemLoad::new();
        assert!(source.cores().get() >= 1);
        if let Some(percent) = source.load_percent() {
            assert!(percent.is_finite() && percent >= 0.0);
        }
    }

    /// Answers the loads it was given, in order, then unknown.
    struct Fixed(Vec<Option<f64>>);

    impl LoadSource for Fixed {
        fn load_percent(&mut self) -> Option<f64> {
            if self.0.is_empty() {
                None
            } else {
                self.0.remove(0)
            }
        }
    }

    #[test]
    fn samples_once_per_interval() {
        const SECOND_NS: u64 = 1_000_000_000;
        let source = Fixed(vec![Some(90.0), Some(10.0), None]);
        let mut adaptation = LoadAdaptation::with_source(LoadConfig::default(), source).unwrap();
        assert_eq!(adaptation.load_percent(), None);
        assert_eq!(adaptation.pace(100).batch.get(), 5);
        assert_eq!(adaptation.load_percent(), Some(90.0));
        // Within 5 s: the same sample.
        assert_eq!(adaptation.pace(100 + 5 * SECOND_NS - 1).batch.get(), 5);
        // 5 s after the first sample: a new one.
        assert_eq!(adaptation.pace(100 + 5 * SECOND_NS).batch.get(), 20);
        assert_eq!(adaptation.load_percent(), Some(10.0));
        assert_eq!(adaptation.pace(100 + 10 * SECOND_NS).batch.get(), 10);
        assert_eq!(adaptation.load_percent(), None);
    }
}
