//! Worker mode (`spillway serve --workers ADDR`, `docs/WORKERS.md`): worker processes in
//! any language connect, declare a credit, and serve the messages the engine admits.
//!
//! [`protocol`] is the wire format as pure code. [`WorkerPool`] is the [`Handler`] that
//! speaks it: on each shard it accepts worker connections on the shared listener, sends
//! admitted messages to workers with credit (highest priority first: the shard's queue
//! order), and completes each from its Answer through the engine's deferred completions
//! ([`ShardContext::defer`]); a worker that dies, hangs or sends garbage is cut and what
//! it held fails `worker_lost` or `worker_timeout` (idempotent messages are retried once on
//! another worker first).
//!
//! [`Handler`]: crate::handler::Handler
//! [`ShardContext::defer`]: crate::handler::ShardContext::defer

pub mod protocol;

mod connection;
mod listener;
mod log;
mod pool;

pub use listener::{WorkerAddress, WorkerListenError, WorkerListener, WorkerStats};
pub use pool::{NoInner, WorkerPool};
