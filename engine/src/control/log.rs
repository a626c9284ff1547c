//! What the control thread logs (issue 15), under `spillway::breaker` and
//! `spillway::admission`: each breaker transition with its cause and figures (at most
//! [`BREAKER_EVENTS_PER_SECOND`] a second, so a flapping breaker cannot flood: the rest are
//! counted into the next event), and a summary of refusals and sheds at most every
//! [`REFUSAL_SUMMARY_INTERVAL_NS`], from the counters the monitor reads anyway. A refusal
//! itself is never logged: it is per message, and the shards count it
//! ([`Stats`](crate::metrics::Stats)).

use core::fmt;

use crate::admission::breaker::BreakerState;
use crate::log_limit::{Counts, LogLimit, Told, SECOND_NS};
use crate::metrics::Tally;
use crate::outcome::{RefusalReason, ShedReason};

use super::{BreakerCause, BreakerTransition, ShardTrigger};

/// Breaker transitions logged one by one per second; more in the same second are counted
/// into the next event.
pub(super) const BREAKER_EVENTS_PER_SECOND: u32 = 10;
/// The shortest time between two refusal summaries, in ns.
pub(super) const REFUSAL_SUMMARY_INTERVAL_NS: u64 = 10 * SECOND_NS;

/// The breaker's transitions, logged as they are learnt, within a rate limit.
#[derive(Debug)]
pub(super) struct BreakerLog {
    limit: LogLimit<BreakerTransition>,
}

impl BreakerLog {
    pub(super) fn new() -> Self {
        Self {
            limit: LogLimit::new(SECOND_NS, BREAKER_EVENTS_PER_SECOND),
        }
    }

    /// Logs `transition`, learnt at `now_ns`, unless this second's events are spent.
    pub(super) fn record(&mut self, now_ns: u64, transition: BreakerTransition) {
        if let Some(told) = self.limit.record(now_ns, 1, transition) {
            log_transition(told);
        }
    }

    /// Logs the transitions held back, once their second has passed.
    pub(super) fn flush(&mut self, now_ns: u64) {
        if let Some(told) = self.limit.flush(now_ns) {
            log_transition(told);
        }
    }

    /// Logs the transitions held back, now (the control thread is stopping).
    pub(super) fn finish(&mut self) {
        if let Some(told) = self.limit.take() {
            log_transition(told);
        }
    }
}

/// One event for `told`: its transition (for a summary, the latest), with `count` the
/// transitions it stands for (more than 1 when some were held back).
fn log_transition(told: Told<BreakerTransition>) {
    let Told {
        count,
        example: transition,
    } = told;
    let shard = match transition.cause {
        BreakerCause::Shard { shard, .. } => Some(shard),
        _ => None,
    };
    macro_rules! transition_event {
        ($level:ident, $message:literal) => {
            tracing::$level!(
                target: "spillway::breaker",
                from = transition.from.name(),
                to = transition.to.name(),
                cause = cause_name(&transition.cause),
                shard,
                figures = %Figures(&transition.cause),
                at_ns = transition.at_ns,
                count,
                $message
            )
        };
    }
    if matches!(transition.to, BreakerState::Open | BreakerState::ForcedOpen) {
        transition_event!(warn, "circuit breaker opened");
    } else {
        transition_event!(info, "circuit breaker moved");
    }
}

/// The cause's snake_case name, as in `BreakerTransitionCounts`.
fn cause_name(cause: &BreakerCause) -> &'static str {
    match cause {
        BreakerCause::Shard { trigger, .. } => match trigger {
            ShardTrigger::ErrorRate(_) => "error_rate",
            ShardTrigger::P95Latency(_) => "p95_latency",
            ShardTrigger::QueueFull { .. } => "queue_full",
            ShardTrigger::RecoveryTimeout { .. } => "recovery_timeout",
            ShardTrigger::GoodPeriod { .. } => "good_period",
        },
        BreakerCause::Overload(_) => "overload",
        BreakerCause::ForcedOpen => "forced_open",
        BreakerCause::ForcedClosed => "forced_closed",
        BreakerCause::Reset => "reset",
    }
}

