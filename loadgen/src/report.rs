//! What a run prints: a progress line every second (stderr), then a human table or exactly
//! one JSON object (stdout).

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};
use spillway::net::protocol::ErrorCode;
use spillway::outcome::{DropReason, FailureReason, RefusalReason, ShedReason};

use crate::generator::RunResult;
use crate::progress::format_ns;
use crate::target::TargetStats;
use crate::tcp_stats::TcpStats;

/// What reports say where a target has no control plane, instead of printing zeros.
pub const NO_CONTROL_PLANE: &str =
    "not applicable: the target has no control plane (no health checks, no breaker)";

fn us(ns: u64) -> f64 {
    (ns as f64 / 1e3 * 10.0).round() / 10.0
}

fn percentiles_us(histogram: &Histogram<u64>, quantiles: &[(&str, f64)]) -> Value {
    let mut object = Map::new();
    object.insert("count".into(), json!(histogram.len()));
    for &(name, quantile) in quantiles {
        let value = if histogram.is_empty() {
            0
        } else {
            histogram.value_at_quantile(quantile)
        };
        object.insert(name.into(), json!(us(value)));
    }
    object.insert("max".into(), json!(us(histogram.max())));
    Value::Object(object)
}

const LATENCY_QUANTILES: [(&str, f64); 4] =
    [("p50", 0.50), ("p90", 0.90), ("p99", 0.99), ("p999", 0.999)];
const CONTROL_QUANTILES: [(&str, f64); 3] = [("p50", 0.50), ("p99", 0.99), ("p999", 0.999)];

/// Counts keyed by reason name, as one JSON object.
fn by_reason(names: impl IntoIterator<Item = &'static str>, counts: &[u64]) -> Value {
    Value::Object(
        names
            .into_iter()
            .zip(counts)
            .map(|(name, &count)| (name.to_string(), json!(count)))
            .collect(),
    )
}

/// Peak resident set size of this process, bytes: `VmHWM` from `/proc/self/status`, or
/// `None` where that cannot be read (not Linux).
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Cores this process may run on.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |cores| cores.get())
}

/// Context a run's report needs besides its result.
#[derive(Clone, Debug)]
pub struct RunInfo {
    /// Scenario name.
    pub scenario: String,
    /// `inproc`, `tcp://HOST:PORT`, or another target's name.
    pub target: String,
    /// The engine profile's name.
    pub profile: String,
    /// Capacity measured by a calibration run, msg/s, when the rate was derived from it.
    pub capacity: Option<f64>,
    /// Times capacity offered, when it was.
    pub overload: Option<f64>,
}

