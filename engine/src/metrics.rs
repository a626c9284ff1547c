//! Counters and their snapshot, [`Stats`].
//!
//! Each shard counts in plain integers that only it writes (no atomics on the data path) and
//! publishes a copy through a seqlock once per loop, at a batch boundary, where every
//! message it has seen is in exactly one state. A reader copies the published values and
//! retries if the shard published meanwhile, so every snapshot of a shard is one the shard
//! really was in, and [`Tally::reconciles`] holds for each shard and so for their sum:
//! `submitted = refused + shed + admitted` and
//! `admitted = delivered + failed + cancelled + dropped + in_flight`.

use crate::admission::breaker::BreakerState;
use crate::command::CommandKind;
use crate::message::{Priority, Role, TenantId};
use crate::outcome::{DropReason, FailureReason, Outcome, RefusalReason, ShedReason};
use crate::sync::{fence, AtomicU64, Ordering};

/// Outcome counts for one scope: the whole engine, a shard, a role or a tenant.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Messages that reached admission.
    pub submitted: u64,
    /// Messages admitted to a queue.
    pub admitted: u64,
    /// Refusals, by [`RefusalReason::index`].
    pub refused: [u64; RefusalReason::COUNT],
    /// Sheds, by [`ShedReason::index`].
    pub shed: [u64; ShedReason::COUNT],
    /// Admitted and delivered.
    pub delivered: u64,
    /// Admitted and failed, by [`FailureReason::index`].
    pub failed: [u64; FailureReason::COUNT],
    /// Admitted and cancelled.
    pub cancelled: u64,
    /// Admitted and dropped, by [`DropReason::index`].
    pub dropped: [u64; DropReason::COUNT],
}

/// Number of `u64`s a [`Tally`] publishes as.
const TALLY_WORDS: usize =
    4 + RefusalReason::COUNT + ShedReason::COUNT + FailureReason::COUNT + DropReason::COUNT;

impl Tally {
    /// All refusals.
    pub fn refused_total(&self) -> u64 {
        self.refused.iter().sum()
    }

    /// All sheds.
    pub fn shed_total(&self) -> u64 {
        self.shed.iter().sum()
    }

    /// All failures.
    pub fn failed_total(&self) -> u64 {
        self.failed.iter().sum()
    }

    /// All drops.
    pub fn dropped_total(&self) -> u64 {
        self.dropped.iter().sum()
    }

    /// Admitted messages that have finished (delivered, failed, cancelled or dropped).
    pub fn finished(&self) -> u64 {
        self.delivered + self.failed_total() + self.cancelled + self.dropped_total()
    }

    /// Admitted messages not yet finished.
    pub fn in_flight(&self) -> u64 {
        self.admitted.saturating_sub(self.finished())
    }

    /// Whether the counts reconcile exactly (SPEC 3).
    pub fn reconciles(&self) -> bool {
        self.submitted == self.refused_total() + self.shed_total() + self.admitted
            && self.admitted >= self.finished()
    }

