//! What goes wrong: the [`ErrorCode`] an Error frame carries, the [`ProtocolError`] a
//! decoder finds, and the [`FrameTooLarge`] an encoder refuses.

use core::fmt;

use super::header::FrameType;
#[cfg(doc)]
use super::{Decoder, FrameLimit, MAGIC};

/// The code an Error frame carries: why the server is closing the connection. Codes 1 to 8
/// name a [`ProtocolError`]; 9 to 12 are decided by the server, not the decoder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// 1: the header did not start with [`MAGIC`].
    BadMagic,
    /// 2: the header's version is not one this end speaks, or not the connection's.
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
    /// 12: the server cut the connection by policy: a reader too slow for its send buffer
    /// (when the server disconnects unhealthy readers,
    /// [`EgressConfig::disconnect_unhealthy`](crate::config::EgressConfig::disconnect_unhealthy)).
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

    /// The error code of `code`, or `None` for a code no version defines.
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
    /// The header's version is not one this end speaks
    /// ([`ProtocolVersion`](super::ProtocolVersion)), or not the connection's: a connection
    /// keeps the version of its handshake (a client takes an Error frame in any version).
    #[error(
        "unsupported protocol version {version}: this end speaks version 1 or 2, and a \
         connection keeps the version of its hello"
    )]
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
