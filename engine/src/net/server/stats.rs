//! What the server counts: why each connection closed ([`CloseReason`]), the counters of
//! every shard ([`NetStats`], summed by [`TcpServer::stats`]), and one shard's own; and
//! what a shard logs of them ([`FaultLog`]).
//!
//! # Logs
//!
//! A hostile or slow client can cause a fault thousands of times a second, so no fault is
//! logged where it happens: the data path only counts it, as it did before logs. The
//! shard's timer (housekeeping) compares its counters with what it last logged and, per
//! kind of fault, logs at most one event a second under `spillway::net` (warn; flow
//! signals at info), with the count since the last event and, where the fault's site
//! noted one, an example connection and what it did. The counts are the counters'
//! differences, so the events' counts add up exactly to [`NetStats`]. Closures at shutdown
//! (`shutting_down`) and clean closes are not faults and are not logged.

use std::io;
use std::sync::atomic::AtomicU64;

use crate::log_limit::{LogLimit, Told};
use crate::message::ConnectionId;
use crate::net::egress::{EgressDropReason, FlowSignal};
use crate::net::protocol::{ErrorCode, ProtocolError};
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
    /// `flow_signals` by kind, in [`FlowSignal::KIND_NAMES`] order (throttle, pause,
    /// resume): pauses less resumes is how many connections a pause holds now, about.
    pub flow_signals_by_kind: [u64; FlowSignal::KINDS],
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
    /// `flow_signals` by kind ([`FlowSignal::index`]), for the logs.
    pub(super) flow_signals_by_kind: [AtomicU64; FlowSignal::KINDS],
}

impl ShardCounters {
    /// Counts a flow-signal frame written.
    #[inline]
    pub(super) fn count_flow_signal(&self, signal: FlowSignal) {
        bump(&self.flow_signals, 1);
        bump(&self.flow_signals_by_kind[signal.index()], 1);
    }
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
            for (sum, counter) in stats
                .flow_signals_by_kind
                .iter_mut()
                .zip(&counters.flow_signals_by_kind)
            {
                *sum += load(counter);
            }
        }
        stats
    }
}

/// A kind of fault (or egress event) the shard logs, each read from its counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Fault {
    /// Closed after an Error frame of this code (not `shutting_down`, not
    /// `too_many_connections`: see [`Fault::ConnectionLimit`]).
    Closed(ErrorCode),
    /// Closed after a failed read or write.
    IoError,
    /// Refused at the connection limit.
    ConnectionLimit,
    /// Accepting paused: no descriptor left.
    AcceptBackoff,
    /// Replies dropped by the egress policy.
    ReplyDropped(EgressDropReason),
    /// Flow-signal frames written, of the kind at this [`FlowSignal::index`].
    FlowSignal(usize),
    /// Responses over the server's frame limit.
    ResponseTooLarge,
}

impl Fault {
    /// Every fault the log watches.
    fn all() -> impl Iterator<Item = Fault> {
        let closed = ErrorCode::ALL
            .into_iter()
            .filter(|code| {
                !matches!(
                    code,
                    ErrorCode::ShuttingDown | ErrorCode::TooManyConnections
                )
            })
            .map(Fault::Closed);
        closed
            .chain([Fault::IoError, Fault::ConnectionLimit, Fault::AcceptBackoff])
            .chain(EgressDropReason::ALL.map(Fault::ReplyDropped))
            .chain((0..FlowSignal::KINDS).map(Fault::FlowSignal))
            .chain([Fault::ResponseTooLarge])
    }

    fn counter(self, counters: &ShardCounters) -> &AtomicU64 {
        match self {
            Fault::Closed(code) => &counters.closed_error[code.index()],
            Fault::IoError => &counters.closed_io_error,
            Fault::ConnectionLimit => &counters.refused_connection_limit,
            Fault::AcceptBackoff => &counters.accept_backoffs,
            Fault::ReplyDropped(reason) => &counters.replies_dropped[reason.index()],
            Fault::FlowSignal(kind) => &counters.flow_signals_by_kind[kind],
            Fault::ResponseTooLarge => &counters.responses_too_large,
        }
    }

    /// The group of faults (the `fault` field) and the one of it (`reason`).
    fn names(self) -> (&'static str, &'static str) {
        match self {
            Fault::Closed(ErrorCode::Timeout) => ("timeout", "timeout"),
            Fault::Closed(ErrorCode::Disconnected) => ("slow_reader", "disconnected"),
            Fault::Closed(code) => ("protocol_violation", code.name()),
            Fault::IoError => ("io_error", "io_error"),
            Fault::ConnectionLimit => ("connection_limit", "too_many_connections"),
            Fault::AcceptBackoff => ("accept_backoff", "out_of_descriptors"),
            Fault::ReplyDropped(reason) => ("reply_dropped", reason.name()),
            Fault::FlowSignal(kind) => ("flow_signal", FlowSignal::KIND_NAMES[kind]),
            Fault::ResponseTooLarge => ("response_too_large", "response_too_large"),
        }
    }

