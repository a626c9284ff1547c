//! How an idle thread waits for work: the wait strategies of the LMAX Disruptor, chosen in
//! [`Config::wait`](crate::config::Config).
//!
//! The default, [`WaitStrategy::Adaptive`], looks at the machine: when every engine thread
//! has a core of its own it spins and then yields (a yield with no other runnable thread
//! returns at once, so latency stays at spin level); when threads outnumber cores it spins
//! briefly, yields a little, then parks, so that a shard waiting for work never holds a core
//! that a producer or the control plane needs.
//!
//! A parked shard is woken by the producer that gives it work. The wake-up check on the
//! producer side is one Relaxed load per submission, not a fence, so a submission that
//! races the shard going to sleep can miss it; the park timeout bounds that delay.

use std::sync::OnceLock;
use std::thread::Thread;
use std::time::Duration;

use crate::config::WaitStrategy;
use crate::sync::{AtomicBool, Ordering};

/// A strategy with its numbers decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Resolved {
    BusySpin,
    SpinThenYield {
        spins: u32,
    },
    SpinThenPark {
        spins: u32,
        yields: u32,
        park: Duration,
    },
}

/// Resolves `strategy` for `threads` engine threads on `cores` cores.
pub(crate) fn resolve(strategy: WaitStrategy, threads: usize, cores: usize) -> Resolved {
    match strategy {
        WaitStrategy::BusySpin => Resolved::BusySpin,
        WaitStrategy::SpinThenYield { spin_iterations } => Resolved::SpinThenYield {
            spins: spin_iterations,
        },
        WaitStrategy::SpinThenPark {
            spin_iterations,
            yield_iterations,
            park_timeout_us,
        } => Resolved::SpinThenPark {
            spins: spin_iterations,
            yields: yield_iterations,
            park: Duration::from_micros(u64::from(park_timeout_us)),
        },
        // Producers need cores too: a thread per core only when a core is left over.
        WaitStrategy::Adaptive if cores > threads => {
            resolve(WaitStrategy::ADAPTIVE_DEDICATED, threads, cores)
        }
        WaitStrategy::Adaptive => resolve(WaitStrategy::ADAPTIVE_OVERSUBSCRIBED, threads, cores),
    }
}

/// How a waker reads a sleeper's flag: see [`wake_if_sleeping`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Handshake {
    /// A Relaxed load only: cheap enough for every submission, and may miss a thread that
    /// is just going to sleep, which then sleeps out its timeout.
    Relaxed,
    /// A SeqCst fence before the load, pairing with the fence in [`Waiter::idle`]: never
    /// misses (Dekker's handshake). For rare wake-ups whose latency matters (control
    /// commands and replies).
    Fenced,
}

/// The waker's half of the handshake with [`Waiter::idle`]: after publishing work, calls
/// `wake` if the thread's `sleeping` flag is raised, and claims the flag so that one wake
/// goes out per sleep. Without the claim, every producer that comes by before the woken
/// thread lowers its flag would wake it again (for a shard asleep in epoll, an eventfd
/// write each).
///
/// The fenced form: we published, then read the flag; the sleeper raised the flag, fenced,
/// then looks for work. With a SeqCst fence on both sides at least one of us sees the other:
/// either we wake it or it finds the work. Without the fence (store-buffer reordering, which
/// x86 does too) both can miss.
#[inline]
pub(crate) fn wake_if_sleeping(sleeping: &AtomicBool, handshake: Handshake, wake: impl FnOnce()) {
    if handshake == Handshake::Fenced {
        crate::sync::fence(Ordering::SeqCst);
    }
    // Relaxed load first, so the common case (awake) stays a plain read. The swap claims the
    // flag; Relaxed is enough for it: it orders nothing, the wake itself (an unpark or an
    // eventfd write) is what the sleeper synchronises with, and a claim made before the
    // sleeper sleeps leaves that wake pending, so its sleep returns at once.
    if sleeping.load(Ordering::Relaxed) && sleeping.swap(false, Ordering::Relaxed) {
        wake();
    }
}

/// A thread that sleeps when idle, as wakers see it: the flag it raises before it sleeps
/// ([`Waiter::idle`]) and its handle, set once when it starts.
#[derive(Debug, Default)]
pub(crate) struct Sleeper {
    pub(crate) sleeping: AtomicBool,
    pub(crate) thread: OnceLock<Thread>,
}