/// The run as one JSON object: every field SPEC 8 and the issue ask for. For a target
/// without a control plane the control fields are `null` and `control_note` says why.
pub fn json<S: TargetStats>(info: &RunInfo, result: &RunResult<S>) -> Value {
    let measured = &result.measured;
    let peak_rss = peak_rss_bytes();
    let control_plane = result.engine.control_plane();
    let health = control_plane.and_then(|control_plane| control_plane.health_latency);
    let tcp = result.engine.tcp();
    // Over TCP the server's threads and handler cost are its own, not visible here.
    let (shards, service_ns) = match tcp {
        Some(_) => (Value::Null, Value::Null),
        None => (json!(result.shards), json!(result.service_ns)),
    };
    let mut object = json!({
        "scenario": info.scenario,
        "target": info.target,
        "profile": info.profile,
        "mode": if result.closed_loop { "closed_loop" } else { "open_loop" },
        "window": if result.closed_loop { json!(result.window) } else { json!(null) },
        "connections": result.connections,
        "shards": shards,
        "cores": cores(),
        "pinned": result.pinned,
        "service_ns": service_ns,
        "duration_s": result.duration_s,
        "warmup_s": result.unrecorded_s,
        "offered_rate": result.offered_rate,
        "capacity_rate": info.capacity,
        "overload_factor": info.overload,
        "achieved_rate": result.achieved_rate().round(),
        "delivered_rate": result.delivered_rate().round(),
        "generator_lag_us": us(if result.lag_ns.is_empty() { 0 } else { result.lag_ns.value_at_quantile(0.99) }),
        "generator_lag_detail_us": percentiles_us(&result.lag_ns, &LATENCY_QUANTILES),
        "generator_fell_behind": result.generator_fell_behind(),
        "generator_fell_behind_rule": "open loop only: generator lag p99 > 1 ms, or unsent > 0",
        "unsent": result.unsent,
        "ring_full_retries": result.ring_full_retries,
        "submitted": result.submitted,
        "admitted": measured.admitted,
        "refused": measured.refused_total(),
        "refused_by_reason": by_reason(RefusalReason::ALL.map(RefusalReason::name), &measured.refused),
        "shed": measured.shed_total(),
        "shed_by_reason": by_reason(ShedReason::ALL.map(ShedReason::name), &measured.shed),
        "delivered": measured.delivered,
        "failed": measured.failed_total(),
        "failed_by_reason": by_reason(FailureReason::ALL.map(FailureReason::name), &measured.failed),
        "cancelled": measured.cancelled,
        "dropped": measured.dropped_total(),
        "dropped_by_reason": by_reason(DropReason::ALL.map(DropReason::name), &measured.dropped),
        "latency_us": percentiles_us(&result.latency_ns, &LATENCY_QUANTILES),
        "latency_of": "delivered messages of the measured phase, from intended send time (open loop) or send time (closed loop) to the generator reading the completion",
        "control_latency_us": result.control.as_ref().map(|probe| percentiles_us(&probe.latency_ns, &CONTROL_QUANTILES)),
        "control_probe_errors": result.control.as_ref().map(|probe| probe.errors),
        "control_probe_nice": result.control.as_ref().and_then(|probe| probe.nice),
        "control_latency_engine_us": health.map(|latency| json!({
            "count": latency.count,
            "p50": us(latency.p50_ns),
            "p99": us(latency.p99_ns),
            "p999": us(latency.p999_ns),
            "max": us(latency.max_ns),
        })),
        "control_slo_violations": control_plane.map(|control_plane| control_plane.slo_violations),
        "breaker_final": control_plane.map(|control_plane| control_plane.breaker_final),
        "peak_rss_bytes": peak_rss.unwrap_or(0),
        "whole_run": {
            "submitted": result.submitted_all,
            "delivered": result.all.delivered,
            "refused": result.all.refused_total(),
            "shed": result.all.shed_total(),
            "admitted": result.all.admitted,
        },
        "reconciled": result.reconcile_errors.is_empty(),
        "reconcile_errors": result.reconcile_errors,
        "lost": result.lost,
    });
    if control_plane.is_none() || result.control.is_none() {
        object["control_note"] = json!(NO_CONTROL_PLANE);
    }
    if let Some(tcp) = tcp {
        object["tcp"] = tcp_json(tcp);
        object["remote_note"] = json!(REMOTE_NOTE);
    }
    if peak_rss.is_none() {
        object["peak_rss_note"] = json!("/proc/self/status unreadable: peak RSS unknown");
    }
    if !result.per_priority.is_empty() {
        let per: Map<String, Value> = result
            .per_priority
            .iter()
            .map(|entry| {
                (
                    entry.priority.to_string(),
                    json!({
                        "submitted": entry.outcomes.submitted,
                        "delivered": entry.outcomes.delivered,
                        "goodput_rate": (entry.outcomes.delivered as f64 / result.duration_s).round(),
                        "refused": entry.outcomes.refused_total(),
                        "shed": entry.outcomes.shed_total(),
                        "latency_us": percentiles_us(&entry.latency_ns, &LATENCY_QUANTILES),
                    }),
                )
            })
            .collect();
        object["per_priority"] = Value::Object(per);
    }
    object
}

