//! The [`WorkerPool`]: the handler each shard runs to serve its messages through worker
//! processes.
//!
//! Each shard's pool opens its own mio `Poll` on its first turn and registers a duplicate
//! of the shared listening socket in it, so any shard may accept. An accepted worker goes
//! to the shard that serves the fewest workers (handed over through that shard's hand-off
//! list, which it registers on its next turn): a worker serves one shard, since the
//! messages it gets are that shard's, and spreading them keeps every shard served once
//! there are at least as many workers as shards.
//!
//! Per turn ([`Handler::poll`]): register handed-over workers, take readiness, accept,
//! read and act on each worker's frames (an Answer completes its message through
//! [`ShardContext::complete`]), write what is due, and check the answer deadline.
//! [`Handler::handle`] defers each message and queues its Work for the worker with the
//! most free credit; [`Handler::capacity`] is the free credit of this shard's workers, so
//! the shard runs no more messages than they can hold and the rest waits in its queue.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use mio::unix::SourceFd;
use mio::{Events, Poll, Token};

use crate::command::WorkerHealth;
use crate::handler::{Handler, HandlerError, ShardContext, Ticket};
use crate::message::Message;
use crate::outcome::Completion;
use crate::sync::Ordering;

use super::connection::{HeldWork, Phase, Stream, WorkerConnection};
use super::listener::{
    bump, store, AcceptedStream, Listener, PoolShared, ShardWorkerCounters, WorkerListener,
};
use super::log::{Connected, CutWorker, WorkerLog};
use super::protocol::{
    encode_work_of, AnswerStatus, DispatchFrame, FrameError, WorkerErrorCode, WorkerFrame,
    WORKER_CREDIT_MAX, WORKER_HEADER_BYTES, WORK_FIXED_BYTES,
};

/// Token of the listener in a shard's `Poll`; worker `slot` is `Token(slot)`.
const LISTENER: Token = Token(usize::MAX);
/// The wrapped handler's epoll descriptor, nested in this shard's (see `Handler::wait_fd`).
const INNER: Token = Token(usize::MAX - 1);
/// The shard's waker, when the pool set it (no wrapped handler with its own event source).
const WAKER: Token = Token(usize::MAX - 2);
/// Bytes read from one worker per turn before the others get theirs.
const READ_BYTES_PER_TURN_MAX: usize = 64 * 1024;
/// Workers one shard accepts per turn.
const ACCEPTS_PER_TURN_MAX: usize = 64;
/// Events taken per turn.
const EVENTS_PER_TURN_MAX: usize = 256;
/// How often the answer deadline is checked, in ns.
const DEADLINE_CHECK_INTERVAL_NS: u64 = 1_000_000;

/// Why a worker is cut: what its held messages become and which counter says so.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cut {
    /// It went away (closed, reset): `worker_lost`.
    Lost,
    /// It broke the protocol: `worker_lost`, and told why.
    Garbage(WorkerErrorCode),
    /// It held a Work past the deadline: `worker_timeout`.
    Timeout,
    /// Spillway is stopping.
    Shutdown,
}

/// The handler that serves messages through worker processes (`docs/WORKERS.md`); made by
/// [`WorkerListener::pool`]. It wraps another handler, `inner`, which is polled, waited in
/// and told of completions as usual but never handles a message: the TCP front end
/// (`spillway serve --workers`), or `()` for none.
pub struct WorkerPool<I> {
    inner: I,
    shared: Arc<PoolShared>,
    shard: Option<ShardWorkers>,
    /// When opening the shard's poll failed: no new try before then.
    open_retry_ns: u64,
}

/// The handler a pool wraps when nothing else feeds the engine (an embedding program
/// submits through its ingresses): it never handles a message.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoInner;

impl Handler for NoInner {
    fn handle(
        &mut self,
        _message: &Message,
        _context: &mut ShardContext<'_>,
    ) -> Result<Bytes, HandlerError> {
        Err(HandlerError::failed("no worker pool around this handler"))
    }
}

