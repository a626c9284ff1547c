//! The frames and their bodies: what a client sends ([`ClientFrame`], with its [`Submit`]),
//! what the server sends ([`ServerFrame`]), how each is encoded, and how a body whose header
//! the [`Decoder`](super::Decoder) has checked is decoded.

use core::fmt;
use core::num::{NonZeroU32, NonZeroU64};

use crate::message::{Bytes, ConnectionId, Message, MessageId, Priority, Role, TenantId};
use crate::outcome::{ErrorDetail, Outcome};

use super::codes::{OutcomeFields, WireCode};
use super::errors::{ErrorCode, FrameTooLarge, ProtocolError};
use super::header::{
    put_header, FrameLimit, FrameType, ProtocolVersion, CANCEL_BODY_BYTES, ERROR_DETAIL_MAX_BYTES,
    ERROR_FIXED_BYTES, HEADER_BYTES, PING_BODY_BYTES, REPLY_BODY_BYTES, SUBMIT_FIXED_BYTES,
};

// A handler's error text always fits a Reply's detail whole.
const _: () = assert!(ErrorDetail::MAX_BYTES == ERROR_DETAIL_MAX_BYTES);

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
        self.to_message_in(connection, None)
    }

    /// The engine message for this submission on `connection`, its payload taken from
    /// `shared` without a copy when the payload lies in it (as it does when `shared` is the
    /// chunk [`Decoder::next_shared_frame`](super::Decoder::next_shared_frame) gave with
    /// this frame); copied otherwise. A shared payload keeps the whole of `shared`'s
    /// buffer alive until the message, and every clone of its payload, is dropped.
    ///
    /// ```
    /// use spillway::message::{Bytes, ConnectionId, MessageId, Priority, Role, TenantId};
    /// use spillway::net::protocol::Submit;
    ///
    /// // A read buffer the payload lies in, as in a decoder's shared chunk.
    /// let chunk = Bytes::from_static(b"..hello..");
    /// let submit = Submit {
    ///     message_id: MessageId(42),
    ///     tenant: TenantId(3),
    ///     priority: Priority::P1,
    ///     role: Role::Session,
    ///     payload: &chunk[2..7],
    /// };
    /// let message = submit.to_message_in(ConnectionId(7), Some(&chunk));
    /// assert_eq!((message.id, message.tenant), (MessageId(42), TenantId(3)));
    /// assert_eq!(&message.payload[..], b"hello");
    /// // The payload shares the chunk's memory; without the chunk it is a copy.
    /// assert!(chunk.as_ptr_range().contains(&message.payload.as_ptr()));
    /// let copied = submit.to_message_in(ConnectionId(7), None);
    /// assert!(!chunk.as_ptr_range().contains(&copied.payload.as_ptr()));
    /// ```
    pub fn to_message_in(&self, connection: ConnectionId, shared: Option<&Bytes>) -> Message {
        let payload = match shared {
            Some(shared) if lies_within(self.payload, shared) => shared.slice_ref(self.payload),
            _ => Bytes::copy_from_slice(self.payload),
        };
        Message::new(connection, self.message_id)
            .with_tenant(self.tenant)
            .with_role(self.role)
            .with_priority(self.priority)
            .with_payload(payload)
    }
}

