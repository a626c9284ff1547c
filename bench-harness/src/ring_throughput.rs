//! Cross-thread ring throughput: one producer thread pushes the `u64`s `0..messages`, one
//! consumer thread pops and sums them, and the sum is checked.
//!
//! Both threads are started behind a `Barrier` and pinned to two different cores when the
//! machine has two ([`Pinning`]); the clock runs on the consumer, from the moment it leaves
//! the barrier to the moment it has the last message. On full (producer) or empty (consumer)
//! both threads [`Wait`] the same way for every peer. Batched mode moves [`BATCH`] messages
//! per call where the peer can ([`crate::rings`]).
//!
//! Known bias: the figure includes the skew between the two threads leaving the barrier
//! (microseconds, against tens of milliseconds of run) and the consumer's per-message add; it
//! is a best case for every peer: two dedicated cores, a consumer that does nothing else, and
//! a ring that stays hot in the two cores' caches. On a machine with only two cores the OS and
//! any other process share those cores, which widens the spread.

use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use crossbeam_utils::CachePadded;

use crate::machine::{Pinning, Side, Wait};
use crate::rings::RingPeer;

/// Messages per batch call in batched mode (and per loop for peers with no batch call).
pub const BATCH: usize = 64;

/// The ring capacities the comparison uses; both hold at least one batch.
pub const CAPACITIES: [usize; 2] = [1024, 65536];
const _: () = assert!(BATCH <= CAPACITIES[0] && BATCH <= CAPACITIES[1]);

/// One call per message, or up to [`BATCH`] messages per call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `try_push` / `try_pop`, one message each.
    Single,
    /// `push_batch` / `pop_batch` of up to [`BATCH`] messages.
    Batched,
}

impl Mode {
    /// Name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Single => "single",
            Mode::Batched => "batched",
        }
    }
}

/// One run's outcome.
#[derive(Clone, Copy, Debug)]
pub struct ThroughputRun {
    /// Messages moved (all of them: the sum was checked).
    pub messages: u64,
    /// From the consumer leaving the barrier to it holding the last message.
    pub elapsed: Duration,
    /// Times the producer found the ring full and waited. With [`empty_waits`](Self::empty_waits)
    /// this shows the run's regime: a ring that runs near full (producer ahead, both sides
    /// finding their cached index good for many messages) or near empty (consumer ahead,
    /// waiting on nearly every message, one cache-line transfer each).
    pub full_waits: u64,
    /// Times the consumer found the ring empty and waited.
    pub empty_waits: u64,
}

impl ThroughputRun {
    /// Millions of messages per second.
    pub fn messages_per_sec_millions(&self) -> f64 {
        self.messages as f64 / self.elapsed.as_secs_f64() / 1e6
    }
}

/// Sum of `0..messages`, wrapping like the consumer's sum does.
fn expected_sum(messages: u64) -> u64 {
    let sum = u128::from(messages) * u128::from(messages.saturating_sub(1)) / 2;
    // Truncation is the wrapping the consumer does.
    sum as u64
}

/// Moves `messages` messages through a fresh ring of peer `R` with capacity `capacity`.
///
/// # Errors
/// When a thread panics, or the consumer's sum or count is not that of `0..messages` (a
/// lost, doubled or corrupted message).
pub fn run<R: RingPeer>(
    capacity: usize,
    messages: u64,
    mode: Mode,
    pinning: &Pinning,
    wait: Wait,
) -> anyhow::Result<ThroughputRun> {
    let (sender, receiver) = R::channel(capacity);
    // Each end on cache lines of its own: the closures that carry them to their threads are
    // heap blocks allocated one after the other, and without the padding the producer's and
    // the consumer's private indices (rtrb's and spillway's cached positions) can share a
    // line, which costs a cache miss per message and says nothing about the ring.
    let (mut sender, mut receiver) = (CachePadded::new(sender), CachePadded::new(receiver));
    let barrier = Arc::new(Barrier::new(2));

    let producer = {
        let barrier = Arc::clone(&barrier);
        let pinning = pinning.clone();
        thread::Builder::new()
            .name("bench-producer".to_owned())
            .spawn(move || {
                pinning.pin_current(Side::First);
                barrier.wait();
                // The sender is dropped only after the last push.
                match mode {
                    Mode::Single => produce_single::<R>(&mut sender, messages, wait),
                    Mode::Batched => produce_batched::<R>(&mut sender, messages, wait),
                }
            })
            .context("spawning the producer thread")?
    };
    let consumer = {
        let barrier = Arc::clone(&barrier);
        let pinning = pinning.clone();
        thread::Builder::new()
            .name("bench-consumer".to_owned())
            .spawn(move || {
                pinning.pin_current(Side::Second);
                barrier.wait();
                let start = Instant::now();
                let (received, sum, empty_waits) = match mode {
                    Mode::Single => consume_single::<R>(&mut receiver, messages, wait),
                    Mode::Batched => consume_batched::<R>(&mut receiver, messages, wait),
                };
                let elapsed = start.elapsed();
                (received, sum, empty_waits, elapsed)
            })
            .context("spawning the consumer thread")?
    };

    let produced = producer.join();
    let consumed = consumer.join();
    let Ok(full_waits) = produced else {
        bail!("{} producer thread panicked", R::NAME);
    };
    let Ok((received, sum, empty_waits, elapsed)) = consumed else {
        bail!("{} consumer thread panicked", R::NAME);
    };
    if received != messages || sum != expected_sum(messages) {
        bail!(
            "{} lost or corrupted messages: received {received} of {messages}, sum {sum}, expected {}",
            R::NAME,
            expected_sum(messages)
        );
    }
    Ok(ThroughputRun {
        messages,
        elapsed,
        full_waits,
        empty_waits,
    })
}

