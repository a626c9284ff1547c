//! A bounded, lock-free, single-producer/single-consumer ring.
//!
//! The algorithm is Lamport's ring buffer with the two refinements rtrb and the Disruptor
//! made standard: each index lives on its own cache line, and each side keeps a private copy
//! of the other side's index and re-reads the shared one only when that copy says the ring is
//! full (producer) or empty (consumer). In steady state a push touches no cache line that the
//! consumer writes, and a batch publishes its whole run of slots with one store.
//!
//! Indices are free-running `usize` counters that wrap at `usize::MAX + 1`; the slot of index
//! `i` is `i & mask`, where the slot array has a power-of-two length at least `capacity`. The
//! number of items is `tail.wrapping_sub(head)`, always in `0..=capacity`, and the ring is
//! full when that reaches `capacity` (the capacity asked for, not the rounded slot count: a
//! cap is a cap). Because the slot count divides 2^usize::BITS, wrapping never misplaces a
//! slot.
//!
//! Single producer and single consumer are properties of the types: [`channel`] returns one
//! [`Producer`] and one [`Consumer`], each `Send` and neither `Sync` nor `Clone`, and every
//! operation takes `&mut self`.
//!
//! ```
//! let (mut producer, mut consumer) = spillway::ring::spsc::channel::<u64>(4);
//! producer.push(1).unwrap();
//! assert_eq!(producer.push_slice(&[2, 3, 4, 5]), 3); // only three slots were free
//! assert_eq!(producer.push(6), Err(6));              // full: the value comes back
//! assert_eq!(consumer.pop(), Some(1));
//! let mut out = Vec::new();
//! assert_eq!(consumer.pop_into(&mut out, 16), 3);
//! assert_eq!(out, [2, 3, 4]);
//! assert_eq!(consumer.pop(), None);
//! ```
//!
//! The halves cannot be shared between threads by reference:
//!
//! ```compile_fail
//! fn needs_sync<T: Sync>(_: &T) {}
//! let (producer, _consumer) = spillway::ring::spsc::channel::<u64>(4);
//! needs_sync(&producer);
//! ```

use core::cell::Cell;
use core::fmt;
use core::marker::PhantomData;
use core::mem::MaybeUninit;

use crossbeam_utils::CachePadded;

use crate::sync::{Arc, AtomicUsize, Ordering, UnsafeCell};

/// The largest capacity a ring accepts: the slot count is the next power of two, and
/// `isize::MAX` bytes is the most an allocation may hold.
pub const CAPACITY_MAX: usize = 1 << 30;

/// How far behind a streaming producer a one-at-a-time consumer stays, in cache lines of
/// slots (see [`Consumer::refresh_for_pop`]).
const SLIP_LINES: usize = 2;
/// Bytes per cache line for [`SLIP_LINES`]: 64 on every CPU this targets (the adjacent-line
/// prefetcher that `CachePadded` pads against pairs them, but a consumer two lines back is
/// already off the producer's line).
const CACHE_LINE_BYTES: usize = 64;
/// `spin_loop` hints a slip waits before the consumer reloads the tail once and takes what is
/// there: the bound on the delay a slip adds (about 1.4 µs on the Sapphire Rapids machine of
/// the README). Chosen by measurement (`compare`, single-op rows): 16 and 32 left the ring
/// near empty on that machine (62–180 Mmsg/s), 128 moved it to rtrb's regime (330 and
/// 620–650 Mmsg/s); reloading every 16 hints until enough items are there fell back to
/// 110 Mmsg/s, because each reload is itself the cache-line transfer the slip avoids.
// Under loom the wait means nothing and is left out (see `refresh_slipping`).
#[cfg_attr(loom, allow(dead_code))]
const SLIP_SPINS: u32 = 128;

/// Makes a ring that holds up to `capacity` items and returns its two halves.
///
/// # Panics
/// If `capacity` is zero or over [`CAPACITY_MAX`]; both are programming errors, like a
/// zero-capacity `Vec::with_capacity` would not be.
pub fn channel<T>(capacity: usize) -> (Producer<T>, Consumer<T>) {
    assert!(
        (1..=CAPACITY_MAX).contains(&capacity),
        "spsc capacity must be in 1..={CAPACITY_MAX}, got {capacity}"
    );
    let slot_count = capacity.next_power_of_two();
    let slots = (0..slot_count)
        .map(|_| UnsafeCell::new(MaybeUninit::uninit()))
        .collect::<Vec<_>>()
        .into_boxed_slice();
    let shared = Arc::new(Shared {
        head: CachePadded::new(AtomicUsize::new(0)),
        tail: CachePadded::new(AtomicUsize::new(0)),
        slots,
        mask: slot_count - 1,
        capacity,
    });
    let producer = Producer {
        shared: Arc::clone(&shared),
        tail: 0,
        head_cached: 0,
        capacity,
        not_sync: PhantomData,
    };
    let consumer = Consumer {
        shared,
        head: 0,
        tail_cached: 0,
        capacity,
        streaming: false,
        slip_items: Consumer::<T>::SLIP_ITEMS,
        not_sync: PhantomData,
    };
    (producer, consumer)
}

