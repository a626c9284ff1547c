//! The wire protocol of the TCP front end, as pure code without I/O: the frames, their byte
//! layout and codes, a streaming [`Decoder`] that takes bytes as they arrive from a socket,
//! and encoders that append whole frames to a caller's buffer.
//!
//! `docs/PROTOCOL.md` is the specification, written so that a client can be built from it
//! alone; this module implements it exactly, and `tests/tests/protocol.rs` checks the code
//! tables of that page against the ones here.
//!
//! Every frame is an 8-byte header followed by a body. All integers are little-endian.
//!
//! | offset | bytes | field |
//! |---|---|---|
//! | 0 | 2 | magic, [`MAGIC`]: `0x53 0x57` (ASCII `SW`) |
//! | 2 | 1 | protocol version, [`PROTOCOL_VERSION`] |
//! | 3 | 1 | frame type, [`FrameType::code`] |
//! | 4 | 4 | body length in bytes, `u32` |
//!
//! Frame types `0x01..=0x7F` are sent by clients ([`ClientFrame`]), `0x81..=0xFF` by the
//! server ([`ServerFrame`]). The decoder judges a frame by its header before it waits for
//! the body, so a malformed or oversized frame is refused after 8 bytes and never buffered.
//! It is strict: a frame it accepts re-encodes to exactly the bytes it came from.
//!
//! Decoding is zero-copy: a Submit's payload and an Error's detail borrow the decoder's
//! buffer, and a Submit costs four fixed-offset reads after the header checks.

use core::fmt;
use core::marker::PhantomData;
use core::num::{NonZeroU32, NonZeroU64};

use crate::config::{FRAME_BYTES_DEFAULT, FRAME_BYTES_MAX, FRAME_BYTES_MIN};
use crate::message::{ConnectionId, Message, MessageId, Priority, Role, TenantId};
use crate::outcome::{DropReason, FailureReason, Outcome, RefusalReason, ShedReason};

/// The first two bytes of every frame: ASCII `SW`.
pub const MAGIC: [u8; 2] = *b"SW";

/// The protocol version this module speaks, carried in every header.
pub const PROTOCOL_VERSION: u8 = 1;

/// Size of the fixed header that starts every frame.
pub const HEADER_BYTES: usize = 8;

/// Size of a Submit body before its payload: message id, tenant, priority, role, reserved.
pub const SUBMIT_FIXED_BYTES: usize = 16;

/// The most bytes of UTF-8 text an Error frame's detail may hold. The encoder cuts a
/// longer detail at the last character boundary within this bound.
pub const ERROR_DETAIL_MAX_BYTES: usize = 256;

/// Size of an Error body before its detail: the `u16` error code.
const ERROR_FIXED_BYTES: usize = 2;

/// Body sizes of the fixed-size frames.
const CANCEL_BODY_BYTES: usize = 8;
const PING_BODY_BYTES: usize = 8;
const WELCOME_BODY_BYTES: usize = 16;
const REPLY_BODY_BYTES: usize = 20;
const THROTTLE_BODY_BYTES: usize = 8;
const PAUSE_BODY_BYTES: usize = 8;
const REPLIES_DROPPED_BODY_BYTES: usize = 8;
const PONG_BODY_BYTES: usize = 8;

/// The largest frame a decoder accepts, header included: the limit a server announces in
/// its Welcome and enforces on every frame it reads.
///
/// Always in [`FrameLimit::MIN`]`..=`[`FrameLimit::MAX`], so a decoder can always take every
/// server frame (the largest is an Error with the longest detail) and a Submit with some
/// payload, and a buffer for one frame always fits in memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FrameLimit {
    /// In `MIN..=MAX` bytes, header included.
    max_frame_bytes: u32,
}

impl FrameLimit {
    /// The smallest limit: 512 bytes.
    pub const MIN: FrameLimit = FrameLimit {
        max_frame_bytes: FRAME_BYTES_MIN,
    };
    /// The largest limit: 16 MiB.
    pub const MAX: FrameLimit = FrameLimit {
        max_frame_bytes: FRAME_BYTES_MAX,
    };
    /// The default limit: 64 KiB, so a Submit payload of up to 65,512 bytes.
    pub const DEFAULT: FrameLimit = FrameLimit {
        max_frame_bytes: FRAME_BYTES_DEFAULT,
    };

    /// The limit of `max_frame_bytes` (header included), or `None` outside
    /// `MIN..=MAX`.
    pub const fn new(max_frame_bytes: u32) -> Option<FrameLimit> {
        if max_frame_bytes >= Self::MIN.max_frame_bytes
            && max_frame_bytes <= Self::MAX.max_frame_bytes
        {
            Some(FrameLimit { max_frame_bytes })
        } else {
            None
        }
    }

    /// The largest frame accepted, header included.
    pub const fn max_frame_bytes(self) -> u32 {
        self.max_frame_bytes
    }

    /// The largest Submit payload that fits: the limit less the header and the Submit's
    /// fixed fields.
    pub const fn max_payload_bytes(self) -> u32 {
        self.max_frame_bytes - (HEADER_BYTES + SUBMIT_FIXED_BYTES) as u32
    }
}

impl Default for FrameLimit {
    fn default() -> Self {
        Self::DEFAULT
    }
}

// Every server frame fits under the smallest limit, and so does a Submit with a payload.
const _: () = assert!(
    HEADER_BYTES + ERROR_FIXED_BYTES + ERROR_DETAIL_MAX_BYTES
        <= FrameLimit::MIN.max_frame_bytes as usize
);
const _: () =
    assert!(HEADER_BYTES + WELCOME_BODY_BYTES <= FrameLimit::MIN.max_frame_bytes as usize);
const _: () = assert!(HEADER_BYTES + REPLY_BODY_BYTES <= FrameLimit::MIN.max_frame_bytes as usize);
const _: () = assert!(HEADER_BYTES + SUBMIT_FIXED_BYTES < FrameLimit::MIN.max_frame_bytes as usize);
const _: () = assert!(FrameLimit::DEFAULT.max_frame_bytes >= FrameLimit::MIN.max_frame_bytes);
const _: () = assert!(FrameLimit::DEFAULT.max_frame_bytes <= FrameLimit::MAX.max_frame_bytes);

/// Every kind of frame, with its one-byte code in the header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FrameType {
    /// Client, `0x01`: the first frame of a connection; its header's version is the one the
    /// client speaks.
    Hello,
    /// Client, `0x02`: a message to admit, answered by exactly one Reply.
    Submit,
    /// Client, `0x03`: cancel a queued message of this connection by its id.
    Cancel,
    /// Client, `0x04`: liveness probe, answered by a Pong with the same nonce.
    Ping,
    /// Server, `0x81`: the answer to Hello, with the connection's id and limits.
    Welcome,
    /// Server, `0x82`: the outcome of one submitted message.
    Reply,
    /// Server, `0x83`: slow down, waiting the given delay before each Submit.
    Throttle,
    /// Server, `0x84`: send no Submit for the given duration.
    Pause,
    /// Server, `0x85`: back to full speed.
    Resume,
    /// Server, `0x86`: how many replies were dropped since the last such frame.
    RepliesDropped,
    /// Server, `0x87`: the answer to a Ping.
    Pong,
    /// Server, `0x88`: a violation or a reason to close; the server closes after it.
    Error,
}

impl FrameType {
    /// Every frame type, client frames first.
    pub const ALL: [FrameType; 12] = [
        FrameType::Hello,
        FrameType::Submit,
        FrameType::Cancel,
        FrameType::Ping,
        FrameType::Welcome,
        FrameType::Reply,
        FrameType::Throttle,
        FrameType::Pause,
        FrameType::Resume,
        FrameType::RepliesDropped,
        FrameType::Pong,
        FrameType::Error,
    ];

    /// The code in the header's frame-type byte. Stable: fixed by `docs/PROTOCOL.md`.
    pub const fn code(self) -> u8 {
        match self {
            FrameType::Hello => 0x01,
            FrameType::Submit => 0x02,
            FrameType::Cancel => 0x03,
            FrameType::Ping => 0x04,
            FrameType::Welcome => 0x81,
            FrameType::Reply => 0x82,
            FrameType::Throttle => 0x83,
            FrameType::Pause => 0x84,
            FrameType::Resume => 0x85,
            FrameType::RepliesDropped => 0x86,
            FrameType::Pong => 0x87,
            FrameType::Error => 0x88,
        }
    }

    /// The frame type of `code`, or `None` for a code no version-1 frame has.
    pub const fn from_code(code: u8) -> Option<FrameType> {
        match code {
            0x01 => Some(FrameType::Hello),
            0x02 => Some(FrameType::Submit),
            0x03 => Some(FrameType::Cancel),
            0x04 => Some(FrameType::Ping),
            0x81 => Some(FrameType::Welcome),
            0x82 => Some(FrameType::Reply),
            0x83 => Some(FrameType::Throttle),
            0x84 => Some(FrameType::Pause),
            0x85 => Some(FrameType::Resume),
            0x86 => Some(FrameType::RepliesDropped),
            0x87 => Some(FrameType::Pong),
            0x88 => Some(FrameType::Error),
            _ => None,
        }
    }

    /// Whether clients send it (codes below `0x80`); otherwise the server does.
    pub const fn is_sent_by_client(self) -> bool {
        self.code() < 0x80
    }

    /// The snake_case name used in `docs/PROTOCOL.md` and in error details.
    pub const fn name(self) -> &'static str {
        match self {
            FrameType::Hello => "hello",
            FrameType::Submit => "submit",
            FrameType::Cancel => "cancel",
            FrameType::Ping => "ping",
            FrameType::Welcome => "welcome",
            FrameType::Reply => "reply",
            FrameType::Throttle => "throttle",
            FrameType::Pause => "pause",
            FrameType::Resume => "resume",
            FrameType::RepliesDropped => "replies_dropped",
            FrameType::Pong => "pong",
            FrameType::Error => "error",
        }
    }

    /// The body lengths this frame type may have, smallest and largest. A Submit's largest
    /// is bounded by the [`FrameLimit`] instead.
    pub const fn body_bytes_range(self) -> (usize, usize) {
        match self {
            FrameType::Hello | FrameType::Resume => (0, 0),
            FrameType::Submit => (SUBMIT_FIXED_BYTES, usize::MAX),
            FrameType::Cancel => (CANCEL_BODY_BYTES, CANCEL_BODY_BYTES),
            FrameType::Ping => (PING_BODY_BYTES, PING_BODY_BYTES),
            FrameType::Welcome => (WELCOME_BODY_BYTES, WELCOME_BODY_BYTES),
            FrameType::Reply => (REPLY_BODY_BYTES, REPLY_BODY_BYTES),
            FrameType::Throttle => (THROTTLE_BODY_BYTES, THROTTLE_BODY_BYTES),
            FrameType::Pause => (PAUSE_BODY_BYTES, PAUSE_BODY_BYTES),
            FrameType::RepliesDropped => (REPLIES_DROPPED_BODY_BYTES, REPLIES_DROPPED_BODY_BYTES),
            FrameType::Pong => (PONG_BODY_BYTES, PONG_BODY_BYTES),
            FrameType::Error => (
                ERROR_FIXED_BYTES,
                ERROR_FIXED_BYTES + ERROR_DETAIL_MAX_BYTES,
            ),
        }
    }
}

