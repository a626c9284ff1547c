//! `GET /metrics`: one snapshot of every counter, encoded by `prometheus-client` in the
//! text format (OpenMetrics 1.0).
//!
//! Names follow Prometheus conventions: `spillway_` prefix, `_total` on counters (the
//! encoder appends it), base units (seconds, bytes). Message counts carry the priority as
//! decided and, for refusals, sheds, failures and drops, the reason, so that summing a
//! `messages_*` family over its labels gives SPEC 3's total of it, and
//! `submitted = admitted + refused + shed` holds per priority. `role_messages` and
//! `tenant_messages` put the stages (`submitted`, `admitted`) and the ends (`delivered`,
//! `refused`, ...) in one `outcome` label: sum them over the ends only. Per-tenant series
//! exist only for the `[admin] top_tenants` busiest configured tenants, named once and for
//! good; the rest are summed under `tenant="other"`, so the number of series is bounded
//! however many tenants there are.

use std::fmt::Write as _;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::{AdminShared, AdminStats};
use crate::admission::breaker::BreakerState;
use crate::admission::global::{GlobalQuotas, LeaseFigures, QuotaMode};
use crate::message::{Priority, Role, TenantId};
use crate::metrics::{ShardStats, Stats, Tally, LATENCY_BUCKET_BOUNDS_NS};
use crate::net::egress::{EgressDropReason, FlowSignal};
use crate::net::protocol::ErrorCode;
use crate::net::server::NetStats;
use crate::outcome::{DropReason, FailureReason, RefusalReason, ShedReason};
use crate::workers::WorkerStats;

const NS_PER_SECOND: f64 = 1e9;

/// The text `/metrics` answers.
pub(super) fn encode(shared: &AdminShared) -> String {
    let top_tenants = shared
        .config
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .admin
        .top_tenants;
    let stats = shared.control.stats();
    let named_tenants = {
        let mut named = shared
            .named_tenants
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        name_busiest_tenants(&mut named, &stats.tenants, top_tenants);
        named.clone()
    };
    let snapshot = Snapshot {
        stats,
        net: shared.net.as_ref().map(|server| server.stats()),
        workers: shared.workers.as_ref().map(|listener| listener.stats()),
        admin: shared.stats(),
        named_tenants,
        global: global_snapshot(shared.control.global_quotas()),
    };
    let mut registry = Registry::with_prefix("spillway");
    registry.register_collector(Box::new(snapshot));
    let mut text = String::new();
    // Encoding into a String cannot fail; an error would be a bug in a collector.
    if let Err(error) = prometheus_client::encoding::text::encode(&mut text, &registry) {
        let _ = writeln!(text, "# encoding failed: {error}");
    }
    text
}

/// Adds to `named` the busiest tenants (by submitted messages) not named yet, until it
/// holds `top`. A tenant once named stays named: were the set picked afresh each scrape, a
/// tenant moving out of it would move its counts into `tenant="other"` and out of its own
/// series, and Prometheus would read both as counter resets.
fn name_busiest_tenants(named: &mut Vec<TenantId>, tenants: &[(TenantId, Tally)], top: usize) {
    if named.len() >= top {
        return;
    }
    let mut candidates: Vec<&(TenantId, Tally)> = tenants
        .iter()
        .filter(|(tenant, tally)| tally.submitted > 0 && !named.contains(tenant))
        .collect();
    candidates.sort_by_key(|(tenant, tally)| (std::cmp::Reverse(tally.submitted), *tenant));
    let room = top - named.len();
    named.extend(candidates.into_iter().take(room).map(|(tenant, _)| *tenant));
}

/// Everything one scrape reports, read once.
#[derive(Debug)]
struct Snapshot {
    stats: Stats,
    net: Option<NetStats>,
    workers: Option<WorkerStats>,
    admin: AdminStats,
    /// The tenants with series of their own (`name_busiest_tenants`).
    named_tenants: Vec<TenantId>,
    /// Fleet-wide tenant quotas, when any tenant has one.
    global: Option<GlobalSnapshot>,
}

/// What `/metrics` reports of the fleet-wide quotas: every `[global]` tenant (they are
/// configured, so their number is bounded by the file) and the lease thread's counts.
#[derive(Debug)]
struct GlobalSnapshot {
    tenants: Vec<GlobalTenantRow>,
    leases: LeaseFigures,
}

