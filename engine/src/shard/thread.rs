//! The shard thread: the loop that drives one [`ShardCore`] from its rings.
//!
//! Each turn: read the clock once; pick up new ingress links; per-batch upkeep (breaker,
//! adaptive rates); drain every submission ring (a bounded batch from each), admitting or
//! answering each message at once; run a bounded batch of handlers; route the completions;
//! publish the counters when due; wait per the wait strategy if there was nothing to do.
//! Admission always runs before handlers, so overload shows up as counted refusals with a
//! retry-after, not as full rings.
//!
//! A panic in a handler fails only its message (`shard::run`). A panic anywhere else on
//! the thread (the loop itself, admission, the handler's `poll`) loses the shard: the
//! thread catches it, fails the message that was in admission and everything queued with
//! `ShardLost`, drops the handler (closing what it opened), answers health checks as lost,
//! and from then on fails whatever reaches its rings the same way, until shutdown. So no
//! message is lost without an outcome, and the counters reconcile.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

use crate::clock::Clock;
use crate::command::{ShardCommand, ShardReply};
use crate::config::{Config, INGRESSES_MAX};
use crate::fault::FaultPoint;
use crate::message::Message;
use crate::outcome::{Completion, FailureReason, Outcome};
use crate::ring::spsc;
use crate::sync::{AtomicBool, Ordering};
use crate::wait::{Handshake, Sleeper, Waiter};

use super::commands::{report_finished_drains, serve_commands_when_lost, serve_shard_commands};
use super::core::ShardCore;
use super::handler::{Handler, ShardContext};
use super::queue::Origin;
use super::run::run_handlers;
use super::shared::{ShardLink, ShardShared};

/// How often, at most, the counters are published for `Stats` readers while busy, in ns
/// (and once more when the shard goes idle, if anything changed).
const PUBLISH_INTERVAL_NS: u64 = 100_000;

/// Most time a turn spends in back-to-back handler batches before it looks at its rings
/// and sockets again.
const HANDLER_TURN_BUDGET_NS: u64 = 200_000;

/// The time one handler batch aims at: its size is this over the mean handler time (at
/// least one handler, at most `handler_batch_max`). With a fixed 64 handlers of 10 µs a
/// batch took 640 µs, during which nothing was admitted: a P0 message waited that long to
/// be queued ahead of the backlog, and one ring's 256 per turn capped what the shard could
/// even refuse at about 400K msg/s.
const HANDLER_SLICE_NS: u64 = 5_000;

/// Longest the handler loop goes without an admission pass over the rings: about one slow
/// handler, so a P0 message that arrives during a long turn is queued ahead of the backlog
/// after at most the handler in progress and one more, and refusals keep up with the
/// offered rate. The pass takes no more than what the turn has left of
/// `admission_batch_max`, so a busy ring with cheap handlers (whose turn took the whole
/// batch at its start) is not admitted faster than the turn runs it. 20 µs gave P0 p99 52–111 µs at 5x
/// overload with 10 µs handlers; 10 µs gave 52–77.
const ADMISSION_INTERVAL_NS: u64 = 10_000;

/// A link and how many of its admitted messages are still in flight (its index may be
/// reused by a new ingress only after the last of them completed).
struct Link {
    link: ShardLink,
    in_flight: usize,
    /// Whether its rings moved (a completion posted, a submission taken) since its doorbell
    /// was last rung; it is then listed in `Links::moved`.
    moved: bool,
}

impl Link {
    /// Notes that this link's rings moved, so that `Links::ring_doorbells` rings it.
    #[inline]
    fn note_moved(&mut self, moved: &mut Vec<u16>) {
        if !self.moved {
            self.moved = true;
            moved.push(self.link.origin.0);
        }
    }
}

/// The ingress links this shard serves.
struct Links {
    /// Indexed by ingress index.
    slots: Vec<Option<Link>>,
    /// The occupied indices, in arrival order.
    active: Vec<u16>,
    /// The links whose rings moved since the doorbells were last rung (each once): at most
    /// `INGRESSES_MAX`, allocated at start.
    moved: Vec<u16>,
}

