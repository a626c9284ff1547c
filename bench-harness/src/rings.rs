//! The ring peers behind one trait, so that one harness loop drives them all the same way.
//!
//! Every peer is used through its non-blocking calls (`push`/`try_send`, `pop`/`try_recv`):
//! the harness, not the peer, decides what to do on full or empty ([`crate::machine::Wait`]),
//! so no peer parks a thread where another spins.
//!
//! Batches: spillway (`push_slice`, `pop_slices`) and rtrb (`write_chunk_uninit` +
//! `fill_from_iter`, `read_chunk`) have batch calls that publish a run of slots with one index
//! store. crossbeam's `ArrayQueue`, crossbeam-channel and std's `sync_channel` have none; their
//! "batched" rows are a loop of up to `ring_throughput::BATCH` single calls,
//! stopping at the first full or empty answer ([`RingPeer::BATCH_METHOD`] says which).
//!
//! Known bias: calling through the trait is monomorphised (no dynamic dispatch), but the
//! default batch loops are ours, not the peers'; a peer's own batch API, if it grew one,
//! could be faster.

use std::sync::mpsc;
use std::sync::Arc;

use crossbeam_queue::ArrayQueue;

/// A bounded ring of `u64` with one sending and one receiving end, as the harness needs it.
pub trait RingPeer {
    /// Name in the report.
    const NAME: &'static str;
    /// How the batched mode is done for this peer, in the report's words.
    const BATCH_METHOD: &'static str;
    /// The end that pushes; moved to the producer thread.
    type Sender: Send + 'static;
    /// The end that pops; moved to the consumer thread.
    type Receiver: Send + 'static;

    /// A ring holding up to `capacity` messages.
    fn channel(capacity: usize) -> (Self::Sender, Self::Receiver);

    /// Pushes `value`, or hands it back when the ring is full.
    fn try_push(sender: &mut Self::Sender, value: u64) -> Result<(), u64>;

    /// Pops the oldest message, or `None` when the ring is empty.
    fn try_pop(receiver: &mut Self::Receiver) -> Option<u64>;

    /// Pushes the longest prefix of `values` that fits and returns its length.
    ///
    /// The default is a loop of [`try_push`](Self::try_push), for peers with no batch call.
    #[inline]
    fn push_batch(sender: &mut Self::Sender, values: &[u64]) -> usize {
        let mut pushed = 0;
        for &value in values {
            if Self::try_push(sender, value).is_err() {
                break;
            }
            pushed += 1;
        }
        pushed
    }

    /// Pops up to `max` messages, oldest first, into `f` and returns how many.
    ///
    /// The default is a loop of [`try_pop`](Self::try_pop), for peers with no batch call.
    #[inline]
    fn pop_batch(receiver: &mut Self::Receiver, max: usize, mut f: impl FnMut(u64)) -> usize {
        let mut popped = 0;
        while popped < max {
            let Some(value) = Self::try_pop(receiver) else {
                break;
            };
            f(value);
            popped += 1;
        }
        popped
    }
}

/// Spillway's SPSC ring (`spillway::ring::spsc`).
pub struct SpillwaySpsc;

impl RingPeer for SpillwaySpsc {
    const NAME: &'static str = "spillway spsc";
    const BATCH_METHOD: &'static str = "push_slice / pop_slices";
    type Sender = spillway::ring::spsc::Producer<u64>;
    type Receiver = spillway::ring::spsc::Consumer<u64>;

    fn channel(capacity: usize) -> (Self::Sender, Self::Receiver) {
        spillway::ring::spsc::channel(capacity)
    }

    #[inline]
    fn try_push(sender: &mut Self::Sender, value: u64) -> Result<(), u64> {
        sender.push(value)
    }

    #[inline]
    fn try_pop(receiver: &mut Self::Receiver) -> Option<u64> {
        receiver.pop()
    }

    #[inline]
    fn push_batch(sender: &mut Self::Sender, values: &[u64]) -> usize {
        sender.push_slice(values)
    }

    #[inline]
    fn pop_batch(receiver: &mut Self::Receiver, max: usize, mut f: impl FnMut(u64)) -> usize {
        // Slices, iterated exactly as rtrb's `read_chunk` slices are below.
        let (count, ()) = receiver.pop_slices(max, |first, second| {
            first.iter().chain(second).for_each(|&value| f(value))
        });
        count
    }
}

/// rtrb 0.4, the real-time SPSC ring buffer.
pub struct Rtrb;

