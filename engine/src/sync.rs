//! The one switch between std's atomics and loom's model-checked ones.
//!
//! The atomics, `Arc`s and `UnsafeCell`s of the lock-free pieces (rings, bucket, seqlock,
//! breaker, tenant counts, engine flags) come from here, so that `RUSTFLAGS="--cfg loom"`
//! (scripts/loom.sh) swaps them for loom's at once and the models in the modules'
//! `loom_tests` see every access. The `Mutex` of the shutdown hand-off (the orphan slot of an
//! ingress link) comes from here too. Not routed through here, and so not modelled: the
//! control-path `Mutex`es and `OnceLock`s, thread park/unpark, and crossbeam's `ArrayQueue`
//! behind `ring::Mpmc`.
//! Modelled on tokio's `src/loom/mod.rs`.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicUsize, Ordering};
#[cfg(loom)]
pub(crate) use loom::sync::{Arc, Mutex};

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicUsize, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::{Arc, Mutex};

#[cfg(loom)]
pub(crate) use loom::cell::UnsafeCell;

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
