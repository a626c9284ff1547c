//! The front door: [`Engine::builder`] starts the shards, [`Engine::ingress`] gives a
//! producer thread its rings, [`Engine::stats`] reads the counters, and
//! [`Engine::shutdown`] winds everything down without losing a message.
//!
//! ```
//! use spillway::config::Config;
//! use spillway::engine::Engine;
//! use spillway::message::{ConnectionId, Message, MessageId};
//!
//! let mut config = Config::default();
//! config.shards = 2;
//! let engine = Engine::builder()
//!     .config(config)
//!     .handler(|_: &Message| Ok(()))
//!     .start()
//!     .unwrap();
//! let mut ingress = engine.ingress().unwrap();
//! let mut completions = Vec::new();
//! for id in 0..100 {
//!     let message = Message::new(ConnectionId(id % 7), MessageId(id));
//!     ingress.submit(message).unwrap();
//! }
//! while completions.len() < 100 {
//!     ingress.poll_completions(&mut completions);
//! }
//! drop(ingress);
//! let stats = engine.shutdown();
//! assert_eq!(stats.total.delivered, 100);
//! assert!(stats.reconciles());
//! ```

use std::sync::{Mutex, OnceLock};
use std::thread::{JoinHandle, Thread};

use crate::admission::breaker::CircuitBreaker;
use crate::admission::tenants::TenantTable;
use crate::clock::Clock;
use crate::config::{Config, ConfigError, INGRESSES_MAX};
use crate::control::protocol::{ShardCommand, ShardReply};
use crate::control::thread::ControlLink;
use crate::control::{Control, ControlShared};
use crate::handler::Handler;
use crate::ingress::{Ingress, ShardLink, SharedIngress};
use crate::message::{ConnectionId, Message, TenantId};
use crate::metrics::{PublishedCounters, Stats};
use crate::monitor::{AlertThresholds, Monitor};
use crate::outcome::Completion;
use crate::ring::{spsc, Mpmc};
use crate::shard::core::ShardCore;
use crate::sync::{Arc, AtomicBool, AtomicU64, AtomicUsize, Ordering};
use crate::wait::{self, Handshake, Waiter};

/// What can go wrong starting or using an engine.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A setting is out of range.
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    /// A shard thread could not be started.
    #[error("could not start shard thread {shard}: {source}")]
    Spawn {
        /// Which shard.
        shard: usize,
        /// The OS error.
        source: std::io::Error,
    },
    /// Every ingress index is held by a live `Ingress`.
    #[error("too many ingresses: at most {INGRESSES_MAX} may be alive at once")]
    TooManyIngresses,
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
    /// Raised by the shard before it parks; producers unpark it when they see it.
    pub(crate) sleeping: AtomicBool,
    pub(crate) thread: OnceLock<Thread>,
    /// Wakes the shard from its handler's event source (the TCP front end's epoll), where
    /// it sleeps instead of parking when its handler has one (`Handler::wait`); set once,
    /// by the handler, through `ShardContext::set_waker`.
    pub(crate) event_waker: OnceLock<EventWaker>,
    /// The shard's backpressure signal (handler queue at or over its threshold).
    pub(crate) backpressure: AtomicBool,
    /// Whether pinning this shard to its core succeeded.
    pub(crate) pinned: AtomicBool,
}

impl ShardShared {
    /// Wakes the shard if it sleeps (or is about to): a producer's check, one Relaxed load
    /// per submission, which may miss a shard going to sleep (see the wait module); the
    /// miss costs at most the wait timeout.
    #[inline]
    pub(crate) fn wake_if_sleeping(&self) {
        wait::wake_if_sleeping(&self.sleeping, Handshake::Relaxed, || self.wake());
    }

    /// Wakes the shard if it sleeps, never missing one that is about to: for the control
    /// thread, whose commands must not wait out a wait timeout (up to a millisecond in an
    /// event source, see `Handler::wait`). Commands are rare next to messages, so the fence
    /// is affordable here and not on the producers' path.
    pub(crate) fn wake_if_sleeping_fenced(&self) {
        wait::wake_if_sleeping(&self.sleeping, Handshake::Fenced, || self.wake());
    }

    pub(crate) fn wake(&self) {
        if let Some(thread) = self.thread.get() {
            thread.unpark();
        }
        if let Some(waker) = self.event_waker.get() {
            waker();
        }
    }
}

