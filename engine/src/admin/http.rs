//! The admin endpoint's HTTP/1.1, served in the control thread's own event loop (a
//! [`Hosted`] service), every connection bounded.
//!
//! Health checks are the reason for the host: a `GET /health` read on the control thread
//! is served there as any control request, and its answer written to the socket there
//! when the last shard replies, so no other thread wakes between the checker and the
//! control plane (on a machine whose cores the shards keep busy, each wake-up is a wait
//! for a core). Every other URL costs more than the control thread should spend (a
//! scrape encodes every series; a drain or a reload waits on the control plane itself):
//! those requests go to the admin worker thread, which answers them one at a time as a
//! handle would, and hands the answer back for the control thread to write.
//!
//! Requests are parsed by `httparse` (head) and `Content-Length` (body; chunked bodies are
//! refused with 411, as a small admin API may). Keep-alive is the HTTP/1.1 default, so a
//! Prometheus scraping every second reuses one connection. A connection's requests are
//! answered in order, one at a time: the next is not parsed while one is awaited.

use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Registry, Token};

use super::routes::{self, Request, Response};
use super::{AdminShared, Stat};
use crate::config::AdminConfig;
use crate::control::{
    health_of, Answer, Command, Control, ControlDesk, ControlError, HealthKind, Hosted,
    HOSTED_TOKENS_MAX,
};

const LISTENER: Token = Token(HOSTED_TOKENS_MAX - 1);
/// How often idle connections are swept, at least: the control thread waits no longer
/// than this between turns while the endpoint is up.
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
/// How long [`StopHandle::stop`] waits for the control thread to drop the endpoint.
const STOP_WAIT: Duration = Duration::from_secs(5);

/// Stops the endpoint: the control thread drops it (closing the listener and every
/// connection), then the worker thread ends.
pub(super) struct StopHandle {
    stop: Arc<AtomicBool>,
    control: Control,
    /// Disconnected when the control thread has dropped the endpoint.
    dropped: Receiver<()>,
    worker: Option<JoinHandle<()>>,
}

impl StopHandle {
    pub(super) fn stop(&mut self) {
        let Some(worker) = self.worker.take() else {
            return;
        };
        // Release pairs with the Acquire load in `HttpFront::stopped`: nothing else is
        // published by the flag, but the control thread must see it after the wake-up.
        self.stop.store(true, Ordering::Release);
        self.control.wake_thread();
        // Not taken yet (the engine stopped first, say): dropped here instead.
        drop(self.control.unhost());
        // Disconnected once the endpoint is dropped, wherever; a control thread that
        // never gets to it (stuck) leaves the port bound, and the wait bounded.
        let _ = self.dropped.recv_timeout(STOP_WAIT);
        // The worker ends when the endpoint's job channel closes, after the request in
        // hand (bounded by the control handle's timeout); a panic in it was reported.
        let _ = worker.join();
    }
}

/// Starts the endpoint on `listener`: the worker thread now, the HTTP in the control
/// thread's loop from its next turn.
pub(super) fn start(
    listener: std::net::TcpListener,
    settings: AdminConfig,
    shared: Arc<AdminShared>,
) -> io::Result<StopHandle> {
    listener.set_nonblocking(true)?;
    // Each connection has at most one request at the worker, so neither channel ever
    // holds more than `max_connections`: sends never block.
    let (jobs, job_inbox) = sync_channel::<Job>(settings.max_connections.max(1));
    let (answer_outbox, answers) = sync_channel::<Done>(settings.max_connections.max(1));
    let worker_shared = Arc::clone(&shared);
    let worker = std::thread::Builder::new()
        .name("spillway-admin".to_string())
        .spawn(move || run_worker(&worker_shared, &job_inbox, &answer_outbox))?;
    let stop = Arc::new(AtomicBool::new(false));
    let (dropped_signal, dropped) = sync_channel(0);
    let control = shared.control.clone();
    let front = HttpFront {
        listener: TcpListener::from_std(listener),
        registry: None,
        connections: Vec::new(),
        free: Vec::new(),
        open: 0,
        awaiting_health: 0,
        accept_again: false,
        last_sweep: Instant::now(),
        settings,
        shared,
        stop: Arc::clone(&stop),
        jobs,
        answers,
        next_job: 0,
        _dropped_signal: dropped_signal,
    };
    control.host(Box::new(front));
    Ok(StopHandle {
        stop,
        control,
        dropped,
        worker: Some(worker),
    })
}

/// A request for the worker thread, from connection `slot`'s job `job`.
struct Job {
    slot: usize,
    job: u64,
    request: Request,
}

/// The worker's answer to a [`Job`].
struct Done {
    slot: usize,
    job: u64,
    response: Response,
}

