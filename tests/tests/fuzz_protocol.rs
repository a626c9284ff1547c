//! Stable fuzzing of the wire decoders (`spillway::net::protocol::Decoder`, both
//! directions), beyond what `protocol.rs` checks (which feeds whole reads and drains after
//! each):
//!
//! - streams are fed the way a reader may: `feed`, `unfilled` + `commit` (with spare room)
//!   or `feed_shared` (slices of one shared buffer) of random sizes, `next_frame` or
//!   `next_shared_frame` called a random number of times in between (so bytes pile up),
//!   `shrink_to_fit` at random points; under every such schedule a decoder gives the same
//!   frames and the same end as fed whole, and after each call its state is coherent:
//!   buffered bytes are the bytes fed less the frames taken, no frame is over the limit,
//!   `Ok(None)` only while the next frame is incomplete, a frame handed out with a shared
//!   chunk lies in that chunk (decoded in place), and after an error the decoder is spent
//!   (the same error again, bytes fed ignored, `finish` the same);
//! - fed as shared chunks and drained after each, a decoder decodes in place (with its
//!   chunk) exactly the frames that lie whole in one chunk, and a Submit's message then
//!   shares the chunk's memory; a frame cut by two chunks comes copied, with none;
//! - valid streams are built byte by byte from the layouts of `docs/PROTOCOL.md`, not by the
//!   codec's encoders, in version 1 or 2 (version-2 Replies with a response or an error
//!   detail, Errors to a client in either version), and decode to exactly those frames (each
//!   re-encodes, in its header's version, to its bytes);
//! - in hostile streams (noise, and valid streams damaged, with lengths rewritten or frames
//!   of the other direction spliced in) every error names the bytes it is about: the magic,
//!   version, type and length of the header at the point where the accepted frames end, or
//!   the bytes left at the close; and a server's Error reply for it (`encode_error_reply`)
//!   decodes on the client side to that error's code and description;
//! - a frame over the limit, after valid frames and followed by anything, is refused with
//!   `FrameTooLarge` as soon as its header is in, never waited for; a Submit exactly at the
//!   limit is accepted, one byte more is refused (and the encoder writes nothing for it).

#[macro_use]
mod fuzz_support;

use proptest::prelude::*;
use proptest::sample::{select, Index};
use spillway::message::{Bytes, ConnectionId};
use spillway::net::protocol::{
    encode_error_reply, ClientFrame, ClientToServer, Decoder, Direction, ErrorCode, FrameLimit,
    FrameType, ProtocolError, ProtocolVersion, ServerFrame, ServerToClient, WireCode,
    ERROR_DETAIL_MAX_BYTES, HEADER_BYTES, MAGIC, OUTCOME_CANCELLED, OUTCOME_DELIVERED,
    OUTCOME_DROPPED, OUTCOME_FAILED, OUTCOME_REFUSED, OUTCOME_SHED,
};
use spillway::outcome::{DropReason, FailureReason, RefusalReason, ShedReason};

/// A header: magic, `version`, the type's `code`, `body_length`.
fn header(version: u8, code: u8, body_length: u32) -> Vec<u8> {
    let mut header = MAGIC.to_vec();
    header.extend_from_slice(&[version, code]);
    header.extend_from_slice(&body_length.to_le_bytes());
    header
}

/// A frame's bytes in `version`: the header, then `body`.
fn frame(version: ProtocolVersion, frame_type: FrameType, body: &[u8]) -> Vec<u8> {
    [
        &header(version.code(), frame_type.code(), body.len() as u32)[..],
        body,
    ]
    .concat()
}

fn version() -> impl Strategy<Value = ProtocolVersion> {
    select(ProtocolVersion::ALL.to_vec())
}

fn le_u64() -> impl Strategy<Value = Vec<u8>> {
    any::<u64>().prop_map(move |value| value.to_le_bytes().to_vec())
}

/// A client frame after Hello, in `version`, laid out as `docs/PROTOCOL.md` section 5 gives.
fn client_frame(version: ProtocolVersion) -> impl Strategy<Value = Vec<u8>> {
    let frame = move |frame_type, body: &[u8]| frame(version, frame_type, body);
    prop_oneof![
        4 => (
            any::<u64>(),
            any::<u32>(),
            0u8..4,
            0u8..6,
            proptest::collection::vec(any::<u8>(), 0..300),
        )
            .prop_map(move |(message_id, tenant, priority, role, payload)| {
                let mut body = message_id.to_le_bytes().to_vec();
                body.extend_from_slice(&tenant.to_le_bytes());
                body.extend_from_slice(&[priority, role, 0, 0]);
                body.extend_from_slice(&payload);
                frame(FrameType::Submit, &body)
            }),
        1 => le_u64().prop_map(move |body| frame(FrameType::Cancel, &body)),
        1 => le_u64().prop_map(move |body| frame(FrameType::Ping, &body)),
    ]
}