/// State both halves point at. Dropped when the second half goes, and then drops the items
/// still in the ring.
struct Shared<T> {
    /// Index of the next slot the consumer reads. Written only by the consumer (Release,
    /// after it has moved the item out), read by the producer (Acquire) to learn which slots
    /// are free again.
    head: CachePadded<AtomicUsize>,
    /// Index of the next slot the producer writes. Written only by the producer (Release,
    /// after it has written the item), read by the consumer (Acquire) to learn which slots
    /// hold items.
    tail: CachePadded<AtomicUsize>,
    /// `mask + 1` slots. Slot `i & mask` holds an initialised item when
    /// `head <= i < tail` (in wrapping arithmetic); besides those, only the producer's
    /// written-but-unpublished slots and the consumer's moved-out-but-unpublished ones are
    /// in transition, each touched by its owner alone.
    slots: Box<[UnsafeCell<MaybeUninit<T>>]>,
    /// Slot count minus one; the slot count is a power of two.
    mask: usize,
    /// The most items the ring holds at once, `1..=mask + 1`.
    capacity: usize,
}

// SAFETY: `Shared` hands each item from exactly one thread (the producer) to exactly one
// other (the consumer), moving it, so `T: Send` is all that is needed; the slot protocol
// (module docs) keeps the two threads off the same slot at the same time.
unsafe impl<T: Send> Send for Shared<T> {}
// SAFETY: as above; `&Shared` is only used through `Producer` and `Consumer`, which never
// give out `&T`, so `T: Sync` is not required.
unsafe impl<T: Send> Sync for Shared<T> {}

impl<T> Shared<T> {
    /// Writes `value` into the slot of `index`.
    ///
    /// # Safety
    /// The caller is the producer and `index` is in `tail .. head + capacity`: the slot is
    /// free and the consumer will not touch it until a Release store of `tail` beyond `index`.
    #[inline(always)]
    unsafe fn write_slot(&self, index: usize, value: T) {
        let slot = index & self.mask;
        debug_assert!(slot < self.slots.len());
        // SAFETY: `slot <= mask < slots.len()` because the mask is the length minus one.
        let cell = unsafe { self.slots.get_unchecked(slot) };
        // SAFETY: the caller guarantees exclusive access to this slot (free, unpublished).
        cell.with_mut(|pointer| unsafe { (*pointer).write(value) });
    }

    /// Moves the item out of the slot of `index`.
    ///
    /// # Safety
    /// The caller is the consumer and `index` is in `head .. tail` as last loaded with
    /// Acquire: the slot holds an initialised item that no one else reads, and the caller
    /// publishes `head` beyond `index` afterwards so the item is not read twice.
    #[inline(always)]
    unsafe fn read_slot(&self, index: usize) -> T {
        let slot = index & self.mask;
        debug_assert!(slot < self.slots.len());
        // SAFETY: `slot <= mask < slots.len()`.
        let cell = unsafe { self.slots.get_unchecked(slot) };
        // SAFETY: the caller guarantees the slot is initialised and exclusively ours.
        cell.with(|pointer| unsafe { (*pointer).assume_init_read() })
    }
}

impl<T> Drop for Shared<T> {
    fn drop(&mut self) {
        // Both halves are gone, and each handed its last index to the other through the
        // Release/Acquire pair in `Arc`'s reference count, so Relaxed loads see final values.
        let mut head = self.head.load(Ordering::Relaxed);
        let tail = self.tail.load(Ordering::Relaxed);
        while head != tail {
            // SAFETY: `head .. tail` are exactly the initialised slots, and no other thread
            // can touch them any more; each is read once as `head` advances.
            drop(unsafe { self.read_slot(head) });
            head = head.wrapping_add(1);
        }
    }
}

/// The writing half of an SPSC ring. `Send`, not `Sync`: one thread at a time pushes.
pub struct Producer<T> {
    shared: Arc<Shared<T>>,
    /// Our own index, the only copy that is always current: only we advance it.
    tail: usize,
    /// Last value of the consumer's `head` we loaded; stale only in the safe direction (the
    /// true head is ahead of it, so we under-count free slots, never over-count).
    head_cached: usize,
    /// Copy of `Shared::capacity`, so the full check needs no load through the `Arc`.
    capacity: usize,
    not_sync: PhantomData<Cell<()>>,
}

/// The reading half of an SPSC ring. `Send`, not `Sync`: one thread at a time pops.
pub struct Consumer<T> {
    shared: Arc<Shared<T>>,
    /// Our own index, always current: only we advance it.
    head: usize,
    /// Last value of the producer's `tail` we loaded; stale only in the safe direction (the
    /// true tail is ahead, so we under-count items, never over-count).
    tail_cached: usize,
    /// Copy of `Shared::capacity`.
    capacity: usize,
    /// Whether the last reload of `tail` (by `pop` or a batch pop) found items: the producer
    /// is streaming, not sending a lone message (see [`Consumer::refresh_slipping`]).
    streaming: bool,
    /// [`Consumer::SLIP_ITEMS`], or 0 once [`Consumer::set_slip`] turned slipping off.
    slip_items: usize,
    not_sync: PhantomData<Cell<()>>,
}

