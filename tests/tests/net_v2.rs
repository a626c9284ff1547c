//! What protocol version 2 adds, against a real server on 127.0.0.1 (`docs/PROTOCOL.md`
//! sections 3, 5.6, 6.4 and 9), and what a version-1 client still gets:
//!
//! - a version-2 client gets each handler's response, and the text of its errors
//!   (`spillway::client::Client`, which speaks version 2);
//! - a version-1 client, from raw bytes, gets version-1 frames byte for byte: Replies of 20
//!   bytes of body, no response, no detail, and `handler_error` for a response too large;
//! - a response over the limit fails `response_too_large`, decided by the engine, and every
//!   count reconciles exactly; a server whose frames are smaller than the engine's response
//!   limit fails the Reply itself, counted, and never writes a frame over its limit;
//! - the send buffer bounds reply bytes (`egress.buffer_bytes`) as it bounds replies: a
//!   reader too slow for large responses is told to pause and has Replies dropped, every
//!   Submit accounted for, long before the reply count could fill the buffer.

mod net_support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use net_support::{one_shard, Running, READ_TIMEOUT};
use spillway::client::{BackoffConfig, Client, ClientConfig, ClientEvent, ClientReply};
use spillway::config::{EgressConfig, NetConfig};
use spillway::handler::HandlerError;
use spillway::message::{Bytes, Message, MessageId, Priority, Role, TenantId};
use spillway::net::protocol::{
    ClientFrame, Decoder, FrameLimit, ProtocolVersion, ServerFrame, ServerToClient, Submit,
    ERROR_DETAIL_MAX_BYTES, HEADER_BYTES,
};
use spillway::net::server::ServerConfig;
use spillway::outcome::{FailureReason, Outcome};

/// A handler that answers by the payload: `invalid ...` and `fail ...` are refused with the
/// text after the word, `long` is refused with 400 bytes of text, `size N` answers N bytes
/// of `z`, anything else is echoed reversed (a new buffer), or as a slice of itself when it
/// starts with `slice`.
fn answer(message: &Message) -> Result<Bytes, HandlerError> {
    let text = std::str::from_utf8(&message.payload).unwrap_or("");
    if let Some(rest) = text.strip_prefix("invalid ") {
        return Err(HandlerError::invalid(rest));
    }
    if let Some(rest) = text.strip_prefix("fail ") {
        return Err(HandlerError::failed(rest));
    }
    if text == "long" {
        return Err(HandlerError::failed("é".repeat(200)));
    }
    if let Some(size) = text.strip_prefix("size ") {
        return Ok(Bytes::from(vec![b'z'; size.parse().unwrap()]));
    }
    if text.starts_with("slice") {
        return Ok(message.payload.slice(5..));
    }
    let mut reversed = message.payload.to_vec();
    reversed.reverse();
    Ok(Bytes::from(reversed))
}

fn request(id: u64, payload: &[u8]) -> Submit<'_> {
    Submit {
        message_id: MessageId(id),
        tenant: TenantId(0),
        priority: Priority::P1,
        role: Role::Session,
        payload,
    }
}

/// One shard, no rate limit: the tests send faster than 500 messages a second.
fn unlimited() -> spillway::config::Config {
    let mut config = one_shard();
    config.levels.rate_limit = false;
    config
}

fn send(client: &mut Client, id: u64, payload: &[u8]) -> ClientReply {
    client
        .send_with_backpressure(request(id, payload), &BackoffConfig::default())
        .expect("a final reply")
}

