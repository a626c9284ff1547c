//! The wire codec (`spillway::net::protocol`) on hand-made cases: the worked examples of
//! `docs/PROTOCOL.md` as the encoder writes them, every frame and code round-tripping, each
//! check of a header and of a body with the error it gives, the handshake order, a frame
//! cut short, a spent decoder, the Error replies, which frame the decoder is waiting on, and
//! payloads taken from shared chunks of a read buffer without a copy; and version 2: the
//! Reply's response and detail, the checks on them, and the version each side settles on.
//! (`protocol.rs` beside it holds the property tests and the page's code tables.)
//!
//! The cases are in version 1 unless they say otherwise: the versions differ in the Reply
//! alone, and version 1 is what a client written for it keeps sending.

use std::num::{NonZeroU32, NonZeroU64};

use spillway::message::{Bytes, ConnectionId, MessageId, Priority, Role, TenantId};
use spillway::net::protocol::{
    encode_error_reply, ClientFrame, ClientToServer, Decoder, ErrorCode, FrameLimit, FrameTooLarge,
    FrameType, ProtocolError, ProtocolVersion, ServerFrame, ServerToClient, Submit, WireCode,
    ERROR_DETAIL_MAX_BYTES, HEADER_BYTES, MAGIC,
};
use spillway::outcome::{DropReason, FailureReason, Outcome, RefusalReason, ShedReason};

/// Bytes from hex pairs separated by spaces or `|` (the notation of the worked examples
/// in `docs/PROTOCOL.md`).
fn hex(text: &str) -> Vec<u8> {
    text.split(|c: char| c.is_whitespace() || c == '|')
        .filter(|pair| !pair.is_empty())
        .map(|pair| u8::from_str_radix(pair, 16).unwrap())
        .collect()
}

/// `frame` in version 1.
fn encode_client(frame: ClientFrame<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    frame
        .encode_in(ProtocolVersion::V1, FrameLimit::DEFAULT, &mut out)
        .unwrap();
    out
}

/// `frame` in version 1.
fn encode_server(frame: ServerFrame<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    frame.encode_in(ProtocolVersion::V1, &mut out);
    out
}

/// `frame` in version 2, the newest (what `encode` writes).
fn encode_client_v2(frame: ClientFrame<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    frame.encode(FrameLimit::DEFAULT, &mut out).unwrap();
    out
}

/// `frame` in version 2, the newest (what `encode` writes).
fn encode_server_v2(frame: ServerFrame<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    assert_eq!(frame.encode(&mut out), frame.encoded_bytes());
    out
}

/// A client decoder of a version-2 connection that has taken its Welcome.
fn greeted_client_decoder_v2() -> Decoder<ServerToClient> {
    let mut decoder = Decoder::with_version(FrameLimit::DEFAULT, ProtocolVersion::V2);
    decoder.feed(&encode_server_v2(welcome()));
    assert_eq!(decoder.next_frame(), Ok(Some(welcome())));
    decoder
}

/// A Reply to message 42 with no data: delivered, or `failed` with `reason`.
fn reply_42(outcome: Outcome) -> ServerFrame<'static> {
    ServerFrame::Reply {
        message_id: MessageId(42),
        outcome,
        response: &[],
        detail: "",
    }
}

fn server_decoder() -> Decoder<ClientToServer> {
    Decoder::new(FrameLimit::DEFAULT)
}

/// A server decoder that has already taken the Hello.
fn greeted_server_decoder() -> Decoder<ClientToServer> {
    let mut decoder = server_decoder();
    decoder.feed(&encode_client(ClientFrame::Hello));
    assert_eq!(decoder.next_frame(), Ok(Some(ClientFrame::Hello)));
    decoder
}

fn client_decoder() -> Decoder<ServerToClient> {
    Decoder::new(FrameLimit::DEFAULT)
}

fn welcome() -> ServerFrame<'static> {
    ServerFrame::Welcome {
        connection: ConnectionId(7),
        frame_limit: FrameLimit::DEFAULT,
        send_buffer_replies: NonZeroU32::new(1000).unwrap(),
    }
}

/// A client decoder that has already taken the Welcome.
fn greeted_client_decoder() -> Decoder<ServerToClient> {
    let mut decoder = client_decoder();
    decoder.feed(&encode_server(welcome()));
    assert_eq!(decoder.next_frame(), Ok(Some(welcome())));
    decoder
}

fn header(version: u8, frame_type: u8, body_bytes: u32) -> Vec<u8> {
    let mut bytes = MAGIC.to_vec();
    bytes.push(version);
    bytes.push(frame_type);
    bytes.extend_from_slice(&body_bytes.to_le_bytes());
    bytes
}

const SUBMIT_EXAMPLE: &str = "53 57 01 02 15 00 00 00 | 2a 00 00 00 00 00 00 00 | 03 00 00 00 | 01 | 01 | 00 00 | 68 65 6c 6c 6f";

fn submit_example() -> ClientFrame<'static> {
    ClientFrame::Submit(Submit {
        message_id: MessageId(42),
        tenant: TenantId(3),
        priority: Priority::P1,
        role: Role::Session,
        payload: b"hello",
    })
}

