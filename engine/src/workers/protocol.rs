//! The worker protocol (`docs/WORKERS.md`), as pure code without I/O: the frames both
//! sides send, their encoders, and a streaming [`FrameReader`] that takes bytes as they
//! arrive and yields whole frames.
//!
//! The framing is `docs/PROTOCOL.md`'s: an 8-byte header (magic, version, frame type,
//! `u32` body length, little-endian) and a body. The magic differs, [`WORKER_MAGIC`]
//! (`SK`), so that a client that dials the worker port by mistake (or a worker the client
//! port) is refused at its first 8 bytes. Frame types `0x01..=0x7F` are sent by workers
//! ([`WorkerFrame`]), `0x81..=0xFF` by Spillway ([`DispatchFrame`]).

use bytes::{Buf, Bytes, BytesMut};

use crate::message::{ConnectionId, MessageId, Priority, Role, TenantId};

/// The first two bytes of every worker-protocol frame: ASCII `SK`.
pub const WORKER_MAGIC: [u8; 2] = *b"SK";
/// The worker protocol's version, carried in every header.
pub const WORKER_PROTOCOL_VERSION: u8 = 1;
/// Size of the header that starts every frame.
pub const WORKER_HEADER_BYTES: usize = 8;
/// Size of a Work body before its payload.
pub const WORK_FIXED_BYTES: usize = 32;
/// Size of an Answer body before its payload or error text.
pub const ANSWER_FIXED_BYTES: usize = 12;
/// Size of a Hello body before the worker's name.
pub const HELLO_FIXED_BYTES: usize = 4;
/// The longest worker name, in bytes of UTF-8.
pub const WORKER_NAME_MAX_BYTES: usize = 64;
/// The longest error text an Answer or an Error may carry, in bytes of UTF-8 (longer text
/// is cut by the encoder, refused by the reader).
pub const WORKER_TEXT_MAX_BYTES: usize = 256;
/// The most credit one worker may hold: 65,536 messages.
pub const WORKER_CREDIT_MAX: u32 = 1 << 16;
/// Size of a Welcome body.
const WELCOME_BODY_BYTES: usize = 24;

/// Frame type codes.
mod code {
    pub(super) const HELLO: u8 = 0x01;
    pub(super) const ANSWER: u8 = 0x02;
    pub(super) const CREDIT: u8 = 0x03;
    pub(super) const PING: u8 = 0x04;
    pub(super) const WELCOME: u8 = 0x81;
    pub(super) const WORK: u8 = 0x82;
    pub(super) const PONG: u8 = 0x83;
    pub(super) const ERROR: u8 = 0x84;
}

/// How a worker answered one Work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnswerStatus {
    /// Served: the body's rest is the response payload.
    Ok,
    /// The request is the client's mistake (`invalid_request`); the rest is the error text.
    Invalid,
    /// The service failed (`handler_error`); the rest is the error text.
    Failed,
}

impl AnswerStatus {
    /// Its wire code.
    pub const fn code(self) -> u8 {
        match self {
            AnswerStatus::Ok => 0,
            AnswerStatus::Invalid => 1,
            AnswerStatus::Failed => 2,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        match code {
            0 => Some(AnswerStatus::Ok),
            1 => Some(AnswerStatus::Invalid),
            2 => Some(AnswerStatus::Failed),
            _ => None,
        }
    }
}

/// Why Spillway cut a worker, sent in its last frame (an Error) when it can be.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WorkerErrorCode {
    /// A header with the wrong magic, version or frame type, or a body of the wrong size.
    MalformedFrame,
    /// A frame larger than the limit in the Welcome.
    FrameTooLarge,
    /// A frame out of order: anything before Hello, or a second Hello.
    ProtocolViolation,
    /// An Answer for a work id the worker does not hold.
    UnknownWork,
    /// Credit over [`WORKER_CREDIT_MAX`], or a Hello with none.
    BadCredit,
    /// A Work it held was not answered within the answer deadline.
    AnswerTimeout,
    /// Spillway is shutting down.
    ShuttingDown,
    /// Spillway already serves its limit of workers.
    TooManyWorkers,
}