impl fmt::Display for FrameType {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())
    }
}

/// The code an Error frame carries: why the server is closing the connection. Codes 1 to 8
/// name a [`ProtocolError`]; 9 to 12 are decided by the server, not the decoder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// 1: the header did not start with [`MAGIC`].
    BadMagic,
    /// 2: the header's version is not one this end speaks.
    UnsupportedVersion,
    /// 3: the header's frame type is no frame type of this version.
    UnknownFrameType,
    /// 4: the header announced a frame larger than the [`FrameLimit`].
    FrameTooLarge,
    /// 5: the body length does not fit the frame type.
    BadLength,
    /// 6: a field of the body holds a value it may not.
    BadField,
    /// 7: a frame came in the wrong direction, before the handshake, or repeated it.
    UnexpectedFrame,
    /// 8: the connection was closed in the middle of a frame.
    Truncated,
    /// 9: no Hello within the handshake timeout, or a frame started and not finished
    /// within the frame timeout.
    Timeout,
    /// 10: the server is at its connection limit.
    TooManyConnections,
    /// 11: the server is shutting down.
    ShuttingDown,
    /// 12: the server cut the connection by policy: the `disconnect` action at a cap, or a
    /// reader too slow for its send buffer.
    Disconnected,
}

impl ErrorCode {
    /// Every error code, in code order.
    pub const ALL: [ErrorCode; 12] = [
        ErrorCode::BadMagic,
        ErrorCode::UnsupportedVersion,
        ErrorCode::UnknownFrameType,
        ErrorCode::FrameTooLarge,
        ErrorCode::BadLength,
        ErrorCode::BadField,
        ErrorCode::UnexpectedFrame,
        ErrorCode::Truncated,
        ErrorCode::Timeout,
        ErrorCode::TooManyConnections,
        ErrorCode::ShuttingDown,
        ErrorCode::Disconnected,
    ];

    /// Its place in [`ErrorCode::ALL`] (code order): an index for a table of counts by code.
    pub const fn index(self) -> usize {
        // Codes run 1..=12 with no gap (see `code`).
        self.code() as usize - 1
    }

    /// The `u16` on the wire. Stable: fixed by `docs/PROTOCOL.md`.
    pub const fn code(self) -> u16 {
        match self {
            ErrorCode::BadMagic => 1,
            ErrorCode::UnsupportedVersion => 2,
            ErrorCode::UnknownFrameType => 3,
            ErrorCode::FrameTooLarge => 4,
            ErrorCode::BadLength => 5,
            ErrorCode::BadField => 6,
            ErrorCode::UnexpectedFrame => 7,
            ErrorCode::Truncated => 8,
            ErrorCode::Timeout => 9,
            ErrorCode::TooManyConnections => 10,
            ErrorCode::ShuttingDown => 11,
            ErrorCode::Disconnected => 12,
        }
    }

    /// The error code of `code`, or `None` for a code version 1 does not define.
    pub const fn from_code(code: u16) -> Option<ErrorCode> {
        match code {
            1 => Some(ErrorCode::BadMagic),
            2 => Some(ErrorCode::UnsupportedVersion),
            3 => Some(ErrorCode::UnknownFrameType),
            4 => Some(ErrorCode::FrameTooLarge),
            5 => Some(ErrorCode::BadLength),
            6 => Some(ErrorCode::BadField),
            7 => Some(ErrorCode::UnexpectedFrame),
            8 => Some(ErrorCode::Truncated),
            9 => Some(ErrorCode::Timeout),
            10 => Some(ErrorCode::TooManyConnections),
            11 => Some(ErrorCode::ShuttingDown),
            12 => Some(ErrorCode::Disconnected),
            _ => None,
        }
    }

    /// The snake_case name used in `docs/PROTOCOL.md` and in counters.
    pub const fn name(self) -> &'static str {
        match self {
            ErrorCode::BadMagic => "bad_magic",
            ErrorCode::UnsupportedVersion => "unsupported_version",
            ErrorCode::UnknownFrameType => "unknown_frame_type",
            ErrorCode::FrameTooLarge => "frame_too_large",
            ErrorCode::BadLength => "bad_length",
            ErrorCode::BadField => "bad_field",
            ErrorCode::UnexpectedFrame => "unexpected_frame",
            ErrorCode::Truncated => "truncated",
            ErrorCode::Timeout => "timeout",
            ErrorCode::TooManyConnections => "too_many_connections",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::Disconnected => "disconnected",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())
    }
}

/// What is wrong with the bytes a [`Decoder`] was given. Each names its [`ErrorCode`]
/// ([`ProtocolError::code`]), which the server sends in an Error frame before it closes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// The header did not start with [`MAGIC`].
    #[error("bad magic {found:02x?}: a frame starts with [53, 57] (\"SW\")")]
    BadMagic {
        /// The two bytes found instead.
        found: [u8; 2],
    },
    /// The header's version is not [`PROTOCOL_VERSION`].
    #[error("unsupported protocol version {version}: this end speaks version {PROTOCOL_VERSION}")]
    UnsupportedVersion {
        /// The version in the header.
        version: u8,
    },
    /// The header's frame type is no frame type of this version.
    #[error("unknown frame type {code:#04x}")]
    UnknownFrameType {
        /// The code in the header.
        code: u8,
    },
    /// The header announced a frame larger than the decoder's [`FrameLimit`]; found from the
    /// header alone, before any of the body is awaited.
    #[error("a frame of {frame_bytes} bytes exceeds the limit of {max_frame_bytes} bytes")]
    FrameTooLarge {
        /// Header plus announced body length.
        frame_bytes: u64,
        /// The decoder's limit.
        max_frame_bytes: u32,
    },
    /// The body length does not fit the frame type ([`FrameType::body_bytes_range`]).
    #[error("a {frame_type} frame cannot have a body of {body_bytes} bytes")]
    BadLength {
        /// The frame's type.
        frame_type: FrameType,
        /// The body length in the header.
        body_bytes: u32,
    },
    /// A field of the body holds a value it may not (an unknown code, a non-zero reserved
    /// field, a detail that is not UTF-8, ...).
    #[error("a {frame_type} frame has an invalid {field}: {value}")]
    BadField {
        /// The frame's type.
        frame_type: FrameType,
        /// The field's name as in `docs/PROTOCOL.md`.
        field: &'static str,
        /// The value found (for a detail that is not UTF-8: the offset of the first bad
        /// byte).
        value: u64,
    },
    /// A frame type this end never receives, or one out of sequence: anything before the
    /// handshake, or the handshake twice.
    #[error("unexpected {frame_type} frame: expected {expected}")]
    UnexpectedFrame {
        /// The frame's type.
        frame_type: FrameType,
        /// What was expected instead.
        expected: &'static str,
    },
    /// The connection was closed with part of a frame received ([`Decoder::finish`]).
    #[error("connection closed in the middle of a frame, {buffered_bytes} bytes of it received")]
    Truncated {
        /// Bytes of the unfinished frame that had arrived.
        buffered_bytes: u64,
    },
}

impl ProtocolError {
    /// The code the Error frame for this violation carries.
    pub const fn code(&self) -> ErrorCode {
        match self {
            ProtocolError::BadMagic { .. } => ErrorCode::BadMagic,
            ProtocolError::UnsupportedVersion { .. } => ErrorCode::UnsupportedVersion,
            ProtocolError::UnknownFrameType { .. } => ErrorCode::UnknownFrameType,
            ProtocolError::FrameTooLarge { .. } => ErrorCode::FrameTooLarge,
            ProtocolError::BadLength { .. } => ErrorCode::BadLength,
            ProtocolError::BadField { .. } => ErrorCode::BadField,
            ProtocolError::UnexpectedFrame { .. } => ErrorCode::UnexpectedFrame,
            ProtocolError::Truncated { .. } => ErrorCode::Truncated,
        }
    }
}

/// A frame that does not fit under the [`FrameLimit`] it was encoded for; nothing was
/// written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a frame of {frame_bytes} bytes exceeds the limit of {max_frame_bytes} bytes")]
pub struct FrameTooLarge {
    /// The size the frame would have, header included.
    pub frame_bytes: usize,
    /// The limit.
    pub max_frame_bytes: u32,
}

/// A value with a stable one-byte code on the wire. The codes are fixed by
/// `docs/PROTOCOL.md`, spelled out one by one (never the declaration order of the enum),
/// and never reused for something else.
pub trait WireCode: Sized + Copy {
    /// The code on the wire.
    fn wire_code(self) -> u8;
    /// The value of `code`, or `None` for a code version 1 does not define.
    fn from_wire_code(code: u8) -> Option<Self>;
}

impl WireCode for Priority {
    /// `0` for P0 up to `3` for P3.
    fn wire_code(self) -> u8 {
        match self {
            Priority::P0 => 0,
            Priority::P1 => 1,
            Priority::P2 => 2,
            Priority::P3 => 3,
        }
    }

    fn from_wire_code(code: u8) -> Option<Self> {
        match code {
            0 => Some(Priority::P0),
            1 => Some(Priority::P1),
            2 => Some(Priority::P2),
            3 => Some(Priority::P3),
            _ => None,
        }
    }
}

impl WireCode for Role {
    /// `0` default, `1` session, `2` sse, `3` task_worker, `4` tool_executor,
    /// `5` transport.
    fn wire_code(self) -> u8 {
        match self {
            Role::Default => 0,
            Role::Session => 1,
            Role::Sse => 2,
            Role::TaskWorker => 3,
            Role::ToolExecutor => 4,
            Role::Transport => 5,
        }
    }

