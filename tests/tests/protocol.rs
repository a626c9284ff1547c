//! Property tests of the wire protocol codec (`spillway::net::protocol`) against hostile and
//! valid input, and checks that `docs/PROTOCOL.md` says what the code does:
//!
//! - random bytes (pure noise, and valid streams with bytes overwritten, cut or inserted),
//!   fed whole or in random chunks, never panic either decoder, and give the same frames and
//!   the same final error however they are split; every frame accepted re-encodes to exactly
//!   the bytes it was decoded from;
//! - every client and server frame round-trips, whole, in random chunks, and split at every
//!   byte boundary (version-2 Replies with their response or detail);
//! - every server frame in version 1 is its version-2 bytes with the version byte changed,
//!   but a Reply, which in version 1 stops after its fixed fields;
//! - an oversized length is refused from the 8 header bytes alone, before any body;
//! - the code tables and worked examples of `docs/PROTOCOL.md` match the code.
//!
//! Failing cases are saved by proptest beside this file, in `protocol.regressions`.

use spillway_tests::example_bytes;
use std::num::{NonZeroU32, NonZeroU64};

use proptest::prelude::*;
use proptest::sample::{select, Index};
use proptest::test_runner::FileFailurePersistence;
use spillway::message::{ConnectionId, MessageId, Priority, Role, TenantId};
use spillway::net::protocol::{
    encode_error_reply, ClientFrame, ClientToServer, Decoder, Direction, ErrorCode, FrameLimit,
    FrameType, ProtocolError, ProtocolVersion, ServerFrame, ServerToClient, Submit, WireCode,
    ERROR_DETAIL_MAX_BYTES, HEADER_BYTES, MAGIC, OUTCOME_CANCELLED, OUTCOME_DELIVERED,
    OUTCOME_DROPPED, OUTCOME_FAILED, OUTCOME_REFUSED, OUTCOME_SHED, PROTOCOL_VERSION,
};
use spillway::outcome::{DropReason, FailureReason, Outcome, RefusalReason, ShedReason};

const PROTOCOL_PAGE: &str = include_str!("../../docs/PROTOCOL.md");

/// A client frame that owns its payload, so strategies can make it.
#[derive(Clone, Debug)]
enum OwnedClientFrame {
    Hello,
    Submit {
        message_id: u64,
        tenant: u32,
        priority: Priority,
        role: Role,
        payload: Vec<u8>,
    },
    Cancel(u64),
    Ping(u64),
}

impl OwnedClientFrame {
    fn as_frame(&self) -> ClientFrame<'_> {
        match self {
            OwnedClientFrame::Hello => ClientFrame::Hello,
            OwnedClientFrame::Submit {
                message_id,
                tenant,
                priority,
                role,
                payload,
            } => ClientFrame::Submit(Submit {
                message_id: MessageId(*message_id),
                tenant: TenantId(*tenant),
                priority: *priority,
                role: *role,
                payload,
            }),
            OwnedClientFrame::Cancel(message_id) => ClientFrame::Cancel {
                message_id: MessageId(*message_id),
            },
            OwnedClientFrame::Ping(nonce) => ClientFrame::Ping { nonce: *nonce },
        }
    }
}

/// A server frame that owns its detail, so strategies can make it.
#[derive(Clone, Debug)]
enum OwnedServerFrame {
    Welcome {
        connection: u64,
        frame_limit: FrameLimit,
        send_buffer_replies: NonZeroU32,
    },
    /// Id, outcome, and the response or the detail its outcome carries in version 2.
    Reply(u64, Outcome, Vec<u8>, String),
    Throttle(u64),
    Pause(u64),
    Resume,
    RepliesDropped(NonZeroU64),
    Pong(u64),
    Error(ErrorCode, String),
}

