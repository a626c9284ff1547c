//! The frame header and the limits: the magic, the [`ProtocolVersion`]s, the header's
//! layout, the [`FrameLimit`], the body sizes of the fixed-size frames, and the
//! [`FrameType`] codes.

use core::fmt;

use crate::config::{
    FRAME_BYTES_DEFAULT, FRAME_BYTES_MAX, FRAME_BYTES_MIN, REPLY_FRAME_FIXED_BYTES,
};

/// The first two bytes of every frame: ASCII `SW`.
pub const MAGIC: [u8; 2] = *b"SW";

/// The newest protocol version, the one encoders write unless told another: the code of
/// [`ProtocolVersion::LATEST`].
///
/// ```
/// use spillway::net::protocol::{ClientFrame, FrameLimit, ProtocolVersion, PROTOCOL_VERSION};
///
/// assert_eq!(PROTOCOL_VERSION, 2);
/// assert_eq!(ProtocolVersion::from_code(PROTOCOL_VERSION), Some(ProtocolVersion::LATEST));
/// // The byte after the magic of every frame an encoder writes unless told another.
/// let mut hello = Vec::new();
/// ClientFrame::Hello.encode(FrameLimit::DEFAULT, &mut hello).unwrap();
/// assert_eq!(hello, [0x53, 0x57, PROTOCOL_VERSION, 0x01, 0, 0, 0, 0]);
/// ```
pub const PROTOCOL_VERSION: u8 = ProtocolVersion::LATEST.code();

/// A version of the protocol, carried in every header. A connection speaks the version of
/// its Hello throughout: the server answers in the client's version.
///
/// The versions differ in one frame only: a version-2 Reply carries the handler's response
/// (for `delivered`) or its error text (for `failed`) after the fields of a version-1 Reply,
/// which has none. Every other frame has the same layout in both.
///
/// ```
/// use spillway::net::protocol::{ClientFrame, FrameLimit, ProtocolVersion};
///
/// assert_eq!(ProtocolVersion::ALL, [ProtocolVersion::V1, ProtocolVersion::V2]);
/// assert_eq!(ProtocolVersion::LATEST, ProtocolVersion::V2);
/// for version in ProtocolVersion::ALL {
///     // The header's version byte, and back.
///     assert_eq!(ProtocolVersion::from_code(version.code()), Some(version));
///     let mut hello = Vec::new();
///     ClientFrame::Hello.encode_in(version, FrameLimit::DEFAULT, &mut hello).unwrap();
///     assert_eq!(hello[2], version.code());
///     assert_eq!(version.to_string(), version.code().to_string());
/// }
/// assert_eq!(ProtocolVersion::from_code(3), None);
/// assert!(!ProtocolVersion::V1.replies_carry_data());
/// assert!(ProtocolVersion::V2.replies_carry_data());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProtocolVersion {
    /// Version 1: Replies carry the outcome only.
    V1,
    /// Version 2: Replies also carry the response or the error detail.
    V2,
}

impl ProtocolVersion {
    /// Every version, oldest first.
    ///
    /// See the example on [`ProtocolVersion`].
    pub const ALL: [ProtocolVersion; 2] = [ProtocolVersion::V1, ProtocolVersion::V2];
    /// The newest version.
    ///
    /// See the example on [`ProtocolVersion`].
    pub const LATEST: ProtocolVersion = ProtocolVersion::V2;

    /// The header's version byte.
    ///
    /// See the example on [`ProtocolVersion`].
    pub const fn code(self) -> u8 {
        match self {
            ProtocolVersion::V1 => 1,
            ProtocolVersion::V2 => 2,
        }
    }

    /// The version of a header's byte, or `None` for one this module does not speak.
    ///
    /// See the example on [`ProtocolVersion`].
    pub const fn from_code(code: u8) -> Option<ProtocolVersion> {
        match code {
            1 => Some(ProtocolVersion::V1),
            2 => Some(ProtocolVersion::V2),
            _ => None,
        }
    }

    /// Whether its Replies carry a response or an error detail (version 2 on).
    ///
    /// See the example on [`ProtocolVersion`].
    pub const fn replies_carry_data(self) -> bool {
        matches!(self, ProtocolVersion::V2)
    }
}

impl fmt::Display for ProtocolVersion {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}", self.code())
    }
}

/// Size of the fixed header that starts every frame.
pub const HEADER_BYTES: usize = 8;

/// Size of a Submit body before its payload: message id, tenant, priority, role, reserved.
pub const SUBMIT_FIXED_BYTES: usize = 16;

/// The most bytes of UTF-8 text an Error frame's detail may hold. The encoder cuts a
/// longer detail at the last character boundary within this bound.
pub const ERROR_DETAIL_MAX_BYTES: usize = 256;