impl WorkerListener {
    /// The pool for an engine, around `inner` (see [`WorkerPool`]).
    pub fn pool<I: Handler + Clone>(&self, inner: I) -> WorkerPool<I> {
        WorkerPool {
            inner,
            shared: Arc::clone(&self.shared),
            shard: None,
            open_retry_ns: 0,
        }
    }
}

impl<I: Clone> Clone for WorkerPool<I> {
    /// A pool for another shard: the same listener, no workers.
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
            shard: None,
            open_retry_ns: 0,
        }
    }
}

/// One shard's workers.
struct ShardWorkers {
    shard: usize,
    poll: Poll,
    events: Events,
    listener: Listener,
    slots: Vec<Option<WorkerConnection>>,
    free_slots: Vec<usize>,
    /// Workers with output to write.
    dirty: Vec<usize>,
    /// Workers an event said are readable this turn (kept for its capacity).
    readable: Vec<usize>,
    /// Idempotent messages of a lost worker waiting for another worker's credit, with the
    /// time their first worker took them (for the deadline).
    retry_waiting: std::collections::VecDeque<(Ticket, u64)>,
    /// Free credit of the serving workers, all together.
    free_credit: usize,
    next_deadline_check_ns: u64,
    read_buffer: Vec<u8>,
    shared: Arc<PoolShared>,
    /// `events` came from a blocking `wait` and are the next turn's, not yet seen.
    events_waiting: bool,
    /// The shard's waker is this `Poll`'s (the wrapped handler set none).
    sleeps_in_epoll: bool,
    /// The wrapped handler's epoll descriptor registered in this `Poll`, if it has one.
    inner_registered: Option<RawFd>,
    /// Hellos, cuts and refusals, logged within rate limits.
    log: WorkerLog,
}

impl<I: Handler> Handler for WorkerPool<I> {
    fn handle(
        &mut self,
        message: &Message,
        context: &mut ShardContext<'_>,
    ) -> Result<Bytes, HandlerError> {
        let Some(workers) = self.shard.as_mut() else {
            return Err(HandlerError::worker_lost("no worker connected"));
        };
        let frame_bytes = WORKER_HEADER_BYTES + WORK_FIXED_BYTES + message.payload.len();
        if frame_bytes > self.shared.config.max_frame_bytes as usize {
            return Err(HandlerError::invalid(
                "payload too large for the workers' frame limit",
            ));
        }
        let Some(slot) = workers.most_free_credit(None) else {
            // `capacity` said there was credit; a worker cut meanwhile took it.
            return Err(HandlerError::worker_lost("no worker with credit"));
        };
        let ticket = context
            .defer()
            .map_err(|error| HandlerError::failed(error.to_string()))?;
        workers.send(slot, ticket, message, false, context.now_ns());
        Ok(Bytes::new())
    }

    fn capacity(&self) -> Option<usize> {
        Some(self.shard.as_ref().map_or(0, |workers| {
            workers
                .free_credit
                .saturating_sub(workers.retry_waiting.len())
        }))
    }

    fn completed(&mut self, completion: &Completion) {
        self.inner.completed(completion);
    }

    fn poll(&mut self, context: &mut ShardContext<'_>) -> usize {
        let own = self.inner.poll(context);
        if self.shard.is_none() {
            if context.now_ns() < self.open_retry_ns {
                return own;
            }
            match ShardWorkers::open(&self.shared, context) {
                Ok(workers) => self.shard = Some(workers),
                // Without a poll (out of descriptors) this shard serves no worker; the others
                // still do. Retried after a while, not every turn.
                Err(_) => {
                    self.open_retry_ns = context.now_ns() + 10_000_000;
                    return own;
                }
            }
        }
        let workers = self.shard.as_mut().expect("opened above");
        own + workers.turn(context)
    }