impl WorkerErrorCode {
    /// Every code, in wire order.
    pub const ALL: [WorkerErrorCode; 8] = [
        WorkerErrorCode::MalformedFrame,
        WorkerErrorCode::FrameTooLarge,
        WorkerErrorCode::ProtocolViolation,
        WorkerErrorCode::UnknownWork,
        WorkerErrorCode::BadCredit,
        WorkerErrorCode::AnswerTimeout,
        WorkerErrorCode::ShuttingDown,
        WorkerErrorCode::TooManyWorkers,
    ];

    /// Its wire code, `1..=8`.
    pub const fn code(self) -> u16 {
        self as u16 + 1
    }

    /// The code's value, if it is one.
    pub fn from_code(code: u16) -> Option<Self> {
        Self::ALL.into_iter().find(|error| error.code() == code)
    }

    /// A stable snake_case name.
    pub const fn name(self) -> &'static str {
        match self {
            WorkerErrorCode::MalformedFrame => "malformed_frame",
            WorkerErrorCode::FrameTooLarge => "frame_too_large",
            WorkerErrorCode::ProtocolViolation => "protocol_violation",
            WorkerErrorCode::UnknownWork => "unknown_work",
            WorkerErrorCode::BadCredit => "bad_credit",
            WorkerErrorCode::AnswerTimeout => "answer_timeout",
            WorkerErrorCode::ShuttingDown => "shutting_down",
            WorkerErrorCode::TooManyWorkers => "too_many_workers",
        }
    }
}

/// One admitted message, as Spillway hands it to a worker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Work {
    /// Names this Work until its Answer; unique among the Works a worker holds.
    pub work_id: u64,
    /// The connection the message arrived on.
    pub connection: ConnectionId,
    /// The submitter's message id.
    pub message: MessageId,
    /// Its tenant.
    pub tenant: TenantId,
    /// Its priority, as admitted.
    pub priority: Priority,
    /// Its role.
    pub role: Role,
    /// The submitter marked it idempotent.
    pub idempotent: bool,
    /// This is its second try: the worker that held it first was lost.
    pub retry: bool,
    /// Its payload.
    pub payload: Bytes,
}

/// What a worker sends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WorkerFrame {
    /// Its first frame: who it is and how many Works it may hold at once.
    Hello {
        /// How many Works it may hold at once, `1..=`[`WORKER_CREDIT_MAX`].
        credit: u32,
        /// A name for stats and logs, at most [`WORKER_NAME_MAX_BYTES`] of UTF-8.
        name: String,
    },
    /// The answer to one Work; it gives back that Work's credit.
    Answer {
        /// The Work's id.
        work_id: u64,
        /// How it went.
        status: AnswerStatus,
        /// The response (status Ok) or the error text (at most [`WORKER_TEXT_MAX_BYTES`]).
        body: Bytes,
    },
    /// More credit: it may hold `added` more Works at once from now on.
    Credit {
        /// Credit added, at least 1.
        added: u32,
    },
    /// Asks for a Pong with the same nonce.
    Ping {
        /// Echoed.
        nonce: u64,
    },
}

/// What Spillway sends a worker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DispatchFrame {
    /// The answer to Hello.
    Welcome {
        /// The worker's id, for logs.
        worker_id: u64,
        /// How long it may hold a Work before it is cut (`worker_timeout`), in ns.
        answer_timeout_ns: u64,
        /// The largest frame it may send, header included.
        max_frame_bytes: u32,
    },
    /// A message to serve.
    Work(Work),
    /// The answer to a Ping.
    Pong {
        /// The Ping's nonce.
        nonce: u64,
    },
    /// Why Spillway cuts the worker; the connection closes after it.
    Error {
        /// Why.
        code: WorkerErrorCode,
        /// Text for people, at most [`WORKER_TEXT_MAX_BYTES`].
        detail: String,
    },
}

/// Why bytes are not a valid frame: the reader's answer, after which the stream is
/// unusable (the other side is cut).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The header's magic is not [`WORKER_MAGIC`] (a protocol client on the worker port?).
    #[error("bad magic {0:02x?}")]
    BadMagic([u8; 2]),
    /// The header's version is not [`WORKER_PROTOCOL_VERSION`].
    #[error("unsupported version {0}")]
    BadVersion(u8),
    /// The frame type is not one this side receives.
    #[error("unknown frame type 0x{0:02x}")]
    UnknownType(u8),
    /// The frame is larger than the limit.
    #[error("frame of {frame_bytes} bytes over the limit of {max_frame_bytes}")]
    TooLarge {
        /// Its size, header included.
        frame_bytes: u64,
        /// The limit.
        max_frame_bytes: u32,
    },
    /// The body does not have the size or content its type requires.
    #[error("malformed {frame} body: {why}")]
    Malformed {
        /// Which frame.
        frame: &'static str,
        /// What is wrong.
        why: &'static str,
    },
}