#[test]
fn the_worked_examples_of_the_protocol_page_are_what_the_encoder_writes() {
    // Version 2.
    assert_eq!(
        encode_client_v2(ClientFrame::Hello),
        hex("53 57 02 01 00 00 00 00")
    );
    assert_eq!(
        encode_server_v2(welcome()),
        hex("53 57 02 81 10 00 00 00 | 07 00 00 00 00 00 00 00 | 00 00 01 00 | e8 03 00 00")
    );
    // The Submit example in version 2 (as the page has it); the other cases use it in 1.
    let mut submit_v2 = hex(SUBMIT_EXAMPLE);
    submit_v2[2] = 2;
    assert_eq!(encode_client_v2(submit_example()), submit_v2);
    assert_eq!(encode_client(submit_example()), hex(SUBMIT_EXAMPLE));
    assert_eq!(
        encode_server_v2(ServerFrame::Reply {
            message_id: MessageId(42),
            outcome: Outcome::Delivered,
            response: b"world",
            detail: "",
        }),
        hex("53 57 02 82 19 00 00 00 | 2a 00 00 00 00 00 00 00 | 01 | 00 | 00 00 | 00 00 00 00 00 00 00 00 | 77 6f 72 6c 64")
    );
    assert_eq!(
        encode_server_v2(reply_42(Outcome::Refused {
            reason: RefusalReason::RateLimited,
            retry_after_ns: 2_000_000,
        })),
        hex("53 57 02 82 14 00 00 00 | 2a 00 00 00 00 00 00 00 | 03 | 01 | 00 00 | 80 84 1e 00 00 00 00 00")
    );
    assert_eq!(
        encode_server_v2(ServerFrame::Reply {
            message_id: MessageId(42),
            outcome: Outcome::Failed {
                reason: FailureReason::InvalidRequest,
            },
            response: &[],
            detail: "bad json",
        }),
        hex("53 57 02 82 1c 00 00 00 | 2a 00 00 00 00 00 00 00 | 02 | 04 | 00 00 | 00 00 00 00 00 00 00 00 | 62 61 64 20 6a 73 6f 6e")
    );
    // Version 1: the same handshake, and the delivered Reply without its response.
    assert_eq!(
        encode_client(ClientFrame::Hello),
        hex("53 57 01 01 00 00 00 00")
    );
    assert_eq!(
        encode_server(welcome()),
        hex("53 57 01 81 10 00 00 00 | 07 00 00 00 00 00 00 00 | 00 00 01 00 | e8 03 00 00")
    );
    assert_eq!(
        encode_server(ServerFrame::Reply {
            message_id: MessageId(42),
            outcome: Outcome::Delivered,
            response: b"world",
            detail: "",
        }),
        hex("53 57 01 82 14 00 00 00 | 2a 00 00 00 00 00 00 00 | 01 | 00 | 00 00 | 00 00 00 00 00 00 00 00")
    );
    // Before a Hello settles the version, an Error is in version 1.
    let mut out = Vec::new();
    encode_error_reply(
        &ProtocolError::BadMagic { found: *b"GE" },
        ProtocolVersion::V1,
        &mut out,
    );
    assert_eq!(
        &out[..10],
        hex("53 57 01 88 39 00 00 00 | 01 00").as_slice()
    );
    assert_eq!(
        core::str::from_utf8(&out[10..]).unwrap(),
        "bad magic [47, 45]: a frame starts with [53, 57] (\"SW\")"
    );
}

#[test]
fn the_submit_example_decodes_to_its_fields() {
    let mut decoder = greeted_server_decoder();
    decoder.feed(&hex(SUBMIT_EXAMPLE));
    assert_eq!(decoder.next_frame(), Ok(Some(submit_example())));
    let Some(ClientFrame::Submit(submit)) = ({
        decoder.feed(&hex(SUBMIT_EXAMPLE));
        decoder.next_frame().unwrap()
    }) else {
        panic!("not a submit");
    };
    let message = submit.to_message(ConnectionId(9));
    assert_eq!(message.connection, ConnectionId(9));
    assert_eq!(message.id, MessageId(42));
    assert_eq!(message.tenant, TenantId(3));
    assert_eq!(message.priority, Priority::P1);
    assert_eq!(message.role, Role::Session);
    assert_eq!(&message.payload[..], b"hello");
}

#[test]
fn several_frames_in_one_read_and_one_frame_over_many_reads() {
    let frames = [
        ClientFrame::Hello,
        submit_example(),
        ClientFrame::Cancel {
            message_id: MessageId(42),
        },
        ClientFrame::Ping { nonce: u64::MAX },
    ];
    let wire: Vec<u8> = frames
        .iter()
        .flat_map(|frame| encode_client(*frame))
        .collect();

    let mut whole = server_decoder();
    whole.feed(&wire);
    for frame in frames {
        assert_eq!(whole.next_frame(), Ok(Some(frame)));
    }
    assert_eq!(whole.next_frame(), Ok(None));
    assert_eq!(whole.finish(), Ok(()));

    let mut byte_by_byte = server_decoder();
    let mut decoded = Vec::new();
    for byte in &wire {
        byte_by_byte.feed(core::slice::from_ref(byte));
        while let Some(frame) = byte_by_byte.next_frame().unwrap() {
            decoded.push(encode_client(frame));
        }
    }
    assert_eq!(decoded.concat(), wire);
    assert_eq!(byte_by_byte.buffered_bytes(), 0);
}

#[test]
fn reading_into_unfilled_space_decodes_like_feed() {
    let wire = [encode_client(ClientFrame::Hello), hex(SUBMIT_EXAMPLE)].concat();
    let mut decoder = server_decoder();
    for chunk in wire.chunks(3) {
        let space = decoder.unfilled(3);
        assert!(space.len() >= 3);
        space[..chunk.len()].copy_from_slice(chunk);
        decoder.commit(chunk.len());
    }
    assert_eq!(decoder.next_frame(), Ok(Some(ClientFrame::Hello)));
    assert_eq!(decoder.next_frame(), Ok(Some(submit_example())));
    assert_eq!(decoder.next_frame(), Ok(None));
    decoder.shrink_to_fit();
    assert_eq!(decoder.finish(), Ok(()));
}

