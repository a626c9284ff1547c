//! What one shard shares with the threads around it: the producers that feed it (new
//! ingress links, the shared rings, the backpressure signal), the readers of its counters,
//! and whoever has to wake it.

use std::sync::OnceLock;

use crate::fault::FaultSwitch;
use crate::message::{ConnectionId, Message};
use crate::metrics::PublishedCounters;
use crate::outcome::Completion;
use crate::ring::{spsc, Mpmc};
use crate::sync::{Arc, AtomicBool, AtomicUsize, Mutex};
use crate::wait::{self, Doorbell, Handshake, Sleeper};

use super::queue::Origin;

/// How a shard sleeping in its handler's event source is woken (see
/// [`ShardContext::set_waker`](super::handler::ShardContext::set_waker)).
pub(crate) type EventWaker = Box<dyn Fn() + Send + Sync>;

/// The shard that owns `connection` among `shard_count`: a multiply-shift hash (Fibonacci
/// hashing), so consecutive ids spread evenly, the map needs no table and it never changes
/// while the engine runs.
#[inline]
pub(crate) fn shard_of_connection(connection: ConnectionId, shard_count: usize) -> usize {
    let mixed = connection.0.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    ((mixed >> 32) as usize * shard_count) >> 32
}

/// State one shard shares with the engine and the producers.
pub(crate) struct ShardShared {
    /// New `Ingress` links, picked up by the shard once per loop.
    pub(crate) registrations: Mpmc<ShardLink>,
    /// Submissions from every `SharedIngress`.
    pub(crate) shared_submissions: Mpmc<Message>,
    /// Completions for them.
    pub(crate) shared_completions: Mpmc<Completion>,
    /// Shared submissions whose completions are not yet collected (the credit that keeps
    /// `shared_completions` from overflowing).
    pub(crate) shared_outstanding: AtomicUsize,
    pub(crate) published: PublishedCounters,
    /// The shard thread, and the flag it raises before it parks; producers unpark it when
    /// they see the flag.
    pub(crate) sleeper: Sleeper,
    /// Wakes the shard from its handler's event source (the TCP front end's epoll), where
    /// it sleeps instead of parking when its handler has one (`Handler::wait`); set once,
    /// by the handler, through `ShardContext::set_waker`.
    pub(crate) event_waker: OnceLock<EventWaker>,
    /// The shard's backpressure signal (handler queue at or over its threshold).
    pub(crate) backpressure: AtomicBool,
    /// Whether pinning this shard to its core succeeded.
    pub(crate) pinned: AtomicBool,
    /// Test hooks (feature `fault-injection`); shared with the shard's core.
    pub(crate) fault: Arc<FaultSwitch>,
}

impl ShardShared {
    /// A shard's shared state with rings of `ring_capacity` submissions and
    /// `completion_capacity` completions (see `ingress::completion_capacity`), counters for
    /// `tenant_count` tenants, and room for `ingresses_max` ingress registrations.
    pub(crate) fn new(
        ring_capacity: usize,
        completion_capacity: usize,
        tenant_count: usize,
        ingresses_max: usize,
    ) -> Self {
        Self {
            registrations: Mpmc::new(ingresses_max),
            shared_submissions: Mpmc::new(ring_capacity),
            shared_completions: Mpmc::new(completion_capacity),
            shared_outstanding: AtomicUsize::new(0),
            published: PublishedCounters::new(tenant_count),
            sleeper: Sleeper::default(),
            event_waker: OnceLock::new(),
            backpressure: AtomicBool::new(false),
            pinned: AtomicBool::new(false),
            fault: Arc::default(),
        }
    }

    /// Wakes the shard if it sleeps (or is about to): a producer's check, one Relaxed load
    /// per submission, which may miss a shard going to sleep (see the wait module); the
    /// miss costs at most the wait timeout.
    #[inline]
    pub(crate) fn wake_if_sleeping(&self) {
        wait::wake_if_sleeping(&self.sleeper.sleeping, Handshake::Relaxed, || self.wake());
    }

    /// Wakes the shard if it sleeps, never missing one that is about to: for the control
    /// thread, whose commands must not wait out a wait timeout (up to a millisecond in an
    /// event source, see `Handler::wait`). Commands are rare next to messages, so the fence
    /// is affordable here and not on the producers' path.
    pub(crate) fn wake_if_sleeping_fenced(&self) {
        wait::wake_if_sleeping(&self.sleeper.sleeping, Handshake::Fenced, || self.wake());
    }

    /// Wakes the shard wherever it sleeps: parked, or in its handler's event source.
    pub(crate) fn wake(&self) {
        self.sleeper.unpark();
        if let Some(waker) = self.event_waker.get() {
            waker();
        }
    }
}

/// The shard's end of one ingress's rings.
pub(crate) struct ShardLink {
    pub(crate) origin: Origin,
    pub(crate) submissions: spsc::Consumer<Message>,
    pub(crate) completions: spsc::Producer<Completion>,
    /// Where the shard leaves `submissions` when it exits, so the ingress can refuse what
    /// it pushed too late for the shard to see.
    pub(crate) orphan: Arc<Mutex<Option<spsc::Consumer<Message>>>>,
    /// Where the ingress waits for its rings to move, rung after posting to `completions` or
    /// taking from `submissions`. It is also the ingress index's token: held while the shard
    /// keeps this link, and the engine reuses an index only once no shard (and no ingress)
    /// holds it.
    pub(crate) doorbell: Arc<Doorbell>,
}

impl ShardLink {
    /// The shard's last act with this link: leaves the submission ring where the ingress
    /// refuses (`ShuttingDown`) whatever it pushed too late for the shard to see.
    pub(crate) fn leave_orphan(self) {
        let mut place = self
            .orphan
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *place = Some(self.submissions);
    }
}