    /// Blocks in this shard's worker `Poll`, which also holds the wrapped handler's epoll
    /// descriptor when it has one, so that a worker's answer wakes an idle shard at once
    /// and so do the wrapped handler's sockets and the shard's waker.
    fn wait(&mut self, timeout: Duration) -> bool {
        let Some(workers) = self.shard.as_mut() else {
            return self.inner.wait(timeout);
        };
        if workers.has_pending() {
            return false;
        }
        match self.inner.wait_fd() {
            Some(fd) if workers.nest(fd) => workers.wait(timeout),
            None if workers.sleeps_in_epoll => workers.wait(timeout),
            // The wrapped handler has work pending, or an event source it cannot lend.
            _ => self.inner.wait(timeout),
        }
    }

    fn wait_fd(&self) -> Option<RawFd> {
        let workers = self.shard.as_ref()?;
        let nested = workers.sleeps_in_epoll || workers.inner_registered.is_some();
        (nested && !workers.has_pending()).then(|| workers.poll.as_raw_fd())
    }

    fn stopped(&mut self, context: &mut ShardContext<'_>) {
        if let Some(workers) = self.shard.as_mut() {
            for slot in 0..workers.slots.len() {
                if workers.slots[slot].is_some() {
                    workers.cut(slot, Cut::Shutdown, context);
                }
            }
            workers.log.flush(context.now_ns(), true);
            // The stats read after shutdown show no worker open.
            workers.publish(context);
        }
        self.shard = None;
        self.inner.stopped(context);
    }
}

impl ShardWorkers {
    fn open(shared: &Arc<PoolShared>, context: &mut ShardContext<'_>) -> io::Result<Self> {
        let shard = context.shard();
        let poll = Poll::new()?;
        // Set only if the wrapped handler set none (it polls first): then an idle shard
        // sleeps here, and producers and the control plane wake it through this eventfd.
        let waker = mio::Waker::new(poll.registry(), WAKER)?;
        let sleeps_in_epoll = context.set_waker(move || {
            // A failure leaves the shard to its wait timeout.
            let _ = waker.wake();
        });
        let listener = match &shared.listener {
            Listener::Tcp(listener) => {
                let mut mio_listener = mio::net::TcpListener::from_std(listener.try_clone()?);
                poll.registry()
                    .register(&mut mio_listener, LISTENER, mio::Interest::READABLE)?;
                Listener::Tcp(listener.try_clone()?)
            }
            Listener::Unix(listener) => {
                let mut mio_listener = mio::net::UnixListener::from_std(listener.try_clone()?);
                poll.registry()
                    .register(&mut mio_listener, LISTENER, mio::Interest::READABLE)?;
                Listener::Unix(listener.try_clone()?)
            }
        };
        Ok(Self {
            shard,
            poll,
            events: Events::with_capacity(EVENTS_PER_TURN_MAX),
            listener,
            slots: Vec::new(),
            free_slots: Vec::new(),
            dirty: Vec::new(),
            readable: Vec::new(),
            retry_waiting: std::collections::VecDeque::new(),
            free_credit: 0,
            next_deadline_check_ns: 0,
            read_buffer: vec![0; READ_BYTES_PER_TURN_MAX],
            shared: Arc::clone(shared),
            events_waiting: false,
            sleeps_in_epoll,
            inner_registered: None,
            log: WorkerLog::new(shard),
        })
    }

    /// Work this shard's workers have that a turn would do at once: events read by a
    /// `wait` and not handled yet, output to write, retries waiting for credit.
    fn has_pending(&self) -> bool {
        self.events_waiting || !self.dirty.is_empty() || !self.retry_waiting.is_empty()
    }