/// The Submit `decoder` decodes next, with its message on connection 1 as the server makes
/// it (payload from the chunk when there is one), and whether a chunk came with it.
fn next_message(decoder: &mut Decoder<ClientToServer>) -> (spillway::message::Message, bool) {
    let decoded = decoder.next_shared_frame().unwrap().expect("a whole frame");
    let ClientFrame::Submit(submit) = decoded.frame else {
        panic!("a Submit, got {:?}", decoded.frame);
    };
    let message = submit.to_message_in(ConnectionId(1), decoded.chunk);
    (message, decoded.chunk.is_some())
}

/// Whether `part` lies in `whole`'s memory.
fn lies_in(part: &[u8], whole: &[u8]) -> bool {
    let (part, whole) = (part.as_ptr_range(), whole.as_ptr_range());
    whole.start <= part.start && part.end <= whole.end
}

#[test]
fn a_submit_whole_in_a_shared_chunk_gives_its_payload_without_a_copy() {
    let submit = hex(SUBMIT_EXAMPLE);
    let read = Bytes::from([submit.clone(), submit.clone()].concat());
    let mut decoder = greeted_server_decoder();
    decoder.feed_shared(read.clone());
    for _ in 0..2 {
        let (message, shared) = next_message(&mut decoder);
        assert!(shared);
        assert_eq!(&message.payload[..], b"hello");
        assert!(lies_in(&message.payload, &read), "copied");
        assert_eq!(message.id, MessageId(42));
        assert_eq!(message.tenant, TenantId(3));
    }
    assert_eq!(decoder.next_frame(), Ok(None));

    // Fed by `feed`, there is no chunk, and the payload is copied.
    let mut decoder = greeted_server_decoder();
    decoder.feed(&read);
    let (message, shared) = next_message(&mut decoder);
    assert!(!shared);
    assert!(!lies_in(&message.payload, &read));
    assert_eq!(&message.payload[..], b"hello");

    // A buffer the payload is not in is not shared (and does not panic): copied.
    let Ok(Some(ClientFrame::Submit(submit))) = decoder.next_frame() else {
        panic!("the second Submit");
    };
    let elsewhere = Bytes::from_static(b"some other buffer");
    let message = submit.to_message_in(ConnectionId(1), Some(&elsewhere));
    assert_eq!(&message.payload[..], b"hello");
    assert!(!lies_in(&message.payload, &elsewhere));
}

#[test]
fn a_submit_cut_by_two_reads_is_copied_and_the_frames_after_it_are_shared() {
    let submit = hex(SUBMIT_EXAMPLE);
    let wire = [submit.clone(), submit.clone(), submit.clone()].concat();
    // Reads: the first Submit and half the second; the rest.
    let cut = submit.len() + 12;
    let (first, second) = (
        Bytes::copy_from_slice(&wire[..cut]),
        Bytes::copy_from_slice(&wire[cut..]),
    );
    let mut decoder = greeted_server_decoder();
    decoder.feed_shared(first.clone());
    let (message, shared) = next_message(&mut decoder);
    assert!(shared && lies_in(&message.payload, &first));
    assert_eq!(decoder.next_frame(), Ok(None));
    assert_eq!(
        decoder.buffered_bytes(),
        12,
        "the start of the second Submit"
    );
    assert_eq!(decoder.frame_in_progress(), Some(2));

    decoder.feed_shared(second.clone());
    assert_eq!(decoder.buffered_bytes(), wire.len() - submit.len());
    assert_eq!(
        decoder.frame_in_progress(),
        None,
        "a whole frame comes first"
    );
    let (message, shared) = next_message(&mut decoder);
    assert!(
        !shared,
        "the cut Submit is assembled in the decoder's own buffer"
    );
    assert!(!lies_in(&message.payload, &first) && !lies_in(&message.payload, &second));
    assert_eq!(&message.payload[..], b"hello");
    let (message, shared) = next_message(&mut decoder);
    assert!(shared && lies_in(&message.payload, &second));
    assert_eq!(decoder.next_frame(), Ok(None));
    assert_eq!(decoder.finish(), Ok(()));
}

#[test]
fn a_read_buffer_is_freed_when_the_last_message_sharing_it_is_dropped() {
    let submit = hex(SUBMIT_EXAMPLE);
    let read = Bytes::from([submit.clone(), submit.clone()].concat());
    let mut decoder = greeted_server_decoder();
    decoder.feed_shared(read.clone());
    let (first, _) = next_message(&mut decoder);
    let (second, _) = next_message(&mut decoder);
    // The decoder lets its chunk go once it finds nothing more in it.
    assert_eq!(decoder.next_frame(), Ok(None));
    assert!(!read.is_unique(), "the messages hold it");
    drop(first);
    assert!(!read.is_unique());
    drop(second);
    assert!(read.is_unique(), "nothing but this handle holds it");

    // Bytes left in a chunk are copied out by `shrink_to_fit` (and by `feed`), so an idle
    // decoder does not keep the read buffer alive.
    let read = Bytes::from(submit[..10].to_vec());
    decoder.feed_shared(read.clone());
    assert!(!read.is_unique());
    decoder.shrink_to_fit();
    assert!(read.is_unique());
    assert_eq!(decoder.buffered_bytes(), 10);
    decoder.feed(&submit[10..]);
    let (message, shared) = next_message(&mut decoder);
    assert!(!shared);
    assert_eq!(&message.payload[..], b"hello");
}