/// The (outcome, reason) pairs a Reply may carry.
fn outcome_codes() -> Vec<(u8, u8)> {
    let codes =
        |outcome: u8, reasons: Vec<u8>| reasons.into_iter().map(move |reason| (outcome, reason));
    [(OUTCOME_DELIVERED, 0), (OUTCOME_CANCELLED, 0)]
        .into_iter()
        .chain(codes(
            OUTCOME_FAILED,
            FailureReason::ALL.map(WireCode::wire_code).to_vec(),
        ))
        .chain(codes(
            OUTCOME_REFUSED,
            RefusalReason::ALL.map(WireCode::wire_code).to_vec(),
        ))
        .chain(codes(
            OUTCOME_SHED,
            ShedReason::ALL.map(WireCode::wire_code).to_vec(),
        ))
        .chain(codes(
            OUTCOME_DROPPED,
            DropReason::ALL.map(WireCode::wire_code).to_vec(),
        ))
        .collect()
}

/// UTF-8 of at most `ERROR_DETAIL_MAX_BYTES` bytes (a third of them empty).
fn detail() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![Just(String::new()), any::<String>()].prop_map(move |text| {
        let mut end = text.len().min(ERROR_DETAIL_MAX_BYTES);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.as_bytes()[..end].to_vec()
    })
}

/// An Error frame, in any version: a client reads it in every one.
fn error_frame() -> impl Strategy<Value = Vec<u8>> {
    (version(), select(ErrorCode::ALL.to_vec()), detail()).prop_map(
        move |(version, code, detail)| {
            let mut body = code.code().to_le_bytes().to_vec();
            body.extend_from_slice(&detail);
            frame(version, FrameType::Error, &body)
        },
    )
}

fn welcome_frame(version: ProtocolVersion) -> impl Strategy<Value = Vec<u8>> {
    let frame = move |frame_type, body: &[u8]| frame(version, frame_type, body);
    (
        any::<u64>(),
        FrameLimit::MIN.max_frame_bytes()..=FrameLimit::MAX.max_frame_bytes(),
        1..=u32::MAX,
    )
        .prop_map(move |(connection, max_frame_bytes, send_buffer_replies)| {
            let mut body = connection.to_le_bytes().to_vec();
            body.extend_from_slice(&max_frame_bytes.to_le_bytes());
            body.extend_from_slice(&send_buffer_replies.to_le_bytes());
            frame(FrameType::Welcome, &body)
        })
}

/// A server frame after Welcome, in `version` (an Error in any).
fn server_frame(version: ProtocolVersion) -> impl Strategy<Value = Vec<u8>> {
    let frame = move |frame_type, body: &[u8]| frame(version, frame_type, body);
    prop_oneof![
        4 => (
            any::<u64>(),
            select(outcome_codes()),
            any::<u64>(),
            proptest::collection::vec(any::<u8>(), 0..300),
            detail(),
        )
            .prop_map(move |(message_id, (outcome, reason), retry_after_ns, response, detail)| {
                let retry_after_ns = if outcome == OUTCOME_REFUSED { retry_after_ns } else { 0 };
                let mut body = message_id.to_le_bytes().to_vec();
                body.extend_from_slice(&[outcome, reason, 0, 0]);
                body.extend_from_slice(&retry_after_ns.to_le_bytes());
                // Version 2: the response of a delivered message, the detail of a failed one.
                match outcome {
                    _ if version == ProtocolVersion::V1 => {}
                    OUTCOME_DELIVERED => body.extend_from_slice(&response),
                    OUTCOME_FAILED => body.extend_from_slice(&detail),
                    _ => {}
                }
                frame(FrameType::Reply, &body)
            }),
        1 => le_u64().prop_map(move |body| frame(FrameType::Throttle, &body)),
        1 => le_u64().prop_map(move |body| frame(FrameType::Pause, &body)),
        1 => Just(frame(FrameType::Resume, &[])),
        1 => (1..=u64::MAX).prop_map(move |count| frame(FrameType::RepliesDropped, &count.to_le_bytes())),
        1 => le_u64().prop_map(move |body| frame(FrameType::Pong, &body)),
        1 => error_frame(),
    ]
}

/// A valid client stream in `version`, frame by frame: Hello, then frames.
fn client_stream(version: ProtocolVersion) -> impl Strategy<Value = Vec<Vec<u8>>> {
    proptest::collection::vec(client_frame(version), 0..10).prop_map(move |frames| {
        let mut stream = vec![frame(version, FrameType::Hello, &[])];
        stream.extend(frames);
        stream
    })
}

/// A valid server stream in `version`, frame by frame: perhaps an Error (a refusal may come
/// first), a Welcome, then frames.
fn server_stream(version: ProtocolVersion) -> impl Strategy<Value = Vec<Vec<u8>>> {
    (
        proptest::option::weighted(0.1, error_frame()),
        welcome_frame(version),
        proptest::collection::vec(server_frame(version), 0..10),
    )
        .prop_map(|(refusal, welcome, frames)| {
            let mut stream: Vec<Vec<u8>> = refusal.into_iter().collect();
            stream.push(welcome);
            stream.extend(frames);
            stream
        })
}

/// A version and a valid client stream in it.
fn any_client_stream() -> impl Strategy<Value = (ProtocolVersion, Vec<Vec<u8>>)> {
    version().prop_flat_map(|version| (Just(version), client_stream(version)))
}

/// A version and a valid server stream in it.
fn any_server_stream() -> impl Strategy<Value = (ProtocolVersion, Vec<Vec<u8>>)> {
    version().prop_flat_map(|version| (Just(version), server_stream(version)))
}