    /// Registers the wrapped handler's epoll descriptor `fd` in this `Poll` (once; it lives
    /// as long as the wrapped handler's shard state, which stops with this one). False if
    /// it cannot be registered: then the wrapped handler waits as before.
    fn nest(&mut self, fd: RawFd) -> bool {
        if self.inner_registered == Some(fd) {
            return true;
        }
        if self.inner_registered.is_some() {
            return false;
        }
        let registered = self
            .poll
            .registry()
            .register(&mut SourceFd(&fd), INNER, mio::Interest::READABLE)
            .is_ok();
        if registered {
            self.inner_registered = Some(fd);
        }
        registered
    }

    /// Blocks until a worker, the wrapped handler's sockets or the shard's waker has an
    /// event, or `timeout`; the events are the next turn's.
    fn wait(&mut self, timeout: Duration) -> bool {
        // An error (EINTR) leaves no events; the next turn polls as usual.
        self.events_waiting = self.poll.poll(&mut self.events, Some(timeout)).is_ok();
        true
    }

    fn counters(&self) -> &ShardWorkerCounters {
        &self.shared.counters[self.shard]
    }

    /// One turn; returns the units of work done.
    fn turn(&mut self, context: &mut ShardContext<'_>) -> usize {
        let now_ns = context.now_ns();
        let mut work = self.take_handed_over();
        if core::mem::take(&mut self.events_waiting) {
            // A `wait` read them; they are this turn's.
        } else if self
            .poll
            .poll(&mut self.events, Some(Duration::ZERO))
            .is_err()
        {
            return work;
        }
        let mut accept = false;
        // Kept between turns, so that a turn with readable workers does not allocate.
        let mut readable = core::mem::take(&mut self.readable);
        readable.clear();
        for event in self.events.iter() {
            if event.token() == LISTENER {
                accept = true;
            } else if event.token() == INNER || event.token() == WAKER {
                // Only to end a wait: the wrapped handler polls its own, and the waker's
                // work is in the shard's rings.
            } else if event.is_readable() || event.is_read_closed() || event.is_error() {
                readable.push(event.token().0);
            } else if event.is_writable() {
                self.dirty.push(event.token().0);
            }
        }
        if accept {
            work += self.accept(context.shard_count(), now_ns);
            work += self.take_handed_over();
        }
        for &slot in &readable {
            work += self.read(slot, context);
        }
        self.readable = readable;
        // Workers registered this turn may have sent their Hello before registration.
        for slot in 0..self.slots.len() {
            if self.slots[slot]
                .as_ref()
                .is_some_and(|worker| worker.read_pending)
            {
                work += self.read(slot, context);
            }
        }
        work += self.dispatch_retries(context);
        if now_ns >= self.next_deadline_check_ns {
            self.next_deadline_check_ns = now_ns + DEADLINE_CHECK_INTERVAL_NS;
            work += self.check_deadlines(context);
            self.log.flush(now_ns, false);
        }
        self.flush_dirty(context);
        self.publish(context);
        work
    }

    /// Registers the workers other shards (or this one) handed to this shard.
    fn take_handed_over(&mut self) -> usize {
        // Acquire: pairs with the Release set after a push (see `handoff_pending`).
        if !self.shared.handoff_pending[self.shard].swap(false, Ordering::Acquire) {
            return 0;
        }
        let streams = {
            let mut handoff = self.shared.handoff[self.shard]
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            core::mem::take(&mut *handoff)
        };
        let count = streams.len();
        for stream in streams {
            self.register(stream);
        }
        count
    }

    fn register(&mut self, stream: AcceptedStream) {
        let stream = match stream {
            AcceptedStream::Tcp(stream) => {
                let _ = stream.set_nodelay(true);
                Stream::Tcp(mio::net::TcpStream::from_std(stream))
            }
            AcceptedStream::Unix(stream) => Stream::Unix(mio::net::UnixStream::from_std(stream)),
        };
        let slot = self.free_slots.pop().unwrap_or_else(|| {
            self.slots.push(None);
            self.slots.len() - 1
        });
        let worker_id = ((self.shard as u64) << 48) | slot as u64;
        let mut worker =
            WorkerConnection::new(stream, worker_id, self.shared.config.max_frame_bytes);
        if worker
            .stream
            .register(self.poll.registry(), Token(slot))
            .is_err()
        {
            self.free_slots.push(slot);
            self.release_worker_count();
            return;
        }
        self.slots[slot] = Some(worker);
    }

