//! The streaming [`Decoder`] of one connection, and the [`Direction`] it reads: the frames
//! of that side and the handshake rule that orders them.

use core::marker::PhantomData;

use bytes::Bytes;

use super::errors::ProtocolError;
use super::frames::{ClientFrame, ServerFrame};
use super::header::{FrameLimit, FrameType, ProtocolVersion, HEADER_BYTES, MAGIC};

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

    /// Whether a frame whose header carries this type code is taken in any version this
    /// end speaks, not only the connection's: an Error to a client, whose layout is the
    /// same in every version (a server may refuse a connection before it knows its
    /// version).
    fn takes_any_version(type_code: u8) -> bool;
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

    fn takes_any_version(_type_code: u8) -> bool {
        false
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

    fn takes_any_version(type_code: u8) -> bool {
        type_code == FrameType::Error.code()
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
/// Versions: a connection speaks one [`ProtocolVersion`] throughout. A decoder made with
/// [`Decoder::new`] takes it from the handshake frame (a server's, from the client's Hello,
/// in any version this module speaks); one made with [`Decoder::with_version`] (a client's,
/// with the version of the Hello it sent) knows it from the start. Every other frame must
/// carry that version, but that a client takes an Error frame in any version.
///
/// Bytes come in two ways. [`Decoder::feed`] (or [`Decoder::unfilled`] and
/// [`Decoder::commit`]) copies them into the decoder's own buffer. [`Decoder::feed_shared`]
/// takes a [`Bytes`] chunk of a read buffer and keeps it as it is: the frames that lie whole
/// in it are decoded in place, and [`Decoder::next_shared_frame`] hands out the chunk with
/// each, so that a Submit's payload can share the read buffer instead of being copied
/// ([`Submit::to_message_in`](super::Submit::to_message_in)). Only the bytes that finish a
/// frame begun in earlier bytes, and a frame cut off at the chunk's end, are copied into
/// the decoder's own buffer. Both ways decode the same bytes to the same frames and errors.
///
/// Memory: it holds the bytes fed and not yet decoded; a caller that drains
/// [`Decoder::next_frame`] after each read holds at most one read plus one partial frame
/// (under the limit) in its own buffer. A shared chunk is let go as soon as its last frame
/// is taken (at the `next_frame` call after it, or the next feed); its memory is then held
/// only by what was handed out of it.
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
    /// Owned bytes received and not yet decoded are `buffer[start..end]`; `buffer[end..]`
    /// is initialized space for the next read ([`Decoder::unfilled`]). `start <= end <=
    /// buffer.len()`.
    buffer: Vec<u8>,
    /// Offset of the first owned byte not yet decoded.
    start: usize,
    /// Offset one past the last owned byte received.
    end: usize,
    /// A chunk from [`Decoder::feed_shared`]: its bytes from `chunk_start` on were received
    /// after the owned ones and are not yet decoded. While any are left, the owned bytes
    /// are whole frames by their headers' lengths (`feed_shared` copied in what finishes
    /// the last one), so that each frame lies whole in one or the other. Empty, and
    /// `chunk_start` 0, when there is none.
    chunk: Bytes,
    /// Offset in `chunk` of its first byte not yet decoded; `chunk_start <= chunk.len()`.
    chunk_start: usize,
    /// The largest frame accepted.
    limit: FrameLimit,
    /// The connection's version: given, or settled by the handshake frame; `None` until
    /// then.
    version: Option<ProtocolVersion>,
    /// Whether the handshake frame (Hello, or Welcome) has been decoded.
    handshake_done: bool,
    /// The first error, answered to every later call.
    failure: Option<ProtocolError>,
    /// Frames decoded so far: the number of the next frame, by which
    /// [`Decoder::frame_in_progress`] names the one arriving.
    frames_decoded: u64,
    direction: PhantomData<fn() -> D>,
}

/// A frame from [`Decoder::next_shared_frame`], with the chunk its body lies in when it
/// came whole in one fed by [`Decoder::feed_shared`].
///
/// ```
/// use spillway::message::Bytes;
/// use spillway::net::protocol::{ClientFrame, ClientToServer, Decoder, FrameLimit};
///
/// let hello = Bytes::from_static(&[0x53, 0x57, 0x02, 0x01, 0, 0, 0, 0]);
/// let mut shared = Decoder::<ClientToServer>::new(FrameLimit::DEFAULT);
/// shared.feed_shared(hello.clone());
/// let decoded = shared.next_shared_frame().unwrap().unwrap();
/// assert_eq!(decoded.frame, ClientFrame::Hello);
/// // The very chunk fed, not a copy of it.
/// assert_eq!(decoded.chunk.map(|chunk| chunk.as_ptr()), Some(hello.as_ptr()));
///
/// let mut copied = Decoder::<ClientToServer>::new(FrameLimit::DEFAULT);
/// copied.feed(&hello);
/// assert_eq!(copied.next_shared_frame().unwrap().unwrap().chunk, None);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SharedFrame<'buffer, F> {
    /// The frame, borrowing the decoder as from [`Decoder::next_frame`].
    pub frame: F,
    /// The shared chunk the frame's body lies in: its borrowed bytes (a Submit's payload)
    /// can be taken from it without a copy ([`Bytes::slice_ref`]). `None` when the frame
    /// was decoded from the decoder's own buffer.
    pub chunk: Option<&'buffer Bytes>,
}