/// How a valid stream is damaged, frame by frame (so that damage lands in headers as often
/// as in bodies).
#[derive(Clone, Debug)]
enum Damage {
    /// One byte of one frame changed.
    Edit(Index, Index, Edit),
    /// A frame's `body_length` rewritten.
    Length(Index, u32),
    /// A frame of the other direction (or a second handshake) spliced in before a frame.
    Splice(Index, Vec<u8>),
    /// The stream cut inside a frame.
    Cut(Index, Index),
}

#[derive(Clone, Copy, Debug)]
enum Edit {
    Set(u8),
    Insert(u8),
    Remove,
}

fn damage(foreign: BoxedStrategy<Vec<u8>>) -> impl Strategy<Value = Vec<Damage>> {
    let edit = prop_oneof![
        any::<u8>().prop_map(Edit::Set),
        any::<u8>().prop_map(Edit::Insert),
        Just(Edit::Remove),
    ];
    proptest::collection::vec(
        prop_oneof![
            3 => (any::<Index>(), any::<Index>(), edit)
                .prop_map(|(which, at, edit)| Damage::Edit(which, at, edit)),
            1 => (any::<Index>(), prop_oneof![0u32..40, any::<u32>()])
                .prop_map(|(which, length)| Damage::Length(which, length)),
            1 => (any::<Index>(), foreign).prop_map(|(at, frame)| Damage::Splice(at, frame)),
            1 => (any::<Index>(), any::<Index>()).prop_map(|(which, at)| Damage::Cut(which, at)),
        ],
        1..4,
    )
}

/// A stream's bytes with `damage` done to its frames.
fn damaged(mut frames: Vec<Vec<u8>>, damage: &[Damage]) -> Vec<u8> {
    for step in damage {
        let count = frames.len();
        match step {
            Damage::Splice(at, frame) => frames.insert(at.index(count + 1), frame.clone()),
            Damage::Edit(which, at, edit) => {
                let frame = &mut frames[which.index(count)];
                let at = at.index(frame.len() + 1);
                match (*edit, at < frame.len()) {
                    (Edit::Set(byte), true) => frame[at] = byte,
                    (Edit::Insert(byte), _) => frame.insert(at, byte),
                    (Edit::Remove, true) => drop(frame.remove(at)),
                    _ => {}
                }
            }
            Damage::Length(which, length) => {
                if let Some(field) = frames[which.index(count)].get_mut(4..HEADER_BYTES) {
                    field.copy_from_slice(&length.to_le_bytes());
                }
            }
            Damage::Cut(which, at) => {
                frames.truncate(which.index(count) + 1);
                let last = frames.last_mut().expect("a stream has a frame");
                last.truncate(at.index(last.len() + 1));
            }
        }
    }
    frames.concat()
}

/// Hostile bytes for a connection of `version`: noise, or a valid `stream` damaged, with
/// frames from `foreign` spliced in.
fn hostile<S: Strategy<Value = Vec<Vec<u8>>> + 'static, F: Strategy<Value = Vec<u8>> + 'static>(
    stream: impl Fn(ProtocolVersion) -> S + 'static,
    foreign: impl Fn(ProtocolVersion) -> F + 'static,
) -> impl Strategy<Value = (ProtocolVersion, Vec<u8>)> {
    version().prop_flat_map(move |version| {
        (
            Just(version),
            prop_oneof![
                1 => noise(),
                3 => (stream(version), damage(foreign(version).boxed()))
                    .prop_map(|(frames, damage)| damaged(frames, &damage)),
            ],
        )
    })
}

/// Random bytes, alone or behind a header with a random version (1 or 2 mostly), type
/// code and length.
fn noise() -> impl Strategy<Value = Vec<u8>> {
    (
        proptest::option::of((
            prop_oneof![1u8..=2, any::<u8>()],
            any::<u8>(),
            prop_oneof![0u32..64, any::<u32>()],
        )),
        proptest::collection::vec(any::<u8>(), 0..300),
    )
        .prop_map(|(head, rest)| {
            let head = head.map(|(version, code, length)| header(version, code, length));
            [head.unwrap_or_default(), rest].concat()
        })
}

fn frame_limit() -> impl Strategy<Value = FrameLimit> {
    prop_oneof![
        Just(FrameLimit::MIN),
        Just(FrameLimit::DEFAULT),
        (FrameLimit::MIN.max_frame_bytes()..=FrameLimit::MAX.max_frame_bytes())
            .prop_map(|bytes| FrameLimit::new(bytes).unwrap()),
    ]
}

/// One thing a reader does with its decoder.
#[derive(Clone, Debug)]
enum Op {
    /// `feed` up to this many bytes.
    Feed(usize),
    /// `feed_shared` a slice of the shared wire, up to this many bytes.
    FeedShared(usize),
    /// `unfilled` with this many bytes and some spare room, write up to the bytes, `commit`.
    Fill {
        bytes: usize,
        spare: usize,
    },
    /// Call `next_frame` up to this many times (fewer if it needs more bytes or fails).
    Poll(usize),
    /// The same with `next_shared_frame`.
    PollShared(usize),
    Shrink,
}

