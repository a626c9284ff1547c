//! The write path of a connection: what is due is encoded in order (the Welcome, then
//! Pong, flow signal and RepliesDropped, then Replies from the send buffer) and written until
//! the socket takes no more; replies offered to the send buffer, and those the `Block`
//! policy holds back.
//!
//! Every frame is encoded in the connection's version into its one write buffer (`out`),
//! reused from write to write: a version-2 Reply's response is copied in behind its header
//! and fixed fields, so a Reply costs no allocation once the buffer has grown to its
//! working size. Copying rather than queueing the response's `Bytes` for a vectored write:
//! responses are bounded by the frame limit (64 KiB by default) and most are small, where a
//! copy costs less than the bookkeeping of a list of slices (a `writev` with partial writes
//! across them, a slot per Reply); the copy lets go of the response at once, and with it of
//! the read buffer an echo's response may share, which queued slices would keep alive until
//! the socket took them; and frames stay whole in one buffer, so none is ever torn.

use std::collections::VecDeque;
use std::io::{self, Write};

use crate::net::egress::{EgressDropReason, EgressQueue, FlowSignal, Offer};
use crate::net::protocol::ServerFrame;

use super::connection::{Connection, Held, Phase, Reply};
use super::shard::{list_for_reading, mark_dirty, ShardNet};
use super::stats::{bump, CloseReason, ShardCounters};
use super::ServerConfig;

impl ShardNet {
    pub(super) fn flush_dirty(&mut self, now_ns: u64) -> usize {
        let mut dirty = std::mem::take(&mut self.dirty);
        let mut work = 0;
        for &slot in &dirty {
            if let Some(connection) = self.slots.get_mut(slot).and_then(Option::as_mut) {
                connection.dirty = false;
                work += self.flush(slot, now_ns);
            }
        }
        // Keep the allocation, unless a flush marked something dirty meanwhile.
        dirty.clear();
        if self.dirty.is_empty() {
            self.dirty = dirty;
        }
        work
    }