    fn from_wire_code(code: u8) -> Option<Self> {
        match code {
            0 => Some(Role::Default),
            1 => Some(Role::Session),
            2 => Some(Role::Sse),
            3 => Some(Role::TaskWorker),
            4 => Some(Role::ToolExecutor),
            5 => Some(Role::Transport),
            _ => None,
        }
    }
}

impl WireCode for FailureReason {
    /// `1` handler_error, `2` handler_panic.
    fn wire_code(self) -> u8 {
        match self {
            FailureReason::HandlerError => 1,
            FailureReason::HandlerPanic => 2,
        }
    }

    fn from_wire_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(FailureReason::HandlerError),
            2 => Some(FailureReason::HandlerPanic),
            _ => None,
        }
    }
}

impl WireCode for RefusalReason {
    /// `1` rate_limited up to `10` draining, in the order of `docs/PROTOCOL.md`.
    fn wire_code(self) -> u8 {
        match self {
            RefusalReason::RateLimited => 1,
            RefusalReason::ConnectionQueueFull => 2,
            RefusalReason::ConnectionBytesFull => 3,
            RefusalReason::TenantQueueFull => 4,
            RefusalReason::RoleQueueFull => 5,
            RefusalReason::HandlerQueueFull => 6,
            RefusalReason::ConnectionLimit => 7,
            RefusalReason::Disconnected => 8,
            RefusalReason::ShuttingDown => 9,
            RefusalReason::Draining => 10,
        }
    }

    fn from_wire_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(RefusalReason::RateLimited),
            2 => Some(RefusalReason::ConnectionQueueFull),
            3 => Some(RefusalReason::ConnectionBytesFull),
            4 => Some(RefusalReason::TenantQueueFull),
            5 => Some(RefusalReason::RoleQueueFull),
            6 => Some(RefusalReason::HandlerQueueFull),
            7 => Some(RefusalReason::ConnectionLimit),
            8 => Some(RefusalReason::Disconnected),
            9 => Some(RefusalReason::ShuttingDown),
            10 => Some(RefusalReason::Draining),
            _ => None,
        }
    }
}

impl WireCode for ShedReason {
    /// `1` circuit_open.
    fn wire_code(self) -> u8 {
        match self {
            ShedReason::CircuitOpen => 1,
        }
    }

    fn from_wire_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(ShedReason::CircuitOpen),
            _ => None,
        }
    }
}

impl WireCode for DropReason {
    /// `1` evicted_for_newer, `2` dropped_newest, `3` disconnected.
    fn wire_code(self) -> u8 {
        match self {
            DropReason::EvictedForNewer => 1,
            DropReason::DroppedNewest => 2,
            DropReason::Disconnected => 3,
        }
    }

    fn from_wire_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(DropReason::EvictedForNewer),
            2 => Some(DropReason::DroppedNewest),
            3 => Some(DropReason::Disconnected),
            _ => None,
        }
    }
}

/// Reply outcome code: the handler returned success. Reason `0`.
pub const OUTCOME_DELIVERED: u8 = 1;
/// Reply outcome code: the handler failed; reason a [`FailureReason`] code.
pub const OUTCOME_FAILED: u8 = 2;
/// Reply outcome code: not admitted; reason a [`RefusalReason`] code, with `retry_after_ns`.
pub const OUTCOME_REFUSED: u8 = 3;
/// Reply outcome code: shed while the breaker is open; reason a [`ShedReason`] code.
pub const OUTCOME_SHED: u8 = 4;
/// Reply outcome code: cancelled before its handler ran. Reason `0`.
pub const OUTCOME_CANCELLED: u8 = 5;
/// Reply outcome code: dropped by the drop policy; reason a [`DropReason`] code.
pub const OUTCOME_DROPPED: u8 = 6;

/// An [`Outcome`] as the three fields of a Reply body. `reason_code` is `0` for the
/// outcomes without a reason and `retry_after_ns` is `0` unless the message was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutcomeFields {
    /// One of the `OUTCOME_*` codes.
    pub outcome_code: u8,
    /// The reason's [`WireCode`], or `0`.
    pub reason_code: u8,
    /// A refusal's `retry_after_ns`, or `0`.
    pub retry_after_ns: u64,
}

impl OutcomeFields {
    /// The fields that carry `outcome`.
    pub fn from_outcome(outcome: Outcome) -> Self {
        let (outcome_code, reason_code, retry_after_ns) = match outcome {
            Outcome::Delivered => (OUTCOME_DELIVERED, 0, 0),
            Outcome::Failed { reason } => (OUTCOME_FAILED, reason.wire_code(), 0),
            Outcome::Refused {
                reason,
                retry_after_ns,
            } => (OUTCOME_REFUSED, reason.wire_code(), retry_after_ns),
            Outcome::Shed { reason } => (OUTCOME_SHED, reason.wire_code(), 0),
            Outcome::Cancelled => (OUTCOME_CANCELLED, 0, 0),
            Outcome::Dropped { reason } => (OUTCOME_DROPPED, reason.wire_code(), 0),
        };
        Self {
            outcome_code,
            reason_code,
            retry_after_ns,
        }
    }

    /// The outcome these fields carry, or [`ProtocolError::BadField`] naming the first field
    /// that is wrong: an unknown `outcome` code, a `reason` unknown for that outcome (or not
    /// `0` where it has none), a non-zero `retry_after_ns` on anything but a refusal.
    pub fn to_outcome(self) -> Result<Outcome, ProtocolError> {
        let bad = |field: &'static str, value: u64| ProtocolError::BadField {
            frame_type: FrameType::Reply,
            field,
            value,
        };
        let reason = self.reason_code;
        let outcome = match self.outcome_code {
            OUTCOME_DELIVERED if reason == 0 => Outcome::Delivered,
            OUTCOME_FAILED => Outcome::Failed {
                reason: FailureReason::from_wire_code(reason)
                    .ok_or_else(|| bad("reason", reason.into()))?,
            },
            OUTCOME_REFUSED => {
                return Ok(Outcome::Refused {
                    reason: RefusalReason::from_wire_code(reason)
                        .ok_or_else(|| bad("reason", reason.into()))?,
                    retry_after_ns: self.retry_after_ns,
                })
            }
            OUTCOME_SHED => Outcome::Shed {
                reason: ShedReason::from_wire_code(reason)
                    .ok_or_else(|| bad("reason", reason.into()))?,
            },
            OUTCOME_CANCELLED if reason == 0 => Outcome::Cancelled,
            OUTCOME_DROPPED => Outcome::Dropped {
                reason: DropReason::from_wire_code(reason)
                    .ok_or_else(|| bad("reason", reason.into()))?,
            },
            OUTCOME_DELIVERED | OUTCOME_CANCELLED => return Err(bad("reason", reason.into())),
            unknown => return Err(bad("outcome", unknown.into())),
        };
        if self.retry_after_ns != 0 {
            return Err(bad("retry_after_ns", self.retry_after_ns));
        }
        Ok(outcome)
    }
}

/// A message to admit, as a client submits it. Answered by exactly one Reply with the
/// same `message_id`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Submit<'payload> {
    /// Chosen by the client and echoed in the Reply; the server does not require it to be
    /// unique, but a client that reuses one in flight cannot tell the replies apart.
    pub message_id: MessageId,
    /// The tenant it is charged to.
    pub tenant: TenantId,
    /// The priority it claims (the tenant's ceiling may lower it).
    pub priority: Priority,
    /// The role of the submitting connection.
    pub role: Role,
    /// The bytes for the handler; borrowed from the decoder's buffer when decoded.
    pub payload: &'payload [u8],
}

impl Submit<'_> {
    /// The engine message for this submission on `connection` (copies the payload).
    pub fn to_message(&self, connection: ConnectionId) -> Message {
        Message::new(connection, self.message_id)
            .with_tenant(self.tenant)
            .with_role(self.role)
            .with_priority(self.priority)
            .with_payload(self.payload.to_vec())
    }
}

/// A frame a client sends to the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientFrame<'payload> {
    /// The handshake, first and once. Empty body; the header's version is the one the
    /// client speaks.
    Hello,
    /// A message to admit.
    Submit(Submit<'payload>),
    /// Cancel the first queued message of this connection with this id. No reply of its
    /// own: the message's Reply says `cancelled` if it had not started yet.
    Cancel {
        /// The message to cancel.
        message_id: MessageId,
    },
    /// A liveness probe; the server answers with a Pong carrying `nonce`.
    Ping {
        /// Any value, echoed.
        nonce: u64,
    },
}

impl ClientFrame<'_> {
    /// Its frame type.
    pub const fn frame_type(&self) -> FrameType {
        match self {
            ClientFrame::Hello => FrameType::Hello,
            ClientFrame::Submit(_) => FrameType::Submit,
            ClientFrame::Cancel { .. } => FrameType::Cancel,
            ClientFrame::Ping { .. } => FrameType::Ping,
        }
    }

    /// Its encoded size, header included.
    pub const fn encoded_bytes(&self) -> usize {
        HEADER_BYTES
            + match self {
                ClientFrame::Hello => 0,
                ClientFrame::Submit(submit) => SUBMIT_FIXED_BYTES + submit.payload.len(),
                ClientFrame::Cancel { .. } => CANCEL_BODY_BYTES,
                ClientFrame::Ping { .. } => PING_BODY_BYTES,
            }
    }

    /// Appends the frame to `out` and returns its size, or, when it would exceed `limit`
    /// (a Submit with too large a payload; use the limit from the server's Welcome), writes
    /// nothing and says so. `out` grows at most once, by exactly the frame's size.
    pub fn encode(&self, limit: FrameLimit, out: &mut Vec<u8>) -> Result<usize, FrameTooLarge> {
        let frame_bytes = self.encoded_bytes();
        if frame_bytes > limit.max_frame_bytes() as usize {
            return Err(FrameTooLarge {
                frame_bytes,
                max_frame_bytes: limit.max_frame_bytes(),
            });
        }
        out.reserve(frame_bytes);
        put_header(out, PROTOCOL_VERSION, self.frame_type(), frame_bytes);
        match self {
            ClientFrame::Hello => {}
            ClientFrame::Submit(submit) => {
                out.extend_from_slice(&submit.message_id.0.to_le_bytes());
                out.extend_from_slice(&submit.tenant.0.to_le_bytes());
                out.push(submit.priority.wire_code());
                out.push(submit.role.wire_code());
                out.extend_from_slice(&[0, 0]);
                out.extend_from_slice(submit.payload);
            }
            ClientFrame::Cancel { message_id } => {
                out.extend_from_slice(&message_id.0.to_le_bytes());
            }
            ClientFrame::Ping { nonce } => out.extend_from_slice(&nonce.to_le_bytes()),
        }
        Ok(frame_bytes)
    }

    /// Decodes the body of a client frame whose header the caller has checked: the body
    /// length is in [`FrameType::body_bytes_range`]. Zero-copy: a Submit's payload borrows
    /// `body`.
    fn decode_body(frame_type: FrameType, body: &[u8]) -> Result<ClientFrame<'_>, ProtocolError> {
        let mut reader = BodyReader::new(frame_type, body);
        let frame = match frame_type {
            FrameType::Hello => ClientFrame::Hello,
            FrameType::Submit => {
                let message_id = MessageId(reader.u64()?);
                let tenant = TenantId(reader.u32()?);
                let priority_code = reader.u8()?;
                let role_code = reader.u8()?;
                let reserved = reader.u16()?;
                let priority = Priority::from_wire_code(priority_code)
                    .ok_or_else(|| reader.bad_field("priority", priority_code.into()))?;
                let role = Role::from_wire_code(role_code)
                    .ok_or_else(|| reader.bad_field("role", role_code.into()))?;
                if reserved != 0 {
                    return Err(reader.bad_field("reserved", reserved.into()));
                }
                return Ok(ClientFrame::Submit(Submit {
                    message_id,
                    tenant,
                    priority,
                    role,
                    payload: reader.rest(),
                }));
            }
            FrameType::Cancel => ClientFrame::Cancel {
                message_id: MessageId(reader.u64()?),
            },
            FrameType::Ping => ClientFrame::Ping {
                nonce: reader.u64()?,
            },
            server_frame => {
                return Err(ProtocolError::UnexpectedFrame {
                    frame_type: server_frame,
                    expected: "a client frame",
                })
            }
        };
        reader.finish()?;
        Ok(frame)
    }
}

