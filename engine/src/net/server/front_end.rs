//! The [`TcpFrontEnd`]: the [`Handler`] an engine clones onto every shard, which opens the
//! shard's event loop on its first turn and hands the wrapped handler every admitted message.

use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::handler::{Handler, HandlerError, ShardContext};
use crate::message::Message;
use crate::outcome::Completion;
use crate::sync::Ordering;

use super::shard::ShardNet;
use super::shared::Shared;
use super::stats::bump;
#[cfg(doc)]
use super::TcpServer;
use super::CONNECTION_ID_BASE;

/// A [`Handler`] that serves TCP connections on its shard and hands every admitted message
/// to the handler it wraps. Made by [`TcpServer::front_end`]; give it to
/// [`EngineBuilder::handler`](crate::engine::EngineBuilder::handler).
pub struct TcpFrontEnd<H> {
    pub(super) inner: H,
    pub(super) shared: Arc<Shared>,
    /// This shard's event loop and connections, opened on the shard's first turn.
    pub(super) shard: Option<ShardNet>,
    /// When opening them failed: no new try before then.
    pub(super) open_retry_ns: u64,
}

impl<H: Clone> Clone for TcpFrontEnd<H> {
    /// A front end for another shard: the same handler and listener, no connections.
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
            shard: None,
            open_retry_ns: 0,
        }
    }
}

impl<H: Handler> Handler for TcpFrontEnd<H> {
    fn handle(
        &mut self,
        message: &Message,
        context: &mut ShardContext<'_>,
    ) -> Result<Bytes, HandlerError> {
        self.inner.handle(message, context)
    }

    fn completed(&mut self, completion: &Completion) {
        if completion.connection.0 < CONNECTION_ID_BASE {
            // Work the wrapped handler admitted itself.
            self.inner.completed(completion);
            return;
        }
        match self.shard.as_mut() {
            Some(net) => {
                net.completed(completion);
                // Relaxed: see `TcpServer::begin_stop`.
                if self.shared.stopping.load(Ordering::Relaxed) {
                    // Stopping: the shard no longer turns while the engine finishes its
                    // queue, so the Reply is written now rather than at the very end (a
                    // system call per completion, only while stopping).
                    net.flush_dirty(net.turn_ns);
                }
            }
            None => self.inner.completed(completion),
        }
    }

    fn poll(&mut self, context: &mut ShardContext<'_>) -> usize {
        let own = self.inner.poll(context);
        if self.shard.is_none() {
            if context.now_ns() < self.open_retry_ns {
                return own;
            }
            match ShardNet::open(&self.shared, context) {
                Ok(net) => self.shard = Some(net),
                // Without a Poll or a listener (out of descriptors, say) this shard serves no
                // sockets; the others still do. Counted as an accept backoff, and retried
                // after one, not every turn.
                Err(_) => {
                    self.open_retry_ns =
                        context.now_ns() + self.shared.config.net.accept_backoff_ns;
                    let counters = &self.shared.counters[context.shard()];
                    bump(&counters.accept_backoffs, 1);
                    return own;
                }
            }
        }
        let net = self.shard.as_mut().expect("opened above");
        own + net.turn(context)
    }

    fn wait(&mut self, timeout: Duration) -> bool {
        match self.shard.as_mut() {
            Some(net) if net.sleeps_in_epoll => net.wait(timeout),
            // The wrapped handler's own event source, if it set the waker first.
            _ => self.inner.wait(timeout),
        }
    }

    fn wait_fd(&self) -> Option<RawFd> {
        match self.shard.as_ref() {
            Some(net) if net.sleeps_in_epoll => net.wait_fd(),
            _ => self.inner.wait_fd(),
        }
    }

    fn stopped(&mut self, context: &mut ShardContext<'_>) {
        if let Some(net) = self.shard.as_mut() {
            net.shut_down(context.now_ns());
        }
        self.shard = None;
        self.inner.stopped(context);
    }
}
