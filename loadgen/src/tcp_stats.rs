//! What the TCP client counts over a run ([`TcpStats`]): vocabulary shared by the client
//! that counts it (`tcp`), the target traits that hand it to the generator (`target`) and
//! the reports that print it. [`TcpStats`] is also what reports write: its JSON form is its
//! `Serialize`, its table lines [`TcpStats::table_lines`].

use std::fmt::Write as _;
use std::net::SocketAddr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use spillway::metrics::Tally;
use spillway::net::protocol::ErrorCode;

/// Counts by protocol error code, written as one object keyed by the code's name
/// (`bad_magic`, ...).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ErrorCodeCounts([u64; ErrorCode::ALL.len()]);

impl ErrorCodeCounts {
    /// One more for `code`.
    pub fn count(&mut self, code: ErrorCode) {
        self.0[code.index()] += 1;
    }

    /// The count for `code`.
    pub fn get(&self, code: ErrorCode) -> u64 {
        self.0[code.index()]
    }

    /// All codes together.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// Adds `other`'s counts, code by code.
    pub fn add(&mut self, other: &Self) {
        for (count, more) in self.0.iter_mut().zip(other.0) {
            *count += more;
        }
    }

    /// Every code with its count, in code order.
    pub fn iter(&self) -> impl Iterator<Item = (ErrorCode, u64)> + '_ {
        ErrorCode::ALL.into_iter().zip(self.0)
    }

    /// Non-zero counts, `name count, ...`, or `none`.
    pub fn nonzero_line(&self) -> String {
        let named: Vec<String> = self
            .iter()
            .filter(|&(_, count)| count > 0)
            .map(|(code, count)| format!("{} {count}", code.name()))
            .collect();
        if named.is_empty() {
            "none".to_string()
        } else {
            named.join(", ")
        }
    }
}

impl From<[u64; ErrorCode::ALL.len()]> for ErrorCodeCounts {
    /// Counts indexed by [`ErrorCode::index`].
    fn from(counts: [u64; ErrorCode::ALL.len()]) -> Self {
        Self(counts)
    }
}

impl Serialize for ErrorCodeCounts {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.iter().map(|(code, count)| (code.name(), count)))
    }
}

impl<'de> Deserialize<'de> for ErrorCodeCounts {
    /// The object [`Serialize`] writes; a code it does not name counts 0, a name that is no
    /// code is an error.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let by_name = std::collections::BTreeMap::<String, u64>::deserialize(deserializer)?;
        let mut counts = Self::default();
        for (name, count) in by_name {
            let code = ErrorCode::ALL
                .into_iter()
                .find(|code| code.name() == name)
                .ok_or_else(|| serde::de::Error::custom(format!("no error code {name:?}")))?;
            counts.0[code.index()] = count;
        }
        Ok(counts)
    }
}

/// Messages submitted that have no Reply and never will, by why. Written flat, after their
/// total (`without_reply`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct WithoutReply {
    /// Messages whose Reply a RepliesDropped frame reported dropped.
    pub replies_dropped: u64,
    /// Messages in flight on a connection when it closed during the run.
    pub unanswered_on_close: u64,
    /// Messages submitted to a connection already closed (never sent).
    pub unsent_after_close: u64,
    /// Messages still in flight when shutdown ended (their Replies never came; the
    /// generator reports them lost).
    pub in_flight_at_end: u64,
    /// Messages too large for the server's frame limit (never sent).
    pub too_large: u64,
}

impl WithoutReply {
    /// All of them.
    pub fn total(&self) -> u64 {
        self.replies_dropped
            + self.unanswered_on_close
            + self.unsent_after_close
            + self.in_flight_at_end
            + self.too_large
    }

    /// Adds `other`'s counts.
    pub fn add(&mut self, other: &Self) {
        self.replies_dropped += other.replies_dropped;
        self.unanswered_on_close += other.unanswered_on_close;
        self.unsent_after_close += other.unsent_after_close;
        self.in_flight_at_end += other.in_flight_at_end;
        self.too_large += other.too_large;
    }

    /// Writes the total as `without_reply`, then each count.
    fn with_total<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Written<'a> {
            without_reply: u64,
            #[serde(flatten)]
            counts: &'a WithoutReply,
        }
        Written {
            without_reply: self.total(),
            counts: self,
        }
        .serialize(serializer)
    }
}

