//! Several TCP targets at once, split by weight: the `loadgen` binary and the library's TCP
//! client against two in-test `TcpServer`s on 127.0.0.1:0, each with its own one-shard
//! engine. Each server gets its share of the messages (75/25, the schedule being
//! deterministic: within a point), each server's counts reconcile on their own and agree
//! with what that server's engine counted, every message carries the run's tenant, and the
//! report has each server's object and the total. A bad split is refused by the command
//! line. Short runs, loopback only.

use std::num::NonZeroU32;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use spillway::handler::HandlerError;
use spillway::message::{Bytes, Message, TenantId};
use spillway::metrics::Stats;
use spillway_loadgen::generator::{run_with_target, Phase, RunPlan};
use spillway_loadgen::payload::PayloadPlan;
use spillway_loadgen::report::{RunInfo, RunReport};
use spillway_loadgen::tcp::{target_name, TcpSettings, TcpSystem};

mod support;
use support::{serve, Served};

const TENANT: u32 = 9;
const CONNECTIONS: u32 = 40;
const RATE: u64 = 4_000;
/// How far a server's share of the submitted messages may be from its weight's.
const SHARE_TOLERANCE: f64 = 0.02;

/// A server ([`support::serve`]) whose handler counts the messages that did not carry
/// [`TENANT`].
struct Tenanted {
    served: Served,
    other_tenant: Arc<AtomicU64>,
}

impl Tenanted {
    fn start() -> Self {
        let other_tenant = Arc::new(AtomicU64::new(0));
        let handler = {
            let other_tenant = Arc::clone(&other_tenant);
            move |message: &Message| {
                if message.tenant != TenantId(TENANT) {
                    // Relaxed: read after the engine has shut down, which joins the shard.
                    other_tenant.fetch_add(1, Ordering::Relaxed);
                }
                Ok::<_, HandlerError>(Bytes::new())
            }
        };
        Self {
            served: serve(handler),
            other_tenant,
        }
    }

    fn address(&self) -> std::net::SocketAddr {
        self.served.server.local_addr()
    }

    /// Stops the engine: its own counts, and the messages of another tenant it served.
    fn stop(self) -> (Stats, u64) {
        let stats = self.served.engine.shutdown();
        drop(self.served.server);
        (stats, self.other_tenant.load(Ordering::Relaxed))
    }
}

/// Checks one server's object of a split run's JSON report against its weight and against
/// what its engine counted.
fn check_target(target: &Value, address: std::net::SocketAddr, weight: u32, served: Tenanted) {
    let (stats, other_tenant) = served.stop();
    assert_eq!(target["target"], target_name(address));
    assert_eq!(target["split_weight"], weight);
    assert_eq!(target["tenant"], TENANT);
    assert_eq!(target["tcp"]["address"], address.to_string());
    assert_eq!(
        target["reconciled"], true,
        "{:#}",
        target["reconcile_errors"]
    );
    assert_eq!(target["lost"], 0);
    assert_eq!(target["tcp"]["without_reply"], 0);
    assert!(target["latency_us"]["count"].as_u64().unwrap() > 0);
    // What this server's engine counted is what the generator sent it, and it saw only
    // the run's tenant.
    assert_eq!(
        target["whole_run"]["submitted"].as_u64().unwrap(),
        stats.total.submitted
    );
    assert_eq!(
        target["whole_run"]["delivered"].as_u64().unwrap(),
        stats.total.delivered
    );
    assert_eq!(other_tenant, 0);
}

/// The share of `part` in `total`, checked against `weight` in 100.
fn assert_share(part: u64, total: u64, weight: u32) {
    let share = part as f64 / total as f64;
    let expected = f64::from(weight) / 100.0;
    assert!(
        (share - expected).abs() <= SHARE_TOLERANCE,
        "{part} of {total} is {share:.3}, not {expected} within {SHARE_TOLERANCE}"
    );
}

#[test]
fn the_binary_splits_75_25_and_reports_each_target_and_the_total() {
    let (first, second) = (Tenanted::start(), Tenanted::start());
    let (first_address, second_address) = (first.address(), second.address());
    let output = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(["--target", &target_name(first_address)])
        .args(["--target", &target_name(second_address)])
        .args(["--split", "75,25", "--tenant", &TENANT.to_string()])
        .args([
            "--scenario",
            "light",
            "--connections",
            &CONNECTIONS.to_string(),
        ])
        .args([
            "--rate",
            &RATE.to_string(),
            "--duration",
            "0.5",
            "--warmup",
            "0.1",
        ])
        .arg("--json")
        .env_remove("SPILLWAY_TARGET")
        .output()
        .expect("running loadgen");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "loadgen failed: {stderr}");
    let report: Value = serde_json::from_slice(&output.stdout).expect("one JSON object");

    // The total, at the top level as for one target.
    assert_eq!(
        report["target"],
        format!(
            "{}, {}",
            target_name(first_address),
            target_name(second_address)
        )
    );
    assert_eq!(
        report["reconciled"], true,
        "{:#}",
        report["reconcile_errors"]
    );
    assert_eq!(report["connections"], CONNECTIONS);
    assert_eq!(report["offered_rate"], RATE);
    assert_eq!(report["tenant"], TENANT);
    assert!(report["tcp"]["address"].is_null());
    assert!(report.get("split_weight").is_none());
    let targets = report["targets"].as_array().expect("a targets array");
    assert_eq!(targets.len(), 2);

    // Each target's share: its connections, its offered rate, what it was sent.
    let count = |target: &Value, key: &str| target[key].as_u64().unwrap();
    assert_eq!(count(&targets[0], "connections"), 30);
    assert_eq!(count(&targets[1], "connections"), 10);
    assert_eq!(count(&targets[0], "offered_rate"), 3_000);
    assert_eq!(count(&targets[1], "offered_rate"), 1_000);
    for key in ["submitted", "delivered", "admitted", "refused"] {
        assert_eq!(
            count(&targets[0], key) + count(&targets[1], key),
            count(&report, key),
            "{key}"
        );
    }
    let total = count(&report, "submitted");
    assert!(total >= 1_500, "{total}");
    assert_share(count(&targets[0], "submitted"), total, 75);
    assert_share(count(&targets[1], "submitted"), total, 25);
    let whole_run = |target: &Value| target["whole_run"]["submitted"].as_u64().unwrap();
    assert_eq!(
        whole_run(&targets[0]) + whole_run(&targets[1]),
        whole_run(&report)
    );
    assert_eq!(
        count(&targets[0]["tcp"], "connections") + count(&targets[1]["tcp"], "connections"),
        count(&report["tcp"], "connections")
    );
    check_target(&targets[0], first_address, 75, first);
    check_target(&targets[1], second_address, 25, second);
}

