//! The admin endpoint's HTTP/1.1 loop: one thread, one mio poll, every connection bounded.
//!
//! Requests are parsed by `httparse` (head) and `Content-Length` (body; chunked bodies are
//! refused with 411, as a small admin API may). Keep-alive is the HTTP/1.1 default, so a
//! Prometheus scraping every second reuses one connection. The thread answers one request
//! at a time: a health check waits for the control plane's answer (bounded by the control
//! handle's timeout), which is the point of it.

use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};

use super::routes::{self, Request, Response};
use super::{AdminShared, Stat};
use crate::config::AdminConfig;

const LISTENER: Token = Token(usize::MAX - 1);
const WAKER: Token = Token(usize::MAX - 2);
/// Events taken per poll.
const EVENTS_PER_POLL: usize = 256;
/// Longest poll, so that idle connections are swept at least this often.
const SWEEP_INTERVAL: Duration = Duration::from_millis(250);
/// Bytes read per `read` call.
const READ_CHUNK_BYTES: usize = 16 * 1024;
/// How long a closing connection's unread input is read and thrown away after its last
/// answer (a lingering close, as nginx does): closing a socket with unread bytes sends a
/// reset, and a reset can destroy the answer (a 413, say) before the client reads it.
const LINGER: Duration = Duration::from_millis(500);
/// Answers a connection may have unwritten before the endpoint stops reading its next
/// requests: a client that pipelines requests and never reads their answers is held to
/// this (plus one answer), not to whatever it can make the process buffer.
const OUTPUT_PENDING_MAX_BYTES: usize = 256 * 1024;

/// Stops the HTTP thread.
pub(super) struct StopHandle {
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
}

impl StopHandle {
    pub(super) fn stop(&self) {
        // Release pairs with the Acquire load in the loop: nothing else is published by
        // the flag, but the loop must see it after the wake-up that follows.
        self.stop.store(true, Ordering::Release);
        // A failed wake leaves the loop to see the flag at its next sweep.
        let _ = self.waker.wake();
    }
}

/// Starts the thread serving `listener`.
pub(super) fn spawn(
    listener: std::net::TcpListener,
    settings: AdminConfig,
    shared: Arc<AdminShared>,
) -> io::Result<(JoinHandle<()>, StopHandle)> {
    listener.set_nonblocking(true)?;
    let poll = Poll::new()?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
    let stop = Arc::new(AtomicBool::new(false));
    let mut server = HttpLoop {
        listener: TcpListener::from_std(listener),
        poll,
        connections: Vec::new(),
        free: Vec::new(),
        open: 0,
        accept_again: false,
        settings,
        shared,
        stop: Arc::clone(&stop),
    };
    server
        .poll
        .registry()
        .register(&mut server.listener, LISTENER, Interest::READABLE)?;
    let thread = std::thread::Builder::new()
        .name("spillway-admin".to_string())
        .spawn(move || server.run())?;
    Ok((thread, StopHandle { stop, waker }))
}

struct Connection {
    stream: TcpStream,
    /// Bytes read and not yet parsed into a request; at most `max_request_bytes`.
    input: Vec<u8>,
    /// Answers not yet written, from `written` on.
    output: Vec<u8>,
    written: usize,
    /// Last request or read, for the idle timeout.
    last_active: Instant,
    /// Close once `output` is written (a `Connection: close`, an error answer, EOF).
    closing: bool,
    /// Answered and shut for writing: reading and discarding until EOF or this instant.
    linger_until: Option<Instant>,
    /// Reading stopped because `output` reached [`OUTPUT_PENDING_MAX_BYTES`]; resumed once
    /// it is written (edge-triggered readiness would not announce the bytes still unread).
    read_paused: bool,
}

struct HttpLoop {
    listener: TcpListener,
    poll: Poll,
    /// Slots indexed by token; `free` lists the empty ones.
    connections: Vec<Option<Connection>>,
    free: Vec<usize>,
    open: usize,
    /// An accept failed (out of descriptors, say): retried at each sweep, since no new
    /// readiness event comes for connections already waiting in the backlog.
    accept_again: bool,
    settings: AdminConfig,
    shared: Arc<AdminShared>,
    stop: Arc<AtomicBool>,
}