impl<D: Direction> Decoder<D> {
    /// An empty decoder that accepts frames up to `limit`, in the version the handshake
    /// frame settles (any this module speaks). Allocates nothing until fed.
    pub fn new(limit: FrameLimit) -> Self {
        Self::with_optional_version(limit, None)
    }

    /// An empty decoder that accepts frames up to `limit` in `version` only (and, reading
    /// a server, Error frames in any version). Allocates nothing until fed.
    ///
    /// ```
    /// use spillway::message::ConnectionId;
    /// use spillway::net::protocol::{Decoder, FrameLimit, ProtocolError, ProtocolVersion};
    /// use spillway::net::protocol::{ServerFrame, ServerToClient};
    ///
    /// let version = ProtocolVersion::V1;
    /// let mut decoder = Decoder::<ServerToClient>::with_version(FrameLimit::MIN, version);
    /// assert_eq!(decoder.version(), Some(version));
    /// // The version-1 Welcome of `docs/PROTOCOL.md` section 10.2: connection 7, 64 KiB frames.
    /// decoder.feed(&[0x53, 0x57, 1, 0x81, 16, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0]);
    /// decoder.feed(&[0, 0, 1, 0, 0xe8, 3, 0, 0]);
    /// let welcome = decoder.next_frame().unwrap().unwrap();
    /// assert!(matches!(
    ///     welcome,
    ///     ServerFrame::Welcome {
    ///         connection: ConnectionId(7),
    ///         frame_limit: FrameLimit::DEFAULT,
    ///         ..
    ///     }
    /// ));
    /// // A Pong in version 2 is refused: the connection speaks version 1.
    /// decoder.feed(&[0x53, 0x57, 2, 0x87, 8, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0]);
    /// assert_eq!(decoder.next_frame(), Err(ProtocolError::UnsupportedVersion { version: 2 }));
    /// ```
    pub fn with_version(limit: FrameLimit, version: ProtocolVersion) -> Self {
        Self::with_optional_version(limit, Some(version))
    }