impl OwnedServerFrame {
    fn as_frame(&self) -> ServerFrame<'_> {
        match self {
            OwnedServerFrame::Welcome {
                connection,
                frame_limit,
                send_buffer_replies,
            } => ServerFrame::Welcome {
                connection: ConnectionId(*connection),
                frame_limit: *frame_limit,
                send_buffer_replies: *send_buffer_replies,
            },
            OwnedServerFrame::Reply(message_id, outcome, response, detail) => ServerFrame::Reply {
                message_id: MessageId(*message_id),
                outcome: *outcome,
                response,
                detail,
            },
            OwnedServerFrame::Throttle(delay_ns) => ServerFrame::Throttle {
                delay_ns: *delay_ns,
            },
            OwnedServerFrame::Pause(duration_ns) => ServerFrame::Pause {
                duration_ns: *duration_ns,
            },
            OwnedServerFrame::Resume => ServerFrame::Resume,
            OwnedServerFrame::RepliesDropped(count) => {
                ServerFrame::RepliesDropped { count: *count }
            }
            OwnedServerFrame::Pong(nonce) => ServerFrame::Pong { nonce: *nonce },
            OwnedServerFrame::Error(code, detail) => ServerFrame::Error {
                code: *code,
                detail,
            },
        }
    }
}

fn frame_limit() -> impl Strategy<Value = FrameLimit> {
    (FrameLimit::MIN.max_frame_bytes()..=FrameLimit::MAX.max_frame_bytes())
        .prop_map(|bytes| FrameLimit::new(bytes).unwrap())
}

/// A frame a client sends after its Hello, with a payload that fits the default limit.
fn client_frame_after_hello() -> impl Strategy<Value = OwnedClientFrame> {
    prop_oneof![
        (
            any::<u64>(),
            any::<u32>(),
            select(Priority::ALL.to_vec()),
            select(Role::ALL.to_vec()),
            proptest::collection::vec(any::<u8>(), 0..600),
        )
            .prop_map(|(message_id, tenant, priority, role, payload)| {
                OwnedClientFrame::Submit {
                    message_id,
                    tenant,
                    priority,
                    role,
                    payload,
                }
            }),
        any::<u64>().prop_map(OwnedClientFrame::Cancel),
        any::<u64>().prop_map(OwnedClientFrame::Ping),
    ]
}

fn outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![
        Just(Outcome::Delivered),
        Just(Outcome::Cancelled),
        select(FailureReason::ALL.to_vec()).prop_map(|reason| Outcome::Failed { reason }),
        (select(RefusalReason::ALL.to_vec()), any::<u64>()).prop_map(|(reason, retry_after_ns)| {
            Outcome::Refused {
                reason,
                retry_after_ns,
            }
        }),
        select(ShedReason::ALL.to_vec()).prop_map(|reason| Outcome::Shed { reason }),
        select(DropReason::ALL.to_vec()).prop_map(|reason| Outcome::Dropped { reason }),
    ]
}

/// Text of at most `ERROR_DETAIL_MAX_BYTES` bytes, with characters of every UTF-8 width.
fn error_detail() -> impl Strategy<Value = String> {
    proptest::collection::vec(any::<char>(), 0..80).prop_map(|characters| {
        let mut detail = String::new();
        for character in characters {
            if detail.len() + character.len_utf8() > ERROR_DETAIL_MAX_BYTES {
                break;
            }
            detail.push(character);
        }
        detail
    })
}

fn welcome() -> impl Strategy<Value = OwnedServerFrame> {
    (any::<u64>(), frame_limit(), 1..=u32::MAX).prop_map(
        |(connection, frame_limit, send_buffer_replies)| OwnedServerFrame::Welcome {
            connection,
            frame_limit,
            send_buffer_replies: NonZeroU32::new(send_buffer_replies).unwrap(),
        },
    )
}