impl HttpLoop {
    fn run(mut self) {
        // The admin thread answers health checks while the shards saturate every core: it
        // runs favoured like the control thread it asks (when that was granted), or a
        // load balancer's check would measure the scheduler's slice, not the engine.
        if let Some(nice) = self.shared.control.thread_nice() {
            crate::control::raise_thread_priority(nice);
        }
        let mut events = Events::with_capacity(EVENTS_PER_POLL);
        let idle_timeout = Duration::from_nanos(self.settings.idle_timeout_ns);
        loop {
            if let Err(error) = self.poll.poll(&mut events, Some(SWEEP_INTERVAL)) {
                if error.kind() != io::ErrorKind::Interrupted {
                    tracing::error!(target: "spillway::admin", %error, "admin poll failed; the admin endpoint stops");
                    return;
                }
            }
            // Acquire: pairs with `StopHandle::stop`.
            if self.stop.load(Ordering::Acquire) {
                return;
            }
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(),
                    WAKER => {}
                    Token(slot) => self.serve(slot),
                }
            }
            if self.accept_again {
                self.accept();
            }
            self.sweep_idle(idle_timeout);
        }
    }

    fn accept(&mut self) {
        self.accept_again = false;
        loop {
            match self.listener.accept() {
                Ok((mut stream, _)) => {
                    if self.open >= self.settings.max_connections {
                        self.shared.count(Stat::ConnectionsRefused);
                        continue; // dropped: closed
                    }
                    // Each answer is one write of a whole response: sent at once, not held
                    // back for more (a health checker waits on it). A socket that refuses
                    // the option still works, only maybe later.
                    let _ = stream.set_nodelay(true);
                    let slot = self.free.pop().unwrap_or_else(|| {
                        self.connections.push(None);
                        self.connections.len() - 1
                    });
                    if self
                        .poll
                        .registry()
                        .register(
                            &mut stream,
                            Token(slot),
                            Interest::READABLE | Interest::WRITABLE,
                        )
                        .is_err()
                    {
                        self.free.push(slot);
                        continue;
                    }
                    self.connections[slot] = Some(Connection {
                        stream,
                        input: Vec::new(),
                        output: Vec::new(),
                        written: 0,
                        last_active: Instant::now(),
                        closing: false,
                        linger_until: None,
                        read_paused: false,
                    });
                    self.open += 1;
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                // Out of descriptors, or a connection reset before accept: try again at
                // the next sweep.
                Err(_) => {
                    self.accept_again = true;
                    return;
                }
            }
        }
    }

    /// Reads, answers every complete request, writes; closes when done or broken.
    fn serve(&mut self, slot: usize) {
        let Some(mut connection) = self.connections.get_mut(slot).and_then(Option::take) else {
            return;
        };
        let keep = loop {
            if connection.linger_until.is_some() {
                break discard_input(&mut connection);
            }
            if !self.read_and_answer(&mut connection) || !flush(&mut connection) {
                break false;
            }
            // Wait for the socket when answers are still unwritten, or when everything
            // was read; go round again when reading paused for answers now written.
            if connection.linger_until.is_some()
                || !connection.output.is_empty()
                || !connection.read_paused
            {
                break true;
            }
        };
        if keep {
            self.connections[slot] = Some(connection);
        } else {
            self.close(slot, connection);
        }
    }

    /// Answers the requests already read, then reads and answers more, until the socket
    /// has nothing more, the connection is closing, or unwritten answers reach
    /// [`OUTPUT_PENDING_MAX_BYTES`] (`read_paused`). False when the connection is broken.
    fn read_and_answer(&self, connection: &mut Connection) -> bool {
        let limit = self.settings.max_request_bytes;
        let mut chunk = [0u8; READ_CHUNK_BYTES];
        connection.read_paused = false;
        self.answer_complete_requests(connection);
        while !connection.closing {
            if connection.output.len() >= OUTPUT_PENDING_MAX_BYTES {
                connection.read_paused = true;
                break;
            }
            let room = limit.saturating_sub(connection.input.len());
            if room == 0 {
                // A request (or a pipelined series) longer than the limit: answer 413.
                self.answer_error(connection, Response::too_large(limit));
                break;
            }
            let want = room.min(chunk.len());
            match connection.stream.read(&mut chunk[..want]) {
                // The client is done sending: answer what it sent, then close.
                Ok(0) => {
                    connection.closing = true;
                    break;
                }
                Ok(read) => {
                    connection.input.extend_from_slice(&chunk[..read]);
                    connection.last_active = Instant::now();
                    self.answer_complete_requests(connection);
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return false,
            }
        }
        true
    }

    /// Parses and answers the whole requests at the front of `input`, while the unwritten
    /// answers are under [`OUTPUT_PENDING_MAX_BYTES`].
    fn answer_complete_requests(&self, connection: &mut Connection) {
        while !connection.closing
            && !connection.input.is_empty()
            && connection.output.len() < OUTPUT_PENDING_MAX_BYTES
        {
            match parse(&connection.input, &self.settings) {
                Parsed::Partial => return,
                Parsed::Bad(response) => {
                    self.answer_error(connection, response);
                    return;
                }
                Parsed::Request {
                    request,
                    consumed,
                    close,
                } => {
                    let response = routes::answer(&self.shared, &request);
                    self.shared.count(response.stat());
                    response.write_to(&mut connection.output, close);
                    connection.input.drain(..consumed);
                    connection.closing |= close;
                }
            }
        }
    }

    fn answer_error(&self, connection: &mut Connection, response: Response) {
        self.shared.count(response.stat());
        response.write_to(&mut connection.output, true);
        connection.input.clear();
        connection.closing = true;
    }

    fn sweep_idle(&mut self, idle_timeout: Duration) {
        let now = Instant::now();
        for slot in 0..self.connections.len() {
            let (idle, lingered) = self.connections[slot].as_ref().map_or(
                (false, false),
                |connection| match connection.linger_until {
                    Some(until) => (false, now >= until),
                    None => (
                        now.duration_since(connection.last_active) >= idle_timeout,
                        false,
                    ),
                },
            );
            if idle || lingered {
                if let Some(connection) = self.connections[slot].take() {
                    if idle {
                        self.shared.count(Stat::ConnectionsIdleClosed);
                    }
                    self.close(slot, connection);
                }
            }
        }
    }

    fn close(&mut self, slot: usize, mut connection: Connection) {
        // Deregistering a socket about to be closed can only fail if it was never
        // registered; closing it is what matters.
        let _ = self.poll.registry().deregister(&mut connection.stream);
        self.free.push(slot);
        self.open -= 1;
    }
}

/// Reads and throws away what a lingering connection still sends; false at EOF or error.
fn discard_input(connection: &mut Connection) -> bool {
    let mut chunk = [0u8; READ_CHUNK_BYTES];
    loop {
        match connection.stream.read(&mut chunk) {
            Ok(0) => return false,
            Ok(_) => {}
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => return true,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
}

/// Writes what is pending; false when the connection should close now (broken). A
/// closing connection whose answers are all written is shut for writing and lingers
/// (see [`LINGER`]).
fn flush(connection: &mut Connection) -> bool {
    while connection.written < connection.output.len() {
        match connection
            .stream
            .write(&connection.output[connection.written..])
        {
            Ok(0) => return false,
            Ok(written) => connection.written += written,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => return true,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return false,
        }
    }
    connection.output.clear();
    connection.written = 0;
    if connection.closing {
        // The client sees EOF after the last answer; what it still sends is discarded.
        if connection
            .stream
            .shutdown(std::net::Shutdown::Write)
            .is_err()
        {
            return false;
        }
        connection.linger_until = Some(Instant::now() + LINGER);
        return discard_input(connection);
    }
    true
}

enum Parsed {
    /// More bytes are needed.
    Partial,
    /// Answer this and close.
    Bad(Response),
    Request {
        request: Request,
        /// Bytes of `input` the request took, head and body.
        consumed: usize,
        /// The client asked to close after the answer (or spoke HTTP/1.0 without
        /// keep-alive).
        close: bool,
    },
}

/// The request at the front of `input`, if it is whole.
fn parse(input: &[u8], settings: &AdminConfig) -> Parsed {
    let mut headers = vec![httparse::EMPTY_HEADER; settings.max_headers];
    let mut head = httparse::Request::new(&mut headers);
    let head_bytes = match head.parse(input) {
        Ok(httparse::Status::Complete(bytes)) => bytes,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(httparse::Error::TooManyHeaders) => {
            return Parsed::Bad(Response::too_many_headers(settings.max_headers))
        }
        Err(error) => return Parsed::Bad(Response::bad_request(&format!("bad request: {error}"))),
    };
    let mut body_bytes = 0usize;
    let mut close = head.version == Some(0);
    for header in head.headers.iter() {
        if header.name.eq_ignore_ascii_case("content-length") {
            let length = std::str::from_utf8(header.value)
                .ok()
                .and_then(|text| text.trim().parse::<usize>().ok());
            match length {
                Some(length) => body_bytes = length,
                None => return Parsed::Bad(Response::bad_request("bad Content-Length")),
            }
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            return Parsed::Bad(Response::length_required());
        } else if header.name.eq_ignore_ascii_case("connection") {
            let value = header.value;
            if value.eq_ignore_ascii_case(b"close") {
                close = true;
            } else if value.eq_ignore_ascii_case(b"keep-alive") {
                close = false;
            }
        }
    }
    let consumed = head_bytes.saturating_add(body_bytes);
    if consumed > settings.max_request_bytes {
        return Parsed::Bad(Response::too_large(settings.max_request_bytes));
    }
    if input.len() < consumed {
        return Parsed::Partial;
    }
    let target = head.path.unwrap_or("/");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    Parsed::Request {
        request: Request {
            method: head.method.unwrap_or("").to_string(),
            path: path.to_string(),
            query: query.to_string(),
            body: input[head_bytes..consumed].to_vec(),
        },
        consumed,
        close,
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn settings() -> AdminConfig {
        let mut settings = crate::config::Config::default().admin;
        settings.max_headers = 4;
        settings.max_request_bytes = 1024;
        settings
    }

    #[test]
    fn a_whole_request_is_parsed_with_its_body_and_query() {
        let input = b"PUT /limits?dry=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}GET";
        match parse(input, &settings()) {
            Parsed::Request {
                request,
                consumed,
                close,
            } => {
                assert_eq!(request.method, "PUT");
                assert_eq!(request.path, "/limits");
                assert_eq!(request.query, "dry=1");
                assert_eq!(request.body, b"{}");
                assert_eq!(consumed, input.len() - 3);
                assert!(!close);
            }
            _ => panic!("not parsed"),
        }
    }

    #[test]
    fn partial_bad_and_oversized_requests_are_told_apart() {
        let settings = settings();
        assert!(matches!(
            parse(b"GET /metrics HTTP/1.1\r\nHost:", &settings),
            Parsed::Partial
        ));
        assert!(matches!(
            parse(
                b"PUT /limits HTTP/1.1\r\nContent-Length: 5\r\n\r\n{}",
                &settings
            ),
            Parsed::Partial
        ));
        let status = |input: &[u8]| match parse(input, &settings) {
            Parsed::Bad(response) => response.status,
            _ => 0,
        };
        assert_eq!(status(b"GET /\x01 HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(
            status(b"GET / HTTP/1.1\r\na: 1\r\nb: 2\r\nc: 3\r\nd: 4\r\ne: 5\r\n\r\n"),
            431
        );
        assert_eq!(
            status(b"PUT / HTTP/1.1\r\nContent-Length: 5000\r\n\r\n"),
            413
        );
        assert_eq!(status(b"PUT / HTTP/1.1\r\nContent-Length: x\r\n\r\n"), 400);
        assert_eq!(
            status(b"PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            411
        );
        match parse(b"GET /ready HTTP/1.0\r\n\r\n", &settings) {
            Parsed::Request { close, .. } => assert!(close, "HTTP/1.0 closes by default"),
            _ => panic!("not parsed"),
        }
    }
}