/// A frame the server sends to a client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerFrame<'detail> {
    /// The answer to Hello: the handshake is done and Submits may follow.
    Welcome {
        /// The id the server gave this connection (for logs and the control plane).
        connection: ConnectionId,
        /// The largest frame the server accepts; a Submit payload may be up to
        /// [`FrameLimit::max_payload_bytes`].
        frame_limit: FrameLimit,
        /// The capacity of the connection's send buffer, in Reply frames. A client that
        /// keeps at most this many submissions without a reply never has a reply dropped.
        send_buffer_replies: NonZeroU32,
    },
    /// The outcome of a submitted message.
    Reply {
        /// The id from the Submit.
        message_id: MessageId,
        /// What became of it.
        outcome: Outcome,
    },
    /// The send buffer is filling (70% to 90%): wait `delay_ns` after each Submit before
    /// the next, until the next Throttle or a Resume.
    Throttle {
        /// The wait before each Submit, from 0 at 70% to 500 ms at 90% by default.
        delay_ns: u64,
    },
    /// The send buffer is at 90% or more: send no Submit for `duration_ns`.
    Pause {
        /// How long to hold Submits back (50 ms by default).
        duration_ns: u64,
    },
    /// The send buffer is under 70% again: submit at full speed.
    Resume,
    /// Replies were dropped by the send buffer's drop policy.
    RepliesDropped {
        /// Replies dropped since the previous RepliesDropped frame on this connection.
        count: NonZeroU64,
    },
    /// The answer to a Ping.
    Pong {
        /// The Ping's nonce.
        nonce: u64,
    },
    /// Why the server is closing the connection; nothing follows it.
    Error {
        /// What went wrong.
        code: ErrorCode,
        /// Human-readable UTF-8, at most [`ERROR_DETAIL_MAX_BYTES`]; borrowed from the
        /// decoder's buffer when decoded.
        detail: &'detail str,
    },
}

impl ServerFrame<'_> {
    /// Its frame type.
    pub const fn frame_type(&self) -> FrameType {
        match self {
            ServerFrame::Welcome { .. } => FrameType::Welcome,
            ServerFrame::Reply { .. } => FrameType::Reply,
            ServerFrame::Throttle { .. } => FrameType::Throttle,
            ServerFrame::Pause { .. } => FrameType::Pause,
            ServerFrame::Resume => FrameType::Resume,
            ServerFrame::RepliesDropped { .. } => FrameType::RepliesDropped,
            ServerFrame::Pong { .. } => FrameType::Pong,
            ServerFrame::Error { .. } => FrameType::Error,
        }
    }

    /// Its encoded size, header included (an Error's detail counted as cut to
    /// [`ERROR_DETAIL_MAX_BYTES`]). Always within [`FrameLimit::MIN`].
    pub fn encoded_bytes(&self) -> usize {
        HEADER_BYTES
            + match self {
                ServerFrame::Error { detail, .. } => {
                    ERROR_FIXED_BYTES + cut_to_char_boundary(detail, ERROR_DETAIL_MAX_BYTES).len()
                }
                fixed => fixed.frame_type().body_bytes_range().0,
            }
    }

    /// Appends the frame to `out` and returns its size. An Error's detail longer than
    /// [`ERROR_DETAIL_MAX_BYTES`] is cut at the last character boundary within it. `out`
    /// grows at most once, by exactly the frame's size.
    pub fn encode(&self, out: &mut Vec<u8>) -> usize {
        self.encode_with_version(PROTOCOL_VERSION, out)
    }

    fn encode_with_version(&self, version: u8, out: &mut Vec<u8>) -> usize {
        let frame_bytes = self.encoded_bytes();
        out.reserve(frame_bytes);
        put_header(out, version, self.frame_type(), frame_bytes);
        match self {
            ServerFrame::Welcome {
                connection,
                frame_limit,
                send_buffer_replies,
            } => {
                out.extend_from_slice(&connection.0.to_le_bytes());
                out.extend_from_slice(&frame_limit.max_frame_bytes().to_le_bytes());
                out.extend_from_slice(&send_buffer_replies.get().to_le_bytes());
            }
            ServerFrame::Reply {
                message_id,
                outcome,
            } => {
                let fields = OutcomeFields::from_outcome(*outcome);
                out.extend_from_slice(&message_id.0.to_le_bytes());
                out.push(fields.outcome_code);
                out.push(fields.reason_code);
                out.extend_from_slice(&[0, 0]);
                out.extend_from_slice(&fields.retry_after_ns.to_le_bytes());
            }
            ServerFrame::Throttle { delay_ns } => out.extend_from_slice(&delay_ns.to_le_bytes()),
            ServerFrame::Pause { duration_ns } => {
                out.extend_from_slice(&duration_ns.to_le_bytes());
            }
            ServerFrame::Resume => {}
            ServerFrame::RepliesDropped { count } => {
                out.extend_from_slice(&count.get().to_le_bytes());
            }
            ServerFrame::Pong { nonce } => out.extend_from_slice(&nonce.to_le_bytes()),
            ServerFrame::Error { code, detail } => {
                out.extend_from_slice(&code.code().to_le_bytes());
                out.extend_from_slice(
                    cut_to_char_boundary(detail, ERROR_DETAIL_MAX_BYTES).as_bytes(),
                );
            }
        }
        frame_bytes
    }

    /// Decodes the body of a server frame whose header the caller has checked: the body
    /// length is in [`FrameType::body_bytes_range`]. Zero-copy: an Error's detail borrows
    /// `body`.
    fn decode_body(frame_type: FrameType, body: &[u8]) -> Result<ServerFrame<'_>, ProtocolError> {
        let mut reader = BodyReader::new(frame_type, body);
        let frame = match frame_type {
            FrameType::Welcome => {
                let connection = ConnectionId(reader.u64()?);
                let max_frame_bytes = reader.u32()?;
                let send_buffer_replies = reader.u32()?;
                ServerFrame::Welcome {
                    connection,
                    frame_limit: FrameLimit::new(max_frame_bytes).ok_or_else(|| {
                        reader.bad_field("max_frame_bytes", max_frame_bytes.into())
                    })?,
                    send_buffer_replies: NonZeroU32::new(send_buffer_replies).ok_or_else(|| {
                        reader.bad_field("send_buffer_replies", send_buffer_replies.into())
                    })?,
                }
            }
            FrameType::Reply => {
                let message_id = MessageId(reader.u64()?);
                let outcome_code = reader.u8()?;
                let reason_code = reader.u8()?;
                let reserved = reader.u16()?;
                let retry_after_ns = reader.u64()?;
                if reserved != 0 {
                    return Err(reader.bad_field("reserved", reserved.into()));
                }
                let outcome = OutcomeFields {
                    outcome_code,
                    reason_code,
                    retry_after_ns,
                }
                .to_outcome()?;
                ServerFrame::Reply {
                    message_id,
                    outcome,
                }
            }
            FrameType::Throttle => ServerFrame::Throttle {
                delay_ns: reader.u64()?,
            },
            FrameType::Pause => ServerFrame::Pause {
                duration_ns: reader.u64()?,
            },
            FrameType::Resume => ServerFrame::Resume,
            FrameType::RepliesDropped => {
                let count = reader.u64()?;
                ServerFrame::RepliesDropped {
                    count: NonZeroU64::new(count).ok_or_else(|| reader.bad_field("count", 0))?,
                }
            }
            FrameType::Pong => ServerFrame::Pong {
                nonce: reader.u64()?,
            },
            FrameType::Error => {
                let code = reader.u16()?;
                let code = ErrorCode::from_code(code)
                    .ok_or_else(|| reader.bad_field("code", code.into()))?;
                let detail = reader.rest();
                let detail = core::str::from_utf8(detail).map_err(|invalid| {
                    reader.bad_field("detail", (ERROR_FIXED_BYTES + invalid.valid_up_to()) as u64)
                })?;
                return Ok(ServerFrame::Error { code, detail });
            }
            client_frame => {
                return Err(ProtocolError::UnexpectedFrame {
                    frame_type: client_frame,
                    expected: "a server frame",
                })
            }
        };
        reader.finish()?;
        Ok(frame)
    }
}

