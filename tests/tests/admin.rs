//! The admin HTTP endpoint (`spillway::admin`) against a running engine, over real
//! loopback sockets: metrics that reconcile with the engine's own counters, health and
//! readiness, drain, breaker, config, run-time limits, and every bad request answered
//! with its status and counted.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use spillway::admin::{AdminServer, AdminStats};
use spillway::config::Config;
use spillway::engine::Engine;
use spillway::handler::{Handler, HandlerError, ShardContext, Ticket};
use spillway::message::{Bytes, ConnectionId, Message, MessageId, Priority, Role};
use spillway::outcome::Completion;

#[derive(Clone)]
struct Accept;

impl Handler for Accept {
    fn handle(&mut self, _: &Message, _: &mut ShardContext) -> Result<Bytes, HandlerError> {
        Ok(Bytes::new())
    }
}

/// Defers every message it takes and answers them all once `release` is set.
#[derive(Clone)]
struct HoldUntil {
    release: std::sync::Arc<std::sync::atomic::AtomicBool>,
    held: Vec<Ticket>,
}

impl Handler for HoldUntil {
    fn handle(&mut self, _: &Message, context: &mut ShardContext) -> Result<Bytes, HandlerError> {
        self.held
            .push(context.defer().expect("deferred from handle"));
        Ok(Bytes::new())
    }

    fn poll(&mut self, context: &mut ShardContext) -> usize {
        // Relaxed: a flag with no data behind it.
        if !self.release.load(std::sync::atomic::Ordering::Relaxed) {
            return 0;
        }
        let answered = self.held.len();
        for ticket in self.held.drain(..) {
            context.complete(ticket, Ok(Bytes::new())).expect("held");
        }
        answered
    }
}

/// Writes `raw` on a fresh connection, waits `read_after`, and reads until the server
/// closes it; every answer, parsed by httparse: status and body. The last request of
/// `raw` asks for `Connection: close` (or is refused), so the server closes after it.
fn exchange(address: SocketAddr, raw: &[u8], read_after: Duration) -> Vec<(u16, String)> {
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(raw).unwrap();
    std::thread::sleep(read_after);
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes).unwrap();
    let mut answers = Vec::new();
    let mut rest = &bytes[..];
    while !rest.is_empty() {
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut response = httparse::Response::new(&mut headers);
        let head = match response.parse(rest).unwrap() {
            httparse::Status::Complete(head) => head,
            httparse::Status::Partial => panic!("partial answer {rest:?}"),
        };
        let length: usize = response
            .headers
            .iter()
            .find(|header| header.name.eq_ignore_ascii_case("content-length"))
            .map(|header| std::str::from_utf8(header.value).unwrap().parse().unwrap())
            .expect("a Content-Length");
        let body = String::from_utf8(rest[head..head + length].to_vec()).unwrap();
        answers.push((response.code.unwrap(), body));
        rest = &rest[head + length..];
    }
    answers
}

/// One request on a fresh connection; the status and the body.
fn request(address: SocketAddr, raw: &[u8]) -> (u16, String) {
    let mut answers = exchange(address, raw, Duration::ZERO);
    assert_eq!(answers.len(), 1, "{answers:?}");
    answers.remove(0)
}

fn get(address: SocketAddr, path: &str) -> (u16, String) {
    request(
        address,
        format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes(),
    )
}