/// How a shard sleeping in its handler's event source is woken (see
/// [`ShardContext::set_waker`](crate::handler::ShardContext::set_waker)).
pub(crate) type EventWaker = Box<dyn Fn() + Send + Sync>;

/// Longest `EngineBuilder::start` waits for the control thread to apply its niceness.
const CONTROL_START_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// The shard that owns `connection` among `shard_count`: a multiply-shift hash (Fibonacci
/// hashing), so consecutive ids spread evenly and the map needs no table.
pub(crate) fn shard_of_connection(connection: ConnectionId, shard_count: usize) -> usize {
    let mixed = connection.0.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    ((mixed >> 32) as usize * shard_count) >> 32
}

/// State every thread of one engine shares.
pub(crate) struct EngineShared {
    pub(crate) config: Config,
    pub(crate) shards: Box<[ShardShared]>,
    pub(crate) breaker: Arc<CircuitBreaker>,
    pub(crate) tenants: Arc<TenantTable>,
    pub(crate) tenant_ids: Vec<TenantId>,
    pub(crate) clock: Clock,
    /// Set by `shutdown`: shards refuse new work, finish or cancel what is queued, exit.
    pub(crate) stopping: AtomicBool,
    /// Set once every shard thread has exited and been joined.
    pub(crate) stopped: AtomicBool,
    /// Submissions handed back because a ring had no room.
    pub(crate) ring_full: AtomicU64,
    /// The control plane's inboxes, latency book and monitor.
    pub(crate) control: ControlShared,
    /// One token per ingress index; an index is free when only this table holds its token.
    ingress_tokens: Mutex<Vec<Arc<()>>>,
}

impl EngineShared {
    /// The shard that owns `connection`: a multiply-shift hash of the id, so sequential ids
    /// spread evenly and the map never changes while the engine runs.
    #[inline]
    pub(crate) fn shard_of(&self, connection: ConnectionId) -> usize {
        shard_of_connection(connection, self.shards.len())
    }

    pub(crate) fn stats(&self) -> Stats {
        let counters: Vec<_> = self
            .shards
            .iter()
            .map(|shard| shard.published.read())
            .collect();
        let mut stats = Stats::collect(
            &counters,
            &self.tenant_ids,
            self.breaker.read().state(),
            // Relaxed: a statistic.
            self.ring_full.load(Ordering::Relaxed),
        );
        if let Ok(book) = self.control.latency.lock() {
            stats.control = book.stats();
        }
        stats
    }
}

/// A running engine. Dropping it shuts it down (as [`Engine::shutdown`] does).
pub struct Engine {
    shared: Arc<EngineShared>,
    threads: Vec<JoinHandle<()>>,
    control_thread: Option<JoinHandle<()>>,
}

/// Builds an [`Engine`]: settings, then a handler, then [`start`](EngineBuilder::start).
pub struct EngineBuilder<H = ()> {
    config: Config,
    handler: H,
}

impl Engine {
    /// Starts building an engine with the default (production) settings.
    pub fn builder() -> EngineBuilder {
        EngineBuilder {
            config: Config::default(),
            handler: (),
        }
    }

    /// A producer thread's handle, with a ring to and from every shard.
    pub fn ingress(&self) -> Result<Ingress, Error> {
        let mut tokens = self
            .shared
            .ingress_tokens
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let index = tokens
            .iter()
            .position(|token| Arc::strong_count(token) == 1)
            .ok_or(Error::TooManyIngresses)?;
        let token = Arc::new(());
        tokens[index] = Arc::clone(&token);
        Ok(Ingress::new(Arc::clone(&self.shared), index as u16, token))
    }

    /// A handle any number of threads may share.
    pub fn shared_ingress(&self) -> SharedIngress {
        SharedIngress::new(Arc::clone(&self.shared))
    }

    /// The control-plane handle.
    pub fn control(&self) -> Control {
        Control::new(Arc::clone(&self.shared))
    }