/// Tenant, mode, share (messages and bytes per second, pending messages), offered
/// (messages, bytes).
type GlobalTenantRow = (TenantId, QuotaMode, (u64, u64, u64), (u64, u64));

/// A tenant's (messages, bytes) pair as two series labelled `tenant` and `resource`.
fn by_resource(tenant: TenantId, (messages, bytes): (u64, u64)) -> [(Labels, u64); 2] {
    [("messages", messages), ("bytes", bytes)].map(|(resource, value)| {
        (
            vec![
                ("tenant", tenant.0.to_string()),
                ("resource", resource.to_string()),
            ],
            value,
        )
    })
}

fn global_snapshot(quotas: &GlobalQuotas) -> Option<GlobalSnapshot> {
    quotas.enabled().then(|| GlobalSnapshot {
        tenants: quotas
            .iter()
            .map(|quota| {
                let (messages, bytes) = quota.share_per_sec();
                (
                    quota.tenant(),
                    quota.mode(),
                    (messages, bytes, quota.pending_share()),
                    quota.offered(),
                )
            })
            .collect(),
        leases: quotas.stats.figures(),
    })
}

type Result = std::result::Result<(), std::fmt::Error>;

/// Writes one counter family: `name`, `help`, and a value per label set.
fn counters<'a, L: prometheus_client::encoding::EncodeLabelSet + 'a>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (L, u64)>,
) -> Result {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in series {
        ConstCounter::new(value).encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

/// Writes one gauge family.
fn gauges<'a, L: prometheus_client::encoding::EncodeLabelSet + 'a>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (L, i64)>,
) -> Result {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in series {
        ConstGauge::new(value).encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

/// One unlabelled counter.
fn counter(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> Result {
    let metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    ConstCounter::new(value).encode(metric)
}

/// One unlabelled gauge.
fn gauge(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: i64) -> Result {
    let metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    ConstGauge::new(value).encode(metric)
}

type Labels = Vec<(&'static str, String)>;

/// One series per shard, labelled `shard`, with `field`'s value.
fn shard_series<T>(shards: &[ShardStats], field: fn(&ShardStats) -> T) -> Vec<(Labels, T)> {
    shards
        .iter()
        .map(|shard| (vec![("shard", shard.shard.to_string())], field(shard)))
        .collect()
}

fn priority_label(priority: Priority) -> String {
    format!("P{}", priority.index())
}

impl Snapshot {
    fn encode_messages(&self, encoder: &mut DescriptorEncoder) -> Result {
        let by_priority = || {
            Priority::ALL
                .into_iter()
                .map(|priority| (priority, &self.stats.priorities[priority.index()]))
        };
        let simple = |field: fn(&Tally) -> u64| {
            by_priority()
                .map(move |(priority, tally)| {
                    (vec![("priority", priority_label(priority))], field(tally))
                })
                .collect::<Vec<(Labels, u64)>>()
        };
        counters(
            encoder,
            "messages_submitted",
            "Messages that reached admission, by priority as decided.",
            simple(|tally| tally.submitted),
        )?;
        counters(
            encoder,
            "messages_admitted",
            "Messages admitted to a queue.",
            simple(|tally| tally.admitted),
        )?;
        counters(
            encoder,
            "messages_delivered",
            "Admitted messages the handler (or a worker) finished successfully.",
            simple(|tally| tally.delivered),
        )?;
        counters(
            encoder,
            "messages_cancelled",
            "Admitted messages cancelled (control plane, drain or shutdown).",
            simple(|tally| tally.cancelled),
        )?;
        let with_reason = |reasons: &mut dyn Iterator<Item = (&'static str, usize)>,
                           field: fn(&Tally) -> &[u64]| {
            let reasons: Vec<_> = reasons.collect();
            by_priority()
                .flat_map(|(priority, tally)| {
                    reasons.iter().map(move |&(name, index)| {
                        (
                            vec![
                                ("priority", priority_label(priority)),
                                ("reason", name.to_string()),
                            ],
                            field(tally)[index],
                        )
                    })
                })
                .collect::<Vec<(Labels, u64)>>()
        };
        counters(
            encoder,
            "messages_refused",
            "Messages refused at admission, by reason (rate_limited is the token bucket).",
            with_reason(
                &mut RefusalReason::ALL.iter().map(|r| (r.name(), r.index())),
                |tally| &tally.refused,
            ),
        )?;
        counters(
            encoder,
            "messages_shed",
            "Messages shed by priority while the breaker was open.",
            with_reason(
                &mut ShedReason::ALL.iter().map(|r| (r.name(), r.index())),
                |tally| &tally.shed,
            ),
        )?;
        counters(
            encoder,
            "messages_failed",
            "Admitted messages that failed, by reason.",
            with_reason(
                &mut FailureReason::ALL.iter().map(|r| (r.name(), r.index())),
                |tally| &tally.failed,
            ),
        )?;
        counters(
            encoder,
            "messages_dropped",
            "Admitted messages dropped, by reason.",
            with_reason(
                &mut DropReason::ALL.iter().map(|r| (r.name(), r.index())),
                |tally| &tally.dropped,
            ),
        )?;
        counter(
            encoder,
            "ingress_ring_full",
            "Submissions handed back to the producer because its ring to the shard was full.",
            self.stats.ring_full,
        )?;
        Ok(())
    }

    /// Outcome counts per role and per tenant: one family each, the outcome a label.
    fn encode_scopes(&self, encoder: &mut DescriptorEncoder) -> Result {
        let outcomes = |tally: &Tally| {
            [
                ("submitted", tally.submitted),
                ("admitted", tally.admitted),
                ("delivered", tally.delivered),
                ("refused", tally.refused_total()),
                ("shed", tally.shed_total()),
                ("failed", tally.failed_total()),
                ("cancelled", tally.cancelled),
                ("dropped", tally.dropped_total()),
            ]
        };
        let roles: Vec<(Labels, u64)> = Role::ALL
            .into_iter()
            .flat_map(|role| {
                outcomes(&self.stats.roles[role.index()]).into_iter().map(
                    move |(outcome, value)| {
                        (
                            vec![
                                ("role", role.name().to_string()),
                                ("outcome", outcome.to_string()),
                            ],
                            value,
                        )
                    },
                )
            })
            .collect();
        counters(
            encoder,
            "role_messages",
            "Messages per role, by outcome (submitted, admitted, then how they ended).",
            roles,
        )?;
        // The named tenants (`name_busiest_tenants`); the rest with the tenants that have
        // no settings, under "other".
        let mut other = self.stats.other_tenants;
        let mut named = Vec::with_capacity(self.named_tenants.len());
        for (tenant, tally) in &self.stats.tenants {
            if self.named_tenants.contains(tenant) {
                named.push((tenant.0.to_string(), *tally));
            } else {
                other.add(tally);
            }
        }
        let named = named.into_iter();
        let series: Vec<(Labels, u64)> = named
            .chain(std::iter::once(("other".to_string(), other)))
            .flat_map(|(tenant, tally)| {
                outcomes(&tally).into_iter().map(move |(outcome, value)| {
                    (
                        vec![("tenant", tenant.clone()), ("outcome", outcome.to_string())],
                        value,
                    )
                })
            })
            .collect();
        counters(
            encoder,
            "tenant_messages",
            "Messages per tenant, by stage and outcome: the [admin] top_tenants busiest configured tenants (once named, always named), the rest as tenant=\"other\".",
            series,
        )
    }

    fn encode_latency(&self, encoder: &mut DescriptorEncoder) -> Result {
        let mut metric = encoder.encode_descriptor(
            "message_latency_seconds",
            "Admission to completion of delivered messages, by priority (the handler's or worker's answer; not the reply's trip to a client).",
            None,
            MetricType::Histogram,
        )?;
        for priority in Priority::ALL {
            let histogram = &self.stats.latency[priority.index()];
            let counts = histogram.bucket_counts();
            let buckets: Vec<(f64, u64)> = LATENCY_BUCKET_BOUNDS_NS
                .iter()
                .map(|&bound| bound as f64 / NS_PER_SECOND)
                .chain(std::iter::once(f64::MAX))
                .zip(counts.iter().copied())
                .collect();
            let labels = vec![("priority", priority_label(priority))];
            metric
                .encode_family(&labels)?
                .encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                    histogram.sum_ns() as f64 / NS_PER_SECOND,
                    histogram.count(),
                    &buckets,
                    None,
                )?;
        }
        Ok(())
    }

    fn encode_shards(&self, encoder: &mut DescriptorEncoder) -> Result {
        let per_shard = |field: fn(&ShardStats) -> i64| shard_series(&self.stats.shards, field);
        gauges(
            encoder,
            "shard_pending_messages",
            "Messages queued on each shard (its handler queue depth).",
            per_shard(|shard| shard.pending_messages as i64),
        )?;
        gauges(
            encoder,
            "shard_ring_messages",
            "Submissions waiting in each shard's rings from the producers (not yet admitted).",
            per_shard(|shard| shard.ring_messages as i64),
        )?;
        gauges(
            encoder,
            "shard_connections",
            "Connections each shard holds state for.",
            per_shard(|shard| shard.connections as i64),
        )?;
        gauges(
            encoder,
            "shard_backpressure",
            "1 while the shard signals backpressure.",
            per_shard(|shard| i64::from(shard.backpressure)),
        )?;
        let shard_counters =
            |field: fn(&ShardStats) -> u64| shard_series(&self.stats.shards, field);
        counters(
            encoder,
            "shard_priority_downgraded",
            "Messages whose priority a tenant's ceiling lowered.",
            shard_counters(|shard| shard.priority_downgraded),
        )?;
        counters(
            encoder,
            "shard_connections_evicted",
            "Idle connections evicted to make room.",
            shard_counters(|shard| shard.connections_evicted),
        )?;
        Ok(())
    }

    fn encode_breaker(&self, encoder: &mut DescriptorEncoder) -> Result {
        let states = [
            BreakerState::Closed,
            BreakerState::Open,
            BreakerState::HalfOpen,
            BreakerState::ForcedOpen,
            BreakerState::ForcedClosed,
        ];
        gauges(
            encoder,
            "breaker_state",
            "1 for the circuit breaker's current state, 0 for the others.",
            states.map(|state| {
                (
                    vec![("state", state.name().to_string())],
                    i64::from(state == self.stats.breaker),
                )
            }),
        )?;
        let transitions = &self.stats.control.breaker_transitions;
        counters(
            encoder,
            "breaker_transitions",
            "Breaker transitions, by cause.",
            [
                ("error_rate", transitions.error_rate),
                ("p95_latency", transitions.p95_latency),
                ("queue_full", transitions.queue_full),
                ("overload", transitions.overload),
                ("recovery_timeout", transitions.recovery_timeout),
                ("good_period", transitions.good_period),
                ("forced_open", transitions.forced_open),
                ("forced_closed", transitions.forced_closed),
                ("reset", transitions.reset),
            ]
            .map(|(cause, value)| (vec![("cause", cause.to_string())], value)),
        )
    }

    fn encode_control(&self, encoder: &mut DescriptorEncoder) -> Result {
        let latencies = &self.stats.control.latency;
        counters(
            encoder,
            "control_commands",
            "Control-plane commands answered, by command.",
            latencies.iter().map(|latency| {
                (
                    vec![("command", latency.command.name().to_string())],
                    latency.count,
                )
            }),
        )?;
        let mut metric = encoder.encode_descriptor(
            "control_command_latency_seconds",
            "Control-plane command latency, request to answer, at quantiles of an HDR histogram since start (quantile=\"1\" is the maximum).",
            None,
            MetricType::Gauge,
        )?;
        for latency in latencies {
            for (quantile, ns) in [
                ("0.5", latency.p50_ns),
                ("0.95", latency.p95_ns),
                ("0.99", latency.p99_ns),
                ("0.999", latency.p999_ns),
                ("1", latency.max_ns),
            ] {
                let labels: Labels = vec![
                    ("command", latency.command.name().to_string()),
                    ("quantile", quantile.to_string()),
                ];
                ConstGauge::new(ns as f64 / NS_PER_SECOND)
                    .encode(metric.encode_family(&labels)?)?;
            }
        }
        counter(
            encoder,
            "control_slo_violations",
            "Health checks slower than control.health_slo_ns.",
            self.stats.control.slo_violations,
        )
    }

    fn encode_net(&self, encoder: &mut DescriptorEncoder, net: &NetStats) -> Result {
        gauge(
            encoder,
            "connections_open",
            "TCP connections open now.",
            net.open as i64,
        )?;
        counter(
            encoder,
            "connections_accepted",
            "TCP connections accepted and served.",
            net.accepted,
        )?;
        counter(
            encoder,
            "connections_refused_limit",
            "TCP connections told too_many_connections and closed.",
            net.refused_connection_limit,
        )?;
        let mut closed: Vec<(Labels, u64)> = vec![
            (vec![("reason", "peer".to_string())], net.closed_peer),
            (
                vec![("reason", "io_error".to_string())],
                net.closed_io_error,
            ),
        ];
        closed.extend(ErrorCode::ALL.iter().map(|&code| {
            (
                vec![("reason", code.name().to_string())],
                net.closed_with(code),
            )
        }));
        counters(
            encoder,
            "connections_closed",
            "TCP connections closed, by reason (an Error code when the server closed it).",
            closed,
        )?;
        counter(encoder, "frames_received", "Frames decoded.", net.frames_in)?;
        counter(
            encoder,
            "replies_sent",
            "Reply frames written.",
            net.replies_sent,
        )?;
        counters(
            encoder,
            "replies_dropped",
            "Replies dropped by a connection's egress policy, by reason.",
            EgressDropReason::ALL.iter().map(|&reason| {
                (
                    vec![("reason", reason.name().to_string())],
                    net.replies_dropped[reason as usize],
                )
            }),
        )?;
        counter(
            encoder,
            "replies_discarded",
            "Completions for a connection already closed.",
            net.replies_discarded,
        )?;
        counters(
            encoder,
            "flow_signals",
            "Egress flow-control frames written to clients, by kind (pause less resume: the connections a pause holds now).",
            FlowSignal::KIND_NAMES
                .iter()
                .zip(net.flow_signals_by_kind)
                .map(|(kind, value)| (vec![("kind", kind.to_string())], value)),
        )?;
        counter(
            encoder,
            "accept_backoffs",
            "Times a shard stopped accepting for lack of descriptors.",
            net.accept_backoffs,
        )
    }

    fn encode_workers(&self, encoder: &mut DescriptorEncoder, workers: &WorkerStats) -> Result {
        gauge(
            encoder,
            "workers_open",
            "Worker connections open.",
            workers.open as i64,
        )?;
        gauge(
            encoder,
            "workers_credit",
            "Credit the open workers announced, all together.",
            workers.credit_total as i64,
        )?;
        gauge(
            encoder,
            "workers_credit_free",
            "Credit not in use now.",
            workers.credit_free as i64,
        )?;
        counter(
            encoder,
            "worker_works_sent",
            "Work frames sent to workers.",
            workers.works_sent,
        )?;
        counter(
            encoder,
            "worker_answers",
            "Answers from workers.",
            workers.answers,
        )?;
        let answer_seconds = encoder.encode_descriptor(
            "worker_answer_seconds",
            "Time from a Work sent to its answer read, summed over answers (divided by spillway_worker_answers_total: the mean).",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(workers.answer_latency_ns_sum as f64 / NS_PER_SECOND)
            .encode(answer_seconds)?;
        counters(
            encoder,
            "workers_cut",
            "Workers cut, by reason.",
            [
                ("lost", workers.cut_lost),
                ("timeout", workers.cut_timeout),
                ("garbage", workers.cut_garbage),
            ]
            .map(|(reason, value)| (vec![("reason", reason.to_string())], value)),
        )?;
        counter(
            encoder,
            "worker_retries",
            "Idempotent messages retried on another worker.",
            workers.retries,
        )
    }

    fn encode_global(&self, encoder: &mut DescriptorEncoder, global: &GlobalSnapshot) -> Result {
        gauges(
            encoder,
            "global_quota_mode",
            "Fleet-wide quota per tenant: 1 for its current mode (leased, exhausted, fallback, open, refusing), 0 for the others.",
            global.tenants.iter().flat_map(|&(tenant, mode, _, _)| {
                QuotaMode::ALL.map(|each| {
                    (
                        vec![("tenant", tenant.0.to_string()), ("mode", each.name().to_string())],
                        i64::from(each == mode),
                    )
                })
            }),
        )?;
        gauges(
            encoder,
            "global_quota_share_per_second",
            "This process's share of the tenant's fleet-wide rate under its current lease (0 without one), by resource (messages, bytes).",
            global.tenants.iter().flat_map(|&(tenant, _, share, _)| {
                by_resource(tenant, (share.0, share.1))
                    .map(|(labels, value)| (labels, i64::try_from(value).unwrap_or(i64::MAX)))
            }),
        )?;
        gauges(
            encoder,
            "global_quota_pending_share",
            "This process's share of the tenant's fleet-wide cap on pending messages under its current lease (0 without one or without a fleet cap).",
            global.tenants.iter().map(|&(tenant, _, share, _)| {
                (
                    vec![("tenant", tenant.0.to_string())],
                    i64::try_from(share.2).unwrap_or(i64::MAX),
                )
            }),
        )?;
        counters(
            encoder,
            "global_quota_offered",
            "Messages and payload bytes that reached the tenant's fleet-wide check here (the demand its leases ask for), by resource.",
            global
                .tenants
                .iter()
                .flat_map(|&(tenant, _, _, offered)| by_resource(tenant, offered)),
        )?;
        let leases = &global.leases;
        counters(
            encoder,
            "global_leases",
            "Lease requests to Redis, by result.",
            [("granted", leases.granted), ("failed", leases.failed)]
                .map(|(result, value)| (vec![("result", result.to_string())], value)),
        )?;
        counter(
            encoder,
            "global_redis_operations",
            "Redis commands sent by the lease thread (lease scripts, script loads, releases).",
            leases.redis_operations,
        )?;
        counters(
            encoder,
            "global_quota_transitions",
            "Tenants moving from a lease to their fallback and back, by direction.",
            [
                ("fallback", leases.fallbacks),
                ("recovery", leases.recoveries),
            ]
            .map(|(direction, value)| (vec![("direction", direction.to_string())], value)),
        )
    }

    fn encode_admin(&self, encoder: &mut DescriptorEncoder) -> Result {
        let admin = &self.admin;
        counters(
            encoder,
            "admin_requests",
            "Admin endpoint requests, by status code.",
            [
                ("2xx", admin.ok),
                ("400", admin.bad_request),
                ("404", admin.not_found),
                ("405", admin.method_not_allowed),
                ("413", admin.too_large),
                ("422", admin.invalid),
                ("431", admin.too_many_headers),
                ("5xx", admin.unavailable),
            ]
            .map(|(code, value)| (vec![("code", code.to_string())], value)),
        )?;
        counters(
            encoder,
            "admin_connections_closed",
            "Admin connections closed by the endpoint, by reason.",
            [
                ("limit", admin.connections_refused),
                ("idle", admin.connections_idle_closed),
            ]
            .map(|(reason, value)| (vec![("reason", reason.to_string())], value)),
        )
    }
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result {
        self.encode_messages(&mut encoder)?;
        self.encode_scopes(&mut encoder)?;
        self.encode_latency(&mut encoder)?;
        self.encode_shards(&mut encoder)?;
        self.encode_breaker(&mut encoder)?;
        self.encode_control(&mut encoder)?;
        if let Some(net) = &self.net {
            self.encode_net(&mut encoder, net)?;
        }
        if let Some(workers) = &self.workers {
            self.encode_workers(&mut encoder, workers)?;
        }
        if let Some(global) = &self.global {
            self.encode_global(&mut encoder, global)?;
        }
        self.encode_admin(&mut encoder)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn submitted(tenant: u32, count: u64) -> (TenantId, Tally) {
        let tally = Tally {
            submitted: count,
            ..Tally::default()
        };
        (TenantId(tenant), tally)
    }

    #[test]
    fn named_tenants_are_the_busiest_and_stay_named() {
        let mut named = Vec::new();
        name_busiest_tenants(
            &mut named,
            &[
                submitted(1, 5),
                submitted(2, 50),
                submitted(3, 0),
                submitted(4, 9),
            ],
            2,
        );
        assert_eq!(named, [TenantId(2), TenantId(4)]);
        // Tenant 1 overtakes both: the set is full, so it stays under "other" and neither
        // named tenant's series moves.
        name_busiest_tenants(
            &mut named,
            &[submitted(1, 500), submitted(2, 50), submitted(4, 9)],
            2,
        );
        assert_eq!(named, [TenantId(2), TenantId(4)]);
        // A tenant with nothing submitted is not named.
        let mut named = Vec::new();
        name_busiest_tenants(&mut named, &[submitted(3, 0)], 2);
        assert!(named.is_empty());
    }
}
