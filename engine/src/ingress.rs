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
use std::sync::Mutex;

use crate::message::Message;
use crate::outcome::{Completion, Outcome, RefusalReason};
use crate::ring::spsc;
use crate::shard::queue::Origin;
use crate::shard::shared::ShardLink;
use crate::shared::EngineShared;
use crate::sync::{Arc, Ordering};

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
            let (submit_producer, submit_consumer) = spsc::channel(submission_capacity);
            let (complete_producer, mut complete_consumer) = spsc::channel(capacity);
            // The owner of an ingress polls its completions between submissions: a slip's
            // pause there would delay its sending (see `Consumer::set_slip`).
            complete_consumer.set_slip(false);
            let orphan = Arc::new(Mutex::new(None));
            let link = ShardLink {
                origin: Origin(index),
                submissions: submit_consumer,
                completions: complete_producer,
                orphan: Arc::clone(&orphan),
                _token: Arc::clone(&token),
            };
            if shard.registrations.push(link).is_err() {
                unreachable!(
                    "a registration ring holds INGRESSES_MAX links and indices are unique"
                );
            }
            shard.wake();
            links.push(IngressLink {
                submissions: submit_producer,
                completions: complete_consumer,
                outstanding: 0,
                orphan,
            });
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
        let link = &mut self.links[shard];
        if link.outstanding >= self.capacity {
            // Relaxed: a statistic.
            self.engine.ring_full.fetch_add(1, Ordering::Relaxed);
            return Err(Full {
                message,
                stopped: false,
            });
        }
        if let Err(message) = link.submissions.push(message) {
            // The shard has not yet taken the last `ring_capacity` submissions.
            self.engine.ring_full.fetch_add(1, Ordering::Relaxed);
            return Err(Full {
                message,
                stopped: false,
            });
        }
        link.outstanding += 1;
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
        let mut collected = 0;
        for link in &mut self.links {
            let popped = link.completions.pop_into(out, usize::MAX);
            link.outstanding -= popped;
            collected += popped;
        }
        // Acquire: as in `submit`. Once stopped, messages that reached a ring after its
        // shard's last look are refused here, so each still gets exactly one completion.
        if self.engine.stopped.load(Ordering::Acquire) {
            for link in &mut self.links {
                let orphan = link.orphan.lock().map(|mut slot| slot.take());
                let Ok(Some(mut submissions)) = orphan else {
                    continue;
                };
                let refused = submissions.pop_each(usize::MAX, |message| {
                    out.push(shutting_down(&message));
                });
                link.outstanding -= refused;
                collected += refused;
            }
        }
        collected
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
    Completion {
        message: message.id,
        connection: message.connection,
        outcome: Outcome::Refused {
            reason: RefusalReason::ShuttingDown,
            retry_after_ns: 0,
        },
    }
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