#[inline(never)]
fn produce_single<R: RingPeer>(sender: &mut R::Sender, messages: u64, wait: Wait) -> u64 {
    let mut full_waits = 0u64;
    for value in 0..messages {
        let mut pending = value;
        while let Err(refused) = R::try_push(sender, pending) {
            pending = refused;
            full_waits += 1;
            wait.wait();
        }
    }
    full_waits
}

#[inline(never)]
fn produce_batched<R: RingPeer>(sender: &mut R::Sender, messages: u64, wait: Wait) -> u64 {
    let mut full_waits = 0u64;
    let mut batch = [0u64; BATCH];
    let mut next = 0u64;
    while next < messages {
        // At most BATCH, so the conversion cannot truncate.
        let length = (messages - next).min(BATCH as u64) as usize;
        for (offset, slot) in batch[..length].iter_mut().enumerate() {
            *slot = next + offset as u64;
        }
        let mut sent = 0;
        while sent < length {
            let pushed = R::push_batch(sender, &batch[sent..length]);
            if pushed == 0 {
                full_waits += 1;
                wait.wait();
            }
            sent += pushed;
        }
        next += length as u64;
    }
    full_waits
}

#[inline(never)]
fn consume_single<R: RingPeer>(
    receiver: &mut R::Receiver,
    messages: u64,
    wait: Wait,
) -> (u64, u64, u64) {
    let mut sum = 0u64;
    let mut received = 0u64;
    let mut empty_waits = 0u64;
    while received < messages {
        match R::try_pop(receiver) {
            Some(value) => {
                sum = sum.wrapping_add(value);
                received += 1;
            }
            None => {
                empty_waits += 1;
                wait.wait();
            }
        }
    }
    (received, sum, empty_waits)
}

#[inline(never)]
fn consume_batched<R: RingPeer>(
    receiver: &mut R::Receiver,
    messages: u64,
    wait: Wait,
) -> (u64, u64, u64) {
    let mut sum = 0u64;
    let mut received = 0u64;
    let mut empty_waits = 0u64;
    while received < messages {
        // Never ask for more than remain, so no message of a next run could be taken.
        let want = (messages - received).min(BATCH as u64) as usize;
        let popped = R::pop_batch(receiver, want, |value| sum = sum.wrapping_add(value));
        if popped == 0 {
            empty_waits += 1;
            wait.wait();
        }
        received += popped as u64;
    }
    (received, sum, empty_waits)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rings::Peer;
    use crate::with_ring_peer;

    #[test]
    fn expected_sum_matches_a_loop() {
        for messages in [0u64, 1, 2, 63, 64, 1000] {
            assert_eq!(expected_sum(messages), (0..messages).sum::<u64>());
        }
    }

    #[test]
    fn every_peer_moves_every_message_in_both_modes() {
        let pinning = Pinning::off();
        let wait = Wait::Yield;
        for peer in Peer::ALL {
            for mode in [Mode::Single, Mode::Batched] {
                // A capacity smaller than a batch exercises the partial-batch paths.
                for capacity in [7, 1024] {
                    let run =
                        with_ring_peer!(peer, R => run::<R>(capacity, 5_000, mode, &pinning, wait))
                            .unwrap();
                    assert_eq!(run.messages, 5_000);
                }
            }
        }
    }
}
