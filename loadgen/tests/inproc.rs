//! Quick in-process runs: the counts reconcile, every submitted message gets a completion,
//! and the JSON report has every required key. No timing assertions.

use std::time::Duration;

use spillway::config::Config;
use spillway::message::TenantId;
use spillway_loadgen::generator::{calibrate_capacity, run_inproc, Phase, RunPlan};
use spillway_loadgen::payload::PayloadPlan;
use spillway_loadgen::report::{RunInfo, RunReport};

const REQUIRED_KEYS: [&str; 27] = [
    "scenario",
    "target",
    "connections",
    "shards",
    "cores",
    "pinned",
    "duration_s",
    "offered_rate",
    "achieved_rate",
    "generator_lag_us",
    "submitted",
    "admitted",
    "refused",
    "shed",
    "delivered",
    "failed",
    "cancelled",
    "dropped",
    "latency_us",
    "control_latency_us",
    "control_slo_violations",
    "peak_rss_bytes",
    "refused_by_reason",
    "shed_by_reason",
    "generator_fell_behind",
    "reconciled",
    "unsent",
];

fn plan(closed_loop: bool, priority_weights: Option<[u32; 4]>) -> RunPlan {
    RunPlan {
        phases: vec![
            Phase {
                connections: 50,
                rate: 20_000,
                duration_ns: 100_000_000,
                recorded: false,
            },
            Phase {
                connections: 50,
                rate: 20_000,
                duration_ns: 500_000_000,
                recorded: true,
            },
        ],
        closed_loop,
        window: 1,
        service_ns: 0,
        control_probe_ms: 10,
        probe_over_http: false,
        priority_weights,
        consumer_poll_ns: 0,
        progress: false,
        drain_timeout: Duration::from_secs(10),
        payload: PayloadPlan::default(),
        tenant: TenantId(0),
    }
}

fn info() -> RunInfo {
    RunInfo {
        scenario: "test".into(),
        target: "inproc".into(),
        profile: "production".into(),
        capacity: None,
        overload: None,
    }
}

#[test]
fn an_open_loop_run_reconciles_and_reports_every_key() {
    let mut config = Config::default();
    config.shards = 1;
    let result = run_inproc(config, &plan(false, None)).unwrap();
    assert!(
        result.reconcile_errors.is_empty(),
        "{:?}",
        result.reconcile_errors
    );
    assert!(result.engine.reconciles());
    assert_eq!(result.lost, 0);
    // Every submitted message got exactly one completion.
    assert_eq!(result.all.submitted, result.submitted_all);
    assert_eq!(result.engine.total.submitted, result.submitted_all);
    // Everything scheduled was sent (or counted as unsent).
    assert_eq!(result.submitted_all + result.unsent, 12_000);
    assert_eq!(result.submitted + result.unsent, 10_000);
    assert_eq!(result.measured.submitted, result.submitted);

    let report = RunReport::new(&info(), &result);
    let json = serde_json::to_value(&report).unwrap();
    let object = json.as_object().unwrap();
    for key in REQUIRED_KEYS {
        assert!(object.contains_key(key), "missing {key}");
    }
    for key in ["p50", "p90", "p99", "p999", "max"] {
        assert!(json["latency_us"].get(key).is_some(), "latency_us.{key}");
    }
    for key in ["p50", "p99", "p999", "max"] {
        assert!(
            json["control_latency_us"].get(key).is_some(),
            "control_latency_us.{key}"
        );
    }
    assert!(json["refused_by_reason"].get("rate_limited").is_some());
    assert!(json["shed_by_reason"].get("circuit_open").is_some());
    assert_eq!(json["reconciled"], true);
    // One JSON object, serialisable.
    let text = serde_json::to_string(&json).unwrap();
    assert!(text.starts_with('{') && text.ends_with('}'));
    let table = report.to_table();
    assert!(table.contains("counts reconcile"), "{table}");
}

