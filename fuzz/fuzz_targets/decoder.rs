//! Feeds arbitrary bytes to the wire protocol decoders (`spillway::net::protocol`) in
//! chunks, as reads from a socket would arrive. The first input byte picks the decoder, the
//! frame limit and the chunk size; the rest is the stream.
//!
//! Beyond "never panics", it checks two properties of the decoder: the same bytes give the
//! same frames and the same final error whether fed whole or in chunks, and every frame it
//! accepts re-encodes to exactly the bytes it was decoded from.

#![no_main]

use libfuzzer_sys::fuzz_target;
use spillway::net::protocol::{
    ClientToServer, Decoder, Direction, FrameLimit, ProtocolError, ServerToClient,
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
    let (whole, chunked) = if control & 0x40 == 0 {
        (
            server_side(wire, wire.len().max(1), limit),
            server_side(wire, chunk_bytes, limit),
        )
    } else {
        (
            client_side(wire, wire.len().max(1), limit),
            client_side(wire, chunk_bytes, limit),
        )
    };
    assert_eq!(
        whole, chunked,
        "the result depends on how the bytes were split"
    );
    assert!(
        wire.starts_with(&whole.0),
        "accepted frames do not re-encode to their bytes"
    );
});

/// What a decoder made of a stream: the re-encoded frames it accepted, and how it ended.
type Accepted = (Vec<u8>, Result<(), ProtocolError>);

/// The re-encoded frames a server decoder accepts from `wire` fed in `chunk_bytes` pieces,
/// and how it ended.
fn server_side(wire: &[u8], chunk_bytes: usize, limit: FrameLimit) -> Accepted {
    decode::<ClientToServer>(wire, chunk_bytes, limit, |frame, accepted| {
        frame
            .encode(limit, accepted)
            .expect("an accepted frame is within the limit");
    })
}

/// The same for a client decoder.
fn client_side(wire: &[u8], chunk_bytes: usize, limit: FrameLimit) -> Accepted {
    decode::<ServerToClient>(wire, chunk_bytes, limit, |frame, accepted| {
        frame.encode(accepted);
    })
}

/// Feeds `wire` to a decoder for direction `D` in `chunk_bytes` pieces, re-encoding each
/// frame it accepts with `encode`.
fn decode<D: Direction>(
    wire: &[u8],
    chunk_bytes: usize,
    limit: FrameLimit,
    encode: impl Fn(&D::Frame<'_>, &mut Vec<u8>),
) -> Accepted {
    let mut decoder = Decoder::<D>::new(limit);
    let mut accepted = Vec::new();
    for chunk in wire.chunks(chunk_bytes) {
        decoder.feed(chunk);
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => encode(&frame, &mut accepted),
                Ok(None) => break,
                Err(error) => return (accepted, Err(error)),
            }
        }
    }
    (accepted, decoder.finish())
}
