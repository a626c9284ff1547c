//! The TCP server: the engine on the network, one mio event loop per shard.
//!
//! [`TcpServer::bind`] opens one listening socket. [`TcpServer::front_end`] wraps the user's
//! [`Handler`] in a [`TcpFrontEnd`], which the engine clones onto every shard. On its shard,
//! each clone opens its own mio `Poll` the first time the shard loop calls
//! [`Handler::poll`], registers a duplicate of the listening socket in it, and from then on
//! serves the connections it accepted: thread per core, with no hand-off between threads.
//! Every shard may accept, and the kernel gives each new connection to exactly one of them;
//! a busy shard accepts less often, so new connections drift to idle ones.
//!
//! Per turn of the shard loop the front end, in this order:
//! 1. writes what is due: replies that completed since the last turn, flow signals, Pongs;
//! 2. asks its `Poll` for readiness without waiting, accepts, reads, decodes each frame and
//!    admits each Submit through [`ShardContext::admit`], which answers at once: a refusal
//!    or a shed becomes a Reply right away, an admitted message's Reply comes with its
//!    completion ([`Handler::completed`]);
//! 3. every [`NetConfig::housekeeping_interval_ns`], checks the timers: the hello and
//!    frame timeouts, closing connections past their close timeout, and flow-signal changes
//!    that only time makes (a pause running out).
//!
//! A graceful stop takes three steps: [`TcpServer::begin_stop`] (the kernel refuses new
//! connections; each Reply is written as soon as its message completes), then
//! [`Engine::shutdown`](crate::engine::Engine::shutdown) (what is queued runs until
//! `control.drain_timeout_ns` after the stop and is cancelled then, each message with its
//! Reply), during which each shard's front end, once its shard is done, writes every
//! connection's remaining Replies and `Error shutting_down`, and closes it within
//! [`NetConfig::close_timeout_ns`].
//!
//! A connection speaks the protocol version of its Hello: in version 2 a Reply carries the
//! handler's response or error text, copied from the completion's shared buffer into the
//! connection's write buffer when it is written (see `write`); in version 1 it carries
//! neither, byte for byte as before. The send buffer bounds the Replies' bytes as well as
//! their count ([`EgressConfig::buffer_bytes`](crate::config::EgressConfig::buffer_bytes)).
//!
//! The protocol is `docs/PROTOCOL.md`; section 7.3 is the contract this module keeps for
//! every violation, and section 9 the flow signals ([`super::egress`] decides them). Every
//! closure and every lost reply is counted by reason in [`NetStats`].
//!
//! Its parts: `config` ([`ServerConfig`]), `listener` ([`TcpServer`] and the accept loop),
//! `front_end` ([`TcpFrontEnd`], the handler on each shard), `shard` (one shard's event
//! loop and its turn), `connection` (one connection's state), `read` (reading, decoding and
//! serving frames), `read_buffer` (the shard's read buffer, whose slices become payloads
//! without a copy, and the bound on what they keep alive), `write` (encoding and writing what is due, the send buffer's offers),
//! `close` (Error frames, closing, shutdown), `timers` (hello, frame and close deadlines)
//! and `stats` ([`NetStats`] and the per-shard counters).
//!
//! ```no_run
//! use spillway::config::Config;
//! use spillway::engine::Engine;
//! use spillway::message::Message;
//! use spillway::net::server::{ServerConfig, TcpServer};
//!
//! let server = TcpServer::bind("127.0.0.1:7878", ServerConfig::default())?;
//! let engine = Engine::builder()
//!     .config(Config::default())
//!     .handler(server.front_end(|_: &Message| Ok(())))
//!     .start()?;
//! println!("serving on {}", server.local_addr());
//! // ... later:
//! server.begin_stop()?;
//! let engine_stats = engine.shutdown();
//! let net = server.stats();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#[cfg(doc)]
use crate::config::NetConfig;
#[cfg(doc)]
use crate::handler::{Handler, ShardContext};

mod close;
mod config;
mod connection;
mod front_end;
mod listener;
mod read;
mod read_buffer;
mod shard;
mod shared;
mod stats;
mod timers;
mod write;

pub use config::ServerConfig;
pub use front_end::TcpFrontEnd;
pub use listener::TcpServer;
pub use stats::{CloseReason, NetStats};

/// Connection ids the server gives out start here, so they never collide with the ids an
/// embedding application picks for its own in-process ingresses (which count up from 0).
pub const CONNECTION_ID_BASE: u64 = 1 << 63;