    /// Counts one completion as the message's submitter sees it: the decision, and for an
    /// admitted message also how it finished. A submitter that counts every completion it
    /// reads (a load generator, a client) gets a tally that reconciles like the engine's.
    pub fn count_completion(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Refused { .. } | Outcome::Shed { .. } => self.count_decision(Some(outcome)),
            finished => {
                self.count_decision(None);
                self.count_finish(finished);
            }
        }
    }

    /// Counts the first decision on a message that reached admission: `outcome` is a
    /// refusal or shed, or `None` for admitted.
    #[inline(always)]
    pub(crate) fn count_decision(&mut self, outcome: Option<Outcome>) {
        self.submitted += 1;
        match outcome {
            None => self.admitted += 1,
            Some(Outcome::Refused { reason, .. }) => self.refused[reason.index()] += 1,
            Some(Outcome::Shed { reason }) => self.shed[reason.index()] += 1,
            Some(other) => debug_assert!(false, "not a decision: {other:?}"),
        }
    }

    /// Counts how an admitted message finished.
    #[inline(always)]
    pub(crate) fn count_finish(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Delivered => self.delivered += 1,
            Outcome::Failed { reason } => self.failed[reason.index()] += 1,
            Outcome::Cancelled => self.cancelled += 1,
            Outcome::Dropped { reason } => self.dropped[reason.index()] += 1,
            Outcome::Refused { .. } | Outcome::Shed { .. } => {
                debug_assert!(false, "not a finish: {outcome:?}")
            }
        }
    }

    /// Adds every count of `other` to this one: the tallies of several shards, or of several
    /// producers that each read their own completions, merged into one.
    pub fn add(&mut self, other: &Tally) {
        self.submitted += other.submitted;
        self.admitted += other.admitted;
        self.delivered += other.delivered;
        self.cancelled += other.cancelled;
        let pairs = self
            .refused
            .iter_mut()
            .zip(&other.refused)
            .chain(self.shed.iter_mut().zip(&other.shed))
            .chain(self.failed.iter_mut().zip(&other.failed))
            .chain(self.dropped.iter_mut().zip(&other.dropped));
        for (sum, value) in pairs {
            *sum += value;
        }
    }

    fn write(&self, out: &mut [u64]) {
        let words = [
            self.submitted,
            self.admitted,
            self.delivered,
            self.cancelled,
        ]
        .into_iter()
        .chain(self.refused)
        .chain(self.shed)
        .chain(self.failed)
        .chain(self.dropped);
        for (slot, value) in out.iter_mut().zip(words) {
            *slot = value;
        }
    }

    fn read(words: &[u64]) -> Self {
        let mut tally = Tally {
            submitted: words[0],
            admitted: words[1],
            delivered: words[2],
            cancelled: words[3],
            ..Tally::default()
        };
        let mut rest = words[4..].iter().copied();
        for slot in tally
            .refused
            .iter_mut()
            .chain(&mut tally.shed)
            .chain(&mut tally.failed)
            .chain(&mut tally.dropped)
        {
            *slot = rest.next().unwrap_or(0);
        }
        tally
    }
}

/// Upper bounds of [`LatencyHistogram`]'s buckets, ns: 10 µs to 10 s in 1-2.5-5 steps, so
/// that a microsecond path and a queue seconds deep both land in buckets a few apart. The
/// last bucket (above 10 s) has no bound.
pub const LATENCY_BUCKET_BOUNDS_NS: [u64; 19] = [
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// Buckets of a [`LatencyHistogram`]: one per bound and one above the last.
pub const LATENCY_BUCKETS: usize = LATENCY_BUCKET_BOUNDS_NS.len() + 1;

/// Number of `u64`s a [`LatencyHistogram`] publishes as: its buckets and its sum.
const HISTOGRAM_WORDS: usize = LATENCY_BUCKETS + 1;

/// Latencies from admission to completion of delivered messages, in fixed buckets
/// ([`LATENCY_BUCKET_BOUNDS_NS`]): what a Prometheus histogram needs, at the cost of one
/// search of 19 bounds and two adds per delivered message on the shard.
///
/// ```
/// use spillway::metrics::LatencyHistogram;
/// let mut histogram = LatencyHistogram::default();
/// histogram.record(30_000);
/// histogram.record(2_000_000);
/// assert_eq!(histogram.count(), 2);
/// assert_eq!(histogram.bucket_counts()[2], 1); // (25 µs, 50 µs]
/// assert_eq!(histogram.sum_ns(), 2_030_000);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LatencyHistogram {
    /// Count per bucket (not cumulative), in [`LATENCY_BUCKET_BOUNDS_NS`] order, the last
    /// one above every bound.
    buckets: [u64; LATENCY_BUCKETS],
    sum_ns: u64,
}

impl LatencyHistogram {
    /// Counts one latency.
    #[inline]
    pub fn record(&mut self, latency_ns: u64) {
        let bucket = LATENCY_BUCKET_BOUNDS_NS.partition_point(|&bound| bound < latency_ns);
        self.buckets[bucket] += 1;
        self.sum_ns = self.sum_ns.wrapping_add(latency_ns);
    }

    /// Latencies counted.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// Their sum, ns (wraps after 584 years of latency).
    pub fn sum_ns(&self) -> u64 {
        self.sum_ns
    }