/// Flow-control frames received (counted; the open-loop schedule does not follow them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FlowSignals {
    /// Throttle frames.
    pub throttle: u64,
    /// Pause frames.
    pub pause: u64,
    /// Resume frames.
    pub resume: u64,
}

impl FlowSignals {
    /// All three.
    pub fn total(&self) -> u64 {
        self.throttle + self.pause + self.resume
    }

    /// Adds `other`'s counts.
    pub fn add(&mut self, other: &Self) {
        self.throttle += other.throttle;
        self.pause += other.pause;
        self.resume += other.resume;
    }
}

/// How the connections closed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Closures {
    /// Closed by an Error frame from the server, by its code.
    pub errors_by_code: ErrorCodeCounts,
    /// Closed because the server's bytes broke the protocol, by the code this client's
    /// decoder found.
    pub violations_by_code: ErrorCodeCounts,
    /// Closed by the server during the run without an Error.
    pub without_error: u64,
    /// Closed by a failed read or write.
    pub io_errors: u64,
    /// Closed by the server after shutdown half-closed them (the normal end).
    pub at_end: u64,
    /// Still open when the close timeout ran out (closed by this client).
    pub close_timeouts: u64,
}

impl Closures {
    /// Adds `other`'s counts.
    pub fn add(&mut self, other: &Self) {
        self.errors_by_code.add(&other.errors_by_code);
        self.violations_by_code.add(&other.violations_by_code);
        self.without_error += other.without_error;
        self.io_errors += other.io_errors;
        self.at_end += other.at_end;
        self.close_timeouts += other.close_timeouts;
    }

    /// Writes the totals by Error (`by_error`) and by violation
    /// (`protocol_violations_by_server`), then each count.
    fn with_totals<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Written<'a> {
            by_error: u64,
            protocol_violations_by_server: u64,
            #[serde(flatten)]
            counts: &'a Closures,
        }
        Written {
            by_error: self.errors_by_code.total(),
            protocol_violations_by_server: self.violations_by_code.total(),
            counts: self,
        }
        .serialize(serializer)
    }
}

/// Times `submit` handed a message back, by why.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct HandedBack {
    /// Its connection had its credit of Submits in flight.
    pub credit_full: u64,
    /// Its connection's write buffer held more than the TCP client's
    /// `WRITE_BUFFER_MAX_BYTES`.
    pub write_buffer_full: u64,
}

impl HandedBack {
    /// Adds `other`'s counts.
    pub fn add(&mut self, other: &Self) {
        self.credit_full += other.credit_full;
        self.write_buffer_full += other.write_buffer_full;
    }
}

/// The client's system calls, whole run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Syscalls {
    /// `write` calls.
    pub write: u64,
    /// `write` calls that found the socket full.
    pub write_blocked: u64,
    /// `read` calls.
    pub read: u64,
    /// `epoll_wait` calls. One server's counts in a split run have none: the event loop's
    /// calls serve every server at once, and only the total counts them.
    pub epoll_wait: u64,
    /// Readiness events those returned.
    pub events: u64,
}

impl Syscalls {
    /// `write`, `read` and `epoll_wait` calls together.
    pub fn total(&self) -> u64 {
        self.write + self.read + self.epoll_wait
    }

    /// Adds `other`'s counts.
    pub fn add(&mut self, other: &Self) {
        self.write += other.write;
        self.write_blocked += other.write_blocked;
        self.read += other.read;
        self.epoll_wait += other.epoll_wait;
        self.events += other.events;
    }
}

