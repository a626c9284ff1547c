//! Feeds arbitrary bytes to the wire protocol decoders (`spillway::net::protocol`) in
//! chunks, as reads from a socket would arrive. The first input byte picks the decoder, the
//! frame limit and the chunk size; the rest is the stream.
//!
//! Beyond "never panics", it checks three properties of the decoder: the same bytes give the
//! same frames and the same final error whether fed whole, in chunks, or in shared chunks
//! (`feed_shared`, slices of one buffer, read with `next_shared_frame`); every frame it
//! accepts re-encodes to exactly the bytes it was decoded from; and a frame handed out with
//! a shared chunk lies in that chunk (decoded in place, not copied).

#![no_main]

use libfuzzer_sys::fuzz_target;
use spillway::message::Bytes;
use spillway::net::protocol::{
    ClientToServer, Decoder, Direction, FrameLimit, ProtocolError, ProtocolVersion, ServerToClient,
};

fuzz_target!(|data: &[u8]| {
    let Some((&control, wire)) = data.split_first() else {
        return;
    };
    // Bits 0-5: chunk size 1..=64. Bit 6: which side decodes. Bit 7: the smallest limit or
    // the default.
    let chunk_bytes = usize::from(control & 0x3F) + 1;
    let limit = if control & 0x80 == 0 {
        FrameLimit::DEFAULT
    } else {
        FrameLimit::MIN
    };
    let [whole, chunked, shared] = if control & 0x40 == 0 {
        [
            server_side(wire, wire.len().max(1), Feeding::Copied, limit),
            server_side(wire, chunk_bytes, Feeding::Copied, limit),
            server_side(wire, chunk_bytes, Feeding::Shared, limit),
        ]
    } else {
        [
            client_side(wire, wire.len().max(1), Feeding::Copied, limit),
            client_side(wire, chunk_bytes, Feeding::Copied, limit),
            client_side(wire, chunk_bytes, Feeding::Shared, limit),
        ]
    };
    assert_eq!(
        whole, chunked,
        "the result depends on how the bytes were split"
    );
    assert_eq!(
        whole, shared,
        "the result depends on whether the bytes were copied or shared"
    );
    assert!(
        wire.starts_with(&whole.0),
        "accepted frames do not re-encode to their bytes"
    );
});

/// What a decoder made of a stream: the re-encoded frames it accepted, and how it ended.
type Accepted = (Vec<u8>, Result<(), ProtocolError>);

/// How the chunks reach the decoder.
#[derive(Clone, Copy, PartialEq)]
enum Feeding {
    /// `feed`, `next_frame`.
    Copied,
    /// `feed_shared` of slices of one buffer, `next_shared_frame`.
    Shared,
}

/// The re-encoded frames a server decoder accepts from `wire` fed in `chunk_bytes` pieces,
/// and how it ended.
fn server_side(wire: &[u8], chunk_bytes: usize, feeding: Feeding, limit: FrameLimit) -> Accepted {
    decode::<ClientToServer>(
        wire,
        chunk_bytes,
        feeding,
        limit,
        |frame, version, accepted| {
            frame
                .encode_in(version, limit, accepted)
                .expect("an accepted frame is within the limit");
        },
    )
}

/// The same for a client decoder.
fn client_side(wire: &[u8], chunk_bytes: usize, feeding: Feeding, limit: FrameLimit) -> Accepted {
    decode::<ServerToClient>(
        wire,
        chunk_bytes,
        feeding,
        limit,
        |frame, version, accepted| {
            frame.encode_in(version, accepted);
        },
    )
}

/// Feeds `wire` to a decoder for direction `D` in `chunk_bytes` pieces, re-encoding each
/// frame it accepts with `encode`, in the version its header carries.
fn decode<D: Direction>(
    wire: &[u8],
    chunk_bytes: usize,
    feeding: Feeding,
    limit: FrameLimit,
    encode: impl Fn(&D::Frame<'_>, ProtocolVersion, &mut Vec<u8>),
) -> Accepted {
    let shared_wire = Bytes::copy_from_slice(wire);
    let mut decoder = Decoder::<D>::new(limit);
    let mut accepted = Vec::new();
    let mut fed = 0;
    for chunk in wire.chunks(chunk_bytes) {
        match feeding {
            Feeding::Copied => decoder.feed(chunk),
            Feeding::Shared => decoder.feed_shared(shared_wire.slice(fed..fed + chunk.len())),
        }
        fed += chunk.len();
        loop {
            let taken = accepted.len();
            // The frame taken next starts where the accepted ones end: its header's version.
            let version = wire
                .get(taken + 2)
                .and_then(|&code| ProtocolVersion::from_code(code))
                .unwrap_or(ProtocolVersion::LATEST);
            match decoder.next_shared_frame() {
                Ok(Some(decoded)) => {
                    encode(&decoded.frame, version, &mut accepted);
                    if let Some(chunk) = decoded.chunk {
                        assert!(feeding == Feeding::Shared, "a chunk never fed");
                        let frame = shared_wire[taken..accepted.len()].as_ptr_range();
                        let chunk = chunk.as_ptr_range();
                        assert!(
                            chunk.start <= frame.start && frame.end <= chunk.end,
                            "a frame handed out with a chunk that does not hold it"
                        );
                    }
                }
                Ok(None) => break,
                Err(error) => return (accepted, Err(error)),
            }
        }
    }
    (accepted, decoder.finish())
}