    /// Count per bucket, not cumulative: bucket `i` holds latencies above bound `i - 1`
    /// and at most bound `i` of [`LATENCY_BUCKET_BOUNDS_NS`]; the last is above them all.
    pub fn bucket_counts(&self) -> &[u64; LATENCY_BUCKETS] {
        &self.buckets
    }

    /// Adds `other`'s counts to this one's (several shards into one).
    pub fn add(&mut self, other: &LatencyHistogram) {
        for (sum, value) in self.buckets.iter_mut().zip(&other.buckets) {
            *sum += value;
        }
        self.sum_ns = self.sum_ns.wrapping_add(other.sum_ns);
    }

    fn write(&self, out: &mut [u64]) {
        out[..LATENCY_BUCKETS].copy_from_slice(&self.buckets);
        out[LATENCY_BUCKETS] = self.sum_ns;
    }

    fn read(words: &[u64]) -> Self {
        let mut histogram = LatencyHistogram::default();
        histogram.buckets.copy_from_slice(&words[..LATENCY_BUCKETS]);
        histogram.sum_ns = words[LATENCY_BUCKETS];
        histogram
    }
}

/// A shard's own counters: plain integers, written only by the shard.
#[derive(Clone, Debug)]
pub(crate) struct ShardCounters {
    pub(crate) total: Tally,
    pub(crate) roles: [Tally; Role::COUNT],
    /// Per priority as decided (after a tenant's ceiling lowered it).
    pub(crate) priorities: [Tally; Priority::COUNT],
    /// Admission to completion of delivered messages, per priority.
    pub(crate) latency: [LatencyHistogram; Priority::COUNT],
    /// One per configured tenant, in tenant-table order, then one for all other tenants.
    pub(crate) tenants: Vec<Tally>,
    pub(crate) priority_downgraded: u64,
    pub(crate) backpressure_raised: u64,
    pub(crate) connections_evicted: u64,
    pub(crate) breaker_trips: u64,
    /// Gauges, set at publication.
    pub(crate) pending_messages: u64,
    pub(crate) connections: u64,
    pub(crate) backpressure_active: u64,
    /// Submissions waiting in the shard's rings, not yet taken to admission.
    pub(crate) ring_messages: u64,
}

const SHARD_SCALAR_WORDS: usize = 8;

impl ShardCounters {
    pub(crate) fn new(configured_tenants: usize) -> Self {
        Self {
            total: Tally::default(),
            roles: [Tally::default(); Role::COUNT],
            priorities: [Tally::default(); Priority::COUNT],
            latency: [LatencyHistogram::default(); Priority::COUNT],
            tenants: vec![Tally::default(); configured_tenants + 1],
            priority_downgraded: 0,
            backpressure_raised: 0,
            connections_evicted: 0,
            breaker_trips: 0,
            pending_messages: 0,
            connections: 0,
            backpressure_active: 0,
            ring_messages: 0,
        }
    }

    /// Tallies published: the total, the roles, the priorities and the tenants.
    fn tally_count(&self) -> usize {
        1 + Role::COUNT + Priority::COUNT + self.tenants.len()
    }

    fn words(&self) -> usize {
        SHARD_SCALAR_WORDS + TALLY_WORDS * self.tally_count() + HISTOGRAM_WORDS * Priority::COUNT
    }

    fn write(&self, out: &mut [u64]) {
        out[..SHARD_SCALAR_WORDS].copy_from_slice(&[
            self.priority_downgraded,
            self.backpressure_raised,
            self.connections_evicted,
            self.breaker_trips,
            self.pending_messages,
            self.connections,
            self.backpressure_active,
            self.ring_messages,
        ]);
        let (tally_words, histogram_words) =
            out[SHARD_SCALAR_WORDS..].split_at_mut(TALLY_WORDS * self.tally_count());
        let tallies = core::iter::once(&self.total)
            .chain(&self.roles)
            .chain(&self.priorities)
            .chain(&self.tenants);
        for (chunk, tally) in tally_words.chunks_exact_mut(TALLY_WORDS).zip(tallies) {
            tally.write(chunk);
        }
        for (chunk, histogram) in histogram_words
            .chunks_exact_mut(HISTOGRAM_WORDS)
            .zip(&self.latency)
        {
            histogram.write(chunk);
        }
    }

