//! Checks an echo worker end to end; `scripts/workers-ci.sh` runs it with each reference
//! worker. Two modes:
//!
//! - `--server ADDR`: `--connections` clients of `spillway serve` (which runs with
//!   `--workers`) send `--messages` each, every Submit must end `delivered` (a refusal is
//!   retried after its `retry_after`), and every Reply's response (protocol version 2,
//!   docs/PROTOCOL.md section 5.6) must equal its payload byte for byte.
//! - `--host-workers ADDR`: this program is the engine: it binds the worker address, waits
//!   for a worker, submits `--messages` through an ingress, and every response must equal
//!   its payload byte for byte.
//!
//! It exits non-zero on any other outcome, any mismatch, or a missing answer.
//!
//! `cargo run -p spillway --example check_echo -- --server 127.0.0.1:7878`

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use clap::Parser;
use spillway::client::{Client, ClientConfig, ClientEvent, ClientReply, SubmitRequest};
use spillway::config::Config;
use spillway::engine::Engine;
use spillway::message::{ConnectionId, Message, MessageId, Priority, Role, TenantId};
use spillway::outcome::Outcome;
use spillway::workers::{NoInner, WorkerListener};

/// The command line.
#[derive(Parser)]
#[command(about = "Sends messages through echo workers and checks every answer")]
struct Options {
    /// A `spillway serve` to send to (outcomes and responses checked).
    #[arg(
        long,
        conflicts_with = "host_workers",
        required_unless_present = "host_workers"
    )]
    server: Option<String>,
    /// Serve the worker address here (`HOST:PORT` or `unix:PATH`; responses checked).
    #[arg(long)]
    host_workers: Option<String>,
    /// Client connections (`--server`).
    #[arg(long, default_value_t = 4)]
    connections: u64,
    /// Messages per connection (`--server`), or in all (`--host-workers`).
    #[arg(long, default_value_t = 500)]
    messages: u64,
    /// The bound on the whole check, in seconds.
    #[arg(long, default_value_t = 20)]
    timeout_s: u64,
}

/// The payload of message `id` of connection `connection`: its ids, then a byte pattern,
/// 16 to 1,040 bytes long, so that a worker mixing two messages up is caught.
fn payload(connection: u64, id: u64) -> Vec<u8> {
    let mut bytes = format!("{connection:08x}{id:08x}").into_bytes();
    bytes.extend((0..(id * 7) % 1025).map(|index| (index ^ id) as u8));
    bytes
}

fn main() -> anyhow::Result<()> {
    let options = Options::parse();
    let deadline = Instant::now() + Duration::from_secs(options.timeout_s);
    match (&options.server, &options.host_workers) {
        (Some(server), _) => {
            let threads: Vec<_> = (0..options.connections)
                .map(|connection| {
                    let server = server.clone();
                    let messages = options.messages;
                    std::thread::spawn(move || send(&server, connection, messages, deadline))
                })
                .collect();
            for thread in threads {
                thread.join().expect("a sender panicked")?;
            }
            println!(
                "check_echo: {} messages on {} connections, every one delivered",
                options.connections * options.messages,
                options.connections
            );
        }
        (None, Some(address)) => {
            host(address, options.messages, deadline)?;
            println!(
                "check_echo: {} messages, every response equal to its payload",
                options.messages
            );
        }
        (None, None) => unreachable!("clap requires one"),
    }
    Ok(())
}