#[test]
fn a_closed_loop_run_with_a_priority_mix_reconciles() {
    let mut config = Config::default();
    config.shards = 1;
    let result = run_inproc(config, &plan(true, Some([1, 49, 30, 20]))).unwrap();
    assert!(
        result.reconcile_errors.is_empty(),
        "{:?}",
        result.reconcile_errors
    );
    assert_eq!(result.all.submitted, result.submitted_all);
    assert_eq!(result.per_priority.len(), 4);
    let per_priority: u64 = result
        .per_priority
        .iter()
        .map(|entry| entry.outcomes.submitted)
        .sum();
    assert_eq!(per_priority, result.measured.submitted);
    let report = RunReport::new(&info(), &result);
    let json = serde_json::to_value(&report).unwrap();
    assert!(json["per_priority"]["P0"].get("goodput_rate").is_some());
}

#[test]
fn calibration_measures_a_capacity() {
    let mut config = Config::default();
    config.shards = 1;
    let capacity = calibrate_capacity(config, 50, 1_000, 0, 0.3).unwrap();
    assert!(capacity > 0.0);
}

#[test]
fn a_closed_loop_with_a_window_keeps_that_many_per_connection_and_reconciles() {
    let mut config = Config::default();
    config.shards = 1;
    let mut plan = plan(true, None);
    plan.window = 4;
    plan.service_ns = 2_000;
    let result = run_inproc(config, &plan).unwrap();
    assert!(
        result.reconcile_errors.is_empty(),
        "{:?}",
        result.reconcile_errors
    );
    assert_eq!(result.all.submitted, result.submitted_all);
    assert_eq!(result.window, 4);
    // Every delivered message of the measured phase found its own send time (its slot
    // travels in its id), so each has exactly one latency sample.
    assert_eq!(result.latency_ns.len(), result.measured.delivered);
    let report = RunReport::new(&info(), &result);
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["window"], 4);
    assert!(report.to_table().contains("window 4 per connection"));
}

#[test]
fn payload_bytes_are_counted_as_sent_and_the_silent_handler_returns_none() {
    let mut config = Config::default();
    config.shards = 1;
    let mut plan = plan(false, None);
    plan.payload = PayloadPlan {
        bytes: 48,
        verify_echo: false,
    };
    let result = run_inproc(config, &plan).unwrap();
    assert!(
        result.reconcile_errors.is_empty(),
        "{:?}",
        result.reconcile_errors
    );
    assert!(result.sent_in_window > 0);
    assert_eq!(result.payload_bytes_in_window, 48 * result.sent_in_window);
    // The in-process engine's handler answers nothing.
    assert_eq!(result.response_bytes_in_window, 0);
    assert!(result.echo.is_none());
    let json = serde_json::to_value(RunReport::new(&info(), &result)).unwrap();
    assert_eq!(json["payload_bytes"], 48);
    assert_eq!(
        json["payload_sent_bytes_per_s"],
        (48.0 * result.sent_in_window as f64 / result.duration_s).round()
    );
    assert_eq!(json["response_received_bytes_per_s"], 0.0);
}

#[test]
fn the_probe_over_http_asks_the_admin_endpoint_and_every_check_is_answered() {
    let mut config = Config::default();
    config.shards = 1;
    let mut plan = plan(false, None);
    plan.probe_over_http = true;
    let result = run_inproc(config, &plan).unwrap();
    let probe = result
        .control
        .as_ref()
        .expect("the in-process engine has a control plane");
    assert!(probe.over_http);
    assert_eq!(probe.errors, 0);
    // 500 ms measured at one check every 10 ms: some dozens, each a real HTTP answer.
    assert!(
        probe.latency_ns.len() >= 10,
        "{} checks",
        probe.latency_ns.len()
    );
    // The control plane counted them too: each GET /health is one health command.
    let health = result
        .engine
        .control
        .latency
        .iter()
        .find(|latency| latency.command == spillway::control::CommandKind::Health)
        .map_or(0, |latency| latency.count);
    assert!(health >= probe.latency_ns.len());
    assert!(result.reconcile_errors.is_empty());
}