impl RingPeer for Rtrb {
    const NAME: &'static str = "rtrb";
    const BATCH_METHOD: &'static str = "write_chunk_uninit + fill_from_iter / read_chunk";
    type Sender = rtrb::Producer<u64>;
    type Receiver = rtrb::Consumer<u64>;

    fn channel(capacity: usize) -> (Self::Sender, Self::Receiver) {
        rtrb::RingBuffer::new(capacity)
    }

    #[inline]
    fn try_push(sender: &mut Self::Sender, value: u64) -> Result<(), u64> {
        sender
            .push(value)
            .map_err(|rtrb::PushError::Full(value)| value)
    }

    #[inline]
    fn try_pop(receiver: &mut Self::Receiver) -> Option<u64> {
        receiver.pop().ok()
    }

    #[inline]
    fn push_batch(sender: &mut Self::Sender, values: &[u64]) -> usize {
        // Ask for the whole batch; when fewer slots are free, rtrb says how many (having
        // reloaded the consumer's index) and we take those: the same "longest prefix that
        // fits" that spillway's push_slice does.
        let free = match sender.write_chunk_uninit(values.len()) {
            Ok(chunk) => return chunk.fill_from_iter(values.iter().copied()),
            Err(rtrb::chunks::ChunkError::TooFewSlots(free)) => free,
        };
        if free == 0 {
            return 0;
        }
        match sender.write_chunk_uninit(free) {
            Ok(chunk) => chunk.fill_from_iter(values[..free].iter().copied()),
            Err(rtrb::chunks::ChunkError::TooFewSlots(_)) => 0,
        }
    }

    #[inline]
    fn pop_batch(receiver: &mut Self::Receiver, max: usize, mut f: impl FnMut(u64)) -> usize {
        let available = match receiver.read_chunk(max) {
            Ok(_) => max,
            Err(rtrb::chunks::ChunkError::TooFewSlots(available)) => available,
        };
        if available == 0 {
            return 0;
        }
        let Ok(chunk) = receiver.read_chunk(available) else {
            return 0;
        };
        let (first, second) = chunk.as_slices();
        first.iter().chain(second).for_each(|&value| f(value));
        chunk.commit_all();
        available
    }
}

/// crossbeam's `ArrayQueue` (bounded MPMC, Vyukov), shared by `Arc`; no batch call.
pub struct CrossbeamArrayQueue;

impl RingPeer for CrossbeamArrayQueue {
    const NAME: &'static str = "crossbeam ArrayQueue";
    const BATCH_METHOD: &'static str = "no batch API: loop of 64 push / pop";
    type Sender = Arc<ArrayQueue<u64>>;
    type Receiver = Arc<ArrayQueue<u64>>;

    fn channel(capacity: usize) -> (Self::Sender, Self::Receiver) {
        let queue = Arc::new(ArrayQueue::new(capacity));
        (Arc::clone(&queue), queue)
    }

    #[inline]
    fn try_push(sender: &mut Self::Sender, value: u64) -> Result<(), u64> {
        sender.push(value)
    }

    #[inline]
    fn try_pop(receiver: &mut Self::Receiver) -> Option<u64> {
        receiver.pop()
    }
}

/// crossbeam-channel's bounded channel; no batch call.
pub struct CrossbeamChannel;

impl RingPeer for CrossbeamChannel {
    const NAME: &'static str = "crossbeam-channel bounded";
    const BATCH_METHOD: &'static str = "no batch API: loop of 64 try_send / try_recv";
    type Sender = crossbeam_channel::Sender<u64>;
    type Receiver = crossbeam_channel::Receiver<u64>;

    fn channel(capacity: usize) -> (Self::Sender, Self::Receiver) {
        crossbeam_channel::bounded(capacity)
    }

    #[inline]
    fn try_push(sender: &mut Self::Sender, value: u64) -> Result<(), u64> {
        match sender.try_send(value) {
            Ok(()) => Ok(()),
            Err(crossbeam_channel::TrySendError::Full(value)) => Err(value),
            Err(crossbeam_channel::TrySendError::Disconnected(_)) => {
                panic!("crossbeam-channel receiver gone mid-run")
            }
        }
    }

    #[inline]
    fn try_pop(receiver: &mut Self::Receiver) -> Option<u64> {
        receiver.try_recv().ok()
    }
}

/// std's `sync_channel` (bounded `mpsc`); no batch call.
pub struct StdSyncChannel;

impl RingPeer for StdSyncChannel {
    const NAME: &'static str = "std sync_channel";
    const BATCH_METHOD: &'static str = "no batch API: loop of 64 try_send / try_recv";
    type Sender = mpsc::SyncSender<u64>;
    type Receiver = mpsc::Receiver<u64>;