/// A frame the server sends after its Welcome.
fn server_frame_after_welcome() -> impl Strategy<Value = OwnedServerFrame> {
    prop_oneof![
        4 => (
            any::<u64>(),
            outcome(),
            proptest::collection::vec(any::<u8>(), 0..600),
            error_detail(),
        )
            .prop_map(|(message_id, outcome, response, detail)| {
                // What the outcome carries: a response when delivered, a detail when failed.
                let (response, detail) = match outcome {
                    Outcome::Delivered => (response, String::new()),
                    Outcome::Failed { .. } => (Vec::new(), detail),
                    _ => (Vec::new(), String::new()),
                };
                OwnedServerFrame::Reply(message_id, outcome, response, detail)
            }),
        1 => any::<u64>().prop_map(OwnedServerFrame::Throttle),
        1 => any::<u64>().prop_map(OwnedServerFrame::Pause),
        1 => Just(OwnedServerFrame::Resume),
        1 => (1..=u64::MAX)
            .prop_map(|count| OwnedServerFrame::RepliesDropped(NonZeroU64::new(count).unwrap())),
        1 => any::<u64>().prop_map(OwnedServerFrame::Pong),
        1 => (select(ErrorCode::ALL.to_vec()), error_detail())
            .prop_map(|(code, detail)| OwnedServerFrame::Error(code, detail)),
    ]
}

/// A valid client stream: Hello, then frames.
fn client_stream() -> impl Strategy<Value = Vec<OwnedClientFrame>> {
    proptest::collection::vec(client_frame_after_hello(), 0..12).prop_map(|frames| {
        let mut stream = vec![OwnedClientFrame::Hello];
        stream.extend(frames);
        stream
    })
}

/// A valid server stream: Welcome, then frames.
fn server_stream() -> impl Strategy<Value = Vec<OwnedServerFrame>> {
    (
        welcome(),
        proptest::collection::vec(server_frame_after_welcome(), 0..12),
    )
        .prop_map(|(welcome, frames)| {
            let mut stream = vec![welcome];
            stream.extend(frames);
            stream
        })
}

fn encode_client_stream(frames: &[OwnedClientFrame]) -> Vec<u8> {
    let mut wire = Vec::new();
    for frame in frames {
        frame
            .as_frame()
            .encode(FrameLimit::DEFAULT, &mut wire)
            .unwrap();
    }
    wire
}

fn encode_server_stream(frames: &[OwnedServerFrame]) -> Vec<u8> {
    let mut wire = Vec::new();
    for frame in frames {
        frame.as_frame().encode(&mut wire);
    }
    wire
}

/// How a valid stream is damaged.
#[derive(Clone, Debug)]
enum Damage {
    Overwrite(Index, u8),
    Insert(Index, u8),
    Remove(Index),
    Cut(Index),
}

fn damage() -> impl Strategy<Value = Vec<Damage>> {
    proptest::collection::vec(
        prop_oneof![
            (any::<Index>(), any::<u8>()).prop_map(|(at, byte)| Damage::Overwrite(at, byte)),
            (any::<Index>(), any::<u8>()).prop_map(|(at, byte)| Damage::Insert(at, byte)),
            any::<Index>().prop_map(Damage::Remove),
            any::<Index>().prop_map(Damage::Cut),
        ],
        0..4,
    )
}

fn apply(mut wire: Vec<u8>, damage: &[Damage]) -> Vec<u8> {
    for step in damage {
        match step {
            Damage::Overwrite(at, byte) if !wire.is_empty() => {
                let at = at.index(wire.len());
                wire[at] = *byte;
            }
            Damage::Insert(at, byte) => {
                let at = at.index(wire.len() + 1);
                wire.insert(at, *byte);
            }
            Damage::Remove(at) if !wire.is_empty() => {
                let at = at.index(wire.len());
                wire.remove(at);
            }
            Damage::Cut(at) => {
                let at = at.index(wire.len() + 1);
                wire.truncate(at);
            }
            _ => {}
        }
    }
    wire
}

/// Noise: random bytes, or random bytes behind a valid magic and version so that the later
/// header checks and the bodies are reached too.
fn noise() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..512),
        (any::<u8>(), proptest::collection::vec(any::<u8>(), 0..512)).prop_map(
            |(frame_type, rest)| {
                let mut wire = MAGIC.to_vec();
                wire.push(1 + frame_type % 2);
                wire.push(frame_type);
                wire.extend(rest);
                wire
            }
        ),
    ]
}

/// Chunk sizes for feeding a stream in pieces, cycled over.
fn chunk_sizes() -> impl Strategy<Value = Vec<usize>> {
    proptest::collection::vec(1usize..40, 1..16)
}

