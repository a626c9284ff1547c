//! The timers, checked every [`NetConfig::housekeeping_interval_ns`]: the hello timeout,
//! the frame timeout, the close deadline, and the flow signals that only time changes (a
//! pause running out).

use crate::net::protocol::ErrorCode;
use crate::sync::Ordering;

use super::connection::Phase;
use super::shard::{mark_dirty, ShardNet};
use super::stats::{Fault, FaultDetail};
#[cfg(doc)]
use crate::config::NetConfig;

impl ShardNet {
    /// Applies egress settings changed by `TcpServer::set_egress` to every connection
    /// and to those accepted from now on.
    fn follow_egress_changes(&mut self, now_ns: u64) {
        // Acquire: pairs with the Release in `set_egress`.
        let generation = self.shared.egress_generation.load(Ordering::Acquire);
        if generation == self.egress_generation {
            return;
        }
        self.egress = *self
            .shared
            .egress
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        self.egress_generation = generation;
        for connection in self.slots.iter_mut().flatten() {
            connection.replies.set_config(self.egress, now_ns);
        }
    }

    /// The timers: hello and frame timeouts, close deadlines, time-made flow signals.
    pub(super) fn housekeeping(&mut self, now_ns: u64) -> usize {
        let config = self.shared.config;
        self.follow_egress_changes(now_ns);
        self.fault_log
            .tick(now_ns, &self.shared.counters[self.shard]);
        let mut work = 0;
        for slot in 0..self.slots.len() {
            let Some(connection) = self.slots[slot].as_mut() else {
                continue;
            };
            match connection.phase {
                Phase::Handshake { deadline_ns } if now_ns >= deadline_ns => {
                    work += 1;
                    self.close_for_timeout(slot, "no hello within the hello timeout", now_ns);
                    continue;
                }
                Phase::Closing {
                    deadline_ns,
                    reason,
                } if now_ns >= deadline_ns => {
                    work += 1;
                    self.close_now(slot, reason, now_ns);
                    continue;
                }
                _ => {}
            }
            // Not while the server owes the connection a read (a turn's budget left its
            // bytes unread, or the `Block` policy holds its Submits back): the rest of the
            // frame may have come, unseen. The first read after that judges the frame again.
            let read_owed = connection.read_pending || !connection.blocked.is_empty();
            if let Some(timer) = connection.frame_timer.filter(|_| !read_owed) {
                if now_ns.saturating_sub(timer.started_ns) >= config.net.frame_timeout_ns {
                    work += 1;
                    self.close_for_timeout(
                        slot,
                        "a frame was begun and not finished within the frame timeout",
                        now_ns,
                    );
                    continue;
                }
            }
            if let Some(signal) = connection.replies.poll_signal(now_ns) {
                connection.signal = Some(signal);
                mark_dirty(&mut self.dirty, slot, connection);
                work += 1;
            }
            if !connection.blocked.is_empty() {
                mark_dirty(&mut self.dirty, slot, connection);
            }
        }
        work
    }

    /// Closes with `timeout`, noting the connection as the timeouts' example.
    fn close_for_timeout(&mut self, slot: usize, detail: &'static str, now_ns: u64) {
        let fault = Fault::Closed(ErrorCode::Timeout);
        self.note_fault(slot, fault, FaultDetail::Text(detail));
        self.close_with(slot, ErrorCode::Timeout, detail, now_ns);
    }
}
