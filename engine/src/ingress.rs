//! How producers hand work to shards and hear back: the submission/completion model of
//! SPEC 2, as io_uring does it.
//!
//! An [`Ingress`] belongs to one producer thread. It holds, for every shard, a submission
//! ring (SPSC, producer -> shard) and a completion ring back (SPSC, shard -> producer).
//! [`Ingress::submit`] puts a message on the ring of the shard that owns its connection, or
//! hands it straight back in [`Full`]; the shard posts exactly one [`Completion`] per
//! accepted message, which [`Ingress::poll_completions`] collects.
//!
//! The completion ring can never overflow: the ingress counts, per shard, the messages it
//! submitted whose completions it has not yet collected, and hands a submission back (as
//! `Full`) once that count reaches the completion ring's capacity. So a shard always has
//! room for every completion it owes, and never has to block, buffer or drop one.
//!
//! The completion ring holds `completion_capacity`: the submission ring plus the
//! shard's handler-queue cap. Admitted work waiting in the shard's queue therefore never
//! uses up the producer's credit before the queue caps are reached, and overload shows as
//! counted refusals with a `retry_after` (SPEC 2), not as a blocked producer. `Full` then
//! means what it says: the submission ring itself is full (or the producer stopped reading
//! its completions).
//!
//! [`SharedIngress`] is the same over MPMC rings, for callers that cannot keep one handle
//! per thread: any clone may submit, and any clone collects the completions of all.

use core::cell::Cell;
use core::fmt;
use core::marker::PhantomData;

use crate::message::Message;
use crate::outcome::{Completion, Outcome, RefusalReason};
use crate::ring::spsc;
use crate::shard::queue::Origin;
use crate::shard::shared::ShardLink;
use crate::shared::EngineShared;
use crate::sync::{Arc, Mutex, Ordering};

/// A submission the engine could not take: the message comes back to the caller.
///
/// `stopped` is false when the ring to the shard had no room (the caller's backpressure:
/// collect completions, then retry), true when the engine has shut down.
#[derive(Clone, PartialEq, Eq)]
pub struct Full<T> {
    /// The message, unchanged.
    pub message: T,
    /// Whether the engine has stopped (retrying cannot help).
    pub stopped: bool,
}

impl<T> fmt::Debug for Full<T> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Full")
            .field("stopped", &self.stopped)
            .finish_non_exhaustive()
    }
}

impl<T> fmt::Display for Full<T> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.stopped {
            formatter.write_str("the engine has stopped")
        } else {
            formatter.write_str("the submission ring to the shard is full")
        }
    }
}

impl<T> std::error::Error for Full<T> {}

/// The ingress's end of its rings to one shard.
struct IngressLink {
    submissions: spsc::Producer<Message>,
    completions: spsc::Consumer<Completion>,
    /// Submitted to this shard, completion not yet collected: at most the completion
    /// ring's capacity.
    outstanding: usize,
    orphan: Arc<Mutex<Option<spsc::Consumer<Message>>>>,
}

/// The rings between ingress number `origin` and one shard: the ingress's end and the
/// shard's (which holds `token` while it keeps the link).
fn link_pair(
    origin: Origin,
    submission_capacity: usize,
    completion_capacity: usize,
    token: Arc<()>,
) -> (IngressLink, ShardLink) {
    let (submit_producer, submit_consumer) = spsc::channel(submission_capacity);
    let (complete_producer, mut complete_consumer) = spsc::channel(completion_capacity);
    // The owner of an ingress polls its completions between submissions: a slip's pause
    // there would delay its sending (see `Consumer::set_slip`).
    complete_consumer.set_slip(false);
    let orphan = Arc::new(Mutex::new(None));
    let shard_end = ShardLink {
        origin,
        submissions: submit_consumer,
        completions: complete_producer,
        orphan: Arc::clone(&orphan),
        _token: token,
    };
    let ingress_end = IngressLink {
        submissions: submit_producer,
        completions: complete_consumer,
        outstanding: 0,
        orphan,
    };
    (ingress_end, shard_end)
}

impl IngressLink {
    /// Puts `message` on the ring unless the shard owes as many completions as its ring
    /// holds (`capacity`) or the ring is full; then the message comes back.
    #[inline]
    fn push(&mut self, message: Message, capacity: usize) -> Result<(), Message> {
        if self.outstanding >= capacity {
            return Err(message);
        }
        self.submissions.push(message)?;
        self.outstanding += 1;
        Ok(())
    }