fn send(address: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    request(
        address,
        format!(
            "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
}

/// The value of the sample `series` (name and labels exactly as written) in `metrics`.
fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {series} in\n{metrics}"))
        .trim()
        .parse()
        .unwrap()
}

/// An engine with `config` and `handler`, and its admin endpoint on a free port.
fn start<H: Handler + Clone>(mut config: Config, handler: H) -> (Engine, AdminServer) {
    config.admin.listen = Some("127.0.0.1:0".to_string());
    let engine = Engine::builder()
        .config(config.clone())
        .handler(handler)
        .start()
        .unwrap();
    let admin = AdminServer::builder(engine.control(), config)
        .start()
        .unwrap();
    (engine, admin)
}

fn engine_with_admin() -> (Engine, AdminServer) {
    let mut config = Config::default();
    config.shards = 2;
    start(config, Accept)
}

#[test]
fn metrics_reconcile_with_the_engines_counters() {
    let (engine, admin) = engine_with_admin();
    let address = admin.local_addr();
    let mut ingress = engine.ingress().unwrap();
    let mut completions: Vec<Completion> = Vec::new();
    let sent = 300u64;
    for id in 0..sent {
        let priority = [Priority::P0, Priority::P1][(id % 2) as usize];
        let message = Message::new(ConnectionId(id % 7), MessageId(id))
            .with_priority(priority)
            .with_role(Role::Session);
        ingress.submit(message).unwrap();
    }
    while completions.len() < sent as usize {
        ingress.wait_completions(&mut completions, Duration::from_secs(5));
    }
    // Counters are published at batch boundaries; wait until the snapshot has them all.
    for _ in 0..1000 {
        if engine.stats().total.delivered == sent {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let stats = engine.stats();
    let (status, metrics) = get(address, "/metrics");
    assert_eq!(status, 200);
    assert!(metrics.ends_with("# EOF\n"), "not OpenMetrics:\n{metrics}");
    let delivered = sample(
        &metrics,
        "spillway_messages_delivered_total{priority=\"P0\"}",
    ) + sample(
        &metrics,
        "spillway_messages_delivered_total{priority=\"P1\"}",
    );
    assert_eq!(delivered, stats.total.delivered as f64);
    assert_eq!(delivered, sent as f64);
    assert_eq!(
        sample(
            &metrics,
            "spillway_messages_submitted_total{priority=\"P0\"}"
        ),
        stats.priorities[0].submitted as f64
    );
    assert_eq!(
        sample(
            &metrics,
            "spillway_role_messages_total{role=\"session\",outcome=\"delivered\"}"
        ),
        sent as f64
    );
    // The latency histogram counts every delivered message once, in its priority.
    assert_eq!(
        sample(
            &metrics,
            "spillway_message_latency_seconds_count{priority=\"P0\"}"
        ) + sample(
            &metrics,
            "spillway_message_latency_seconds_count{priority=\"P1\"}"
        ),
        sent as f64
    );
    assert_eq!(
        sample(
            &metrics,
            "spillway_message_latency_seconds_bucket{le=\"+Inf\",priority=\"P1\"}"
        ),
        stats.latency[1].count() as f64
    );
    assert_eq!(
        sample(&metrics, "spillway_breaker_state{state=\"closed\"}"),
        1.0
    );
    assert!(metrics.contains("spillway_shard_pending_messages{shard=\"1\"}"));
    // Everything was taken from the rings before the last publication.
    assert_eq!(
        sample(&metrics, "spillway_shard_ring_messages{shard=\"0\"}"),
        0.0
    );
    assert!(metrics
        .contains("spillway_tenant_messages_total{tenant=\"other\",outcome=\"delivered\"} 300"));
    drop(ingress);
    admin.stop();
    engine.shutdown();
}

#[test]
fn health_ready_drain_breaker_and_config() {
    let (engine, admin) = engine_with_admin();
    let address = admin.local_addr();
    let (status, body) = get(address, "/health");
    assert_eq!(status, 200, "{body}");
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["live"], true);
    assert_eq!(health["shards"].as_array().unwrap().len(), 2);
    assert_eq!(get(address, "/ready").0, 200);

    let (status, body) = send(address, "POST", "/breaker/open", "");
    assert_eq!(
        (status, body.contains("forced_open")),
        (200, true),
        "{body}"
    );
    // Forced open: not ready, still live.
    assert_eq!(get(address, "/ready").0, 503);
    assert_eq!(get(address, "/health").0, 200);
    assert_eq!(send(address, "POST", "/breaker/auto", "").0, 200);
    assert_eq!(get(address, "/ready").0, 200);

    // Draining one connection answers its report; draining the process takes readiness.
    let (status, body) = send(address, "POST", "/drain?connection=5", "");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"connection\": 5"), "{body}");
    assert_eq!(get(address, "/ready").0, 200);
    assert_eq!(send(address, "POST", "/drain", "").0, 200);
    let (status, body) = get(address, "/ready");
    assert_eq!(status, 503);
    assert!(body.contains("\"taken_out\": true"), "{body}");

    let (status, body) = get(address, "/config");
    assert_eq!(status, 200);
    let config: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(config["shards"], 2);
    assert_eq!(config["admin"]["listen"], "127.0.0.1:0");
    admin.stop();
    engine.shutdown();
}

