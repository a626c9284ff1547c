//! `--verify-echo` over real sockets: the loadgen's TCP driver against an in-test
//! `TcpServer` on 127.0.0.1:0 whose handler echoes each payload. An honest echo passes with
//! every delivered response checked; a handler that corrupts one byte of some responses and
//! cuts others short is caught once for each, exactly, and the run fails. Short runs,
//! loopback only.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use spillway::handler::HandlerError;
use spillway::message::{Bytes, Message, TenantId};
use spillway_loadgen::generator::{run_with_target, Phase, RunPlan, RunResult};
use spillway_loadgen::payload::PayloadPlan;
use spillway_loadgen::report::{RunInfo, RunReport};
use spillway_loadgen::tcp::{target_name, TcpSettings, TcpSystem};
use spillway_loadgen::tcp_stats::TcpStats;

mod support;
use support::{serve, Served};

const CONNECTIONS: u32 = 8;
/// Not a multiple of 8, so the last word of each payload is a part word.
const PAYLOAD_BYTES: u32 = 100;
/// The corrupting handler damages the response of every message whose id is this many
/// apart.
const DAMAGE_EVERY: u64 = 10;

/// 0.1 s unrecorded then 0.4 s measured at 4,000 msg/s (2,000 messages), or a closed loop
/// of `window` per connection for as long.
fn plan(closed_loop: bool, window: u32) -> RunPlan {
    let phase = |duration_ns, recorded| Phase {
        connections: CONNECTIONS,
        rate: 4_000,
        duration_ns,
        recorded,
    };
    RunPlan {
        phases: vec![phase(100_000_000, false), phase(400_000_000, true)],
        closed_loop,
        window,
        service_ns: 0,
        control_probe_ms: 0,
        probe_over_http: false,
        priority_weights: None,
        consumer_poll_ns: 0,
        progress: false,
        drain_timeout: Duration::from_secs(5),
        payload: PayloadPlan {
            bytes: PAYLOAD_BYTES,
            verify_echo: true,
        },
        tenant: TenantId(0),
    }
}

/// Runs `plan` over TCP against `served`, then stops the engine.
fn run(served: Served, plan: &RunPlan) -> (RunResult<TcpStats>, RunReport) {
    let address = served.server.local_addr();
    let system = TcpSystem::connect(TcpSettings::new(address, CONNECTIONS)).expect("connecting");
    let result = run_with_target(system, plan).expect("the run");
    served.engine.shutdown();
    let info = RunInfo {
        scenario: "echo".into(),
        target: target_name(address),
        profile: "the server's".into(),
        capacity: None,
        overload: None,
    };
    let report = RunReport::new(&info, &result);
    (result, report)
}

/// Every message was answered, and each delivered one's response was checked (the
/// engine's admission may refuse some: those have no response to check).
fn assert_all_checked(result: &RunResult<TcpStats>) {
    assert!(
        result.reconcile_errors.is_empty(),
        "{:?}",
        result.reconcile_errors
    );
    assert_eq!(result.lost, 0);
    assert!(result.all.delivered > 0);
    let echo = result.echo.expect("the plan asked for the check");
    assert_eq!(echo.checked, result.all.delivered);
}

fn echo(message: &Message) -> Result<Bytes, HandlerError> {
    Ok(message.payload.clone())
}

#[test]
fn an_echo_server_passes_the_check_and_the_bytes_are_counted_each_way() {
    let (result, report) = run(serve(echo), &plan(false, 1));
    assert_all_checked(&result);
    assert_eq!(result.echo.unwrap().mismatches, 0);
    // Every message carried the payload, and every delivered one came back with it.
    let payload = u64::from(PAYLOAD_BYTES);
    assert_eq!(
        result.payload_bytes_in_window,
        payload * result.sent_in_window
    );
    assert_eq!(
        result.response_bytes_in_window,
        payload * result.delivered_in_window
    );
    assert!(result.response_received_bytes_per_s() > 0.0);

    assert_eq!(report.echo_failure(), None);
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["echo_mismatches"], 0);
    assert_eq!(json["echo_checked"], result.all.delivered);
    assert_eq!(json["payload_bytes"], PAYLOAD_BYTES);
    assert_eq!(
        json["payload_sent_bytes_per_s"],
        result.payload_sent_bytes_per_s().round()
    );
    let table = report.to_table();
    assert!(table.contains("echo check: all"), "{table}");
    assert!(table.contains("(100 bytes per message)"), "{table}");
}

#[test]
fn a_pipelined_closed_loop_against_an_echo_server_passes_the_check() {
    // Four messages in flight per connection, sent together: each Reply is checked against
    // its own message, whatever its neighbours carried.
    let (result, report) = run(serve(echo), &plan(true, 4));
    assert_all_checked(&result);
    assert_eq!(result.echo.unwrap().mismatches, 0);
    assert_eq!(report.echo_failure(), None);
}

#[test]
fn corrupted_and_truncated_echoes_are_each_counted_and_fail_the_run() {
    let damaged = Arc::new(AtomicU64::new(0));
    let handler = {
        let damaged = Arc::clone(&damaged);
        move |message: &Message| {
            let id = message.id.0;
            let mut response = message.payload.to_vec();
            match id % DAMAGE_EVERY {
                // One byte flipped, somewhere different each time.
                3 => {
                    let at = id as usize % response.len();
                    response[at] ^= 0x20;
                }
                // One byte short.
                7 => {
                    response.pop();
                }
                _ => return Ok::<_, HandlerError>(message.payload.clone()),
            }
            // Relaxed: the test reads it after the engine has shut down, which joins the
            // shard that counted.
            damaged.fetch_add(1, Ordering::Relaxed);
            Ok(Bytes::from(response))
        }
    };
    let (result, report) = run(serve(handler), &plan(false, 1));
    assert_all_checked(&result);
    let damaged = damaged.load(Ordering::Relaxed);
    // Two ids in ten, over some 2,500 messages.
    assert!(damaged >= 400, "{damaged}");
    assert_eq!(result.echo.unwrap().mismatches, damaged);

    let failure = report.echo_failure().expect("the run fails");
    assert!(
        failure.contains(&format!("{damaged} of {} delivered", result.all.delivered)),
        "{failure}"
    );
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["echo_mismatches"], damaged);
    let table = report.to_table();
    assert!(table.contains(&format!("ERROR: {failure}")), "{table}");
}

#[test]
fn a_run_without_the_check_reports_none() {
    let mut plan = plan(false, 1);
    plan.payload.verify_echo = false;
    let (result, report) = run(serve(echo), &plan);
    assert!(result.echo.is_none());
    assert_eq!(report.echo_failure(), None);
    let json = serde_json::to_value(&report).unwrap();
    assert!(json["echo_mismatches"].is_null());
    assert!(!report.to_table().contains("echo check"));
}
