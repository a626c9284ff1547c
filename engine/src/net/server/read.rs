//! The read path of a connection: read what the socket holds (within the turn's budgets),
//! decode it, and serve each frame: the handshake, a Submit admitted or answered at once, a
//! Cancel, a Ping. Completions of admitted messages join the send buffer here too.

use std::io::{self, Read};

use bytes::Bytes;

use crate::handler::ShardContext;
use crate::net::egress::EgressHealth;
use crate::net::protocol::{ClientFrame, ErrorCode, ProtocolError, ProtocolVersion};
use crate::outcome::{Completion, ErrorDetail, FailureReason, Outcome};

use super::connection::{Connection, FrameTimer, Phase, Reply};
use super::shard::{list_for_reading, mark_dirty, ShardNet};
use super::stats::{bump, CloseReason, Fault, FaultDetail, ShardCounters};
use super::write::offer_reply;

impl ShardNet {
    /// Reads what the connection has (up to the per-turn limit), decodes and serves every
    /// whole frame. Returns the frames served.
    pub(super) fn read(
        &mut self,
        slot: usize,
        context: &mut ShardContext<'_>,
        budget: &mut usize,
    ) -> usize {
        let config = self.shared.config;
        let now_ns = context.now_ns();
        let Some(connection) = self.slots[slot].as_ref() else {
            return 0;
        };
        if connection.is_closing() || connection.read_closed || !connection.blocked.is_empty() {
            // Closing: reading stopped. Blocked (`Block` policy): no Submit is read until the
            // send buffer has room again; `flush` puts it back on the read list then.
            return 0;
        }
        // Whole frames an earlier turn's budget left in the decoder go first.
        let mut served = self.serve_frames(slot, context, budget);
        if *budget == 0 {
            self.read_later(slot);
            return served;
        }
        let Some(connection) = self.slots[slot].as_mut() else {
            return served;
        };
        if connection.is_closing() {
            return served;
        }
        let mut read_bytes = 0;
        let mut peer_closed = false;
        let mut io_failed = None;
        let mut out_of_room = false;
        while read_bytes < config.net.read_bytes_per_turn_max {
            let Some(space) = self.read_buffer.space() else {
                // The read buffer's block is full of this turn's reads of this connection.
                out_of_room = true;
                break;
            };
            let space_bytes = space.len();
            match connection.stream.read(space) {
                Ok(0) => {
                    peer_closed = true;
                    break;
                }
                Ok(count) => {
                    self.read_buffer.filled(count, &mut connection.decoder);
                    read_bytes += count;
                    if count < space_bytes && !connection.peer_hung_up {
                        // A short read emptied the socket's receive queue: asking again would
                        // only return WouldBlock (a system call per message at these rates).
                        // Bytes that arrive later raise a new edge, so nothing is missed. Not
                        // once the peer has closed: its end of stream may have come with these
                        // bytes, in the same edge, and must still be read.
                        break;
                    }
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => {
                    io_failed = Some(error.kind());
                    break;
                }
            }
        }
        // The turn's reads of this connection go to its decoder as one chunk, so that a
        // frame two reads cut lies whole in it.
        self.read_buffer.hand_to(&mut connection.decoder);
        served += self.serve_frames(slot, context, budget);
        if read_bytes >= config.net.read_bytes_per_turn_max || out_of_room || *budget == 0 {
            // More may be waiting than this turn takes (an end of stream is read again).
            self.read_later(slot);
            if *budget == 0 {
                return served;
            }
        }
        let Some(connection) = self.slots[slot].as_mut() else {
            return served;
        };
        if connection.is_closing() {
            return served;
        }
        if let Some(kind) = io_failed {
            self.note_fault(slot, Fault::IoError, FaultDetail::Io(kind));
            self.close_now(slot, CloseReason::IoError, now_ns);
            return served;
        }
        // The frame timeout runs from a frame's first byte to its last, frame by frame.
        connection.frame_timer = FrameTimer::after_read(
            connection.frame_timer,
            connection.decoder.frame_in_progress(),
            now_ns,
        );
        if peer_closed {
            match connection.decoder.finish() {
                Ok(()) => {
                    connection.read_closed = true;
                    self.end_if_done(slot, now_ns);
                }
                Err(error) => self.protocol_violation(slot, error, now_ns),
            }
        }
        served
    }

    /// Closes with the violation's Error frame, noting the connection as its example.
    fn protocol_violation(&mut self, slot: usize, error: ProtocolError, now_ns: u64) {
        let fault = Fault::Closed(error.code());
        self.note_fault(slot, fault, FaultDetail::Protocol(error));
        self.close_with_protocol_error(slot, &error, now_ns);
    }

    /// Puts the connection on the list read next turn without an event (edge-triggered
    /// readiness announces only new bytes).
    pub(super) fn read_later(&mut self, slot: usize) {
        if let Some(connection) = self.slots[slot].as_mut() {
            list_for_reading(&mut self.read_again, slot, connection);
        }
    }

    /// Serves the whole frames the connection's decoder holds, at most `budget` of them
    /// (and takes them from it).
    pub(super) fn serve_frames(
        &mut self,
        slot: usize,
        context: &mut ShardContext<'_>,
        budget: &mut usize,
    ) -> usize {
        let now_ns = context.now_ns();
        let mut served = 0u64;
        let mut submits = 0u64;
        let mut payloads_copied = 0u64;
        let mut violation = None;
        {
            let Some(connection) = self.slots[slot].as_mut() else {
                return 0;
            };
            let Connection {
                decoder,
                replies,
                blocked,
                id,
                phase,
                pong,
                signal,
                in_flight,
                welcome_due,
                ..
            } = connection;
            loop {
                if !blocked.is_empty() || served as usize >= *budget {
                    // The `Block` policy holds the rest until the send buffer has room; the
                    // turn's budget leaves the rest for the next turn.
                    break;
                }
                let (frame, chunk) = match decoder.next_shared_frame() {
                    Ok(Some(shared)) => (shared.frame, shared.chunk),
                    Ok(None) => break,
                    Err(error) => {
                        violation = Some(error);
                        break;
                    }
                };
                served += 1;
                match frame {
                    ClientFrame::Hello => {
                        // The Welcome goes out on the next flush, before anything else.
                        *phase = Phase::Open;
                        *welcome_due = true;
                    }
                    ClientFrame::Submit(submit) => {
                        submits += 1;
                        // The payload shares the read buffer when the frame came whole in
                        // one turn's read into it; otherwise it is copied. At every size:
                        // for payloads of 8 to 64 bytes a slice and a copy cost the same
                        // (about 20 ns each with the drop, within noise: the slice's two
                        // atomic counts against malloc and free), and from 512 bytes on the
                        // slice is cheaper, so no threshold buys anything.
                        payloads_copied += u64::from(chunk.is_none() && !submit.payload.is_empty());
                        let message = submit.to_message_in(*id, chunk);
                        let message_id = message.id;
                        match context.admit(message) {
                            Ok(()) => *in_flight += 1,
                            Err(outcome) => {
                                let reply = Reply::bare(message_id, outcome);
                                offer_reply(
                                    replies,
                                    blocked,
                                    signal,
                                    reply,
                                    now_ns,
                                    &self.shared.counters[self.shard],
                                );
                            }
                        }
                    }
                    ClientFrame::Cancel { message_id } => {
                        // Its Reply (`cancelled`) comes through `completed`; a message not
                        // queued is left alone (PROTOCOL.md section 5.3).
                        context.cancel(*id, message_id);
                    }
                    ClientFrame::Ping { nonce } => *pong = Some(nonce),
                }
            }
        }
        *budget -= served as usize;
        let counters = &self.shared.counters[self.shard];
        bump(&counters.frames_in, served);
        bump(&counters.submits, submits);
        bump(&counters.payloads_copied, payloads_copied);
        let connection = self.slots[slot].as_mut().expect("still open");
        if served > 0 {
            mark_dirty(&mut self.dirty, slot, connection);
        }
        if let Some(error) = violation {
            self.protocol_violation(slot, error, now_ns);
        } else if matches!(connection.phase, Phase::Open) && served > 0 {
            self.check_health(slot, now_ns);
        }
        served as usize
    }

    /// A completion for one of this shard's connections: its Reply joins the send buffer.
    pub(super) fn completed(&mut self, completion: &Completion) {
        let Some(&slot) = self.by_id.get(&completion.connection.0) else {
            bump(&self.counters().replies_discarded, 1);
            return;
        };
        let now_ns = self.turn_ns;
        let counters = &self.shared.counters[self.shard];
        let connection = self.slots[slot].as_mut().expect("by_id lists open slots");
        connection.in_flight = connection.in_flight.saturating_sub(1);
        if connection.is_closing() {
            // Replies of a closing connection are discarded with it (PROTOCOL.md 7.3).
            bump(&counters.replies_discarded, 1);
            return;
        }
        let reply = reply_of(
            completion,
            connection.version(),
            self.shared.config.frame_limit().max_response_bytes(),
            counters,
        );
        offer_reply(
            &mut connection.replies,
            &mut connection.blocked,
            &mut connection.signal,
            reply,
            now_ns,
            counters,
        );
        mark_dirty(&mut self.dirty, slot, connection);
        self.check_health(slot, now_ns);
    }

    /// Closes a connection whose drop rate makes it unhealthy, when configured to.
    pub(super) fn check_health(&mut self, slot: usize, now_ns: u64) {
        // Health acts only by disconnecting, and only when configured to: otherwise there
        // is nothing to compute per completion.
        if !self.egress.disconnect_unhealthy {
            return;
        }
        let Some(connection) = self.slots[slot].as_mut() else {
            return;
        };
        if let EgressHealth::Unhealthy {
            recommend_disconnect: true,
        } = connection.replies.health(now_ns)
        {
            let fault = Fault::Closed(ErrorCode::Disconnected);
            self.note_fault(
                slot,
                fault,
                FaultDetail::Text("over the unhealthy drop rate"),
            );
            self.close_with(
                slot,
                ErrorCode::Disconnected,
                "reader too slow: over the unhealthy drop rate",
                now_ns,
            );
        }
    }
}

/// The Reply of `completion` for a connection speaking `version`.
///
/// Version 2 carries the response of a delivered message (its `Bytes` shared, not copied)
/// and the error text of a failed one (the one allocation on this path, and only on a
/// failure with a text: `completed` lends the completion, so its detail is cloned). A
/// response longer than `max_response_bytes` cannot go out whole in one frame: the shard
/// fails such a response before it gets here when the engine and the server share their
/// `[net]` settings; should they not, the message is told `failed response_too_large` here
/// and counted in `NetStats::responses_too_large`, never sent as a frame over the limit.
///
/// Version 1 carries neither, and knows no `response_too_large` (code 5): such a failure is
/// told as `handler_error`, the handler's fault, as a version-1 client has always been told.
pub(super) fn reply_of(
    completion: &Completion,
    version: ProtocolVersion,
    max_response_bytes: u32,
    counters: &ShardCounters,
) -> Reply {
    let mut outcome = completion.outcome;
    if !version.replies_carry_data() {
        if outcome
            == (Outcome::Failed {
                reason: FailureReason::ResponseTooLarge,
            })
        {
            outcome = Outcome::Failed {
                reason: FailureReason::HandlerError,
            };
        }
        return Reply::bare(completion.message, outcome);
    }
    if completion.response.len() > max_response_bytes as usize {
        bump(&counters.responses_too_large, 1);
        return Reply {
            message_id: completion.message,
            outcome: Outcome::Failed {
                reason: FailureReason::ResponseTooLarge,
            },
            response: Bytes::new(),
            detail: Some(ErrorDetail::new(
                "the response exceeds the server's frame limit (net.max_frame_bytes)",
            )),
        };
    }
    Reply {
        message_id: completion.message,
        outcome,
        response: completion.response.clone(),
        detail: completion.detail.clone(),
    }
}
