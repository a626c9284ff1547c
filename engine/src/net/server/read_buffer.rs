//! The shard's read buffer ([`ReadBuffer`]): every socket read of the shard lands in it, and
//! the bytes a read got go to the connection's decoder as a shared `Bytes` chunk, so that
//! the payload of every Submit that lies whole in one read reaches the handler as a slice
//! of the read buffer: no copy and no allocation per message.
//!
//! Reads are carved from the front of a block of [`BLOCK_BYTES`], one after the other,
//! whichever connection they are for: one block serves many reads of many connections, and
//! an idle connection holds no read buffer of its own (its decoder keeps only a partial
//! frame, copied). A block is held until the last message (or decoder) holding a slice of
//! it lets go. When the front block has less than a read's room left it is retired, and
//! reads go on in a retired block that nothing holds any more (reused in place), or else in
//! a new one.
//!
//! Memory: the blocks of one shard, held or not, are at most [`BLOCKS_MAX`], so the bytes
//! that slices can keep alive are bounded per shard (4 MiB), whatever the connections and
//! their messages do (a handler that keeps payloads, a queue of slow messages each pinning
//! a block for a few bytes). When every block is held, a read goes into a scratch buffer
//! and is copied to the decoder, and its payloads are copied per message as before zero-
//! copy payloads (counted in `NetStats::payloads_copied`), until a block is free again.
//! A connection's own buffer never grows because of what messages hold: its decoder copies
//! into it only the bytes of frames that straddle two reads.

use std::collections::VecDeque;

use bytes::BytesMut;

use crate::net::protocol::{ClientToServer, Decoder};

/// Bytes one read takes from a socket.
pub(super) const READ_CHUNK_BYTES: usize = 16 * 1024;

/// The size of a block. Four reads' room: a block is retired with less than a read's room
/// left, so at least three quarters of it is used, and many small reads (a few frames
/// each, the common case with many connections) share one.
const BLOCK_BYTES: usize = 64 * 1024;

/// The most blocks one shard has, the one read into and those retired together: 4 MiB of
/// read buffers. Under the default limits a shard's queue of pending messages fits a few
/// blocks when payloads are small (20,000 messages of 64 bytes are 1.7 MB of frames).
const BLOCKS_MAX: usize = 64;

/// One shard's read buffer: the block reads go into, the retired blocks that messages
/// still hold, and the scratch space used when they are all held.
///
/// The reads of one connection in one turn go one after the other into the block, and are
/// handed to its decoder as one chunk when the turn is done with it
/// ([`ReadBuffer::hand_to`]): the decoder has not taken the frames of one read yet when the
/// next comes, and one chunk holds whole the frames that two reads would have cut.
pub(super) struct ReadBuffer {
    /// The block read into: its bytes are the room left (initialized: zeroed when the block
    /// was made or reused), its first `pending_bytes` read and not yet handed over. A
    /// chunk is taken from its front (`split_to`). `None` after every block was found held.
    block: Option<BytesMut>,
    /// Bytes read into the front of `block` for the connection being read, not yet handed
    /// to its decoder.
    pending_bytes: usize,
    /// Blocks retired from reading, oldest first, each emptied (length 0): still shared by
    /// chunks and messages, or free to reuse.
    retired: VecDeque<BytesMut>,
    /// Where reads go while every block is held; allocated the first time that happens.
    /// Each read there is copied to the decoder at once.
    scratch: Vec<u8>,
    /// Whether the space [`ReadBuffer::space`] last gave is in `scratch`.
    reading_scratch: bool,
}

impl ReadBuffer {
    /// A read buffer with its first block.
    pub(super) fn new() -> Self {
        Self {
            block: Some(BytesMut::zeroed(BLOCK_BYTES)),
            pending_bytes: 0,
            retired: VecDeque::new(),
            scratch: Vec::new(),
            reading_scratch: false,
        }
    }