/// Appends the Error frame a server sends for `error` before it closes the connection, and
/// returns its size: the error's code, and its description as the detail (cut to
/// [`ERROR_DETAIL_MAX_BYTES`]). For [`ProtocolError::UnsupportedVersion`] the header carries
/// the client's version (the header and the Error frame have the same layout in every
/// version, so the client can read it); every other frame carries [`PROTOCOL_VERSION`].
/// Allocates nothing beyond the growth of `out`.
pub fn encode_error_reply(error: &ProtocolError, out: &mut Vec<u8>) -> usize {
    let mut detail = DetailWriter::default();
    // `DetailWriter` never fails: it cuts what does not fit.
    let _ = fmt::write(&mut detail, format_args!("{error}"));
    let version = match error {
        ProtocolError::UnsupportedVersion { version } => *version,
        _ => PROTOCOL_VERSION,
    };
    ServerFrame::Error {
        code: error.code(),
        detail: detail.as_str(),
    }
    .encode_with_version(version, out)
}

/// Which side of a connection a [`Decoder`] reads: its frames, and the handshake rule
/// that orders them. Sealed: implemented by [`ClientToServer`] and [`ServerToClient`] only.
pub trait Direction: sealed::Sealed {
    /// The frames decoded in this direction, borrowing the decoder's buffer.
    type Frame<'body>;

    /// Checks that a frame of `frame_type` may come now, given whether the handshake is
    /// done, and returns whether it completes the handshake.
    fn check_sequence(frame_type: FrameType, handshake_done: bool) -> Result<bool, ProtocolError>;

    /// Decodes a body whose length the header checks have accepted.
    fn decode_body(frame_type: FrameType, body: &[u8]) -> Result<Self::Frame<'_>, ProtocolError>;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::ClientToServer {}
    impl Sealed for super::ServerToClient {}
}

/// What a server reads: [`ClientFrame`]s. The first must be Hello, and Hello only once.
#[derive(Clone, Copy, Debug)]
pub enum ClientToServer {}

/// What a client reads: [`ServerFrame`]s. The first must be Welcome or Error, and Welcome
/// only once.
#[derive(Clone, Copy, Debug)]
pub enum ServerToClient {}

impl Direction for ClientToServer {
    type Frame<'body> = ClientFrame<'body>;

    fn check_sequence(frame_type: FrameType, handshake_done: bool) -> Result<bool, ProtocolError> {
        let unexpected = |expected| ProtocolError::UnexpectedFrame {
            frame_type,
            expected,
        };
        match (frame_type, handshake_done) {
            (frame_type, _) if !frame_type.is_sent_by_client() => Err(unexpected("a client frame")),
            (FrameType::Hello, false) => Ok(true),
            (FrameType::Hello, true) => Err(unexpected("no second hello")),
            (_, false) => Err(unexpected("hello first")),
            (_, true) => Ok(false),
        }
    }

    fn decode_body(frame_type: FrameType, body: &[u8]) -> Result<ClientFrame<'_>, ProtocolError> {
        ClientFrame::decode_body(frame_type, body)
    }
}

impl Direction for ServerToClient {
    type Frame<'body> = ServerFrame<'body>;

    fn check_sequence(frame_type: FrameType, handshake_done: bool) -> Result<bool, ProtocolError> {
        let unexpected = |expected| ProtocolError::UnexpectedFrame {
            frame_type,
            expected,
        };
        match (frame_type, handshake_done) {
            (frame_type, _) if frame_type.is_sent_by_client() => Err(unexpected("a server frame")),
            (FrameType::Welcome, false) => Ok(true),
            (FrameType::Welcome, true) => Err(unexpected("no second welcome")),
            (FrameType::Error, _) | (_, true) => Ok(false),
            (_, false) => Err(unexpected("welcome or error first")),
        }
    }

    fn decode_body(frame_type: FrameType, body: &[u8]) -> Result<ServerFrame<'_>, ProtocolError> {
        ServerFrame::decode_body(frame_type, body)
    }
}

/// A streaming frame decoder for one connection, fed bytes as they arrive: a frame may
/// span several reads and one read may hold several frames. `Decoder<ClientToServer>` is
/// the server's, `Decoder<ServerToClient>` a client's.
///
/// It judges each frame by its 8-byte header (magic, version, type, size against the
/// [`FrameLimit`], body length for the type, order) before it waits for the body, so a bad
/// frame is refused without buffering it. After the first error it is spent: every later
/// call answers the same error and fed bytes are ignored, since the connection is to close.
///
/// Memory: it holds the bytes fed and not yet decoded; a caller that drains
/// [`Decoder::next_frame`] after each read holds at most one read plus one partial frame
/// (under the limit).
///
/// ```
/// use spillway::net::protocol::{ClientFrame, ClientToServer, Decoder, FrameLimit};
///
/// let mut wire = Vec::new();
/// ClientFrame::Hello.encode(FrameLimit::DEFAULT, &mut wire).unwrap();
/// ClientFrame::Ping { nonce: 9 }.encode(FrameLimit::DEFAULT, &mut wire).unwrap();
///
/// let mut decoder = Decoder::<ClientToServer>::new(FrameLimit::DEFAULT);
/// decoder.feed(&wire[..5]); // a read that ends inside the header
/// assert_eq!(decoder.next_frame(), Ok(None));
/// decoder.feed(&wire[5..]);
/// assert_eq!(decoder.next_frame(), Ok(Some(ClientFrame::Hello)));
/// assert_eq!(decoder.next_frame(), Ok(Some(ClientFrame::Ping { nonce: 9 })));
/// assert_eq!(decoder.next_frame(), Ok(None));
/// assert_eq!(decoder.finish(), Ok(()));
/// ```
#[derive(Debug)]
pub struct Decoder<D: Direction> {
    /// Bytes received and not yet decoded are `buffer[start..end]`; `buffer[end..]` is
    /// initialized space for the next read ([`Decoder::unfilled`]). `start <= end <=
    /// buffer.len()`.
    buffer: Vec<u8>,
    /// Offset of the first byte not yet decoded.
    start: usize,
    /// Offset one past the last byte received.
    end: usize,
    /// The largest frame accepted.
    limit: FrameLimit,
    /// Whether the handshake frame (Hello, or Welcome) has been decoded.
    handshake_done: bool,
    /// The first error, answered to every later call.
    failure: Option<ProtocolError>,
    /// Frames decoded so far: the number of the next frame, by which
    /// [`Decoder::frame_in_progress`] names the one arriving.
    frames_decoded: u64,
    direction: PhantomData<fn() -> D>,
}

impl<D: Direction> Decoder<D> {
    /// An empty decoder that accepts frames up to `limit`. Allocates nothing until fed.
    pub fn new(limit: FrameLimit) -> Self {
        Self {
            buffer: Vec::new(),
            start: 0,
            end: 0,
            limit,
            handshake_done: false,
            failure: None,
            frames_decoded: 0,
            direction: PhantomData,
        }
    }

    /// The largest frame it accepts.
    pub fn limit(&self) -> FrameLimit {
        self.limit
    }

    /// Appends bytes read from the connection. Ignored once the decoder has failed.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.failure.is_some() {
            return;
        }
        self.make_room(bytes.len());
        self.buffer[self.end..self.end + bytes.len()].copy_from_slice(bytes);
        self.end += bytes.len();
    }

    /// Space of at least `at_least_bytes` to read into directly, saving [`Decoder::feed`]'s
    /// copy; follow with [`Decoder::commit`] of the bytes read. The space is reused from
    /// read to read, so it is zeroed only when it grows.
    pub fn unfilled(&mut self, at_least_bytes: usize) -> &mut [u8] {
        self.make_room(at_least_bytes);
        &mut self.buffer[self.end..]
    }

    /// Takes `filled_bytes` bytes written at the front of [`Decoder::unfilled`] as received.
    /// Ignored once the decoder has failed.
    ///
    /// # Panics
    ///
    /// If `filled_bytes` is more than the last `unfilled` slice held (a caller's bug).
    pub fn commit(&mut self, filled_bytes: usize) {
        assert!(
            filled_bytes <= self.buffer.len() - self.end,
            "committed {filled_bytes} bytes, more than the unfilled space"
        );
        if self.failure.is_none() {
            self.end += filled_bytes;
        }
    }

    /// The next whole frame, `Ok(None)` when more bytes are needed, or the first violation.
    /// A decoded frame borrows the decoder until it is dropped.
    pub fn next_frame(&mut self) -> Result<Option<D::Frame<'_>>, ProtocolError> {
        if let Some(failure) = self.failure {
            return Err(failure);
        }
        let received = &self.buffer[self.start..self.end];
        let Some(header) = received.first_chunk::<HEADER_BYTES>() else {
            return Ok(None);
        };
        let (frame_type, body_bytes, completes_handshake) = match self.check_header(header) {
            Ok(checked) => checked,
            Err(error) => {
                self.failure = Some(error);
                return Err(error);
            }
        };
        let frame_bytes = HEADER_BYTES + body_bytes;
        if received.len() < frame_bytes {
            return Ok(None);
        }
        let body_start = self.start + HEADER_BYTES;
        self.start += frame_bytes;
        self.frames_decoded += 1;
        self.handshake_done |= completes_handshake;
        match D::decode_body(
            frame_type,
            &self.buffer[body_start..body_start + body_bytes],
        ) {
            Ok(frame) => Ok(Some(frame)),
            Err(error) => {
                self.failure = Some(error);
                Err(error)
            }
        }
    }

    /// Call when the peer has closed its side: `Ok` if the bytes stopped at a frame
    /// boundary, [`ProtocolError::Truncated`] if part of a frame was left, or the earlier
    /// failure.
    pub fn finish(&self) -> Result<(), ProtocolError> {
        if let Some(failure) = self.failure {
            return Err(failure);
        }
        match self.buffered_bytes() {
            0 => Ok(()),
            buffered_bytes => Err(ProtocolError::Truncated {
                buffered_bytes: buffered_bytes as u64,
            }),
        }
    }

    /// Bytes received and not yet decoded: whole frames not yet taken, then possibly the
    /// start of one still arriving.
    pub fn buffered_bytes(&self) -> usize {
        self.end - self.start
    }

    /// The frame that has begun to arrive and not finished, by its number (frames counted
    /// from 0 in the order they come): what the server's frame timeout times. `None` when
    /// the next frame to take is whole (or its header fails a check, which
    /// [`Decoder::next_frame`] will report), when nothing is held, and once the decoder has
    /// failed. The number tells one partial frame from the next: it changes when a frame
    /// completes and another begins, even within one read.
    pub fn frame_in_progress(&self) -> Option<u64> {
        if self.failure.is_some() {
            return None;
        }
        let received = &self.buffer[self.start..self.end];
        if received.is_empty() {
            return None;
        }
        let arriving = match received.first_chunk::<HEADER_BYTES>() {
            None => true,
            Some(header) => match self.check_header(header) {
                Ok((_, body_bytes, _)) => received.len() < HEADER_BYTES + body_bytes,
                Err(_) => false,
            },
        };
        arriving.then_some(self.frames_decoded)
    }

    /// Whether the handshake frame (Hello for a server, Welcome for a client) was decoded.
    pub fn handshake_done(&self) -> bool {
        self.handshake_done
    }

    /// The violation that spent the decoder, if any.
    pub fn failure(&self) -> Option<ProtocolError> {
        self.failure
    }

    /// Gives back buffer memory beyond the bytes held, for a connection gone idle after a
    /// large frame.
    pub fn shrink_to_fit(&mut self) {
        self.compact();
        self.buffer.truncate(self.end);
        self.buffer.shrink_to_fit();
    }

    /// The checks on a header, in the order `docs/PROTOCOL.md` gives: the frame's type,
    /// its body length, and whether it completes the handshake.
    fn check_header(
        &self,
        header: &[u8; HEADER_BYTES],
    ) -> Result<(FrameType, usize, bool), ProtocolError> {
        let [magic_0, magic_1, version, type_code, length @ ..] = *header;
        if [magic_0, magic_1] != MAGIC {
            return Err(ProtocolError::BadMagic {
                found: [magic_0, magic_1],
            });
        }
        if version != PROTOCOL_VERSION {
            return Err(ProtocolError::UnsupportedVersion { version });
        }
        let frame_type = FrameType::from_code(type_code)
            .ok_or(ProtocolError::UnknownFrameType { code: type_code })?;
        let body_bytes = u32::from_le_bytes(length);
        let frame_bytes = HEADER_BYTES as u64 + u64::from(body_bytes);
        if frame_bytes > u64::from(self.limit.max_frame_bytes()) {
            return Err(ProtocolError::FrameTooLarge {
                frame_bytes,
                max_frame_bytes: self.limit.max_frame_bytes(),
            });
        }
        // Within the limit, so it fits a `usize` on every supported target.
        let body_bytes_usize = body_bytes as usize;
        let (body_bytes_min, body_bytes_max) = frame_type.body_bytes_range();
        if body_bytes_usize < body_bytes_min || body_bytes_usize > body_bytes_max {
            return Err(ProtocolError::BadLength {
                frame_type,
                body_bytes,
            });
        }
        let completes_handshake = D::check_sequence(frame_type, self.handshake_done)?;
        Ok((frame_type, body_bytes_usize, completes_handshake))
    }

    /// Ensures `buffer[end..]` holds at least `wanted_bytes`: first by moving the undecoded
    /// bytes to the front, then by growing.
    fn make_room(&mut self, wanted_bytes: usize) {
        if self.buffer.len() - self.end >= wanted_bytes {
            return;
        }
        self.compact();
        let needed_bytes = self.end + wanted_bytes;
        if self.buffer.len() < needed_bytes {
            self.buffer.resize(needed_bytes, 0);
        }
    }

    /// Moves the undecoded bytes to the front of the buffer.
    fn compact(&mut self) {
        if self.start > 0 {
            self.buffer.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
    }
}