    fn read(words: &[u64], configured_tenants: usize) -> Self {
        let mut counters = ShardCounters::new(configured_tenants);
        let [priority_downgraded, backpressure_raised, connections_evicted, breaker_trips, pending_messages, connections, backpressure_active, ring_messages] =
            words[..SHARD_SCALAR_WORDS]
                .try_into()
                .expect("eight scalar words");
        counters.priority_downgraded = priority_downgraded;
        counters.backpressure_raised = backpressure_raised;
        counters.connections_evicted = connections_evicted;
        counters.breaker_trips = breaker_trips;
        counters.pending_messages = pending_messages;
        counters.connections = connections;
        counters.backpressure_active = backpressure_active;
        counters.ring_messages = ring_messages;
        let (tally_words, histogram_words) =
            words[SHARD_SCALAR_WORDS..].split_at(TALLY_WORDS * counters.tally_count());
        let mut chunks = tally_words.chunks_exact(TALLY_WORDS);
        for tally in core::iter::once(&mut counters.total)
            .chain(&mut counters.roles)
            .chain(&mut counters.priorities)
            .chain(&mut counters.tenants)
        {
            *tally = Tally::read(chunks.next().expect("layout matches"));
        }
        for (histogram, chunk) in counters
            .latency
            .iter_mut()
            .zip(histogram_words.chunks_exact(HISTOGRAM_WORDS))
        {
            *histogram = LatencyHistogram::read(chunk);
        }
        counters
    }
}

/// A seqlock over a fixed number of `u64` words: one writer publishes whole snapshots, any
/// number of readers copy one consistent snapshot without blocking the writer.
///
/// The protocol is the one of crossbeam's `AtomicCell` fallback and of Boehm, "Can seqlocks
/// get along with programming language memory models?" (2012): the writer makes the sequence
/// odd, writes, makes it even; a reader accepts a copy only if it saw the same even sequence
/// before and after. Every word is an atomic, so a torn read is detected, never undefined.
#[derive(Debug)]
pub(crate) struct SeqLock {
    /// Even when stable, odd while the writer writes. Wraps after 2^63 publications.
    sequence: AtomicU64,
    words: Box<[AtomicU64]>,
}

/// Attempts a reader spins before it yields between attempts. A reader retries when a
/// publication overlaps its copy; shards publish at most once per 100 µs while busy and
/// not at all while idle and unchanged, so a copy (well under a microsecond) rarely needs
/// a second attempt, and the yields only matter if the writer is descheduled mid-write.
const READ_SPINS_MAX: u32 = 64;