    /// Moves the completions that have arrived to `out`. Once the engine has `stopped`
    /// (every shard thread joined), also refuses `ShuttingDown` what reached the ring after
    /// its shard's last look: the shard left the ring in `orphan` when it exited, so each
    /// message still gets exactly one completion. Returns how many it moved.
    fn collect(&mut self, stopped: bool, out: &mut Vec<Completion>) -> usize {
        let mut collected = self.completions.pop_into(out, usize::MAX);
        if stopped {
            let orphan = self.orphan.lock().map(|mut slot| slot.take());
            if let Ok(Some(mut submissions)) = orphan {
                collected += submissions.pop_each(usize::MAX, |message| {
                    out.push(shutting_down(&message));
                });
            }
        }
        self.outstanding -= collected;
        collected
    }
}

/// A producer thread's handle: one submission ring to each shard and one completion ring
/// back from each. `Send`, not `Sync`: it moves to its thread and stays there.
///
/// ```
/// use spillway::engine::Engine;
/// use spillway::message::{ConnectionId, Message, MessageId};
/// use spillway::outcome::Outcome;
///
/// let engine = Engine::builder().handler(|_: &Message| Ok(())).start().unwrap();
/// let mut ingress = engine.ingress().unwrap();
/// ingress.submit(Message::new(ConnectionId(1), MessageId(1))).unwrap();
/// let mut completions = Vec::new();
/// while completions.is_empty() {
///     ingress.poll_completions(&mut completions);
/// }
/// assert_eq!(completions[0].outcome, Outcome::Delivered);
/// drop(ingress);
/// assert!(engine.shutdown().reconciles());
/// ```
pub struct Ingress {
    engine: Arc<EngineShared>,
    links: Vec<IngressLink>,
    /// Completions made here rather than by a shard (messages the shards never saw
    /// because the engine stopped).
    leftover: Vec<Completion>,
    capacity: usize,
    not_sync: PhantomData<Cell<()>>,
}

impl Ingress {
    /// Builds the rings for ingress number `index` and hands the shard ends to the shards.
    pub(crate) fn new(engine: Arc<EngineShared>, index: u16, token: Arc<()>) -> Self {
        let submission_capacity = engine.config.ring_capacity;
        let capacity = completion_capacity(&engine.config);
        let mut links = Vec::with_capacity(engine.shards.len());
        for shard in engine.shards.iter() {
            let (ingress_end, shard_end) = link_pair(
                Origin(index),
                submission_capacity,
                capacity,
                Arc::clone(&token),
            );
            if shard.registrations.push(shard_end).is_err() {
                unreachable!(
                    "a registration ring holds INGRESSES_MAX links and indices are unique"
                );
            }
            shard.wake();
            links.push(ingress_end);
        }
        Self {
            engine,
            links,
            leftover: Vec::new(),
            capacity,
            not_sync: PhantomData,
        }
    }

    /// Hands `message` to the shard that owns its connection, or hands it back when that
    /// shard's ring has no room (collect completions, then retry) or the engine stopped.
    #[inline]
    pub fn submit(&mut self, message: Message) -> Result<(), Full<Message>> {
        let shard = self.engine.shard_of(message.connection);
        // Acquire: pairs with the Release store in `Engine::shutdown` after every shard
        // thread was joined; past it, no shard reads the rings any more.
        if self.engine.stopped.load(Ordering::Acquire) {
            return Err(Full {
                message,
                stopped: true,
            });
        }
        if let Err(message) = self.links[shard].push(message, self.capacity) {
            // The shard owes as many completions as its ring holds, or has not yet taken
            // the last `ring_capacity` submissions. Relaxed: a statistic.
            self.engine.ring_full.fetch_add(1, Ordering::Relaxed);
            return Err(Full {
                message,
                stopped: false,
            });
        }
        self.engine.shards[shard].wake_if_sleeping();
        Ok(())
    }