fn chunks<'wire>(wire: &'wire [u8], sizes: &[usize]) -> Vec<&'wire [u8]> {
    let mut pieces = Vec::new();
    let mut rest = wire;
    for size in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (piece, after) = rest.split_at((*size).min(rest.len()));
        pieces.push(piece);
        rest = after;
    }
    pieces
}

/// What a decoder made of a stream: each frame re-encoded, and how it ended (`Ok` at a
/// frame boundary, or the first error, `Truncated` included).
#[derive(Debug, PartialEq)]
struct Transcript {
    frames: Vec<Vec<u8>>,
    end: Result<(), ProtocolError>,
}

/// Runs `pieces` through a fresh decoder for direction `D`, read by read, as its receiver
/// would, re-encoding each frame with `encode`.
fn transcript<D: Direction>(
    pieces: &[&[u8]],
    limit: FrameLimit,
    encode: impl Fn(&D::Frame<'_>, &mut Vec<u8>),
) -> Transcript {
    let mut decoder = Decoder::<D>::new(limit);
    let mut frames = Vec::new();
    for piece in pieces {
        decoder.feed(piece);
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => {
                    let mut wire = Vec::new();
                    encode(&frame, &mut wire);
                    frames.push(wire);
                }
                Ok(None) => break,
                Err(error) => {
                    return Transcript {
                        frames,
                        end: Err(error),
                    }
                }
            }
        }
    }
    Transcript {
        frames,
        end: decoder.finish(),
    }
}

/// What a server's decoder makes of `pieces`.
fn server_transcript(pieces: &[&[u8]], limit: FrameLimit) -> Transcript {
    transcript::<ClientToServer>(pieces, limit, |frame, wire| {
        frame
            .encode(FrameLimit::MAX, wire)
            .expect("a decoded frame fits the largest limit");
    })
}

/// What a client's decoder makes of `pieces`.
fn client_transcript(pieces: &[&[u8]], limit: FrameLimit) -> Transcript {
    transcript::<ServerToClient>(pieces, limit, |frame, wire| {
        frame.encode(wire);
    })
}