impl FrameError {
    /// The Error code the other side is told.
    pub fn code(&self) -> WorkerErrorCode {
        match self {
            FrameError::TooLarge { .. } => WorkerErrorCode::FrameTooLarge,
            _ => WorkerErrorCode::MalformedFrame,
        }
    }
}

fn put_header(out: &mut Vec<u8>, frame_type: u8, body_bytes: usize) {
    out.extend_from_slice(&WORKER_MAGIC);
    out.push(WORKER_PROTOCOL_VERSION);
    out.push(frame_type);
    // Bodies are bounded by the frame limit (at most 16 MiB) long before u32::MAX.
    out.extend_from_slice(&(body_bytes as u32).to_le_bytes());
}

/// `text` cut to at most `max` bytes on a character boundary.
fn cut(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

impl WorkerFrame {
    /// Appends the frame to `out`. A name or an error text over its bound is cut to it.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            WorkerFrame::Hello { credit, name } => {
                let name = cut(name, WORKER_NAME_MAX_BYTES);
                put_header(out, code::HELLO, HELLO_FIXED_BYTES + name.len());
                out.extend_from_slice(&credit.to_le_bytes());
                out.extend_from_slice(name.as_bytes());
            }
            WorkerFrame::Answer {
                work_id,
                status,
                body,
            } => {
                let body = match status {
                    AnswerStatus::Ok => &body[..],
                    _ => &body[..body.len().min(WORKER_TEXT_MAX_BYTES)],
                };
                put_header(out, code::ANSWER, ANSWER_FIXED_BYTES + body.len());
                out.extend_from_slice(&work_id.to_le_bytes());
                out.extend_from_slice(&[status.code(), 0, 0, 0]);
                out.extend_from_slice(body);
            }
            WorkerFrame::Credit { added } => {
                put_header(out, code::CREDIT, 4);
                out.extend_from_slice(&added.to_le_bytes());
            }
            WorkerFrame::Ping { nonce } => {
                put_header(out, code::PING, 8);
                out.extend_from_slice(&nonce.to_le_bytes());
            }
        }
    }

    fn parse(frame_type: u8, mut body: Bytes) -> Result<Self, FrameError> {
        let malformed = |frame, why| FrameError::Malformed { frame, why };
        match frame_type {
            code::HELLO => {
                if body.len() < HELLO_FIXED_BYTES + 1 {
                    return Err(malformed("Hello", "needs credit and a name"));
                }
                let credit = body.get_u32_le();
                if body.len() > WORKER_NAME_MAX_BYTES {
                    return Err(malformed("Hello", "name over 64 bytes"));
                }
                let name = std::str::from_utf8(&body)
                    .map_err(|_| malformed("Hello", "name not UTF-8"))?
                    .to_owned();
                Ok(WorkerFrame::Hello { credit, name })
            }
            code::ANSWER => {
                if body.len() < ANSWER_FIXED_BYTES {
                    return Err(malformed("Answer", "shorter than 12 bytes"));
                }
                let work_id = body.get_u64_le();
                let status = AnswerStatus::from_code(body.get_u8())
                    .ok_or(malformed("Answer", "unknown status"))?;
                if body.get_u8() != 0 || body.get_u16_le() != 0 {
                    return Err(malformed("Answer", "reserved bytes not zero"));
                }
                if status != AnswerStatus::Ok {
                    if body.len() > WORKER_TEXT_MAX_BYTES {
                        return Err(malformed("Answer", "error text over 256 bytes"));
                    }
                    std::str::from_utf8(&body)
                        .map_err(|_| malformed("Answer", "error text not UTF-8"))?;
                }
                Ok(WorkerFrame::Answer {
                    work_id,
                    status,
                    body,
                })
            }
            code::CREDIT => {
                if body.len() != 4 {
                    return Err(malformed("Credit", "not 4 bytes"));
                }
                let added = body.get_u32_le();
                if added == 0 {
                    return Err(malformed("Credit", "adds nothing"));
                }
                Ok(WorkerFrame::Credit { added })
            }
            code::PING => {
                if body.len() != 8 {
                    return Err(malformed("Ping", "not 8 bytes"));
                }
                Ok(WorkerFrame::Ping {
                    nonce: body.get_u64_le(),
                })
            }
            other => Err(FrameError::UnknownType(other)),
        }
    }
}

