//! `spillway serve` as a process: the graceful stop at SIGTERM, the second signal that stops
//! at once, SIGHUP's live reload, and the settings from the environment with JSON logs. Loopback only; every wait
//! is bounded.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, ErrorKind, Read};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use spillway::client::{Client, ClientConfig, ClientError, ClientEvent, SubmitRequest};
use spillway::message::{MessageId, Priority, Role, TenantId};
use spillway::net::protocol::ErrorCode;
use spillway::outcome::Outcome;

/// The bound on every wait for the process: a log line, a Reply, the exit.
const WAIT: Duration = Duration::from_secs(30);

/// A running `spillway serve`, its stderr (the log) read line by line as it comes.
struct Serve {
    child: Child,
    log: Receiver<String>,
    /// Every log line read so far.
    seen: Vec<String>,
    stdout: Option<JoinHandle<String>>,
}

impl Serve {
    fn start(args: &[&str]) -> Self {
        Self::start_with(args, &[])
    }

    /// `spillway serve ARGS` with the environment variables `env` set (and RUST_LOG unset).
    fn start_with(args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_spillway"))
            .arg("serve")
            .args(args)
            .env_remove("RUST_LOG")
            // Tests run side by side: each admin endpoint on a port of its own.
            .env("SPILLWAY_ADMIN", "127.0.0.1:0")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the spillway binary starts");
        let (sender, log) = mpsc::channel();
        let stderr = child.stderr.take().expect("piped");
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    return;
                }
            }
        });
        let mut stdout = child.stdout.take().expect("piped");
        let stdout = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stdout.read_to_string(&mut text);
            text
        });
        Self {
            child,
            log,
            seen: Vec::new(),
            stdout: Some(stdout),
        }
    }

    /// The first log line from now on that contains `pattern`.
    fn await_line(&mut self, pattern: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.log.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(pattern) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no log line with {pattern:?} within {WAIT:?}; the log:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// The address of the `listening on ADDR` line (the text format).
    fn listen_address(&mut self) -> SocketAddr {
        let line = self.await_line("listening on ");
        let (_, rest) = line.split_once("listening on ").expect("found above");
        let address = rest.split_whitespace().next().expect("an address");
        address.parse().expect("a socket address")
    }

    fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("a pid fits pid_t");
        // SAFETY: kill(2) reads and writes no memory of this process; the pid is our child's,
        // not yet waited for, so it cannot have been reused.
        let sent = unsafe { libc::kill(pid, signal) };
        assert_eq!(sent, 0, "kill: {}", std::io::Error::last_os_error());
    }

    /// Waits for the exit (bounded); returns its status, every log line and stdout.
    fn wait(mut self) -> (ExitStatus, Vec<String>, String) {
        let deadline = Instant::now() + WAIT;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("waiting for the child") {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "spillway serve did not exit within {WAIT:?}; its log:\n{}",
                self.seen.join("\n")
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        // The process has exited: its stderr ends, and with it the channel.
        let mut seen = std::mem::take(&mut self.seen);
        seen.extend(self.log.iter());
        let stdout = self
            .stdout
            .take()
            .expect("taken once")
            .join()
            .expect("read");
        (status, seen, stdout)
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        // A failed test must not leave the server running.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn request(id: u64) -> SubmitRequest<'static> {
    SubmitRequest {
        message_id: MessageId(id),
        tenant: TenantId(0),
        priority: Priority::P1,
        role: Role::Session,
        payload: b"work",
    }
}

/// The number after ` NAME=` in a text log line.
fn field(line: &str, name: &str) -> u64 {
    let (_, rest) = line
        .split_once(&format!(" {name}="))
        .unwrap_or_else(|| panic!("no {name} in {line:?}"));
    rest.split_whitespace()
        .next()
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("{name} is not a number in {line:?}"))
}

/// `spillway serve` on one shard whose every message takes `service_ns`, stopping within
/// `stop_deadline_s`, and a client that has submitted `messages` to it.
fn queued_behind_one_slow_shard(
    service_ns: &str,
    stop_deadline_s: &str,
    messages: u64,
) -> (Serve, SocketAddr, Client) {
    let mut serve = Serve::start(&[
        "--listen",
        "127.0.0.1:0",
        "--shards",
        "1",
        "--service-ns",
        service_ns,
        "--stop-deadline-s",
        stop_deadline_s,
    ]);
    let address = serve.listen_address();
    let mut client = Client::connect(address, ClientConfig::default()).unwrap();
    for id in 0..messages {
        client.submit(request(id)).unwrap();
    }
    (serve, address, client)
}