#[test]
fn a_handlers_response_and_an_invalid_requests_detail_reach_a_version_2_client() {
    let running = Running::start_handler(ServerConfig::default(), unlimited(), answer);
    let mut client = Client::connect(running.addr(), ClientConfig::default()).unwrap();
    assert_eq!(client.protocol_version(), ProtocolVersion::V2);

    let reply = send(&mut client, 1, b"hello");
    assert_eq!(reply.outcome, Outcome::Delivered);
    assert_eq!(&reply.response[..], b"olleh");
    assert_eq!(reply.detail, None);

    let reply = send(&mut client, 2, b"slice of the payload");
    assert_eq!(&reply.response[..], b" of the payload");

    // An empty response is a response: delivered, no bytes.
    let reply = send(&mut client, 3, b"");
    assert_eq!(
        (reply.outcome, reply.response.len()),
        (Outcome::Delivered, 0)
    );

    let reply = send(&mut client, 4, b"invalid bad json at byte 3");
    assert_eq!(
        reply.outcome,
        Outcome::Failed {
            reason: FailureReason::InvalidRequest
        }
    );
    assert_eq!(reply.detail.unwrap().as_str(), "bad json at byte 3");
    assert!(reply.response.is_empty());

    let reply = send(&mut client, 5, b"fail the database is down");
    assert_eq!(
        reply.outcome,
        Outcome::Failed {
            reason: FailureReason::HandlerError
        }
    );
    assert_eq!(reply.detail.unwrap().as_str(), "the database is down");

    // A long text reaches the client cut to 256 bytes at a character boundary.
    let reply = send(&mut client, 6, b"long");
    let detail = reply.detail.unwrap();
    assert_eq!(detail.as_str(), "é".repeat(ERROR_DETAIL_MAX_BYTES / 2));

    // Pipelined, every Reply carries its own response.
    let payloads: Vec<String> = (0..100).map(|id| format!("message {id}")).collect();
    for (id, payload) in payloads.iter().enumerate() {
        client
            .submit(request(100 + id as u64, payload.as_bytes()))
            .unwrap();
    }
    let mut replies = 0;
    while replies < payloads.len() {
        match client.next_event(READ_TIMEOUT).unwrap() {
            Some(ClientEvent::Reply(reply)) => {
                let mut expected = payloads[(reply.message_id.0 - 100) as usize]
                    .as_bytes()
                    .to_vec();
                expected.reverse();
                assert_eq!(reply.response, expected);
                replies += 1;
            }
            Some(_) => {}
            None => panic!("no reply within {READ_TIMEOUT:?}"),
        }
    }
    let report = client.close(READ_TIMEOUT).unwrap();
    assert_eq!(report.unanswered, 0);
}

/// A raw version-1 connection: the bytes of `frame` in version 1.
fn v1(frame: ClientFrame<'_>) -> Vec<u8> {
    let mut bytes = Vec::new();
    frame
        .encode_in(ProtocolVersion::V1, FrameLimit::DEFAULT, &mut bytes)
        .unwrap();
    bytes
}

/// Reads exactly one frame's bytes from `stream`.
fn read_frame(stream: &mut TcpStream) -> Vec<u8> {
    let mut frame = vec![0; HEADER_BYTES];
    stream.read_exact(&mut frame).expect("a header");
    let body_bytes = u32::from_le_bytes(frame[4..8].try_into().unwrap()) as usize;
    frame.resize(HEADER_BYTES + body_bytes, 0);
    stream
        .read_exact(&mut frame[HEADER_BYTES..])
        .expect("a body");
    frame
}

#[test]
fn a_version_1_client_gets_version_1_frames_without_response_or_detail() {
    let mut config = unlimited();
    // A response of 5 bytes or more is too large: a version-1 client is told handler_error.
    config.net.max_response_bytes = Some(4);
    let running = Running::start_handler(ServerConfig::default(), config, answer);
    let mut stream = TcpStream::connect(running.addr()).unwrap();
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    stream.write_all(&v1(ClientFrame::Hello)).unwrap();
    let welcome = read_frame(&mut stream);
    // The version-1 Welcome: header, a connection id, 65,536 and 1000.
    assert_eq!(&welcome[..8], &[0x53, 0x57, 1, 0x81, 16, 0, 0, 0]);
    assert_eq!(&welcome[16..], &[0, 0, 1, 0, 0xe8, 3, 0, 0]);

    let cases: [(&[u8], [u8; 2]); 4] = [
        (b"abc", [1, 0]),
        (b"invalid bad json", [2, 4]),
        (b"fail down", [2, 1]),
        // Reversed, 6 bytes: over the limit of 4, failed response_too_large in the engine.
        (b"abcdef", [2, 1]),
    ];
    for (id, (payload, [outcome, reason])) in cases.into_iter().enumerate() {
        stream
            .write_all(&v1(ClientFrame::Submit(request(id as u64, payload))))
            .unwrap();
        let reply = read_frame(&mut stream);
        let mut expected = vec![0x53, 0x57, 1, 0x82, 20, 0, 0, 0];
        expected.extend_from_slice(&(id as u64).to_le_bytes());
        expected.extend_from_slice(&[outcome, reason, 0, 0]);
        expected.extend_from_slice(&[0; 8]);
        assert_eq!(reply, expected, "the version-1 Reply to {payload:?}");
    }
    drop(stream);

    // The library's client asks for version 1 when told to, and gets the outcomes alone.
    let mut client = Client::connect(
        running.addr(),
        ClientConfig {
            protocol_version: ProtocolVersion::V1,
            ..ClientConfig::default()
        },
    )
    .unwrap();
    let reply = send(&mut client, 9, b"abc");
    assert_eq!(
        (reply.outcome, reply.response.len(), reply.detail),
        (Outcome::Delivered, 0, None)
    );
    let reply = send(&mut client, 10, b"invalid bad json");
    assert_eq!(reply.detail, None);
    client.close(READ_TIMEOUT).unwrap();

    let (_, stats) = running.stop();
    assert_eq!(
        stats.total.failed[FailureReason::ResponseTooLarge.index()],
        1
    );
    assert!(stats.total.reconciles());
}

