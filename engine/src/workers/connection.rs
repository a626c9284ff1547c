//! One worker connection on its shard: the socket, the frames read and to write, its
//! credit, and the Works it holds.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::io::{self, Read, Write};

use mio::event::Source;
use mio::{Interest, Registry, Token};

use crate::handler::Ticket;
use crate::message::ConnectionIdHasher;

use super::protocol::{FrameReader, FromWorker};

/// A registered worker socket.
pub(super) enum Stream {
    Tcp(mio::net::TcpStream),
    Unix(mio::net::UnixStream),
}

impl Stream {
    pub(super) fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(stream) => stream.read(buffer),
            Stream::Unix(stream) => stream.read(buffer),
        }
    }

    pub(super) fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(stream) => stream.write(bytes),
            Stream::Unix(stream) => stream.write(bytes),
        }
    }

    pub(super) fn register(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        let interest = Interest::READABLE | Interest::WRITABLE;
        match self {
            Stream::Tcp(stream) => stream.register(registry, token, interest),
            Stream::Unix(stream) => stream.register(registry, token, interest),
        }
    }

    pub(super) fn deregister(&mut self, registry: &Registry) {
        // Closing the descriptor removes it from epoll anyway; this only tidies early.
        let _ = match self {
            Stream::Tcp(stream) => stream.deregister(registry),
            Stream::Unix(stream) => stream.deregister(registry),
        };
    }
}

/// A Work a worker holds.
#[derive(Clone, Copy, Debug)]
pub(super) struct HeldWork {
    pub(super) ticket: Ticket,
    /// When the Work was queued for the worker (engine clock, ns).
    pub(super) sent_ns: u64,
    /// This is the message's second worker.
    pub(super) retry: bool,
}

/// Where the worker is in the conversation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Phase {
    /// Connected; its Hello not read yet.
    Hello,
    /// Welcomed: it takes Works.
    Serving,
}

/// One worker.
pub(super) struct WorkerConnection {
    pub(super) stream: Stream,
    pub(super) worker_id: u64,
    pub(super) name: String,
    pub(super) phase: Phase,
    pub(super) reader: FrameReader<FromWorker>,
    /// Encoded frames not yet written.
    pub(super) out: Vec<u8>,
    /// Credit declared (Hello and Credit frames), at most `WORKER_CREDIT_MAX`.
    pub(super) credit: u32,
    /// Works it holds, by work id (the ticket's number).
    pub(super) held: HashMap<u64, HeldWork, BuildHasherDefault<ConnectionIdHasher>>,
    /// Listed for reading this turn (an event, or bytes left by the per-turn budget).
    pub(super) read_pending: bool,
}

impl WorkerConnection {
    pub(super) fn new(stream: Stream, worker_id: u64, max_frame_bytes: u32) -> Self {
        Self {
            stream,
            worker_id,
            name: String::new(),
            phase: Phase::Hello,
            reader: FrameReader::new(max_frame_bytes),
            out: Vec::new(),
            credit: 0,
            held: HashMap::default(),
            read_pending: true,
        }
    }

    /// Credit not used by a held Work.
    pub(super) fn free_credit(&self) -> usize {
        match self.phase {
            Phase::Serving => (self.credit as usize).saturating_sub(self.held.len()),
            Phase::Hello => 0,
        }
    }

    /// Writes what it can of `out`. `Err`: the connection failed.
    pub(super) fn flush(&mut self) -> io::Result<()> {
        let mut written = 0;
        while written < self.out.len() {
            match self.stream.write(&self.out[written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(count) => written += count,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(error),
            }
        }
        self.out.drain(..written);
        Ok(())
    }
}