#[test]
#[should_panic(expected = "more than the unfilled space")]
fn committing_more_than_the_unfilled_space_is_a_caller_bug() {
    let mut decoder = server_decoder();
    let unfilled_bytes = decoder.unfilled(4).len();
    decoder.commit(unfilled_bytes + 1);
}

#[test]
fn every_server_frame_round_trips() {
    let mut frames = vec![
        welcome(),
        ServerFrame::Throttle {
            delay_ns: 250_000_000,
        },
        ServerFrame::Pause {
            duration_ns: 50_000_000,
        },
        ServerFrame::Resume,
        ServerFrame::RepliesDropped {
            count: NonZeroU64::new(3).unwrap(),
        },
        ServerFrame::Pong { nonce: 77 },
        ServerFrame::Error {
            code: ErrorCode::ShuttingDown,
            detail: "bye ✓",
        },
    ];
    let outcomes = [Outcome::Delivered, Outcome::Cancelled]
        .into_iter()
        .chain(FailureReason::ALL.map(|reason| Outcome::Failed { reason }))
        .chain(RefusalReason::ALL.map(|reason| Outcome::Refused {
            reason,
            retry_after_ns: 123,
        }))
        .chain(ShedReason::ALL.map(|reason| Outcome::Shed { reason }))
        .chain(DropReason::ALL.map(|reason| Outcome::Dropped { reason }));
    frames.extend(outcomes.map(|outcome| ServerFrame::Reply {
        message_id: MessageId(5),
        outcome,
        response: &[],
        detail: "",
    }));
    let mut decoder = client_decoder();
    for frame in frames {
        let wire = encode_server(frame);
        assert_eq!(wire.len(), frame.encoded_bytes());
        decoder.feed(&wire);
        assert_eq!(decoder.next_frame(), Ok(Some(frame)));
    }
    assert_eq!(decoder.finish(), Ok(()));
}

#[test]
fn every_code_round_trips_and_is_unique() {
    fn check<T: WireCode + PartialEq + core::fmt::Debug>(all: &[T]) {
        let mut seen = std::collections::HashSet::new();
        for &value in all {
            assert!(seen.insert(value.wire_code()), "{value:?} reuses a code");
            assert_eq!(T::from_wire_code(value.wire_code()), Some(value));
        }
        let unknown = (0..=u8::MAX)
            .filter(|code| T::from_wire_code(*code).is_none())
            .count();
        assert_eq!(unknown, 256 - all.len());
    }
    check(&Priority::ALL);
    check(&Role::ALL);
    check(&FailureReason::ALL);
    check(&RefusalReason::ALL);
    check(&ShedReason::ALL);
    check(&DropReason::ALL);
    for frame_type in FrameType::ALL {
        assert_eq!(FrameType::from_code(frame_type.code()), Some(frame_type));
    }
    assert_eq!(
        (0..=u8::MAX).filter_map(FrameType::from_code).count(),
        FrameType::ALL.len()
    );
    for (index, code) in ErrorCode::ALL.into_iter().enumerate() {
        assert_eq!(
            usize::from(code.code()),
            index + 1,
            "{code} is out of order"
        );
        assert_eq!(ErrorCode::from_code(code.code()), Some(code));
    }
    assert_eq!(ErrorCode::from_code(0), None);
    assert_eq!(ErrorCode::from_code(13), None);
}

#[test]
fn a_bad_header_is_refused_from_its_eight_bytes() {
    let cases = [
        (
            b"GET / HT".to_vec(),
            ProtocolError::BadMagic { found: *b"GE" },
        ),
        (
            header(3, 0x01, 0),
            ProtocolError::UnsupportedVersion { version: 3 },
        ),
        (
            header(1, 0x05, 0),
            ProtocolError::UnknownFrameType { code: 0x05 },
        ),
        (
            header(1, 0x00, 0),
            ProtocolError::UnknownFrameType { code: 0x00 },
        ),
        (
            header(1, 0x02, u32::MAX),
            ProtocolError::FrameTooLarge {
                frame_bytes: u64::from(u32::MAX) + 8,
                max_frame_bytes: 65_536,
            },
        ),
        (
            header(1, 0x01, 1),
            ProtocolError::BadLength {
                frame_type: FrameType::Hello,
                body_bytes: 1,
            },
        ),
        (
            header(1, 0x02, 15),
            ProtocolError::BadLength {
                frame_type: FrameType::Submit,
                body_bytes: 15,
            },
        ),
        (
            header(1, 0x04, 9),
            ProtocolError::BadLength {
                frame_type: FrameType::Ping,
                body_bytes: 9,
            },
        ),
        (
            header(1, 0x02, 16),
            ProtocolError::UnexpectedFrame {
                frame_type: FrameType::Submit,
                expected: "hello first",
            },
        ),
        (
            header(1, 0x82, 20),
            ProtocolError::UnexpectedFrame {
                frame_type: FrameType::Reply,
                expected: "a client frame",
            },
        ),
    ];
    for (bytes, expected) in cases {
        let mut decoder = server_decoder();
        decoder.feed(&bytes[..7]);
        assert_eq!(decoder.next_frame(), Ok(None), "{expected}");
        decoder.feed(&bytes[7..]);
        assert_eq!(decoder.next_frame(), Err(expected));
        assert_eq!(decoder.buffered_bytes(), 8, "the body is never awaited");
    }
}

