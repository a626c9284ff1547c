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
//! A producer with nothing else to do need not spin on `poll_completions`:
//! [`Ingress::wait_completions`] blocks until a completion arrives (or a timeout, or the
//! engine stops), and [`Ingress::submit_timeout`] blocks while the ring is full. Both park
//! the thread; the shard that moves the ingress's rings wakes it (`wait::Doorbell`, whose
//! doc explains why no wake-up is lost), and costs nothing more than a fence per batch when
//! nobody waits. Tasks wait the same way through `async_ingress` (feature `tokio`).
//!
//! [`SharedIngress`] is the same over MPMC rings, for callers that cannot keep one handle
//! per thread: any clone may submit, and any clone collects the completions of all. It has
//! no blocking wait: its completions belong to whichever clone polls first.

use core::cell::Cell;
use core::fmt;
use core::marker::PhantomData;
use std::task::Waker;
use std::time::{Duration, Instant};

use crate::message::Message;
use crate::outcome::{Completion, Outcome, RefusalReason};
use crate::ring::spsc;
use crate::shard::queue::Origin;
use crate::shard::shared::ShardLink;
use crate::shared::EngineShared;
use crate::sync::{Arc, Mutex, Ordering};
use crate::wait::{current_thread_waker, Doorbell};

/// An ingress index's token: the [`Doorbell`] its waits ring. The engine's table, the
/// ingress and each shard's link hold it; the index is free again once only the table does.
pub(crate) type IngressToken = Arc<Doorbell>;

/// Wakes every ingress that waits, once the engine has stopped (its `stopped` flag is set):
/// a wait then collects what the shards left and returns.
pub(crate) fn wake_after_stop(tokens: &[IngressToken]) {
    for doorbell in tokens {
        doorbell.ring_if_waiting_fenced();
    }
}

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
/// shard's (which holds `token`, the ingress's doorbell, while it keeps the link).
fn link_pair(
    origin: Origin,
    submission_capacity: usize,
    completion_capacity: usize,
    token: IngressToken,
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
        doorbell: token,
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
    /// because the engine stopped), or collected by `submit_timeout`.
    leftover: Vec<Completion>,
    capacity: usize,
    /// Where the shards wake this ingress's waits; also its index's token.
    doorbell: IngressToken,
    /// The waker of the thread that last waited here, kept so that each wait does not make
    /// a new one (an ingress may move to another thread between waits: then it is remade).
    thread_waker: Option<(crate::sync::thread::ThreadId, Waker)>,
    not_sync: PhantomData<Cell<()>>,
}