impl Links {
    fn new() -> Self {
        Self {
            slots: (0..INGRESSES_MAX).map(|_| None).collect(),
            active: Vec::with_capacity(INGRESSES_MAX),
            moved: Vec::with_capacity(INGRESSES_MAX),
        }
    }

    /// Takes on the links of ingresses registered since the last call.
    fn adopt(&mut self, shard: &ShardShared) {
        while let Some(link) = shard.registrations.pop() {
            let slot = link.origin.0;
            self.slots[slot as usize] = Some(Link {
                link,
                in_flight: 0,
                moved: false,
            });
            self.active.push(slot);
        }
    }

    /// Wakes the ingresses that wait for rings that moved since the last call: the shard's
    /// half of the `Doorbell` handshake, one fence for the whole batch. Called after every
    /// batch that posts completions or takes submissions, so a waiter hears of its
    /// completion within the batch that posted it.
    #[inline]
    fn ring_doorbells(&mut self) {
        if self.moved.is_empty() {
            return;
        }
        // SeqCst: the shard's fence of the handshake (see `Doorbell`), after every ring
        // publication of the batch (their Release stores) and before any flag is read.
        crate::sync::fence(Ordering::SeqCst);
        for slot in self.moved.drain(..) {
            if let Some(entry) = self.slots[slot as usize].as_mut() {
                entry.moved = false;
                entry.link.doorbell.ring_if_waiting();
            }
        }
    }

    /// Submissions waiting in this shard's rings from its ingresses (a gauge for `Stats`;
    /// a producer pushing meanwhile may make it a little behind).
    fn queued_submissions(&self) -> u64 {
        self.active
            .iter()
            .filter_map(|&slot| self.slots[slot as usize].as_ref())
            .map(|entry| entry.link.submissions.len() as u64)
            .sum()
    }

    /// Drops links whose ingress is gone, with nothing left to read or to answer.
    fn retire_finished(&mut self) {
        let slots = &mut self.slots;
        self.active.retain(|&slot| {
            // `is_finished`: the producer is gone and its last push has been read (in that
            // order; see there), so no submitted message can be left behind.
            let finished = slots[slot as usize]
                .as_ref()
                .is_some_and(|entry| entry.in_flight == 0 && entry.link.submissions.is_finished());
            if finished {
                slots[slot as usize] = None;
            }
            !finished
        });
    }

    /// Whether any ingress has a submission waiting.
    fn any_waiting(&self) -> bool {
        self.active.iter().any(|&slot| {
            self.slots[slot as usize]
                .as_ref()
                .is_some_and(|entry| !entry.link.submissions.is_empty())
        })
    }

    /// Leaves every submission ring where its ingress can refuse what arrives from now on
    /// (the shard's last act).
    fn leave_orphans(&mut self) {
        for slot in self.active.drain(..) {
            if let Some(entry) = self.slots[slot as usize].take() {
                entry.link.leave_orphan();
            }
        }
    }
}

/// What a shard thread sees of the engine around it: its own shared state, the settings and
/// clock, the stop flag, and the control thread to wake when it has answered a command.
pub(crate) struct Surroundings<'a> {
    pub(crate) shard: &'a ShardShared,
    pub(crate) config: &'a Config,
    pub(crate) clock: &'a Clock,
    /// Set by `Engine::shutdown`.
    pub(crate) stopping: &'a AtomicBool,
    pub(crate) control: &'a Sleeper,
}

impl Surroundings<'_> {
    /// Wakes the control thread after a reply: fenced, so a reply never waits out its park
    /// timeout; replies are rare, so the fence costs nothing that matters.
    fn wake_control(&self) {
        self.control.unpark_if_sleeping(Handshake::Fenced);
    }
}