/// The frames a decoder accepted are, re-encoded, exactly the bytes at the front of the
/// stream; and when it ended well, they are the whole stream.
fn assert_canonical(wire: &[u8], transcript: &Transcript) -> Result<(), TestCaseError> {
    let accepted = transcript.frames.concat();
    prop_assert!(
        wire.starts_with(&accepted),
        "re-encoded frames differ from the input"
    );
    if transcript.end.is_ok() {
        prop_assert_eq!(accepted.len(), wire.len());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("regressions"))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn hostile_bytes_never_panic_the_server_decoder_and_decode_the_same_however_split(
        wire in prop_oneof![
            noise(),
            (client_stream(), damage())
                .prop_map(|(frames, damage)| apply(encode_client_stream(&frames), &damage)),
        ],
        sizes in chunk_sizes(),
        limit in prop_oneof![Just(FrameLimit::MIN), Just(FrameLimit::DEFAULT), frame_limit()],
    ) {
        let whole = server_transcript(&[&wire], limit);
        assert_canonical(&wire, &whole)?;
        let byte_by_byte: Vec<&[u8]> = wire.chunks(1).collect();
        prop_assert_eq!(&server_transcript(&byte_by_byte, limit), &whole);
        prop_assert_eq!(&server_transcript(&chunks(&wire, &sizes), limit), &whole);
    }

    #[test]
    fn hostile_bytes_never_panic_the_client_decoder_and_decode_the_same_however_split(
        wire in prop_oneof![
            noise(),
            (server_stream(), damage())
                .prop_map(|(frames, damage)| apply(encode_server_stream(&frames), &damage)),
        ],
        sizes in chunk_sizes(),
    ) {
        let whole = client_transcript(&[&wire], FrameLimit::MIN);
        assert_canonical(&wire, &whole)?;
        let byte_by_byte: Vec<&[u8]> = wire.chunks(1).collect();
        prop_assert_eq!(&client_transcript(&byte_by_byte, FrameLimit::MIN), &whole);
        prop_assert_eq!(&client_transcript(&chunks(&wire, &sizes), FrameLimit::MIN), &whole);
    }

    #[test]
    fn client_frames_round_trip_whole_and_in_random_chunks(
        frames in client_stream(),
        sizes in chunk_sizes(),
    ) {
        let wire = encode_client_stream(&frames);
        let expected_bytes: usize = frames.iter().map(|frame| frame.as_frame().encoded_bytes()).sum();
        prop_assert_eq!(wire.len(), expected_bytes);
        for pieces in [vec![&wire[..]], chunks(&wire, &sizes)] {
            let mut decoder = Decoder::<ClientToServer>::new(FrameLimit::DEFAULT);
            let mut expected = frames.iter();
            for piece in pieces {
                decoder.feed(piece);
                while let Some(frame) = decoder.next_frame().unwrap() {
                    prop_assert_eq!(Some(frame), expected.next().map(OwnedClientFrame::as_frame));
                }
            }
            prop_assert!(expected.next().is_none(), "a frame was not decoded");
            prop_assert_eq!(decoder.finish(), Ok(()));
        }
    }

    #[test]
    fn in_version_1_a_server_frame_is_its_version_2_bytes_but_a_reply_carries_nothing_more(
        frames in server_stream(),
    ) {
        let mut decoder = Decoder::<ServerToClient>::with_version(FrameLimit::MIN, ProtocolVersion::V1);
        for owned in &frames {
            let frame = owned.as_frame();
            let (mut v1, mut v2) = (Vec::new(), Vec::new());
            prop_assert_eq!(frame.encode_in(ProtocolVersion::V1, &mut v1), v1.len());
            frame.encode_in(ProtocolVersion::V2, &mut v2);
            prop_assert_eq!((v1[2], v2[2]), (1, 2));
            if let ServerFrame::Reply { message_id, outcome, .. } = frame {
                // The fixed fields alone, with a body length of 20.
                prop_assert_eq!(v1.len(), HEADER_BYTES + 20);
                prop_assert_eq!(&v1[4..8], &20u32.to_le_bytes()[..]);
                prop_assert_eq!(&v1[HEADER_BYTES..], &v2[HEADER_BYTES..HEADER_BYTES + 20]);
                decoder.feed(&v1);
                prop_assert_eq!(
                    decoder.next_frame().unwrap(),
                    Some(ServerFrame::Reply { message_id, outcome, response: &[], detail: "" })
                );
            } else {
                prop_assert_eq!(&v1[..2], &v2[..2]);
                prop_assert_eq!(&v1[3..], &v2[3..]);
                decoder.feed(&v1);
                prop_assert_eq!(decoder.next_frame().unwrap(), Some(frame));
            }
        }
    }

    #[test]
    fn server_frames_round_trip_whole_and_in_random_chunks(
        frames in server_stream(),
        sizes in chunk_sizes(),
    ) {
        let wire = encode_server_stream(&frames);
        for pieces in [vec![&wire[..]], chunks(&wire, &sizes)] {
            // Replies with a response of up to 600 bytes: over the smallest limit.
            let mut decoder = Decoder::<ServerToClient>::new(FrameLimit::DEFAULT);
            let mut expected = frames.iter();
            for piece in pieces {
                decoder.feed(piece);
                while let Some(frame) = decoder.next_frame().unwrap() {
                    prop_assert_eq!(Some(frame), expected.next().map(OwnedServerFrame::as_frame));
                }
            }
            prop_assert!(expected.next().is_none(), "a frame was not decoded");
            prop_assert_eq!(decoder.finish(), Ok(()));
        }
    }

    #[test]
    fn a_client_frame_split_at_every_byte_decodes_the_same(frame in client_frame_after_hello()) {
        let wire = encode_client_stream(std::slice::from_ref(&frame));
        for split in 0..=wire.len() {
            let mut decoder = Decoder::<ClientToServer>::new(FrameLimit::DEFAULT);
            decoder.feed(&encode_client_stream(&[OwnedClientFrame::Hello]));
            prop_assert_eq!(decoder.next_frame(), Ok(Some(ClientFrame::Hello)));
            decoder.feed(&wire[..split]);
            if split < wire.len() {
                prop_assert_eq!(decoder.next_frame(), Ok(None));
                prop_assert_eq!(
                    decoder.finish(),
                    if split == 0 {
                        Ok(())
                    } else {
                        Err(ProtocolError::Truncated { buffered_bytes: split as u64 })
                    }
                );
                decoder.feed(&wire[split..]);
            }
            prop_assert_eq!(decoder.next_frame(), Ok(Some(frame.as_frame())));
            prop_assert_eq!(decoder.next_frame(), Ok(None));
        }
    }

    #[test]
    fn a_server_frame_split_at_every_byte_decodes_the_same(
        welcome in welcome(),
        frame in server_frame_after_welcome(),
    ) {
        let wire = encode_server_stream(std::slice::from_ref(&frame));
        for split in 0..=wire.len() {
            let mut decoder = Decoder::<ServerToClient>::new(FrameLimit::DEFAULT);
            decoder.feed(&encode_server_stream(std::slice::from_ref(&welcome)));
            prop_assert_eq!(decoder.next_frame(), Ok(Some(welcome.as_frame())));
            decoder.unfilled(split)[..split].copy_from_slice(&wire[..split]);
            decoder.commit(split);
            if split < wire.len() {
                prop_assert_eq!(decoder.next_frame(), Ok(None));
                decoder.feed(&wire[split..]);
            }
            prop_assert_eq!(decoder.next_frame(), Ok(Some(frame.as_frame())));
            prop_assert_eq!(decoder.next_frame(), Ok(None));
        }
    }

    #[test]
    fn an_oversized_length_is_refused_from_the_header_alone(
        limit in frame_limit(),
        excess in 1u64..=u64::from(u32::MAX),
        frame_type in select(FrameType::ALL.to_vec()),
        greeted in any::<bool>(),
    ) {
        let body_bytes = (u64::from(limit.max_frame_bytes()) - HEADER_BYTES as u64 + excess)
            .min(u64::from(u32::MAX)) as u32;
        let mut header = MAGIC.to_vec();
        header.push(PROTOCOL_VERSION);
        header.push(frame_type.code());
        header.extend_from_slice(&body_bytes.to_le_bytes());
        let expected = ProtocolError::FrameTooLarge {
            frame_bytes: HEADER_BYTES as u64 + u64::from(body_bytes),
            max_frame_bytes: limit.max_frame_bytes(),
        };

        let mut decoder = Decoder::<ClientToServer>::new(limit);
        if greeted {
            decoder.feed(&encode_client_stream(&[OwnedClientFrame::Hello]));
            prop_assert_eq!(decoder.next_frame(), Ok(Some(ClientFrame::Hello)));
        }
        decoder.feed(&header[..HEADER_BYTES - 1]);
        prop_assert_eq!(decoder.next_frame(), Ok(None));
        decoder.feed(&header[HEADER_BYTES - 1..]);
        prop_assert_eq!(decoder.next_frame(), Err(expected));
        prop_assert_eq!(decoder.buffered_bytes(), HEADER_BYTES);
        prop_assert_eq!(expected.code(), ErrorCode::FrameTooLarge);

        let mut decoder = Decoder::<ServerToClient>::new(limit);
        decoder.feed(&header);
        prop_assert_eq!(decoder.next_frame(), Err(expected));
    }
}

