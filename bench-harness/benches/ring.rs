//! Criterion bench: cross-thread SPSC ring throughput, spillway against rtrb (and crossbeam's
//! ArrayQueue), u64 messages, capacities 1024 and 65536, one message per call and batches of
//! 64. Each iteration moves `MESSAGES_PER_ITERATION` messages from a producer thread to a
//! consumer thread through `spillway_bench::ring_throughput::run`, the loop `compare` uses
//! (threads pinned to two cores where there are two, started behind a `Barrier`, timed with
//! `iter_custom` on the consumer, sum checked).
//!
//! Known bias: every sample spawns two threads and makes a fresh ring (tens of microseconds,
//! against about a millisecond per iteration of moving messages), which lowers small-iteration
//! samples most; criterion's warm-up calls with few iterations see it worst. The figures are a
//! best case for every peer (two dedicated cores, a consumer doing nothing else). For the side
//! by side table with every peer and the spread over repetitions, run the `compare` binary.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use spillway_bench::machine::{Pinning, Wait};
use spillway_bench::ring_throughput::{self, Mode, CAPACITIES};
use spillway_bench::rings::Peer;
use spillway_bench::with_ring_peer;

/// Messages moved per criterion iteration.
const MESSAGES_PER_ITERATION: u64 = 100_000;

fn ring_throughput(c: &mut Criterion) {
    let pinning = Pinning::detect();
    let wait = Wait::for_this_machine();
    for mode in [Mode::Single, Mode::Batched] {
        let mut group = c.benchmark_group(format!("ring_throughput/{}", mode.name()));
        group
            .sample_size(10)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(2))
            .throughput(Throughput::Elements(MESSAGES_PER_ITERATION));
        for capacity in CAPACITIES {
            for peer in [Peer::Spillway, Peer::Rtrb, Peer::ArrayQueue] {
                let id = BenchmarkId::new(peer.name(), capacity);
                group.bench_function(id, |b| {
                    b.iter_custom(|iterations| {
                        let messages = iterations * MESSAGES_PER_ITERATION;
                        with_ring_peer!(peer, R => ring_throughput::run::<R>(
                            capacity, messages, mode, &pinning, wait,
                        ))
                        .expect("ring lost or corrupted messages")
                        .elapsed
                    });
                });
            }
        }
        group.finish();
    }
}

criterion_group!(benches, ring_throughput);
criterion_main!(benches);