impl<T> Producer<T> {
    /// Pushes `value`, or hands it back in `Err` when the ring is full.
    #[inline]
    pub fn push(&mut self, value: T) -> Result<(), T> {
        if self.free_cached() == 0 && self.refresh_free() == 0 {
            return Err(value);
        }
        // SAFETY: we are the producer and there is a free slot at `tail` (checked above
        // against a head we loaded with Acquire).
        unsafe { self.shared.write_slot(self.tail, value) };
        self.publish(self.tail.wrapping_add(1));
        Ok(())
    }

    /// Pushes the longest prefix of `values` that fits, publishes it with one store, and
    /// returns how many were pushed (0 when the ring is full). Copies in at most two
    /// contiguous runs (before and after the end of the buffer).
    #[inline]
    pub fn push_slice(&mut self, values: &[T]) -> usize
    where
        T: Copy,
    {
        #[cfg(loom)]
        {
            // loom checks each slot access on its own, so copy item by item.
            self.push_iter(&mut values.iter().copied())
        }
        #[cfg(not(loom))]
        {
            let mut free = self.free_cached();
            if free < values.len() {
                free = self.refresh_free();
            }
            let count = free.min(values.len());
            if count == 0 {
                return 0;
            }
            let slot_count = self.shared.mask + 1;
            let start = self.tail & self.shared.mask;
            let first = count.min(slot_count - start);
            let base = self.shared.slots.as_ptr() as *mut T;
            debug_assert!(count <= self.capacity && self.capacity <= slot_count);
            debug_assert!(start + first <= slot_count && count - first <= start);
            // SAFETY: slots `tail .. tail + count` are free (count ≤ free, checked against a
            // head loaded with Acquire) and unpublished, so only we touch them; since
            // `count ≤ capacity ≤ slot_count`, `start + first ≤ slot_count` and
            // `count - first ≤ start`, so both runs lie inside the buffer;
            // `UnsafeCell<MaybeUninit<T>>` is `repr(transparent)` over `T`, and the cells
            // permit writes through a shared reference. `values` may be a slice this very
            // ring lent through `pop_slices`, but those are occupied slots and these are
            // free ones, so the two never overlap.
            unsafe {
                core::ptr::copy_nonoverlapping(values.as_ptr(), base.add(start), first);
                core::ptr::copy_nonoverlapping(values.as_ptr().add(first), base, count - first);
            }
            self.publish(self.tail.wrapping_add(count));
            count
        }
    }

    /// Takes items from `items` while there is room, publishes them with one store, and
    /// returns how many were taken. Items the ring has no room for stay in the iterator: it
    /// is advanced only after a slot is known to be free, so nothing is lost.
    #[inline]
    pub fn push_iter<I: Iterator<Item = T>>(&mut self, items: &mut I) -> usize {
        // Reload the consumer's head only when the cached one shows less room than the
        // iterator says it has items for: once per batch at most, never per item.
        let mut free = self.free_cached();
        if free < items.size_hint().0.max(1) {
            free = self.refresh_free();
        }
        let mut pushed = 0;
        while pushed < free {
            let Some(value) = items.next() else { break };
            // SAFETY: `tail + pushed` is below `head_cached + capacity`, so its slot is free
            // and, not yet published, invisible to the consumer.
            unsafe {
                self.shared
                    .write_slot(self.tail.wrapping_add(pushed), value)
            };
            pushed += 1;
        }
        if pushed > 0 {
            self.publish(self.tail.wrapping_add(pushed));
        }
        pushed
    }

    /// Number of items in the ring now. Exact when the ring is idle; under concurrent pops it
    /// may be ahead of the truth by the items popped since.
    pub fn len(&self) -> usize {
        // Acquire pairs with the consumer's Release store of `head` (only for a current
        // answer; nothing is read through it).
        let head = self.shared.head.load(Ordering::Acquire);
        self.tail.wrapping_sub(head)
    }

    /// Whether the ring holds no items (same caveat as [`len`](Self::len)).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the ring is full (same caveat as [`len`](Self::len)).
    pub fn is_full(&self) -> bool {
        self.len() == self.shared.capacity
    }

    /// The most items the ring holds at once: exactly the capacity it was made with.
    pub fn capacity(&self) -> usize {
        self.shared.capacity
    }

    /// Whether the consumer is gone: nothing pushed from now on will be read (until this
    /// half is dropped too, which drops the items).
    pub fn is_abandoned(&self) -> bool {
        is_abandoned(&self.shared)
    }

    /// Free slots according to our cached head, without touching shared memory.
    #[inline(always)]
    fn free_cached(&self) -> usize {
        self.capacity - self.tail.wrapping_sub(self.head_cached)
    }

    /// Reloads the consumer's head and returns the free slot count it implies.
    // Not `#[cold]`: a producer waiting on a full ring runs this on every try, and keeping it
    // inline shortened the ping-pong round trip (see `compare`'s latency rows).
    #[inline]
    fn refresh_free(&mut self) -> usize {
        // Acquire pairs with the consumer's Release store in `Consumer::publish`: the
        // consumer's moves out of the slots below that head happen before our writes into
        // them.
        self.head_cached = self.shared.head.load(Ordering::Acquire);
        self.free_cached()
    }