#[test]
fn limits_apply_live_and_bad_ones_are_refused_whole() {
    let (engine, admin) = engine_with_admin();
    let address = admin.local_addr();
    let (status, body) = send(
        address,
        "PUT",
        "/limits",
        r#"{"role_messages": {"session": 2}, "rate_per_connection_per_sec": 5000}"#,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(admin.config().caps.role_messages[Role::Session.index()], 2);
    assert_eq!(admin.config().rate.per_connection_per_sec, 5000);
    // The cap holds: with a handler that never finishes before the third submit is
    // decided, a third session message is refused. Checked through the engine's counters:
    // submit a burst on one connection and expect role_queue_full refusals.
    let mut ingress = engine.ingress().unwrap();
    let mut completions: Vec<Completion> = Vec::new();
    for id in 0..2000u64 {
        let message = Message::new(ConnectionId(1), MessageId(id)).with_role(Role::Session);
        let _ = ingress.submit(message);
    }
    while completions.len() < 2000 {
        ingress.wait_completions(&mut completions, Duration::from_secs(5));
    }
    let refused = completions
        .iter()
        .filter(|completion| {
            matches!(
                completion.outcome,
                spillway::outcome::Outcome::Refused { .. }
            )
        })
        .count();
    assert!(refused > 0, "a role cap of 2 refused nothing");

    // Invalid: nothing applied, the field named.
    let (status, body) = send(
        address,
        "PUT",
        "/limits",
        r#"{"role_messages": {"session": 50, "nope": 1}}"#,
    );
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("nope"), "{body}");
    assert_eq!(admin.config().caps.role_messages[Role::Session.index()], 2);
    let (status, body) = send(address, "PUT", "/limits", "{not json");
    assert_eq!(status, 400, "{body}");
    let (status, _) = send(address, "PUT", "/limits", r#"{"unknown_field": 1}"#);
    assert_eq!(status, 400);
    drop(ingress);
    admin.stop();
    engine.shutdown();
}

#[test]
fn bad_requests_get_their_status_and_a_counter() {
    let mut config = Config::default();
    config.admin.max_request_bytes = 2048;
    config.admin.max_headers = 8;
    let (engine, admin) = start(config, Accept);
    let address = admin.local_addr();
    assert_eq!(get(address, "/nope").0, 404);
    assert_eq!(send(address, "DELETE", "/metrics", "").0, 405);
    assert_eq!(send(address, "POST", "/reload", "").0, 501);
    let big = "x".repeat(4096);
    assert_eq!(send(address, "PUT", "/limits", &big).0, 413);
    let many_headers: String = (0..20).map(|i| format!("X-{i}: {i}\r\n")).collect();
    let raw = format!("GET /metrics HTTP/1.1\r\n{many_headers}\r\n");
    assert_eq!(request(address, raw.as_bytes()).0, 431);
    assert_eq!(request(address, b"GET /\x01 HTTP/1.1\r\n\r\n").0, 400);
    // Keep-alive: two requests on one connection, both answered.
    let answers = exchange(
        address,
        b"GET /ready HTTP/1.1\r\nHost: a\r\n\r\nGET /ready HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        Duration::ZERO,
    );
    assert_eq!(
        answers.iter().filter(|(status, _)| *status == 200).count(),
        2,
        "{answers:?}"
    );
    let stats = admin.stats();
    assert_eq!(
        stats,
        AdminStats {
            ok: 2,
            bad_request: 1,
            not_found: 1,
            method_not_allowed: 1,
            too_large: 1,
            too_many_headers: 1,
            unavailable: 1, // the 501 of /reload without a reloader
            ..AdminStats::default()
        }
    );
    let (_, metrics) = get(address, "/metrics");
    assert_eq!(
        sample(&metrics, "spillway_admin_requests_total{code=\"404\"}"),
        1.0
    );
    admin.stop();
    engine.shutdown();
}

#[test]
fn priority_thresholds_change_live_through_put_limits() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    // The handler holds what it takes, deferred, until released, so what is admitted stays
    // pending; deferring (not blocking the shard) lets the shard decide every message even
    // if it runs the first handler before the last message has arrived.
    let release = Arc::new(AtomicBool::new(false));
    let mut config = Config::default();
    config.shards = 1;
    config.levels.rate_limit = false;
    let (engine, admin) = start(
        config,
        HoldUntil {
            release: Arc::clone(&release),
            held: Vec::new(),
        },
    );
    let address = admin.local_addr();
    // Session cap 10, and P1 may fill only half of any cap.
    let (status, body) = send(
        address,
        "PUT",
        "/limits",
        r#"{"role_messages": {"session": 10}, "priority_threshold_percent": [100, 50, 50, 50]}"#,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        admin.config().caps.priority_threshold_percent,
        [100, 50, 50, 50]
    );
    let mut ingress = engine.ingress().unwrap();
    for id in 0..10u64 {
        let message = Message::new(ConnectionId(1), MessageId(id))
            .with_role(Role::Session)
            .with_priority(Priority::P1);
        ingress.submit(message).unwrap();
    }
    let mut completions: Vec<Completion> = Vec::new();
    // The refusals come back while the admitted five are held.
    while completions.len() < 5 {
        ingress.wait_completions(&mut completions, Duration::from_secs(5));
    }
    assert!(completions.iter().all(|completion| matches!(
        completion.outcome,
        spillway::outcome::Outcome::Refused { .. }
    )));
    // Not increasing: refused whole, naming the priority.
    let (status, body) = send(
        address,
        "PUT",
        "/limits",
        r#"{"priority_threshold_percent": [100, 50, 60, 10]}"#,
    );
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("priority_threshold_percent[2]"), "{body}");
    release.store(true, Ordering::Relaxed);
    while completions.len() < 10 {
        ingress.wait_completions(&mut completions, Duration::from_secs(5));
    }
    assert_eq!(
        completions
            .iter()
            .filter(|completion| completion.outcome == spillway::outcome::Outcome::Delivered)
            .count(),
        5
    );
    drop(ingress);
    admin.stop();
    assert!(engine.shutdown().reconciles());
}