    fn release_worker_count(&self) {
        // Relaxed: counts that guard no memory (see `PoolShared`).
        self.shared.open_workers.fetch_sub(1, Ordering::Relaxed);
        self.shared.workers_per_shard[self.shard].fetch_sub(1, Ordering::Relaxed);
    }

    /// Accepts up to the per-turn limit, each to the shard with the fewest workers.
    fn accept(&mut self, shard_count: usize, now_ns: u64) -> usize {
        let mut accepted = 0;
        while accepted < ACCEPTS_PER_TURN_MAX {
            let stream = match &self.listener {
                Listener::Tcp(listener) => listener
                    .accept()
                    .map(|(stream, _)| AcceptedStream::Tcp(stream)),
                Listener::Unix(listener) => listener
                    .accept()
                    .map(|(stream, _)| AcceptedStream::Unix(stream)),
            };
            let mut stream = match stream {
                Ok(stream) => stream,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                // WouldBlock: none left. Anything else (out of descriptors): next event.
                Err(_) => return accepted,
            };
            accepted += 1;
            // Relaxed: see `PoolShared`.
            let open = self.shared.open_workers.fetch_add(1, Ordering::Relaxed);
            if open >= self.shared.config.max_workers {
                self.shared.open_workers.fetch_sub(1, Ordering::Relaxed);
                refuse(&mut stream);
                bump(&self.counters().refused_too_many, 1);
                self.log.refused(now_ns, self.shared.config.max_workers);
                continue;
            }
            let target = (0..shard_count)
                .min_by_key(|&shard| self.shared.workers_per_shard[shard].load(Ordering::Relaxed))
                .unwrap_or(self.shard);
            self.shared.workers_per_shard[target].fetch_add(1, Ordering::Relaxed);
            let (blocking_ok, stream) = match stream {
                AcceptedStream::Tcp(stream) => (
                    stream.set_nonblocking(true).is_ok(),
                    AcceptedStream::Tcp(stream),
                ),
                AcceptedStream::Unix(stream) => (
                    stream.set_nonblocking(true).is_ok(),
                    AcceptedStream::Unix(stream),
                ),
            };
            if !blocking_ok {
                self.shared.open_workers.fetch_sub(1, Ordering::Relaxed);
                self.shared.workers_per_shard[target].fetch_sub(1, Ordering::Relaxed);
                continue;
            }
            self.shared.handoff[target]
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .push(stream);
            // Release: after the push (see `handoff_pending`).
            self.shared.handoff_pending[target].store(true, Ordering::Release);
        }
        accepted
    }

    /// Reads what one worker sent (up to the per-turn budget) and acts on each frame.
    fn read(&mut self, slot: usize, context: &mut ShardContext<'_>) -> usize {
        let Some(worker) = self.slots.get_mut(slot).and_then(Option::as_mut) else {
            return 0;
        };
        worker.read_pending = false;
        let mut read_bytes = 0;
        let mut closed = false;
        while read_bytes < READ_BYTES_PER_TURN_MAX {
            match worker.stream.read(&mut self.read_buffer) {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(count) => {
                    read_bytes += count;
                    worker.reader.feed(&self.read_buffer[..count]);
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    closed = true;
                    break;
                }
            }
        }
        if read_bytes >= READ_BYTES_PER_TURN_MAX {
            // More may wait: edge-triggered readiness will not say so again.
            worker.read_pending = true;
        }
        let mut frames = 0;
        loop {
            let Some(worker) = self.slots.get_mut(slot).and_then(Option::as_mut) else {
                return frames;
            };
            match worker.reader.next_frame() {
                Ok(Some(frame)) => {
                    frames += 1;
                    if let Err(cut) = self.serve_frame(slot, frame, context) {
                        self.cut(slot, cut, context);
                        return frames;
                    }
                }
                Ok(None) => break,
                Err(error) => {
                    let cut = Cut::Garbage(FrameError::code(&error));
                    self.cut(slot, cut, context);
                    return frames;
                }
            }
        }
        if closed {
            self.cut(slot, Cut::Lost, context);
        }
        frames + usize::from(read_bytes > 0)
    }