#[test]
fn the_frame_limit_is_checked_against_header_plus_body() {
    let limit = FrameLimit::new(1024).unwrap();
    assert_eq!(limit.max_payload_bytes(), 1000);
    let payload = vec![0xAB; 1000];
    let submit = |payload| {
        ClientFrame::Submit(Submit {
            message_id: MessageId(1),
            tenant: TenantId(0),
            priority: Priority::P0,
            role: Role::Default,
            payload,
        })
    };
    let mut wire = Vec::new();
    assert_eq!(submit(&payload[..]).encode(limit, &mut wire), Ok(1024));
    assert_eq!(
        submit(&[0; 1001][..]).encode(limit, &mut Vec::new()),
        Err(FrameTooLarge {
            frame_bytes: 1025,
            max_frame_bytes: 1024,
        })
    );
    let mut decoder = Decoder::<ClientToServer>::new(limit);
    decoder.feed(&encode_client_v2(ClientFrame::Hello));
    decoder.feed(&wire);
    assert_eq!(decoder.next_frame(), Ok(Some(ClientFrame::Hello)));
    assert_eq!(decoder.next_frame(), Ok(Some(submit(&payload[..]))));

    let mut decoder = Decoder::<ClientToServer>::new(limit);
    decoder.feed(&encode_client(ClientFrame::Hello));
    decoder.feed(&header(1, 0x02, 1017));
    assert_eq!(decoder.next_frame(), Ok(Some(ClientFrame::Hello)));
    assert_eq!(
        decoder.next_frame(),
        Err(ProtocolError::FrameTooLarge {
            frame_bytes: 1025,
            max_frame_bytes: 1024,
        })
    );
}

#[test]
fn frame_limits_outside_their_range_cannot_be_made() {
    assert_eq!(FrameLimit::new(511), None);
    assert_eq!(FrameLimit::new(512), Some(FrameLimit::MIN));
    assert_eq!(FrameLimit::new(16 * 1024 * 1024), Some(FrameLimit::MAX));
    assert_eq!(FrameLimit::new(16 * 1024 * 1024 + 1), None);
    assert_eq!(FrameLimit::default().max_frame_bytes(), 65_536);
    assert_eq!(FrameLimit::DEFAULT.max_payload_bytes(), 65_512);
}

#[test]
fn bad_fields_of_a_submit_are_named() {
    let cases = [
        (12, 4, "priority", 4),
        (13, 6, "role", 6),
        (14, 1, "reserved", 1),
        (15, 1, "reserved", 256),
    ];
    for (offset, value, field, reported) in cases {
        let mut wire = hex(SUBMIT_EXAMPLE);
        wire[HEADER_BYTES + offset] = value;
        let mut decoder = greeted_server_decoder();
        decoder.feed(&wire);
        assert_eq!(
            decoder.next_frame(),
            Err(ProtocolError::BadField {
                frame_type: FrameType::Submit,
                field,
                value: reported,
            })
        );
    }
}

#[test]
fn bad_fields_of_server_frames_are_named() {
    let reply = |outcome: u8, reason: u8, reserved: u8, retry: u8| {
        let mut wire = header(1, 0x82, 20);
        wire.extend_from_slice(&5u64.to_le_bytes());
        wire.extend_from_slice(&[outcome, reason, reserved, 0, retry, 0, 0, 0, 0, 0, 0, 0]);
        wire
    };
    let welcome = |max_frame_bytes: u32, send_buffer_replies: u32| {
        let mut wire = header(1, 0x81, 16);
        wire.extend_from_slice(&7u64.to_le_bytes());
        wire.extend_from_slice(&max_frame_bytes.to_le_bytes());
        wire.extend_from_slice(&send_buffer_replies.to_le_bytes());
        wire
    };
    let with_body = |frame_type: u8, body: &[u8]| {
        [header(1, frame_type, body.len() as u32), body.to_vec()].concat()
    };
    let cases = [
        (reply(0, 0, 0, 0), FrameType::Reply, "outcome", 0),
        (reply(7, 0, 0, 0), FrameType::Reply, "outcome", 7),
        (reply(1, 1, 0, 0), FrameType::Reply, "reason", 1),
        (reply(5, 2, 0, 0), FrameType::Reply, "reason", 2),
        (reply(2, 0, 0, 0), FrameType::Reply, "reason", 0),
        (reply(2, 8, 0, 0), FrameType::Reply, "reason", 8),
        (reply(3, 13, 0, 0), FrameType::Reply, "reason", 13),
        (reply(4, 2, 0, 0), FrameType::Reply, "reason", 2),
        (reply(6, 4, 0, 0), FrameType::Reply, "reason", 4),
        (reply(1, 0, 0, 9), FrameType::Reply, "retry_after_ns", 9),
        (reply(6, 1, 0, 9), FrameType::Reply, "retry_after_ns", 9),
        (reply(1, 0, 1, 0), FrameType::Reply, "reserved", 1),
        (welcome(511, 1), FrameType::Welcome, "max_frame_bytes", 511),
        (
            welcome(65_536, 0),
            FrameType::Welcome,
            "send_buffer_replies",
            0,
        ),
        (
            with_body(0x86, &[0; 8]),
            FrameType::RepliesDropped,
            "count",
            0,
        ),
        (with_body(0x88, &[0, 0]), FrameType::Error, "code", 0),
        (with_body(0x88, &[13, 0]), FrameType::Error, "code", 13),
        (
            with_body(0x88, &[1, 0, b'o', b'k', 0xFF]),
            FrameType::Error,
            "detail",
            4,
        ),
    ];
    for (wire, frame_type, field, value) in cases {
        let mut decoder = if frame_type == FrameType::Welcome {
            client_decoder()
        } else {
            greeted_client_decoder()
        };
        decoder.feed(&wire);
        assert_eq!(
            decoder.next_frame(),
            Err(ProtocolError::BadField {
                frame_type,
                field,
                value,
            }),
            "{frame_type} {field}"
        );
    }
}