/// One client connection of `--server`: submits with up to 32 unanswered, retries
/// refusals, and fails on any other outcome than `delivered` or a response that is not its
/// payload.
fn send(server: &str, connection: u64, messages: u64, deadline: Instant) -> anyhow::Result<()> {
    const WINDOW: u32 = 32;
    let mut client = Client::connect(server, ClientConfig::default())
        .with_context(|| format!("connecting to {server}"))?;
    let payloads: Vec<Vec<u8>> = (0..messages).map(|id| payload(connection, id)).collect();
    // Ids to send, with the time before which each may not be (a refusal's retry_after).
    let mut due: VecDeque<(u64, Instant)> = (0..messages).map(|id| (id, Instant::now())).collect();
    let mut delivered = 0;
    while delivered < messages {
        ensure!(
            Instant::now() < deadline,
            "connection {connection}: {delivered} of {messages} delivered at the timeout"
        );
        while client.in_flight() < WINDOW {
            let Some(&(id, not_before)) = due.front() else {
                break;
            };
            if not_before > Instant::now() {
                break;
            }
            due.pop_front();
            client.submit(SubmitRequest {
                message_id: MessageId(id),
                tenant: TenantId(0),
                priority: Priority::P1,
                role: Role::Session,
                payload: &payloads[id as usize],
            })?;
        }
        match client.next_event(Duration::from_millis(10))? {
            Some(ClientEvent::Reply(ClientReply {
                message_id,
                outcome,
                response,
                ..
            })) => match outcome {
                Outcome::Delivered => {
                    ensure!(
                        response[..] == payloads[message_id.0 as usize][..],
                        "connection {connection}: message {message_id:?} answered {} bytes \
                         that differ from its {}-byte payload",
                        response.len(),
                        payloads[message_id.0 as usize].len()
                    );
                    delivered += 1;
                }
                Outcome::Refused { retry_after_ns, .. } => {
                    let retry_at = Instant::now() + Duration::from_nanos(retry_after_ns);
                    due.push_back((message_id.0, retry_at));
                }
                other => bail!("connection {connection}: message {message_id:?} ended {other:?}"),
            },
            Some(ClientEvent::RepliesDropped { count }) => {
                bail!("connection {connection}: {count} replies dropped")
            }
            Some(ClientEvent::Flow(_) | ClientEvent::Pong { .. }) | None => {}
        }
    }
    let report = client.close(Duration::from_secs(5))?;
    ensure!(report.unanswered == 0, "{} unanswered", report.unanswered);
    Ok(())
}

/// `--host-workers`: the engine behind the worker pool, fed through an ingress.
fn host(address: &str, messages: u64, deadline: Instant) -> anyhow::Result<()> {
    const WINDOW: usize = 256;
    let mut config = Config::default();
    config.shards = 1;
    // Only the worker is under test: no refusals.
    config.levels.rate_limit = false;
    let listener = WorkerListener::bind(address, config.workers)?;
    let engine = Engine::builder()
        .config(config)
        .handler(listener.pool(NoInner))
        .start()?;
    println!("check_echo: workers connect to {}", listener.address());
    while listener.stats().connected == 0 {
        ensure!(Instant::now() < deadline, "no worker connected");
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut ingress = engine.ingress()?;
    let (mut sent, mut checked) = (0, 0);
    let mut completions = Vec::new();
    while checked < messages {
        ensure!(
            Instant::now() < deadline,
            "{checked} of {messages} answered at the timeout"
        );
        while sent < messages && ingress.outstanding() < WINDOW {
            let message = Message::new(ConnectionId(sent % 8), MessageId(sent))
                .with_payload(payload(0, sent));
            if ingress.submit(message).is_err() {
                break;
            }
            sent += 1;
        }
        ingress.wait_completions(&mut completions, Duration::from_millis(10));
        for completion in completions.drain(..) {
            ensure!(
                completion.outcome == Outcome::Delivered,
                "message {:?} ended {:?} ({:?})",
                completion.message,
                completion.outcome,
                completion.detail
            );
            ensure!(
                completion.response[..] == payload(0, completion.message.0)[..],
                "message {:?}: the response is not its payload",
                completion.message
            );
            checked += 1;
        }
    }
    drop(ingress);
    let stats = engine.shutdown();
    ensure!(stats.reconciles(), "the engine's counts do not add up");
    Ok(())
}