    /// Writes what the connection has to say until the socket takes no more. Returns the
    /// frames encoded.
    pub(super) fn flush(&mut self, slot: usize, now_ns: u64) -> usize {
        let config = self.shared.config;
        let counters = &self.shared.counters[self.shard];
        let Some(connection) = self.slots.get_mut(slot).and_then(Option::as_mut) else {
            return 0;
        };
        let mut frames = 0;
        let mut failed = false;
        loop {
            if connection.written_bytes == connection.out.len() {
                connection.out.clear();
                connection.written_bytes = 0;
                frames += fill(connection, &config, counters, now_ns);
                if connection.out.is_empty() {
                    break;
                }
            }
            match connection
                .stream
                .write(&connection.out[connection.written_bytes..])
            {
                Ok(0) => {
                    failed = true;
                    break;
                }
                Ok(count) => connection.written_bytes += count,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        if failed {
            let reason = match connection.phase {
                Phase::Closing { reason, .. } => reason,
                _ => CloseReason::IoError,
            };
            self.close_now(slot, reason, now_ns);
            return frames;
        }
        // The `Block` policy may have room again: read what was held back.
        if !connection.blocked.is_empty() {
            let held_before = connection.blocked.len();
            retry_blocked(connection, now_ns, counters);
            if connection.blocked.len() < held_before {
                // What it queued or dropped came after this flush's writes: the next flush
                // writes it, or reports it in RepliesDropped. No event would announce it.
                mark_dirty(&mut self.dirty, slot, connection);
            }
            if connection.blocked.is_empty() {
                list_for_reading(&mut self.read_again, slot, connection);
            }
        }
        self.end_if_done(slot, now_ns);
        frames
    }

    /// Ends a closing connection whose last frames are out, and a half-closed one whose
    /// every reply is out.
    pub(super) fn end_if_done(&mut self, slot: usize, now_ns: u64) {
        let Some(connection) = self.slots[slot].as_ref() else {
            return;
        };
        let drained = !connection.has_output() && connection.blocked.is_empty();
        match connection.phase {
            Phase::Closing { reason, .. } if connection.written_bytes == connection.out.len() => {
                self.close_now(slot, reason, now_ns);
            }
            Phase::Open | Phase::Handshake { .. }
                if connection.read_closed && connection.in_flight == 0 && drained =>
            {
                self.close_now(slot, CloseReason::PeerClosed, now_ns);
            }
            _ => {}
        }
    }
}

/// Offers a Reply to the send buffer, after any the `Block` policy holds, and counts what
/// the policy drops.
pub(super) fn offer_reply(
    replies: &mut EgressQueue<Reply>,
    blocked: &mut VecDeque<Held>,
    signal: &mut Option<FlowSignal>,
    reply: Reply,
    now_ns: u64,
    counters: &ShardCounters,
) {
    if !blocked.is_empty() {
        // Behind a held reply the buffer is full: this one waits from now too.
        blocked.push_back(Held {
            reply,
            deadline_ns: now_ns.saturating_add(replies.config().block_timeout_ns),
        });
        return;
    }
    if let Some(held) = settle_offer(replies.offer(reply, now_ns), signal, counters) {
        blocked.push_back(held);
    }
}

/// Offers the replies the `Block` policy held back, oldest first, while the buffer takes
/// them (or its block timeout drops them).
pub(super) fn retry_blocked(connection: &mut Connection, now_ns: u64, counters: &ShardCounters) {
    while let Some(Held { reply, deadline_ns }) = connection.blocked.pop_front() {
        let offer = connection.replies.offer_again(reply, deadline_ns, now_ns);
        if let Some(held) = settle_offer(offer, &mut connection.signal, counters) {
            connection.blocked.push_front(held);
            return;
        }
    }
}

/// Books what an offer did: drops counted by reason, a flow signal now due kept in
/// `signal`. Returns the reply the `Block` policy handed back, if it did.
pub(super) fn settle_offer(
    offer: Offer<Reply>,
    signal: &mut Option<FlowSignal>,
    counters: &ShardCounters,
) -> Option<Held> {
    match offer {
        Offer::Queued { signal: due } => {
            if due.is_some() {
                *signal = due;
            }
        }
        Offer::Dropped { reason, .. } => bump(&counters.replies_dropped[reason.index()], 1),
        Offer::Blocked { item, deadline_ns } => {
            return Some(Held {
                reply: item,
                deadline_ns,
            })
        }
        Offer::DroppedAll {
            dropped_count,
            signal: due,
        } => {
            bump(
                &counters.replies_dropped[EgressDropReason::DropAll.index()],
                u64::from(dropped_count),
            );
            if due.is_some() {
                *signal = due;
            }
        }
        Offer::DroppedOldest {
            dropped_count,
            signal: due,
        } => {
            bump(
                &counters.replies_dropped[EgressDropReason::DropOldest.index()],
                u64::from(dropped_count),
            );
            if due.is_some() {
                *signal = due;
            }
        }
    }
    None
}

/// Encodes what is due into the (empty) write buffer: the Welcome after a Hello, then the
/// frames that do not wait behind Replies (Pong, the flow signal, RepliesDropped), then
/// Replies up to the buffer's limit. Returns the frames encoded.
pub(super) fn fill(
    connection: &mut Connection,
    config: &ServerConfig,
    counters: &ShardCounters,
    now_ns: u64,
) -> usize {
    let mut frames = 0;
    if connection.is_closing() {
        // Its last frames were queued when it began closing.
        return 0;
    }
    let version = connection.version();
    if connection.welcome_due {
        connection.welcome_due = false;
        ServerFrame::Welcome {
            connection: connection.id,
            frame_limit: config.frame_limit(),
            send_buffer_replies: core::num::NonZeroU32::new(config.egress.buffer_capacity)
                .expect("validated: at least 1"),
        }
        .encode_in(version, &mut connection.out);
        frames += 1;
    }
    if let Some(nonce) = connection.pong.take() {
        ServerFrame::Pong { nonce }.encode_in(version, &mut connection.out);
        frames += 1;
    }
    if let Some(signal) = connection.signal.take() {
        let frame = match signal {
            FlowSignal::Throttle { delay_ns } => ServerFrame::Throttle { delay_ns },
            FlowSignal::Pause { duration_ns } => ServerFrame::Pause { duration_ns },
            FlowSignal::Resume => ServerFrame::Resume,
        };
        frame.encode_in(version, &mut connection.out);
        counters.count_flow_signal(signal);
        frames += 1;
    }
    if let Some(count) = core::num::NonZeroU64::new(connection.replies.dropped_since_last_report())
    {
        ServerFrame::RepliesDropped { count }.encode_in(version, &mut connection.out);
        frames += 1;
    }
    let replies = encode_replies(connection, now_ns, config.net.write_buffer_bytes_max);
    if replies > 0 {
        bump(&counters.replies_sent, replies);
        if let Some(signal) = connection.replies.poll_signal(now_ns) {
            // Written on the next fill, ahead of any later Reply.
            connection.signal = Some(signal);
        }
    }
    frames + replies as usize
}

/// Moves every queued Reply (and a pending Pong or signal) into the write buffer, for a
/// connection about to get its last frame.
pub(super) fn drain_replies_into_out(
    connection: &mut Connection,
    now_ns: u64,
    counters: &ShardCounters,
) {
    if let Some(nonce) = connection.pong.take() {
        ServerFrame::Pong { nonce }.encode_in(connection.version(), &mut connection.out);
    }
    connection.signal = None;
    let replies = encode_replies(connection, now_ns, usize::MAX);
    bump(&counters.replies_sent, replies);
}

/// Encodes queued Replies into the write buffer while it holds under `out_bytes_max`;
/// returns how many.
pub(super) fn encode_replies(
    connection: &mut Connection,
    now_ns: u64,
    out_bytes_max: usize,
) -> u64 {
    let version = connection.version();
    let mut replies = 0;
    while connection.out.len() < out_bytes_max {
        let Some(reply) = connection.replies.pop(now_ns) else {
            break;
        };
        reply.frame().encode_in(version, &mut connection.out);
        replies += 1;
    }
    replies
}
