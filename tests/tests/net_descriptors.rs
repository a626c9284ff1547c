//! Descriptor exhaustion: when the process has no descriptor left for a new connection,
//! the server backs off (counted) instead of spinning on the error, keeps serving the
//! connections it has, and accepts the waiting ones once descriptors are free again.
//!
//! Its own test binary: it lowers the process's descriptor limit, which would starve any
//! test running beside it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use spillway::config::{Config, NetConfig};
use spillway::engine::Engine;
use spillway::message::{Message, MessageId, Priority, Role, TenantId};
use spillway::net::protocol::{ClientFrame, FrameLimit, Submit, HEADER_BYTES};
use spillway::net::server::{ServerConfig, TcpServer};

fn send(stream: &mut TcpStream, frame: ClientFrame<'_>) {
    let mut bytes = Vec::new();
    frame.encode(FrameLimit::DEFAULT, &mut bytes).unwrap();
    stream.write_all(&bytes).unwrap();
}

/// Reads one whole frame and returns its type code.
fn read_frame_type(stream: &mut TcpStream) -> u8 {
    let mut header = [0u8; HEADER_BYTES];
    stream.read_exact(&mut header).unwrap();
    let body_bytes = u32::from_le_bytes(header[4..8].try_into().unwrap()) as usize;
    let mut body = vec![0u8; body_bytes];
    stream.read_exact(&mut body).unwrap();
    header[3]
}

#[test]
fn out_of_descriptors_the_server_backs_off_and_recovers() {
    let server = TcpServer::bind(
        "127.0.0.1:0",
        ServerConfig {
            net: NetConfig {
                accept_backoff_ns: 20_000_000,
                ..NetConfig::default()
            },
            ..ServerConfig::default()
        },
    )
    .unwrap();
    let engine = Engine::builder()
        .config(Config {
            shards: 1,
            ..Config::default()
        })
        .handler(server.front_end(|_: &Message| Ok(())))
        .start()
        .unwrap();
    let addr = server.local_addr();
    let mut good = TcpStream::connect(addr).unwrap();
    good.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    send(&mut good, ClientFrame::Hello);
    assert_eq!(read_frame_type(&mut good), 0x81, "Welcome");

    // Leave room for a few dozen more descriptors, then connect until none is left: the
    // kernel completes connects the server cannot accept, so the server meets EMFILE.
    let (soft, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap();
    let open_now = std::fs::read_dir("/proc/self/fd").map_or(64, |dir| dir.count() as u64);
    rlimit::setrlimit(rlimit::Resource::NOFILE, open_now + 40, hard).unwrap();
    let mut clients = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.stats().accept_backoffs == 0 && Instant::now() < deadline {
        match TcpStream::connect(addr) {
            Ok(stream) => clients.push(stream),
            // Our own side ran out first: give the server's accepts time to meet it.
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
    let stats = server.stats();
    assert!(stats.accept_backoffs > 0, "{stats:?}");

    // Still serving the connection it has.
    send(
        &mut good,
        ClientFrame::Submit(Submit {
            message_id: MessageId(1),
            tenant: TenantId(0),
            priority: Priority::P1,
            role: Role::Session,
            payload: b"x",
        }),
    );
    assert_eq!(read_frame_type(&mut good), 0x82, "Reply");

    // Free descriptors: the server accepts again once its backoff is over.
    drop(clients);
    rlimit::setrlimit(rlimit::Resource::NOFILE, soft, hard).unwrap();
    let mut fresh = TcpStream::connect(addr).unwrap();
    fresh
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    send(&mut fresh, ClientFrame::Hello);
    assert_eq!(
        read_frame_type(&mut fresh),
        0x81,
        "Welcome after the recovery"
    );
    let stats = engine.shutdown();
    assert!(stats.reconciles());
}
