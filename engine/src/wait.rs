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
//!
//! The other way round, a producer waiting for its completions ([`Doorbell`]) is woken by
//! the shards that post them, and never missed: it may wait for seconds, so no timeout
//! could bound a miss. The shards pay one SeqCst fence per batch of completions for that,
//! and one Relaxed load per ingress the batch went to.

use std::sync::OnceLock;
use std::task::{Wake, Waker};
use std::thread::Thread;
use std::time::{Duration, Instant};

use crate::config::WaitStrategy;
use crate::sync::{AtomicBool, AtomicWaker, Ordering};

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
/// ([`Waiter::idle`]) and its handle, set once when it starts; or, for a thread that sleeps
/// in an event loop (the control thread), that loop's waker.
#[derive(Debug, Default)]
pub(crate) struct Sleeper {
    pub(crate) sleeping: AtomicBool,
    pub(crate) thread: OnceLock<Thread>,
    pub(crate) event_waker: OnceLock<mio::Waker>,
}

impl Sleeper {
    /// Wakes the thread: its event loop's waker once it has one, else an unpark (a no-op
    /// before it has started). A wake that comes before the thread waits is kept by either
    /// (the park token, the waker's readiness), so its next wait returns at once.
    pub(crate) fn unpark(&self) {
        if let Some(waker) = self.event_waker.get() {
            // A failed wake (the poll is gone: the thread is exiting) wakes nobody who
            // still waits.
            let _ = waker.wake();
        } else if let Some(thread) = self.thread.get() {
            thread.unpark();
        }
    }

    /// Unparks the thread if it sleeps: [`wake_if_sleeping`] with `handshake`.
    #[inline]
    pub(crate) fn unpark_if_sleeping(&self, handshake: Handshake) {
        wake_if_sleeping(&self.sleeping, handshake, || self.unpark());
    }
}

/// Where a producer waiting for its rings to move (a completion posted, a submission taken)
/// is woken by the shards that move them: the flag it raises while it waits and the waker
/// of the thread or task that waits. One per ingress, shared by its links on every shard.
///
/// The handshake is the fenced one of [`wake_if_sleeping`] (Dekker's), with the fence on the
/// shards' side paid once per batch rather than per completion:
///
/// - the waiter registers its waker, raises `waiting` ([`arm`](Self::arm), which fences),
///   then looks at its rings once more and parks only if they still have nothing for it;
/// - a shard publishes (the ring's Release store of its tail or head), fences once for the
///   whole batch, then reads `waiting` of each ingress the batch touched
///   ([`ring_if_waiting`](Self::ring_if_waiting)) and wakes those that wait.
///
/// The publication and the flag are two locations, so without the two SeqCst fences both
/// sides could read the other's old value (store-buffer reordering, which x86 does too):
/// the waiter would park on a ring it saw empty while the shard saw nobody waiting. With
/// them, whichever fence comes first in their single total order, the other side's read
/// after its own fence sees the store before the first: either the waiter's look finds the
/// work, or the shard sees the flag and wakes it. Nobody waiting costs the shard the fence
/// and a load of a line that only a waiter writes.
#[derive(Debug, Default)]
pub(crate) struct Doorbell {
    /// Raised by the waiter before its last look at the rings; lowered by the shard that
    /// claims the wake-up (so one wake goes out per wait), or by the waiter when it is done.
    waiting: AtomicBool,
    /// The waker of the thread or task that raised `waiting`.
    waker: AtomicWaker,
}

impl Doorbell {
    /// The waiter's half, before its last look at the rings: registers `waker`, raises the
    /// flag, fences. The caller then looks, and waits only if it finds nothing.
    pub(crate) fn arm(&self, waker: &Waker) {
        self.waker.register(waker);
        // Release: pairs with the Acquire claim in `ring_if_waiting`, so the registration
        // above happens before the shard's `wake` reads the slot, which then wakes this
        // waker and not an older one.
        self.waiting.store(true, Ordering::Release);
        // SeqCst: the waiter's fence of the handshake (see the type's doc).
        crate::sync::fence(Ordering::SeqCst);
    }

    /// The waiter is done waiting (found work, woke, or timed out). Relaxed: it orders
    /// nothing; a shard that still claims an older raise only sends a spurious wake, which
    /// every waiter tolerates (it re-checks and waits again).
    pub(crate) fn disarm(&self) {
        self.waiting.store(false, Ordering::Relaxed);
    }

    /// The shard's half, after it published and fenced (`fence(SeqCst)`, once for a batch
    /// of ingresses): wakes the waiter if the flag is raised, and lowers it, so that one
    /// wake goes out per wait however many shards post meanwhile.
    #[inline]
    pub(crate) fn ring_if_waiting(&self) {
        // Relaxed load first, so that nobody waiting stays a plain read of a line shared
        // read-only. Acquire on the claim: pairs with the Release raise in `arm` (see
        // there). A claim that loses to another shard's does nothing.
        if self.waiting.load(Ordering::Relaxed) && self.waiting.swap(false, Ordering::Acquire) {
            self.waker.wake();
        }
    }

    /// Runs `done` until it says so, parking the calling thread (whose waker `waker` is) in
    /// between until a shard rings, or until `deadline` (`None`: none). Returns `done`'s
    /// last answer. The waiter's half of the handshake: arm, look once more, park.
    pub(crate) fn wait_until(
        &self,
        waker: &Waker,
        deadline: Option<Instant>,
        mut done: impl FnMut() -> bool,
    ) -> bool {
        loop {
            if done() {
                return true;
            }
            let left = match deadline {
                Some(deadline) => match deadline.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => left,
                    _ => return false,
                },
                None => PARK_WITHOUT_DEADLINE,
            };
            self.arm(waker);
            // The last look, after the fence in `arm`: whatever a shard published before it
            // could see the flag is seen here, and whatever it publishes later, it wakes us
            // for.
            if done() {
                self.disarm();
                return true;
            }
            crate::sync::thread::park_timeout(left);
            self.disarm();
        }
    }

    /// [`ring_if_waiting`](Self::ring_if_waiting) with its own fence: for a single rare wake
    /// (the engine has stopped).
    pub(crate) fn ring_if_waiting_fenced(&self) {
        // SeqCst: the waker's fence of the handshake, after the publication (`stopped`).
        crate::sync::fence(Ordering::SeqCst);
        self.ring_if_waiting();
    }
}

/// How long one park of a wait without a deadline lasts before it looks again: it only
/// bounds the park, which a shard's wake ends first.
const PARK_WITHOUT_DEADLINE: Duration = Duration::from_secs(3600);

/// A waker that unparks `thread`: how a thread blocked in an ingress wait is woken through
/// the same [`Doorbell`] slot as a task.
struct ThreadWaker(crate::sync::thread::Thread);

impl Wake for ThreadWaker {
    fn wake(self: std::sync::Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &std::sync::Arc<Self>) {
        self.0.unpark();
    }
}

/// The waker of the calling thread: unparks it.
pub(crate) fn current_thread_waker() -> Waker {
    Waker::from(std::sync::Arc::new(ThreadWaker(
        crate::sync::thread::current(),
    )))
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