    /// Space for the next read of the connection being read, at most [`READ_CHUNK_BYTES`]
    /// long: in the block, after what that connection read before in this turn, or in the
    /// scratch buffer while every block is held. The first read of a turn always gets
    /// [`READ_CHUNK_BYTES`]; `None` when the block has no room left after the connection's
    /// earlier reads (hand them over; the rest waits for the next turn). Follow each read
    /// with [`ReadBuffer::filled`].
    pub(super) fn space(&mut self) -> Option<&mut [u8]> {
        if self.pending_bytes > 0 {
            let block = self.block.as_mut().expect("pending bytes are in the block");
            let room_bytes = (block.len() - self.pending_bytes).min(READ_CHUNK_BYTES);
            return (room_bytes > 0)
                .then(|| &mut block[self.pending_bytes..self.pending_bytes + room_bytes]);
        }
        let has_room = self
            .block
            .as_ref()
            .is_some_and(|block| block.len() >= READ_CHUNK_BYTES);
        self.reading_scratch = !(has_room || self.renew());
        if let Some(block) = self.block.as_mut().filter(|_| !self.reading_scratch) {
            return Some(&mut block[..READ_CHUNK_BYTES]);
        }
        if self.scratch.is_empty() {
            self.scratch = vec![0; READ_CHUNK_BYTES];
        }
        Some(&mut self.scratch)
    }

    /// Takes the `filled_bytes` a read wrote at the front of the last
    /// [`ReadBuffer::space`]: kept for [`ReadBuffer::hand_to`] if in the block, copied to
    /// `decoder` at once if in the scratch buffer.
    pub(super) fn filled(&mut self, filled_bytes: usize, decoder: &mut Decoder<ClientToServer>) {
        if self.reading_scratch {
            decoder.feed(&self.scratch[..filled_bytes]);
        } else {
            self.pending_bytes += filled_bytes;
        }
    }

    /// Hands what the connection read into the block to `decoder`, as one shared chunk.
    /// Call when done reading it for this turn, before reading another.
    pub(super) fn hand_to(&mut self, decoder: &mut Decoder<ClientToServer>) {
        if self.pending_bytes == 0 {
            return;
        }
        let block = self.block.as_mut().expect("pending bytes are in the block");
        decoder.feed_shared(block.split_to(self.pending_bytes).freeze());
        self.pending_bytes = 0;
    }

    /// Retires the block read into and takes another: a retired one that nothing holds any
    /// more (the others that nothing holds are freed), or a new one while there are fewer
    /// than [`BLOCKS_MAX`]. False, with no block, when every block is held.
    fn renew(&mut self) -> bool {
        if let Some(mut full) = self.block.take() {
            full.clear();
            self.retired.push_back(full);
        }
        let mut reused = None;
        self.retired.retain_mut(|retired| {
            // Succeeds only for the last handle on its block (the others, in chunks and
            // payloads, are gone), which then takes the whole block back without a copy.
            if !retired.try_reclaim(BLOCK_BYTES) {
                return true;
            }
            if reused.is_none() {
                reused = Some(core::mem::take(retired));
            }
            false
        });
        let block = match reused {
            Some(mut block) => {
                block.resize(BLOCK_BYTES, 0);
                block
            }
            None if self.retired.len() < BLOCKS_MAX => BytesMut::zeroed(BLOCK_BYTES),
            None => return false,
        };
        self.block = Some(block);
        true
    }

    /// Blocks this read buffer has, the one read into and the retired ones.
    #[cfg(test)]
    fn blocks(&self) -> usize {
        usize::from(self.block.is_some()) + self.retired.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Bytes, ConnectionId, MessageId, Priority, Role, TenantId};
    use crate::net::protocol::{ClientFrame, FrameLimit, Submit};

    /// A Submit of `payload_bytes` with id `id`, encoded.
    fn submit(id: u64, payload_bytes: usize) -> Vec<u8> {
        let payload = vec![id as u8; payload_bytes];
        let frame = ClientFrame::Submit(Submit {
            message_id: MessageId(id),
            tenant: TenantId(0),
            priority: Priority::P1,
            role: Role::Session,
            payload: &payload,
        });
        let mut wire = Vec::new();
        frame.encode(FrameLimit::DEFAULT, &mut wire).unwrap();
        wire
    }

    /// A decoder past its Hello.
    fn greeted() -> Decoder<ClientToServer> {
        let mut decoder = Decoder::new(FrameLimit::DEFAULT);
        let mut hello = Vec::new();
        ClientFrame::Hello
            .encode(FrameLimit::DEFAULT, &mut hello)
            .unwrap();
        decoder.feed(&hello);
        assert_eq!(decoder.next_frame(), Ok(Some(ClientFrame::Hello)));
        decoder
    }