impl DispatchFrame {
    /// Appends the frame to `out`. An error detail over its bound is cut to it.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            DispatchFrame::Welcome {
                worker_id,
                answer_timeout_ns,
                max_frame_bytes,
            } => {
                put_header(out, code::WELCOME, WELCOME_BODY_BYTES);
                out.extend_from_slice(&worker_id.to_le_bytes());
                out.extend_from_slice(&answer_timeout_ns.to_le_bytes());
                out.extend_from_slice(&max_frame_bytes.to_le_bytes());
                out.extend_from_slice(&[0; 4]);
            }
            DispatchFrame::Work(work) => encode_work(work, out),
            DispatchFrame::Pong { nonce } => {
                put_header(out, code::PONG, 8);
                out.extend_from_slice(&nonce.to_le_bytes());
            }
            DispatchFrame::Error { code, detail } => {
                let detail = cut(detail, WORKER_TEXT_MAX_BYTES);
                put_header(out, code::ERROR, 2 + detail.len());
                out.extend_from_slice(&code.code().to_le_bytes());
                out.extend_from_slice(detail.as_bytes());
            }
        }
    }

    fn parse(frame_type: u8, mut body: Bytes) -> Result<Self, FrameError> {
        let malformed = |frame, why| FrameError::Malformed { frame, why };
        match frame_type {
            code::WELCOME => {
                if body.len() != WELCOME_BODY_BYTES {
                    return Err(malformed("Welcome", "not 24 bytes"));
                }
                Ok(DispatchFrame::Welcome {
                    worker_id: body.get_u64_le(),
                    answer_timeout_ns: body.get_u64_le(),
                    max_frame_bytes: body.get_u32_le(),
                })
            }
            code::WORK => {
                if body.len() < WORK_FIXED_BYTES {
                    return Err(malformed("Work", "shorter than 32 bytes"));
                }
                let work_id = body.get_u64_le();
                let connection = ConnectionId(body.get_u64_le());
                let message = MessageId(body.get_u64_le());
                let tenant = TenantId(body.get_u32_le());
                let priority = match body.get_u8() {
                    0 => Priority::P0,
                    1 => Priority::P1,
                    2 => Priority::P2,
                    3 => Priority::P3,
                    _ => return Err(malformed("Work", "unknown priority")),
                };
                let role = Role::ALL
                    .get(usize::from(body.get_u8()))
                    .copied()
                    .ok_or(malformed("Work", "unknown role"))?;
                let flags = body.get_u8();
                if flags & !0b11 != 0 || body.get_u8() != 0 {
                    return Err(malformed("Work", "reserved bits not zero"));
                }
                Ok(DispatchFrame::Work(Work {
                    work_id,
                    connection,
                    message,
                    tenant,
                    priority,
                    role,
                    idempotent: flags & 0b01 != 0,
                    retry: flags & 0b10 != 0,
                    payload: body,
                }))
            }
            code::PONG => {
                if body.len() != 8 {
                    return Err(malformed("Pong", "not 8 bytes"));
                }
                Ok(DispatchFrame::Pong {
                    nonce: body.get_u64_le(),
                })
            }
            code::ERROR => {
                if body.len() < 2 {
                    return Err(malformed("Error", "shorter than 2 bytes"));
                }
                let code = WorkerErrorCode::from_code(body.get_u16_le())
                    .ok_or(malformed("Error", "unknown code"))?;
                let detail = std::str::from_utf8(&body)
                    .map_err(|_| malformed("Error", "detail not UTF-8"))?
                    .to_owned();
                Ok(DispatchFrame::Error { code, detail })
            }
            other => Err(FrameError::UnknownType(other)),
        }
    }
}

