//! The overload monitor of SPEC 5: samples every queue's depth against its cap, raises an
//! alert when a queue's level changes (warning at 80%, critical at 90%, overload at 100% by
//! default), keeps the last alerts, and answers three questions: all queues, the queues of
//! one role, the overloaded ones.
//!
//! It runs off the data path: it reads the counters the shards already publish
//! ([`Stats`]) and the tenants' shared pending counts, so sampling costs the shards
//! nothing. An overload is reported to the caller, which trips the breaker.
//!
//! Each alert is logged (target `spillway::monitor`: a rise at warn, a fall at info), at
//! most [`ALERT_EVENTS_PER_SECOND`] a second: a queue flapping around a threshold, or many
//! queues filling at once, has the alerts past that counted into the next event, so none
//! is lost from the counts.
//!
//! ```
//! use spillway::message::Role;
//! use spillway::monitor::{AlertLevel, AlertThresholds, Monitor, QueueId, QueueSample};
//!
//! let mut monitor = Monitor::new(AlertThresholds::default(), 100);
//! let queue = QueueId::Role { shard: 0, role: Role::Sse };
//! let alerts = monitor.sample(1_000, [QueueSample { queue, depth: 4_600, cap: 5_000 }]);
//! assert_eq!(alerts, 1);
//! assert_eq!(monitor.history().back().unwrap().level, AlertLevel::Critical);
//! assert_eq!(monitor.queues_of_role(Role::Sse).count(), 1);
//! assert_eq!(monitor.overloaded().count(), 0);
//! ```

use std::collections::{BTreeMap, VecDeque};

use core::fmt;

use crate::log_limit::{LogLimit, Told, SECOND_NS};
use crate::message::{Role, TenantId};
use crate::metrics::Stats;

/// Alerts logged one by one per second; more in the same second are counted into the next
/// event.
pub const ALERT_EVENTS_PER_SECOND: u32 = 64;

/// A queue the monitor watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum QueueId {
    /// A shard's handler queue (all pending messages on the shard).
    Handler {
        /// The shard.
        shard: usize,
    },
    /// A shard's pending messages of one role.
    Role {
        /// The shard.
        shard: usize,
        /// The role.
        role: Role,
    },
    /// A tenant's pending messages across all shards.
    Tenant {
        /// The tenant.
        tenant: TenantId,
    },
}

impl QueueId {
    /// The role this queue belongs to, if it is a role queue.
    pub fn role(self) -> Option<Role> {
        match self {
            QueueId::Role { role, .. } => Some(role),
            _ => None,
        }
    }
}

impl fmt::Display for QueueId {
    /// `handler(shard=0)`, `role(shard=0,role=sse)`, `tenant(7)`: for logs.
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QueueId::Handler { shard } => write!(formatter, "handler(shard={shard})"),
            QueueId::Role { shard, role } => write!(formatter, "role(shard={shard},role={role})"),
            QueueId::Tenant { tenant } => write!(formatter, "tenant({})", tenant.0),
        }
    }
}

/// One queue's depth against its cap at a sampling instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueSample {
    /// Which queue.
    pub queue: QueueId,
    /// Messages pending.
    pub depth: u64,
    /// Its cap (0 means uncapped: always normal).
    pub cap: u64,
}

impl QueueSample {
    /// Depth as a percentage of the cap, rounded down.
    pub fn fill_percent(&self) -> u64 {
        // An uncapped queue (cap 0) is always 0% full.
        self.depth
            .saturating_mul(100)
            .checked_div(self.cap)
            .unwrap_or(0)
    }
}

/// How full a queue is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AlertLevel {
    /// Under the warning threshold.
    Normal,
    /// At or over the warning threshold (SPEC: 80%).
    Warning,
    /// At or over the critical threshold (SPEC: 90%).
    Critical,
    /// At or over the overload threshold (SPEC: 100%); trips the breaker.
    Overload,
}

impl AlertLevel {
    /// A stable snake_case name for reports.
    pub fn name(self) -> &'static str {
        match self {
            AlertLevel::Normal => "normal",
            AlertLevel::Warning => "warning",
            AlertLevel::Critical => "critical",
            AlertLevel::Overload => "overload",
        }
    }
}

/// The fill percentages at which each level starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AlertThresholds {
    /// Warning from this percentage (SPEC: 80).
    pub warning_percent: u32,
    /// Critical from this percentage (SPEC: 90).
    pub critical_percent: u32,
    /// Overload from this percentage (SPEC: 100).
    pub overload_percent: u32,
}

impl Default for AlertThresholds {
    fn default() -> Self {
        Self {
            warning_percent: 80,
            critical_percent: 90,
            overload_percent: 100,
        }
    }
}