#[test]
fn frames_out_of_sequence_are_unexpected() {
    let mut decoder = greeted_server_decoder();
    decoder.feed(&encode_client(ClientFrame::Hello));
    assert_eq!(
        decoder.next_frame(),
        Err(ProtocolError::UnexpectedFrame {
            frame_type: FrameType::Hello,
            expected: "no second hello",
        })
    );

    let mut decoder = client_decoder();
    decoder.feed(&encode_server(ServerFrame::Resume));
    assert_eq!(
        decoder.next_frame(),
        Err(ProtocolError::UnexpectedFrame {
            frame_type: FrameType::Resume,
            expected: "welcome or error first",
        })
    );

    let mut decoder = greeted_client_decoder();
    assert!(decoder.handshake_done());
    decoder.feed(&encode_server(welcome()));
    assert_eq!(
        decoder.next_frame(),
        Err(ProtocolError::UnexpectedFrame {
            frame_type: FrameType::Welcome,
            expected: "no second welcome",
        })
    );

    let mut decoder = client_decoder();
    decoder.feed(&encode_client(ClientFrame::Hello));
    assert_eq!(
        decoder.next_frame(),
        Err(ProtocolError::UnexpectedFrame {
            frame_type: FrameType::Hello,
            expected: "a server frame",
        })
    );

    // A server may refuse a connection with an Error before any Welcome.
    let mut decoder = client_decoder();
    let refusal = ServerFrame::Error {
        code: ErrorCode::TooManyConnections,
        detail: "",
    };
    decoder.feed(&encode_server(refusal));
    assert_eq!(decoder.next_frame(), Ok(Some(refusal)));
    assert!(!decoder.handshake_done());
}

#[test]
fn a_frame_cut_short_is_truncated_at_close_and_held_open_until_then() {
    let wire = hex(SUBMIT_EXAMPLE);
    let mut decoder = greeted_server_decoder();
    decoder.feed(&wire[..wire.len() - 1]);
    assert_eq!(decoder.next_frame(), Ok(None));
    assert_eq!(decoder.buffered_bytes(), wire.len() - 1);
    assert_eq!(
        decoder.finish(),
        Err(ProtocolError::Truncated {
            buffered_bytes: wire.len() as u64 - 1,
        })
    );
    assert_eq!(decoder.finish().unwrap_err().code(), ErrorCode::Truncated);

    let mut decoder = server_decoder();
    decoder.feed(&[0x53]);
    assert_eq!(
        decoder.finish(),
        Err(ProtocolError::Truncated { buffered_bytes: 1 })
    );
}

#[test]
fn after_an_error_the_decoder_is_spent() {
    let mut decoder = server_decoder();
    decoder.feed(b"\x00\x00garbage");
    let error = ProtocolError::BadMagic { found: [0, 0] };
    assert_eq!(decoder.next_frame(), Err(error));
    decoder.feed(&encode_client(ClientFrame::Hello));
    assert_eq!(
        decoder.buffered_bytes(),
        9,
        "bytes after a failure are not kept"
    );
    assert_eq!(decoder.next_frame(), Err(error));
    assert_eq!(decoder.finish(), Err(error));
    assert_eq!(decoder.failure(), Some(error));
}

#[test]
fn error_replies_carry_the_code_and_a_bounded_detail() {
    let errors = [
        ProtocolError::BadMagic { found: [1, 2] },
        ProtocolError::UnsupportedVersion { version: 9 },
        ProtocolError::UnknownFrameType { code: 0x7F },
        ProtocolError::FrameTooLarge {
            frame_bytes: 1 << 32,
            max_frame_bytes: 65_536,
        },
        ProtocolError::BadLength {
            frame_type: FrameType::Cancel,
            body_bytes: 3,
        },
        ProtocolError::BadField {
            frame_type: FrameType::Submit,
            field: "role",
            value: 200,
        },
        ProtocolError::UnexpectedFrame {
            frame_type: FrameType::Hello,
            expected: "no second hello",
        },
        ProtocolError::Truncated { buffered_bytes: 3 },
    ];
    for error in errors {
        let mut out = Vec::new();
        let written = encode_error_reply(&error, ProtocolVersion::V1, &mut out);
        assert_eq!(written, out.len());
        let version = match error {
            ProtocolError::UnsupportedVersion { version } => version,
            _ => 1,
        };
        assert_eq!(out[2], version);
        if version == 1 {
            let mut decoder = client_decoder();
            decoder.feed(&out);
            let detail = error.to_string();
            assert_eq!(
                decoder.next_frame(),
                Ok(Some(ServerFrame::Error {
                    code: error.code(),
                    detail: &detail,
                }))
            );
        } else {
            assert_eq!(
                &out[3..],
                &encode_server(ServerFrame::Error {
                    code: ErrorCode::UnsupportedVersion,
                    detail: &error.to_string(),
                })[3..]
            );
        }
    }
}