/// Notes a Reply's outcome under its message id.
fn record(replies: &mut BTreeMap<u64, Vec<Outcome>>, event: ClientEvent) {
    match event {
        ClientEvent::Reply(reply) => replies
            .entry(reply.message_id.0)
            .or_default()
            .push(reply.outcome),
        ClientEvent::Flow(_) => {}
        other => panic!("unexpected {other:?}"),
    }
}

fn the_line<'log>(log: &'log [String], pattern: &str) -> &'log str {
    log.iter()
        .find(|line| line.contains(pattern))
        .unwrap_or_else(|| panic!("no {pattern:?} in the log:\n{}", log.join("\n")))
}

#[test]
fn sigterm_stops_gracefully_every_message_answered_once_and_the_counters_logged() {
    // 100 messages of 50 ms each queue 5 s of work on one shard; the stop lets them run for
    // 2 s and cancels the rest.
    const MESSAGES: u64 = 100;
    let (mut serve, address, mut client) = queued_behind_one_slow_shard("50000000", "2", MESSAGES);
    let mut replies: BTreeMap<u64, Vec<Outcome>> = BTreeMap::new();
    // The first Reply; by then the shard has read every Submit (they were written before
    // it), and a little later for certain.
    record(
        &mut replies,
        client.next_event(WAIT).unwrap().expect("a Reply"),
    );
    std::thread::sleep(Duration::from_millis(300));
    // Take the Replies that have come meanwhile (one every 50 ms).
    while let Some(event) = client.next_event(Duration::from_millis(20)).unwrap() {
        record(&mut replies, event);
    }

    let signalled = Instant::now();
    // Twice at once, as GNU `timeout` delivers it (to the child, then to its process
    // group): one request, not a second signal.
    serve.signal(libc::SIGTERM);
    serve.signal(libc::SIGTERM);
    // Replies are written as their messages complete during the stop, not held back to its
    // end (the deadline, 2 s away).
    let answered_before = replies.len();
    while replies.len() < answered_before + 3 {
        record(
            &mut replies,
            client.next_event(WAIT).unwrap().expect("a Reply"),
        );
    }
    let three_more = signalled.elapsed();
    assert!(
        three_more < Duration::from_millis(1200),
        "three Replies took {three_more:?} after the signal"
    );
    let stopping = serve.await_line("stopping: not ready");
    assert!(stopping.contains("reason=\"SIGTERM\""), "{stopping}");
    serve.await_line("listener closed");
    let refused = TcpStream::connect_timeout(&address, Duration::from_secs(5))
        .expect_err("the listener refuses new connections once it is closed");
    assert_eq!(refused.kind(), ErrorKind::ConnectionRefused, "{refused}");

    // Every Reply, then the Error that ends the connection.
    loop {
        match client.next_event(WAIT) {
            Ok(Some(event)) => record(&mut replies, event),
            Ok(None) => panic!("no frame within {WAIT:?}"),
            Err(ClientError::Server {
                code: ErrorCode::ShuttingDown,
                ..
            }) => break,
            Err(error) => panic!("expected Replies then shutting_down, got {error}"),
        }
    }
    let (status, log, stdout) = serve.wait();
    let stop_took = signalled.elapsed();
    assert_eq!(status.code(), Some(0), "{}", log.join("\n"));

    assert_eq!(replies.len() as u64, MESSAGES, "a message got no Reply");
    let mut delivered = 0;
    let mut cancelled = 0;
    for (id, outcomes) in &replies {
        match outcomes[..] {
            [Outcome::Delivered] => delivered += 1,
            [Outcome::Cancelled] => cancelled += 1,
            _ => panic!("message {id} got {outcomes:?}"),
        }
    }
    // The deadline cut the queue short: the stop took well under the queue's 5 s.
    assert!(
        delivered > 0 && cancelled > 0,
        "{delivered} delivered, {cancelled} cancelled"
    );
    assert!(
        stop_took < Duration::from_secs(5),
        "the stop took {stop_took:?}"
    );

    // The final counters, logged, agree with what the client read.
    let engine = the_line(&log, "stopped: engine");
    assert!(engine.contains(" reconciles=true"), "{engine}");
    assert_eq!(field(engine, "submitted"), MESSAGES, "{engine}");
    assert_eq!(field(engine, "delivered"), delivered, "{engine}");
    assert_eq!(field(engine, "cancelled"), cancelled, "{engine}");
    let net = the_line(&log, "stopped: net");
    assert_eq!(field(net, "replies_sent"), MESSAGES, "{net}");
    assert!(net.contains("shutting_down 1"), "{net}");
    // And the summary on stdout, which scripts read.
    assert!(stdout.contains("spillway serve: stopped"), "{stdout}");
    assert!(stdout.contains("(reconciles: true)"), "{stdout}");
}