/// Appends a header for a frame of `frame_bytes` in all.
fn put_header(out: &mut Vec<u8>, version: u8, frame_type: FrameType, frame_bytes: usize) {
    // Frames are bounded by `FrameLimit::MAX` (checked by the encoders), far below u32::MAX.
    let body_bytes = (frame_bytes - HEADER_BYTES) as u32;
    out.extend_from_slice(&MAGIC);
    out.push(version);
    out.push(frame_type.code());
    out.extend_from_slice(&body_bytes.to_le_bytes());
}

/// `text` cut to at most `max_bytes`, at a character boundary.
fn cut_to_char_boundary(text: &str, max_bytes: usize) -> &str {
    if text.len() <= max_bytes {
        return text;
    }
    let mut end = max_bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Reads the fixed fields of a body in order. Every read checks the length, so a body
/// shorter than its fields is an error, never a panic (the header checks make that
/// unreachable, but decoding stays safe on its own).
struct BodyReader<'body> {
    frame_type: FrameType,
    body_bytes: usize,
    rest: &'body [u8],
}

impl<'body> BodyReader<'body> {
    fn new(frame_type: FrameType, body: &'body [u8]) -> Self {
        Self {
            frame_type,
            body_bytes: body.len(),
            rest: body,
        }
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], ProtocolError> {
        let (bytes, rest) = self
            .rest
            .split_first_chunk::<N>()
            .ok_or_else(|| self.bad_length())?;
        self.rest = rest;
        Ok(*bytes)
    }

    fn u8(&mut self) -> Result<u8, ProtocolError> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, ProtocolError> {
        self.array().map(u16::from_le_bytes)
    }

    fn u32(&mut self) -> Result<u32, ProtocolError> {
        self.array().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Result<u64, ProtocolError> {
        self.array().map(u64::from_le_bytes)
    }

    /// The bytes after the fixed fields.
    fn rest(&self) -> &'body [u8] {
        self.rest
    }

    /// Checks that no bytes are left over.
    fn finish(&self) -> Result<(), ProtocolError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(self.bad_length())
        }
    }

    fn bad_length(&self) -> ProtocolError {
        ProtocolError::BadLength {
            frame_type: self.frame_type,
            body_bytes: self.body_bytes as u32,
        }
    }

    fn bad_field(&self, field: &'static str, value: u64) -> ProtocolError {
        ProtocolError::BadField {
            frame_type: self.frame_type,
            field,
            value,
        }
    }
}

/// Formats an error's description into a fixed buffer, cutting at a character boundary
/// what does not fit in [`ERROR_DETAIL_MAX_BYTES`].
struct DetailWriter {
    bytes: [u8; ERROR_DETAIL_MAX_BYTES],
    /// Bytes written, in `0..=ERROR_DETAIL_MAX_BYTES`, always at a character boundary.
    len: usize,
    /// Whether some text was cut; nothing more is written after it, so the detail is a
    /// prefix of the description.
    cut: bool,
}

impl Default for DetailWriter {
    fn default() -> Self {
        Self {
            bytes: [0; ERROR_DETAIL_MAX_BYTES],
            len: 0,
            cut: false,
        }
    }
}

impl DetailWriter {
    fn as_str(&self) -> &str {
        // Only whole UTF-8 characters are ever copied in, so this never fails.
        core::str::from_utf8(&self.bytes[..self.len]).unwrap_or_default()
    }
}

impl fmt::Write for DetailWriter {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        if self.cut {
            return Ok(());
        }
        let fitting = cut_to_char_boundary(text, ERROR_DETAIL_MAX_BYTES - self.len);
        self.bytes[self.len..self.len + fitting.len()].copy_from_slice(fitting.as_bytes());
        self.len += fitting.len();
        self.cut = fitting.len() < text.len();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes from hex pairs separated by spaces or `|` (the notation of the worked examples
    /// in `docs/PROTOCOL.md`).
    fn hex(text: &str) -> Vec<u8> {
        text.split(|c: char| c.is_whitespace() || c == '|')
            .filter(|pair| !pair.is_empty())
            .map(|pair| u8::from_str_radix(pair, 16).unwrap())
            .collect()
    }

    fn encode_client(frame: ClientFrame<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        frame.encode(FrameLimit::DEFAULT, &mut out).unwrap();
        out
    }

    fn encode_server(frame: ServerFrame<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        frame.encode(&mut out);
        out
    }

    fn server_decoder() -> Decoder<ClientToServer> {
        Decoder::new(FrameLimit::DEFAULT)
    }

    /// A server decoder that has already taken the Hello.
    fn greeted_server_decoder() -> Decoder<ClientToServer> {
        let mut decoder = server_decoder();
        decoder.feed(&encode_client(ClientFrame::Hello));
        assert_eq!(decoder.next_frame(), Ok(Some(ClientFrame::Hello)));
        decoder
    }

    fn client_decoder() -> Decoder<ServerToClient> {
        Decoder::new(FrameLimit::DEFAULT)
    }

    fn welcome() -> ServerFrame<'static> {
        ServerFrame::Welcome {
            connection: ConnectionId(7),
            frame_limit: FrameLimit::DEFAULT,
            send_buffer_replies: NonZeroU32::new(1000).unwrap(),
        }
    }

    /// A client decoder that has already taken the Welcome.
    fn greeted_client_decoder() -> Decoder<ServerToClient> {
        let mut decoder = client_decoder();
        decoder.feed(&encode_server(welcome()));
        assert_eq!(decoder.next_frame(), Ok(Some(welcome())));
        decoder
    }

    fn header(version: u8, frame_type: u8, body_bytes: u32) -> Vec<u8> {
        let mut bytes = MAGIC.to_vec();
        bytes.push(version);
        bytes.push(frame_type);
        bytes.extend_from_slice(&body_bytes.to_le_bytes());
        bytes
    }

    const SUBMIT_EXAMPLE: &str = "53 57 01 02 15 00 00 00 | 2a 00 00 00 00 00 00 00 | 03 00 00 00 | 01 | 01 | 00 00 | 68 65 6c 6c 6f";