    #[inline(always)]
    fn publish(&mut self, tail: usize) {
        debug_assert!(tail.wrapping_sub(self.head_cached) <= self.capacity);
        self.tail = tail;
        // Release pairs with the consumer's Acquire load of `tail` in `refresh_available`:
        // our writes of the slots below `tail` happen before its reads of them.
        self.shared.tail.store(tail, Ordering::Release);
    }
}

impl<T> Consumer<T> {
    /// Pops the oldest item, or `None` when the ring is empty.
    #[inline]
    pub fn pop(&mut self) -> Option<T> {
        if self.available_cached() == 0 && self.refresh_for_pop() == 0 {
            return None;
        }
        // SAFETY: we are the consumer and `head < tail_cached`, a tail loaded with Acquire,
        // so the slot holds an initialised item that only we read.
        let value = unsafe { self.shared.read_slot(self.head) };
        self.publish(self.head.wrapping_add(1));
        Some(value)
    }

    /// Moves up to `max` of the oldest items to the end of `out`, frees their slots with one
    /// store, and returns how many were moved (0 when the ring is empty).
    #[inline]
    pub fn pop_into(&mut self, out: &mut Vec<T>, max: usize) -> usize {
        out.reserve(max.min(self.available_cached().max(1)));
        self.pop_each(max, |value| out.push(value))
    }

    /// Moves up to `out.len()` of the oldest items into `out` (front first), frees their
    /// slots with one store, and returns how many were moved.
    #[inline]
    pub fn pop_slice(&mut self, out: &mut [T]) -> usize
    where
        T: Copy,
    {
        let (count, ()) = self.pop_slices(out.len(), |first, second| {
            out[..first.len()].copy_from_slice(first);
            out[first.len()..first.len() + second.len()].copy_from_slice(second);
        });
        count
    }

    /// Lends up to `max` of the oldest items to `f` as at most two contiguous slices, oldest
    /// first (the second is non-empty only when the run wraps past the end of the buffer),
    /// then frees them all with one store. Returns how many there were and `f`'s result.
    ///
    /// For `Copy` items, which need no drop: `f` can read them in bulk (a vectorised sum, a
    /// memcpy) instead of one call per item. If `f` panics, the items stay in the ring.
    ///
    /// ```
    /// let (mut producer, mut consumer) = spillway::ring::spsc::channel::<u32>(8);
    /// producer.push_slice(&[1, 2, 3]);
    /// let (count, sum) = consumer.pop_slices(16, |first, second| {
    ///     first.iter().chain(second).sum::<u32>()
    /// });
    /// assert_eq!((count, sum), (3, 6));
    /// ```
    #[inline]
    pub fn pop_slices<R>(&mut self, max: usize, f: impl FnOnce(&[T], &[T]) -> R) -> (usize, R)
    where
        T: Copy,
    {
        let mut available = self.available_cached();
        if available < max {
            available = self.refresh_for_batch();
        }
        let count = available.min(max);
        #[cfg(loom)]
        let result = {
            // loom checks each slot access on its own, so read item by item.
            let items: Vec<T> = (0..count)
                // SAFETY: as for `pop_each`: `head .. head + count` are initialised slots
                // below a tail loaded with Acquire, read before `head` moves past them.
                .map(|offset| unsafe { self.shared.read_slot(self.head.wrapping_add(offset)) })
                .collect();
            f(&items, &[])
        };
        #[cfg(not(loom))]
        let result = {
            let slot_count = self.shared.mask + 1;
            let start = self.head & self.shared.mask;
            let first = count.min(slot_count - start);
            let base = self.shared.slots.as_ptr() as *const T;
            debug_assert!(count <= self.capacity && self.capacity <= slot_count);
            debug_assert!(start + first <= slot_count && count - first <= start);
            // SAFETY: slots `head .. head + count` hold initialised items (below a tail loaded
            // with Acquire) that the producer will not overwrite until we publish a head past
            // them, which happens only after `f` returns; both runs lie inside the buffer
            // (`start + first ≤ slot_count`, `count - first ≤ start`); the cells are
            // `repr(transparent)` over `T`; `T: Copy` means lending them drops nothing.
            let (first_run, second_run) = unsafe {
                (
                    core::slice::from_raw_parts(base.add(start), first),
                    core::slice::from_raw_parts(base, count - first),
                )
            };
            f(first_run, second_run)
        };
        if count > 0 {
            self.publish(self.head.wrapping_add(count));
        }
        (count, result)
    }