#[test]
fn a_long_detail_is_cut_at_a_character_boundary() {
    let long = "é".repeat(200); // 400 bytes of 2-byte characters
    let frame = ServerFrame::Error {
        code: ErrorCode::Disconnected,
        detail: &long,
    };
    let wire = encode_server(frame);
    assert_eq!(wire.len(), frame.encoded_bytes());
    assert_eq!(wire.len(), HEADER_BYTES + 2 + ERROR_DETAIL_MAX_BYTES);
    let mut decoder = client_decoder();
    decoder.feed(&wire);
    assert_eq!(
        decoder.next_frame(),
        Ok(Some(ServerFrame::Error {
            code: ErrorCode::Disconnected,
            detail: &long[..ERROR_DETAIL_MAX_BYTES],
        }))
    );
    // 3-byte characters: 256 is not a boundary, so the cut falls at 255.
    let long = "€".repeat(100);
    let wire = encode_server(ServerFrame::Error {
        code: ErrorCode::Disconnected,
        detail: &long,
    });
    assert_eq!(wire.len(), HEADER_BYTES + 2 + 255);
}

#[test]
fn the_frame_in_progress_is_named_until_it_completes_and_the_next_has_its_own_number() {
    let mut decoder = server_decoder();
    assert_eq!(decoder.frame_in_progress(), None, "nothing held");
    let hello = encode_client(ClientFrame::Hello);
    decoder.feed(&hello[..3]);
    assert_eq!(decoder.frame_in_progress(), Some(0), "part of a header");
    decoder.feed(&hello[3..]);
    assert_eq!(
        decoder.frame_in_progress(),
        None,
        "a whole frame waits to be taken"
    );
    assert_eq!(decoder.next_frame(), Ok(Some(ClientFrame::Hello)));

    // One read completes a Submit and begins the next: the partial frame is a new one.
    let submit = hex(SUBMIT_EXAMPLE);
    decoder.feed(&submit[..20]);
    assert_eq!(decoder.frame_in_progress(), Some(1));
    decoder.feed(&submit[20..]);
    decoder.feed(&submit[..10]);
    assert_eq!(
        decoder.frame_in_progress(),
        None,
        "the whole Submit comes first"
    );
    assert_eq!(decoder.next_frame(), Ok(Some(submit_example())));
    assert_eq!(decoder.next_frame(), Ok(None));
    assert_eq!(decoder.frame_in_progress(), Some(2));

    // A header that fails its checks is no frame in progress: next_frame reports it.
    let mut decoder = server_decoder();
    decoder.feed(&header(1, 0x02, u32::MAX));
    assert_eq!(decoder.frame_in_progress(), None);
    assert!(decoder.next_frame().is_err());
    assert_eq!(
        decoder.frame_in_progress(),
        None,
        "a spent decoder awaits nothing"
    );
}

#[test]
fn a_version_2_reply_carries_the_response_or_the_detail_its_outcome_has() {
    let response = [0xAB; 700];
    let failed = Outcome::Failed {
        reason: FailureReason::ResponseTooLarge,
    };
    let frames = [
        ServerFrame::Reply {
            message_id: MessageId(1),
            outcome: Outcome::Delivered,
            response: &response,
            detail: "",
        },
        reply_42(Outcome::Delivered),
        ServerFrame::Reply {
            message_id: MessageId(2),
            outcome: failed,
            response: &[],
            detail: "the response of 70000 bytes exceeds ✓",
        },
        reply_42(failed),
        reply_42(Outcome::Cancelled),
    ];
    let mut decoder = greeted_client_decoder_v2();
    for frame in frames {
        let wire = encode_server_v2(frame);
        decoder.feed(&wire);
        assert_eq!(decoder.next_frame(), Ok(Some(frame)));
    }
    assert_eq!(decoder.finish(), Ok(()));

    // What does not belong to the outcome is not written: a response with a failure, a
    // detail with a delivery, either with any other outcome.
    let mixed = ServerFrame::Reply {
        message_id: MessageId(3),
        outcome: failed,
        response: b"ignored",
        detail: "kept",
    };
    assert_eq!(mixed.encoded_bytes(), HEADER_BYTES + 20 + 4);
    let cancelled = ServerFrame::Reply {
        message_id: MessageId(3),
        outcome: Outcome::Cancelled,
        response: b"ignored",
        detail: "ignored",
    };
    assert_eq!(cancelled.encoded_bytes(), HEADER_BYTES + 20);
    assert_eq!(
        encode_server_v2(cancelled)[HEADER_BYTES + 8..],
        encode_server_v2(reply_42(Outcome::Cancelled))[HEADER_BYTES + 8..]
    );
    // A detail longer than the bound is cut at a character boundary, as an Error's.
    let long = "é".repeat(200);
    let cut = ServerFrame::Reply {
        message_id: MessageId(4),
        outcome: failed,
        response: &[],
        detail: &long,
    };
    assert_eq!(
        cut.encoded_bytes(),
        HEADER_BYTES + 20 + ERROR_DETAIL_MAX_BYTES
    );
    decoder = greeted_client_decoder_v2();
    decoder.feed(&encode_server_v2(cut));
    assert_eq!(
        decoder.next_frame(),
        Ok(Some(ServerFrame::Reply {
            message_id: MessageId(4),
            outcome: failed,
            response: &[],
            detail: &long[..ERROR_DETAIL_MAX_BYTES],
        }))
    );
}

