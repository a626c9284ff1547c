//! What the TCP client counts over a run ([`TcpStats`]): vocabulary shared by the client
//! that counts it (`tcp`), the target traits that hand it to the generator (`target`) and
//! the reports that print it.

use std::net::SocketAddr;

use spillway::metrics::Tally;
use spillway::net::protocol::ErrorCode;

/// What the TCP client counted, whole run: the target's own counters of a TCP run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcpStats {
    /// The server's address.
    pub address: SocketAddr,
    /// Connections opened (each completed the handshake).
    pub connections: u32,
    /// How long connecting all of them took, ns.
    pub connect_ns: u64,
    /// The smallest `send_buffer_replies` any Welcome announced.
    pub send_buffer_replies: u32,
    /// The smallest `max_frame_bytes` any Welcome announced.
    pub max_frame_bytes: u32,
    /// Messages `submit` accepted.
    pub submitted: u64,
    /// Outcomes of the Replies received (`submitted` there counts Replies).
    pub replies: Tally,
    /// Messages whose Reply a RepliesDropped frame reported dropped.
    pub replies_dropped: u64,
    /// RepliesDropped frames received.
    pub replies_dropped_frames: u64,
    /// Replies reported dropped beyond the messages in flight on their connection (a
    /// server that miscounts).
    pub replies_dropped_excess: u64,
    /// Messages in flight on a connection when it closed during the run.
    pub unanswered_on_close: u64,
    /// Messages submitted to a connection already closed (never sent).
    pub unsent_after_close: u64,
    /// Messages still in flight when shutdown ended (their Replies never came; the
    /// generator reports them lost).
    pub in_flight_at_end: u64,
    /// Messages too large for the server's frame limit (never sent).
    pub too_large: u64,
    /// Replies on a connection with nothing in flight (a server that answers twice).
    pub unexpected_replies: u64,
    /// Throttle frames received.
    pub throttles: u64,
    /// Pause frames received.
    pub pauses: u64,
    /// Resume frames received.
    pub resumes: u64,
    /// Pong frames received (this client sends no Ping).
    pub pongs: u64,
    /// Connections closed by an Error frame, by [`ErrorCode`] (index `code - 1`).
    pub errors_by_code: [u64; ErrorCode::ALL.len()],
    /// Connections closed because the server's bytes broke the protocol, by the code this
    /// client's decoder found (index `code - 1`).
    pub violations_by_code: [u64; ErrorCode::ALL.len()],
    /// Connections the server closed during the run without an Error.
    pub closed_without_error: u64,
    /// Connections closed by a failed read or write.
    pub io_errors: u64,
    /// Connections the server closed after shutdown half-closed them (the normal end).
    pub closed_at_end: u64,
    /// Connections still open when the close timeout ran out (closed by this client).
    pub close_timeouts: u64,
    /// Times `submit` handed a message back because its connection had its credit of
    /// Submits in flight.
    pub credit_full: u64,
    /// Times `submit` handed a message back because its connection's write buffer was
    /// over `tcp::WRITE_BUFFER_MAX_BYTES`.
    pub write_buffer_full: u64,
    /// `write` system calls.
    pub write_calls: u64,
    /// `write` calls that found the socket full.
    pub writes_blocked: u64,
    /// `read` system calls.
    pub read_calls: u64,
    /// `epoll_wait` system calls.
    pub poll_calls: u64,
    /// Readiness events those returned.
    pub events: u64,
    /// Bytes written.
    pub bytes_written: u64,
    /// Bytes read.
    pub bytes_read: u64,
}

impl TcpStats {
    /// Zero counts for a client of the server at `address`.
    pub fn new(address: SocketAddr) -> Self {
        Self {
            address,
            connections: 0,
            connect_ns: 0,
            send_buffer_replies: 0,
            max_frame_bytes: 0,
            submitted: 0,
            replies: Tally::default(),
            replies_dropped: 0,
            replies_dropped_frames: 0,
            replies_dropped_excess: 0,
            unanswered_on_close: 0,
            unsent_after_close: 0,
            in_flight_at_end: 0,
            too_large: 0,
            unexpected_replies: 0,
            throttles: 0,
            pauses: 0,
            resumes: 0,
            pongs: 0,
            errors_by_code: [0; ErrorCode::ALL.len()],
            violations_by_code: [0; ErrorCode::ALL.len()],
            closed_without_error: 0,
            io_errors: 0,
            closed_at_end: 0,
            close_timeouts: 0,
            credit_full: 0,
            write_buffer_full: 0,
            write_calls: 0,
            writes_blocked: 0,
            read_calls: 0,
            poll_calls: 0,
            events: 0,
            bytes_written: 0,
            bytes_read: 0,
        }
    }

    /// `tcp://ADDRESS`, as reports name the target.
    pub fn target_name(&self) -> String {
        format!("tcp://{}", self.address)
    }

    /// Connections closed by the server's Error frames, all codes.
    pub fn errors_total(&self) -> u64 {
        self.errors_by_code.iter().sum()
    }

    /// Connections closed because the server broke the protocol, all codes.
    pub fn violations_total(&self) -> u64 {
        self.violations_by_code.iter().sum()
    }

    /// Dropped replies, messages in flight on a connection that closed, submitted after
    /// their connection closed, too large to send, or still in flight at the end.
    pub fn without_reply(&self) -> u64 {
        self.replies_dropped
            + self.unanswered_on_close
            + self.unsent_after_close
            + self.too_large
            + self.in_flight_at_end
    }

    /// Where the counts disagree with each other: every message submitted has one Reply
    /// or is accounted for without one, no Reply came twice, and the server kept to the
    /// protocol. Empty when they reconcile.
    pub fn self_check(&self) -> Vec<String> {
        let mut errors = Vec::new();
        let accounted = self.replies.submitted + self.without_reply();
        if self.submitted != accounted {
            errors.push(format!(
                "tcp: submitted {} but replies {} + without a reply {} = {accounted}",
                self.submitted,
                self.replies.submitted,
                self.without_reply()
            ));
        }
        if self.unexpected_replies > 0 {
            errors.push(format!(
                "tcp: {} Replies came on connections with nothing in flight",
                self.unexpected_replies
            ));
        }
        if self.replies_dropped_excess > 0 {
            errors.push(format!(
                "tcp: RepliesDropped reported {} more replies than were in flight",
                self.replies_dropped_excess
            ));
        }
        if self.violations_total() > 0 {
            errors.push(format!(
                "tcp: the server broke the protocol on {} connections",
                self.violations_total()
            ));
        }
        errors
    }
}

#[cfg(test)]
mod tests {
    use spillway::outcome::Outcome;

    use super::*;

    #[test]
    fn stats_reconcile_only_when_every_message_is_accounted_for() {
        let mut stats = TcpStats::new("127.0.0.1:1".parse().unwrap());
        stats.submitted = 10;
        for _ in 0..6 {
            stats.replies.count_completion(Outcome::Delivered);
        }
        stats.replies_dropped = 2;
        stats.unanswered_on_close = 1;
        stats.unsent_after_close = 1;
        assert!(stats.self_check().is_empty(), "{:?}", stats.self_check());
        assert_eq!(stats.without_reply(), 4);
        stats.submitted = 11;
        assert_eq!(stats.self_check().len(), 1);
        stats.submitted = 10;
        stats.unexpected_replies = 1;
        assert_eq!(stats.self_check().len(), 1);
    }
}