    fn submit_example() -> ClientFrame<'static> {
        ClientFrame::Submit(Submit {
            message_id: MessageId(42),
            tenant: TenantId(3),
            priority: Priority::P1,
            role: Role::Session,
            payload: b"hello",
        })
    }

    #[test]
    fn the_worked_examples_of_the_protocol_page_are_what_the_encoder_writes() {
        assert_eq!(
            encode_client(ClientFrame::Hello),
            hex("53 57 01 01 00 00 00 00")
        );
        assert_eq!(
            encode_server(welcome()),
            hex("53 57 01 81 10 00 00 00 | 07 00 00 00 00 00 00 00 | 00 00 01 00 | e8 03 00 00")
        );
        assert_eq!(encode_client(submit_example()), hex(SUBMIT_EXAMPLE));
        assert_eq!(
            encode_server(ServerFrame::Reply {
                message_id: MessageId(42),
                outcome: Outcome::Delivered,
            }),
            hex("53 57 01 82 14 00 00 00 | 2a 00 00 00 00 00 00 00 | 01 | 00 | 00 00 | 00 00 00 00 00 00 00 00")
        );
        assert_eq!(
            encode_server(ServerFrame::Reply {
                message_id: MessageId(42),
                outcome: Outcome::Refused {
                    reason: RefusalReason::RateLimited,
                    retry_after_ns: 2_000_000,
                },
            }),
            hex("53 57 01 82 14 00 00 00 | 2a 00 00 00 00 00 00 00 | 03 | 01 | 00 00 | 80 84 1e 00 00 00 00 00")
        );
        let mut out = Vec::new();
        encode_error_reply(&ProtocolError::BadMagic { found: *b"GE" }, &mut out);
        assert_eq!(
            &out[..10],
            hex("53 57 01 88 39 00 00 00 | 01 00").as_slice()
        );
        assert_eq!(
            core::str::from_utf8(&out[10..]).unwrap(),
            "bad magic [47, 45]: a frame starts with [53, 57] (\"SW\")"
        );
    }

    #[test]
    fn the_submit_example_decodes_to_its_fields() {
        let mut decoder = greeted_server_decoder();
        decoder.feed(&hex(SUBMIT_EXAMPLE));
        assert_eq!(decoder.next_frame(), Ok(Some(submit_example())));
        let Some(ClientFrame::Submit(submit)) = ({
            decoder.feed(&hex(SUBMIT_EXAMPLE));
            decoder.next_frame().unwrap()
        }) else {
            panic!("not a submit");
        };
        let message = submit.to_message(ConnectionId(9));
        assert_eq!(message.connection, ConnectionId(9));
        assert_eq!(message.id, MessageId(42));
        assert_eq!(message.tenant, TenantId(3));
        assert_eq!(message.priority, Priority::P1);
        assert_eq!(message.role, Role::Session);
        assert_eq!(message.payload, b"hello");
    }

    #[test]
    fn several_frames_in_one_read_and_one_frame_over_many_reads() {
        let frames = [
            ClientFrame::Hello,
            submit_example(),
            ClientFrame::Cancel {
                message_id: MessageId(42),
            },
            ClientFrame::Ping { nonce: u64::MAX },
        ];
        let wire: Vec<u8> = frames
            .iter()
            .flat_map(|frame| encode_client(*frame))
            .collect();

        let mut whole = server_decoder();
        whole.feed(&wire);
        for frame in frames {
            assert_eq!(whole.next_frame(), Ok(Some(frame)));
        }
        assert_eq!(whole.next_frame(), Ok(None));
        assert_eq!(whole.finish(), Ok(()));

        let mut byte_by_byte = server_decoder();
        let mut decoded = Vec::new();
        for byte in &wire {
            byte_by_byte.feed(core::slice::from_ref(byte));
            while let Some(frame) = byte_by_byte.next_frame().unwrap() {
                decoded.push(encode_client(frame));
            }
        }
        assert_eq!(decoded.concat(), wire);
        assert_eq!(byte_by_byte.buffered_bytes(), 0);
    }

    #[test]
    fn reading_into_unfilled_space_decodes_like_feed() {
        let wire = [encode_client(ClientFrame::Hello), hex(SUBMIT_EXAMPLE)].concat();
        let mut decoder = server_decoder();
        for chunk in wire.chunks(3) {
            let space = decoder.unfilled(3);
            assert!(space.len() >= 3);
            space[..chunk.len()].copy_from_slice(chunk);
            decoder.commit(chunk.len());
        }
        assert_eq!(decoder.next_frame(), Ok(Some(ClientFrame::Hello)));
        assert_eq!(decoder.next_frame(), Ok(Some(submit_example())));
        assert_eq!(decoder.next_frame(), Ok(None));
        decoder.shrink_to_fit();
        assert_eq!(decoder.finish(), Ok(()));
    }

    #[test]
    #[should_panic(expected = "more than the unfilled space")]
    fn committing_more_than_the_unfilled_space_is_a_caller_bug() {
        let mut decoder = server_decoder();
        let unfilled_bytes = decoder.unfilled(4).len();
        decoder.commit(unfilled_bytes + 1);
    }

    #[test]
    fn every_server_frame_round_trips() {
        let mut frames = vec![
            welcome(),
            ServerFrame::Throttle {
                delay_ns: 250_000_000,
            },
            ServerFrame::Pause {
                duration_ns: 50_000_000,
            },
            ServerFrame::Resume,
            ServerFrame::RepliesDropped {
                count: NonZeroU64::new(3).unwrap(),
            },
            ServerFrame::Pong { nonce: 77 },
            ServerFrame::Error {
                code: ErrorCode::ShuttingDown,
                detail: "bye ✓",
            },
        ];
        let outcomes = [Outcome::Delivered, Outcome::Cancelled]
            .into_iter()
            .chain(FailureReason::ALL.map(|reason| Outcome::Failed { reason }))
            .chain(RefusalReason::ALL.map(|reason| Outcome::Refused {
                reason,
                retry_after_ns: 123,
            }))
            .chain(ShedReason::ALL.map(|reason| Outcome::Shed { reason }))
            .chain(DropReason::ALL.map(|reason| Outcome::Dropped { reason }));
        frames.extend(outcomes.map(|outcome| ServerFrame::Reply {
            message_id: MessageId(5),
            outcome,
        }));
        let mut decoder = client_decoder();
        for frame in frames {
            let wire = encode_server(frame);
            assert_eq!(wire.len(), frame.encoded_bytes());
            decoder.feed(&wire);
            assert_eq!(decoder.next_frame(), Ok(Some(frame)));
        }
        assert_eq!(decoder.finish(), Ok(()));
    }

    #[test]
    fn every_code_round_trips_and_is_unique() {
        fn check<T: WireCode + PartialEq + core::fmt::Debug>(all: &[T]) {
            let mut seen = std::collections::HashSet::new();
            for &value in all {
                assert!(seen.insert(value.wire_code()), "{value:?} reuses a code");
                assert_eq!(T::from_wire_code(value.wire_code()), Some(value));
            }
            let unknown = (0..=u8::MAX)
                .filter(|code| T::from_wire_code(*code).is_none())
                .count();
            assert_eq!(unknown, 256 - all.len());
        }
        check(&Priority::ALL);
        check(&Role::ALL);
        check(&FailureReason::ALL);
        check(&RefusalReason::ALL);
        check(&ShedReason::ALL);
        check(&DropReason::ALL);
        for frame_type in FrameType::ALL {
            assert_eq!(FrameType::from_code(frame_type.code()), Some(frame_type));
        }
        assert_eq!(
            (0..=u8::MAX).filter_map(FrameType::from_code).count(),
            FrameType::ALL.len()
        );
        for (index, code) in ErrorCode::ALL.into_iter().enumerate() {
            assert_eq!(
                usize::from(code.code()),
                index + 1,
                "{code} is out of order"
            );
            assert_eq!(ErrorCode::from_code(code.code()), Some(code));
        }
        assert_eq!(ErrorCode::from_code(0), None);
        assert_eq!(ErrorCode::from_code(13), None);
    }

    #[test]
    fn a_bad_header_is_refused_from_its_eight_bytes() {
        let cases = [
            (
                b"GET / HT".to_vec(),
                ProtocolError::BadMagic { found: *b"GE" },
            ),
            (
                header(2, 0x01, 0),
                ProtocolError::UnsupportedVersion { version: 2 },
            ),
            (
                header(1, 0x05, 0),
                ProtocolError::UnknownFrameType { code: 0x05 },
            ),
            (
                header(1, 0x00, 0),
                ProtocolError::UnknownFrameType { code: 0x00 },
            ),
            (
                header(1, 0x02, u32::MAX),
                ProtocolError::FrameTooLarge {
                    frame_bytes: u64::from(u32::MAX) + 8,
                    max_frame_bytes: 65_536,
                },
            ),
            (
                header(1, 0x01, 1),
                ProtocolError::BadLength {
                    frame_type: FrameType::Hello,
                    body_bytes: 1,
                },
            ),
            (
                header(1, 0x02, 15),
                ProtocolError::BadLength {
                    frame_type: FrameType::Submit,
                    body_bytes: 15,
                },
            ),
            (
                header(1, 0x04, 9),
                ProtocolError::BadLength {
                    frame_type: FrameType::Ping,
                    body_bytes: 9,
                },
            ),
            (
                header(1, 0x02, 16),
                ProtocolError::UnexpectedFrame {
                    frame_type: FrameType::Submit,
                    expected: "hello first",
                },
            ),
            (
                header(1, 0x82, 20),
                ProtocolError::UnexpectedFrame {
                    frame_type: FrameType::Reply,
                    expected: "a client frame",
                },
            ),
        ];
        for (bytes, expected) in cases {
            let mut decoder = server_decoder();
            decoder.feed(&bytes[..7]);
            assert_eq!(decoder.next_frame(), Ok(None), "{expected}");
            decoder.feed(&bytes[7..]);
            assert_eq!(decoder.next_frame(), Err(expected));
            assert_eq!(decoder.buffered_bytes(), 8, "the body is never awaited");
        }
    }

    #[test]
    fn the_frame_limit_is_checked_against_header_plus_body() {
        let limit = FrameLimit::new(1024).unwrap();
        assert_eq!(limit.max_payload_bytes(), 1000);
        let payload = vec![0xAB; 1000];
        let submit = |payload| {
            ClientFrame::Submit(Submit {
                message_id: MessageId(1),
                tenant: TenantId(0),
                priority: Priority::P0,
                role: Role::Default,
                payload,
            })
        };
        let mut wire = Vec::new();
        assert_eq!(submit(&payload[..]).encode(limit, &mut wire), Ok(1024));
        assert_eq!(
            submit(&[0; 1001][..]).encode(limit, &mut Vec::new()),
            Err(FrameTooLarge {
                frame_bytes: 1025,
                max_frame_bytes: 1024,
            })
        );
        let mut decoder = Decoder::<ClientToServer>::new(limit);
        decoder.feed(&encode_client(ClientFrame::Hello));
        decoder.feed(&wire);
        assert_eq!(decoder.next_frame(), Ok(Some(ClientFrame::Hello)));
        assert_eq!(decoder.next_frame(), Ok(Some(submit(&payload[..]))));

        let mut decoder = Decoder::<ClientToServer>::new(limit);
        decoder.feed(&encode_client(ClientFrame::Hello));
        decoder.feed(&header(1, 0x02, 1017));
        assert_eq!(decoder.next_frame(), Ok(Some(ClientFrame::Hello)));
        assert_eq!(
            decoder.next_frame(),
            Err(ProtocolError::FrameTooLarge {
                frame_bytes: 1025,
                max_frame_bytes: 1024,
            })
        );
    }

    #[test]
    fn frame_limits_outside_their_range_cannot_be_made() {
        assert_eq!(FrameLimit::new(511), None);
        assert_eq!(FrameLimit::new(512), Some(FrameLimit::MIN));
        assert_eq!(FrameLimit::new(16 * 1024 * 1024), Some(FrameLimit::MAX));
        assert_eq!(FrameLimit::new(16 * 1024 * 1024 + 1), None);
        assert_eq!(FrameLimit::default().max_frame_bytes(), 65_536);
        assert_eq!(FrameLimit::DEFAULT.max_payload_bytes(), 65_512);
    }

    #[test]
    fn bad_fields_of_a_submit_are_named() {
        let cases = [
            (12, 4, "priority", 4),
            (13, 6, "role", 6),
            (14, 1, "reserved", 1),
            (15, 1, "reserved", 256),
        ];
        for (offset, value, field, reported) in cases {
            let mut wire = hex(SUBMIT_EXAMPLE);
            wire[HEADER_BYTES + offset] = value;
            let mut decoder = greeted_server_decoder();
            decoder.feed(&wire);
            assert_eq!(
                decoder.next_frame(),
                Err(ProtocolError::BadField {
                    frame_type: FrameType::Submit,
                    field,
                    value: reported,
                })
            );
        }
    }

    #[test]
    fn bad_fields_of_server_frames_are_named() {
        let reply = |outcome: u8, reason: u8, reserved: u8, retry: u8| {
            let mut wire = header(1, 0x82, 20);
            wire.extend_from_slice(&5u64.to_le_bytes());
            wire.extend_from_slice(&[outcome, reason, reserved, 0, retry, 0, 0, 0, 0, 0, 0, 0]);
            wire
        };
        let welcome = |max_frame_bytes: u32, send_buffer_replies: u32| {
            let mut wire = header(1, 0x81, 16);
            wire.extend_from_slice(&7u64.to_le_bytes());
            wire.extend_from_slice(&max_frame_bytes.to_le_bytes());
            wire.extend_from_slice(&send_buffer_replies.to_le_bytes());
            wire
        };
        let with_body = |frame_type: u8, body: &[u8]| {
            [header(1, frame_type, body.len() as u32), body.to_vec()].concat()
        };
        let cases = [
            (reply(0, 0, 0, 0), FrameType::Reply, "outcome", 0),
            (reply(7, 0, 0, 0), FrameType::Reply, "outcome", 7),
            (reply(1, 1, 0, 0), FrameType::Reply, "reason", 1),
            (reply(5, 2, 0, 0), FrameType::Reply, "reason", 2),
            (reply(2, 0, 0, 0), FrameType::Reply, "reason", 0),
            (reply(2, 3, 0, 0), FrameType::Reply, "reason", 3),
            (reply(3, 11, 0, 0), FrameType::Reply, "reason", 11),
            (reply(4, 2, 0, 0), FrameType::Reply, "reason", 2),
            (reply(6, 4, 0, 0), FrameType::Reply, "reason", 4),
            (reply(1, 0, 0, 9), FrameType::Reply, "retry_after_ns", 9),
            (reply(6, 1, 0, 9), FrameType::Reply, "retry_after_ns", 9),
            (reply(1, 0, 1, 0), FrameType::Reply, "reserved", 1),
            (welcome(511, 1), FrameType::Welcome, "max_frame_bytes", 511),
            (
                welcome(65_536, 0),
                FrameType::Welcome,
                "send_buffer_replies",
                0,
            ),
            (
                with_body(0x86, &[0; 8]),
                FrameType::RepliesDropped,
                "count",
                0,
            ),
            (with_body(0x88, &[0, 0]), FrameType::Error, "code", 0),
            (with_body(0x88, &[13, 0]), FrameType::Error, "code", 13),
            (
                with_body(0x88, &[1, 0, b'o', b'k', 0xFF]),
                FrameType::Error,
                "detail",
                4,
            ),
        ];
        for (wire, frame_type, field, value) in cases {
            let mut decoder = if frame_type == FrameType::Welcome {
                client_decoder()
            } else {
                greeted_client_decoder()
            };
            decoder.feed(&wire);
            assert_eq!(
                decoder.next_frame(),
                Err(ProtocolError::BadField {
                    frame_type,
                    field,
                    value,
                }),
                "{frame_type} {field}"
            );
        }
    }

    #[test]
    fn frames_out_of_sequence_are_unexpected() {
        let mut decoder = greeted_server_decoder();
        decoder.feed(&encode_client(ClientFrame::Hello));
        assert_eq!(
            decoder.next_frame(),
            Err(ProtocolError::UnexpectedFrame {
                frame_type: FrameType::Hello,
                expected: "no second hello",
            })
        );

        let mut decoder = client_decoder();
        decoder.feed(&encode_server(ServerFrame::Resume));
        assert_eq!(
            decoder.next_frame(),
            Err(ProtocolError::UnexpectedFrame {
                frame_type: FrameType::Resume,
                expected: "welcome or error first",
            })
        );

        let mut decoder = greeted_client_decoder();
        assert!(decoder.handshake_done());
        decoder.feed(&encode_server(welcome()));
        assert_eq!(
            decoder.next_frame(),
            Err(ProtocolError::UnexpectedFrame {
                frame_type: FrameType::Welcome,
                expected: "no second welcome",
            })
        );

        let mut decoder = client_decoder();
        decoder.feed(&encode_client(ClientFrame::Hello));
        assert_eq!(
            decoder.next_frame(),
            Err(ProtocolError::UnexpectedFrame {
                frame_type: FrameType::Hello,
                expected: "a server frame",
            })
        );

        // A server may refuse a connection with an Error before any Welcome.
        let mut decoder = client_decoder();
        let refusal = ServerFrame::Error {
            code: ErrorCode::TooManyConnections,
            detail: "",
        };
        decoder.feed(&encode_server(refusal));
        assert_eq!(decoder.next_frame(), Ok(Some(refusal)));
        assert!(!decoder.handshake_done());
    }

    #[test]
    fn a_frame_cut_short_is_truncated_at_close_and_held_open_until_then() {
        let wire = hex(SUBMIT_EXAMPLE);
        let mut decoder = greeted_server_decoder();
        decoder.feed(&wire[..wire.len() - 1]);
        assert_eq!(decoder.next_frame(), Ok(None));
        assert_eq!(decoder.buffered_bytes(), wire.len() - 1);
        assert_eq!(
            decoder.finish(),
            Err(ProtocolError::Truncated {
                buffered_bytes: wire.len() as u64 - 1,
            })
        );
        assert_eq!(decoder.finish().unwrap_err().code(), ErrorCode::Truncated);

        let mut decoder = server_decoder();
        decoder.feed(&[0x53]);
        assert_eq!(
            decoder.finish(),
            Err(ProtocolError::Truncated { buffered_bytes: 1 })
        );
    }

    #[test]
    fn after_an_error_the_decoder_is_spent() {
        let mut decoder = server_decoder();
        decoder.feed(b"\x00\x00garbage");
        let error = ProtocolError::BadMagic { found: [0, 0] };
        assert_eq!(decoder.next_frame(), Err(error));
        decoder.feed(&encode_client(ClientFrame::Hello));
        assert_eq!(
            decoder.buffered_bytes(),
            9,
            "bytes after a failure are not kept"
        );
        assert_eq!(decoder.next_frame(), Err(error));
        assert_eq!(decoder.finish(), Err(error));
        assert_eq!(decoder.failure(), Some(error));
    }

    #[test]
    fn error_replies_carry_the_code_and_a_bounded_detail() {
        let errors = [
            ProtocolError::BadMagic { found: [1, 2] },
            ProtocolError::UnsupportedVersion { version: 9 },
            ProtocolError::UnknownFrameType { code: 0x7F },
            ProtocolError::FrameTooLarge {
                frame_bytes: 1 << 32,
                max_frame_bytes: 65_536,
            },
            ProtocolError::BadLength {
                frame_type: FrameType::Cancel,
                body_bytes: 3,
            },
            ProtocolError::BadField {
                frame_type: FrameType::Submit,
                field: "role",
                value: 200,
            },
            ProtocolError::UnexpectedFrame {
                frame_type: FrameType::Hello,
                expected: "no second hello",
            },
            ProtocolError::Truncated { buffered_bytes: 3 },
        ];
        for error in errors {
            let mut out = Vec::new();
            let written = encode_error_reply(&error, &mut out);
            assert_eq!(written, out.len());
            let version = match error {
                ProtocolError::UnsupportedVersion { version } => version,
                _ => PROTOCOL_VERSION,
            };
            assert_eq!(out[2], version);
            if version == PROTOCOL_VERSION {
                let mut decoder = client_decoder();
                decoder.feed(&out);
                let detail = error.to_string();
                assert_eq!(
                    decoder.next_frame(),
                    Ok(Some(ServerFrame::Error {
                        code: error.code(),
                        detail: &detail,
                    }))
                );
            } else {
                assert_eq!(
                    &out[3..],
                    &encode_server(ServerFrame::Error {
                        code: ErrorCode::UnsupportedVersion,
                        detail: &error.to_string(),
                    })[3..]
                );
            }
        }
    }

    #[test]
    fn a_long_detail_is_cut_at_a_character_boundary() {
        let long = "é".repeat(200); // 400 bytes of 2-byte characters
        let frame = ServerFrame::Error {
            code: ErrorCode::Disconnected,
            detail: &long,
        };
        let wire = encode_server(frame);
        assert_eq!(wire.len(), frame.encoded_bytes());
        assert_eq!(wire.len(), HEADER_BYTES + 2 + ERROR_DETAIL_MAX_BYTES);
        let mut decoder = client_decoder();
        decoder.feed(&wire);
        assert_eq!(
            decoder.next_frame(),
            Ok(Some(ServerFrame::Error {
                code: ErrorCode::Disconnected,
                detail: &long[..ERROR_DETAIL_MAX_BYTES],
            }))
        );
        // 3-byte characters: 256 is not a boundary, so the cut falls at 255.
        let long = "€".repeat(100);
        assert_eq!(
            cut_to_char_boundary(&long, ERROR_DETAIL_MAX_BYTES).len(),
            255
        );

        let mut writer = DetailWriter::default();
        let _ = fmt::write(&mut writer, format_args!("{}{}", "€".repeat(85), "€x"));
        assert_eq!(
            writer.as_str(),
            "€".repeat(85),
            "nothing is written after a cut"
        );
    }
}
