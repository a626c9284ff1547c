//! The one switch between std's atomics and loom's model-checked ones.
//!
//! The atomics, `Arc`s and `UnsafeCell`s of the lock-free pieces (rings, bucket, seqlock,
//! breaker, tenant counts, engine flags) come from here, so that `RUSTFLAGS="--cfg loom"`
//! (scripts/loom.sh) swaps them for loom's at once and the models in the modules'
//! `loom_tests` see every access. The `Mutex` of the shutdown hand-off (the orphan slot of an
//! ingress link) comes from here too, and so do the waker slot and the park/unpark of a
//! producer waiting for its completions (`wait::Doorbell`), so that a lost wake-up shows in
//! a model as a thread parked for good. Not routed through here, and so not modelled: the
//! control-path `Mutex`es and `OnceLock`s, the shards' and the control thread's park/unpark
//! (their parks have timeouts, which loom cannot model), and crossbeam's `ArrayQueue` behind
//! `ring::Mpmc`.
//! Modelled on tokio's `src/loom/mod.rs`.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{
    fence, AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering,
};
#[cfg(loom)]
pub(crate) use loom::sync::{Arc, Mutex};

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{
    fence, AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering,
};
#[cfg(not(loom))]
pub(crate) use std::sync::{Arc, Mutex};

#[cfg(loom)]
pub(crate) use loom::cell::UnsafeCell;

/// A slot for the [`Waker`](std::task::Waker) of whoever waits, written by the waiter and
/// taken by the waker without a lock: futures' `AtomicWaker` under std.
#[cfg(not(loom))]
pub(crate) use futures_util::task::AtomicWaker;

/// loom's model of the same slot, behind the method names of futures' `AtomicWaker`.
#[cfg(loom)]
#[derive(Debug)]
pub(crate) struct AtomicWaker(loom::future::AtomicWaker);

#[cfg(loom)]
impl AtomicWaker {
    pub(crate) fn new() -> Self {
        Self(loom::future::AtomicWaker::new())
    }

    pub(crate) fn register(&self, waker: &std::task::Waker) {
        self.0.register_by_ref(waker);
    }

    pub(crate) fn wake(&self) {
        self.0.wake();
    }
}

#[cfg(loom)]
impl Default for AtomicWaker {
    fn default() -> Self {
        Self::new()
    }
}

/// Thread handles and parking for the waits on an ingress: loom's under loom.
pub(crate) mod thread {
    #[cfg(loom)]
    pub(crate) use loom::thread::{current, Thread, ThreadId};
    #[cfg(not(loom))]
    pub(crate) use std::thread::{current, Thread, ThreadId};

    /// Parks the calling thread until it is unparked or `timeout` has passed (or spuriously:
    /// callers re-check and loop). Under loom, which has no clock, it parks until unparked,
    /// so a model whose wake-up was lost ends in a deadlock that loom reports.
    pub(crate) fn park_timeout(timeout: std::time::Duration) {
        #[cfg(loom)]
        {
            let _ = timeout;
            loom::thread::park();
        }
        #[cfg(not(loom))]
        std::thread::park_timeout(timeout);
    }
}

/// `std::cell::UnsafeCell` with loom's closure-based access API, so that the same code
/// compiles against both; under loom every access is checked for data races.
///
/// `repr(transparent)`, so a slice of these has the layout of a slice of `T` (the SPSC
/// ring's bulk copies rely on it).
#[cfg(not(loom))]
#[derive(Debug)]
#[repr(transparent)]
pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

#[cfg(not(loom))]
impl<T> UnsafeCell<T> {
    pub(crate) const fn new(value: T) -> Self {
        Self(std::cell::UnsafeCell::new(value))
    }

    /// Runs `f` with a const pointer to the contents. The caller upholds the aliasing rules
    /// that loom would check: no concurrent `with_mut` on the same cell.
    #[inline(always)]
    pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
        f(self.0.get())
    }

    /// Runs `f` with a mutable pointer to the contents. The caller upholds exclusive access
    /// for the duration of `f`.
    #[inline(always)]
    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}

/// A spin-wait hint: the CPU's pause under std; under loom a yield, so that models with
/// spin loops terminate.
#[inline(always)]
pub(crate) fn spin_hint() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    core::hint::spin_loop();
}

/// Gives up the rest of the time slice (loom's yield under loom).
#[inline]
pub(crate) fn yield_now() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    std::thread::yield_now();
}