fn schedule() -> impl Strategy<Value = Vec<Op>> {
    proptest::collection::vec(
        prop_oneof![
            4 => prop_oneof![1usize..16, 1usize..400].prop_map(Op::Feed),
            4 => prop_oneof![1usize..16, 1usize..400].prop_map(Op::FeedShared),
            2 => (prop_oneof![1usize..16, 1usize..400], 0usize..64)
                .prop_map(|(bytes, spare)| Op::Fill { bytes, spare }),
            4 => (0usize..4).prop_map(Op::Poll),
            4 => (0usize..4).prop_map(Op::PollShared),
            1 => Just(Op::Shrink),
        ],
        0..40,
    )
}

/// What a decoder made of a stream: each frame re-encoded, and how it ended.
#[derive(Debug, PartialEq)]
struct Transcript {
    frames: Vec<Vec<u8>>,
    end: Result<(), ProtocolError>,
}

/// A decoder driven over `wire` by a schedule, checking its state after every call. Each
/// frame taken is re-encoded by `encode` in the version its header carries.
struct Reader<'wire, D: Direction, E> {
    decoder: Decoder<D>,
    wire: &'wire [u8],
    /// The same bytes in one shared buffer, of which `feed_shared` is given slices.
    shared_wire: Bytes,
    /// Bytes handed to the decoder.
    fed: usize,
    /// Bytes of the frames it returned.
    taken: usize,
    frames: Vec<Vec<u8>>,
    end: Option<Result<(), ProtocolError>>,
    limit: FrameLimit,
    encode: E,
    /// Offset of a header that must be refused as soon as it is in.
    refuse_at: Option<usize>,
}