    fn with_optional_version(limit: FrameLimit, version: Option<ProtocolVersion>) -> Self {
        Self {
            buffer: Vec::new(),
            start: 0,
            end: 0,
            chunk: Bytes::new(),
            chunk_start: 0,
            limit,
            version,
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

    /// Accepts frames up to `limit` from now on: a client raises its limit to the one the
    /// server's Welcome announced, since version-2 Replies may be that large. Frames already
    /// judged by their header keep the verdict they had.
    ///
    /// ```
    /// use spillway::message::MessageId;
    /// use spillway::net::protocol::{Decoder, FrameLimit, ProtocolError};
    /// use spillway::net::protocol::{ServerFrame, ServerToClient};
    /// use spillway::outcome::Outcome;
    ///
    /// // The Welcome of `docs/PROTOCOL.md` section 10.1 (64 KiB frames), then a 1028-byte Reply.
    /// let mut wire = vec![0x53, 0x57, 2, 0x81, 16, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0];
    /// wire.extend_from_slice(&[0, 0, 1, 0, 0xe8, 3, 0, 0]);
    /// let (message_id, outcome, response) = (MessageId(1), Outcome::Delivered, &[b'z'; 1000]);
    /// let reply = ServerFrame::Reply { message_id, outcome, response, detail: "" };
    /// assert_eq!(reply.encode(&mut wire), 1028);
    ///
    /// // A client starts at the smallest limit, which takes any Welcome but not this Reply.
    /// let mut raised = Decoder::<ServerToClient>::new(FrameLimit::MIN);
    /// let mut kept = Decoder::<ServerToClient>::new(FrameLimit::MIN);
    /// for decoder in [&mut raised, &mut kept] {
    ///     decoder.feed(&wire);
    ///     decoder.next_frame().unwrap(); // the Welcome
    /// }
    /// raised.set_limit(FrameLimit::DEFAULT); // the Welcome's
    /// assert_eq!(raised.next_frame(), Ok(Some(reply)));
    /// let too_large = ProtocolError::FrameTooLarge { frame_bytes: 1028, max_frame_bytes: 512 };
    /// assert_eq!(kept.next_frame(), Err(too_large));
    /// ```
    pub fn set_limit(&mut self, limit: FrameLimit) {
        self.limit = limit;
    }

    /// The connection's version: the one given to [`Decoder::with_version`], or the
    /// handshake frame's; `None` before a [`Decoder::new`] decoder has seen it.
    ///
    /// ```
    /// use spillway::net::protocol::{ClientFrame, ClientToServer, Decoder, FrameLimit};
    /// use spillway::net::protocol::ProtocolVersion;
    ///
    /// let mut decoder = Decoder::<ClientToServer>::new(FrameLimit::DEFAULT);
    /// assert_eq!(decoder.version(), None);
    /// // A version-1 Hello (`docs/PROTOCOL.md` section 10.2) settles it.
    /// decoder.feed(&[0x53, 0x57, 0x01, 0x01, 0, 0, 0, 0]);
    /// assert_eq!(decoder.next_frame(), Ok(Some(ClientFrame::Hello)));
    /// assert_eq!(decoder.version(), Some(ProtocolVersion::V1));
    /// ```
    pub fn version(&self) -> Option<ProtocolVersion> {
        self.version
    }

    /// Appends bytes read from the connection. Ignored once the decoder has failed.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.failure.is_some() {
            return;
        }
        self.absorb_chunk();
        self.append_owned(bytes);
    }

    /// Appends a chunk of bytes read from the connection, kept as it is (no copy): the
    /// frames that lie whole in it are decoded in place, and
    /// [`Decoder::next_shared_frame`] hands the chunk out with each. Copied into the
    /// decoder's own buffer are only the bytes that finish a frame begun in earlier bytes
    /// (so that every frame lies whole in one place) and, when it is decoded up to there,
    /// a frame cut off at the chunk's end. Ignored once the decoder has failed.
    ///
    /// A chunk still holding undecoded bytes when the next one comes is copied in first:
    /// drain [`Decoder::next_frame`] between feeds to keep the copies to the frames that
    /// straddle two chunks.
    ///
    /// ```
    /// use spillway::message::Bytes;
    /// use spillway::net::protocol::{ClientFrame, ClientToServer, Decoder, FrameLimit};
    ///
    /// let mut wire = Vec::new();
    /// ClientFrame::Hello.encode(FrameLimit::DEFAULT, &mut wire).unwrap();
    /// ClientFrame::Ping { nonce: 9 }.encode(FrameLimit::DEFAULT, &mut wire).unwrap();
    /// let wire = Bytes::from(wire);
    /// // Two reads: the Hello and half the Ping, then the rest of the Ping.
    /// let (first, second) = (wire.slice(..12), wire.slice(12..));
    /// let mut decoder = Decoder::<ClientToServer>::new(FrameLimit::DEFAULT);
    /// decoder.feed_shared(first.clone());
    /// let hello = decoder.next_shared_frame().unwrap().unwrap();
    /// assert_eq!(hello.chunk.map(|chunk| chunk.as_ptr()), Some(first.as_ptr())); // in place
    /// assert_eq!(decoder.next_frame(), Ok(None));
    /// assert_eq!(decoder.buffered_bytes(), 4); // the Ping's start, copied
    /// decoder.feed_shared(second);
    /// let ping = decoder.next_shared_frame().unwrap().unwrap();
    /// assert_eq!((ping.frame, ping.chunk), (ClientFrame::Ping { nonce: 9 }, None));
    /// ```
    pub fn feed_shared(&mut self, chunk: Bytes) {
        if self.failure.is_some() {
            return;
        }
        self.absorb_chunk();
        let mut copied = 0;
        loop {
            let missing = self.bytes_to_frame_boundary();
            if missing == 0 || copied == chunk.len() {
                break;
            }
            let step = missing.min(chunk.len() - copied);
            self.append_owned(&chunk[copied..copied + step]);
            copied += step;
        }
        if copied < chunk.len() {
            self.chunk = chunk;
            self.chunk_start = copied;
        }
    }

