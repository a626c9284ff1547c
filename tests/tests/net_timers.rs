//! The server's timers against real sockets on 127.0.0.1 (PROTOCOL.md sections 7.3 and 9):
//! each times the thing it names, and nothing else.
//!
//! - The frame timeout times one frame, from its first byte to its last: a client whose
//!   reads keep ending in the middle of a frame, each frame finishing in time, is served for
//!   as long as it likes; a client that stalls in the middle of one frame, or dribbles one
//!   frame slower than the timeout, is cut with `timeout`.
//! - The frame timeout does not run while the server itself holds the connection's bytes
//!   unread (the `block` drop policy stops reading Submits until its send buffer has room).
//! - The `block` drop policy's timeout times each held reply: every reply that meets a full
//!   send buffer waits at most `block_timeout_ns`, however many wait together.
//!
//! Every test binds port 0, runs for a bounded time, and shuts its engine down.

mod net_support;

use std::io::Write;
use std::time::{Duration, Instant};

use net_support::{
    encode, read_until_accounted, submit, submit_burst, write_in_background, Client, Frame, Running,
};
use spillway::config::{EgressConfig, EgressDropPolicy, NetConfig};
use spillway::net::egress::EgressDropReason;
use spillway::net::protocol::{ClientFrame, ErrorCode};
use spillway::net::server::ServerConfig;
use spillway::outcome::Outcome;

const MS: u64 = 1_000_000;

/// The server's settings with a frame timeout of `frame_timeout_ns`.
fn with_frame_timeout(frame_timeout_ns: u64) -> ServerConfig {
    ServerConfig {
        net: NetConfig {
            frame_timeout_ns,
            ..NetConfig::default()
        },
        ..ServerConfig::default()
    }
}

/// `count` Submits of 32-byte payloads, each as its own bytes.
fn submits(count: u64) -> Vec<Vec<u8>> {
    (0..count)
        .map(|id| encode(submit(id, &[0xA5; 32])))
        .collect()
}

#[test]
fn a_client_whose_reads_keep_ending_mid_frame_is_not_cut_by_the_frame_timeout() {
    // Frame timeout 500 ms; every write finishes one frame and begins the next, 25 ms
    // apart, for about 1.5 s: the decoder is never empty after a read, yet every frame takes
    // 25 ms from its first byte to its last (longer only if this thread is starved).
    let running = Running::start(with_frame_timeout(500 * MS));
    let mut client = Client::open(running.addr());
    let frames = submits(60);
    let half = frames[0].len() / 2;
    let started = Instant::now();
    let mut last_write = Instant::now();
    let mut longest_frame = Duration::ZERO;
    client.stream.write_all(&frames[0][..half]).unwrap();
    for (index, frame) in frames.iter().enumerate() {
        std::thread::sleep(Duration::from_millis(25));
        let mut write = frame[half..].to_vec();
        if let Some(next) = frames.get(index + 1) {
            write.extend_from_slice(&next[..half]);
        }
        if client.stream.write_all(&write).is_err() {
            // Cut: the replies below say why.
            break;
        }
        longest_frame = longest_frame.max(last_write.elapsed());
        last_write = Instant::now();
    }
    for id in 0..frames.len() as u64 {
        assert_eq!(
            client.next_ignoring_flow(),
            Some(Frame::Reply(id, Outcome::Delivered)),
            "reply {id}, {:?} after the first byte; the longest frame took {longest_frame:?}",
            started.elapsed()
        );
    }
    assert!(started.elapsed() >= Duration::from_millis(1_500));
    client.round_trip(1_000);
    let (net, _) = running.stop();
    assert_eq!(net.closed_with(ErrorCode::Timeout), 0, "{net:?}");
    assert_eq!(net.submits, frames.len() as u64 + 1);
}

#[test]
fn a_client_that_stalls_in_the_middle_of_a_frame_is_cut_after_the_frame_timeout() {
    let running = Running::start(with_frame_timeout(200 * MS));
    let mut client = Client::open(running.addr());
    // Two whole frames and half of a third in one write: the third's timer starts with the
    // read that completed the other two.
    let frames = submits(3);
    let mut write = [frames[0].as_slice(), frames[1].as_slice()].concat();
    write.extend_from_slice(&frames[2][..frames[2].len() / 2]);
    let started = Instant::now();
    client.stream.write_all(&write).unwrap();
    assert_eq!(
        client.next_ignoring_flow(),
        Some(Frame::Reply(0, Outcome::Delivered))
    );
    assert_eq!(
        client.next_ignoring_flow(),
        Some(Frame::Reply(1, Outcome::Delivered))
    );
    assert_eq!(client.error_then_close(), Some(ErrorCode::Timeout));
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(200), "{waited:?}");
    assert!(waited < Duration::from_secs(2), "{waited:?}");
    let (net, _) = running.stop();
    assert_eq!(net.closed_with(ErrorCode::Timeout), 1);
}