    /// Reads `wire` through `buffer` into `decoder` (one read) and takes its one Submit as a
    /// message's payload, and whether that shares the read buffer.
    fn read_one(
        buffer: &mut ReadBuffer,
        decoder: &mut Decoder<ClientToServer>,
        wire: &[u8],
    ) -> (Bytes, bool) {
        buffer.space().unwrap()[..wire.len()].copy_from_slice(wire);
        buffer.filled(wire.len(), decoder);
        buffer.hand_to(decoder);
        let shared = decoder.next_shared_frame().unwrap().unwrap();
        let ClientFrame::Submit(submit) = shared.frame else {
            panic!("a submit");
        };
        let payload = submit.to_message_in(ConnectionId(1), shared.chunk).payload;
        (payload, shared.chunk.is_some())
    }

    #[test]
    fn blocks_whose_payloads_are_all_dropped_are_reused_and_never_more_than_the_cap() {
        let mut buffer = ReadBuffer::new();
        let mut decoder = greeted();
        // A block with less than a read's room left is retired: with one 12 KiB Submit per
        // read, a block serves five reads (60 KiB), and the sixth goes into the next.
        let wire = submit(1, 12 * 1024 - 24);
        let mut held = Vec::new();
        for _ in 0..BLOCKS_MAX * 5 {
            let (payload, shared) = read_one(&mut buffer, &mut decoder, &wire);
            assert!(shared);
            held.push(payload);
        }
        assert_eq!(buffer.blocks(), BLOCKS_MAX);
        // Every block is held: the next reads are copied, payloads included.
        let (copied, shared) = read_one(&mut buffer, &mut decoder, &wire);
        assert!(!shared);
        assert_eq!(&copied[..], &held[0][..]);
        assert_eq!(buffer.blocks(), BLOCKS_MAX, "no block beyond the cap");
        // Messages of the first block complete: it is read into again, in place.
        let first_block = held[0].as_ptr();
        held.drain(..5);
        let (reused, shared) = read_one(&mut buffer, &mut decoder, &wire);
        assert!(shared);
        assert_eq!(buffer.blocks(), BLOCKS_MAX);
        assert_eq!(reused.as_ptr(), first_block, "the freed block is reused");
        // Every message completes: the blocks nothing holds are freed, but for the one
        // read into and the one the decoder still holds (its last chunk, let go at the next
        // read).
        held.clear();
        drop(reused);
        for _ in 0..5 {
            let (_, shared) = read_one(&mut buffer, &mut decoder, &wire);
            assert!(shared);
        }
        assert_eq!(buffer.blocks(), 2);
    }

    #[test]
    fn one_connections_reads_in_a_turn_make_one_chunk_until_the_block_is_full() {
        let mut buffer = ReadBuffer::new();
        let mut decoder = greeted();
        // Three Submits of 7,000 bytes cut by 16 KiB reads: one chunk holds them whole.
        let wire: Vec<u8> = (0..3).flat_map(|id| submit(id, 7_000 - 24)).collect();
        let mut fed = 0;
        while fed < wire.len() {
            let space = buffer.space().expect("room in a fresh block");
            let count = space.len().min(wire.len() - fed);
            space[..count].copy_from_slice(&wire[fed..fed + count]);
            buffer.filled(count, &mut decoder);
            fed += count;
        }
        buffer.hand_to(&mut decoder);
        for id in 0..3 {
            let shared = decoder.next_shared_frame().unwrap().unwrap();
            assert!(shared.chunk.is_some(), "Submit {id} shares the block");
        }
        // Room runs out after 64 KiB in one turn: the caller hands over what it has.
        let mut read_bytes = 0;
        while let Some(space) = buffer.space() {
            read_bytes += space.len();
            let count = space.len();
            buffer.filled(count, &mut decoder);
        }
        assert_eq!(read_bytes, BLOCK_BYTES - wire.len());
        buffer.hand_to(&mut decoder);
        assert_eq!(decoder.buffered_bytes(), read_bytes);
    }
}
