//! One connection's state: its socket, decoder, send buffer and the frames due to it, the
//! phase it is in, and the clock of the frame timeout.

use bytes::Bytes;
use mio::net::TcpStream;

use crate::message::{ConnectionId, MessageId};
use crate::net::egress::{EgressQueue, FlowSignal};
use crate::net::protocol::{ClientToServer, Decoder, ProtocolVersion, ServerFrame};
use crate::outcome::{ErrorDetail, Outcome};

use super::stats::CloseReason;

/// A Reply waiting in a connection's egress queue, with what it carries in the connection's
/// version: for version 2, the handler's response (the handler's own buffer, shared, not
/// copied: copied once, into the write buffer, when the Reply is encoded) or error text;
/// for version 1, neither.
#[derive(Clone, Debug)]
pub(super) struct Reply {
    pub(super) message_id: MessageId,
    pub(super) outcome: Outcome,
    pub(super) response: Bytes,
    pub(super) detail: Option<ErrorDetail>,
}

impl Reply {
    /// A Reply that carries nothing but its outcome (a refusal, a shed, and every Reply of
    /// a version-1 connection).
    pub(super) fn bare(message_id: MessageId, outcome: Outcome) -> Self {
        Self {
            message_id,
            outcome,
            response: Bytes::new(),
            detail: None,
        }
    }

    /// The frame it is written as.
    pub(super) fn frame(&self) -> ServerFrame<'_> {
        ServerFrame::Reply {
            message_id: self.message_id,
            outcome: self.outcome,
            response: &self.response,
            detail: self.detail.as_ref().map_or("", ErrorDetail::as_str),
        }
    }

    /// Its size on the wire: what the egress bound on bytes counts. Exact in either
    /// version, since a version-1 Reply carries no response or detail.
    pub(super) fn frame_bytes(&self) -> u64 {
        self.frame().encoded_bytes_in(ProtocolVersion::LATEST) as u64
    }
}

/// A Reply held back while the `Block` policy's buffer is full, with the time by which it
/// must have found room or be dropped: `block_timeout_ns` after it began to wait, its own
/// and not the reply's ahead of it.
#[derive(Clone, Debug)]
pub(super) struct Held {
    pub(super) reply: Reply,
    pub(super) deadline_ns: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Phase {
    /// Accepted; Hello due before the deadline.
    Handshake { deadline_ns: u64 },
    /// Serving.
    Open,
    /// Reading stopped; the last frames go out until the deadline, then it closes.
    Closing {
        deadline_ns: u64,
        reason: CloseReason,
    },
}

/// The frame timeout's clock for one partly received frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct FrameTimer {
    /// The frame, by its number in the connection's stream ([`Decoder::frame_in_progress`]).
    pub(super) frame: u64,
    /// When a read first found it begun and not finished.
    pub(super) started_ns: u64,
}

impl FrameTimer {
    /// The timer after a read: kept while the same frame is still arriving, started anew
    /// when another one is (a frame completed and the next began), gone when none is.
    pub(super) fn after_read(
        timer: Option<FrameTimer>,
        arriving: Option<u64>,
        now_ns: u64,
    ) -> Option<Self> {
        let frame = arriving?;
        match timer {
            Some(timer) if timer.frame == frame => Some(timer),
            _ => Some(FrameTimer {
                frame,
                started_ns: now_ns,
            }),
        }
    }
}

/// One connection, owned by its shard.
pub(super) struct Connection {
    pub(super) stream: TcpStream,
    pub(super) id: ConnectionId,
    pub(super) decoder: Decoder<ClientToServer>,
    pub(super) replies: EgressQueue<Reply>,
    /// Replies the `Block` policy handed back, and those that came after them, offered
    /// again in order before any newer one.
    pub(super) blocked: std::collections::VecDeque<Held>,
    /// Encoded frames, written from `written_bytes` on.
    pub(super) out: Vec<u8>,
    pub(super) written_bytes: usize,
    /// At most one of each is pending; a newer one replaces it (PROTOCOL.md section 8).
    pub(super) pong: Option<u64>,
    pub(super) signal: Option<FlowSignal>,
    pub(super) phase: Phase,
    /// The client closed its side; the connection ends once every reply is out.
    pub(super) read_closed: bool,
    /// The frame arriving, for the frame timeout: `None` while no frame is partly received.
    pub(super) frame_timer: Option<FrameTimer>,
    /// Admitted messages whose Reply has not been queued yet.
    pub(super) in_flight: u32,
    /// A Hello was read and its Welcome is not written yet.
    pub(super) welcome_due: bool,
    /// An event said the peer closed its side (or the socket failed): read to the end.
    pub(super) peer_hung_up: bool,
    /// Listed in `ShardNet::dirty` (something to write).
    pub(super) dirty: bool,
    /// Listed in `ShardNet::read_again` (bytes may be waiting that no event will announce).
    pub(super) read_pending: bool,
}

impl Connection {
    pub(super) fn has_output(&self) -> bool {
        self.written_bytes < self.out.len()
            || self.pong.is_some()
            || self.signal.is_some()
            || self.welcome_due
            || !self.replies.is_empty()
    }

    pub(super) fn is_closing(&self) -> bool {
        matches!(self.phase, Phase::Closing { .. })
    }

    /// The version the connection speaks: its Hello's, and version 1 before the Hello (for
    /// an Error, which every client reads in any version).
    pub(super) fn version(&self) -> ProtocolVersion {
        self.decoder.version().unwrap_or(ProtocolVersion::V1)
    }
}