impl AlertThresholds {
    /// The level of a queue at `sample`. Compares `depth × 100` against `cap × percent`,
    /// exactly, with no rounding.
    pub fn level(&self, sample: &QueueSample) -> AlertLevel {
        if sample.cap == 0 {
            return AlertLevel::Normal;
        }
        let filled = u128::from(sample.depth) * 100;
        let at = |percent: u32| filled >= u128::from(sample.cap) * u128::from(percent);
        if at(self.overload_percent) {
            AlertLevel::Overload
        } else if at(self.critical_percent) {
            AlertLevel::Critical
        } else if at(self.warning_percent) {
            AlertLevel::Warning
        } else {
            AlertLevel::Normal
        }
    }
}

/// A queue changed level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Alert {
    /// When it was sampled, ns on the engine clock.
    pub at_ns: u64,
    /// Which queue.
    pub queue: QueueId,
    /// Its new level (`Normal` when it recovered).
    pub level: AlertLevel,
    /// The level it had before.
    pub previous: AlertLevel,
    /// Depth and cap at the sample.
    pub depth: u64,
    /// The cap.
    pub cap: u64,
}

/// What the monitor knows about one queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueStatus {
    /// The last sample.
    pub sample: QueueSample,
    /// Its level at that sample.
    pub level: AlertLevel,
    /// When it was sampled.
    pub at_ns: u64,
}

/// The monitor's state: each queue's last status and the recent alerts.
#[derive(Clone, Debug)]
pub struct Monitor {
    thresholds: AlertThresholds,
    /// Ordered by queue, so queries answer in a stable order.
    queues: BTreeMap<QueueId, QueueStatus>,
    history: VecDeque<Alert>,
    history_max: usize,
    /// Alerts are logged through this limit.
    log_limit: LogLimit<Alert>,
}

impl Monitor {
    /// A monitor with `thresholds` that keeps the last `history_max` alerts (at least one).
    pub fn new(thresholds: AlertThresholds, history_max: usize) -> Self {
        let history_max = history_max.max(1);
        Self {
            thresholds,
            queues: BTreeMap::new(),
            history: VecDeque::with_capacity(history_max),
            history_max,
            log_limit: LogLimit::new(SECOND_NS, ALERT_EVENTS_PER_SECOND),
        }
    }

    /// Records one sampling round at `now_ns` and returns how many alerts it raised (one
    /// per queue whose level changed). Queues not in `samples` keep their last status.
    pub fn sample(&mut self, now_ns: u64, samples: impl IntoIterator<Item = QueueSample>) -> usize {
        if let Some(told) = self.log_limit.flush(now_ns) {
            log_alert(told);
        }
        let mut raised = 0;
        for sample in samples {
            let level = self.thresholds.level(&sample);
            let previous = self
                .queues
                .insert(
                    sample.queue,
                    QueueStatus {
                        sample,
                        level,
                        at_ns: now_ns,
                    },
                )
                .map_or(AlertLevel::Normal, |status| status.level);
            if level != previous {
                if self.history.len() == self.history_max {
                    self.history.pop_front();
                }
                let alert = Alert {
                    at_ns: now_ns,
                    queue: sample.queue,
                    level,
                    previous,
                    depth: sample.depth,
                    cap: sample.cap,
                };
                self.history.push_back(alert);
                if let Some(told) = self.log_limit.record(now_ns, 1, alert) {
                    log_alert(told);
                }
                raised += 1;
            }
        }
        raised
    }

    /// Every queue's last status.
    pub fn queues(&self) -> impl Iterator<Item = &QueueStatus> {
        self.queues.values()
    }

    /// The role queues of `role`, on every shard.
    pub fn queues_of_role(&self, role: Role) -> impl Iterator<Item = &QueueStatus> {
        self.queues
            .values()
            .filter(move |status| status.sample.queue.role() == Some(role))
    }

    /// The queues at the overload level now.
    pub fn overloaded(&self) -> impl Iterator<Item = &QueueStatus> {
        self.queues
            .values()
            .filter(|status| status.level == AlertLevel::Overload)
    }

    /// The highest level of any queue now (the health check's alert level).
    pub fn level(&self) -> AlertLevel {
        self.queues
            .values()
            .map(|status| status.level)
            .max()
            .unwrap_or(AlertLevel::Normal)
    }

    /// The recent alerts, oldest first; at most the history size given to [`Monitor::new`].
    pub fn history(&self) -> &VecDeque<Alert> {
        &self.history
    }

    /// Logs the alerts the rate limit held back, now (the control plane is stopping).
    pub(crate) fn finish_log(&mut self) {
        if let Some(told) = self.log_limit.take() {
            log_alert(told);
        }
    }
}