/// The worker thread: answers the requests that are not health checks, one at a time, and
/// wakes the control thread to write each answer.
fn run_worker(shared: &AdminShared, jobs: &Receiver<Job>, answers: &SyncSender<Done>) {
    // It calls the control plane (drains, the breaker, limits) while the shards saturate
    // every core: it runs favoured like the control thread it asks (when that was granted).
    if let Some(nice) = shared.control.thread_nice() {
        crate::control::raise_thread_priority(nice);
    }
    while let Ok(Job { slot, job, request }) = jobs.recv() {
        let response = routes::answer(shared, &request);
        if answers
            .send(Done {
                slot,
                job,
                response,
            })
            .is_err()
        {
            return;
        }
        shared.control.wake_thread();
    }
}

/// What a connection waits for before it reads its next request.
enum Awaiting {
    /// A health check served by the control thread.
    Health {
        kind: HealthKind,
        answer: Receiver<Answer>,
        deadline: Instant,
        close: bool,
    },
    /// The worker's answer to job `job`.
    Worker { job: u64, close: bool },
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
    /// The request being answered elsewhere, if any: nothing more is read until then.
    awaiting: Option<Awaiting>,
}

/// The endpoint as the control thread runs it.
struct HttpFront {
    listener: TcpListener,
    /// The control thread's registry, from `register` on.
    registry: Option<Registry>,
    /// Slots indexed by token; `free` lists the empty ones.
    connections: Vec<Option<Connection>>,
    free: Vec<usize>,
    open: usize,
    /// Connections awaiting a health check (their answers are looked for each turn).
    awaiting_health: usize,
    /// An accept failed (out of descriptors, say): retried at each sweep, since no new
    /// readiness event comes for connections already waiting in the backlog.
    accept_again: bool,
    last_sweep: Instant,
    settings: AdminConfig,
    shared: Arc<AdminShared>,
    stop: Arc<AtomicBool>,
    jobs: SyncSender<Job>,
    answers: Receiver<Done>,
    next_job: u64,
    /// Dropped with the endpoint, which `StopHandle::stop` waits for.
    _dropped_signal: SyncSender<()>,
}

impl Hosted for HttpFront {
    fn register(&mut self, registry: &Registry) -> io::Result<()> {
        registry.register(&mut self.listener, LISTENER, Interest::READABLE)?;
        self.registry = Some(registry.try_clone()?);
        Ok(())
    }

    fn turn(&mut self, events: &Events, desk: &mut dyn ControlDesk) -> bool {
        let mut did = false;
        for event in events.iter() {
            match event.token() {
                LISTENER => {
                    self.accept();
                    did = true;
                }
                Token(slot) if slot < self.connections.len() => {
                    self.serve(slot, desk);
                    did = true;
                }
                // The control thread's own waker.
                Token(_) => {}
            }
        }
        while let Ok(done) = self.answers.try_recv() {
            self.deliver_worker_answer(done, desk);
            did = true;
        }
        if self.awaiting_health > 0 {
            did |= self.deliver_health_answers(desk);
        }
        let now = Instant::now();
        if now.duration_since(self.last_sweep) >= SWEEP_INTERVAL {
            self.last_sweep = now;
            if self.accept_again {
                self.accept();
            }
            self.sweep_idle(Duration::from_nanos(self.settings.idle_timeout_ns));
        }
        did
    }

    fn wait_max(&self) -> Duration {
        SWEEP_INTERVAL
    }

    fn stopped(&self) -> bool {
        // Acquire: pairs with `StopHandle::stop`.
        self.stop.load(Ordering::Acquire)
    }
}