#[test]
fn bad_data_in_a_version_2_reply_is_named_and_a_version_1_reply_has_none() {
    let reply = |version: u8, outcome: u8, reason: u8, data: &[u8]| {
        let mut wire = header(version, 0x82, 20 + data.len() as u32);
        wire.extend_from_slice(&5u64.to_le_bytes());
        wire.extend_from_slice(&[outcome, reason, 0, 0]);
        wire.extend_from_slice(&[0; 8]);
        wire.extend_from_slice(data);
        wire
    };
    let long_detail = vec![b'x'; ERROR_DETAIL_MAX_BYTES + 1];
    let cases = [
        (reply(2, 5, 0, b"x"), "data", 1),
        (reply(2, 6, 1, b"xyz"), "data", 3),
        (reply(2, 2, 1, &[b'o', b'k', 0xFF]), "detail", 22),
        (reply(2, 2, 1, &long_detail), "detail", 257),
    ];
    for (wire, field, value) in cases {
        let mut decoder = greeted_client_decoder_v2();
        decoder.feed(&wire);
        assert_eq!(
            decoder.next_frame(),
            Err(ProtocolError::BadField {
                frame_type: FrameType::Reply,
                field,
                value,
            }),
            "{field}"
        );
    }
    // Version 1: a Reply's body is its 20 bytes of fields, refused from the header.
    let mut decoder = greeted_client_decoder();
    decoder.feed(&reply(1, 1, 0, b"world")[..HEADER_BYTES]);
    assert_eq!(
        decoder.next_frame(),
        Err(ProtocolError::BadLength {
            frame_type: FrameType::Reply,
            body_bytes: 25,
        })
    );
}

#[test]
fn a_connection_keeps_the_version_of_its_hello() {
    // A server's decoder takes the Hello's version, in either.
    for version in ProtocolVersion::ALL {
        let mut decoder = server_decoder();
        assert_eq!(decoder.version(), None);
        let mut hello = Vec::new();
        ClientFrame::Hello
            .encode_in(version, FrameLimit::DEFAULT, &mut hello)
            .unwrap();
        decoder.feed(&hello);
        assert_eq!(decoder.next_frame(), Ok(Some(ClientFrame::Hello)));
        assert_eq!(decoder.version(), Some(version));
        // A frame in the other version later is refused from its header.
        let other = ProtocolVersion::ALL
            .into_iter()
            .find(|other| *other != version)
            .unwrap();
        decoder.feed(&header(other.code(), 0x04, 8));
        assert_eq!(
            decoder.next_frame(),
            Err(ProtocolError::UnsupportedVersion {
                version: other.code()
            })
        );
    }
    // A Hello in a version no one speaks is refused, named.
    let mut decoder = server_decoder();
    decoder.feed(&header(3, 0x01, 0));
    assert_eq!(
        decoder.next_frame(),
        Err(ProtocolError::UnsupportedVersion { version: 3 })
    );
    // A version-2 client takes an Error in version 1 (a refusal before the server knew its
    // version), before and after its Welcome; but no other frame.
    let refusal = encode_server(ServerFrame::Error {
        code: ErrorCode::TooManyConnections,
        detail: "full",
    });
    let mut decoder = Decoder::<ServerToClient>::with_version(FrameLimit::MIN, ProtocolVersion::V2);
    decoder.feed(&refusal);
    assert!(matches!(
        decoder.next_frame(),
        Ok(Some(ServerFrame::Error { .. }))
    ));
    let mut decoder = greeted_client_decoder_v2();
    decoder.feed(&refusal);
    assert!(matches!(
        decoder.next_frame(),
        Ok(Some(ServerFrame::Error { .. }))
    ));
    decoder.feed(&encode_server(ServerFrame::Pong { nonce: 1 }));
    assert_eq!(
        decoder.next_frame(),
        Err(ProtocolError::UnsupportedVersion { version: 1 })
    );
    // A version-1 client refuses a version-2 Welcome.
    let mut decoder = Decoder::<ServerToClient>::with_version(FrameLimit::MIN, ProtocolVersion::V1);
    decoder.feed(&encode_server_v2(welcome()));
    assert_eq!(
        decoder.next_frame(),
        Err(ProtocolError::UnsupportedVersion { version: 2 })
    );
}

#[test]
fn a_client_raises_its_limit_to_the_welcomes_for_replies_with_large_responses() {
    let response = vec![7; 4000];
    let reply = ServerFrame::Reply {
        message_id: MessageId(1),
        outcome: Outcome::Delivered,
        response: &response,
        detail: "",
    };
    let wire = encode_server_v2(reply);
    let mut decoder = Decoder::<ServerToClient>::with_version(FrameLimit::MIN, ProtocolVersion::V2);
    decoder.feed(&encode_server_v2(welcome()));
    decoder.next_frame().unwrap();
    decoder.feed(&wire);
    assert_eq!(
        decoder.next_frame(),
        Err(ProtocolError::FrameTooLarge {
            frame_bytes: wire.len() as u64,
            max_frame_bytes: FrameLimit::MIN.max_frame_bytes(),
        })
    );
    let mut decoder = Decoder::<ServerToClient>::with_version(FrameLimit::MIN, ProtocolVersion::V2);
    decoder.feed(&encode_server_v2(welcome()));
    decoder.next_frame().unwrap();
    decoder.set_limit(FrameLimit::DEFAULT);
    decoder.feed(&wire);
    assert_eq!(decoder.next_frame(), Ok(Some(reply)));
    assert_eq!(
        FrameLimit::DEFAULT.max_response_bytes() as usize,
        FrameLimit::DEFAULT.max_frame_bytes() as usize - HEADER_BYTES - 20
    );
}