/// The control rings' shard ends.
type ControlEnds = (spsc::Consumer<ShardCommand>, spsc::Producer<ShardReply>);
/// The same, borrowed by one of the loops.
type ControlEndsMut<'a> = (
    &'a mut spsc::Consumer<ShardCommand>,
    &'a mut spsc::Producer<ShardReply>,
);

/// The shard thread: serves until shutdown, or until a panic outside a handler loses the
/// shard, and then fails what reaches it until shutdown (see the module doc). Returns the
/// handler, with whatever it accumulated, unless the shard was lost.
pub(crate) fn run<H: Handler>(
    mut core: ShardCore,
    handler: H,
    around: &Surroundings<'_>,
    (mut commands, mut replies): ControlEnds,
    mut waiter: Waiter,
) -> Option<H> {
    let mut links = Links::new();
    let mut handler = Some(handler);
    let served = catch_unwind(AssertUnwindSafe(|| {
        let handler = handler
            .as_mut()
            .expect("the handler lives until the shard ends");
        serve(
            &mut core,
            handler,
            around,
            &mut links,
            (&mut commands, &mut replies),
            &mut waiter,
        );
    }));
    if served.is_err() {
        // Whatever the handler holds (sockets, buffers) may be half-updated: drop it, so its
        // connections close, and never call it again. Its own drop may panic too.
        let _ = catch_unwind(AssertUnwindSafe(|| drop(handler.take())));
        // Should failing itself panic, the rings are still left to their ingresses below,
        // which refuse what is in them at shutdown.
        let _ = catch_unwind(AssertUnwindSafe(|| {
            serve_lost(
                &mut core,
                around,
                &mut links,
                (&mut commands, &mut replies),
                &mut waiter,
            )
        }));
    }
    links.leave_orphans();
    core.publish(&around.shard.published, &mut Vec::new());
    handler
}