/// The text from the heading that starts with `heading` to the next heading.
fn section(heading: &str) -> &'static str {
    let start = PROTOCOL_PAGE
        .find(&format!("\n{heading}"))
        .unwrap_or_else(|| panic!("docs/PROTOCOL.md has no heading {heading:?}"));
    let section = &PROTOCOL_PAGE[start + 1..];
    let end = section[1..]
        .find("\n#")
        .map_or(section.len(), |end| end + 1);
    &section[..end]
}

/// The rows of the table in `section(heading)` that are numbered: lines starting `| `
/// followed by a digit.
fn table_rows(heading: &str) -> Vec<&'static str> {
    section(heading)
        .lines()
        .filter(|line| {
            line.strip_prefix("| ")
                .and_then(|rest| rest.chars().next())
                .is_some_and(|first| first.is_ascii_digit())
        })
        .collect()
}

/// Checks that the table under `heading` has exactly one row per `(code, name)` pair, and
/// no other numbered row.
fn assert_table(heading: &str, codes: &[(String, &str)]) {
    let rows = table_rows(heading);
    assert_eq!(
        rows.len(),
        codes.len(),
        "{heading}: the page has {} rows, the code {} values",
        rows.len(),
        codes.len()
    );
    for (code, name) in codes {
        let prefix = format!("| {code} | `{name}` |");
        assert!(
            rows.iter().any(|row| row.starts_with(&prefix)),
            "{heading}: no row starts with {prefix:?}"
        );
    }
}