/// What reports say of the server-side settings of a TCP run.
pub const REMOTE_NOTE: &str = "shards, pinning and handler cost are the server's own settings, not visible over the protocol: null here";

/// Counts keyed by error code name, as one JSON object.
fn by_error_code(counts: &[u64; ErrorCode::ALL.len()]) -> Value {
    by_reason(ErrorCode::ALL.map(ErrorCode::name), counts)
}

/// The TCP client's figures as one JSON object.
pub fn tcp_json(tcp: &TcpStats) -> Value {
    json!({
        "address": tcp.address.to_string(),
        "connections": tcp.connections,
        "connect_s": tcp.connect_ns as f64 / 1e9,
        "send_buffer_replies": tcp.send_buffer_replies,
        "max_frame_bytes": tcp.max_frame_bytes,
        "submitted": tcp.submitted,
        "replies": tcp.replies.submitted,
        "without_reply": tcp.without_reply(),
        "replies_dropped": tcp.replies_dropped,
        "replies_dropped_frames": tcp.replies_dropped_frames,
        "unanswered_on_close": tcp.unanswered_on_close,
        "unsent_after_close": tcp.unsent_after_close,
        "in_flight_at_end": tcp.in_flight_at_end,
        "too_large": tcp.too_large,
        "unexpected_replies": tcp.unexpected_replies,
        "flow_signals": {
            "throttle": tcp.throttles,
            "pause": tcp.pauses,
            "resume": tcp.resumes,
        },
        "pongs": tcp.pongs,
        "closed": {
            "by_error": tcp.errors_total(),
            "errors_by_code": by_error_code(&tcp.errors_by_code),
            "protocol_violations_by_server": tcp.violations_total(),
            "violations_by_code": by_error_code(&tcp.violations_by_code),
            "without_error": tcp.closed_without_error,
            "io_errors": tcp.io_errors,
            "at_end": tcp.closed_at_end,
            "close_timeouts": tcp.close_timeouts,
        },
        "handed_back": {
            "credit_full": tcp.credit_full,
            "write_buffer_full": tcp.write_buffer_full,
        },
        "syscalls": {
            "write": tcp.write_calls,
            "write_blocked": tcp.writes_blocked,
            "read": tcp.read_calls,
            "epoll_wait": tcp.poll_calls,
            "events": tcp.events,
        },
        "bytes_written": tcp.bytes_written,
        "bytes_read": tcp.bytes_read,
    })
}

/// Non-zero counts by error code, `name count, ...`, or `none`.
fn error_codes_line(counts: &[u64; ErrorCode::ALL.len()]) -> String {
    let named: Vec<String> = ErrorCode::ALL
        .iter()
        .zip(counts)
        .filter(|(_, &count)| count > 0)
        .map(|(code, count)| format!("{} {count}", code.name()))
        .collect();
    if named.is_empty() {
        "none".to_string()
    } else {
        named.join(", ")
    }
}

