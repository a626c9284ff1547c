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
//! | 2 | 1 | protocol version, [`ProtocolVersion::code`]: 1 or 2 ([`PROTOCOL_VERSION`], the newest) |
//! | 3 | 1 | frame type, [`FrameType::code`] |
//! | 4 | 4 | body length in bytes, `u32` |
//!
//! Two versions are spoken ([`ProtocolVersion`]): a connection keeps the version of its
//! Hello, and the server answers in it. They differ in the Reply alone, which in version 2
//! carries the handler's response (delivered) or error text (failed).
//!
//! Frame types `0x01..=0x7F` are sent by clients ([`ClientFrame`]), `0x81..=0xFF` by the
//! server ([`ServerFrame`]). The decoder judges a frame by its header before it waits for
//! the body, so a malformed or oversized frame is refused after 8 bytes and never buffered.
//! It is strict: a frame it accepts re-encodes to exactly the bytes it came from.
//!
//! Decoding is zero-copy: a Submit's payload, a Reply's response and an Error's detail
//! borrow the decoder's buffer, and a Submit costs four fixed-offset reads after the header checks. A reader that
//! feeds the decoder [`Bytes`](crate::message::Bytes) chunks of its read buffer
//! ([`Decoder::feed_shared`]) can also take each payload as a slice of that buffer
//! ([`Decoder::next_shared_frame`], [`Submit::to_message_in`]): the engine's message then
//! shares the read buffer, with no copy and no allocation per message.

mod codes;
mod decoder;
mod errors;
mod frames;
mod header;

pub use codes::{
    OutcomeFields, WireCode, OUTCOME_CANCELLED, OUTCOME_DELIVERED, OUTCOME_DROPPED, OUTCOME_FAILED,
    OUTCOME_REFUSED, OUTCOME_SHED,
};
pub use decoder::{ClientToServer, Decoder, Direction, ServerToClient, SharedFrame};
pub use errors::{ErrorCode, FrameTooLarge, ProtocolError};
pub use frames::{encode_error_reply, ClientFrame, ServerFrame, Submit};
pub use header::{
    FrameLimit, FrameType, ProtocolVersion, ERROR_DETAIL_MAX_BYTES, HEADER_BYTES, MAGIC,
    PROTOCOL_VERSION, SUBMIT_FIXED_BYTES,
};