#[test]
fn pipelined_requests_from_a_client_that_reads_late_are_all_answered() {
    // 60 pipelined GET /metrics (tens of KB each) sent before reading any answer: the
    // endpoint stops reading while its unwritten answers are over its bound, and goes on
    // once they are written, so every request is answered, in order, and memory stays
    // bounded by the client's reading, not by its sending.
    let (engine, admin) = engine_with_admin();
    let requests = 60;
    let mut raw = String::new();
    for index in 0..requests {
        let close = if index + 1 == requests {
            "Connection: close\r\n"
        } else {
            ""
        };
        raw.push_str(&format!("GET /metrics HTTP/1.1\r\nHost: t\r\n{close}\r\n"));
    }
    let answers = exchange(
        admin.local_addr(),
        raw.as_bytes(),
        Duration::from_millis(200),
    );
    assert_eq!(
        answers.iter().filter(|(status, _)| *status == 200).count(),
        requests
    );
    assert_eq!(
        answers
            .iter()
            .filter(|(_, body)| body.ends_with("# EOF\n"))
            .count(),
        requests
    );
    admin.stop();
    engine.shutdown();
}

/// Fleet quotas (`[global]`) show in `/metrics` and `/health`: here with a Redis that cannot
/// be reached, so the tenant is on its local fallback and the process degraded.
#[test]
fn metrics_and_health_show_the_fleet_quotas() {
    let mut config = Config::default();
    config.shards = 1;
    // A loopback port where nothing listens: every lease call is refused at once.
    config.global.redis = vec!["redis://127.0.0.1:1".to_string()];
    config.global.tenants = vec![spillway::config::GlobalTenantConfig {
        fallback_rate_per_sec: Some(100),
        max_pending: Some(1000),
        ..spillway::config::GlobalTenantConfig::new(spillway::message::TenantId(41), 5000)
    }];
    let (engine, admin) = start(config, Accept);
    let address = admin.local_addr();
    let mut metrics = String::new();
    for _ in 0..2000 {
        metrics = get(address, "/metrics").1;
        if sample(&metrics, "spillway_global_leases_total{result=\"failed\"}") > 0.0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(sample(&metrics, "spillway_global_leases_total{result=\"failed\"}") > 0.0);
    assert_eq!(
        sample(&metrics, "spillway_global_leases_total{result=\"granted\"}"),
        0.0
    );
    assert_eq!(
        sample(
            &metrics,
            "spillway_global_quota_mode{tenant=\"41\",mode=\"fallback\"}"
        ),
        1.0
    );
    assert_eq!(
        sample(
            &metrics,
            "spillway_global_quota_mode{tenant=\"41\",mode=\"leased\"}"
        ),
        0.0
    );
    for series in [
        "spillway_global_quota_share_per_second{tenant=\"41\",resource=\"messages\"}",
        "spillway_global_quota_pending_share{tenant=\"41\"}",
        "spillway_global_quota_offered_total{tenant=\"41\",resource=\"bytes\"}",
        "spillway_global_redis_operations_total",
        "spillway_global_quota_transitions_total{direction=\"fallback\"}",
        "spillway_messages_refused_total{priority=\"P1\",reason=\"global_quota_unavailable\"}",
    ] {
        assert_eq!(sample(&metrics, series), 0.0, "{series}");
    }
    let (status, body) = get(address, "/health");
    assert_eq!(status, 200, "degraded is still live: {body}");
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["degraded"], true);
    assert_eq!(health["global"][0]["tenant"], 41);
    assert_eq!(health["global"][0]["mode"], "fallback");
    drop(admin);
    assert!(engine.shutdown().reconciles());
}
