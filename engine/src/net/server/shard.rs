//! One shard's side of the server ([`ShardNet`]): its mio `Poll`, its listener, its
//! connections, and the turn the shard loop runs: write what is due, take readiness,
//! accept, read and admit, and the timers when due.

use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasherDefault;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token};

use crate::config::EgressConfig;
use crate::handler::ShardContext;
use crate::message::ConnectionIdHasher;

use super::connection::Connection;
use super::read_buffer::ReadBuffer;
use super::shared::Shared;
use super::stats::{Fault, FaultDetail, FaultExample, FaultLog, ShardCounters};
use super::CONNECTION_ID_BASE;

/// Token of the listening socket in every shard's `Poll`; connection `slot` is
/// `Token(slot + 1)`.
const LISTENER: Token = Token(0);
/// The shard's waker, for producers and the control plane while it sleeps in `epoll_wait`.
/// Connection tokens are slot + 1 and slots never reach it.
const WAKER: Token = Token(usize::MAX);

/// One shard's side of the server.
pub(super) struct ShardNet {
    pub(super) shared: Arc<Shared>,
    pub(super) shard: usize,
    pub(super) poll: Poll,
    pub(super) events: Events,
    /// `events` came from a blocking wait (`wait`) and are the next turn's, not yet seen.
    pub(super) events_waiting: bool,
    /// Its waker is the shard's: the shard may sleep in `epoll_wait` (`wait`). False when
    /// the wrapped handler set the shard's waker first.
    pub(super) sleeps_in_epoll: bool,
    pub(super) listener: TcpListener,
    /// Slab of connections: slot `i` is `Token(i + 1)`.
    pub(super) slots: Vec<Option<Connection>>,
    pub(super) free_slots: Vec<usize>,
    /// Connection id to slot, looked up per completion: the shard's multiply-shift hasher
    /// for ids, not SipHash.
    pub(super) by_id: HashMap<u64, usize, BuildHasherDefault<ConnectionIdHasher>>,
    pub(super) next_id: u64,
    /// Accepting is paused until then (descriptor exhaustion).
    pub(super) accept_paused_until_ns: u64,
    /// More connections may be waiting than the last turn accepted.
    pub(super) accept_pending: bool,
    pub(super) dirty: Vec<usize>,
    /// Connections an event said are writable this turn.
    pub(super) writable: Vec<usize>,
    /// Connections to read, oldest first: readable by an event, or left over by a turn's
    /// budget (edge-triggered readiness announces only new bytes, so what is left must be
    /// remembered here).
    pub(super) read_again: VecDeque<usize>,
    pub(super) next_housekeeping_ns: u64,
    /// The egress settings this shard applies, and the `egress_generation` they are of.
    pub(super) egress: EgressConfig,
    pub(super) egress_generation: u64,
    /// The time of the current turn: completions, which come between turns, are stamped
    /// with it (the egress queue's clock only orders its own events).
    pub(super) turn_ns: u64,
    /// Every read lands here first and goes to the connection's decoder as a shared chunk,
    /// whose payloads the messages take without a copy; the decoder so keeps only partial
    /// frames of its own: 15,000 connections each reading into a buffer of its own would
    /// hold 15,000 read-sized buffers.
    pub(super) read_buffer: ReadBuffer,
    /// The shard's faults, logged from its counters on the timer.
    pub(super) fault_log: FaultLog,
}

impl ShardNet {
    /// Opens the shard's `Poll` and listener, and registers the `Poll`'s waker as the
    /// shard's (how producers and the control plane end a `wait`).
    pub(super) fn open(shared: &Arc<Shared>, context: &mut ShardContext<'_>) -> io::Result<Self> {
        let poll = Poll::new()?;
        let mut listener = TcpListener::from_std(shared.listener.try_clone()?);
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = mio::Waker::new(poll.registry(), WAKER)?;
        let sleeps_in_epoll = context.set_waker(move || {
            // An eventfd write. A failure leaves the shard to its wait timeout.
            let _ = waker.wake();
        });
        Ok(Self {
            shared: Arc::clone(shared),
            shard: context.shard(),
            poll,
            events: Events::with_capacity(shared.config.net.events_per_turn_max),
            events_waiting: false,
            sleeps_in_epoll,
            listener,
            slots: Vec::new(),
            free_slots: Vec::new(),
            by_id: HashMap::default(),
            next_id: CONNECTION_ID_BASE,
            accept_paused_until_ns: 0,
            // Connections may have queued before this shard's first turn.
            accept_pending: true,
            dirty: Vec::new(),
            writable: Vec::new(),
            read_again: VecDeque::new(),
            next_housekeeping_ns: 0,
            egress: shared.config.egress,
            egress_generation: 0,
            turn_ns: 0,
            read_buffer: ReadBuffer::new(),
            fault_log: FaultLog::new(context.shard(), &shared.counters[context.shard()]),
        })
    }

    pub(super) fn counters(&self) -> &ShardCounters {
        &self.shared.counters[self.shard]
    }