impl HttpFront {
    fn accept(&mut self) {
        self.accept_again = false;
        let Some(registry) = &self.registry else {
            return;
        };
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
                    if registry
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
                        awaiting: None,
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

    /// Reads, answers every complete request it can, writes; closes when done or broken.
    fn serve(&mut self, slot: usize, desk: &mut dyn ControlDesk) {
        let Some(mut connection) = self.connections.get_mut(slot).and_then(Option::take) else {
            return;
        };
        let keep = loop {
            if connection.linger_until.is_some() {
                break discard_input(&mut connection);
            }
            if !self.read_and_answer(slot, &mut connection, desk) || !flush(&mut connection) {
                break false;
            }
            // Wait for the socket when answers are still unwritten, or when everything
            // was read, or for the answer awaited; go round again when reading paused for
            // answers now written.
            if connection.linger_until.is_some()
                || connection.awaiting.is_some()
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
    /// has nothing more, the connection is closing or awaits an answer, or unwritten
    /// answers reach [`OUTPUT_PENDING_MAX_BYTES`] (`read_paused`). False when the
    /// connection is broken.
    fn read_and_answer(
        &mut self,
        slot: usize,
        connection: &mut Connection,
        desk: &mut dyn ControlDesk,
    ) -> bool {
        let limit = self.settings.max_request_bytes;
        let mut chunk = [0u8; READ_CHUNK_BYTES];
        connection.read_paused = false;
        self.answer_complete_requests(slot, connection, desk);
        while !connection.closing && connection.awaiting.is_none() {
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
                    self.answer_complete_requests(slot, connection, desk);
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return false,
            }
        }
        true
    }

    /// Parses the whole requests at the front of `input` and answers them, while the
    /// unwritten answers are under [`OUTPUT_PENDING_MAX_BYTES`], until one must be awaited:
    /// a health check (served by the control thread, `desk`) or any other URL (the worker).
    fn answer_complete_requests(
        &mut self,
        slot: usize,
        connection: &mut Connection,
        desk: &mut dyn ControlDesk,
    ) {
        while !connection.closing
            && connection.awaiting.is_none()
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
                    connection.input.drain(..consumed);
                    if let Some(kind) = routes::health_kind(&request) {
                        connection.awaiting = Some(Awaiting::Health {
                            kind,
                            answer: desk.submit(Command::Health(kind)),
                            deadline: Instant::now() + self.shared.control.timeout(),
                            close,
                        });
                        self.awaiting_health += 1;
                        return;
                    }
                    let job = self.next_job;
                    self.next_job += 1;
                    match self.jobs.try_send(Job { slot, job, request }) {
                        Ok(()) => connection.awaiting = Some(Awaiting::Worker { job, close }),
                        // Cannot happen while each connection has one job at most (the
                        // channel holds `max_connections`); answered, not lost, if it does.
                        Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                            let response = Response::unavailable("the admin worker is busy");
                            answer(&self.shared, connection, &response, close);
                        }
                    }
                }
            }
        }
    }

    fn answer_error(&self, connection: &mut Connection, response: Response) {
        answer(&self.shared, connection, &response, true);
        connection.input.clear();
    }

    /// Writes the answer connection `slot` awaited, then goes on with what its client sent
    /// meanwhile (and writes it all).
    fn finish_awaited(
        &mut self,
        slot: usize,
        response: &Response,
        close: bool,
        desk: &mut dyn ControlDesk,
    ) {
        if let Some(connection) = self.connections[slot].as_mut() {
            connection.awaiting = None;
            answer(&self.shared, connection, response, close);
        }
        self.serve(slot, desk);
    }

    /// The worker's answer, for its connection if that still waits for it (it may have
    /// closed meanwhile, and its slot gone to another).
    fn deliver_worker_answer(&mut self, done: Done, desk: &mut dyn ControlDesk) {
        let Some(Some(connection)) = self.connections.get_mut(done.slot) else {
            return;
        };
        let Some(Awaiting::Worker { job, close }) = connection.awaiting else {
            return;
        };
        if job == done.job {
            self.finish_awaited(done.slot, &done.response, close, desk);
        }
    }

    /// Writes every health check's answer the control plane has given, or the timeout's
    /// for those it has not given in the handle's time. Whether any was.
    fn deliver_health_answers(&mut self, desk: &mut dyn ControlDesk) -> bool {
        let now = Instant::now();
        let mut delivered = false;
        for slot in 0..self.connections.len() {
            let Some(connection) = self.connections[slot].as_mut() else {
                continue;
            };
            let Some(Awaiting::Health {
                kind,
                answer,
                deadline,
                close,
            }) = &connection.awaiting
            else {
                continue;
            };
            let result = match answer.try_recv() {
                Ok(answer) => health_of(answer),
                Err(TryRecvError::Empty) if now < *deadline => continue,
                Err(TryRecvError::Empty) => {
                    Err(ControlError::Timeout(self.shared.control.timeout()))
                }
                Err(TryRecvError::Disconnected) => Err(ControlError::Stopped),
            };
            let (kind, close) = (*kind, *close);
            self.awaiting_health -= 1;
            let response = routes::health_response(&self.shared, kind, result);
            self.finish_awaited(slot, &response, close, desk);
            delivered = true;
        }
        delivered
    }

    fn sweep_idle(&mut self, idle_timeout: Duration) {
        let now = Instant::now();
        for slot in 0..self.connections.len() {
            let (idle, lingered) = self.connections[slot].as_ref().map_or(
                (false, false),
                |connection| match connection.linger_until {
                    Some(until) => (false, now >= until),
                    // A connection awaiting an answer is not idle: its client waits.
                    None if connection.awaiting.is_some() => (false, false),
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
        if let Some(Awaiting::Health { .. }) = connection.awaiting {
            self.awaiting_health -= 1;
        }
        // Deregistering a socket about to be closed can only fail if it was never
        // registered; closing it is what matters.
        if let Some(registry) = &self.registry {
            let _ = registry.deregister(&mut connection.stream);
        }
        self.free.push(slot);
        self.open -= 1;
    }
}

/// Writes `response` to the connection's output and counts it.
fn answer(shared: &AdminShared, connection: &mut Connection, response: &Response, close: bool) {
    shared.count(response.stat());
    response.write_to(&mut connection.output, close);
    connection.closing |= close;
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