#[test]
fn a_second_signal_during_the_stop_exits_at_once() {
    // Five messages of 2 s each, and a stop deadline of a minute: a graceful stop would take
    // 10 s or so; the second signal ends it at once.
    let (mut serve, _, _client) = queued_behind_one_slow_shard("2000000000", "60", 5);
    std::thread::sleep(Duration::from_millis(300));
    serve.signal(libc::SIGTERM);
    serve.await_line("stopping: not ready");
    // Past the window in which a repeat counts as the same request (100 ms).
    std::thread::sleep(Duration::from_millis(200));
    let second = Instant::now();
    serve.signal(libc::SIGINT);
    let (status, log, stdout) = serve.wait();
    assert!(
        second.elapsed() < Duration::from_secs(3),
        "{:?} after the second signal",
        second.elapsed()
    );
    // 128 + SIGINT: the second signal's own status, not the graceful stop's 0.
    assert_eq!(status.code(), Some(130), "{}", log.join("\n"));
    assert!(!log.iter().any(|line| line.contains("stopped: engine")));
    assert!(!stdout.contains("spillway serve: stopped"), "{stdout}");
}

#[test]
fn the_environment_sets_the_listener_the_configuration_and_json_logs() {
    let file = std::env::temp_dir().join(format!("spillway-serve-{}.toml", std::process::id()));
    std::fs::write(
        &file,
        "profile = \"development\"\n[net]\nmax_connections = 123\n",
    )
    .unwrap();
    let mut serve = Serve::start_with(
        &["--duration-s", "1", "--shards", "1"],
        &[
            ("SPILLWAY_LISTEN", "127.0.0.1:0"),
            ("SPILLWAY_CONFIG", file.to_str().unwrap()),
            ("SPILLWAY_LOG_FORMAT", "json"),
        ],
    );
    let listening = serve.await_line("listening on 127.0.0.1:");
    assert!(listening.starts_with('{'), "{listening}");
    assert!(listening.contains("\"max_connections\":123"), "{listening}");
    let (status, log, _) = serve.wait();
    std::fs::remove_file(&file).unwrap();
    assert_eq!(status.code(), Some(0), "{}", log.join("\n"));
    let engine = the_line(&log, "\"configuration: engine\"");
    assert!(engine.contains("\"profile\":\"development\""), "{engine}");
    let stopped = the_line(&log, "\"stopped: engine\"");
    assert!(stopped.contains("\"reconciles\":true"), "{stopped}");
    // Every line is one JSON object.
    assert!(log
        .iter()
        .all(|line| line.starts_with('{') && line.ends_with('}')));
}

#[test]
fn an_invalid_configuration_exits_1_naming_the_field() {
    let file = std::env::temp_dir().join(format!("spillway-bad-serve-{}.toml", std::process::id()));
    std::fs::write(&file, "[rate]\nburst = 0\n").unwrap();
    let serve = Serve::start(&[
        "--listen",
        "127.0.0.1:0",
        "--config",
        file.to_str().unwrap(),
    ]);
    let (status, log, _) = serve.wait();
    std::fs::remove_file(&file).unwrap();
    assert_eq!(status.code(), Some(1), "{}", log.join("\n"));
    assert!(
        log.iter()
            .any(|line| line.contains("ERROR") && line.contains("rate.burst")),
        "{}",
        log.join("\n")
    );
}

