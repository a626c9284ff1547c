//! A bounded multi-producer/multi-consumer ring: crossbeam's `ArrayQueue` (Dmitry Vyukov's
//! bounded MPMC algorithm with per-slot stamps), given the same push/pop shape as
//! [`spsc`](super::spsc) so that code can take either.

use crossbeam_queue::ArrayQueue;

/// A bounded ring any number of threads push to and pop from through `&self`.
///
/// ```
/// use spillway::ring::Mpmc;
/// let ring = Mpmc::new(2);
/// ring.push("a").unwrap();
/// ring.push("b").unwrap();
/// assert_eq!(ring.push("c"), Err("c")); // full: the value comes back
/// assert_eq!(ring.pop(), Some("a"));
/// ```
#[derive(Debug)]
pub struct Mpmc<T> {
    queue: ArrayQueue<T>,
}

impl<T> Mpmc<T> {
    /// Makes a ring that holds up to `capacity` items.
    ///
    /// # Panics
    /// If `capacity` is zero.
    pub fn new(capacity: usize) -> Self {
        assert!(capacity > 0, "mpmc capacity must be at least 1");
        Self {
            queue: ArrayQueue::new(capacity),
        }
    }

    /// Pushes `value`, or hands it back in `Err` when the ring is full.
    #[inline]
    pub fn push(&self, value: T) -> Result<(), T> {
        self.queue.push(value)
    }

    /// Pops the oldest item, or `None` when the ring is empty.
    #[inline]
    pub fn pop(&self) -> Option<T> {
        self.queue.pop()
    }

    /// Takes items from `items` while the ring accepts them and returns how many were taken.
    /// The first item refused for a full ring is handed back in `Err` together with the
    /// count; items after it stay in the iterator. Unlike the SPSC ring, each item is
    /// published on its own: an MPMC ring has no single index to move once.
    pub fn push_iter<I: Iterator<Item = T>>(&self, items: &mut I) -> Result<usize, (usize, T)> {
        let mut pushed = 0;
        for value in items {
            if let Err(refused) = self.queue.push(value) {
                return Err((pushed, refused));
            }
            pushed += 1;
        }
        Ok(pushed)
    }

    /// Moves up to `max` of the oldest items to the end of `out` and returns how many.
    pub fn pop_into(&self, out: &mut Vec<T>, max: usize) -> usize {
        let mut popped = 0;
        while popped < max {
            let Some(value) = self.queue.pop() else { break };
            out.push(value);
            popped += 1;
        }
        popped
    }

    /// Number of items in the ring now (a snapshot; other threads may change it at once).
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether the ring is empty (a snapshot).
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Whether the ring is full (a snapshot).
    pub fn is_full(&self) -> bool {
        self.queue.is_full()
    }

    /// The most items the ring holds at once.
    pub fn capacity(&self) -> usize {
        self.queue.capacity()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn push_iter_stops_at_full_and_returns_the_refused_item() {
        let ring = Mpmc::new(3);
        let mut items = 0..10;
        assert_eq!(ring.push_iter(&mut items), Err((3, 3)));
        assert_eq!(items.next(), Some(4));
        let mut out = Vec::new();
        assert_eq!(ring.pop_into(&mut out, 8), 3);
        assert_eq!(out, [0, 1, 2]);
    }

    #[test]
    fn many_producers_lose_nothing() {
        const PER_PRODUCER: u64 = 20_000;
        let ring = std::sync::Arc::new(Mpmc::new(128));
        let producers: Vec<_> = (0..3)
            .map(|producer| {
                let ring = std::sync::Arc::clone(&ring);
                std::thread::spawn(move || {
                    for value in 0..PER_PRODUCER {
                        let mut item = producer * PER_PRODUCER + value;
                        while let Err(back) = ring.push(item) {
                            item = back;
                            std::thread::yield_now();
                        }
                    }
                })
            })
            .collect();
        let mut sum = 0u64;
        let mut received = 0;
        while received < 3 * PER_PRODUCER {
            match ring.pop() {
                Some(value) => {
                    sum += value;
                    received += 1;
                }
                None => std::thread::yield_now(),
            }
        }
        for producer in producers {
            producer.join().unwrap();
        }
        let total = 3 * PER_PRODUCER;
        assert_eq!(sum, total * (total - 1) / 2);
    }
}
