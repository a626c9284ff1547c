//! Ring round-trip latency (ping-pong): a pinger thread pushes one `u64` into ring A, an echo
//! thread pops it and pushes it back into ring B, and the pinger pops it; the time from just
//! before the push to just after the pop goes into an HDR histogram (nanoseconds, 3
//! significant digits). One message is in flight at a time, so the rings never fill.
//!
//! The first [`WARMUP_ROUND_TRIPS`] round trips are not recorded (caches, TLB, branch
//! predictors, and the OS settling the pinned threads). The echoed value is checked.
//!
//! Known bias: the figure includes two quanta TSC reads (a few ns) and two cache-line
//! transfers each way, which dominate for every peer; it shows the cost of a hand-off when
//! the ring is idle, not under load. On a 2-core machine an interrupt or another process on
//! either core lands straight in the tail (p99).

use std::sync::{Arc, Barrier};
use std::thread;

use anyhow::{bail, Context};
use crossbeam_utils::CachePadded;
use hdrhistogram::Histogram;

use crate::machine::{Pinning, Side, Wait};
use crate::rings::RingPeer;

/// Capacity of both rings.
pub const CAPACITY: usize = 1024;

/// Round trips done before recording starts.
pub const WARMUP_ROUND_TRIPS: u64 = 10_000;

/// Largest latency the histogram records exactly; longer ones are clamped to it (10 s).
const LATENCY_NS_MAX: u64 = 10_000_000_000;

/// The percentiles of one run.
#[derive(Clone, Copy, Debug)]
pub struct LatencyRun {
    /// Round trips recorded (after the warm-up).
    pub round_trips: u64,
    /// Median round trip, ns.
    pub p50_ns: u64,
    /// 99th percentile round trip, ns.
    pub p99_ns: u64,
}

/// Does `WARMUP_ROUND_TRIPS + round_trips` round trips over two fresh rings of peer `R`.
///
/// # Errors
/// When a thread panics or a message comes back changed.
pub fn run<R: RingPeer>(
    round_trips: u64,
    pinning: &Pinning,
    wait: Wait,
) -> anyhow::Result<LatencyRun> {
    let (ping_sender, ping_receiver) = R::channel(CAPACITY);
    let (pong_sender, pong_receiver) = R::channel(CAPACITY);
    // Each end on cache lines of its own, so that the two threads' private indices never
    // share a line (see `ring_throughput::run`).
    let (mut ping_sender, mut ping_receiver) = (
        CachePadded::new(ping_sender),
        CachePadded::new(ping_receiver),
    );
    let (mut pong_sender, mut pong_receiver) = (
        CachePadded::new(pong_sender),
        CachePadded::new(pong_receiver),
    );
    let total = WARMUP_ROUND_TRIPS + round_trips;
    let barrier = Arc::new(Barrier::new(2));

    let echo = {
        let barrier = Arc::clone(&barrier);
        let pinning = pinning.clone();
        thread::Builder::new()
            .name("bench-echo".to_owned())
            .spawn(move || {
                pinning.pin_current(Side::Second);
                barrier.wait();
                for _ in 0..total {
                    let value = loop {
                        match R::try_pop(&mut ping_receiver) {
                            Some(value) => break value,
                            None => wait.wait(),
                        }
                    };
                    let mut pending = value;
                    while let Err(refused) = R::try_push(&mut pong_sender, pending) {
                        pending = refused;
                        wait.wait();
                    }
                }
            })
            .context("spawning the echo thread")?
    };
    // Made before any thread starts, so that no failure can leave the echo thread waiting.
    let mut histogram = Histogram::<u64>::new_with_bounds(1, LATENCY_NS_MAX, 3)
        .context("making the latency histogram")?;
    let pinger = {
        let barrier = Arc::clone(&barrier);
        let pinning = pinning.clone();
        thread::Builder::new()
            .name("bench-pinger".to_owned())
            .spawn(move || {
                pinning.pin_current(Side::First);
                let clock = quanta::Clock::new();
                // A wrong echo is counted, not returned at once: the echo thread expects
                // exactly `total` pings and would wait forever for the rest.
                let mut wrong_echoes = 0u64;
                barrier.wait();
                for sequence in 0..total {
                    let start = clock.raw();
                    let mut pending = sequence;
                    while let Err(refused) = R::try_push(&mut ping_sender, pending) {
                        pending = refused;
                        wait.wait();
                    }
                    let echoed = loop {
                        match R::try_pop(&mut pong_receiver) {
                            Some(value) => break value,
                            None => wait.wait(),
                        }
                    };
                    let end = clock.raw();
                    if echoed != sequence {
                        wrong_echoes += 1;
                    }
                    if sequence >= WARMUP_ROUND_TRIPS {
                        histogram.saturating_record(clock.delta_as_nanos(start, end).max(1));
                    }
                }
                (histogram, wrong_echoes)
            })
            .context("spawning the pinger thread")?
    };

    let pinged = pinger.join();
    let echoed = echo.join();
    let Ok((histogram, wrong_echoes)) = pinged else {
        bail!("{} pinger thread panicked", R::NAME);
    };
    if echoed.is_err() {
        bail!("{} echo thread panicked", R::NAME);
    }
    if wrong_echoes > 0 {
        bail!("{} echoed {wrong_echoes} messages changed", R::NAME);
    }
    Ok(LatencyRun {
        round_trips: histogram.len(),
        p50_ns: histogram.value_at_quantile(0.50),
        p99_ns: histogram.value_at_quantile(0.99),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rings::Peer;
    use crate::with_ring_peer;

    #[test]
    fn every_peer_echoes_and_records_every_round_trip() {
        for peer in Peer::ALL {
            let run =
                with_ring_peer!(peer, R => run::<R>(500, &Pinning::off(), Wait::Yield)).unwrap();
            assert_eq!(run.round_trips, 500);
            assert!(run.p50_ns <= run.p99_ns);
        }
    }
}