impl Sleeper {
    /// Unparks the thread (a no-op before it has started).
    pub(crate) fn unpark(&self) {
        if let Some(thread) = self.thread.get() {
            thread.unpark();
        }
    }

    /// Unparks the thread if it sleeps: [`wake_if_sleeping`] with `handshake`.
    #[inline]
    pub(crate) fn unpark_if_sleeping(&self, handshake: Handshake) {
        wake_if_sleeping(&self.sleeping, handshake, || self.unpark());
    }
}

/// One thread's waiting state.
#[derive(Debug)]
pub(crate) struct Waiter {
    strategy: Resolved,
    idle_polls: u32,
}

impl Waiter {
    pub(crate) fn new(strategy: Resolved) -> Self {
        Self {
            strategy,
            idle_polls: 0,
        }
    }

    /// The last poll found work.
    #[inline]
    pub(crate) fn found_work(&mut self) {
        self.idle_polls = 0;
    }

    /// The last poll found nothing: wait a little, per the strategy. `sleeping` is the flag
    /// producers read to decide whether to wake this thread; `has_work` re-checks the
    /// rings after the flag is raised, so that work that arrived meanwhile is not slept on;
    /// `sleep` sleeps for at most the timeout it is given, until woken (a park, or a shard
    /// handler's event source).
    pub(crate) fn idle(
        &mut self,
        sleeping: &AtomicBool,
        has_work: impl Fn() -> bool,
        sleep: impl FnOnce(Duration),
    ) {
        self.idle_polls = self.idle_polls.saturating_add(1);
        match self.strategy {
            Resolved::BusySpin => core::hint::spin_loop(),
            Resolved::SpinThenYield { spins } => {
                if self.idle_polls <= spins {
                    core::hint::spin_loop();
                } else {
                    std::thread::yield_now();
                }
            }
            Resolved::SpinThenPark {
                spins,
                yields,
                park,
            } => {
                if self.idle_polls <= spins {
                    core::hint::spin_loop();
                } else if self.idle_polls <= spins.saturating_add(yields) {
                    std::thread::yield_now();
                } else {
                    // The flag and a waker's ring index are two locations: a waker may push,
                    // then read the flag before our store is visible, while we read its ring
                    // before its push is visible (the store-buffer pattern; x86 reorders it
                    // too). Our side always fences (once per park, which is cheap). The
                    // control thread's wakers (shard replies) fence too, so it never misses
                    // one. Producers waking a shard do not (it would be a fence per
                    // submission), so a shard can miss one and then sleeps at most the park
                    // timeout (50 µs for the adaptive default, `park_timeout_us` otherwise;
                    // a millisecond in an epoll wait, which rounds it up).
                    sleeping.store(true, Ordering::Relaxed);
                    crate::sync::fence(Ordering::SeqCst);
                    if !has_work() {
                        sleep(park);
                    }
                    sleeping.store(false, Ordering::Relaxed);
                }
            }
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn adaptive_parks_only_when_threads_outnumber_cores() {
        assert!(matches!(
            resolve(WaitStrategy::Adaptive, 2, 2),
            Resolved::SpinThenPark { .. }
        ));
        assert!(matches!(
            resolve(WaitStrategy::Adaptive, 4, 16),
            Resolved::SpinThenYield { .. }
        ));
        assert_eq!(resolve(WaitStrategy::BusySpin, 9, 1), Resolved::BusySpin);
    }

    #[test]
    fn a_parked_waiter_wakes_on_unpark_or_timeout() {
        let mut waiter = Waiter::new(Resolved::SpinThenPark {
            spins: 0,
            yields: 0,
            park: Duration::from_millis(5),
        });
        let sleeping = AtomicBool::new(false);
        let start = std::time::Instant::now();
        waiter.idle(&sleeping, || false, std::thread::park_timeout);
        assert!(start.elapsed() < Duration::from_secs(5));
        assert!(!sleeping.load(Ordering::Relaxed));
        // Work seen after raising the flag: no park at all.
        waiter.idle(
            &sleeping,
            || true,
            |_| unreachable!("work was seen: no sleep"),
        );
    }
}