    /// A snapshot of every counter; each shard's part is consistent with itself.
    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }

    /// The shard that owns `connection`.
    pub fn shard_of(&self, connection: ConnectionId) -> usize {
        self.shared.shard_of(connection)
    }

    /// Number of shards.
    pub fn shards(&self) -> usize {
        self.shared.shards.len()
    }

    /// Whether every shard was pinned to its own core (false when pinning is off).
    pub fn pinned(&self) -> bool {
        self.shared
            .shards
            .iter()
            .all(|shard| shard.pinned.load(Ordering::Relaxed))
    }

    /// Memory a shard reserves per connection it can hold, in bytes: the connection's entry
    /// (token bucket, counters, queue heads) plus its share of the id index and of the
    /// round-robin rings. Allocated at start for `connections_per_shard_max` connections, so
    /// this is also what an idle connection costs.
    pub fn bytes_per_connection() -> usize {
        crate::shard::connections::ConnectionTable::bytes_per_connection()
            + crate::shard::queue::ROUND_ROBIN_BYTES_PER_CONNECTION
    }

    /// The niceness the control-plane thread runs at: `Some(nice)` once it applied
    /// `control.nice`, `None` if that was 0 or the system refused (no CAP_SYS_NICE), or the
    /// thread has not started yet.
    pub fn control_nice(&self) -> Option<i32> {
        self.shared.control.nice.get().copied().flatten()
    }

    /// The engine's clock (nanoseconds since start), for callers that timestamp work.
    pub fn clock(&self) -> &Clock {
        &self.shared.clock
    }

    /// Stops intake (later messages are refused `ShuttingDown`), finishes what is queued
    /// (or cancels it, per `shutdown_finishes_queued`), posts every completion, joins every
    /// thread, and returns the final counts. Messages an `Ingress` pushes after its shard's
    /// last look are refused by that ingress's next `poll_completions`.
    pub fn shutdown(mut self) -> Stats {
        self.stop();
        self.shared.stats()
    }

    fn stop(&mut self) {
        // Release: pairs with the shards' Acquire load; nothing else rides on it, but a
        // shard that sees it should also see any configuration written before.
        self.shared.stopping.store(true, Ordering::Release);
        for shard in self.shared.shards.iter() {
            shard.wake();
        }
        for thread in self.threads.drain(..) {
            // A shard thread only ends by returning: handler panics are caught per message.
            let _ = thread.join();
        }
        // The control plane goes last, so that drains under way can finish with the shards.
        // Release: pairs with the control thread's and the handles' Acquire loads.
        self.shared.control.stopping.store(true, Ordering::Release);
        self.shared.control.wake();
        if let Some(thread) = self.control_thread.take() {
            let _ = thread.join();
        }
        // Release: pairs with the ingresses' Acquire loads; every shard has exited, and its
        // submission rings wait in their orphan slots.
        self.shared.stopped.store(true, Ordering::Release);
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if !self.threads.is_empty() || self.control_thread.is_some() {
            self.stop();
        }
    }
}

impl<H> EngineBuilder<H> {
    /// Uses `config` (validated by [`start`](EngineBuilder::start)).
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// Uses `handler`; each shard runs its own clone.
    pub fn handler<H2: Handler + Clone>(self, handler: H2) -> EngineBuilder<H2> {
        EngineBuilder {
            config: self.config,
            handler,
        }
    }
}