impl SeqLock {
    pub(crate) fn new(words: usize) -> Self {
        Self {
            sequence: AtomicU64::new(0),
            words: (0..words).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Publishes `values`. Only one thread may ever call this on a given lock.
    pub(crate) fn publish(&self, values: &[u64]) {
        debug_assert_eq!(values.len(), self.words.len());
        // Relaxed load: only this thread writes the sequence.
        let sequence = self.sequence.load(Ordering::Relaxed);
        self.sequence
            .store(sequence.wrapping_add(1), Ordering::Relaxed);
        // Release fence: orders the odd store before the word stores below, so a reader
        // whose Acquire fence sees any new word also sees the odd sequence (pairs with the
        // fence in `read`).
        fence(Ordering::Release);
        for (word, &value) in self.words.iter().zip(values) {
            // Relaxed: ordered by the fences and the Release store below.
            word.store(value, Ordering::Relaxed);
        }
        // Release: a reader that Acquire-loads this even sequence sees every word above.
        self.sequence
            .store(sequence.wrapping_add(2), Ordering::Release);
    }

    /// Copies one consistent publication into `out` (which must have the lock's length).
    pub(crate) fn read(&self, out: &mut [u64]) {
        debug_assert_eq!(out.len(), self.words.len());
        let mut attempts = 0u32;
        loop {
            // Acquire pairs with the Release store of the even sequence in `publish`.
            let before = self.sequence.load(Ordering::Acquire);
            if before % 2 == 0 {
                for (value, word) in out.iter_mut().zip(self.words.iter()) {
                    *value = word.load(Ordering::Relaxed);
                }
                // Acquire fence: pairs with the Release fence in `publish`; if any word read
                // above came from a newer write, the load below sees at least its odd
                // sequence.
                fence(Ordering::Acquire);
                if self.sequence.load(Ordering::Relaxed) == before {
                    return;
                }
            }
            attempts = attempts.saturating_add(1);
            if attempts < READ_SPINS_MAX {
                crate::sync::spin_hint();
            } else {
                crate::sync::yield_now();
            }
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.words.len()
    }
}

/// A shard's counters as last published, through a [`SeqLock`] that only the shard writes.
#[derive(Debug)]
pub(crate) struct PublishedCounters {
    lock: SeqLock,
    configured_tenants: usize,
}

impl PublishedCounters {
    pub(crate) fn new(configured_tenants: usize) -> Self {
        Self {
            lock: SeqLock::new(ShardCounters::new(configured_tenants).words()),
            configured_tenants,
        }
    }

    /// Called by the owning shard only. `scratch` is the shard's reusable buffer.
    pub(crate) fn publish(&self, counters: &ShardCounters, scratch: &mut Vec<u64>) {
        scratch.clear();
        scratch.resize(self.lock.len(), 0);
        counters.write(scratch);
        self.lock.publish(scratch);
    }

    /// A consistent copy of the last publication.
    pub(crate) fn read(&self) -> ShardCounters {
        let mut words = vec![0; self.lock.len()];
        self.lock.read(&mut words);
        ShardCounters::read(&words, self.configured_tenants)
    }
}

/// One shard's part of a [`Stats`] snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardStats {
    /// The shard's index.
    pub shard: usize,
    /// Its outcome counts.
    pub total: Tally,
    /// Its outcome counts per role, in [`Role::ALL`] order (a role's `in_flight` is its
    /// pending count on this shard, what the role cap applies to).
    pub roles: [Tally; Role::COUNT],
    /// Messages pending on its queues when it published.
    pub pending_messages: u64,
    /// Submissions waiting in its rings from the producers when it published, not yet
    /// admitted or refused.
    pub ring_messages: u64,
    /// Connections whose state it holds.
    pub connections: u64,
    /// Whether its handler queue was at or over the backpressure threshold.
    pub backpressure: bool,
    /// Times it raised backpressure (crossed the threshold upward).
    pub backpressure_raised: u64,
    /// Messages whose claimed priority its tenants' ceilings lowered.
    pub priority_downgraded: u64,
    /// Idle connections it evicted to make room for new ones.
    pub connections_evicted: u64,
    /// Times it opened the breaker.
    pub breaker_trips: u64,
}

/// A snapshot of the whole engine's counters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stats {
    /// All shards together.
    pub total: Tally,
    /// Per role, in [`Role::ALL`] order.
    pub roles: [Tally; Role::COUNT],
    /// Per priority as decided (a tenant's ceiling may lower a message's priority before
    /// its decision), in [`Priority::ALL`] order.
    pub priorities: [Tally; Priority::COUNT],
    /// Admission to completion of delivered messages, per priority in [`Priority::ALL`]
    /// order (the handler's or worker's answer; the reply's trip to a TCP client is not in
    /// it).
    pub latency: [LatencyHistogram; Priority::COUNT],
    /// Per configured tenant.
    pub tenants: Vec<(TenantId, Tally)>,
    /// All tenants without settings together.
    pub other_tenants: Tally,
    /// Per shard.
    pub shards: Vec<ShardStats>,
    /// The circuit breaker's state when the snapshot was taken.
    pub breaker: BreakerState,
    /// Submissions handed back to the caller because the ring to the shard had no room
    /// (counted by the ingress; such messages never reached admission).
    pub ring_full: u64,
    /// The control plane's command latencies and SLO violations.
    pub control: ControlStats,
}

impl Stats {
    /// Builds a snapshot from each shard's published counters.
    pub(crate) fn collect(
        shards: &[ShardCounters],
        tenant_ids: &[TenantId],
        breaker: BreakerState,
        ring_full: u64,
    ) -> Self {
        let mut total = Tally::default();
        let mut roles = [Tally::default(); Role::COUNT];
        let mut priorities = [Tally::default(); Priority::COUNT];
        let mut latency = [LatencyHistogram::default(); Priority::COUNT];
        let mut tenants: Vec<(TenantId, Tally)> = tenant_ids
            .iter()
            .map(|&tenant| (tenant, Tally::default()))
            .collect();
        let mut other_tenants = Tally::default();
        let mut shard_stats = Vec::with_capacity(shards.len());
        for (index, counters) in shards.iter().enumerate() {
            total.add(&counters.total);
            for (sum, tally) in roles.iter_mut().zip(&counters.roles) {
                sum.add(tally);
            }
            for (sum, tally) in priorities.iter_mut().zip(&counters.priorities) {
                sum.add(tally);
            }
            for (sum, histogram) in latency.iter_mut().zip(&counters.latency) {
                sum.add(histogram);
            }
            for ((_, sum), tally) in tenants.iter_mut().zip(&counters.tenants) {
                sum.add(tally);
            }
            if let Some(other) = counters.tenants.last() {
                other_tenants.add(other);
            }
            shard_stats.push(ShardStats {
                shard: index,
                total: counters.total,
                roles: counters.roles,
                pending_messages: counters.pending_messages,
                ring_messages: counters.ring_messages,
                connections: counters.connections,
                backpressure: counters.backpressure_active != 0,
                backpressure_raised: counters.backpressure_raised,
                priority_downgraded: counters.priority_downgraded,
                connections_evicted: counters.connections_evicted,
                breaker_trips: counters.breaker_trips,
            });
        }
        Stats {
            total,
            roles,
            priorities,
            latency,
            tenants,
            other_tenants,
            shards: shard_stats,
            breaker,
            ring_full,
            control: ControlStats::default(),
        }
    }