    /// Like [`submit`](Self::submit), but while the ring is full it collects completions
    /// (kept for the next [`poll_completions`](Self::poll_completions)) and retries, until
    /// `timeout` has passed. Blocks the caller: only for callers that asked to wait.
    pub fn submit_timeout(
        &mut self,
        mut message: Message,
        timeout: std::time::Duration,
    ) -> Result<(), Full<Message>> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            match self.submit(message) {
                Ok(()) => return Ok(()),
                Err(full) if full.stopped => return Err(full),
                Err(full) => message = full.message,
            }
            if std::time::Instant::now() >= deadline {
                return Err(Full {
                    message,
                    stopped: false,
                });
            }
            let mut collected = core::mem::take(&mut self.leftover);
            if self.collect(&mut collected) == 0 {
                std::thread::yield_now();
            }
            self.leftover = collected;
        }
    }

    /// Moves every completion that has arrived to the end of `out`; returns how many.
    pub fn poll_completions(&mut self, out: &mut Vec<Completion>) -> usize {
        let before = out.len();
        out.append(&mut self.leftover);
        self.collect(out);
        out.len() - before
    }

    fn collect(&mut self, out: &mut Vec<Completion>) -> usize {
        // Acquire: as in `submit`; read before the rings, so that a ring seen after the
        // engine stopped holds everything its shard will ever post.
        let stopped = self.engine.stopped.load(Ordering::Acquire);
        self.links
            .iter_mut()
            .map(|link| link.collect(stopped, out))
            .sum()
    }

    /// Messages submitted whose completions have not been collected yet.
    pub fn outstanding(&self) -> usize {
        self.links.iter().map(|link| link.outstanding).sum()
    }

    /// Whether the shard that owns `connection` signals backpressure (its handler queue is
    /// at 80% of its cap or more): a producer that can slow down should.
    pub fn backpressure(&self, connection: crate::message::ConnectionId) -> bool {
        let shard = self.engine.shard_of(connection);
        // Relaxed: an advisory signal.
        self.engine.shards[shard]
            .backpressure
            .load(Ordering::Relaxed)
    }
}

impl fmt::Debug for Ingress {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Ingress")
            .field("shards", &self.links.len())
            .field("outstanding", &self.outstanding())
            .finish()
    }
}

/// Completions a producer may owe per shard: its submission ring plus everything the shard
/// can hold admitted (the handler-queue cap). Sizes the completion rings and the credit.
pub(crate) fn completion_capacity(config: &crate::config::Config) -> usize {
    config.ring_capacity + config.caps.handler_queue as usize
}

fn shutting_down(message: &Message) -> Completion {
    Completion::of(
        message,
        Outcome::Refused {
            reason: RefusalReason::ShuttingDown,
            retry_after_ns: 0,
        },
    )
}

/// A submission handle that any number of threads share (`Clone + Sync`), over one MPMC
/// submission ring and one MPMC completion ring per shard. Slower than [`Ingress`] (every
/// operation is a contended atomic); for callers that cannot keep a handle per thread.
///
/// Completions are shared too: whichever clone polls gets the completions of messages any
/// clone submitted.
#[derive(Clone)]
pub struct SharedIngress {
    engine: Arc<EngineShared>,
}

impl SharedIngress {
    pub(crate) fn new(engine: Arc<EngineShared>) -> Self {
        Self { engine }
    }

    /// Hands `message` to the shard that owns its connection, or hands it back.
    pub fn submit(&self, message: Message) -> Result<(), Full<Message>> {
        let shard_index = self.engine.shard_of(message.connection);
        if self.engine.stopped.load(Ordering::Acquire) {
            return Err(Full {
                message,
                stopped: true,
            });
        }
        let shard = &self.engine.shards[shard_index];
        // Relaxed: a credit count whose atomic read-modify-writes alone keep it exact; the
        // message itself is published by the ring.
        if shard.shared_outstanding.fetch_add(1, Ordering::Relaxed)
            >= completion_capacity(&self.engine.config)
        {
            shard.shared_outstanding.fetch_sub(1, Ordering::Relaxed);
            self.engine.ring_full.fetch_add(1, Ordering::Relaxed);
            return Err(Full {
                message,
                stopped: false,
            });
        }
        if let Err(message) = shard.shared_submissions.push(message) {
            shard.shared_outstanding.fetch_sub(1, Ordering::Relaxed);
            self.engine.ring_full.fetch_add(1, Ordering::Relaxed);
            return Err(Full {
                message,
                stopped: false,
            });
        }
        shard.wake_if_sleeping();
        Ok(())
    }