/// What the TCP client counted, whole run: the target's own counters of a TCP run, and
/// what reports write of it (its `Serialize` gives their JSON object).
///
/// A run that drives several servers at once (a split) counts each server's on its own
/// ([`TcpStats::targets`]) and reports their sum ([`TcpStats::total_of`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TcpStats {
    /// The server's address; `None` (`null`) for the sum over several servers.
    pub address: Option<SocketAddr>,
    /// Connections opened (each completed the handshake).
    pub connections: u32,
    /// How long connecting all of them took, ns (written in seconds); with several servers,
    /// every connection to any of them.
    #[serde(rename = "connect_s", serialize_with = "seconds_of_ns")]
    pub connect_ns: u64,
    /// The smallest `send_buffer_replies` any Welcome announced.
    pub send_buffer_replies: u32,
    /// The smallest `max_frame_bytes` any Welcome announced.
    pub max_frame_bytes: u32,
    /// Messages `submit` accepted.
    pub submitted: u64,
    /// Outcomes of the Replies received (`submitted` there counts Replies; written as that
    /// count).
    #[serde(serialize_with = "replies_received")]
    pub replies: Tally,
    /// Messages without a Reply, by why.
    #[serde(flatten, serialize_with = "WithoutReply::with_total")]
    pub without_reply: WithoutReply,
    /// RepliesDropped frames received.
    pub replies_dropped_frames: u64,
    /// Replies reported dropped beyond the messages in flight on their connection (a
    /// server that miscounts; a reconciliation error, not written).
    #[serde(skip)]
    pub replies_dropped_excess: u64,
    /// Replies on a connection with nothing in flight (a server that answers twice).
    pub unexpected_replies: u64,
    /// Throttle, Pause and Resume frames received.
    pub flow_signals: FlowSignals,
    /// Pong frames received (this client sends no Ping).
    pub pongs: u64,
    /// How the connections closed.
    #[serde(serialize_with = "Closures::with_totals")]
    pub closed: Closures,
    /// Messages `submit` handed back, by why.
    pub handed_back: HandedBack,
    /// System calls.
    pub syscalls: Syscalls,
    /// Bytes written.
    pub bytes_written: u64,
    /// Bytes read.
    pub bytes_read: u64,
    /// For the sum over several servers, each one's own counts, in target order (reports
    /// write them as their own objects); empty for one server.
    #[serde(skip)]
    pub targets: Vec<TcpStats>,
}

/// The smaller of two Welcome limits, 0 standing for none known yet.
pub(crate) fn smallest_known(known: u32, more: u32) -> u32 {
    match (known, more) {
        (0, more) => more,
        (known, 0) => known,
        (known, more) => known.min(more),
    }
}

fn seconds_of_ns<S: Serializer>(ns: &u64, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_f64(*ns as f64 / 1e9)
}

fn replies_received<S: Serializer>(replies: &Tally, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_u64(replies.submitted)
}

impl TcpStats {
    /// Zero counts for a client of the server at `address`.
    pub fn new(address: SocketAddr) -> Self {
        Self::zero(Some(address))
    }

    /// Zero counts, for the server at `address` or (`None`) for a sum over several.
    fn zero(address: Option<SocketAddr>) -> Self {
        Self {
            address,
            connections: 0,
            connect_ns: 0,
            send_buffer_replies: 0,
            max_frame_bytes: 0,
            submitted: 0,
            replies: Tally::default(),
            without_reply: WithoutReply::default(),
            replies_dropped_frames: 0,
            replies_dropped_excess: 0,
            unexpected_replies: 0,
            flow_signals: FlowSignals::default(),
            pongs: 0,
            closed: Closures::default(),
            handed_back: HandedBack::default(),
            syscalls: Syscalls::default(),
            bytes_written: 0,
            bytes_read: 0,
            targets: Vec::new(),
        }
    }

    /// One server's counts as they are, or the sum of several servers' with each kept in
    /// [`TcpStats::targets`]: counts add up; the connect time, which all the connections
    /// shared, is the longest; the Welcome limits are the smallest any server announced.
    ///
    /// # Panics
    /// When `targets` is empty.
    pub fn total_of(mut targets: Vec<TcpStats>) -> Self {
        assert!(!targets.is_empty(), "a sum of no servers");
        if targets.len() == 1 {
            return targets.pop().expect("one server");
        }
        let mut total = Self::zero(None);
        for part in &targets {
            total.connections += part.connections;
            total.connect_ns = total.connect_ns.max(part.connect_ns);
            total.send_buffer_replies =
                smallest_known(total.send_buffer_replies, part.send_buffer_replies);
            total.max_frame_bytes = smallest_known(total.max_frame_bytes, part.max_frame_bytes);
            total.submitted += part.submitted;
            total.replies.add(&part.replies);
            total.without_reply.add(&part.without_reply);
            total.replies_dropped_frames += part.replies_dropped_frames;
            total.replies_dropped_excess += part.replies_dropped_excess;
            total.unexpected_replies += part.unexpected_replies;
            total.flow_signals.add(&part.flow_signals);
            total.pongs += part.pongs;
            total.closed.add(&part.closed);
            total.handed_back.add(&part.handed_back);
            total.syscalls.add(&part.syscalls);
            total.bytes_written += part.bytes_written;
            total.bytes_read += part.bytes_read;
        }
        total.targets = targets;
        total
    }