/// One HTTP request to the admin endpoint at `address`; the status and the body.
fn admin_request(address: &str, method: &str, path: &str) -> (u16, String) {
    use std::io::Write;
    let mut stream = TcpStream::connect(address).expect("the admin endpoint accepts");
    stream.set_read_timeout(Some(WAIT)).unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").expect("a head and a body");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("a status line");
    (status, body.to_string())
}

/// The effective per-connection rate, as `GET /config` shows it.
fn configured_rate(admin: &str) -> u64 {
    let (status, body) = admin_request(admin, "GET", "/config");
    assert_eq!(status, 200, "{body}");
    let config: serde_json::Value = serde_json::from_str(&body).unwrap();
    config["rate"]["per_connection_per_sec"].as_u64().unwrap()
}

#[test]
fn sighup_reloads_live_settings_and_refuses_a_file_that_needs_a_restart() {
    let file = std::env::temp_dir().join(format!("spillway-reload-{}.toml", std::process::id()));
    std::fs::write(&file, "[rate]\nper_connection_per_sec = 1000\n").unwrap();
    let mut serve = Serve::start(&[
        "--listen",
        "127.0.0.1:0",
        "--shards",
        "1",
        "--config",
        file.to_str().unwrap(),
    ]);
    // The listener is logged first, then the admin endpoint.
    let address = serve.listen_address();
    let line = serve.await_line("admin endpoint on http://");
    let admin = line
        .split_once("admin endpoint on http://")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .expect("an address")
        .to_string();
    // A client stays connected across the reloads: a reload drops no connection.
    let mut client = Client::connect(address, ClientConfig::default()).unwrap();
    assert_eq!(configured_rate(&admin), 1000);

    // A live change: applied, logged, and shown by /config.
    std::fs::write(
        &file,
        "[rate]\nper_connection_per_sec = 2000\n[egress]\nthrottle_percent = 50\n",
    )
    .unwrap();
    serve.signal(libc::SIGHUP);
    let reloaded = serve.await_line("SIGHUP: configuration reloaded");
    assert!(
        reloaded.contains("rate.per_connection_per_sec = 2000"),
        "{reloaded}"
    );
    assert!(reloaded.contains("egress: throttle at 50%"), "{reloaded}");
    assert_eq!(configured_rate(&admin), 2000);

    // A change that needs a restart: refused whole, the setting named, the old ones kept.
    // (Not `shards`: the command line's --shards wins over the file's, so it would not differ.)
    std::fs::write(
        &file,
        "[net]\nmax_connections = 77\n[rate]\nper_connection_per_sec = 3000\n",
    )
    .unwrap();
    serve.signal(libc::SIGHUP);
    let refused = serve.await_line("SIGHUP: reload refused");
    assert!(refused.contains("net.max_connections"), "{refused}");
    assert_eq!(configured_rate(&admin), 2000);
    // POST /reload does the same as SIGHUP.
    let (status, body) = admin_request(&admin, "POST", "/reload");
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("net.max_connections"), "{body}");
    std::fs::write(&file, "[rate]\nper_connection_per_sec = 4000\n").unwrap();
    let (status, body) = admin_request(&admin, "POST", "/reload");
    assert_eq!(status, 200, "{body}");
    assert_eq!(configured_rate(&admin), 4000);

    // The client's connection survived: a message still gets its Reply.
    client.submit(request(1)).unwrap();
    let deadline = Instant::now() + WAIT;
    let mut replied = false;
    while !replied && Instant::now() < deadline {
        if let Some(event) = client.next_event(Duration::from_millis(50)).unwrap() {
            replied |= matches!(event, ClientEvent::Reply(_));
        }
    }
    assert!(replied, "no Reply after the reloads");
    serve.signal(libc::SIGTERM);
    let (status, log, _) = serve.wait();
    std::fs::remove_file(&file).unwrap();
    assert_eq!(status.code(), Some(0), "{}", log.join("\n"));
    let stopped = the_line(&log, "stopped: engine");
    assert!(stopped.contains("reconciles=true"), "{stopped}");
}