impl<H: Handler + Clone> EngineBuilder<H> {
    /// Validates the settings, allocates every shard's tables and starts the shard threads.
    pub fn start(self) -> Result<Engine, Error> {
        let config = self.config;
        config.validate()?;
        let cores = std::thread::available_parallelism().map_or(1, |cores| cores.get());
        let shard_count = config.effective_shards(cores);
        let tenants = Arc::new(TenantTable::new(
            &config.tenants,
            config.caps.priority_threshold_percent,
        ));
        let breaker = Arc::new(CircuitBreaker::new());
        let shards: Box<[ShardShared]> = (0..shard_count)
            .map(|_| ShardShared {
                registrations: Mpmc::new(INGRESSES_MAX),
                shared_submissions: Mpmc::new(config.ring_capacity),
                shared_completions: Mpmc::new(crate::ingress::completion_capacity(&config)),
                shared_outstanding: AtomicUsize::new(0),
                published: PublishedCounters::new(tenants.len()),
                sleeping: AtomicBool::new(false),
                thread: OnceLock::new(),
                event_waker: OnceLock::new(),
                backpressure: AtomicBool::new(false),
                pinned: AtomicBool::new(false),
            })
            .collect();
        let shared = Arc::new(EngineShared {
            tenant_ids: tenants.tenant_ids().collect(),
            shards,
            breaker: Arc::clone(&breaker),
            tenants: Arc::clone(&tenants),
            clock: Clock::new(),
            stopping: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            ring_full: AtomicU64::new(0),
            control: ControlShared::new(Monitor::new(
                AlertThresholds {
                    warning_percent: config.monitor.warning_percent,
                    critical_percent: config.monitor.critical_percent,
                    overload_percent: config.monitor.overload_percent,
                },
                config.monitor.history,
            )),
            ingress_tokens: Mutex::new((0..INGRESSES_MAX).map(|_| Arc::new(())).collect()),
            config,
        });
        // Shards plus at least one producer thread compete for the cores.
        let waiting = wait::resolve(shared.config.wait, shard_count + 1, cores);
        let core_ids = core_affinity::get_core_ids().unwrap_or_default();
        let mut engine = Engine {
            shared: Arc::clone(&shared),
            threads: Vec::with_capacity(shard_count),
            control_thread: None,
        };
        let control_capacity = shared.config.control.ring_capacity;
        let mut control_links = Vec::with_capacity(shard_count);
        let mut shard_control_ends = Vec::with_capacity(shard_count);
        for _ in 0..shard_count {
            let (commands, mut shard_commands) = spsc::channel::<ShardCommand>(control_capacity);
            let (shard_replies, mut replies) = spsc::channel::<ShardReply>(control_capacity);
            // Control latency first: neither end may pause behind a stream (a no-op for
            // items too large to slip).
            shard_commands.set_slip(false);
            replies.set_slip(false);
            control_links.push(ControlLink { commands, replies });
            shard_control_ends.push(Some((shard_commands, shard_replies)));
        }
        for index in 0..shard_count {
            let core = ShardCore::new(
                index,
                shard_count,
                &shared.config,
                Arc::clone(&tenants),
                Arc::clone(&breaker),
            );
            let handler = self.handler.clone();
            let control_ends = shard_control_ends[index]
                .take()
                .expect("each shard takes its own control rings once");
            let engine_shared = Arc::clone(&shared);
            let pin_to = (shared.config.pinning && !core_ids.is_empty())
                .then(|| core_ids[index % core_ids.len()]);
            let thread = std::thread::Builder::new()
                .name(format!("spillway-shard-{index}"))
                .spawn(move || {
                    if let Some(core_id) = pin_to {
                        let pinned = core_affinity::set_for_current(core_id);
                        engine_shared.shards[index]
                            .pinned
                            .store(pinned, Ordering::Relaxed);
                    }
                    crate::shard::thread::run(
                        index,
                        core,
                        handler,
                        &engine_shared,
                        control_ends,
                        Waiter::new(waiting),
                    );
                })
                .map_err(|source| Error::Spawn {
                    shard: index,
                    source,
                })?;
            let _ = shared.shards[index].thread.set(thread.thread().clone());
            engine.threads.push(thread);
        }
        // The control plane gets a core of its own when one is spare (SPEC 2).
        let control_core = (shared.config.control.pinning && core_ids.len() > shard_count)
            .then(|| core_ids[shard_count]);
        // The control thread waits by parking, never spinning: commands and shard replies
        // unpark it, so spinning would buy nothing but CPU taken from the shards (which its
        // raised priority would make worse). The timeout bounds a missed wake-up.
        let control_waiting = wait::Resolved::SpinThenPark {
            spins: 0,
            yields: 0,
            park: std::time::Duration::from_millis(1),
        };
        let engine_shared = Arc::clone(&shared);
        let control_thread = std::thread::Builder::new()
            .name("spillway-control".to_string())
            .spawn(move || {
                if let Some(core_id) = control_core {
                    core_affinity::set_for_current(core_id);
                }
                crate::control::thread::run(
                    &engine_shared,
                    control_links,
                    Waiter::new(control_waiting),
                );
            })
            .map_err(|source| Error::Spawn {
                shard: shard_count,
                source,
            })?;
        let _ = shared.control.thread.set(control_thread.thread().clone());
        engine.control_thread = Some(control_thread);
        // The control thread applies its niceness first thing; wait for that (bounded), so
        // that `control_nice` is settled once `start` returns and a caller can favour its own
        // health checker the same way.
        let settled_by = std::time::Instant::now() + CONTROL_START_WAIT;
        while shared.control.nice.get().is_none() && std::time::Instant::now() < settled_by {
            std::thread::sleep(std::time::Duration::from_micros(100));
        }
        Ok(engine)
    }
}

impl core::fmt::Debug for Engine {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        formatter
            .debug_struct("Engine")
            .field("shards", &self.shared.shards.len())
            .field("breaker", &self.shared.breaker.read().state())
            .finish()
    }
}
