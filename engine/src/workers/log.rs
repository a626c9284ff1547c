//! What a shard's worker pool logs (issue 15), under `spillway::workers`: a worker's Hello
//! (info), a worker cut for going away, hanging or breaking the protocol (warn, with its
//! name, the Works it held and why), and connections refused over `max_workers` (warn).
//! Each kind is rate-limited per shard ([`WORKER_EVENTS_PER_SECOND`], and one refusal
//! event a second): a worker that crash-loops, or a client that connects again and again,
//! has the rest counted into the next event.

use crate::log_limit::{LogLimit, Told, SECOND_NS};

/// Hellos, and cuts, logged one by one per second and shard; more in the same second are
/// counted into the next event.
pub(super) const WORKER_EVENTS_PER_SECOND: u32 = 32;

/// A worker that said Hello.
#[derive(Clone, Debug)]
pub(super) struct Connected {
    pub(super) worker_id: u64,
    pub(super) name: String,
    pub(super) credit: u32,
}

/// A worker cut, and why.
#[derive(Clone, Debug)]
pub(super) struct CutWorker {
    pub(super) worker_id: u64,
    /// Empty if it was cut before its Hello.
    pub(super) name: String,
    /// `lost`, `answer_timeout`, or the protocol error's code name.
    pub(super) reason: &'static str,
    /// Works it held, failed or waiting for a retry now.
    pub(super) held: usize,
}

/// One shard's worker events and their rate limits.
#[derive(Debug)]
pub(super) struct WorkerLog {
    shard: usize,
    connected: LogLimit<Connected>,
    cut: LogLimit<CutWorker>,
    /// The example is the limit the refusals hit.
    refused: LogLimit<usize>,
}

impl WorkerLog {
    pub(super) fn new(shard: usize) -> Self {
        Self {
            shard,
            connected: LogLimit::new(SECOND_NS, WORKER_EVENTS_PER_SECOND),
            cut: LogLimit::new(SECOND_NS, WORKER_EVENTS_PER_SECOND),
            refused: LogLimit::per_second(),
        }
    }

    pub(super) fn connected(&mut self, now_ns: u64, worker: Connected) {
        if let Some(told) = self.connected.record(now_ns, 1, worker) {
            log_connected(self.shard, told);
        }
    }

    pub(super) fn cut(&mut self, now_ns: u64, worker: CutWorker) {
        if let Some(told) = self.cut.record(now_ns, 1, worker) {
            log_cut(self.shard, told);
        }
    }

    pub(super) fn refused(&mut self, now_ns: u64, max_workers: usize) {
        if let Some(told) = self.refused.record(now_ns, 1, max_workers) {
            log_refused(self.shard, told);
        }
    }

    /// Logs what the limits held back, once their second has passed (from the shard's
    /// timer), or now when `stopping`.
    pub(super) fn flush(&mut self, now_ns: u64, stopping: bool) {
        // Every window has passed by the end of time.
        let now_ns = if stopping { u64::MAX } else { now_ns };
        if let Some(told) = self.connected.flush(now_ns) {
            log_connected(self.shard, told);
        }
        if let Some(told) = self.cut.flush(now_ns) {
            log_cut(self.shard, told);
        }
        if let Some(told) = self.refused.flush(now_ns) {
            log_refused(self.shard, told);
        }
    }
}

fn log_connected(shard: usize, told: Told<Connected>) {
    let Told { count, example } = told;
    tracing::info!(
        target: "spillway::workers",
        shard,
        worker_id = example.worker_id,
        name = %example.name,
        credit = example.credit,
        count,
        "worker connected"
    );
}

fn log_cut(shard: usize, told: Told<CutWorker>) {
    let Told { count, example } = told;
    tracing::warn!(
        target: "spillway::workers",
        shard,
        worker_id = example.worker_id,
        name = %example.name,
        reason = example.reason,
        held = example.held,
        count,
        "worker cut"
    );
}

fn log_refused(shard: usize, told: Told<usize>) {
    tracing::warn!(
        target: "spillway::workers",
        shard,
        max_workers = told.example,
        count = told.count,
        "worker connections refused: too many workers"
    );
}