impl Ingress {
    /// Builds the rings for ingress number `index` and hands the shard ends to the shards.
    pub(crate) fn new(engine: Arc<EngineShared>, index: u16, token: IngressToken) -> Self {
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
            doorbell: token,
            thread_waker: None,
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
    /// (kept for the next [`poll_completions`](Self::poll_completions) or
    /// [`wait_completions`](Self::wait_completions)) and waits, parked, for the shard to
    /// take submissions or post completions, then retries, until `timeout` has passed.
    /// Blocks the caller: only for callers that asked to wait.
    pub fn submit_timeout(
        &mut self,
        message: Message,
        timeout: Duration,
    ) -> Result<(), Full<Message>> {
        let mut unsent = Some(message);
        let mut stopped = false;
        self.wait_until(deadline_after(timeout), |ingress| {
            let Some(mut message) = unsent.take() else {
                return true;
            };
            loop {
                match ingress.submit(message) {
                    Ok(()) => return true,
                    Err(full) if full.stopped => {
                        unsent = Some(full.message);
                        stopped = true;
                        return true;
                    }
                    Err(full) => message = full.message,
                }
                // Completions free credit: keep them and retry at once; none, and it is
                // the submission ring that is full, so wait for the shard to take from it.
                let mut collected = core::mem::take(&mut ingress.leftover);
                let freed = ingress.collect(&mut collected);
                ingress.leftover = collected;
                if freed == 0 {
                    unsent = Some(message);
                    return false;
                }
            }
        });
        match unsent {
            None => Ok(()),
            Some(message) => Err(Full { message, stopped }),
        }
    }

    /// Moves every completion that has arrived to the end of `out`; returns how many.
    pub fn poll_completions(&mut self, out: &mut Vec<Completion>) -> usize {
        let before = out.len();
        out.append(&mut self.leftover);
        self.collect(out);
        out.len() - before
    }

    /// Like [`poll_completions`](Self::poll_completions), but when none has arrived it
    /// parks the thread until one does, `timeout` passes or the engine stops, so a producer
    /// with nothing else to do spends no CPU waiting. Returns how many it moved to `out`:
    /// at least one, or 0 after the timeout, once the engine has stopped with nothing left
    /// to collect, or at once when nothing is outstanding (no completion could come).
    ///
    /// The shard that posts a completion wakes the thread (a few microseconds: an unpark),
    /// and never misses it (see the module doc); spurious wake-ups are waited out inside.
    ///
    /// ```
    /// use std::time::Duration;
    /// use spillway::engine::Engine;
    /// use spillway::message::{ConnectionId, Message, MessageId};
    ///
    /// let engine = Engine::builder().handler(|_: &Message| Ok(())).start().unwrap();
    /// let mut ingress = engine.ingress().unwrap();
    /// ingress.submit(Message::new(ConnectionId(1), MessageId(1))).unwrap();
    /// let mut completions = Vec::new();
    /// while ingress.outstanding() > 0 {
    ///     ingress.wait_completions(&mut completions, Duration::from_secs(5));
    /// }
    /// assert_eq!(completions.len(), 1);
    /// drop(ingress);
    /// assert!(engine.shutdown().reconciles());
    /// ```
    pub fn wait_completions(&mut self, out: &mut Vec<Completion>, timeout: Duration) -> usize {
        let mut moved = 0;
        self.wait_until(deadline_after(timeout), |ingress| {
            moved += ingress.poll_completions(out);
            moved > 0 || ingress.outstanding() == 0 || ingress.engine_stopped()
        });
        moved
    }

    /// Runs `done` until it says so, parking in between until a shard moves one of this
    /// ingress's rings (or the engine stops), or until `deadline` (`None`: no deadline).
    /// Returns `done`'s last answer.
    fn wait_until(
        &mut self,
        deadline: Option<Instant>,
        mut done: impl FnMut(&mut Self) -> bool,
    ) -> bool {
        let waker = self.thread_waker();
        // A handle of our own: `done` borrows the ingress.
        let doorbell = Arc::clone(&self.doorbell);
        doorbell.wait_until(&waker, deadline, || done(self))
    }

    /// The waker of the calling thread, made once per thread that waits here.
    fn thread_waker(&mut self) -> Waker {
        let current = crate::sync::thread::current().id();
        match &self.thread_waker {
            Some((thread, waker)) if *thread == current => waker.clone(),
            _ => {
                let waker = current_thread_waker();
                self.thread_waker = Some((current, waker.clone()));
                waker
            }
        }
    }

    /// Whether the engine has stopped (every shard thread joined).
    pub(crate) fn engine_stopped(&self) -> bool {
        // Acquire: as in `submit`.
        self.engine.stopped.load(Ordering::Acquire)
    }

    /// The doorbell the shards ring for this ingress (for the async adapter's waits).
    #[cfg(feature = "tokio")]
    pub(crate) fn doorbell(&self) -> &Doorbell {
        &self.doorbell
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

    /// The most messages this ingress can have outstanding: its credit on every shard.
    #[cfg(feature = "tokio")]
    pub(crate) fn outstanding_max(&self) -> usize {
        self.capacity * self.links.len()
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

/// When a wait of `timeout` ends; `None` when that is past what `Instant` can hold (a wait
/// "forever", e.g. `Duration::MAX`).
fn deadline_after(timeout: Duration) -> Option<Instant> {
    Instant::now().checked_add(timeout)
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
    use crate::sync::{AtomicBool, AtomicUsize};

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
                link_pair(Origin(0), CAPACITY, CAPACITY, IngressToken::default());
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

    /// A shard's end of the rings as its loop treats it for wake-ups: answers every
    /// submission it takes, then rings the doorbell as `Links::ring_doorbells` does (one
    /// fence after the batch, then the flag). Loops until it has answered `count`, then
    /// counts itself in `finished`.
    fn answer(mut link: ShardLink, count: usize, finished: &AtomicUsize) -> ShardLink {
        let mut answered = 0;
        while answered < count {
            let taken = link.submissions.pop_each(usize::MAX, |message| {
                let _ = link
                    .completions
                    .push(Completion::of(&message, Outcome::Delivered));
            });
            if taken > 0 {
                answered += taken;
                crate::sync::fence(Ordering::SeqCst);
                link.doorbell.ring_if_waiting();
            } else {
                thread::yield_now();
            }
        }
        // Release: pairs with the Acquire load in `join_when_finished`.
        finished.fetch_add(1, Ordering::Release);
        link
    }

    /// Joins `shards` once all have counted themselves in `finished`. Not at once: a
    /// shard's late wake (it claimed a raise the waiter had already found its completion
    /// for) unparks the waiter, and loom takes an unpark that lands in `join` for the join's
    /// own wake-up and fails; std ignores it, as the waits do (they re-check).
    fn join_when_finished(shards: Vec<thread::JoinHandle<ShardLink>>, finished: &AtomicUsize) {
        // Acquire: pairs with each shard's Release count.
        while finished.load(Ordering::Acquire) < shards.len() {
            thread::yield_now();
        }
        for shard in shards {
            drop(shard.join().unwrap());
        }
    }

    /// The wake-up handshake (`Doorbell`): a producer blocked in the wait of
    /// `Ingress::wait_completions` (the real `Doorbell::wait_until`, over the real rings)
    /// while a shard posts its completion. Under loom a park has no timeout, so a lost
    /// wake-up parks the producer for good and loom reports the deadlock; checked over
    /// every interleaving and every value the weak memory model lets each load see.
    #[test]
    fn a_waiting_producer_is_woken_by_its_completion() {
        loom::model(|| {
            let doorbell = IngressToken::default();
            let (mut ingress_end, shard_end) =
                link_pair(Origin(0), CAPACITY, CAPACITY, Arc::clone(&doorbell));
            if ingress_end.push(message(1), CAPACITY).is_err() {
                unreachable!("an empty ring has room");
            }
            let finished = Arc::new(AtomicUsize::new(0));
            let shard = {
                let finished = Arc::clone(&finished);
                thread::spawn(move || answer(shard_end, 1, &finished))
            };

            let mut completions = Vec::new();
            let waker = crate::wait::current_thread_waker();
            let done = doorbell.wait_until(&waker, None, || {
                ingress_end.collect(false, &mut completions);
                !completions.is_empty()
            });
            assert!(done);
            assert_eq!(completions.len(), 1);
            join_when_finished(vec![shard], &finished);
        });
    }

    /// Two shards post to one ingress's rings while it waits for both completions: the
    /// doorbell is shared, the shards race to claim its flag, and the waiter arms again
    /// after each wake. No interleaving leaves it parked with a completion unseen.
    #[test]
    fn a_producer_waiting_on_two_shards_misses_neither() {
        // Three threads, two of them spinning: 25 s at scripts/loom.sh's four preemptions on
        // 2 cores, 4 s at three. A lost wake-up (the mutants of the fences in `Doorbell`)
        // shows at the first preemption in the one-shard model above.
        let mut builder = loom::model::Builder::new();
        builder.preemption_bound = builder.preemption_bound.map(|bound| bound.min(3));
        builder.check(|| {
            let doorbell = IngressToken::default();
            let (mut first, first_shard) =
                link_pair(Origin(0), CAPACITY, CAPACITY, Arc::clone(&doorbell));
            let (mut second, second_shard) =
                link_pair(Origin(0), CAPACITY, CAPACITY, Arc::clone(&doorbell));
            for (link, id) in [(&mut first, 1), (&mut second, 2)] {
                if link.push(message(id), CAPACITY).is_err() {
                    unreachable!("an empty ring has room");
                }
            }
            let finished = Arc::new(AtomicUsize::new(0));
            let shards = [first_shard, second_shard]
                .into_iter()
                .map(|link| {
                    let finished = Arc::clone(&finished);
                    thread::spawn(move || answer(link, 1, &finished))
                })
                .collect();

            let mut completions = Vec::new();
            let waker = crate::wait::current_thread_waker();
            doorbell.wait_until(&waker, None, || {
                first.collect(false, &mut completions);
                second.collect(false, &mut completions);
                completions.len() == 2
            });
            assert_eq!(completions.len(), 2);
            join_when_finished(shards, &finished);
        });
    }

    /// The engine stops while a producer waits with nothing to come: `Engine::stop` raises
    /// `stopped` and rings every doorbell (fenced); the waiter's last look reads `stopped`.
    /// The wait must end.
    #[test]
    fn a_waiting_producer_hears_the_engine_stop() {
        loom::model(|| {
            let doorbell = IngressToken::default();
            let stopped = Arc::new(AtomicBool::new(false));
            let finished = Arc::new(AtomicBool::new(false));
            let engine = {
                let stopped = Arc::clone(&stopped);
                let finished = Arc::clone(&finished);
                let doorbell = Arc::clone(&doorbell);
                thread::spawn(move || {
                    stopped.store(true, Ordering::Release);
                    wake_after_stop(&[doorbell]);
                    // As `answer`'s count, for the join below.
                    finished.store(true, Ordering::Release);
                })
            };
            let waker = crate::wait::current_thread_waker();
            doorbell.wait_until(&waker, None, || stopped.load(Ordering::Acquire));
            // Acquire: pairs with the Release store above (see `join_when_finished`).
            while !finished.load(Ordering::Acquire) {
                thread::yield_now();
            }
            engine.join().unwrap();
        });
    }
}