/// Whether `part` is a part of `whole`'s memory (or empty), as [`Bytes::slice_ref`] needs.
fn lies_within(part: &[u8], whole: &[u8]) -> bool {
    let whole_range = whole.as_ptr_range();
    let part_range = part.as_ptr_range();
    part.is_empty() || (part_range.start >= whole_range.start && part_range.end <= whole_range.end)
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

    /// Appends the frame in the newest version ([`ProtocolVersion::LATEST`]) to `out`; see
    /// [`encode_in`](Self::encode_in).
    pub fn encode(&self, limit: FrameLimit, out: &mut Vec<u8>) -> Result<usize, FrameTooLarge> {
        self.encode_in(ProtocolVersion::LATEST, limit, out)
    }

    /// Appends the frame, its header carrying `version`, to `out` and returns its size, or,
    /// when it would exceed `limit` (a Submit with too large a payload; use the limit from
    /// the server's Welcome), writes nothing and says so. `out` grows at most once, by
    /// exactly the frame's size. Client frames have the same layout in every version; a
    /// client sends every frame in the version of its Hello.
    ///
    /// ```
    /// use spillway::message::{MessageId, Priority, Role, TenantId};
    /// use spillway::net::protocol::{ClientFrame, FrameLimit, ProtocolVersion, Submit};
    ///
    /// // `docs/PROTOCOL.md` section 10.1: message 42, tenant 3, P1, session, payload `hello`.
    /// let (message_id, tenant) = (MessageId(42), TenantId(3));
    /// let (priority, role, payload) = (Priority::P1, Role::Session, &b"hello"[..]);
    /// let submit = ClientFrame::Submit(Submit { message_id, tenant, priority, role, payload });
    /// let mut out = Vec::new();
    /// assert_eq!(submit.encode_in(ProtocolVersion::V2, FrameLimit::DEFAULT, &mut out), Ok(29));
    /// assert_eq!(out[..8], [0x53, 0x57, 0x02, 0x02, 0x15, 0, 0, 0]);
    /// assert_eq!(out[8..24], [42, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 1, 1, 0, 0]);
    /// assert_eq!(&out[24..], b"hello");
    /// // In version 1 only the header's version byte differs.
    /// let mut v1 = Vec::new();
    /// submit.encode_in(ProtocolVersion::V1, FrameLimit::DEFAULT, &mut v1).unwrap();
    /// assert_eq!((v1[2], &v1[3..]), (0x01, &out[3..]));
    /// ```
    pub fn encode_in(
        &self,
        version: ProtocolVersion,
        limit: FrameLimit,
        out: &mut Vec<u8>,
    ) -> Result<usize, FrameTooLarge> {
        let frame_bytes = self.encoded_bytes();
        if frame_bytes > limit.max_frame_bytes() as usize {
            return Err(FrameTooLarge {
                frame_bytes,
                max_frame_bytes: limit.max_frame_bytes(),
            });
        }
        out.reserve(frame_bytes);
        put_header(out, version.code(), self.frame_type(), frame_bytes);
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
    pub(super) fn decode_body(
        frame_type: FrameType,
        body: &[u8],
    ) -> Result<ClientFrame<'_>, ProtocolError> {
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
///
/// ```
/// use core::num::NonZeroU32;
/// use spillway::message::ConnectionId;
/// use spillway::net::protocol::{Decoder, FrameLimit, FrameType, ServerFrame, ServerToClient};
///
/// let welcome = ServerFrame::Welcome {
///     connection: ConnectionId(7),
///     frame_limit: FrameLimit::DEFAULT,
///     send_buffer_replies: NonZeroU32::new(1000).unwrap(),
/// };
/// assert_eq!(welcome.frame_type(), FrameType::Welcome);
/// let mut out = Vec::new();
/// assert_eq!(welcome.encode(&mut out), 24);
/// // The bytes of `docs/PROTOCOL.md` section 10.1, and back.
/// assert_eq!(out[..8], [0x53, 0x57, 0x02, 0x81, 0x10, 0, 0, 0]);
/// assert_eq!(out[8..], [7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0xe8, 0x03, 0, 0]);
/// let mut decoder = Decoder::<ServerToClient>::new(FrameLimit::MIN);
/// decoder.feed(&out);
/// assert_eq!(decoder.next_frame(), Ok(Some(welcome)));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerFrame<'body> {
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
    /// The outcome of a submitted message, and in version 2 what the handler said.
    Reply {
        /// The id from the Submit.
        message_id: MessageId,
        /// What became of it.
        outcome: Outcome,
        /// Version 2, [`Outcome::Delivered`]: the handler's response, possibly empty;
        /// borrowed from the decoder's buffer when decoded. Empty otherwise: it is encoded
        /// only with a delivered outcome in version 2, and must fit the frame limit
        /// ([`FrameLimit::max_response_bytes`]).
        response: &'body [u8],
        /// Version 2, [`Outcome::Failed`]: the handler's error text, UTF-8, at most
        /// [`ERROR_DETAIL_MAX_BYTES`] (possibly empty); borrowed when decoded. Empty
        /// otherwise: it is encoded only with a failed outcome in version 2 (cut like an
        /// Error's detail).
        detail: &'body str,
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
        detail: &'body str,
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

    /// Its encoded size in the newest version; see [`encoded_bytes_in`](Self::encoded_bytes_in).
    pub fn encoded_bytes(&self) -> usize {
        self.encoded_bytes_in(ProtocolVersion::LATEST)
    }

    /// Its encoded size in `version`, header included (a detail counted as cut to
    /// [`ERROR_DETAIL_MAX_BYTES`]). Within [`FrameLimit::MIN`], but for a version-2 Reply
    /// with a response, which is as long as its response makes it.
    ///
    /// ```
    /// use spillway::message::MessageId;
    /// use spillway::net::protocol::{ErrorCode, ProtocolVersion, ServerFrame};
    /// use spillway::outcome::Outcome;
    ///
    /// let (message_id, outcome) = (MessageId(42), Outcome::Delivered);
    /// let reply = ServerFrame::Reply { message_id, outcome, response: b"world", detail: "" };
    /// assert_eq!(reply.encoded_bytes_in(ProtocolVersion::V2), 8 + 20 + 5);
    /// assert_eq!(reply.encoded_bytes_in(ProtocolVersion::V1), 8 + 20);
    /// // A detail counts as cut to 256 bytes, as the encoder cuts it.
    /// let detail = "x".repeat(300);
    /// let error = ServerFrame::Error { code: ErrorCode::BadField, detail: &detail };
    /// assert_eq!(error.encoded_bytes_in(ProtocolVersion::V2), 8 + 2 + 256);
    /// assert_eq!(error.encode_in(ProtocolVersion::V2, &mut Vec::new()), 8 + 2 + 256);
    /// ```
    pub fn encoded_bytes_in(&self, version: ProtocolVersion) -> usize {
        HEADER_BYTES
            + match self {
                ServerFrame::Reply { .. } => REPLY_BODY_BYTES + self.reply_data(version).len(),
                ServerFrame::Error { detail, .. } => {
                    ERROR_FIXED_BYTES + cut_to_char_boundary(detail, ERROR_DETAIL_MAX_BYTES).len()
                }
                fixed => fixed.frame_type().body_bytes_range(version).0,
            }
    }

    /// What a Reply carries after its fixed fields in `version`: in version 2 the response
    /// of a delivered message, the detail (cut) of a failed one; nothing otherwise, and
    /// nothing in version 1. Empty for every other frame.
    fn reply_data(&self, version: ProtocolVersion) -> &[u8] {
        match self {
            ServerFrame::Reply {
                outcome,
                response,
                detail,
                ..
            } if version.replies_carry_data() => match outcome {
                Outcome::Delivered => response,
                Outcome::Failed { .. } => {
                    cut_to_char_boundary(detail, ERROR_DETAIL_MAX_BYTES).as_bytes()
                }
                _ => &[],
            },
            _ => &[],
        }
    }

    /// Appends the frame in the newest version ([`ProtocolVersion::LATEST`]) to `out`; see
    /// [`encode_in`](Self::encode_in).
    pub fn encode(&self, out: &mut Vec<u8>) -> usize {
        self.encode_in(ProtocolVersion::LATEST, out)
    }

    /// Appends the frame, its header carrying `version`, to `out` and returns its size. A
    /// detail longer than [`ERROR_DETAIL_MAX_BYTES`] is cut at the last character boundary
    /// within it. A Reply in version 1 carries neither its response nor its detail; in
    /// version 2 it carries the one its outcome has (see [`ServerFrame::Reply`]): keeping a
    /// response within the frame limit is the caller's part. `out` grows at most once, by
    /// exactly the frame's size.
    ///
    /// ```
    /// use spillway::message::MessageId;
    /// use spillway::net::protocol::{ProtocolVersion, ServerFrame};
    /// use spillway::outcome::Outcome;
    ///
    /// // `docs/PROTOCOL.md` sections 10.1 and 10.2: message 42 delivered, response `world`.
    /// let (message_id, outcome) = (MessageId(42), Outcome::Delivered);
    /// let reply = ServerFrame::Reply { message_id, outcome, response: b"world", detail: "" };
    /// // Id 42, delivered (1), no reason, reserved, retry_after_ns 0.
    /// let fixed = [42, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    /// let mut v2 = Vec::new();
    /// assert_eq!(reply.encode_in(ProtocolVersion::V2, &mut v2), 33);
    /// assert_eq!(v2[..8], [0x53, 0x57, 0x02, 0x82, 0x19, 0, 0, 0]);
    /// assert_eq!((&v2[8..28], &v2[28..]), (&fixed[..], &b"world"[..]));
    /// let mut v1 = Vec::new();
    /// assert_eq!(reply.encode_in(ProtocolVersion::V1, &mut v1), 28);
    /// assert_eq!(v1[..8], [0x53, 0x57, 0x01, 0x82, 0x14, 0, 0, 0]);
    /// assert_eq!(v1[8..], fixed);
    /// ```
    pub fn encode_in(&self, version: ProtocolVersion, out: &mut Vec<u8>) -> usize {
        self.encode_with_version(version.code(), version, out)
    }

    /// [`encode_in`](Self::encode_in), with the header's version byte given apart: an
    /// `unsupported_version` Error carries the client's, whatever it is.
    fn encode_with_version(
        &self,
        version_code: u8,
        version: ProtocolVersion,
        out: &mut Vec<u8>,
    ) -> usize {
        let frame_bytes = self.encoded_bytes_in(version);
        out.reserve(frame_bytes);
        put_header(out, version_code, self.frame_type(), frame_bytes);
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
                ..
            } => {
                let fields = OutcomeFields::from_outcome(*outcome);
                out.extend_from_slice(&message_id.0.to_le_bytes());
                out.push(fields.outcome_code);
                out.push(fields.reason_code);
                out.extend_from_slice(&[0, 0]);
                out.extend_from_slice(&fields.retry_after_ns.to_le_bytes());
                out.extend_from_slice(self.reply_data(version));
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
    /// length is in [`FrameType::body_bytes_range`] for the frame's version (so a Reply has
    /// data after its fixed fields only in version 2). Zero-copy: a Reply's response and
    /// detail and an Error's detail borrow `body`.
    pub(super) fn decode_body(
        frame_type: FrameType,
        body: &[u8],
    ) -> Result<ServerFrame<'_>, ProtocolError> {
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
                let data = reader.rest();
                let (response, detail) = match outcome {
                    Outcome::Delivered => (data, ""),
                    Outcome::Failed { .. } => (&[][..], reader.detail(REPLY_BODY_BYTES)?),
                    _ if data.is_empty() => (data, ""),
                    _ => return Err(reader.bad_field("data", data.len() as u64)),
                };
                return Ok(ServerFrame::Reply {
                    message_id,
                    outcome,
                    response,
                    detail,
                });
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
                let detail = reader.detail(ERROR_FIXED_BYTES)?;
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
/// [`ERROR_DETAIL_MAX_BYTES`]). The header carries `version`, the connection's (version 1
/// before a Hello settled it), except for [`ProtocolError::UnsupportedVersion`], whose
/// header carries the version refused: the header and the Error frame have the same layout
/// in every version, so the client can read it. Allocates nothing beyond the growth of
/// `out`.
///
/// ```
/// use spillway::net::protocol::{encode_error_reply, ErrorCode, ProtocolError, ProtocolVersion};
///
/// // `GET / HTTP/1.1` before any Hello (`docs/PROTOCOL.md` section 10.1): `bad_magic`, in
/// // version 1.
/// let mut out = Vec::new();
/// let bad_magic = ProtocolError::BadMagic { found: *b"GE" };
/// assert_eq!(encode_error_reply(&bad_magic, ProtocolVersion::V1, &mut out), 8 + 57);
/// assert_eq!(out[..10], [0x53, 0x57, 0x01, 0x88, 0x39, 0, 0, 0, 0x01, 0x00]);
/// assert_eq!(&out[10..], br#"bad magic [47, 45]: a frame starts with [53, 57] ("SW")"#);
/// // A refused version is the header's, whatever the connection's.
/// let mut out = Vec::new();
/// let unsupported = ProtocolError::UnsupportedVersion { version: 9 };
/// encode_error_reply(&unsupported, ProtocolVersion::V2, &mut out);
/// assert_eq!(out[2..4], [9, 0x88]);
/// assert_eq!(out[8..10], ErrorCode::UnsupportedVersion.code().to_le_bytes());
/// ```
pub fn encode_error_reply(
    error: &ProtocolError,
    version: ProtocolVersion,
    out: &mut Vec<u8>,
) -> usize {
    let mut detail = DetailWriter::default();
    // `DetailWriter` never fails: it cuts what does not fit.
    let _ = fmt::write(&mut detail, format_args!("{error}"));
    let version_code = match error {
        ProtocolError::UnsupportedVersion { version } => *version,
        _ => version.code(),
    };
    ServerFrame::Error {
        code: error.code(),
        detail: detail.as_str(),
    }
    .encode_with_version(version_code, version, out)
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

    /// The bytes after the fixed fields as a detail: UTF-8 (else `bad_field` at the offset
    /// in the body of the first bad byte, the fixed fields being `fixed_bytes`), at most
    /// [`ERROR_DETAIL_MAX_BYTES`] (else `bad_field` with its length).
    fn detail(&self, fixed_bytes: usize) -> Result<&'body str, ProtocolError> {
        let detail = core::str::from_utf8(self.rest).map_err(|invalid| {
            self.bad_field("detail", (fixed_bytes + invalid.valid_up_to()) as u64)
        })?;
        if detail.len() > ERROR_DETAIL_MAX_BYTES {
            return Err(self.bad_field("detail", detail.len() as u64));
        }
        Ok(detail)
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

    #[test]
    fn a_detail_is_cut_at_a_character_boundary_and_nothing_is_written_after_a_cut() {
        // 3-byte characters: 256 is not a boundary, so the cut falls at 255.
        let long = "€".repeat(100);
        assert_eq!(
            cut_to_char_boundary(&long, ERROR_DETAIL_MAX_BYTES).len(),
            255
        );
        let mut writer = DetailWriter::default();
        let _ = fmt::write(&mut writer, format_args!("{}{}", "€".repeat(85), "€x"));
        assert_eq!(writer.as_str(), "€".repeat(85));
    }
}