/// One event for `told`: its alert (for a summary, the latest), with `count` the alerts it
/// stands for (more than 1 when some were held back).
fn log_alert(told: Told<Alert>) {
    let Told {
        count,
        example: alert,
    } = told;
    macro_rules! alert_event {
        ($level:ident, $message:literal) => {
            tracing::$level!(
                target: "spillway::monitor",
                queue = %alert.queue,
                level = alert.level.name(),
                previous = alert.previous.name(),
                depth = alert.depth,
                cap = alert.cap,
                at_ns = alert.at_ns,
                count,
                $message
            )
        };
    }
    if alert.level > alert.previous {
        alert_event!(warn, "queue alert raised");
    } else if alert.level == AlertLevel::Normal {
        alert_event!(info, "queue alert cleared");
    } else {
        alert_event!(info, "queue alert lowered");
    }
}

/// The samples of every shard-level queue in `stats`: each shard's handler queue and role
/// queues against their caps (`handler_cap`, `role_caps` in [`Role::ALL`] order).
pub fn shard_samples(
    stats: &Stats,
    handler_cap: u64,
    role_caps: &[u64; Role::COUNT],
) -> Vec<QueueSample> {
    let mut samples = Vec::with_capacity(stats.shards.len() * (1 + Role::COUNT));
    for shard in &stats.shards {
        samples.push(QueueSample {
            queue: QueueId::Handler { shard: shard.shard },
            depth: shard.pending_messages,
            cap: handler_cap,
        });
        for role in Role::ALL {
            samples.push(QueueSample {
                queue: QueueId::Role {
                    shard: shard.shard,
                    role,
                },
                depth: shard.roles[role.index()].in_flight(),
                cap: role_caps[role.index()],
            });
        }
    }
    samples
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handler(depth: u64) -> QueueSample {
        QueueSample {
            queue: QueueId::Handler { shard: 0 },
            depth,
            cap: 1000,
        }
    }

    #[test]
    fn levels_rise_in_order_and_each_change_is_one_alert() {
        let mut monitor = Monitor::new(AlertThresholds::default(), 100);
        let mut raised = Vec::new();
        for (now_ns, depth) in [
            (1, 500),
            (2, 799),
            (3, 800),
            (4, 899),
            (5, 900),
            (6, 999),
            (7, 1000),
            (8, 10),
        ] {
            raised.push(monitor.sample(now_ns, [handler(depth)]));
        }
        assert_eq!(raised, [0, 0, 1, 0, 1, 0, 1, 1]);
        let levels: Vec<_> = monitor.history().iter().map(|alert| alert.level).collect();
        assert_eq!(
            levels,
            [
                AlertLevel::Warning,
                AlertLevel::Critical,
                AlertLevel::Overload,
                AlertLevel::Normal
            ]
        );
        assert_eq!(monitor.history()[2].at_ns, 7);
        assert_eq!(monitor.history()[3].previous, AlertLevel::Overload);
    }

    #[test]
    fn history_keeps_the_last_alerts_only() {
        let mut monitor = Monitor::new(AlertThresholds::default(), 100);
        for round in 0..150u64 {
            // Alternate full and empty: every round is an alert.
            monitor.sample(round, [handler(if round % 2 == 0 { 1000 } else { 0 })]);
        }
        assert_eq!(monitor.history().len(), 100);
        assert_eq!(monitor.history().front().unwrap().at_ns, 50);
        assert_eq!(monitor.history().back().unwrap().at_ns, 149);
    }

    #[test]
    fn queries_by_role_and_overload() {
        let mut monitor = Monitor::new(AlertThresholds::default(), 10);
        monitor.sample(
            1,
            [
                QueueSample {
                    queue: QueueId::Role {
                        shard: 0,
                        role: Role::Sse,
                    },
                    depth: 5000,
                    cap: 5000,
                },
                QueueSample {
                    queue: QueueId::Role {
                        shard: 1,
                        role: Role::Sse,
                    },
                    depth: 10,
                    cap: 5000,
                },
                QueueSample {
                    queue: QueueId::Tenant {
                        tenant: TenantId(3),
                    },
                    depth: 1,
                    cap: 0,
                },
                handler(0),
            ],
        );
        assert_eq!(monitor.queues().count(), 4);
        assert_eq!(monitor.queues_of_role(Role::Sse).count(), 2);
        assert_eq!(monitor.queues_of_role(Role::Session).count(), 0);
        let overloaded: Vec<_> = monitor
            .overloaded()
            .map(|status| status.sample.queue)
            .collect();
        assert_eq!(
            overloaded,
            [QueueId::Role {
                shard: 0,
                role: Role::Sse
            }]
        );
        assert_eq!(monitor.level(), AlertLevel::Overload);
    }
}