    /// The server, or how many servers, for the table.
    fn servers(&self) -> String {
        match self.address {
            Some(address) => address.to_string(),
            None => format!("{} servers", self.targets.len()),
        }
    }

    /// The client's `write`, `read` and `epoll_wait` calls per message submitted.
    pub fn syscalls_per_message(&self) -> f64 {
        self.syscalls.total() as f64 / self.submitted.max(1) as f64
    }

    /// Where the counts disagree with each other: every message submitted has one Reply
    /// or is accounted for without one, no Reply came twice, and the server kept to the
    /// protocol. Empty when they reconcile.
    pub fn self_check(&self) -> Vec<String> {
        let mut errors = Vec::new();
        let without_reply = self.without_reply.total();
        let accounted = self.replies.submitted + without_reply;
        if self.submitted != accounted {
            errors.push(format!(
                "tcp: submitted {} but replies {} + without a reply {without_reply} = {accounted}",
                self.submitted, self.replies.submitted,
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
        let violations = self.closed.violations_by_code.total();
        if violations > 0 {
            errors.push(format!(
                "tcp: the server broke the protocol on {violations} connections"
            ));
        }
        errors
    }

    /// The lines a report's table prints of it.
    pub fn table_lines(&self, out: &mut String) {
        let without_reply = &self.without_reply;
        let closed = &self.closed;
        let _ = writeln!(
            out,
            "tcp: {} connections to {} in {:.2} s; server: send buffer {} replies, frames up to {} bytes",
            self.connections,
            self.servers(),
            self.connect_ns as f64 / 1e9,
            self.send_buffer_replies,
            self.max_frame_bytes
        );
        let _ = writeln!(
            out,
            "tcp: flow signals: throttle {} pause {} resume {}; replies dropped {} (in {} frames)",
            self.flow_signals.throttle,
            self.flow_signals.pause,
            self.flow_signals.resume,
            without_reply.replies_dropped,
            self.replies_dropped_frames
        );
        let _ = writeln!(
            out,
            "tcp: without a reply {}: dropped {}, in flight on a closed connection {}, sent to a closed connection {}, too large {}, in flight at the end {}",
            without_reply.total(),
            without_reply.replies_dropped,
            without_reply.unanswered_on_close,
            without_reply.unsent_after_close,
            without_reply.too_large,
            without_reply.in_flight_at_end
        );
        let _ = writeln!(
            out,
            "tcp: closed by the server's Error {} ({}); protocol violations by the server {} ({}); without an Error {}; I/O errors {}; at the end {} (close timeouts {})",
            closed.errors_by_code.total(),
            closed.errors_by_code.nonzero_line(),
            closed.violations_by_code.total(),
            closed.violations_by_code.nonzero_line(),
            closed.without_error,
            closed.io_errors,
            closed.at_end,
            closed.close_timeouts
        );
        let syscalls = &self.syscalls;
        let _ = writeln!(
            out,
            "tcp: handed back: credit full {} write buffer full {}; system calls, whole run: write {} ({} blocked) read {} epoll_wait {} ({} events), {:.2} per message",
            self.handed_back.credit_full,
            self.handed_back.write_buffer_full,
            syscalls.write,
            syscalls.write_blocked,
            syscalls.read,
            syscalls.epoll_wait,
            syscalls.events,
            self.syscalls_per_message(),
        );
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
        stats.without_reply.replies_dropped = 2;
        stats.without_reply.unanswered_on_close = 1;
        stats.without_reply.unsent_after_close = 1;
        assert!(stats.self_check().is_empty(), "{:?}", stats.self_check());
        assert_eq!(stats.without_reply.total(), 4);
        stats.submitted = 11;
        assert_eq!(stats.self_check().len(), 1);
        stats.submitted = 10;
        stats.unexpected_replies = 1;
        assert_eq!(stats.self_check().len(), 1);
    }

    #[test]
    fn several_servers_counts_add_up_and_keep_each_one() {
        let mut first = TcpStats::new("127.0.0.1:1".parse().unwrap());
        first.connections = 3;
        first.connect_ns = 2_000;
        first.send_buffer_replies = 1_000;
        first.max_frame_bytes = 65_536;
        first.submitted = 10;
        first.replies.count_completion(Outcome::Delivered);
        first.without_reply.replies_dropped = 9;
        first.closed.errors_by_code.count(ErrorCode::BadMagic);
        first.syscalls.write = 4;
        let mut second = TcpStats::new("127.0.0.1:2".parse().unwrap());
        second.connections = 1;
        second.connect_ns = 1_000;
        second.send_buffer_replies = 500;
        second.max_frame_bytes = 131_072;
        second.submitted = 2;
        second.replies.count_completion(Outcome::Delivered);
        second.replies.count_completion(Outcome::Delivered);
        second.closed.errors_by_code.count(ErrorCode::BadMagic);
        second.syscalls.write = 1;
        second.bytes_read = 7;
        // One server's counts are their own total.
        assert_eq!(TcpStats::total_of(vec![first.clone()]), first);
        let total = TcpStats::total_of(vec![first.clone(), second.clone()]);
        assert_eq!(total.address, None);
        assert_eq!(total.connections, 4);
        assert_eq!(total.connect_ns, 2_000);
        assert_eq!(total.send_buffer_replies, 500);
        assert_eq!(total.max_frame_bytes, 65_536);
        assert_eq!(total.submitted, 12);
        assert_eq!(total.replies.delivered, 3);
        assert_eq!(total.without_reply.total(), 9);
        assert_eq!(total.closed.errors_by_code.get(ErrorCode::BadMagic), 2);
        assert_eq!(total.syscalls.write, 5);
        assert_eq!(total.bytes_read, 7);
        assert!(total.self_check().is_empty(), "{:?}", total.self_check());
        assert_eq!(total.targets, [first, second]);
        let json = serde_json::to_value(&total).unwrap();
        assert!(json["address"].is_null());
        assert!(json.get("targets").is_none());
        let mut table = String::new();
        total.table_lines(&mut table);
        assert!(table.contains("4 connections to 2 servers"), "{table}");
    }

    #[test]
    fn the_json_object_carries_the_totals_beside_the_counts() {
        let mut stats = TcpStats::new("127.0.0.1:7878".parse().unwrap());
        stats.connect_ns = 1_500_000_000;
        stats.replies.count_completion(Outcome::Delivered);
        stats.without_reply.too_large = 2;
        stats.without_reply.in_flight_at_end = 1;
        stats.closed.errors_by_code.count(ErrorCode::BadMagic);
        stats.closed.violations_by_code.count(ErrorCode::Truncated);
        stats.closed.violations_by_code.count(ErrorCode::Truncated);
        let json = serde_json::to_value(&stats).unwrap();
        assert_eq!(json["address"], "127.0.0.1:7878");
        assert_eq!(json["connect_s"], 1.5);
        assert_eq!(json["replies"], 1);
        assert_eq!(json["without_reply"], 3);
        assert_eq!(json["too_large"], 2);
        assert_eq!(json["closed"]["by_error"], 1);
        assert_eq!(json["closed"]["protocol_violations_by_server"], 2);
        assert_eq!(json["closed"]["errors_by_code"]["bad_magic"], 1);
        assert_eq!(json["closed"]["violations_by_code"]["truncated"], 2);
        assert_eq!(json["flow_signals"]["throttle"], 0);
        assert!(json.get("replies_dropped_excess").is_none());
        let counts: ErrorCodeCounts =
            serde_json::from_value(json["closed"]["violations_by_code"].clone()).unwrap();
        assert_eq!(counts, stats.closed.violations_by_code);
        assert!(serde_json::from_str::<ErrorCodeCounts>(r#"{"bogus": 1}"#).is_err());
    }
}
