//! The library's log events (issue 15), seen through a capturing subscriber: a forced
//! breaker move is one event with its cause, a flapping breaker is rate-limited with every
//! transition counted, and a flood of protocol violations gives a bounded number of
//! events whose counts add up to the server's own counters.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use spillway::config::Config;
use spillway::engine::Engine;
use spillway::message::Message;
use spillway::net::protocol::ErrorCode;
use spillway::net::server::{ServerConfig, TcpServer};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;

/// One event as the subscriber saw it: its target, level and fields (the message under
/// `message`), each written as text.
#[derive(Clone, Debug)]
struct Captured {
    target: String,
    level: Level,
    fields: HashMap<String, String>,
}

impl Captured {
    fn field(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }

    fn count(&self) -> u64 {
        self.field("count")
            .expect("every rate-limited event has a count")
            .parse()
            .expect("a count is a number")
    }
}

struct Fields<'a>(&'a mut HashMap<String, String>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<Captured>>>);

impl<S: Subscriber> Layer<S> for Capture {
    fn on_event(&self, event: &Event<'_>, _context: Context<'_, S>) {
        let mut fields = HashMap::new();
        event.record(&mut Fields(&mut fields));
        let captured = Captured {
            target: event.metadata().target().to_owned(),
            level: *event.metadata().level(),
            fields,
        };
        self.0.lock().unwrap().push(captured);
    }
}

/// The process's subscriber: the library logs from its own threads (shards, the control
/// thread), so a thread-local default would miss them. Each test reads its own targets.
fn capture() -> &'static Capture {
    static CAPTURE: OnceLock<Capture> = OnceLock::new();
    CAPTURE.get_or_init(|| {
        let capture = Capture::default();
        tracing::subscriber::set_global_default(
            tracing_subscriber::registry().with(capture.clone()),
        )
        .expect("no other subscriber in this test binary");
        capture
    })
}

fn events_of(target: &str) -> Vec<Captured> {
    capture()
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|event| event.target == target)
        .cloned()
        .collect()
}

#[test]
fn a_forced_breaker_move_is_one_event_with_its_cause_and_flapping_is_counted() {
    capture();
    let engine = Engine::builder()
        .handler(|_: &Message| Ok(()))
        .start()
        .unwrap();
    let control = engine.control();
    control.force_open().unwrap();
    control.reset().unwrap();
    let events = events_of("spillway::breaker");
    assert_eq!(events.len(), 2, "{events:#?}");
    let (opened, closed) = (&events[0], &events[1]);
    assert_eq!(opened.level, Level::WARN);
    assert_eq!(opened.field("cause"), Some("forced_open"));
    assert_eq!(opened.field("from"), Some("closed"));
    assert_eq!(opened.field("to"), Some("forced_open"));
    assert_eq!(opened.count(), 1);
    assert_eq!(closed.level, Level::INFO);
    assert_eq!(closed.field("cause"), Some("reset"));
    assert_eq!(closed.field("to"), Some("closed"));
    assert_eq!(closed.count(), 1);

    // Flapping: 400 more transitions within a few milliseconds.
    let started = Instant::now();
    for _ in 0..200 {
        control.force_open().unwrap();
        control.reset().unwrap();
    }
    let seconds = started.elapsed().as_secs() + 1;
    engine.shutdown();
    let events = events_of("spillway::breaker");
    let counted: u64 = events.iter().map(Captured::count).sum();
    assert_eq!(counted, 402, "every transition is in one event's count");
    // Ten a second, and the summary of the rest at the stop.
    let bound = 10 * seconds as usize + 1;
    assert!(events.len() <= 2 + bound, "{} events", events.len());
    let last = events.last().unwrap();
    assert!(
        last.count() > 1,
        "the summary carries the held-back ones: {last:?}"
    );
    assert_eq!(
        last.field("to"),
        Some("closed"),
        "the latest transition is its example"
    );
}

#[test]
fn a_flood_of_protocol_violations_is_a_few_events_with_exact_counts() {
    capture();
    const CLIENTS: usize = 4;
    const CONNECTIONS_PER_CLIENT: usize = 500;
    let server = TcpServer::bind("127.0.0.1:0", ServerConfig::default()).unwrap();
    let address = server.local_addr();
    let mut config = Config::default();
    config.shards = 2;
    let engine = Engine::builder()
        .config(config)
        .handler(server.front_end(|_: &Message| Ok(())))
        .start()
        .unwrap();
    let started = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            std::thread::spawn(move || {
                for _ in 0..CONNECTIONS_PER_CLIENT {
                    let mut stream = TcpStream::connect(address).unwrap();
                    // Not the magic "SW": the server answers bad_magic and closes.
                    stream.write_all(&[0xAB; 16]).unwrap();
                    let mut answer = Vec::new();
                    // The Error frame, then end of stream (or a reset: either ends it).
                    let _ = stream.read_to_end(&mut answer);
                }
            })
        })
        .collect();
    for client in clients {
        client.join().unwrap();
    }
    let seconds = started.elapsed().as_secs() + 1;
    engine.shutdown();
    let violations = (CLIENTS * CONNECTIONS_PER_CLIENT) as u64;
    assert_eq!(server.stats().closed_with(ErrorCode::BadMagic), violations);
    let events: Vec<_> = events_of("spillway::net")
        .into_iter()
        .filter(|event| event.field("reason") == Some("bad_magic"))
        .collect();
    let counted: u64 = events.iter().map(Captured::count).sum();
    assert_eq!(counted, violations, "{events:#?}");
    // One a second per shard, and the last one at the stop.
    let bound = 2 * (seconds as usize + 1);
    assert!(
        events.len() <= bound,
        "{} events for {violations}",
        events.len()
    );
    let example = &events[0];
    assert_eq!(example.level, Level::WARN);
    assert_eq!(example.field("fault"), Some("protocol_violation"));
    assert!(example.field("connection").is_some(), "{example:?}");
    assert!(
        example
            .field("detail")
            .is_some_and(|detail| detail.contains("bad magic")),
        "{example:?}"
    );
}