    /// Whether every scope reconciles exactly (SPEC 3).
    pub fn reconciles(&self) -> bool {
        self.total.reconciles()
            && self.roles.iter().all(Tally::reconciles)
            && self.priorities.iter().all(Tally::reconciles)
            && self.tenants.iter().all(|(_, tally)| tally.reconciles())
            && self.other_tenants.reconciles()
            && self.shards.iter().all(|shard| shard.total.reconciles())
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn counters_round_trip_through_publication() {
        let mut counters = ShardCounters::new(2);
        counters.total.count_decision(None);
        counters.total.count_decision(Some(Outcome::Refused {
            reason: RefusalReason::TenantQueueFull,
            retry_after_ns: 5,
        }));
        counters.total.count_finish(Outcome::Dropped {
            reason: DropReason::Disconnected,
        });
        counters.roles[3].count_decision(Some(Outcome::Shed {
            reason: ShedReason::CircuitOpen,
        }));
        counters.tenants[2].count_finish(Outcome::Failed {
            reason: FailureReason::HandlerPanic,
        });
        counters.priorities[1].count_decision(None);
        counters.latency[3].record(7_000_000);
        counters.latency[3].record(20_000_000_000);
        counters.pending_messages = 17;
        let published = PublishedCounters::new(2);
        published.publish(&counters, &mut Vec::new());
        let read = published.read();
        assert_eq!(read.total, counters.total);
        assert_eq!(read.roles, counters.roles);
        assert_eq!(read.tenants, counters.tenants);
        assert_eq!(read.priorities, counters.priorities);
        assert_eq!(read.latency, counters.latency);
        assert_eq!(read.latency[3].bucket_counts()[9], 1); // (5 ms, 10 ms]
        assert_eq!(read.latency[3].bucket_counts()[LATENCY_BUCKETS - 1], 1); // > 10 s
        assert_eq!(read.pending_messages, 17);
        assert!(read.total.reconciles());
        assert_eq!(read.total.in_flight(), 0);
    }

    #[test]
    fn readers_never_see_a_torn_publication() {
        let published = std::sync::Arc::new(PublishedCounters::new(0));
        let writer = {
            let published = std::sync::Arc::clone(&published);
            std::thread::spawn(move || {
                let mut counters = ShardCounters::new(0);
                let mut scratch = Vec::new();
                for _ in 0..20_000 {
                    // Keep submitted = admitted + refused at every publication.
                    counters.total.count_decision(None);
                    counters.total.count_decision(Some(Outcome::Refused {
                        reason: RefusalReason::RateLimited,
                        retry_after_ns: 1,
                    }));
                    published.publish(&counters, &mut scratch);
                }
            })
        };
        let mut reads = 0;
        while !writer.is_finished() || reads == 0 {
            let snapshot = published.read();
            assert!(
                snapshot.total.reconciles(),
                "torn read: {:?}",
                snapshot.total
            );
            reads += 1;
        }
        writer.join().unwrap();
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    //! The seqlock under every interleaving (scripts/loom.sh): the writer publishes
    //! snapshots whose two words are always equal; a reader must never accept a mix of two.
    use super::SeqLock;
    use loom::sync::Arc;
    use loom::thread;

    #[test]
    fn readers_never_accept_a_torn_snapshot() {
        loom::model(|| {
            let lock = Arc::new(SeqLock::new(2));
            let writer = {
                let lock = Arc::clone(&lock);
                thread::spawn(move || {
                    lock.publish(&[1, 1]);
                    lock.publish(&[2, 2]);
                })
            };
            let mut snapshot = [0; 2];
            lock.read(&mut snapshot);
            assert_eq!(snapshot[0], snapshot[1], "torn read {snapshot:?}");
            writer.join().unwrap();
            lock.read(&mut snapshot);
            assert_eq!(snapshot, [2, 2]);
        });
    }
}

/// Latency of one command type, from request to answer, from an HDR histogram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommandLatency {
    /// The command type.
    pub command: CommandKind,
    /// Commands answered.
    pub count: u64,
    /// Median, ns.
    pub p50_ns: u64,
    /// 95th percentile, ns.
    pub p95_ns: u64,
    /// 99th percentile, ns.
    pub p99_ns: u64,
    /// 99.9th percentile, ns.
    pub p999_ns: u64,
    /// Slowest, ns.
    pub max_ns: u64,
}

/// The control plane's figures, part of [`Stats`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ControlStats {
    /// Per command type that has been used.
    pub latency: Vec<CommandLatency>,
    /// Health checks slower than the SLO (`control.health_slo_ns`).
    pub slo_violations: u64,
    /// Every breaker transition since the engine started, by cause (the control plane's
    /// history keeps only the latest, with their figures).
    pub breaker_transitions: BreakerTransitionCounts,
}

/// Breaker transitions by cause, part of [`ControlStats`]. The causes are those of
/// `spillway::control::BreakerCause`, a shard's trigger split out.
///
/// ```
/// use spillway::engine::Engine;
/// use spillway::message::Message;
///
/// let engine = Engine::builder().handler(|_: &Message| Ok(())).start().unwrap();
/// engine.control().force_open().unwrap();
/// engine.control().force_closed().unwrap();
/// let counts = engine.control().stats().control.breaker_transitions;
/// assert_eq!((counts.forced_open, counts.forced_closed, counts.total()), (1, 1, 2));
/// engine.shutdown();
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BreakerTransitionCounts {
    /// Trips by a shard's error rate.
    pub error_rate: u64,
    /// Trips by a shard's p95 latency.
    pub p95_latency: u64,
    /// Trips by a full handler or role queue.
    pub queue_full: u64,
    /// Trips by the monitor's overload sample.
    pub overload: u64,
    /// Open -> half-open after the recovery timeout.
    pub recovery_timeout: u64,
    /// Half-open -> closed after a good period.
    pub good_period: u64,
    /// Forced open by control.
    pub forced_open: u64,
    /// Forced closed by control.
    pub forced_closed: u64,
    /// Reset by control.
    pub reset: u64,
}

impl BreakerTransitionCounts {
    /// All transitions. See the example on [`BreakerTransitionCounts`].
    pub fn total(&self) -> u64 {
        self.error_rate
            + self.p95_latency
            + self.queue_full
            + self.overload
            + self.recovery_timeout
            + self.good_period
            + self.forced_open
            + self.forced_closed
            + self.reset
    }
}