/// The shard loop proper, until shutdown has finished or cancelled everything queued.
fn serve<H: Handler>(
    core: &mut ShardCore,
    handler: &mut H,
    around: &Surroundings<'_>,
    links: &mut Links,
    (commands, replies): ControlEndsMut<'_>,
    waiter: &mut Waiter,
) {
    let mut drains_done = Vec::new();
    let shard = around.shard;
    let config = around.config;
    let clock = around.clock;
    let mut scratch = Vec::new();
    let mut published_ns = 0;
    let mut stopping = false;
    // When shutdown stops waiting for deferred messages (and, with them, for queued ones
    // held back by the handler's capacity): a drain's deadline after the stop was seen.
    let mut stop_deadline_ns = u64::MAX;
    // The turn's time: read after an idle wait, else the last turn's end (nothing but the
    // loop's jump lies between them).
    let mut now_ns = clock.now_ns();

    loop {
        shard.fault.pass(FaultPoint::ShardLoop);
        // Shutdown is checked before new ingresses are adopted, never after: an ingress
        // registers before `Engine::stop` can run (both borrow the engine), so a turn that
        // sees `stopping` also sees every registration and adopts it here, refusing what
        // its ring holds below before the loop may end. Checked the other way round, a
        // registration landing between the two went unseen in the turn that ended the
        // loop, and its messages got no completion at all.
        // Acquire: pairs with the Release store in `Engine::stop`.
        if !stopping && around.stopping.load(Ordering::Acquire) {
            stopping = true;
            stop_deadline_ns = now_ns.saturating_add(config.control.drain_timeout_ns);
            core.close_intake();
        }
        if stopping && now_ns >= stop_deadline_ns && (core.deferred() > 0 || core.pending() > 0) {
            // Nobody will answer in time: what is queued is cancelled, what the handler
            // took fails, each counted.
            core.cancel_all(now_ns);
            core.fail_all_deferred("the engine shut down before the answer came", now_ns);
            hand_local_completions(core, handler);
            route(core, links, shard);
        }
        links.adopt(shard);
        core.maintain(now_ns);
        // Control first: it waits for at most the batch before it, never for the backlog.
        let mut controlled = serve_shard_commands(core, commands, replies, now_ns);
        if controlled {
            around.wake_control();
        }

        // Code that feeds the shard from outside (sockets) admits with an immediate verdict.
        // While stopping it is polled only for the answers to what it deferred (and for the
        // capacity that queued messages still wait on); intake is closed by then.
        let awaiting_handler = core.deferred() > 0
            || (config.shutdown_finishes_queued
                && core.pending() > 0
                && handler.capacity().is_some());
        let polled = if stopping && !awaiting_handler {
            0
        } else {
            handler.poll(&mut ShardContext::with_waker_slot(
                core,
                now_ns,
                &shard.event_waker,
            ))
        };
        let mut taken_from_rings =
            admit_from_rings(core, links, shard, config.admission_batch_max, now_ns);
        route(core, links, shard);

        // Handlers, in batches back to back while the queue has work, up to
        // `admission_batch_max` handlers per turn (as many as one ring may admit) and
        // HANDLER_TURN_BUDGET_NS: cheap handlers then keep pace with admission instead of
        // falling behind it. Each batch takes about HANDLER_SLICE_NS, and the rings get an
        // admission pass between batches every ADMISSION_INTERVAL_NS, which only slow
        // handlers reach: new arrivals are then queued (a P0 ahead of the backlog) or
        // refused promptly while the backlog runs. The control ring is served between
        // batches, so its latency stays bounded by one batch. When winding down with
        // `shutdown_finishes_queued` off, the queue is cancelled instead.
        let mut ran = 0;
        if stopping && !config.shutdown_finishes_queued {
            core.cancel_all(now_ns);
            hand_local_completions(core, handler);
            route(core, links, shard);
        } else {
            // The budget starts after admission and the front end's socket work (a turn's
            // worth of system calls), which must not use it up nor count as handler time in
            // the mean that sizes batches; a turn that took nothing keeps its first reading.
            let handlers_start_ns = if polled > 0 || taken_from_rings > 0 {
                clock.now_ns()
            } else {
                now_ns
            };
            let mut admission_ns = handlers_start_ns;
            let mut batch_ns = handlers_start_ns;
            loop {
                let batch_size = core.handler_batch_for(HANDLER_SLICE_NS, config.handler_batch_max);
                // The batch's end time, read once by `run_handlers` for its latencies, is
                // also the next batch's start.
                let mut batch_end_ns = batch_ns;
                let batch = run_handlers(core, handler, batch_size, batch_ns, || {
                    batch_end_ns = clock.now_ns();
                    batch_end_ns
                });
                ran += batch;
                hand_local_completions(core, handler);
                let held_back = batch == 0;
                batch_ns = batch_end_ns;
                // What this turn took from all rings counts against one ring's batch (exact
                // with one ring, stricter with more), so a cheap backlog is not admitted
                // faster than the turn runs it; once it is used up, no pass is due.
                let allowance = config.admission_batch_max.saturating_sub(taken_from_rings);
                if allowance > 0 && batch_ns.saturating_sub(admission_ns) >= ADMISSION_INTERVAL_NS {
                    taken_from_rings += admit_from_rings(core, links, shard, allowance, batch_ns);
                    admission_ns = batch_ns;
                }
                route(core, links, shard);
                // `held_back`: the handler has no capacity (or the deferred table is full), so
                // the rest waits for a later turn's poll to free some.
                if core.pending() == 0 || held_back || ran >= config.admission_batch_max {
                    break;
                }
                if batch_ns.saturating_sub(handlers_start_ns) >= HANDLER_TURN_BUDGET_NS {
                    break;
                }
                if serve_shard_commands(core, commands, replies, batch_ns) {
                    around.wake_control();
                    controlled = true;
                }
            }
        }
        if report_finished_drains(core, now_ns, replies, &mut drains_done) {
            around.wake_control();
        }
        // Relaxed: an advisory signal for producers.
        shard
            .backpressure
            .store(core.backpressure_active(), Ordering::Relaxed);

        links.retire_finished();

        let idle = polled == 0 && taken_from_rings == 0 && ran == 0 && !controlled;
        if stopping && idle && core.pending() == 0 && core.deferred() == 0 {
            break;
        }
        // A fresh reading (once per loop): a long handler batch must not make the
        // published counters lag by more than the batch itself.
        let loop_end_ns = clock.now_ns();
        let due = loop_end_ns.saturating_sub(published_ns) >= PUBLISH_INTERVAL_NS;
        // Publish while busy at most once per interval, and when going idle only if
        // something changed: a reader's copy then races at most one publication, instead of
        // one every idle poll.
        if (due || idle) && core.counters_changed() {
            core.set_ring_messages(
                links.queued_submissions() + shard.shared_submissions.len() as u64,
            );
            core.publish(&shard.published, &mut scratch);
            published_ns = loop_end_ns;
        }
        if idle {
            waiter.idle(
                &shard.sleeper.sleeping,
                || has_work(around, commands, links),
                // The handler's event source if it has one (the TCP front end's epoll, which
                // wakes on a socket event too), else a park.
                |timeout| {
                    if !handler.wait(timeout) {
                        std::thread::park_timeout(timeout);
                    }
                },
            );
            now_ns = clock.now_ns();
        } else {
            waiter.found_work();
            now_ns = loop_end_ns;
        }
    }

    handler.stopped(&mut ShardContext::new(core, clock.now_ns()));
}