    fn channel(capacity: usize) -> (Self::Sender, Self::Receiver) {
        mpsc::sync_channel(capacity)
    }

    #[inline]
    fn try_push(sender: &mut Self::Sender, value: u64) -> Result<(), u64> {
        match sender.try_send(value) {
            Ok(()) => Ok(()),
            Err(mpsc::TrySendError::Full(value)) => Err(value),
            Err(mpsc::TrySendError::Disconnected(_)) => {
                panic!("sync_channel receiver gone mid-run")
            }
        }
    }

    #[inline]
    fn try_pop(receiver: &mut Self::Receiver) -> Option<u64> {
        receiver.try_recv().ok()
    }
}

/// The ring peers, for choosing one at run time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Peer {
    /// [`SpillwaySpsc`].
    Spillway,
    /// [`Rtrb`].
    Rtrb,
    /// [`CrossbeamArrayQueue`].
    ArrayQueue,
    /// [`CrossbeamChannel`].
    CrossbeamChannel,
    /// [`StdSyncChannel`].
    StdSyncChannel,
}

impl Peer {
    /// Every ring peer, spillway first.
    pub const ALL: [Peer; 5] = [
        Peer::Spillway,
        Peer::Rtrb,
        Peer::ArrayQueue,
        Peer::CrossbeamChannel,
        Peer::StdSyncChannel,
    ];

    /// Name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Peer::Spillway => SpillwaySpsc::NAME,
            Peer::Rtrb => Rtrb::NAME,
            Peer::ArrayQueue => CrossbeamArrayQueue::NAME,
            Peer::CrossbeamChannel => CrossbeamChannel::NAME,
            Peer::StdSyncChannel => StdSyncChannel::NAME,
        }
    }

    /// How the batched mode is done for this peer.
    pub fn batch_method(self) -> &'static str {
        match self {
            Peer::Spillway => SpillwaySpsc::BATCH_METHOD,
            Peer::Rtrb => Rtrb::BATCH_METHOD,
            Peer::ArrayQueue => CrossbeamArrayQueue::BATCH_METHOD,
            Peer::CrossbeamChannel => CrossbeamChannel::BATCH_METHOD,
            Peer::StdSyncChannel => StdSyncChannel::BATCH_METHOD,
        }
    }

    /// Whether the peer has a batch call of its own (otherwise its batched rows are a loop).
    pub fn has_batch_api(self) -> bool {
        matches!(self, Peer::Spillway | Peer::Rtrb)
    }
}

/// Calls `$body` with `$ring` bound to the `RingPeer` type of the `Peer` value `$peer`.
#[macro_export]
macro_rules! with_ring_peer {
    ($peer:expr, $ring:ident => $body:expr) => {
        match $peer {
            $crate::rings::Peer::Spillway => {
                type $ring = $crate::rings::SpillwaySpsc;
                $body
            }
            $crate::rings::Peer::Rtrb => {
                type $ring = $crate::rings::Rtrb;
                $body
            }
            $crate::rings::Peer::ArrayQueue => {
                type $ring = $crate::rings::CrossbeamArrayQueue;
                $body
            }
            $crate::rings::Peer::CrossbeamChannel => {
                type $ring = $crate::rings::CrossbeamChannel;
                $body
            }
            $crate::rings::Peer::StdSyncChannel => {
                type $ring = $crate::rings::StdSyncChannel;
                $body
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every peer's batch calls take the longest prefix that fits and pop in order.
    fn batches_take_what_fits<R: RingPeer>() {
        let (mut sender, mut receiver) = R::channel(4);
        assert_eq!(R::push_batch(&mut sender, &[1, 2, 3]), 3);
        assert_eq!(R::push_batch(&mut sender, &[4, 5, 6]), 1);
        assert_eq!(R::push_batch(&mut sender, &[7]), 0);
        assert_eq!(R::try_push(&mut sender, 8), Err(8));
        let mut seen = Vec::new();
        assert_eq!(R::pop_batch(&mut receiver, 3, |value| seen.push(value)), 3);
        assert_eq!(R::pop_batch(&mut receiver, 3, |value| seen.push(value)), 1);
        assert_eq!(R::pop_batch(&mut receiver, 3, |value| seen.push(value)), 0);
        assert_eq!(seen, [1, 2, 3, 4]);
        assert_eq!(R::try_pop(&mut receiver), None);
    }

    #[test]
    fn every_peer_batches_alike() {
        for peer in Peer::ALL {
            with_ring_peer!(peer, R => batches_take_what_fits::<R>());
        }
    }
}