    /// Notes the connection in `slot` as the latest example of `fault`, for the fault log.
    pub(super) fn note_fault(&mut self, slot: usize, fault: Fault, detail: FaultDetail) {
        if let Some(connection) = self.slots[slot].as_ref() {
            let example = FaultExample {
                connection: connection.id,
                detail,
            };
            self.fault_log.note(fault, example);
        }
    }

    /// One turn: write what is due, take readiness, accept, read and admit, and the timers
    /// when due. Returns the units of work done (0: idle).
    pub(super) fn turn(&mut self, context: &mut ShardContext<'_>) -> usize {
        let now_ns = context.now_ns();
        self.turn_ns = now_ns;
        let mut work = self.flush_dirty(now_ns);
        // Events a blocking `wait` collected are this turn's: no second system call.
        if !std::mem::take(&mut self.events_waiting)
            && self
                .poll
                .poll(&mut self.events, Some(Duration::ZERO))
                .is_err()
        {
            // EINTR and the like: the next turn polls again.
            return work;
        }
        // Reused from turn to turn, so a turn allocates nothing for its writable list.
        let mut writable = std::mem::take(&mut self.writable);
        let mut accept = self.accept_pending;
        for event in self.events.iter() {
            if event.token() == LISTENER {
                accept = true;
                continue;
            }
            if event.token() == WAKER {
                // Only ends a `wait`: what woke it is in the rings, which the shard reads.
                continue;
            }
            let slot = event.token().0 - 1;
            if event.is_readable() || event.is_read_closed() || event.is_error() {
                if let Some(connection) = self.slots.get_mut(slot).and_then(Option::as_mut) {
                    connection.peer_hung_up |= event.is_read_closed() || event.is_error();
                    list_for_reading(&mut self.read_again, slot, connection);
                }
            }
            if event.is_writable() {
                writable.push(slot);
            }
        }
        if accept && now_ns >= self.accept_paused_until_ns {
            work += self.accept(context, now_ns);
        }
        // At most `frames_per_turn_max` frames a turn, like a bounded batch from a ring: the
        // shard's handlers run between turns, so admission cannot outrun them by thousands
        // of messages per turn (what it does not take waits in the kernel, and is read next
        // turn).
        // Connections are served in the order they became readable; those the budget does
        // not reach stay queued, in place, for the next turn.
        let mut budget = self.shared.config.net.frames_per_turn_max;
        for _ in 0..self.read_again.len() {
            if budget == 0 {
                break;
            }
            let Some(slot) = self.read_again.pop_front() else {
                break;
            };
            if let Some(connection) = self.slots.get_mut(slot).and_then(Option::as_mut) {
                connection.read_pending = false;
                work += self.read(slot, context, &mut budget);
            }
        }
        for &slot in &writable {
            work += self.flush(slot, now_ns);
        }
        writable.clear();
        self.writable = writable;
        work += self.flush_dirty(now_ns);
        if now_ns >= self.next_housekeeping_ns {
            self.next_housekeeping_ns = now_ns + self.shared.config.net.housekeeping_interval_ns;
            work += self.housekeeping(now_ns);
        }
        work
    }

    /// Blocks in `epoll_wait` for at most `timeout` (rounded up to a millisecond) or until
    /// a socket event or the waker, and keeps the events for the next turn. Returns false,
    /// without waiting, when it holds work that no event will announce (output to write,
    /// reads a turn's budget left over): the shard then parks for its usual short while.
    /// An accept paused by descriptor exhaustion is a timer, which the timeout serves.
    /// The `Poll`'s epoll descriptor, while nothing is pending that `wait` would return
    /// for at once (see `Handler::wait_fd`).
    pub(super) fn wait_fd(&self) -> Option<RawFd> {
        let pending = !self.dirty.is_empty() || !self.read_again.is_empty() || self.events_waiting;
        (!pending).then(|| self.poll.as_raw_fd())
    }

    pub(super) fn wait(&mut self, timeout: Duration) -> bool {
        if !self.dirty.is_empty() || !self.read_again.is_empty() {
            return false;
        }
        // An error (EINTR) leaves no events; the next turn polls as usual.
        self.events_waiting = self.poll.poll(&mut self.events, Some(timeout)).is_ok();
        true
    }
}

impl Drop for ShardNet {
    /// Logs what the fault log still holds: the counts of the shard's last second, and
    /// those of its shutdown.
    fn drop(&mut self) {
        self.fault_log
            .tick(u64::MAX, &self.shared.counters[self.shard]);
    }
}

/// Lists the connection on `read_again` (once), the reading counterpart of `mark_dirty`;
/// a free function so that callers holding other parts of `ShardNet` borrowed can use it.
pub(super) fn list_for_reading(
    read_again: &mut VecDeque<usize>,
    slot: usize,
    connection: &mut Connection,
) {
    if !connection.read_pending {
        connection.read_pending = true;
        read_again.push_back(slot);
    }
}

pub(super) fn mark_dirty(dirty: &mut Vec<usize>, slot: usize, connection: &mut Connection) {
    if !connection.dirty {
        connection.dirty = true;
        dirty.push(slot);
    }
}
