//! The machine under the measurements: core pinning for the two threads of a cross-thread
//! run, the wait on a full or empty ring, and the one-line description printed with results.
//!
//! Known bias: pinning fixes which cores the two threads use, not what else runs there; on a
//! 2-core machine anything else that runs (a build, the quanta upkeep thread of the governor
//! rows) shares a core with one of the measured threads.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use core_affinity::CoreId;

/// Which of the two measured threads is asking to be pinned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The producer (throughput), the pinger (latency), the first checker (buckets).
    First,
    /// The consumer (throughput), the echo thread (latency), the second checker (buckets).
    Second,
}

/// Pins the two threads of a cross-thread measurement to two different cores, when the
/// machine has at least two; otherwise leaves them to the scheduler.
///
/// Clones share a count of failed pin calls, so the report can say whether every thread that
/// asked to be pinned was.
#[derive(Clone, Debug)]
pub struct Pinning {
    /// The two cores, or `None` when pinning is off (fewer than 2 cores, or asked off).
    cores: Option<(CoreId, CoreId)>,
    /// `core_affinity::set_for_current` calls that returned false, over all clones.
    failures: Arc<AtomicUsize>,
}

impl Pinning {
    /// Pins to the first two cores the OS lists, when there are at least two.
    pub fn detect() -> Self {
        let cores = core_affinity::get_core_ids()
            .filter(|ids| ids.len() >= 2)
            .map(|ids| (ids[0], ids[1]));
        Self {
            cores,
            failures: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// No pinning at all.
    pub fn off() -> Self {
        Self {
            cores: None,
            failures: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Pins the calling thread to the core of `side`; does nothing when pinning is off.
    pub fn pin_current(&self, side: Side) {
        let Some((first, second)) = self.cores else {
            return;
        };
        let core = match side {
            Side::First => first,
            Side::Second => second,
        };
        if !core_affinity::set_for_current(core) {
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Whether pinning is on and no pin call has failed so far.
    pub fn is_pinned(&self) -> bool {
        self.cores.is_some() && self.failures.load(Ordering::Relaxed) == 0
    }

    /// Pinning in words: which cores, or why not.
    pub fn describe(&self) -> String {
        match self.cores {
            None => "no (fewer than 2 cores, or off)".to_owned(),
            Some((first, second)) => match self.failures.load(Ordering::Relaxed) {
                0 => format!("yes (cores {} and {})", first.id, second.id),
                failed => format!(
                    "partly (cores {} and {}; {failed} pin calls failed)",
                    first.id, second.id
                ),
            },
        }
    }
}

/// What a thread does when its ring is full (producer) or empty (consumer): the same for
/// every peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// `std::hint::spin_loop()`: the right thing when each thread has a core of its own.
    Spin,
    /// `std::thread::yield_now()`: on a 1-core machine a spinning thread would only burn the
    /// time slice its peer needs.
    Yield,
}

impl Wait {
    /// `Spin` with at least 2 cores, `Yield` otherwise.
    pub fn for_this_machine() -> Self {
        if cores() >= 2 {
            Wait::Spin
        } else {
            Wait::Yield
        }
    }

    /// The call it makes, for the report.
    pub fn name(self) -> &'static str {
        match self {
            Wait::Spin => "spin_loop",
            Wait::Yield => "yield_now",
        }
    }

    /// Waits once.
    #[inline(always)]
    pub fn wait(self) {
        match self {
            Wait::Spin => std::hint::spin_loop(),
            Wait::Yield => std::thread::yield_now(),
        }
    }
}

/// Cores this process may use (`std::thread::available_parallelism`, 1 if unknown): the
/// load generator's count, so that both report the same.
pub use spillway_loadgen::report::cores;

/// The CPU model from `/proc/cpuinfo`, if it is readable and names one.
pub fn cpu_model() -> Option<String> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    cpuinfo
        .lines()
        .find(|line| line.starts_with("model name"))
        .and_then(|line| line.split_once(':'))
        .map(|(_, model)| model.trim().to_owned())
}

/// Whether this binary was built with debug assertions (an unoptimised build, whose figures
/// mean nothing).
pub const DEBUG_BUILD: bool = cfg!(debug_assertions);
