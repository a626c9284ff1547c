//! What the server counts: why each connection closed ([`CloseReason`]), the counters of
//! every shard ([`NetStats`], summed by [`TcpServer::stats`]), and one shard's own.

use std::sync::atomic::AtomicU64;

use crate::net::egress::EgressDropReason;
use crate::net::protocol::ErrorCode;
use crate::sync::Ordering;

use super::TcpServer;
#[cfg(doc)]
use crate::config::NetConfig;

/// Why the server closed a connection, each with its own counter in [`NetStats`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CloseReason {
    /// The client closed its side at a frame boundary and every reply was sent.
    PeerClosed,
    /// A read or write failed (reset by the peer, broken pipe).
    IoError,
    /// The server sent an Error frame with this code, then closed.
    Error(ErrorCode),
}

/// The server's counters, summed over its shards: every accepted or refused connection,
/// every closure by reason, and every reply that was not sent, by reason.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Connections accepted and served (handshake or not).
    pub accepted: u64,
    /// Connections accepted only to be told `too_many_connections` and closed.
    pub refused_connection_limit: u64,
    /// Times a shard stopped accepting for [`NetConfig::accept_backoff_ns`] because the
    /// process had no descriptor left.
    pub accept_backoffs: u64,
    /// Connections open now.
    pub open: u64,
    /// Closed after the client's clean close.
    pub closed_peer: u64,
    /// Closed after an I/O error.
    pub closed_io_error: u64,
    /// Closed after an Error frame, by code, in [`ErrorCode::ALL`] order.
    pub closed_error: [u64; ErrorCode::ALL.len()],
    /// Frames decoded.
    pub frames_in: u64,
    /// Submits read.
    pub submits: u64,
    /// Submits whose payload was copied into an allocation of its own rather than shared
    /// with the read buffer it arrived in: those whose frame straddled two reads, and those
    /// read while every read buffer block of their shard was still held by earlier messages
    /// (the bound on the memory payloads keep alive; see the server's `read_buffer`).
    pub payloads_copied: u64,
    /// Reply frames written.
    pub replies_sent: u64,
    /// Delivered messages told `failed response_too_large` by the server itself, their
    /// response longer than its frame limit allows: only when the engine's
    /// `net.max_response_bytes` is above what the server's `net.max_frame_bytes` allows (the
    /// two come from different settings), since the engine fails such responses first.
    pub responses_too_large: u64,
    /// Replies dropped by a connection's egress policy, by reason, in
    /// [`EgressDropReason::ALL`] order ([`EgressDropReason::Closed`]: still queued when the
    /// connection closed).
    pub replies_dropped: [u64; EgressDropReason::COUNT],
    /// Completions for a connection that had already closed (their Reply had nowhere to go).
    pub replies_discarded: u64,
    /// Throttle, Pause and Resume frames written.
    pub flow_signals: u64,
}

impl NetStats {
    /// Connections closed with an Error frame of `code`.
    pub fn closed_with(&self, code: ErrorCode) -> u64 {
        self.closed_error[code.index()]
    }

    /// Every reply dropped by the egress policies, all reasons together.
    pub fn replies_dropped_total(&self) -> u64 {
        self.replies_dropped.iter().sum()
    }
}

/// One shard's counters. Written by that shard alone and read by [`TcpServer::stats`]:
/// Relaxed loads and stores suffice, since nothing else is published through them and a
/// reader only needs each value to be one the shard wrote (a sum may be a moment stale).
#[derive(Default)]
pub(super) struct ShardCounters {
    pub(super) accepted: AtomicU64,
    pub(super) refused_connection_limit: AtomicU64,
    pub(super) accept_backoffs: AtomicU64,
    pub(super) closed_peer: AtomicU64,
    pub(super) closed_io_error: AtomicU64,
    pub(super) closed_error: [AtomicU64; ErrorCode::ALL.len()],
    pub(super) frames_in: AtomicU64,
    pub(super) submits: AtomicU64,
    pub(super) payloads_copied: AtomicU64,
    pub(super) replies_sent: AtomicU64,
    pub(super) responses_too_large: AtomicU64,
    pub(super) replies_dropped: [AtomicU64; EgressDropReason::COUNT],
    pub(super) replies_discarded: AtomicU64,
    pub(super) flow_signals: AtomicU64,
}

/// Adds `count` to a counter only this thread writes: a plain load and store, no
/// read-modify-write (see [`ShardCounters`]).
#[inline]
pub(super) fn bump(counter: &AtomicU64, count: u64) {
    counter.store(counter.load(Ordering::Relaxed) + count, Ordering::Relaxed);
}

impl TcpServer {
    /// The counters of every shard, summed.
    pub fn stats(&self) -> NetStats {
        let mut stats = NetStats {
            // Relaxed: a gauge. It also counts, for an instant, a connection being accepted
            // or refused at the limit.
            open: self.shared.open_connections.load(Ordering::Relaxed) as u64,
            ..NetStats::default()
        };
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        for counters in self.shared.counters.iter() {
            stats.accepted += load(&counters.accepted);
            stats.refused_connection_limit += load(&counters.refused_connection_limit);
            stats.accept_backoffs += load(&counters.accept_backoffs);
            stats.closed_peer += load(&counters.closed_peer);
            stats.closed_io_error += load(&counters.closed_io_error);
            for (sum, counter) in stats.closed_error.iter_mut().zip(&counters.closed_error) {
                *sum += load(counter);
            }
            stats.frames_in += load(&counters.frames_in);
            stats.submits += load(&counters.submits);
            stats.payloads_copied += load(&counters.payloads_copied);
            stats.replies_sent += load(&counters.replies_sent);
            stats.responses_too_large += load(&counters.responses_too_large);
            for (sum, counter) in stats
                .replies_dropped
                .iter_mut()
                .zip(&counters.replies_dropped)
            {
                *sum += load(counter);
            }
            stats.replies_discarded += load(&counters.replies_discarded);
            stats.flow_signals += load(&counters.flow_signals);
        }
        stats
    }
}