/// The figures a cause was judged on, as `name=value` pairs (`-` for a command).
struct Figures<'a>(&'a BreakerCause);

impl fmt::Display for Figures<'_> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            BreakerCause::Shard { trigger, .. } => match trigger {
                ShardTrigger::ErrorRate(window) | ShardTrigger::P95Latency(window) => write!(
                    formatter,
                    "error_rate_percent={:.1} error_rate_max_percent={:.1} \
                     p95_latency_ns={} p95_latency_max_ns={} samples={} failed={}",
                    window.error_rate_percent,
                    window.error_rate_max_percent,
                    window.p95_latency_ns,
                    window.p95_latency_max_ns,
                    window.samples,
                    window.failed
                ),
                ShardTrigger::QueueFull {
                    queue,
                    pending,
                    cap,
                } => write!(formatter, "queue={queue:?} pending={pending} cap={cap}"),
                ShardTrigger::RecoveryTimeout {
                    open_for_ns,
                    recovery_timeout_ns,
                } => write!(
                    formatter,
                    "open_for_ns={open_for_ns} recovery_timeout_ns={recovery_timeout_ns}"
                ),
                ShardTrigger::GoodPeriod {
                    half_open_for_ns,
                    good_period_ns,
                    window,
                } => write!(
                    formatter,
                    "half_open_for_ns={half_open_for_ns} good_period_ns={good_period_ns} \
                     samples={} failed={}",
                    window.samples, window.failed
                ),
            },
            BreakerCause::Overload(sample) => write!(
                formatter,
                "queue={} depth={} cap={}",
                sample.queue, sample.depth, sample.cap
            ),
            BreakerCause::ForcedOpen | BreakerCause::ForcedClosed | BreakerCause::Reset => {
                formatter.write_str("-")
            }
        }
    }
}

/// Refusals and sheds since the last summary, told at most every
/// [`REFUSAL_SUMMARY_INTERVAL_NS`] when there were any.
#[derive(Debug, Default)]
pub(super) struct RefusalLog {
    /// The engine's totals at the last summary.
    told: Tally,
    next_ns: u64,
}

impl RefusalLog {
    /// Looks at the engine's totals `now` (read at `now_ns` for the monitor) and logs what
    /// was refused or shed since the last summary, if it is time.
    pub(super) fn sample(&mut self, now_ns: u64, now: &Tally) {
        if now_ns < self.next_ns {
            return;
        }
        self.next_ns = now_ns.saturating_add(REFUSAL_SUMMARY_INTERVAL_NS);
        let since = |total: u64, told: u64| total.saturating_sub(told);
        let refused: [(&'static str, u64); RefusalReason::COUNT] =
            RefusalReason::ALL.map(|reason| {
                let index = reason.index();
                (
                    reason.name(),
                    since(now.refused[index], self.told.refused[index]),
                )
            });
        let shed: [(&'static str, u64); ShedReason::COUNT] = ShedReason::ALL.map(|reason| {
            let index = reason.index();
            (reason.name(), since(now.shed[index], self.told.shed[index]))
        });
        let refused_total: u64 = refused.iter().map(|(_, count)| count).sum();
        let shed_total: u64 = shed.iter().map(|(_, count)| count).sum();
        let submitted = since(now.submitted, self.told.submitted);
        self.told = *now;
        if refused_total + shed_total == 0 {
            return;
        }
        tracing::warn!(
            target: "spillway::admission",
            submitted,
            refused = refused_total,
            shed = shed_total,
            refused_by_reason = %Counts(&refused),
            shed_by_reason = %Counts(&shed),
            "messages refused or shed since the last summary"
        );
    }
}