impl<'wire, D, E> Reader<'wire, D, E>
where
    D: Direction,
    E: Fn(&D::Frame<'_>, ProtocolVersion, &mut Vec<u8>),
{
    fn new(wire: &'wire [u8], decoder: Decoder<D>, encode: E) -> Self {
        let limit = decoder.limit();
        Self {
            decoder,
            wire,
            shared_wire: Bytes::copy_from_slice(wire),
            fed: 0,
            taken: 0,
            frames: Vec::new(),
            end: None,
            limit,
            encode,
            refuse_at: None,
        }
    }

    /// Runs `schedule`, then feeds what is left and reads to the end.
    fn read(mut self, schedule: &[Op]) -> Result<Transcript, TestCaseError> {
        for op in schedule {
            if self.end.is_some() {
                break;
            }
            match *op {
                Op::Feed(bytes) => self.feed(bytes)?,
                Op::FeedShared(bytes) => self.feed_shared(bytes)?,
                Op::Fill { bytes, spare } => self.fill(bytes, spare)?,
                Op::Poll(times) | Op::PollShared(times) => {
                    let shared = matches!(op, Op::PollShared(_));
                    for _ in 0..times {
                        if !self.poll(shared)? {
                            break;
                        }
                    }
                }
                Op::Shrink => {
                    self.decoder.shrink_to_fit();
                    self.check_buffered()?;
                }
            }
        }
        if self.end.is_none() {
            self.feed(self.wire.len() - self.fed)?;
            while self.poll(false)? {}
        }
        let end = match self.end {
            Some(end) => end,
            None => {
                // Closed by the peer: a frame boundary, or the bytes of a frame cut short.
                let end = self.decoder.finish();
                prop_assert_eq!(self.decoder.finish(), end);
                prop_assert_eq!(self.decoder.failure(), None, "finish spends nothing");
                end
            }
        };
        if end.is_ok() {
            prop_assert_eq!(self.taken, self.wire.len(), "ended well with bytes left");
        }
        Ok(Transcript {
            frames: self.frames,
            end,
        })
    }

    fn feed(&mut self, bytes: usize) -> Result<(), TestCaseError> {
        let bytes = bytes.min(self.wire.len() - self.fed);
        self.decoder.feed(&self.wire[self.fed..self.fed + bytes]);
        self.fed += bytes;
        self.check_buffered()
    }

    fn feed_shared(&mut self, bytes: usize) -> Result<(), TestCaseError> {
        let bytes = bytes.min(self.wire.len() - self.fed);
        self.decoder
            .feed_shared(self.shared_wire.slice(self.fed..self.fed + bytes));
        self.fed += bytes;
        self.check_buffered()
    }

    fn fill(&mut self, bytes: usize, spare: usize) -> Result<(), TestCaseError> {
        let bytes = bytes.min(self.wire.len() - self.fed);
        let space = self.decoder.unfilled(bytes + spare);
        prop_assert!(
            space.len() >= bytes + spare,
            "unfilled gave less than asked"
        );
        space[..bytes].copy_from_slice(&self.wire[self.fed..self.fed + bytes]);
        self.decoder.commit(bytes);
        self.fed += bytes;
        self.check_buffered()
    }

    /// One `next_frame`, or `next_shared_frame` if `shared`: true if it returned a frame.
    fn poll(&mut self, shared: bool) -> Result<bool, TestCaseError> {
        // The version of the next frame's header, if it is in: a frame taken now is that one.
        let version = self
            .wire
            .get(self.taken + 2)
            .and_then(|&code| ProtocolVersion::from_code(code))
            .unwrap_or(ProtocolVersion::LATEST);
        let result = if shared {
            self.decoder.next_shared_frame().map(|decoded| {
                decoded.map(|decoded| {
                    let mut bytes = Vec::new();
                    (self.encode)(&decoded.frame, version, &mut bytes);
                    (bytes, decoded.chunk.map(|chunk| chunk.as_ptr_range()))
                })
            })
        } else {
            self.decoder.next_frame().map(|frame| {
                frame.map(|frame| {
                    let mut bytes = Vec::new();
                    (self.encode)(&frame, version, &mut bytes);
                    (bytes, None)
                })
            })
        };
        match result {
            Ok(Some((bytes, chunk))) => {
                prop_assert_eq!(
                    &bytes[..],
                    &self.wire[self.taken..(self.taken + bytes.len()).min(self.wire.len())],
                    "a frame re-encodes to other bytes than it came from"
                );
                if let Some(chunk) = chunk {
                    // Decoded in place: the frame's own bytes in the shared buffer are in the
                    // chunk handed out with it.
                    let frame =
                        self.shared_wire[self.taken..self.taken + bytes.len()].as_ptr_range();
                    prop_assert!(
                        chunk.start <= frame.start && frame.end <= chunk.end,
                        "a frame handed out with a chunk that does not hold it"
                    );
                }
                prop_assert!(
                    bytes.len() <= self.limit.max_frame_bytes() as usize,
                    "a frame over the limit"
                );
                self.taken += bytes.len();
                prop_assert!(self.taken <= self.fed, "a frame of bytes not fed yet");
                self.frames.push(bytes);
                self.check_buffered()?;
                Ok(true)
            }
            Ok(None) => {
                let pending = &self.wire[self.taken..self.fed];
                let complete = pending.len() >= HEADER_BYTES
                    && pending.len() >= HEADER_BYTES + body_length(pending) as usize;
                prop_assert!(!complete, "waits for more with a whole frame buffered");
                if let Some(refuse_at) = self.refuse_at {
                    prop_assert!(
                        !(self.taken == refuse_at && self.fed >= refuse_at + HEADER_BYTES),
                        "waits for the body of a frame over the limit"
                    );
                }
                self.check_buffered()?;
                Ok(false)
            }
            Err(error) => {
                self.check_spent(error)?;
                self.end = Some(Err(error));
                Ok(false)
            }
        }
    }

    fn check_buffered(&self) -> Result<(), TestCaseError> {
        if self.end.is_none() && self.decoder.failure().is_none() {
            prop_assert_eq!(self.decoder.buffered_bytes(), self.fed - self.taken);
        }
        Ok(())
    }

    /// After `error`, the decoder answers it to everything and keeps no more bytes.
    fn check_spent(&mut self, error: ProtocolError) -> Result<(), TestCaseError> {
        prop_assert_eq!(self.decoder.failure(), Some(error));
        let buffered = self.decoder.buffered_bytes();
        self.decoder.feed(&[0x53, 0x57, 1]);
        self.decoder
            .feed_shared(Bytes::from_static(&[0x53, 0x57, 1]));
        self.decoder.unfilled(4)[..2].copy_from_slice(&[0x01, 0]);
        self.decoder.commit(2);
        prop_assert_eq!(
            self.decoder.buffered_bytes(),
            buffered,
            "bytes kept after an error"
        );
        prop_assert_eq!(self.decoder.next_frame().err(), Some(error));
        prop_assert_eq!(self.decoder.next_shared_frame().err(), Some(error));
        prop_assert_eq!(self.decoder.finish(), Err(error));
        Ok(())
    }
}

/// The `body_length` of the header at the front of `bytes` (at least 8 of them).
fn body_length(bytes: &[u8]) -> u32 {
    u32::from_le_bytes(bytes[4..HEADER_BYTES].try_into().unwrap())
}

fn encode_client(frame: &ClientFrame<'_>, version: ProtocolVersion, out: &mut Vec<u8>) {
    frame
        .encode_in(version, FrameLimit::MAX, out)
        .expect("a decoded frame fits the largest limit");
}

fn encode_server(frame: &ServerFrame<'_>, version: ProtocolVersion, out: &mut Vec<u8>) {
    frame.encode_in(version, out);
}

/// A server's reader: its decoder takes the version from the client's Hello.
fn server_reader(
    wire: &[u8],
    limit: FrameLimit,
) -> Reader<'_, ClientToServer, impl Fn(&ClientFrame<'_>, ProtocolVersion, &mut Vec<u8>)> {
    Reader::new(wire, Decoder::new(limit), encode_client)
}

/// A client's reader, of a connection whose Hello was in `version`.
fn client_reader(
    wire: &[u8],
    limit: FrameLimit,
    version: ProtocolVersion,
) -> Reader<'_, ServerToClient, impl Fn(&ServerFrame<'_>, ProtocolVersion, &mut Vec<u8>)> {
    Reader::new(wire, Decoder::with_version(limit, version), encode_server)
}