/// Appends a Work frame.
pub fn encode_work(work: &Work, out: &mut Vec<u8>) {
    put_work(
        out,
        work.work_id,
        work.retry,
        &WorkFields {
            connection: work.connection,
            id: work.message,
            tenant: work.tenant,
            priority: work.priority,
            role: work.role,
            idempotent: work.idempotent,
        },
        &work.payload,
    );
}

/// Appends the Work frame of `message`: the dispatcher's hot path, straight from the
/// message, without a `Work` (whose payload would cost a reference count each way).
pub(crate) fn encode_work_of(
    message: &crate::message::Message,
    work_id: u64,
    retry: bool,
    out: &mut Vec<u8>,
) {
    put_work(
        out,
        work_id,
        retry,
        &WorkFields {
            connection: message.connection,
            id: message.id,
            tenant: message.tenant,
            priority: message.priority,
            role: message.role,
            idempotent: message.idempotent,
        },
        &message.payload,
    );
}

/// The fields of a Work frame that are not the payload, borrowed from a `Work` or a
/// message alike.
struct WorkFields {
    connection: ConnectionId,
    id: MessageId,
    tenant: TenantId,
    priority: Priority,
    role: Role,
    idempotent: bool,
}

fn put_work(out: &mut Vec<u8>, work_id: u64, retry: bool, message: &WorkFields, payload: &[u8]) {
    put_header(out, code::WORK, WORK_FIXED_BYTES + payload.len());
    out.extend_from_slice(&work_id.to_le_bytes());
    out.extend_from_slice(&message.connection.0.to_le_bytes());
    out.extend_from_slice(&message.id.0.to_le_bytes());
    out.extend_from_slice(&message.tenant.0.to_le_bytes());
    out.push(message.priority as u8);
    out.push(message.role.index() as u8);
    out.push(u8::from(message.idempotent) | (u8::from(retry) << 1));
    out.push(0);
    out.extend_from_slice(payload);
}

/// Which side a [`FrameReader`] reads: the frames it yields.
pub trait Side {
    /// The frames.
    type Frame;
    /// Whether `frame_type` is sent by the other side.
    fn parse(frame_type: u8, body: Bytes) -> Result<Self::Frame, FrameError>;
}

/// Spillway's side: reads what workers send.
#[derive(Debug)]
pub struct FromWorker;

impl Side for FromWorker {
    type Frame = WorkerFrame;
    fn parse(frame_type: u8, body: Bytes) -> Result<WorkerFrame, FrameError> {
        WorkerFrame::parse(frame_type, body)
    }
}

/// A worker's side: reads what Spillway sends.
#[derive(Debug)]
pub struct FromDispatcher;

impl Side for FromDispatcher {
    type Frame = DispatchFrame;
    fn parse(frame_type: u8, body: Bytes) -> Result<DispatchFrame, FrameError> {
        DispatchFrame::parse(frame_type, body)
    }
}

/// Takes bytes as they arrive ([`feed`](Self::feed)) and yields whole frames
/// ([`next_frame`](Self::next_frame)). A frame is judged by its header before its body is
/// waited for, so an oversized or foreign frame is refused after 8 bytes and never
/// buffered. Bodies are split off the buffer without a copy.
#[derive(Debug)]
pub struct FrameReader<S: Side> {
    buffer: BytesMut,
    max_frame_bytes: u32,
    side: core::marker::PhantomData<S>,
}

impl<S: Side> FrameReader<S> {
    /// A reader of frames of at most `max_frame_bytes`, header included.
    pub fn new(max_frame_bytes: u32) -> Self {
        Self {
            buffer: BytesMut::new(),
            max_frame_bytes,
            side: core::marker::PhantomData,
        }
    }

