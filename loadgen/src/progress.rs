//! The progress line: one line a second on stderr while a run goes, and the `1.23 ms` style
//! every report prints times in.

use hdrhistogram::Histogram;
use spillway::control::Control;
use spillway::metrics::Tally;

/// What the progress line reads from the generator.
pub struct ProgressView<'a> {
    /// Messages submitted so far (warm-up included).
    pub submitted_all: u64,
    /// Outcomes read so far (warm-up included).
    pub all: &'a Tally,
    /// Latency of delivered measured messages so far, ns.
    pub latency_ns: &'a Histogram<u64>,
    /// Generator lag of measured messages so far, ns.
    pub lag_ns: &'a Histogram<u64>,
}

/// Prints a progress line each second of the run.
pub struct Progress {
    enabled: bool,
    unrecorded_ns: u64,
    next_ns: u64,
    last_submitted: u64,
    last_delivered: u64,
}

impl Progress {
    /// A progress printer; `unrecorded_ns` is the warm-up (and lead-in) before measuring.
    pub fn new(enabled: bool, unrecorded_ns: u64) -> Self {
        Self {
            enabled,
            unrecorded_ns,
            next_ns: 1_000_000_000,
            last_submitted: 0,
            last_delivered: 0,
        }
    }

    /// Prints a line if a second boundary has passed (`now_ns` from the run's start); the
    /// breaker's state is on it when the target has a control plane.
    #[inline]
    pub fn tick(&mut self, now_ns: u64, view: ProgressView<'_>, control: Option<&Control>) {
        if !self.enabled || now_ns < self.next_ns {
            return;
        }
        let seconds = (now_ns - self.next_ns) as f64 / 1e9 + 1.0;
        // The line covers the second that ended now; name the part of the run it began in.
        let began_ns = self.next_ns - 1_000_000_000;
        self.next_ns = now_ns + 1_000_000_000;
        let sent = view.submitted_all - self.last_submitted;
        let delivered = view.all.delivered - self.last_delivered;
        self.last_submitted = view.submitted_all;
        self.last_delivered = view.all.delivered;
        let phase = if began_ns < self.unrecorded_ns {
            "warm-up"
        } else {
            "measured"
        };
        let p99 = if view.latency_ns.is_empty() {
            "-".to_string()
        } else {
            format_ns(view.latency_ns.value_at_quantile(0.99))
        };
        let lag = if view.lag_ns.is_empty() {
            "-".to_string()
        } else {
            format_ns(view.lag_ns.value_at_quantile(0.99))
        };
        let breaker = control.map_or_else(String::new, |control| {
            format!(" | breaker {}", control.breaker_state().name())
        });
        eprintln!(
            "[{:>5.1}s {phase:>8}] sent {:>9.0}/s delivered {:>9.0}/s | totals: delivered {} refused {} shed {} | p99 {p99} lag p99 {lag}{breaker}",
            now_ns as f64 / 1e9,
            sent as f64 / seconds,
            delivered as f64 / seconds,
            view.all.delivered,
            view.all.refused_total(),
            view.all.shed_total(),
        );
    }
}

/// `1.23 ms` style.
pub fn format_ns(ns: u64) -> String {
    if ns < 10_000 {
        format!("{:.2} us", ns as f64 / 1e3)
    } else if ns < 1_000_000 {
        format!("{:.1} us", ns as f64 / 1e3)
    } else if ns < 10_000_000_000 {
        format!("{:.2} ms", ns as f64 / 1e6)
    } else {
        format!("{:.2} s", ns as f64 / 1e9)
    }
}