/// The error names the bytes it is about: those after the accepted frames. A client's
/// reader knows its connection's version from the start (`client_version`), a server's
/// from the Hello, the first frame it took.
fn check_error_names_its_bytes(
    wire: &[u8],
    transcript: &Transcript,
    limit: FrameLimit,
    client_side: bool,
    client_version: Option<ProtocolVersion>,
) -> Result<(), TestCaseError> {
    let Err(error) = transcript.end else {
        return Ok(());
    };
    let rest = &wire[transcript.frames.iter().map(Vec::len).sum::<usize>()..];
    let settled = match transcript.frames.first() {
        _ if client_side => client_version,
        Some(hello) => ProtocolVersion::from_code(hello[2]),
        None => None,
    };
    // Whether the header's version is one the reader takes: known, and the connection's
    // once settled (a client takes an Error in any).
    let version_ok = |header: &[u8]| {
        ProtocolVersion::from_code(header[2]).is_some_and(|version| {
            settled.is_none_or(|settled| settled == version)
                || (client_side && header[3] == FrameType::Error.code())
        })
    };
    if let ProtocolError::Truncated { buffered_bytes } = error {
        prop_assert_eq!(buffered_bytes, rest.len() as u64);
        let complete =
            rest.len() >= HEADER_BYTES && rest.len() >= HEADER_BYTES + body_length(rest) as usize;
        prop_assert!(
            !rest.is_empty() && !complete,
            "truncated with a whole frame left"
        );
        if rest.len() >= HEADER_BYTES {
            // A decoder judges a header before it waits for the body.
            let frame_type = FrameType::from_code(rest[3]);
            prop_assert!(rest[..2] == MAGIC && version_ok(rest) && frame_type.is_some());
            let version = ProtocolVersion::from_code(rest[2]).unwrap();
            let frame_bytes = HEADER_BYTES as u64 + u64::from(body_length(rest));
            prop_assert!(
                frame_bytes <= u64::from(limit.max_frame_bytes()),
                "waited for a frame over the limit"
            );
            let (least, most) = frame_type.unwrap().body_bytes_range(version);
            prop_assert!((least..=most).contains(&(body_length(rest) as usize)));
        }
        return Ok(());
    }
    prop_assert!(
        rest.len() >= HEADER_BYTES,
        "{:?} before a whole header",
        error
    );
    let found_type = FrameType::from_code(rest[3]);
    let length = body_length(rest);
    let header_ok = rest[..2] == MAGIC && version_ok(rest);
    match error {
        ProtocolError::BadMagic { found } => {
            prop_assert_eq!(&found[..], &rest[..2]);
            prop_assert_ne!(found, MAGIC);
        }
        ProtocolError::UnsupportedVersion { version } => {
            prop_assert_eq!(&rest[..2], &MAGIC[..]);
            prop_assert_eq!(version, rest[2]);
            prop_assert!(!version_ok(rest));
        }
        ProtocolError::UnknownFrameType { code } => {
            prop_assert!(header_ok);
            prop_assert_eq!(code, rest[3]);
            prop_assert_eq!(found_type, None);
        }
        ProtocolError::FrameTooLarge {
            frame_bytes,
            max_frame_bytes,
        } => {
            prop_assert!(header_ok && found_type.is_some());
            prop_assert_eq!(frame_bytes, HEADER_BYTES as u64 + u64::from(length));
            prop_assert_eq!(max_frame_bytes, limit.max_frame_bytes());
            prop_assert!(frame_bytes > u64::from(max_frame_bytes));
        }
        ProtocolError::BadLength {
            frame_type,
            body_bytes,
        } => {
            prop_assert!(header_ok);
            prop_assert_eq!(Some(frame_type), found_type);
            prop_assert_eq!(body_bytes, length);
            let version = ProtocolVersion::from_code(rest[2]).unwrap();
            let (least, most) = frame_type.body_bytes_range(version);
            prop_assert!((body_bytes as usize) < least || body_bytes as usize > most);
        }
        ProtocolError::UnexpectedFrame { frame_type, .. } => {
            prop_assert!(header_ok);
            prop_assert_eq!(Some(frame_type), found_type);
        }
        ProtocolError::BadField { frame_type, .. } => {
            prop_assert!(header_ok);
            prop_assert_eq!(Some(frame_type), found_type);
            prop_assert!(
                rest.len() >= HEADER_BYTES + length as usize,
                "a field of a body not all in"
            );
        }
        ProtocolError::Truncated { .. } => unreachable!("handled above"),
    }
    Ok(())
}

/// A server's Error reply to `error` on a connection of `version` decodes on the client
/// side to its code and its description (cut to the detail's bound at a character
/// boundary).
fn check_error_reply(error: ProtocolError, version: ProtocolVersion) -> Result<(), TestCaseError> {
    let mut reply = Vec::new();
    let written = encode_error_reply(&error, version, &mut reply);
    prop_assert_eq!(written, reply.len());
    if let ProtocolError::UnsupportedVersion { version: refused } = error {
        // Its header carries the version refused; the rest is laid out as in every version.
        prop_assert_eq!(reply[2], refused);
        reply[2] = version.code();
    } else {
        prop_assert_eq!(reply[2], version.code());
    }
    let description = error.to_string();
    let mut cut = description.len().min(ERROR_DETAIL_MAX_BYTES);
    while !description.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut decoder = Decoder::<ServerToClient>::new(FrameLimit::MIN);
    decoder.feed(&reply);
    prop_assert_eq!(
        decoder.next_frame(),
        Ok(Some(ServerFrame::Error {
            code: error.code(),
            detail: &description[..cut],
        }))
    );
    prop_assert_eq!(decoder.next_frame(), Ok(None));
    prop_assert_eq!(decoder.finish(), Ok(()));
    Ok(())
}