    /// Moves every completion that has arrived (for any clone's messages) to `out`.
    pub fn poll_completions(&self, out: &mut Vec<Completion>) -> usize {
        let before = out.len();
        let stopped = self.engine.stopped.load(Ordering::Acquire);
        for shard in self.engine.shards.iter() {
            let mut popped = shard.shared_completions.pop_into(out, usize::MAX);
            if stopped {
                // After the shards exit, what is still in the submission ring was never
                // seen: refuse it here (MPMC: any thread may pop).
                while let Some(message) = shard.shared_submissions.pop() {
                    out.push(shutting_down(&message));
                    popped += 1;
                }
            }
            shard
                .shared_outstanding
                .fetch_sub(popped, Ordering::Relaxed);
        }
        out.len() - before
    }
}

impl fmt::Debug for SharedIngress {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("SharedIngress")
            .field("shards", &self.engine.shards.len())
            .finish()
    }
}

/// The shutdown hand-off under loom (`scripts/loom.sh`): the engine stops while a producer
/// submits and collects. The shard, as its loop does, reads `stopping` first and then takes
/// one more look at its ring before it leaves the ring to its ingress (`leave_orphan`) and
/// exits; the engine joins it and only then raises `stopped`. The link's ends are the real
/// `IngressLink` and `ShardLink` over the real SPSC rings; the shard's loop is reduced to
/// its stop condition. Checked over every interleaving: each message gets exactly one
/// completion (the shard's, or `ShuttingDown` from the ingress once stopped), no ring slot
/// is read twice or freed early (loom's cell and `Arc` checks), and the producer's wait for
/// its completions ends (a lost completion would spin it past loom's branch limit).
#[cfg(all(test, loom))]
mod loom_tests {
    use loom::thread;

    use super::*;
    use crate::message::ConnectionId;
    use crate::sync::AtomicBool;

    const MESSAGES: u64 = 2;
    /// Room for every message, so that the producer never waits on a full ring.
    const CAPACITY: usize = 2;

    fn message(id: u64) -> Message {
        Message::new(ConnectionId(id), crate::message::MessageId(id))
    }

    #[test]
    fn a_stop_racing_a_producer_loses_no_completion() {
        loom::model(|| {
            let (mut ingress_end, shard_end) =
                link_pair(Origin(0), CAPACITY, CAPACITY, Arc::new(()));
            let stopping = Arc::new(AtomicBool::new(false));
            let stopped = Arc::new(AtomicBool::new(false));

            let shard = {
                let stopping = Arc::clone(&stopping);
                thread::spawn(move || {
                    let mut link = shard_end;
                    loop {
                        // Acquire: pairs with the stop's Release store, as in the shard loop.
                        let stop = stopping.load(Ordering::Acquire);
                        let taken = link.submissions.pop_each(usize::MAX, |message| {
                            let _ = link
                                .completions
                                .push(Completion::of(&message, Outcome::Delivered));
                        });
                        if stop && taken == 0 {
                            break;
                        }
                        thread::yield_now();
                    }
                    link.leave_orphan();
                })
            };

            let producer = {
                let stopped = Arc::clone(&stopped);
                thread::spawn(move || {
                    let mut completions = Vec::new();
                    let mut submitted = 0;
                    for id in 0..MESSAGES {
                        // As `Ingress::submit`: nothing is pushed once the engine stopped.
                        if stopped.load(Ordering::Acquire) {
                            break;
                        }
                        if ingress_end.push(message(id), CAPACITY).is_err() {
                            unreachable!("the rings hold every message");
                        }
                        submitted += 1;
                    }
                    while completions.len() < submitted {
                        ingress_end.collect(stopped.load(Ordering::Acquire), &mut completions);
                        thread::yield_now();
                    }
                    (submitted, completions)
                })
            };

            // `Engine::stop`: stopping, join every shard, then stopped.
            stopping.store(true, Ordering::Release);
            shard.join().unwrap();
            stopped.store(true, Ordering::Release);
            let (submitted, completions) = producer.join().unwrap();

            assert_eq!(completions.len(), submitted);
            let mut ids: Vec<u64> = completions.iter().map(|done| done.message.0).collect();
            ids.sort_unstable();
            ids.dedup();
            assert_eq!(ids.len(), submitted, "a message completed twice");
            for completion in &completions {
                assert!(matches!(
                    completion.outcome,
                    Outcome::Delivered
                        | Outcome::Refused {
                            reason: RefusalReason::ShuttingDown,
                            ..
                        }
                ));
            }
        });
    }
}