/// The TCP client's figures as table lines.
fn tcp_lines(out: &mut String, tcp: &TcpStats) {
    let _ = writeln!(
        out,
        "tcp: {} connections to {} in {:.2} s; server: send buffer {} replies, frames up to {} bytes",
        tcp.connections,
        tcp.address,
        tcp.connect_ns as f64 / 1e9,
        tcp.send_buffer_replies,
        tcp.max_frame_bytes
    );
    let _ = writeln!(
        out,
        "tcp: flow signals: throttle {} pause {} resume {}; replies dropped {} (in {} frames)",
        tcp.throttles, tcp.pauses, tcp.resumes, tcp.replies_dropped, tcp.replies_dropped_frames
    );
    let _ = writeln!(
        out,
        "tcp: without a reply {}: dropped {}, in flight on a closed connection {}, sent to a closed connection {}, too large {}, in flight at the end {}",
        tcp.without_reply(),
        tcp.replies_dropped,
        tcp.unanswered_on_close,
        tcp.unsent_after_close,
        tcp.too_large,
        tcp.in_flight_at_end
    );
    let _ = writeln!(
        out,
        "tcp: closed by the server's Error {} ({}); protocol violations by the server {} ({}); without an Error {}; I/O errors {}; at the end {} (close timeouts {})",
        tcp.errors_total(),
        error_codes_line(&tcp.errors_by_code),
        tcp.violations_total(),
        error_codes_line(&tcp.violations_by_code),
        tcp.closed_without_error,
        tcp.io_errors,
        tcp.closed_at_end,
        tcp.close_timeouts
    );
    let syscalls = tcp.write_calls + tcp.read_calls + tcp.poll_calls;
    let _ = writeln!(
        out,
        "tcp: handed back: credit full {} write buffer full {}; system calls, whole run: write {} ({} blocked) read {} epoll_wait {} ({} events), {:.2} per message",
        tcp.credit_full,
        tcp.write_buffer_full,
        tcp.write_calls,
        tcp.writes_blocked,
        tcp.read_calls,
        tcp.poll_calls,
        tcp.events,
        syscalls as f64 / tcp.submitted.max(1) as f64,
    );
}