#[test]
fn a_response_over_the_limit_fails_response_too_large_and_every_count_reconciles() {
    // The default limits: 64 KiB frames, so responses of up to 65,508 bytes.
    let limit = FrameLimit::DEFAULT.max_response_bytes() as usize;
    assert_eq!(limit, 65_508);
    let running = Running::start_handler(ServerConfig::default(), unlimited(), answer);
    let mut client = Client::connect(running.addr(), ClientConfig::default()).unwrap();
    let sizes = [0, 1, limit - 1, limit, limit + 1, 1 << 20, limit, limit + 1];
    let (mut delivered, mut too_large) = (0, 0);
    for (id, size) in sizes.into_iter().enumerate() {
        let reply = send(&mut client, id as u64, format!("size {size}").as_bytes());
        if size <= limit {
            assert_eq!(reply.outcome, Outcome::Delivered, "{size} bytes");
            assert_eq!(reply.response.len(), size);
            assert!(reply.response.iter().all(|&byte| byte == b'z'));
            delivered += 1;
        } else {
            assert_eq!(
                reply.outcome,
                Outcome::Failed {
                    reason: FailureReason::ResponseTooLarge
                },
                "{size} bytes"
            );
            assert!(reply.response.is_empty());
            let detail = reply.detail.expect("the failure says why");
            assert!(
                detail.as_str().contains(&format!("{size} bytes")),
                "{detail}"
            );
            too_large += 1;
        }
    }
    client.close(READ_TIMEOUT).unwrap();
    let (net, stats) = running.stop();
    let total = stats.total;
    assert!(total.reconciles(), "{total:?}");
    assert_eq!(total.submitted, sizes.len() as u64);
    assert_eq!(total.admitted, sizes.len() as u64);
    assert_eq!(total.delivered, delivered);
    assert_eq!(
        total.failed[FailureReason::ResponseTooLarge.index()],
        too_large
    );
    assert_eq!(total.failed_total(), too_large);
    assert_eq!(net.replies_sent, sizes.len() as u64);
    // The engine decided every one: the server had nothing to cut.
    assert_eq!(net.responses_too_large, 0);
}

#[test]
fn a_server_with_frames_smaller_than_the_engines_response_limit_fails_the_reply_itself() {
    // The engine allows 65,508 bytes; this server's frames are 1 KiB. No frame over 1 KiB is
    // ever written: the client's decoder, at the Welcome's limit, would refuse it.
    let server_config = ServerConfig {
        net: NetConfig {
            max_frame_bytes: 1024,
            ..NetConfig::default()
        },
        ..ServerConfig::default()
    };
    let running = Running::start_handler(server_config, unlimited(), answer);
    let mut client = Client::connect(running.addr(), ClientConfig::default()).unwrap();
    assert_eq!(client.frame_limit().max_frame_bytes(), 1024);
    let reply = send(&mut client, 1, b"size 996");
    assert_eq!(
        (reply.outcome, reply.response.len()),
        (Outcome::Delivered, 996)
    );
    let reply = send(&mut client, 2, b"size 997");
    assert_eq!(
        reply.outcome,
        Outcome::Failed {
            reason: FailureReason::ResponseTooLarge
        }
    );
    assert!(reply.detail.is_some());
    // The connection goes on.
    assert_eq!(send(&mut client, 3, b"ab").response, &b"ba"[..]);
    client.close(READ_TIMEOUT).unwrap();
    let (net, stats) = running.stop();
    assert_eq!(net.responses_too_large, 1);
    // The engine delivered it (its limit allowed it); the server says so in its own count.
    assert_eq!(stats.total.delivered, 3);
    assert!(stats.total.reconciles());
}