    /// Calls `f` on up to `max` of the oldest items, oldest first, then frees their slots
    /// with one store and returns how many there were. This is the shard loop's batch: the
    /// items are handled straight out of the ring with no intermediate buffer.
    ///
    /// If `f` panics, the items it has not yet been given stay in the ring and the one it
    /// was given is gone (moved into `f`); none is read twice.
    #[inline]
    pub fn pop_each(&mut self, max: usize, mut f: impl FnMut(T)) -> usize {
        // Reload the producer's tail only when the cached one shows fewer items than asked
        // for: once per batch at most, never per item.
        let mut available = self.available_cached();
        if available < max {
            available = self.refresh_for_batch();
        }
        let count = available.min(max);
        for offset in 0..count {
            let index = self.head.wrapping_add(offset);
            // SAFETY: `index < tail_cached`, a tail loaded with Acquire, so the slot holds an
            // initialised item; we advance `head` past it before anyone can read it again
            // (the guard below publishes on unwind too).
            let value = unsafe { self.shared.read_slot(index) };
            // Publish per item only if `f` unwinds, so a panic leaves no moved-out slot
            // inside `head .. tail`.
            let guard = PublishOnUnwind {
                consumer: self,
                head: index.wrapping_add(1),
            };
            f(value);
            core::mem::forget(guard);
        }
        if count > 0 {
            self.publish(self.head.wrapping_add(count));
        }
        count
    }

    /// Number of items in the ring now. Exact when the ring is idle; under concurrent pushes
    /// it may be behind the truth by the items pushed since.
    pub fn len(&self) -> usize {
        // Acquire pairs with the producer's Release store of `tail` (for a current answer).
        let tail = self.shared.tail.load(Ordering::Acquire);
        tail.wrapping_sub(self.head)
    }

    /// Whether the ring holds no items (same caveat as [`len`](Self::len)).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the ring is full (same caveat as [`len`](Self::len)).
    pub fn is_full(&self) -> bool {
        self.len() == self.shared.capacity
    }

    /// The most items the ring holds at once: exactly the capacity it was made with.
    pub fn capacity(&self) -> usize {
        self.shared.capacity
    }

    /// Whether the producer is gone: once this half has popped what is left, nothing more
    /// will come.
    pub fn is_abandoned(&self) -> bool {
        is_abandoned(&self.shared)
    }

    /// Whether the ring is done for good: the producer is gone and everything it pushed has
    /// been popped, so the consumer can be retired without losing an item.
    ///
    /// The order matters: abandonment first, then emptiness. Once the producer is gone its
    /// last push is visible (see `is_abandoned`), so "empty" is final. Checked the other
    /// way round, the ring could look empty, then receive a last push just before its
    /// producer drops, and that item would be lost.
    pub fn is_finished(&self) -> bool {
        self.is_abandoned() && self.is_empty()
    }

    /// Items known to be there according to our cached tail.
    #[inline(always)]
    fn available_cached(&self) -> usize {
        self.tail_cached.wrapping_sub(self.head)
    }

    /// Turns slipping behind a streaming producer (see [`pop`](Self::pop) and the batch
    /// pops) on or off; it is on from [`channel`] for items of at most half a cache line.
    ///
    /// Slipping buys throughput when this consumer streams from one ring, at the price of
    /// up to `SLIP_SPINS` (128) spin hints (about 1.4 µs) on a reload that finds the stream has
    /// paused. A thread that polls several rings and other work in one loop, where that
    /// pause would delay everything else, turns it off: the engine does for its completion
    /// and control rings.
    ///
    /// ```
    /// let (_producer, mut consumer) = spillway::ring::spsc::channel::<u64>(1024);
    /// consumer.set_slip(false);
    /// assert_eq!(consumer.pop(), None);
    /// ```
    pub fn set_slip(&mut self, enabled: bool) {
        self.slip_items = if enabled { Self::SLIP_ITEMS } else { 0 };
    }

    /// Reloads the producer's tail and returns the item count it implies.
    // Not `#[cold]`: a consumer polling an empty ring runs this on every poll, and keeping it
    // inline shortened the ping-pong round trip (see `compare`'s latency rows).
    #[inline]
    fn refresh_available(&mut self) -> usize {
        // Acquire pairs with the producer's Release store in `Producer::publish`: its writes
        // of the slots below that tail happen before our reads of them.
        self.tail_cached = self.shared.tail.load(Ordering::Acquire);
        self.available_cached()
    }

    /// Items [`pop`](Self::pop) lets a streaming producer get ahead before it reads: two cache
    /// lines of slots, or 0 (never slip) when fewer than two items share a line, since then
    /// the producer's next write is on another line anyway.
    const SLIP_ITEMS: usize = {
        let item_bytes = core::mem::size_of::<T>();
        if item_bytes == 0 || item_bytes * 2 > CACHE_LINE_BYTES {
            0
        } else {
            SLIP_LINES * (CACHE_LINE_BYTES / item_bytes)
        }
    };