    /// Space of at least `at_least_bytes` to read into directly, saving [`Decoder::feed`]'s
    /// copy; follow with [`Decoder::commit`] of the bytes read. The space is reused from
    /// read to read, so it is zeroed only when it grows.
    pub fn unfilled(&mut self, at_least_bytes: usize) -> &mut [u8] {
        // What is read next comes after a shared chunk's bytes: those join the buffer first.
        self.absorb_chunk();
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
        self.next_shared_frame()
            .map(|decoded| decoded.map(|shared| shared.frame))
    }

    /// [`Decoder::next_frame`], with the shared chunk ([`Decoder::feed_shared`]) the
    /// frame's body lies in, if it does: what a reader that feeds shared chunks calls to
    /// take payloads without a copy.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use spillway::message::{ConnectionId, MessageId, Priority, Role, TenantId};
    /// use spillway::net::protocol::{ClientFrame, ClientToServer, Decoder, FrameLimit, Submit};
    ///
    /// let submit = Submit {
    ///     message_id: MessageId(1),
    ///     tenant: TenantId(0),
    ///     priority: Priority::P1,
    ///     role: Role::Session,
    ///     payload: b"payload",
    /// };
    /// let mut wire = Vec::new();
    /// ClientFrame::Hello.encode(FrameLimit::DEFAULT, &mut wire).unwrap();
    /// ClientFrame::Submit(submit).encode(FrameLimit::DEFAULT, &mut wire).unwrap();
    /// let read = Bytes::from(wire);
    ///
    /// let mut decoder = Decoder::<ClientToServer>::new(FrameLimit::DEFAULT);
    /// decoder.feed_shared(read.clone());
    /// decoder.next_frame().unwrap(); // Hello
    /// let shared = decoder.next_shared_frame().unwrap().unwrap();
    /// let ClientFrame::Submit(submit) = shared.frame else { unreachable!() };
    /// let message = submit.to_message_in(ConnectionId(3), shared.chunk);
    /// // The payload is the read's own bytes, not a copy.
    /// assert_eq!(message.payload.as_ptr(), read[read.len() - 7..].as_ptr());
    /// ```
    pub fn next_shared_frame(
        &mut self,
    ) -> Result<Option<SharedFrame<'_, D::Frame<'_>>>, ProtocolError> {
        if let Some(failure) = self.failure {
            return Err(failure);
        }
        if self.start == self.end {
            return self.next_in_chunk();
        }
        // Owned bytes come first. With a chunk behind them they are whole frames; without
        // one, a frame they leave incomplete waits for more bytes.
        let received = &self.buffer[self.start..self.end];
        let Some(header) = received.first_chunk::<HEADER_BYTES>() else {
            return Ok(None);
        };
        let (frame_type, version, body_bytes, completes_handshake) = match self.check_header(header)
        {
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
        self.settle(completes_handshake, version);
        match D::decode_body(
            frame_type,
            &self.buffer[body_start..body_start + body_bytes],
        ) {
            Ok(frame) => Ok(Some(SharedFrame { frame, chunk: None })),
            Err(error) => {
                self.failure = Some(error);
                Err(error)
            }
        }
    }

    /// The next frame when no owned bytes are left: decoded in place from the shared
    /// chunk if it holds the whole frame; otherwise what is left of the chunk (the start
    /// of a frame) is copied into the owned buffer, the chunk let go, and more is needed.
    fn next_in_chunk(&mut self) -> Result<Option<SharedFrame<'_, D::Frame<'_>>>, ProtocolError> {
        let received = &self.chunk[self.chunk_start..];
        let Some(header) = received.first_chunk::<HEADER_BYTES>() else {
            self.absorb_chunk();
            return Ok(None);
        };
        let (frame_type, version, body_bytes, completes_handshake) = match self.check_header(header)
        {
            Ok(checked) => checked,
            Err(error) => {
                self.failure = Some(error);
                return Err(error);
            }
        };
        let frame_bytes = HEADER_BYTES + body_bytes;
        if received.len() < frame_bytes {
            self.absorb_chunk();
            return Ok(None);
        }
        let body_start = self.chunk_start + HEADER_BYTES;
        self.chunk_start += frame_bytes;
        self.frames_decoded += 1;
        self.settle(completes_handshake, version);
        match D::decode_body(frame_type, &self.chunk[body_start..body_start + body_bytes]) {
            Ok(frame) => Ok(Some(SharedFrame {
                frame,
                chunk: Some(&self.chunk),
            })),
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
        (self.end - self.start) + (self.chunk.len() - self.chunk_start)
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
        // The next frame lies whole in the owned bytes or in the chunk (see `chunk`), and
        // the owned ones come first.
        let received = if self.start < self.end {
            &self.buffer[self.start..self.end]
        } else {
            &self.chunk[self.chunk_start..]
        };
        if received.is_empty() {
            return None;
        }
        let arriving = match received.first_chunk::<HEADER_BYTES>() {
            None => true,
            Some(header) => match self.check_header(header) {
                Ok((_, _, body_bytes, _)) => received.len() < HEADER_BYTES + body_bytes,
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
    /// large frame. A shared chunk's undecoded bytes are copied into the decoder's own
    /// buffer, so that the read buffer it came from is no longer held here.
    pub fn shrink_to_fit(&mut self) {
        self.absorb_chunk();
        self.compact();
        self.buffer.truncate(self.end);
        self.buffer.shrink_to_fit();
    }

    /// After a frame was taken: the handshake is done once its frame is, and the connection
    /// speaks that frame's version from then on if it had none.
    fn settle(&mut self, completes_handshake: bool, version: ProtocolVersion) {
        if completes_handshake {
            self.handshake_done = true;
            self.version.get_or_insert(version);
        }
    }

    /// The checks on a header, in the order `docs/PROTOCOL.md` gives: the frame's type,
    /// its version, its body length, and whether it completes the handshake.
    fn check_header(
        &self,
        header: &[u8; HEADER_BYTES],
    ) -> Result<(FrameType, ProtocolVersion, usize, bool), ProtocolError> {
        let [magic_0, magic_1, version_code, type_code, length @ ..] = *header;
        if [magic_0, magic_1] != MAGIC {
            return Err(ProtocolError::BadMagic {
                found: [magic_0, magic_1],
            });
        }
        let unsupported = ProtocolError::UnsupportedVersion {
            version: version_code,
        };
        let version = ProtocolVersion::from_code(version_code).ok_or(unsupported)?;
        if self
            .version
            .is_some_and(|settled| settled != version && !D::takes_any_version(type_code))
        {
            return Err(unsupported);
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
        let (body_bytes_min, body_bytes_max) = frame_type.body_bytes_range(version);
        if body_bytes_usize < body_bytes_min || body_bytes_usize > body_bytes_max {
            return Err(ProtocolError::BadLength {
                frame_type,
                body_bytes,
            });
        }
        let completes_handshake = D::check_sequence(frame_type, self.handshake_done)?;
        Ok((frame_type, version, body_bytes_usize, completes_handshake))
    }

    /// How many more bytes the owned ones need to end at a frame boundary, going by the
    /// headers' lengths alone (a header that fails its checks is refused when its turn
    /// comes, and nothing after it is decoded, so where its frame ends does not matter).
    /// 0 when they end at one.
    fn bytes_to_frame_boundary(&self) -> usize {
        let mut at = self.start;
        loop {
            let held = &self.buffer[at..self.end];
            if held.is_empty() {
                return 0;
            }
            let Some(header) = held.first_chunk::<HEADER_BYTES>() else {
                return HEADER_BYTES - held.len();
            };
            let [.., length_0, length_1, length_2, length_3] = *header;
            let body_bytes = u32::from_le_bytes([length_0, length_1, length_2, length_3]);
            // At most 8 + 2^32 - 1: no overflow in `u64`, and the `usize` fallback only
            // matters on targets whose memory could not hold such a frame anyway.
            let frame_bytes = HEADER_BYTES as u64 + u64::from(body_bytes);
            if frame_bytes > held.len() as u64 {
                return usize::try_from(frame_bytes - held.len() as u64).unwrap_or(usize::MAX);
            }
            at += frame_bytes as usize;
        }
    }

    /// Copies what is left of the shared chunk into the owned buffer, behind the owned
    /// bytes, and lets the chunk go.
    fn absorb_chunk(&mut self) {
        let chunk = core::mem::take(&mut self.chunk);
        let chunk_start = core::mem::take(&mut self.chunk_start);
        self.append_owned(&chunk[chunk_start..]);
    }

    /// Copies `bytes` into the owned buffer, behind the owned bytes.
    fn append_owned(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        self.make_room(bytes.len());
        self.buffer[self.end..self.end + bytes.len()].copy_from_slice(bytes);
        self.end += bytes.len();
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