fn wire_codes<T: WireCode>(all: &[T], name: impl Fn(T) -> String) -> Vec<(String, String)> {
    all.iter()
        .map(|value| (value.wire_code().to_string(), name(*value)))
        .collect()
}

fn as_table(codes: &[(String, String)]) -> Vec<(String, &str)> {
    codes
        .iter()
        .map(|(code, name)| (code.clone(), name.as_str()))
        .collect()
}

#[test]
fn the_code_tables_of_the_protocol_page_match_the_code() {
    let frame_types: Vec<(String, &str)> = FrameType::ALL
        .iter()
        .map(|frame_type| (format!("{:#04x}", frame_type.code()), frame_type.name()))
        .collect();
    assert_table("## 4. Frame types", &frame_types);
    for row in table_rows("## 4. Frame types") {
        let code = u8::from_str_radix(&row[4..6], 16).unwrap();
        let sender = if FrameType::from_code(code).unwrap().is_sent_by_client() {
            "| client |"
        } else {
            "| server |"
        };
        assert!(row.contains(sender), "{row:?} should say {sender}");
    }

    let priorities = wire_codes(&Priority::ALL, |priority| priority.to_string());
    assert_table("### 6.1 Priority codes", &as_table(&priorities));
    let roles = wire_codes(&Role::ALL, |role| role.name().to_owned());
    assert_table("### 6.2 Role codes", &as_table(&roles));
    let outcomes = [
        (OUTCOME_DELIVERED, "delivered"),
        (OUTCOME_FAILED, "failed"),
        (OUTCOME_REFUSED, "refused"),
        (OUTCOME_SHED, "shed"),
        (OUTCOME_CANCELLED, "cancelled"),
        (OUTCOME_DROPPED, "dropped"),
    ]
    .map(|(code, name)| (code.to_string(), name));
    assert_table("### 6.3 Outcome codes", &outcomes);
    let failures = wire_codes(&FailureReason::ALL, |reason| reason.name().to_owned());
    assert_table("### 6.4 Failure reasons", &as_table(&failures));
    let refusals = wire_codes(&RefusalReason::ALL, |reason| reason.name().to_owned());
    assert_table("### 6.5 Refusal reasons", &as_table(&refusals));
    let sheds = wire_codes(&ShedReason::ALL, |reason| reason.name().to_owned());
    assert_table("### 6.6 Shed reasons", &as_table(&sheds));
    let drops = wire_codes(&DropReason::ALL, |reason| reason.name().to_owned());
    assert_table("### 6.7 Drop reasons", &as_table(&drops));
    let errors: Vec<(String, &str)> = ErrorCode::ALL
        .iter()
        .map(|code| (code.code().to_string(), code.name()))
        .collect();
    assert_table("### 6.8 Error codes", &errors);
}