    /// Bytes received.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// Bytes buffered and not yet a whole frame.
    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }

    /// The next whole frame, `Ok(None)` if more bytes are needed, or why the stream is bad.
    pub fn next_frame(&mut self) -> Result<Option<S::Frame>, FrameError> {
        if self.buffer.len() < WORKER_HEADER_BYTES {
            return Ok(None);
        }
        let header = &self.buffer[..WORKER_HEADER_BYTES];
        let magic = [header[0], header[1]];
        if magic != WORKER_MAGIC {
            return Err(FrameError::BadMagic(magic));
        }
        if header[2] != WORKER_PROTOCOL_VERSION {
            return Err(FrameError::BadVersion(header[2]));
        }
        let frame_type = header[3];
        let body_bytes = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        let frame_bytes = u64::from(body_bytes) + WORKER_HEADER_BYTES as u64;
        if frame_bytes > u64::from(self.max_frame_bytes) {
            return Err(FrameError::TooLarge {
                frame_bytes,
                max_frame_bytes: self.max_frame_bytes,
            });
        }
        if self.buffer.len() < frame_bytes as usize {
            return Ok(None);
        }
        self.buffer.advance(WORKER_HEADER_BYTES);
        let body = self.buffer.split_to(body_bytes as usize).freeze();
        S::parse(frame_type, body).map(Some)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn every_frame_round_trips_split_at_every_byte() {
        let worker_frames = [
            WorkerFrame::Hello {
                credit: 8,
                name: "echo".into(),
            },
            WorkerFrame::Answer {
                work_id: 9,
                status: AnswerStatus::Ok,
                body: Bytes::from_static(b"pong"),
            },
            WorkerFrame::Answer {
                work_id: 10,
                status: AnswerStatus::Failed,
                body: Bytes::from_static(b"db down"),
            },
            WorkerFrame::Credit { added: 3 },
            WorkerFrame::Ping { nonce: 77 },
        ];
        for frame in worker_frames {
            let mut bytes = Vec::new();
            frame.encode(&mut bytes);
            for split in 0..=bytes.len() {
                let mut reader = FrameReader::<FromWorker>::new(1 << 16);
                reader.feed(&bytes[..split]);
                let early = reader.next_frame().unwrap();
                reader.feed(&bytes[split..]);
                let frame_read = match early {
                    Some(frame) => frame,
                    None => reader.next_frame().unwrap().unwrap(),
                };
                assert_eq!(frame_read, frame);
                assert_eq!(reader.buffered(), 0);
            }
        }
        let dispatch_frames = [
            DispatchFrame::Welcome {
                worker_id: 1,
                answer_timeout_ns: 5_000_000_000,
                max_frame_bytes: 1 << 16,
            },
            DispatchFrame::Work(Work {
                work_id: 4,
                connection: ConnectionId(1 << 63),
                message: MessageId(42),
                tenant: TenantId(3),
                priority: Priority::P2,
                role: Role::Session,
                idempotent: true,
                retry: true,
                payload: Bytes::from_static(b"hello"),
            }),
            DispatchFrame::Pong { nonce: 5 },
            DispatchFrame::Error {
                code: WorkerErrorCode::AnswerTimeout,
                detail: "late".into(),
            },
        ];
        for frame in dispatch_frames {
            let mut bytes = Vec::new();
            frame.encode(&mut bytes);
            let mut reader = FrameReader::<FromDispatcher>::new(1 << 16);
            reader.feed(&bytes);
            assert_eq!(reader.next_frame().unwrap(), Some(frame));
        }
    }

    #[test]
    fn foreign_oversized_and_malformed_frames_are_refused_from_their_header() {
        let mut reader = FrameReader::<FromWorker>::new(1024);
        // A client's Hello (PROTOCOL.md magic `SW`) on the worker port.
        reader.feed(&[0x53, 0x57, 0x01, 0x01, 0, 0, 0, 0]);
        assert_eq!(reader.next_frame(), Err(FrameError::BadMagic(*b"SW")));

        let mut reader = FrameReader::<FromWorker>::new(1024);
        reader.feed(&[0x53, 0x4b, 0x01, 0x02, 0xff, 0xff, 0xff, 0x7f]);
        assert!(matches!(
            reader.next_frame(),
            Err(FrameError::TooLarge { .. })
        ));

        let mut reader = FrameReader::<FromWorker>::new(1024);
        reader.feed(&[0x53, 0x4b, 0x01, 0x03, 4, 0, 0, 0, 0, 0, 0, 0]);
        assert!(matches!(
            reader.next_frame(),
            Err(FrameError::Malformed {
                frame: "Credit",
                ..
            })
        ));

        let mut reader = FrameReader::<FromWorker>::new(1024);
        reader.feed(&[0x53, 0x4b, 0x01, 0x82, 0, 0, 0, 0]);
        assert_eq!(reader.next_frame(), Err(FrameError::UnknownType(0x82)));
    }
}