    fn serve_frame(
        &mut self,
        slot: usize,
        frame: WorkerFrame,
        context: &mut ShardContext<'_>,
    ) -> Result<(), Cut> {
        let max_frame_bytes = self.shared.config.max_frame_bytes;
        let answer_timeout_ns = self.shared.config.answer_timeout_ns;
        let worker = self.slots[slot].as_mut().expect("the caller found it");
        match (worker.phase, frame) {
            (Phase::Hello, WorkerFrame::Hello { credit, name }) => {
                if credit == 0 || credit > WORKER_CREDIT_MAX {
                    return Err(Cut::Garbage(WorkerErrorCode::BadCredit));
                }
                worker.credit = credit;
                worker.name = name;
                worker.phase = Phase::Serving;
                DispatchFrame::Welcome {
                    worker_id: worker.worker_id,
                    answer_timeout_ns,
                    max_frame_bytes,
                }
                .encode(&mut worker.out);
                let connected = Connected {
                    worker_id: worker.worker_id,
                    name: worker.name.clone(),
                    credit,
                };
                self.free_credit += credit as usize;
                self.dirty.push(slot);
                bump(&self.counters().connected, 1);
                self.log.connected(context.now_ns(), connected);
                Ok(())
            }
            (Phase::Hello, _) | (Phase::Serving, WorkerFrame::Hello { .. }) => {
                Err(Cut::Garbage(WorkerErrorCode::ProtocolViolation))
            }
            (
                Phase::Serving,
                WorkerFrame::Answer {
                    work_id,
                    status,
                    body,
                },
            ) => {
                let held = worker
                    .held
                    .remove(&work_id)
                    .ok_or(Cut::Garbage(WorkerErrorCode::UnknownWork))?;
                self.free_credit += 1;
                let result = match status {
                    AnswerStatus::Ok => Ok(body),
                    AnswerStatus::Invalid => Err(HandlerError::invalid(text(&body))),
                    AnswerStatus::Failed => Err(HandlerError::failed(text(&body))),
                };
                let latency_ns = context.now_ns().saturating_sub(held.sent_ns);
                let counters = &self.shared.counters[self.shard];
                bump(&counters.answers, 1);
                bump(&counters.answer_latency_ns_sum, latency_ns);
                if latency_ns > counters.answer_latency_ns_max.load(Ordering::Relaxed) {
                    store(&counters.answer_latency_ns_max, latency_ns);
                }
                // Stale only if a drain's deadline failed it meanwhile: nothing to do.
                let _ = context.complete(held.ticket, result);
                Ok(())
            }
            (Phase::Serving, WorkerFrame::Credit { added }) => {
                let credit = worker.credit.saturating_add(added);
                if credit > WORKER_CREDIT_MAX {
                    return Err(Cut::Garbage(WorkerErrorCode::BadCredit));
                }
                worker.credit = credit;
                self.free_credit += added as usize;
                Ok(())
            }
            (Phase::Serving, WorkerFrame::Ping { nonce }) => {
                DispatchFrame::Pong { nonce }.encode(&mut worker.out);
                self.dirty.push(slot);
                Ok(())
            }
        }
    }

    /// The serving worker with the most free credit, other than `except`.
    fn most_free_credit(&self, except: Option<usize>) -> Option<usize> {
        self.slots
            .iter()
            .enumerate()
            .filter(|&(slot, _)| Some(slot) != except)
            .filter_map(|(slot, worker)| Some((slot, worker.as_ref()?.free_credit())))
            .filter(|&(_, free)| free > 0)
            .max_by_key(|&(_, free)| free)
            .map(|(slot, _)| slot)
    }