/// The run as a human table.
pub fn table<S: TargetStats>(info: &RunInfo, result: &RunResult<S>) -> String {
    let mut out = String::new();
    let measured = &result.measured;
    let line = "-".repeat(72);
    let _ = writeln!(out, "{line}");
    let _ = writeln!(
        out,
        "scenario {}  target {}  profile {}  {}",
        info.scenario,
        info.target,
        info.profile,
        match (result.closed_loop, result.window) {
            (false, _) => "open loop".to_string(),
            (true, 1) => "closed loop".to_string(),
            (true, window) => format!("closed loop, window {window} per connection"),
        }
    );
    if result.engine.tcp().is_some() {
        let _ = writeln!(
            out,
            "connections {}  cores {} (this process)  shards, pinning, handler cost: the server's",
            result.connections,
            cores(),
        );
    } else {
        let _ = writeln!(
            out,
            "connections {}  shards {}  cores {}  pinned {}  handler cost {} ns",
            result.connections,
            result.shards,
            cores(),
            result.pinned,
            result.service_ns
        );
    }
    let _ = writeln!(
        out,
        "measured {:.1} s after {:.1} s unrecorded (warm-up/lead-in)",
        result.duration_s, result.unrecorded_s
    );
    if let Some(capacity) = info.capacity {
        let _ = writeln!(
            out,
            "capacity (closed-loop calibration) {:.0} msg/s; offering {}x",
            capacity,
            info.overload.unwrap_or(1.0)
        );
    }
    let _ = writeln!(out, "{line}");
    let _ = writeln!(
        out,
        "{:<22}{:>14}",
        "offered rate",
        if result.closed_loop {
            "closed loop".to_string()
        } else {
            format!("{}/s", result.offered_rate)
        }
    );
    let _ = writeln!(
        out,
        "{:<22}{:>12.0}/s",
        "achieved (submitted)",
        result.achieved_rate()
    );
    let _ = writeln!(
        out,
        "{:<22}{:>12.0}/s",
        "delivered",
        result.delivered_rate()
    );
    let rows = [
        ("submitted", result.submitted),
        ("admitted", measured.admitted),
        ("delivered", measured.delivered),
        ("refused", measured.refused_total()),
        ("shed", measured.shed_total()),
        ("failed", measured.failed_total()),
        ("cancelled", measured.cancelled),
        ("dropped", measured.dropped_total()),
    ];
    for (name, value) in rows {
        let _ = writeln!(out, "{name:<22}{value:>14}");
    }
    for reason in RefusalReason::ALL {
        let count = measured.refused[reason.index()];
        if count > 0 {
            let _ = writeln!(out, "  refused {:<20}{count:>8}", reason.name());
        }
    }
    for reason in ShedReason::ALL {
        let count = measured.shed[reason.index()];
        if count > 0 {
            let _ = writeln!(out, "  shed {:<23}{count:>8}", reason.name());
        }
    }
    let _ = writeln!(out, "{line}");
    let _ = writeln!(
        out,
        "{:<22}{:>10} {:>10} {:>10} {:>10} {:>10}",
        "", "p50", "p90", "p99", "p99.9", "max"
    );
    let row = |out: &mut String, name: &str, histogram: &Histogram<u64>| {
        if histogram.is_empty() {
            let _ = writeln!(out, "{name:<22}{:>10}", "(none)");
            return;
        }
        let _ = writeln!(
            out,
            "{name:<22}{:>10} {:>10} {:>10} {:>10} {:>10}",
            format_ns(histogram.value_at_quantile(0.50)),
            format_ns(histogram.value_at_quantile(0.90)),
            format_ns(histogram.value_at_quantile(0.99)),
            format_ns(histogram.value_at_quantile(0.999)),
            format_ns(histogram.max()),
        );
    };
    row(&mut out, "latency (delivered)", &result.latency_ns);
    if !result.closed_loop {
        row(&mut out, "generator lag", &result.lag_ns);
    }
    match &result.control {
        Some(probe) => row(&mut out, "health check", &probe.latency_ns),
        None => {
            let _ = writeln!(out, "{:<22}{NO_CONTROL_PLANE}", "health check");
        }
    }
    for entry in &result.per_priority {
        row(
            &mut out,
            &format!("latency {}", entry.priority),
            &entry.latency_ns,
        );
    }
    let _ = writeln!(out, "{line}");
    for entry in &result.per_priority {
        let _ = writeln!(
            out,
            "{}: submitted {} delivered {} ({:.0}/s goodput) refused {} shed {}",
            entry.priority,
            entry.outcomes.submitted,
            entry.outcomes.delivered,
            entry.outcomes.delivered as f64 / result.duration_s,
            entry.outcomes.refused_total(),
            entry.outcomes.shed_total(),
        );
    }
    match (&result.control, result.engine.control_plane()) {
        (Some(probe), Some(control_plane)) => {
            let _ = writeln!(
                out,
                "health checks {} (errors {}, probe thread at {}), SLO violations {}; breaker at end {}",
                probe.latency_ns.len(),
                probe.errors,
                match probe.nice {
                    Some(nice) => format!("nice {nice}, as the control thread"),
                    None => "normal priority".to_owned(),
                },
                control_plane.slo_violations,
                control_plane.breaker_final
            );
        }
        _ => {
            let _ = writeln!(out, "control plane: {NO_CONTROL_PLANE}");
        }
    }
    if let Some(tcp) = result.engine.tcp() {
        tcp_lines(&mut out, tcp);
    }
    let _ = writeln!(
        out,
        "ring-full retries {}; unsent at end {}; peak RSS {}",
        result.ring_full_retries,
        result.unsent,
        match peak_rss_bytes() {
            Some(bytes) => format!("{:.1} MiB", bytes as f64 / 1048576.0),
            None => "unknown (/proc/self/status unreadable)".to_string(),
        }
    );
    if result.generator_fell_behind() {
        let _ = writeln!(
            out,
            "WARNING: the generator fell behind its schedule (rule: lag p99 over 1 ms, or any message unsent at the end; here lag p99 {}, unsent {}): the load was not offered as scheduled",
            format_ns(result.lag_ns.value_at_quantile(0.99)),
            result.unsent
        );
    }
    if result.reconcile_errors.is_empty() {
        let _ = writeln!(
            out,
            "counts reconcile: every submitted message has one completion, and the target's own counters agree"
        );
    } else {
        let _ = writeln!(out, "ERROR: counts do not reconcile:");
        for error in &result.reconcile_errors {
            let _ = writeln!(out, "  {error}");
        }
    }
    out
}