/// A frame over `limit` of a type known in either direction, in `version`, with a body
/// length that `limit` does not allow.
fn oversized_header(
    limit: FrameLimit,
    version: ProtocolVersion,
    frame_type: FrameType,
    excess: u64,
) -> Vec<u8> {
    let body_bytes = (u64::from(limit.max_frame_bytes()) - HEADER_BYTES as u64 + excess)
        .min(u64::from(u32::MAX));
    header(version.code(), frame_type.code(), body_bytes as u32)
}

proptest! {
    #![proptest_config(fuzz_support::config(regressions_file!("fuzz_protocol")))]

    #[test]
    fn valid_client_streams_decode_to_their_frames_however_they_are_read(
        (_version, frames) in any_client_stream(),
        limit in frame_limit(),
        schedule in schedule(),
    ) {
        let wire = frames.concat();
        let transcript = server_reader(&wire, limit).read(&schedule)?;
        prop_assert_eq!(transcript, Transcript { frames, end: Ok(()) });
    }

    #[test]
    fn valid_server_streams_decode_to_their_frames_however_they_are_read(
        (version, frames) in any_server_stream(),
        limit in frame_limit(),
        schedule in schedule(),
    ) {
        let wire = frames.concat();
        let transcript = client_reader(&wire, limit, version).read(&schedule)?;
        prop_assert_eq!(transcript, Transcript { frames, end: Ok(()) });
    }

    #[test]
    fn hostile_client_bytes_read_the_same_however_read_and_errors_name_their_bytes(
        (version, wire) in hostile(client_stream, |version| {
            let hello = frame(version, FrameType::Hello, &[]);
            prop_oneof![server_frame(version), Just(hello)]
        }),
        limit in frame_limit(),
        schedule in schedule(),
    ) {
        let whole = server_reader(&wire, limit).read(&[])?;
        check_error_names_its_bytes(&wire, &whole, limit, false, None)?;
        if let Err(error) = whole.end {
            check_error_reply(error, version)?;
        }
        prop_assert_eq!(server_reader(&wire, limit).read(&schedule)?, whole);
    }

    #[test]
    fn hostile_server_bytes_read_the_same_however_read_and_errors_name_their_bytes(
        (version, wire) in hostile(server_stream, |version| {
            prop_oneof![client_frame(version), welcome_frame(version)]
        }),
        limit in frame_limit(),
        schedule in schedule(),
    ) {
        let whole = client_reader(&wire, limit, version).read(&[])?;
        check_error_names_its_bytes(&wire, &whole, limit, true, Some(version))?;
        prop_assert_eq!(client_reader(&wire, limit, version).read(&schedule)?, whole);
    }

    #[test]
    fn fed_as_shared_chunks_exactly_the_frames_whole_in_one_are_decoded_in_place(
        (version, frames) in any_client_stream(),
        cuts in proptest::collection::vec(any::<Index>(), 0..8),
    ) {
        let wire = Bytes::from(frames.concat());
        let mut cuts: Vec<usize> = cuts.iter().map(|cut| cut.index(wire.len() + 1)).collect();
        cuts.extend([0, wire.len()]);
        cuts.sort_unstable();
        cuts.dedup();
        let mut decoder = Decoder::<ClientToServer>::new(FrameLimit::MAX);
        let mut taken = 0;
        for read in cuts.windows(2) {
            decoder.feed_shared(wire.slice(read[0]..read[1]));
            while let Some(decoded) = decoder.next_shared_frame().map_err(|error| {
                TestCaseError::fail(format!("a valid stream failed: {error}"))
            })? {
                let mut encoded = Vec::new();
                decoded.frame.encode_in(version, FrameLimit::MAX, &mut encoded).unwrap();
                let frame_bytes = encoded.len();
                let whole_in_read = taken >= read[0] && taken + frame_bytes <= read[1];
                prop_assert_eq!(
                    decoded.chunk.is_some(),
                    whole_in_read,
                    "frame at {} of {} bytes, read {:?}", taken, frame_bytes, read
                );
                if let (ClientFrame::Submit(submit), Some(chunk)) = (decoded.frame, decoded.chunk) {
                    let message = submit.to_message_in(ConnectionId(1), Some(chunk));
                    prop_assert_eq!(&message.payload[..], submit.payload);
                    if !submit.payload.is_empty() {
                        prop_assert_eq!(
                            message.payload.as_ptr(),
                            submit.payload.as_ptr(),
                            "the payload was copied"
                        );
                    }
                }
                taken += frame_bytes;
            }
        }
        prop_assert_eq!(taken, wire.len());
        prop_assert_eq!(decoder.finish(), Ok(()));
    }

    #[test]
    fn a_frame_over_the_limit_is_refused_as_soon_as_its_header_is_in(
        client_side in any::<bool>(),
        (version, client_frames, server_frames) in version().prop_flat_map(|version| {
            (Just(version), client_stream(version), server_stream(version))
        }),
        limit in frame_limit(),
        frame_type in select(FrameType::ALL.to_vec()),
        excess in prop_oneof![1u64..4, 1u64..=u64::from(u32::MAX)],
        trailing in proptest::collection::vec(any::<u8>(), 0..600),
        schedule in schedule(),
    ) {
        let frames = if client_side { client_frames } else { server_frames };
        let mut wire = frames.concat();
        let refuse_at = wire.len();
        wire.extend(oversized_header(limit, version, frame_type, excess));
        wire.extend(trailing);
        let transcript = if client_side {
            let mut reader = server_reader(&wire, limit);
            reader.refuse_at = Some(refuse_at);
            reader.read(&schedule)?
        } else {
            let mut reader = client_reader(&wire, limit, version);
            reader.refuse_at = Some(refuse_at);
            reader.read(&schedule)?
        };
        prop_assert_eq!(transcript.frames, frames);
        let body_bytes = body_length(&wire[refuse_at..]);
        prop_assert_eq!(
            transcript.end,
            Err(ProtocolError::FrameTooLarge {
                frame_bytes: HEADER_BYTES as u64 + u64::from(body_bytes),
                max_frame_bytes: limit.max_frame_bytes(),
            })
        );
    }

    #[test]
    fn a_submit_at_the_limit_is_accepted_and_one_byte_over_is_refused(
        max_frame_bytes in FrameLimit::MIN.max_frame_bytes()..=(1 << 17),
        fill in any::<u8>(),
        version in version(),
    ) {
        let limit = FrameLimit::new(max_frame_bytes).unwrap();
        let submit = |payload_bytes: u32| {
            let mut body = 7u64.to_le_bytes().to_vec();
            body.extend_from_slice(&[0; 8]);
            body.resize(body.len() + payload_bytes as usize, fill);
            frame(version, FrameType::Submit, &body)
        };
        let mut wire = frame(version, FrameType::Hello, &[]);
        let at_limit = submit(limit.max_payload_bytes());
        prop_assert_eq!(at_limit.len(), max_frame_bytes as usize);
        wire.extend_from_slice(&at_limit);
        let over = submit(limit.max_payload_bytes() + 1);
        wire.extend_from_slice(&over);

        let transcript = server_reader(&wire, limit).read(&[])?;
        prop_assert_eq!(transcript.frames.len(), 2, "Hello and the Submit at the limit");
        prop_assert_eq!(&transcript.frames[1], &at_limit);
        prop_assert_eq!(
            transcript.end,
            Err(ProtocolError::FrameTooLarge {
                frame_bytes: u64::from(max_frame_bytes) + 1,
                max_frame_bytes,
            })
        );

        // The encoder refuses the same frame and writes nothing.
        let mut decoder = Decoder::<ClientToServer>::new(FrameLimit::MAX);
        decoder.feed(&wire);
        prop_assert_eq!(decoder.next_frame(), Ok(Some(ClientFrame::Hello)));
        decoder.next_frame().unwrap();
        let Ok(Some(frame)) = decoder.next_frame() else {
            return Err(TestCaseError::fail("the larger limit refused the larger Submit"));
        };
        let mut out = vec![0xEE];
        prop_assert!(frame.encode_in(version, limit, &mut out).is_err());
        prop_assert_eq!(out, vec![0xEE]);
    }

    #[test]
    fn a_response_at_the_limit_is_accepted_and_one_byte_over_is_refused(
        max_frame_bytes in FrameLimit::MIN.max_frame_bytes()..=(1 << 17),
        fill in any::<u8>(),
    ) {
        let limit = FrameLimit::new(max_frame_bytes).unwrap();
        let version = ProtocolVersion::V2;
        let reply = |response_bytes: u32| {
            let mut body = 7u64.to_le_bytes().to_vec();
            body.extend_from_slice(&[OUTCOME_DELIVERED, 0, 0, 0]);
            body.extend_from_slice(&[0; 8]);
            body.resize(body.len() + response_bytes as usize, fill);
            frame(version, FrameType::Reply, &body)
        };
        let mut welcome = 1u64.to_le_bytes().to_vec();
        welcome.extend_from_slice(&max_frame_bytes.to_le_bytes());
        welcome.extend_from_slice(&1u32.to_le_bytes());
        let mut wire = frame(version, FrameType::Welcome, &welcome);
        let at_limit = reply(limit.max_response_bytes());
        prop_assert_eq!(at_limit.len(), max_frame_bytes as usize);
        wire.extend_from_slice(&at_limit);
        let refuse_at = wire.len();
        wire.extend_from_slice(&reply(limit.max_response_bytes() + 1));

        let mut reader = client_reader(&wire, limit, version);
        reader.refuse_at = Some(refuse_at);
        let transcript = reader.read(&[])?;
        prop_assert_eq!(transcript.frames.len(), 2, "Welcome and the Reply at the limit");
        prop_assert_eq!(&transcript.frames[1], &at_limit);
        prop_assert_eq!(
            transcript.end,
            Err(ProtocolError::FrameTooLarge {
                frame_bytes: u64::from(max_frame_bytes) + 1,
                max_frame_bytes,
            })
        );
    }
}