/// Whether anything waits for the shard: a new ingress, a command, a submission, or the
/// stop (re-checked after the shard raises its sleeping flag).
fn has_work(
    around: &Surroundings<'_>,
    commands: &spsc::Consumer<ShardCommand>,
    links: &Links,
) -> bool {
    let shard = around.shard;
    !shard.registrations.is_empty()
        || !commands.is_empty()
        || !shard.shared_submissions.is_empty()
        || around.stopping.load(Ordering::Relaxed)
        || links.any_waiting()
}

/// Hands the completions of work admitted on the shard itself (`ShardContext::admit`) to
/// the handler.
fn hand_local_completions<H: Handler>(core: &mut ShardCore, handler: &mut H) {
    for completion in core.local_completions.drain(..) {
        handler.completed(&completion);
    }
}

/// Admission: at most `limit` messages from each submission ring (and from the shared
/// one), each admitted or answered at once. Returns how many it took.
#[inline]
fn admit_from_rings(
    core: &mut ShardCore,
    links: &mut Links,
    shard: &ShardShared,
    limit: usize,
    now_ns: u64,
) -> usize {
    take_from_rings(links, shard, limit, |message, origin| {
        core.admit(message, origin, now_ns)
    })
}

/// At most `limit` messages from each submission ring (and from the shared one), each
/// given to `decide`: `Ok` when it keeps the message (it will complete later, through the
/// outbox), else its completion, posted at once to the ring the message came from. Returns
/// how many it took.
#[inline]
fn take_from_rings(
    links: &mut Links,
    shard: &ShardShared,
    limit: usize,
    mut decide: impl FnMut(Message, Origin) -> Result<(), Completion>,
) -> usize {
    let mut taken = 0;
    for &slot in &links.active {
        let Some(entry) = links.slots[slot as usize].as_mut() else {
            continue;
        };
        let Link {
            link, in_flight, ..
        } = entry;
        let ShardLink {
            origin,
            submissions,
            completions,
            ..
        } = link;
        let taken_here = submissions.pop_each(limit, |message| match decide(message, *origin) {
            Ok(()) => *in_flight += 1,
            Err(completion) => {
                // Room is guaranteed: the ingress never has more outstanding messages than
                // the completion ring holds.
                let _ = completions.push(completion);
            }
        });
        if taken_here > 0 {
            // Room in the submission ring, maybe completions: a producer may wait for either.
            entry.note_moved(&mut links.moved);
        }
        taken += taken_here;
    }
    links.ring_doorbells();
    for _ in 0..limit {
        let Some(message) = shard.shared_submissions.pop() else {
            break;
        };
        taken += 1;
        if let Err(completion) = decide(message, Origin::SHARED) {
            let _ = shard.shared_completions.push(completion);
        }
    }
    taken
}

