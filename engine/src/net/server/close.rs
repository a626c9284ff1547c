//! How a connection ends: an Error frame queued after what is already due, reading
//! stopped, the close deadline; the closure counted by reason; and every connection told
//! `shutting_down` when the shard stops.

use std::net::Shutdown;
use std::time::Duration;

use crate::net::egress::EgressDropReason;
use crate::net::protocol::{encode_error_reply, ErrorCode, ProtocolError, ServerFrame};
use crate::sync::Ordering;

use super::connection::Phase;
use super::shard::{mark_dirty, ShardNet};
use super::stats::{bump, CloseReason};
use super::write::drain_replies_into_out;

impl ShardNet {
    pub(super) fn close_with_protocol_error(
        &mut self,
        slot: usize,
        error: &ProtocolError,
        now_ns: u64,
    ) {
        let Some(connection) = self.slots[slot].as_mut() else {
            return;
        };
        // Frames already queued go first (PROTOCOL.md 7.3): replies, then the Error.
        drain_replies_into_out(connection, now_ns, &self.shared.counters[self.shard]);
        encode_error_reply(error, connection.version(), &mut connection.out);
        self.begin_closing(slot, CloseReason::Error(error.code()), now_ns);
    }

    /// Queues an Error frame of `code` after what is queued, stops reading, and closes once
    /// it is written (or at the close timeout).
    pub(super) fn close_with(&mut self, slot: usize, code: ErrorCode, detail: &str, now_ns: u64) {
        let Some(connection) = self.slots[slot].as_mut() else {
            return;
        };
        if connection.is_closing() {
            return;
        }
        drain_replies_into_out(connection, now_ns, &self.shared.counters[self.shard]);
        ServerFrame::Error { code, detail }.encode_in(connection.version(), &mut connection.out);
        self.begin_closing(slot, CloseReason::Error(code), now_ns);
    }

    pub(super) fn begin_closing(&mut self, slot: usize, reason: CloseReason, now_ns: u64) {
        let deadline_ns = now_ns + self.shared.config.net.close_timeout_ns;
        let connection = self.slots[slot].as_mut().expect("checked by the callers");
        connection.phase = Phase::Closing {
            deadline_ns,
            reason,
        };
        // Nothing more is read, so no frame is awaited.
        connection.frame_timer = None;
        // Nothing more is read; what the client sends from now on is discarded.
        let _ = connection.stream.shutdown(Shutdown::Read);
        mark_dirty(&mut self.dirty, slot, connection);
    }

    /// Closes the socket now and counts the closure.
    pub(super) fn close_now(&mut self, slot: usize, reason: CloseReason, now_ns: u64) {
        let Some(mut connection) = self.slots[slot].take() else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut connection.stream);
        let _ = connection.stream.shutdown(Shutdown::Both);
        let dropped_at_close = connection.replies.close(now_ns) + connection.blocked.len() as u64;
        self.by_id.remove(&connection.id.0);
        self.free_slots.push(slot);
        self.shared.open_connections.fetch_sub(1, Ordering::Relaxed);
        let counters = self.counters();
        bump(
            &counters.replies_dropped[EgressDropReason::Closed.index()],
            dropped_at_close,
        );
        match reason {
            CloseReason::PeerClosed => bump(&counters.closed_peer, 1),
            CloseReason::IoError => bump(&counters.closed_io_error, 1),
            CloseReason::Error(code) => bump(&counters.closed_error[code.index()], 1),
        }
    }

    /// Shutdown: every connection gets its remaining Replies and `shutting_down`, within
    /// the close timeout, then closes.
    pub(super) fn shut_down(&mut self, now_ns: u64) {
        for slot in 0..self.slots.len() {
            if self.slots[slot].is_some() {
                self.close_with(
                    slot,
                    ErrorCode::ShuttingDown,
                    "the server is shutting down",
                    now_ns,
                );
            }
        }
        let started = std::time::Instant::now();
        let close_timeout = Duration::from_nanos(self.shared.config.net.close_timeout_ns);
        while self.slots.iter().any(Option::is_some) && started.elapsed() < close_timeout {
            let _ = self
                .poll
                .poll(&mut self.events, Some(Duration::from_millis(5)));
            let now_ns = now_ns + started.elapsed().as_nanos() as u64;
            for slot in 0..self.slots.len() {
                if self.slots[slot].is_some() {
                    self.flush(slot, now_ns);
                }
            }
        }
        for slot in 0..self.slots.len() {
            if let Some(connection) = self.slots[slot].as_ref() {
                let reason = match connection.phase {
                    Phase::Closing { reason, .. } => reason,
                    _ => CloseReason::Error(ErrorCode::ShuttingDown),
                };
                self.close_now(slot, reason, now_ns);
            }
        }
    }
}