/// Size of an Error body before its detail: the `u16` error code.
pub(super) const ERROR_FIXED_BYTES: usize = 2;

/// Body sizes of the fixed-size frames.
pub(super) const CANCEL_BODY_BYTES: usize = 8;
pub(super) const PING_BODY_BYTES: usize = 8;
pub(super) const WELCOME_BODY_BYTES: usize = 16;
pub(super) const REPLY_BODY_BYTES: usize = 20;
pub(super) const THROTTLE_BODY_BYTES: usize = 8;
pub(super) const PAUSE_BODY_BYTES: usize = 8;
pub(super) const REPLIES_DROPPED_BODY_BYTES: usize = 8;
pub(super) const PONG_BODY_BYTES: usize = 8;

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

    /// The longest response a version-2 Reply can carry under this limit: the limit less
    /// the header and the Reply's fixed fields.
    ///
    /// ```
    /// use spillway::message::MessageId;
    /// use spillway::net::protocol::{FrameLimit, ProtocolVersion, ServerFrame};
    /// use spillway::outcome::Outcome;
    ///
    /// assert_eq!(FrameLimit::DEFAULT.max_response_bytes(), 65_536 - 28);
    /// let limit = FrameLimit::new(1024).unwrap();
    /// assert_eq!(limit.max_response_bytes(), 996);
    /// // A Reply with the longest response fills the frame limit exactly.
    /// let response = vec![b'z'; limit.max_response_bytes() as usize];
    /// let reply = ServerFrame::Reply {
    ///     message_id: MessageId(1),
    ///     outcome: Outcome::Delivered,
    ///     response: &response,
    ///     detail: "",
    /// };
    /// assert_eq!(reply.encoded_bytes_in(ProtocolVersion::V2), 1024);
    /// ```
    pub const fn max_response_bytes(self) -> u32 {
        self.max_frame_bytes - REPLY_FRAME_FIXED_BYTES
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
// The engine's response limit is checked against the frame limit with this sum.
const _: () = assert!(HEADER_BYTES + REPLY_BODY_BYTES == REPLY_FRAME_FIXED_BYTES as usize);
// A failed Reply with the longest detail fits under the smallest limit.
const _: () = assert!(
    HEADER_BYTES + REPLY_BODY_BYTES + ERROR_DETAIL_MAX_BYTES
        <= FrameLimit::MIN.max_frame_bytes as usize
);
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

    /// The frame type of `code`, or `None` for a code no frame has (the same codes in every
    /// version).
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

    /// The body lengths this frame type may have in `version`, smallest and largest. A
    /// Submit's largest, and a version-2 Reply's, is bounded by the [`FrameLimit`] instead.
    ///
    /// ```
    /// use spillway::net::protocol::{FrameType, ProtocolVersion};
    ///
    /// let (v1, v2) = (ProtocolVersion::V1, ProtocolVersion::V2);
    /// assert_eq!(FrameType::Hello.body_bytes_range(v2), (0, 0));
    /// assert_eq!(FrameType::Welcome.body_bytes_range(v2), (16, 16));
    /// // A Reply has 20 bytes of fixed fields; only in version 2 may data follow them.
    /// assert_eq!(FrameType::Reply.body_bytes_range(v1), (20, 20));
    /// assert_eq!(FrameType::Reply.body_bytes_range(v2), (20, usize::MAX));
    /// // An Error: its 2-byte code, then up to 256 bytes of detail, in either version.
    /// assert_eq!(FrameType::Error.body_bytes_range(v1), (2, 258));
    /// ```
    pub const fn body_bytes_range(self, version: ProtocolVersion) -> (usize, usize) {
        match self {
            FrameType::Hello | FrameType::Resume => (0, 0),
            FrameType::Submit => (SUBMIT_FIXED_BYTES, usize::MAX),
            FrameType::Cancel => (CANCEL_BODY_BYTES, CANCEL_BODY_BYTES),
            FrameType::Ping => (PING_BODY_BYTES, PING_BODY_BYTES),
            FrameType::Welcome => (WELCOME_BODY_BYTES, WELCOME_BODY_BYTES),
            FrameType::Reply if version.replies_carry_data() => (REPLY_BODY_BYTES, usize::MAX),
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

/// Appends a header for a frame of `frame_bytes` in all.
pub(super) fn put_header(
    out: &mut Vec<u8>,
    version: u8,
    frame_type: FrameType,
    frame_bytes: usize,
) {
    // Frames are bounded by `FrameLimit::MAX` (checked by the encoders), far below u32::MAX.
    let body_bytes = (frame_bytes - HEADER_BYTES) as u32;
    out.extend_from_slice(&MAGIC);
    out.push(version);
    out.push(frame_type.code());
    out.extend_from_slice(&body_bytes.to_le_bytes());
}