#[test]
fn the_limits_on_the_protocol_page_are_the_codes() {
    let with_commas = |number: u32| {
        let digits = number.to_string();
        let mut text = String::new();
        for (index, digit) in digits.chars().enumerate() {
            if index > 0 && (digits.len() - index) % 3 == 0 {
                text.push(',');
            }
            text.push(digit);
        }
        text
    };
    let limits = section("### 7.2 Limits");
    for number in [
        FrameLimit::MIN.max_frame_bytes(),
        FrameLimit::MAX.max_frame_bytes(),
        FrameLimit::DEFAULT.max_frame_bytes(),
        FrameLimit::DEFAULT.max_payload_bytes(),
    ] {
        assert!(
            limits.contains(&with_commas(number)),
            "the limits do not give {number}"
        );
    }
    assert!(PROTOCOL_PAGE.contains(&format!(
        "| Error detail | {ERROR_DETAIL_MAX_BYTES} bytes of UTF-8 |"
    )));
    let overhead = FrameLimit::DEFAULT.max_frame_bytes() - FrameLimit::DEFAULT.max_payload_bytes();
    assert!(PROTOCOL_PAGE.contains(&format!("`max_frame_bytes - {overhead}`")));
    assert!(PROTOCOL_PAGE.contains(&format!(
        "| 0 | 2 | `magic` | `0x{:02x} 0x{:02x}` (ASCII `SW`) |",
        MAGIC[0], MAGIC[1]
    )));
    let versions: Vec<String> = ProtocolVersion::ALL
        .iter()
        .map(|version| format!("`{}`", version.code()))
        .collect();
    assert_eq!(PROTOCOL_VERSION, ProtocolVersion::LATEST.code());
    assert!(PROTOCOL_PAGE.contains(&format!(
        "| 2 | 1 | `version` | {} (section 3) |",
        versions.join(" or ")
    )));
    assert!(limits.contains(&with_commas(FrameLimit::DEFAULT.max_response_bytes())));
}

#[test]
fn the_worked_examples_of_the_protocol_page_decode_and_re_encode_to_themselves() {
    let examples: Vec<Vec<u8>> = PROTOCOL_PAGE
        .lines()
        .filter(|line| line.starts_with("53 57 "))
        .map(example_bytes)
        .collect();
    assert_eq!(examples.len(), 10, "the page has ten worked examples");
    let versions: Vec<u8> = examples.iter().map(|example| example[2]).collect();
    assert!(
        versions.contains(&1) && versions.contains(&2),
        "examples in both versions"
    );

    for example in examples {
        let frame_type = FrameType::from_code(example[3]).unwrap();
        let version = ProtocolVersion::from_code(example[2]).unwrap();
        let mut hello = Vec::new();
        ClientFrame::Hello
            .encode_in(version, FrameLimit::DEFAULT, &mut hello)
            .unwrap();
        let mut welcome = Vec::new();
        ServerFrame::Welcome {
            connection: ConnectionId(7),
            frame_limit: FrameLimit::DEFAULT,
            send_buffer_replies: NonZeroU32::new(1000).unwrap(),
        }
        .encode_in(version, &mut welcome);
        let mut re_encoded = Vec::new();
        if frame_type.is_sent_by_client() {
            let mut decoder = Decoder::<ClientToServer>::new(FrameLimit::DEFAULT);
            if frame_type != FrameType::Hello {
                decoder.feed(&hello);
                decoder.next_frame().unwrap();
            }
            decoder.feed(&example);
            let frame = decoder.next_frame().unwrap().expect("a whole frame");
            frame
                .encode_in(version, FrameLimit::DEFAULT, &mut re_encoded)
                .unwrap();
        } else {
            let mut decoder = Decoder::<ServerToClient>::with_version(FrameLimit::DEFAULT, version);
            if !matches!(frame_type, FrameType::Welcome | FrameType::Error) {
                decoder.feed(&welcome);
                decoder.next_frame().unwrap();
            }
            decoder.feed(&example);
            let frame = decoder.next_frame().unwrap().expect("a whole frame");
            frame.encode_in(version, &mut re_encoded);
        }
        assert_eq!(re_encoded, example, "{frame_type} example");
        if frame_type == FrameType::Error {
            // Before a Hello, the server's Errors are in version 1.
            let mut error_reply = Vec::new();
            encode_error_reply(
                &ProtocolError::BadMagic { found: *b"GE" },
                ProtocolVersion::V1,
                &mut error_reply,
            );
            assert_eq!(
                error_reply, example,
                "what the server sends for `GET / HTTP/1.1`"
            );
        }
    }
}