    /// Reloads the producer's tail for [`pop`](Self::pop), slipping behind a streaming
    /// producer: temporal slipping, as FastForward (Giacomoni et al., PPoPP 2008) does it.
    ///
    /// Why: a one-at-a-time consumer that is a little faster than its producer catches up
    /// with it and then reads each slot right after it is written, so the slots' cache line
    /// moves between the two cores on nearly every item (and the tail's line on every
    /// reload). Measured with `compare`, single-op throughput fell to a fifth of rtrb's in
    /// that regime, while a ring that runs with the producer ahead moves whole lines.
    ///
    /// So when the previous reload also found items (the producer is streaming) and this one
    /// finds fewer than [`SLIP_ITEMS`](Self::SLIP_ITEMS), the consumer waits at most
    /// [`SLIP_SPINS`] spin hints and reloads once more, then takes whatever is there. A lone
    /// message is never delayed: the reload before it found the ring empty. The delay a slip
    /// adds is bounded by [`SLIP_SPINS`], once per reload, and only while items keep coming.
    /// Batch pops slip on an empty reload instead (see
    /// [`refresh_for_batch`](Self::refresh_for_batch)).
    #[inline]
    fn refresh_for_pop(&mut self) -> usize {
        let slip_items = self.slip_items;
        self.refresh_slipping(|available| available > 0 && available < slip_items)
    }

    /// Reloads the producer's tail for a batch pop. The same slip as
    /// [`refresh_for_pop`](Self::refresh_for_pop), at the point where a batch consumer
    /// meets it: batches arrive whole, so a consumer that has caught up with a streaming
    /// producer finds the ring empty, not nearly so. Polling again at once only pulls the
    /// tail's line back while the producer is writing its next batch; waiting
    /// [`SLIP_SPINS`] and reloading once lets that batch land. An empty ring after an
    /// empty reload (no stream) answers at once.
    #[inline]
    fn refresh_for_batch(&mut self) -> usize {
        let slips = self.slip_items > 0;
        self.refresh_slipping(|available| slips && available == 0)
    }

    /// The slip itself, for both callers: reload; if the producer was streaming and
    /// `slip_on` says this reload found too little, wait [`SLIP_SPINS`] and reload once
    /// more. Records whether the stream goes on.
    #[inline(always)]
    fn refresh_slipping(&mut self, slip_on: impl FnOnce(usize) -> bool) -> usize {
        let was_streaming = self.streaming;
        let mut available = self.refresh_available();
        if was_streaming && slip_on(available) {
            // Under loom the wait means nothing; the second reload is still modelled.
            #[cfg(not(loom))]
            for _ in 0..SLIP_SPINS {
                core::hint::spin_loop();
            }
            available = self.refresh_available();
        }
        self.streaming = available > 0;
        available
    }

    #[inline(always)]
    fn publish(&mut self, head: usize) {
        debug_assert!(self.tail_cached.wrapping_sub(head) <= self.capacity);
        self.head = head;
        // Release pairs with the producer's Acquire load of `head` in `refresh_free`: our
        // moves out of the slots below `head` happen before its writes into them.
        self.shared.head.store(head, Ordering::Release);
    }
}

/// Whether the other half has been dropped.
fn is_abandoned<T>(shared: &Arc<Shared<T>>) -> bool {
    // The Arc is never cloned beyond the two halves and has no weak references, so the
    // count only falls, and 1 means the other half is gone for good.
    let alone = Arc::strong_count(shared) == 1;
    if alone {
        // `strong_count` is a Relaxed load; it read the value written by the other half's
        // Release decrement, so this Acquire fence makes everything that half did before
        // (its last push) visible to what the caller does next, e.g. the shard's "empty"
        // check before it drops a link. (loom's `strong_count` synchronizes by itself, so
        // the models cannot tell whether this fence is needed.)
        crate::sync::fence(Ordering::Acquire);
    }
    alone
}

/// Publishes the consumer's head up to and including the item being handled if the handler
/// unwinds, so that `Shared::drop` does not drop that moved-out item a second time.
struct PublishOnUnwind<'a, T> {
    consumer: &'a mut Consumer<T>,
    head: usize,
}

impl<T> Drop for PublishOnUnwind<'_, T> {
    fn drop(&mut self) {
        self.consumer.publish(self.head);
    }
}

impl<T> fmt::Debug for Producer<T> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Producer")
            .field("capacity", &self.capacity())
            .field("len", &self.len())
            .finish()
    }
}