    /// Queues the Work of `message` for worker `slot` (which has free credit).
    fn send(&mut self, slot: usize, ticket: Ticket, message: &Message, retry: bool, now_ns: u64) {
        let worker = self.slots[slot].as_mut().expect("a serving worker");
        let work_id = ticket.to_u64();
        // Listed once per turn, not once per Work: a worker with output already is listed
        // this turn, or is waiting for a writable event that lists it.
        let listed = !worker.out.is_empty();
        encode_work_of(message, work_id, retry, &mut worker.out);
        worker.held.insert(
            work_id,
            HeldWork {
                ticket,
                sent_ns: now_ns,
                retry,
            },
        );
        self.free_credit -= 1;
        if !listed {
            self.dirty.push(slot);
        }
        bump(&self.counters().works_sent, 1);
    }

    /// Sends waiting retries to workers with credit.
    fn dispatch_retries(&mut self, context: &mut ShardContext<'_>) -> usize {
        let mut sent = 0;
        while let Some(&(ticket, _)) = self.retry_waiting.front() {
            let Some(slot) = self.most_free_credit(None) else {
                break;
            };
            self.retry_waiting.pop_front();
            let Some((message, _)) = context.deferred_message(ticket) else {
                continue;
            };
            let message = message.clone();
            self.send(slot, ticket, &message, true, context.now_ns());
            bump(&self.counters().retries, 1);
            sent += 1;
        }
        sent
    }

    /// Cuts every worker holding a Work past the deadline, and fails the retries that
    /// waited past it.
    fn check_deadlines(&mut self, context: &mut ShardContext<'_>) -> usize {
        let now_ns = context.now_ns();
        let timeout_ns = self.shared.config.answer_timeout_ns;
        let late = |sent_ns: u64| now_ns.saturating_sub(sent_ns) > timeout_ns;
        let mut cut = 0;
        for slot in 0..self.slots.len() {
            let overdue = self.slots[slot]
                .as_ref()
                .is_some_and(|worker| worker.held.values().any(|held| late(held.sent_ns)));
            if overdue {
                self.cut(slot, Cut::Timeout, context);
                cut += 1;
            }
        }
        while let Some(&(ticket, taken_ns)) = self.retry_waiting.front() {
            if !late(taken_ns) {
                break;
            }
            self.retry_waiting.pop_front();
            let _ = context.complete(
                ticket,
                Err(HandlerError::worker_lost(
                    "no other worker took the retry in time",
                )),
            );
            cut += 1;
        }
        cut
    }