#[test]
fn the_send_buffer_bounds_reply_bytes_as_it_bounds_replies() {
    // 1000 replies or 64 KiB of them: with responses of 4000 bytes the bytes bind at 16
    // replies, 1.6% of the count, where the count alone would never even throttle.
    const RESPONSE_BYTES: usize = 4000;
    const SUBMITS: u64 = 20_000;
    let server_config = ServerConfig {
        net: NetConfig {
            write_buffer_bytes_max: 8192,
            ..NetConfig::default()
        },
        egress: EgressConfig {
            buffer_bytes: 64 * 1024,
            ..EgressConfig::default()
        },
    };
    let mut config = unlimited();
    // Room for every Submit in the queues, so that each is delivered with its response.
    config.caps.connection_messages = 1 << 20;
    config.caps.role_messages = [1 << 20; 6];
    config.caps.handler_queue = 1 << 20;
    let running = Running::start_handler(server_config, config, answer);
    let mut stream = TcpStream::connect(running.addr()).unwrap();
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    let mut wire = Vec::new();
    ClientFrame::Hello
        .encode(FrameLimit::DEFAULT, &mut wire)
        .unwrap();
    let payload = format!("size {RESPONSE_BYTES}");
    for id in 0..SUBMITS {
        ClientFrame::Submit(request(id, payload.as_bytes()))
            .encode(FrameLimit::DEFAULT, &mut wire)
            .unwrap();
    }
    // Deaf while it writes: a thread writes, this one reads nothing until drops are counted.
    let mut writer = stream.try_clone().unwrap();
    let writing = std::thread::spawn(move || {
        let _ = writer.write_all(&wire);
    });
    running.wait_up_to(Duration::from_secs(30), "dropped replies", |stats| {
        stats.replies_dropped_total() > 0
    });

    let mut decoder =
        Decoder::<ServerToClient>::with_version(FrameLimit::DEFAULT, ProtocolVersion::V2);
    let (mut replies, mut dropped, mut pauses) = (0u64, 0u64, 0u64);
    let started = Instant::now();
    let mut buffer = vec![0; 1 << 16];
    while replies + dropped < SUBMITS {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{replies} + {dropped}"
        );
        while let Some(frame) = decoder.next_frame().expect("valid frames") {
            match frame {
                ServerFrame::Reply {
                    outcome, response, ..
                } => {
                    assert_eq!(outcome, Outcome::Delivered);
                    assert_eq!(response.len(), RESPONSE_BYTES);
                    replies += 1;
                }
                ServerFrame::RepliesDropped { count } => dropped += count.get(),
                ServerFrame::Pause { .. } => pauses += 1,
                _ => {}
            }
        }
        if replies + dropped == SUBMITS {
            break;
        }
        let read = stream.read(&mut buffer).unwrap_or_else(|error| {
            panic!(
                "reading after {replies} replies and {dropped} dropped: {error}; {:?}",
                running.server.stats()
            )
        });
        assert!(
            read > 0,
            "closed after {replies} replies and {dropped} dropped"
        );
        decoder.feed(&buffer[..read]);
    }
    writing.join().unwrap();
    assert_eq!(
        replies + dropped,
        SUBMITS,
        "every Submit has a Reply or a drop"
    );
    assert!(dropped > 0);
    assert!(pauses > 0, "the bytes' fill paused the client");
    drop(stream);
    let (net, stats) = running.stop();
    assert_eq!(net.replies_dropped_total(), dropped);
    assert_eq!(stats.total.delivered, SUBMITS);
}

#[test]
fn every_test_the_protocol_page_names_in_this_file_exists() {
    let page = include_str!("../../docs/PROTOCOL.md");
    let source = include_str!("net_v2.rs");
    let named: Vec<&str> = page
        .split("net_v2.rs: ")
        .skip(1)
        .filter_map(|rest| rest.split('`').next())
        .collect();
    assert!(named.len() >= 5, "{named:?}");
    for name in named {
        assert!(
            source.contains(&format!("fn {name}(")),
            "docs/PROTOCOL.md names `net_v2.rs: {name}`, which is not a test here"
        );
    }
}