#[test]
fn a_bad_split_is_refused_before_anything_connects() {
    for (split, says) in [
        ("75,25,10", "--split gives 3 weights for 2 targets"),
        ("75", "--split gives 1 weights for 2 targets"),
        ("75,0", "a weight of 0"),
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_loadgen"))
            // Nothing listens there: the command line is refused before any connect.
            .args([
                "--target",
                "tcp://127.0.0.1:9",
                "--target",
                "tcp://127.0.0.1:9",
            ])
            .args(["--split", split])
            .env_remove("SPILLWAY_TARGET")
            .output()
            .expect("running loadgen");
        let stderr = String::from_utf8_lossy(&output.stderr);
        // clap's exit status for a usage error.
        assert_eq!(output.status.code(), Some(2), "{split}: {stderr}");
        assert!(stderr.contains(says), "{split}: {stderr}");
    }
}

/// The library's client, three servers in one event loop: each server's result, with its
/// own counters, and the table's blocks.
#[test]
fn one_client_drives_three_servers_and_each_reconciles() {
    let served = [Tenanted::start(), Tenanted::start(), Tenanted::start()];
    let addresses: Vec<_> = served.iter().map(Tenanted::address).collect();
    let weights = [70, 20, 10].map(|weight| NonZeroU32::new(weight).unwrap());
    let system = TcpSystem::connect(TcpSettings::split(
        addresses.clone(),
        weights.to_vec(),
        CONNECTIONS,
    ))
    .expect("connecting");
    let phase = |duration_ns, recorded| Phase {
        connections: CONNECTIONS,
        rate: RATE,
        duration_ns,
        recorded,
    };
    let plan = RunPlan {
        phases: vec![phase(100_000_000, false), phase(400_000_000, true)],
        closed_loop: false,
        window: 1,
        service_ns: 0,
        control_probe_ms: 0,
        probe_over_http: false,
        priority_weights: None,
        consumer_poll_ns: 0,
        progress: false,
        drain_timeout: Duration::from_secs(5),
        payload: PayloadPlan::default(),
        tenant: TenantId(TENANT),
    };
    let result = run_with_target(system, &plan).expect("the run");
    assert!(
        result.reconcile_errors.is_empty(),
        "{:?}",
        result.reconcile_errors
    );
    assert_eq!(result.targets.len(), 3);
    assert_eq!(result.engine.targets.len(), 3);
    let mut submitted = 0;
    for ((part, served), (&address, weight)) in result
        .targets
        .iter()
        .zip(served)
        .zip(addresses.iter().zip(weights))
    {
        assert!(
            part.reconcile_errors.is_empty(),
            "{:?}",
            part.reconcile_errors
        );
        assert_eq!(part.split_weight, Some(weight.get()));
        assert_eq!(part.engine.address, Some(address));
        assert_eq!(part.tenant, TenantId(TENANT));
        assert_share(part.submitted, result.submitted, weight.get());
        let (stats, other_tenant) = served.stop();
        assert_eq!(part.submitted_all, stats.total.submitted);
        assert_eq!(part.all.delivered, stats.total.delivered);
        assert_eq!(other_tenant, 0);
        // The event loop's epoll_wait calls serve all three: only the total has them.
        assert_eq!(part.engine.syscalls.epoll_wait, 0);
        assert!(part.engine.syscalls.read > 0 && part.engine.syscalls.write > 0);
        submitted += part.submitted_all;
    }
    assert_eq!(submitted, result.submitted_all);
    assert!(result.engine.syscalls.epoll_wait > 0);
    assert_eq!(result.engine.address, None);

    let info = RunInfo {
        scenario: "split".into(),
        target: "three servers".into(),
        profile: "the server's".into(),
        capacity: None,
        overload: None,
    };
    let table = RunReport::new(&info, &result).to_table();
    for (index, address) in addresses.iter().enumerate() {
        let heading = format!(
            "target {} of 3: {}, weight {} of split 70,20,10 ",
            index + 1,
            target_name(*address),
            weights[index]
        );
        assert!(table.contains(&heading), "{table}");
    }
    assert!(
        table.contains("all 3 targets together (split 70,20,10):"),
        "{table}"
    );
    assert!(
        table.contains("tcp: 40 connections to 3 servers"),
        "{table}"
    );
    assert_eq!(table.matches("counts reconcile").count(), 4, "{table}");
    assert!(table.contains(&format!("tenant {TENANT}")), "{table}");
}