    /// Cuts worker `slot`: tells it why when it can, closes it, and ends every message it
    /// held (an idempotent one not yet retried waits for another worker instead).
    fn cut(&mut self, slot: usize, cut: Cut, context: &mut ShardContext<'_>) {
        let Some(mut worker) = self.slots[slot].take() else {
            return;
        };
        let code = match cut {
            Cut::Lost => None,
            Cut::Garbage(code) => Some(code),
            Cut::Timeout => Some(WorkerErrorCode::AnswerTimeout),
            Cut::Shutdown => Some(WorkerErrorCode::ShuttingDown),
        };
        if let Some(code) = code {
            DispatchFrame::Error {
                code,
                detail: code.name().to_owned(),
            }
            .encode(&mut worker.out);
            // One try: a worker that does not take it is cut all the same.
            let _ = worker.flush();
        }
        worker.stream.deregister(self.poll.registry());
        self.free_credit -= worker.free_credit();
        let counters = &self.shared.counters[self.shard];
        match cut {
            Cut::Lost => bump(&counters.cut_lost, 1),
            Cut::Garbage(_) => bump(&counters.cut_garbage, 1),
            Cut::Timeout => bump(&counters.cut_timeout, 1),
            Cut::Shutdown => {}
        }
        let now_ns = context.now_ns();
        let reason = match code {
            None => "lost",
            Some(code) => code.name(),
        };
        if cut == Cut::Shutdown {
            // Expected: the binary logs the stop; at most one per worker.
            tracing::debug!(
                target: "spillway::workers",
                shard = self.shard,
                worker_id = worker.worker_id,
                name = %worker.name,
                held = worker.held.len(),
                "worker closed at shutdown"
            );
        } else {
            let cut_worker = CutWorker {
                worker_id: worker.worker_id,
                name: core::mem::take(&mut worker.name),
                reason,
                held: worker.held.len(),
            };
            self.log.cut(now_ns, cut_worker);
        }
        for (_, held) in worker.held.drain() {
            let retriable = cut != Cut::Shutdown
                && !held.retry
                && context
                    .deferred_message(held.ticket)
                    .is_some_and(|(message, _)| message.idempotent);
            if retriable {
                self.retry_waiting.push_back((held.ticket, now_ns));
                continue;
            }
            // A worker cut at the deadline hangs: nothing it held will be answered.
            let error = match cut {
                Cut::Timeout => {
                    HandlerError::worker_timeout("the worker did not answer within the deadline")
                }
                Cut::Lost => HandlerError::worker_lost("the worker went away"),
                Cut::Garbage(code) => HandlerError::worker_lost(code.name()),
                Cut::Shutdown => HandlerError::worker_lost("shutting down"),
            };
            let _ = context.complete(held.ticket, Err(error));
        }
        self.free_slots.push(slot);
        self.release_worker_count();
    }

    fn flush_dirty(&mut self, context: &mut ShardContext<'_>) {
        let mut dirty = core::mem::take(&mut self.dirty);
        dirty.sort_unstable();
        dirty.dedup();
        for &slot in &dirty {
            let failed = self
                .slots
                .get_mut(slot)
                .and_then(Option::as_mut)
                .is_some_and(|worker| worker.flush().is_err());
            if failed {
                self.cut(slot, Cut::Lost, context);
            }
        }
        dirty.clear();
        self.dirty = dirty;
    }

    /// Gauges for `WorkerListener::stats`, and this shard's figures for health checks.
    fn publish(&self, context: &mut ShardContext<'_>) {
        let counters = self.counters();
        let (open, credit) = self
            .slots
            .iter()
            .flatten()
            .fold((0u64, 0u64), |(open, credit), worker| {
                (open + 1, credit + u64::from(worker.credit))
            });
        store(&counters.open, open);
        store(&counters.credit_total, credit);
        store(&counters.credit_free, self.free_credit as u64);
        // This shard alone writes these: Relaxed reads its own stores.
        let answers = counters.answers.load(Ordering::Relaxed);
        context.publish_workers(WorkerHealth {
            open,
            credit_total: credit,
            credit_free: self.free_credit as u64,
            answers,
            answer_latency_ns_mean: counters
                .answer_latency_ns_sum
                .load(Ordering::Relaxed)
                .checked_div(answers)
                .unwrap_or(0),
            answer_latency_ns_max: counters.answer_latency_ns_max.load(Ordering::Relaxed),
        });
    }
}

/// An error text from a worker's Answer (checked UTF-8 by the reader).
fn text(body: &Bytes) -> &str {
    std::str::from_utf8(body).unwrap_or("")
}

/// Tells a worker over the limit why it is refused, without waiting.
fn refuse(stream: &mut AcceptedStream) {
    use std::io::Write;
    let mut frame = Vec::new();
    DispatchFrame::Error {
        code: WorkerErrorCode::TooManyWorkers,
        detail: "spillway serves its limit of workers".to_owned(),
    }
    .encode(&mut frame);
    let _ = match stream {
        AcceptedStream::Tcp(stream) => stream.write(&frame),
        AcceptedStream::Unix(stream) => stream.write(&frame),
    };
}