    fn message(self) -> &'static str {
        match self {
            Fault::Closed(ErrorCode::Timeout) => "connections closed for a timeout",
            Fault::Closed(ErrorCode::Disconnected) => {
                "slow readers disconnected: over the unhealthy drop rate"
            }
            Fault::Closed(_) => "connections closed for a protocol violation",
            Fault::IoError => "connections closed after an I/O error",
            Fault::ConnectionLimit => "connections refused at the connection limit",
            Fault::AcceptBackoff => "accepting paused: the process is out of descriptors",
            Fault::ReplyDropped(_) => "replies dropped by the egress policy",
            Fault::FlowSignal(_) => "flow signals sent to slow readers",
            Fault::ResponseTooLarge => "responses failed: over the server's frame limit",
        }
    }
}

/// A connection that had a fault, and what it did: the example an event carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct FaultExample {
    pub(super) connection: ConnectionId,
    pub(super) detail: FaultDetail,
}

/// What a connection did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum FaultDetail {
    Protocol(ProtocolError),
    Io(io::ErrorKind),
    Text(&'static str),
}

impl core::fmt::Display for FaultDetail {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            FaultDetail::Protocol(error) => write!(formatter, "{error}"),
            FaultDetail::Io(kind) => write!(formatter, "{kind}"),
            FaultDetail::Text(text) => formatter.write_str(text),
        }
    }
}

/// One watched fault: its counter as last read, its rate limit, and the latest example
/// its site noted.
#[derive(Debug)]
struct Watched {
    fault: Fault,
    seen: u64,
    limit: LogLimit<Option<FaultExample>>,
    example: Option<FaultExample>,
}

/// What one shard logs of its faults (see the module's Logs section). Owned by the shard's
/// `ShardNet`; `tick` runs on its timer.
#[derive(Debug)]
pub(super) struct FaultLog {
    shard: usize,
    watched: Vec<Watched>,
}

impl FaultLog {
    /// The log of `shard`, whose counters hold what earlier front ends of this server on
    /// it counted (and logged) already.
    pub(super) fn new(shard: usize, counters: &ShardCounters) -> Self {
        Self {
            shard,
            watched: Fault::all()
                .map(|fault| Watched {
                    fault,
                    seen: fault.counter(counters).load(Ordering::Relaxed),
                    limit: LogLimit::per_second(),
                    example: None,
                })
                .collect(),
        }
    }

    /// Notes `example` of `fault`, for its next event (the latest noted is told). On a
    /// fault's path only, never per message.
    pub(super) fn note(&mut self, fault: Fault, example: FaultExample) {
        if let Some(watched) = self
            .watched
            .iter_mut()
            .find(|watched| watched.fault == fault)
        {
            watched.example = Some(example);
        }
    }

    /// Reads the shard's counters at `now_ns` and logs, per fault, what they counted since
    /// the last event if a second has passed since it (or, with `now_ns` `u64::MAX` as the
    /// shard stops, whatever is left).
    pub(super) fn tick(&mut self, now_ns: u64, counters: &ShardCounters) {
        for watched in &mut self.watched {
            // Relaxed: this shard's own counter (see `ShardCounters`).
            let total = watched.fault.counter(counters).load(Ordering::Relaxed);
            let since = total.saturating_sub(watched.seen);
            watched.seen = total;
            let told = if since > 0 {
                let example = watched.example.take();
                watched.limit.record(now_ns, since, example)
            } else {
                watched.limit.flush(now_ns)
            };
            if let Some(told) = told {
                log_fault(self.shard, watched.fault, told);
            }
        }
    }
}

fn log_fault(shard: usize, fault: Fault, told: Told<Option<FaultExample>>) {
    let (group, reason) = fault.names();
    let Told { count, example } = told;
    let connection = example.map(|example| example.connection.0);
    let detail = example.map(|example| tracing::field::display(example.detail));
    macro_rules! fault_event {
        ($level:ident) => {
            tracing::$level!(
                target: "spillway::net",
                shard,
                fault = group,
                reason,
                count,
                connection,
                detail,
                "{}",
                fault.message()
            )
        };
    }
    if matches!(fault, Fault::FlowSignal(_)) {
        fault_event!(info);
    } else {
        fault_event!(warn);
    }
}