impl<T> fmt::Debug for Consumer<T> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Consumer")
            .field("capacity", &self.capacity())
            .field("len", &self.len())
            .finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn assert_send<T: Send>() {}

    #[test]
    fn a_slipping_pop_still_takes_what_is_there() {
        // Single-threaded, nothing arrives during the slip: every pop must still return the
        // items that were there, in order, and None only on an empty ring.
        let (mut producer, mut consumer) = channel::<u64>(64);
        const { assert!(Consumer::<u64>::SLIP_ITEMS > 3) };
        for value in 0..3 {
            producer.push(value).unwrap();
        }
        assert_eq!(consumer.pop(), Some(0)); // the reload found 3: streaming from now on
        assert_eq!(consumer.pop(), Some(1));
        assert_eq!(consumer.pop(), Some(2));
        producer.push(3).unwrap();
        producer.push(4).unwrap();
        assert_eq!(consumer.pop(), Some(3)); // a slip: fewer than SLIP_ITEMS while streaming
        assert_eq!(consumer.pop(), Some(4));
        assert_eq!(consumer.pop(), None);
        assert!(!consumer.streaming, "an empty reload ends the stream");
        // Items too large to share a line never slip.
        assert_eq!(Consumer::<[u64; 5]>::SLIP_ITEMS, 0);
        assert_eq!(Consumer::<()>::SLIP_ITEMS, 0);
        assert_eq!(Consumer::<u64>::SLIP_ITEMS, 16);
    }

    #[test]
    fn a_batch_pop_slips_once_when_a_stream_runs_dry_and_loses_nothing() {
        let (mut producer, mut consumer) = channel::<u64>(64);
        assert_eq!(producer.push_slice(&[0, 1, 2, 3]), 4);
        let mut out = Vec::new();
        assert_eq!(consumer.pop_into(&mut out, 64), 4);
        assert!(
            consumer.streaming,
            "a reload that found items starts a stream"
        );
        // Caught up: the reload finds nothing, waits SLIP_SPINS, reloads once, and still
        // answers empty (nothing arrives in a single-threaded test).
        assert_eq!(
            consumer.pop_slices(64, |first, second| first.len() + second.len()),
            (0, 0)
        );
        assert!(
            !consumer.streaming,
            "an empty reload after the slip ends the stream"
        );
        // The next batch is taken whole, in order.
        assert_eq!(producer.push_slice(&[4, 5]), 2);
        assert_eq!(consumer.pop_into(&mut out, 64), 2);
        assert_eq!(out, [0, 1, 2, 3, 4, 5]);
        // Large items never slip, so their empty batch pop keeps no stream either way.
        let (_large_producer, mut large) = channel::<[u64; 5]>(4);
        assert_eq!(large.pop_each(4, |_| {}), 0);
        assert_eq!(large.slip_items, 0);
        // Turned off, and back on.
        consumer.set_slip(false);
        assert_eq!(consumer.slip_items, 0);
        consumer.set_slip(true);
        assert_eq!(consumer.slip_items, Consumer::<u64>::SLIP_ITEMS);
    }

    #[test]
    fn halves_are_send() {
        assert_send::<Producer<Vec<u8>>>();
        assert_send::<Consumer<Vec<u8>>>();
    }

    #[test]
    fn capacity_is_exact_not_rounded() {
        let (mut producer, mut consumer) = channel::<u32>(3);
        assert_eq!(producer.capacity(), 3);
        for value in 0..3 {
            producer.push(value).unwrap();
        }
        assert!(producer.is_full());
        assert_eq!(producer.push(9), Err(9));
        assert_eq!(consumer.pop(), Some(0));
        producer.push(3).unwrap();
        let mut out = Vec::new();
        assert_eq!(consumer.pop_into(&mut out, 10), 3);
        assert_eq!(out, [1, 2, 3]);
        assert!(consumer.is_empty());
    }

    #[test]
    fn wraps_around_many_times() {
        let (mut producer, mut consumer) = channel::<usize>(5);
        let mut expected = 0;
        for round in 0..1000 {
            let pushed = producer.push_iter(&mut (round * 4..round * 4 + 4));
            assert_eq!(pushed, 4);
            let mut out = [0usize; 4];
            assert_eq!(consumer.pop_slice(&mut out), 4);
            for value in out {
                assert_eq!(value, expected);
                expected += 1;
            }
        }
    }

    #[test]
    fn indices_wrap_at_usize_max() {
        let (mut producer, mut consumer) = channel::<u8>(4);
        // Start both sides just under the wrap point, as after 2^64 pushes.
        let start = usize::MAX - 2;
        producer.tail = start;
        producer.head_cached = start;
        producer.shared.tail.store(start, Ordering::Relaxed);
        producer.shared.head.store(start, Ordering::Relaxed);
        consumer.head = start;
        consumer.tail_cached = start;
        for value in 0..4 {
            producer.push(value).unwrap();
        }
        assert_eq!(producer.push(4), Err(4));
        assert_eq!(consumer.len(), 4);
        for value in 0..4 {
            assert_eq!(consumer.pop(), Some(value));
        }
        assert_eq!(consumer.pop(), None);
    }

    #[test]
    fn each_half_sees_the_other_go() {
        let (producer, consumer) = channel::<u8>(2);
        assert!(!producer.is_abandoned());
        drop(consumer);
        assert!(producer.is_abandoned());
        let (producer, consumer) = channel::<u8>(2);
        drop(producer);
        assert!(consumer.is_abandoned());
    }

    #[test]
    fn push_iter_leaves_what_does_not_fit_in_the_iterator() {
        let (mut producer, _consumer) = channel::<u32>(2);
        let mut items = 0..5;
        assert_eq!(producer.push_iter(&mut items), 2);
        assert_eq!(items.next(), Some(2));
    }

    #[test]
    fn items_left_are_dropped_once_with_the_last_half() {
        let value = std::sync::Arc::new(());
        let (mut producer, mut consumer) = channel(8);
        for _ in 0..5 {
            producer.push(std::sync::Arc::clone(&value)).unwrap();
        }
        drop(consumer.pop());
        assert_eq!(std::sync::Arc::strong_count(&value), 5);
        drop(producer);
        assert_eq!(std::sync::Arc::strong_count(&value), 5);
        drop(consumer);
        assert_eq!(std::sync::Arc::strong_count(&value), 1);
    }

    #[test]
    fn a_panicking_batch_handler_loses_and_duplicates_nothing() {
        let value = std::sync::Arc::new(());
        let (mut producer, mut consumer) = channel(8);
        for _ in 0..6 {
            producer.push(std::sync::Arc::clone(&value)).unwrap();
        }
        let mut handled = 0;
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            consumer.pop_each(6, |item| {
                handled += 1;
                if handled == 3 {
                    panic!("handler failure");
                }
                drop(item);
            })
        }));
        assert!(outcome.is_err());
        // Three were moved out (the third dropped by unwinding), three are still queued.
        assert_eq!(consumer.len(), 3);
        assert_eq!(std::sync::Arc::strong_count(&value), 4);
        drop(consumer);
        drop(producer);
        assert_eq!(std::sync::Arc::strong_count(&value), 1);
    }

    #[test]
    fn cross_thread_transfer_is_fifo_and_complete() {
        const COUNT: u64 = 200_000;
        let (mut producer, mut consumer) = channel::<u64>(64);
        let sender = std::thread::spawn(move || {
            let mut next = 0;
            while next < COUNT {
                let batch: Vec<u64> = (next..(next + 7).min(COUNT)).collect();
                let pushed = producer.push_slice(&batch) as u64;
                next += pushed;
                if pushed == 0 {
                    std::thread::yield_now();
                }
            }
        });
        let mut expected = 0;
        let mut out = Vec::with_capacity(32);
        while expected < COUNT {
            out.clear();
            if consumer.pop_into(&mut out, 32) == 0 {
                std::thread::yield_now();
            }
            for &value in &out {
                assert_eq!(value, expected);
                expected += 1;
            }
        }
        sender.join().unwrap();
    }

    #[test]
    #[should_panic(expected = "spsc capacity must be in")]
    fn zero_capacity_is_refused() {
        let _ = channel::<u8>(0);
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    //! Models of every interleaving of one producer and one consumer (scripts/loom.sh).
    //! Items are `loom::sync::Arc`s, so loom itself reports an item dropped twice or never,
    //! and its `UnsafeCell` tracking reports a slot read while being written.
    use super::*;
    use loom::sync::Arc as LoomArc;
    use loom::thread;

    #[test]
    fn push_pop_wrap_around_is_fifo() {
        loom::model(|| {
            let (mut producer, mut consumer) = channel::<usize>(2);
            let sender = thread::spawn(move || {
                let mut next = 0;
                while next < 3 {
                    if producer.push(next).is_ok() {
                        next += 1;
                    } else {
                        thread::yield_now();
                    }
                }
            });
            let mut expected = 0;
            while expected < 3 {
                match consumer.pop() {
                    Some(value) => {
                        assert_eq!(value, expected);
                        expected += 1;
                    }
                    None => thread::yield_now(),
                }
            }
            sender.join().unwrap();
        });
    }

    #[test]
    fn batch_push_and_pop_lose_and_duplicate_nothing() {
        loom::model(|| {
            let (mut producer, mut consumer) = channel::<usize>(2);
            let sender = thread::spawn(move || {
                let mut next = 0;
                while next < 4 {
                    let pushed = producer.push_iter(&mut (next..4));
                    next += pushed;
                    if pushed == 0 {
                        thread::yield_now();
                    }
                }
            });
            let mut received = Vec::new();
            while received.len() < 4 {
                if consumer.pop_into(&mut received, 2) == 0 {
                    thread::yield_now();
                }
            }
            assert_eq!(received, [0, 1, 2, 3]);
            sender.join().unwrap();
        });
    }

    #[test]
    fn a_consumer_retired_when_finished_has_seen_every_item() {
        // The shard's rule for dropping an ingress link: no item pushed before the producer
        // went away may be left behind when `is_finished` says the ring is done.
        loom::model(|| {
            let (mut producer, mut consumer) = channel::<usize>(2);
            let sender = thread::spawn(move || {
                let _ = producer.push(1);
                let _ = producer.push(2);
                // Dropped here, right after the last push.
            });
            let mut received = Vec::new();
            while !consumer.is_finished() {
                match consumer.pop() {
                    Some(value) => received.push(value),
                    None => thread::yield_now(),
                }
            }
            assert_eq!(received, [1, 2], "retired with items left");
            sender.join().unwrap();
        });
    }

    #[test]
    fn items_left_in_the_ring_are_dropped_exactly_once() {
        loom::model(|| {
            let item = LoomArc::new(());
            let (mut producer, mut consumer) = channel(2);
            let sent = LoomArc::clone(&item);
            let sender = thread::spawn(move || {
                let _ = producer.push(LoomArc::clone(&sent));
                let _ = producer.push(sent);
                // The producer is dropped here, possibly before or after the consumer.
            });
            drop(consumer.pop());
            drop(consumer);
            sender.join().unwrap();
            // Every clone is gone: popped ones by `drop`, queued ones by `Shared::drop`, and
            // one refused by a full ring (none can be here with capacity 2) by `push`'s Err.
            assert_eq!(LoomArc::strong_count(&item), 1);
        });
    }
}