#[test]
fn a_frame_dribbled_slower_than_the_frame_timeout_is_cut() {
    // One byte every 40 ms: no gap comes near the 200 ms timeout, but the frame (56 bytes,
    // over 2 s) does.
    let running = Running::start(with_frame_timeout(200 * MS));
    let mut client = Client::open(running.addr());
    let frame = encode(submit(1, &[0xA5; 32]));
    let started = Instant::now();
    for byte in &frame[..frame.len() - 1] {
        if client.stream.write_all(std::slice::from_ref(byte)).is_err() {
            break;
        }
        if started.elapsed() > Duration::from_millis(600) {
            // Past the timeout and then some: the Error is already on its way.
            break;
        }
        std::thread::sleep(Duration::from_millis(40));
    }
    assert_eq!(client.error_then_close(), Some(ErrorCode::Timeout));
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(200), "{waited:?}");
    assert!(waited < Duration::from_millis(1_500), "{waited:?}");
    let (net, _) = running.stop();
    assert_eq!(net.closed_with(ErrorCode::Timeout), 1);
    assert_eq!(net.submits, 0);
}

/// Block policy on a small send buffer: a client that reads nothing soon fills it, and
/// the server stops reading its Submits.
fn blocking(block_timeout_ns: u64, frame_timeout_ns: u64) -> ServerConfig {
    ServerConfig {
        egress: EgressConfig {
            buffer_capacity: 16,
            drop_policy: EgressDropPolicy::Block,
            block_timeout_ns,
            ..EgressConfig::default()
        },
        ..with_frame_timeout(frame_timeout_ns)
    }
}

#[test]
fn the_frame_timeout_does_not_run_while_the_server_holds_back_reading() {
    // The server stops reading a blocked connection with Submits still in its decoder; the
    // frame timeout (100 ms) is far shorter than the block (300 ms per held reply), and the
    // client reads nothing for a whole second.
    let running = Running::start(blocking(300 * MS, 100 * MS));
    let mut deaf = Client::open(running.addr());
    let count = 200_000;
    let writer = write_in_background(&deaf, submit_burst(count));
    running.wait_for("a reply held back by a full buffer", |stats| {
        stats.replies_dropped[EgressDropReason::BlockTimeout.index()] > 0
    });
    std::thread::sleep(Duration::from_millis(700));
    let tally = read_until_accounted(&mut deaf, count);
    assert!(tally.dropped_reported > 0, "{tally:?}");
    writer.join().unwrap();
    // Still open (its Submits are rate limited by now, so a Ping asks).
    deaf.send(ClientFrame::Ping { nonce: 7 });
    assert_eq!(deaf.next_ignoring_flow(), Some(Frame::Pong(7)));
    let (net, _) = running.stop();
    assert_eq!(net.closed_with(ErrorCode::Timeout), 0, "{net:?}");
}

#[test]
fn under_block_every_held_reply_waits_at_most_the_block_timeout() {
    // While the client reads nothing, every reply that meets the full buffer is held and,
    // 100 ms later, dropped: hundreds within a second (each turn holds up to 256), not one
    // per 100 ms.
    let running = Running::start(blocking(100 * MS, 10_000 * MS));
    let deaf = Client::open(running.addr());
    let _writer = write_in_background(&deaf, submit_burst(200_000));
    let first = running.wait_for("the first block timeout", |stats| {
        stats.replies_dropped[EgressDropReason::BlockTimeout.index()] > 0
    });
    let started = Instant::now();
    let stats = running.wait_up_to(
        Duration::from_millis(1_500),
        "held replies dropped",
        |stats| stats.replies_dropped[EgressDropReason::BlockTimeout.index()] >= 200,
    );
    assert!(
        started.elapsed() < Duration::from_millis(1_500),
        "{first:?} then {stats:?}"
    );
    // Ends the writer's socket too.
    let _ = deaf.stream.shutdown(std::net::Shutdown::Both);
    running.stop();
}