/// Sends the completions the core produced to the rings they belong to.
fn route(core: &mut ShardCore, links: &mut Links, shard: &ShardShared) {
    for (origin, completion) in core.outbox.drain(..) {
        if origin == Origin::SHARED {
            let _ = shard.shared_completions.push(completion);
        } else if let Some(entry) = links.slots[origin.0 as usize].as_mut() {
            entry.in_flight -= 1;
            // Room is guaranteed by the ingress's credit; a consumer that is gone
            // (ingress dropped) simply never reads it, and the outcome is counted anyway.
            let _ = entry.link.completions.push(completion);
            entry.note_moved(&mut links.moved);
        }
    }
    links.ring_doorbells();
}

/// How long a lost shard sleeps between looks at its rings when nothing woke it: producers
/// and the control thread unpark it, so this only bounds a missed wake-up.
const LOST_PARK: Duration = Duration::from_millis(1);

/// A lost shard (see the module doc), until shutdown: fails the message that was in
/// admission and everything queued, then answers its control ring (health says `lost`)
/// and fails every message that reaches its rings with `ShardLost`.
fn serve_lost(
    core: &mut ShardCore,
    around: &Surroundings<'_>,
    links: &mut Links,
    (commands, replies): ControlEndsMut<'_>,
    waiter: &mut Waiter,
) {
    let shard = around.shard;
    let now_ns = around.clock.now_ns();
    if let Some((origin, completion)) = core.fail_lost(now_ns) {
        post_direct(links, shard, origin, completion);
    }
    // The handler is gone: completions of what it admitted are counted and go nowhere.
    core.local_completions.clear();
    route(core, links, shard);
    let mut drains_done = Vec::new();
    report_finished_drains(core, now_ns, replies, &mut drains_done);
    let mut scratch = Vec::new();
    loop {
        // Acquire: pairs with the Release store in `Engine::stop`; checked before adopting,
        // as in `serve`, so no registration is missed by the last turn.
        let stopping = around.stopping.load(Ordering::Acquire);
        links.adopt(shard);
        let answered = serve_commands_when_lost(core.index(), commands, replies);
        if answered {
            around.wake_control();
        }
        let taken = take_from_rings(links, shard, usize::MAX, |message, _| {
            core.count_lost((message.role, message.priority), message.tenant);
            Err(Completion::of(
                &message,
                Outcome::Failed {
                    reason: FailureReason::ShardLost,
                },
            ))
        });
        links.retire_finished();
        if core.counters_changed() {
            core.publish(&shard.published, &mut scratch);
        }
        if stopping && taken == 0 {
            return;
        }
        if taken == 0 && !answered {
            waiter.idle(
                &shard.sleeper.sleeping,
                || has_work(around, commands, links),
                |timeout| std::thread::park_timeout(timeout.min(LOST_PARK)),
            );
        } else {
            waiter.found_work();
        }
    }
}

/// Posts `completion` straight to the ring of `origin`, for a message its ingress never
/// counted in flight (it was in admission). One admitted on the shard itself (`LOCAL`) is
/// only counted: the handler that would hear of it is gone.
fn post_direct(links: &mut Links, shard: &ShardShared, origin: Origin, completion: Completion) {
    if origin == Origin::SHARED {
        let _ = shard.shared_completions.push(completion);
    } else if origin == Origin::LOCAL {
        // Counted already; nobody to tell.
    } else if let Some(Some(entry)) = links.slots.get_mut(origin.0 as usize) {
        // Room is guaranteed by the ingress's credit, as for any admission answer.
        let _ = entry.link.completions.push(completion);
        entry.note_moved(&mut links.moved);
        links.ring_doorbells();
    }
}
