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

use std::any::Any;
use std::sync::Mutex;
use std::thread::JoinHandle;

use crate::admission::breaker::CircuitBreaker;
use crate::admission::global::GlobalQuotas;
use crate::admission::tenants::TenantTable;
use crate::clock::Clock;
use crate::command::{ShardCommand, ShardReply};
use crate::config::{Config, ConfigError, INGRESSES_MAX};
use crate::control::thread::ControlLink;
use crate::control::{Control, ControlShared};
use crate::global::thread::LeaseThread;
use crate::handler::Handler;
use crate::ingress::{completion_capacity, wake_after_stop, Ingress, IngressToken, SharedIngress};
use crate::message::ConnectionId;
use crate::metrics::Stats;
use crate::monitor::{AlertThresholds, Monitor};
use crate::ring::spsc;
use crate::shard::core::ShardCore;
use crate::shard::shared::ShardShared;
use crate::shard::thread::Surroundings;
use crate::shared::EngineShared;
use crate::sync::{Arc, AtomicBool, AtomicU64, Ordering};
use crate::wait::{self, Waiter};

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
    /// The fleet quotas' lease thread could not be started (a Redis URL the client does
    /// not take, or no thread).
    #[error("could not start fleet quotas: {0}")]
    Global(#[from] crate::global::lease::LeaseError),
    /// Every ingress index is held by a live `Ingress`.
    #[error("too many ingresses: at most {INGRESSES_MAX} may be alive at once")]
    TooManyIngresses,
    /// [`Engine::shutdown_with_handlers`] was asked for a handler type the engine was not
    /// built with.
    #[error("the engine's handlers are not of type {asked}")]
    HandlerType {
        /// The type asked for.
        asked: &'static str,
    },
}

/// Longest `EngineBuilder::start` waits for the control thread to apply its niceness.
const CONTROL_START_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// A running engine. Dropping it shuts it down (as [`Engine::shutdown`] does).
pub struct Engine {
    shared: Arc<EngineShared>,
    control: Arc<ControlShared>,
    /// One token per ingress index; an index is free when only this table holds its token.
    ingress_tokens: Mutex<Vec<IngressToken>>,
    /// Each returns its shard's handler (boxed, as `Option<H>`: `None` if the shard was
    /// lost), for [`Engine::shutdown_with_handlers`].
    threads: Vec<JoinHandle<Box<dyn Any + Send>>>,
    control_thread: Option<JoinHandle<()>>,
    /// Renews the fleet-wide tenant shares (`[global]`); `None` when there are none.
    lease_thread: Option<LeaseThread>,
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
            .ingress_tokens
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let index = tokens
            .iter()
            .position(|token| Arc::strong_count(token) == 1)
            .ok_or(Error::TooManyIngresses)?;
        let token = IngressToken::default();
        tokens[index] = Arc::clone(&token);
        Ok(Ingress::new(Arc::clone(&self.shared), index as u16, token))
    }

    /// A handle any number of threads may share.
    pub fn shared_ingress(&self) -> SharedIngress {
        SharedIngress::new(Arc::clone(&self.shared))
    }

    /// The control-plane handle.
    pub fn control(&self) -> Control {
        Control::new(Arc::clone(&self.shared), Arc::clone(&self.control))
    }

    /// A snapshot of every counter; each shard's part is consistent with itself.
    pub fn stats(&self) -> Stats {
        self.control.stats(&self.shared)
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
        self.control.nice.get().copied().flatten()
    }

    /// The engine's clock (nanoseconds since start), for callers that timestamp work.
    pub fn clock(&self) -> &Clock {
        &self.shared.clock
    }

    /// Arms a test hook: the `after + 1`-th pass of shard `shard` through `point` panics,
    /// outside any handler, and the shard is lost (its messages fail `ShardLost`). Only with
    /// the `fault-injection` feature, for tests.
    #[cfg(feature = "fault-injection")]
    pub fn inject_panic(&self, shard: usize, point: crate::fault::FaultPoint, after: u64) {
        self.shared.shards[shard].fault.arm(point, after);
    }

    /// Stops intake (later messages are refused `ShuttingDown`), finishes what is queued
    /// (or cancels it, per `shutdown_finishes_queued`), posts every completion, joins every
    /// thread, and returns the final counts. Messages an `Ingress` pushes after its shard's
    /// last look are refused by that ingress's next `poll_completions`.
    pub fn shutdown(mut self) -> Stats {
        self.stop();
        self.stats()
    }

    /// [`shutdown`](Self::shutdown), and each shard's handler back, in shard order, with
    /// whatever it accumulated (`None` for a shard lost to a panic outside its handler): a
    /// handler's own state needs no `Arc<Mutex<..>>` to be read after the run. `H` is the
    /// handler type given to [`EngineBuilder::handler`].
    ///
    /// ```
    /// use spillway::config::Config;
    /// use spillway::engine::Engine;
    /// use spillway::handler::{Handler, HandlerError, ShardContext};
    /// use spillway::message::{Bytes, ConnectionId, Message, MessageId};
    ///
    /// #[derive(Clone, Default)]
    /// struct Counter {
    ///     payload_bytes: usize,
    /// }
    ///
    /// impl Handler for Counter {
    ///     fn handle(
    ///         &mut self,
    ///         message: &Message,
    ///         _: &mut ShardContext<'_>,
    ///     ) -> Result<Bytes, HandlerError> {
    ///         self.payload_bytes += message.payload.len();
    ///         Ok(Bytes::new())
    ///     }
    /// }
    ///
    /// let mut config = Config::default();
    /// config.shards = 2;
    /// let engine = Engine::builder().config(config).handler(Counter::default()).start().unwrap();
    /// let mut ingress = engine.ingress().unwrap();
    /// for id in 0..10 {
    ///     let message = Message::new(ConnectionId(id), MessageId(id)).with_payload(b"abc".to_vec());
    ///     ingress.submit(message).unwrap();
    /// }
    /// let mut completions = Vec::new();
    /// while completions.len() < 10 {
    ///     ingress.poll_completions(&mut completions);
    /// }
    /// drop(ingress);
    /// let (stats, handlers) = engine.shutdown_with_handlers::<Counter>().unwrap();
    /// assert_eq!(stats.total.delivered, 10);
    /// let total: usize = handlers.iter().flatten().map(|counter| counter.payload_bytes).sum();
    /// assert_eq!(total, 30);
    /// ```
    ///
    /// # Errors
    /// [`Error::HandlerType`] if `H` is not the engine's handler type (the engine still
    /// shut down).
    pub fn shutdown_with_handlers<H: Handler>(mut self) -> Result<(Stats, Vec<Option<H>>), Error> {
        let handlers = self.stop();
        let stats = self.stats();
        let handlers = handlers
            .into_iter()
            .map(|handler| match handler {
                None => Ok(None),
                Some(boxed) => boxed
                    .downcast::<Option<H>>()
                    .map(|handler| *handler)
                    .map_err(|_| Error::HandlerType {
                        asked: core::any::type_name::<H>(),
                    }),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok((stats, handlers))
    }

    /// Stops every thread; returns what each shard thread returned (its boxed
    /// `Option<H>`), `None` for a thread that ended by a panic.
    fn stop(&mut self) -> Vec<Option<Box<dyn Any + Send>>> {
        // Release: pairs with the shards' Acquire load; nothing else rides on it, but a
        // shard that sees it should also see any configuration written before.
        self.shared.stopping.store(true, Ordering::Release);
        for shard in self.shared.shards.iter() {
            shard.wake();
        }
        // A shard thread only ends by returning: panics, in handlers or not, are caught.
        let handlers = self
            .threads
            .drain(..)
            .map(|thread| thread.join().ok())
            .collect();
        // Shares are given back once no shard charges them any more.
        if let Some(lease_thread) = self.lease_thread.take() {
            lease_thread.stop();
        }
        // The control plane goes last, so that drains under way can finish with the shards.
        // Release: pairs with the control thread's and the handles' Acquire loads.
        self.control.stopping.store(true, Ordering::Release);
        self.control.sleeper.unpark();
        if let Some(thread) = self.control_thread.take() {
            let _ = thread.join();
        }
        // Release: pairs with the ingresses' Acquire loads; every shard has exited, and its
        // submission rings wait in their orphan slots.
        self.shared.stopped.store(true, Ordering::Release);
        // Producers blocked in a wait collect what the shards left, and return.
        wake_after_stop(
            &self
                .ingress_tokens
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        );
        handlers
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
            &config.tenant_settings(),
            &config.rate_only_tenants(),
            config.caps.priority_threshold_percent,
        ));
        let global = Arc::new(GlobalQuotas::new(&config.global, &tenants, shard_count));
        let breaker = Arc::new(CircuitBreaker::new());
        let shards: Box<[ShardShared]> = (0..shard_count)
            .map(|_| {
                ShardShared::new(
                    config.ring_capacity,
                    completion_capacity(&config),
                    tenants.len(),
                    INGRESSES_MAX,
                )
            })
            .collect();
        let shared = Arc::new(EngineShared {
            tenant_ids: tenants.tenant_ids().collect(),
            shards,
            breaker: Arc::clone(&breaker),
            tenants: Arc::clone(&tenants),
            global: Arc::clone(&global),
            clock: Clock::new(),
            stopping: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            ring_full: AtomicU64::new(0),
            config,
        });
        let control = Arc::new(ControlShared::new(Monitor::new(
            AlertThresholds {
                warning_percent: shared.config.monitor.warning_percent,
                critical_percent: shared.config.monitor.critical_percent,
                overload_percent: shared.config.monitor.overload_percent,
            },
            shared.config.monitor.history,
        )));
        // Shards plus at least one producer thread compete for the cores.
        let waiting = wait::resolve(shared.config.wait, shard_count + 1, cores);
        let core_ids = core_affinity::get_core_ids().unwrap_or_default();
        let mut engine = Engine {
            shared: Arc::clone(&shared),
            control: Arc::clone(&control),
            ingress_tokens: Mutex::new(
                (0..INGRESSES_MAX)
                    .map(|_| IngressToken::default())
                    .collect(),
            ),
            threads: Vec::with_capacity(shard_count),
            control_thread: None,
            lease_thread: None,
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
                Arc::clone(&global),
                Arc::clone(&breaker),
                Arc::clone(&shared.shards[index].fault),
            );
            let handler = self.handler.clone();
            let control_ends = shard_control_ends[index]
                .take()
                .expect("each shard takes its own control rings once");
            let engine_shared = Arc::clone(&shared);
            let control_shared = Arc::clone(&control);
            let pin_to = (shared.config.pinning && !core_ids.is_empty())
                .then(|| core_ids[index % core_ids.len()]);
            let thread = std::thread::Builder::new()
                .name(format!("spillway-shard-{index}"))
                .spawn(move || {
                    let shard = &engine_shared.shards[index];
                    if let Some(core_id) = pin_to {
                        let pinned = core_affinity::set_for_current(core_id);
                        shard.pinned.store(pinned, Ordering::Relaxed);
                    }
                    let around = Surroundings {
                        shard,
                        config: &engine_shared.config,
                        clock: &engine_shared.clock,
                        stopping: &engine_shared.stopping,
                        control: &control_shared.sleeper,
                    };
                    let handler = crate::shard::thread::run(
                        core,
                        handler,
                        &around,
                        control_ends,
                        Waiter::new(waiting),
                    );
                    Box::new(handler) as Box<dyn Any + Send>
                })
                .map_err(|source| Error::Spawn {
                    shard: index,
                    source,
                })?;
            let _ = shared.shards[index]
                .sleeper
                .thread
                .set(thread.thread().clone());
            engine.threads.push(thread);
        }
        // The control plane gets a core of its own when one is spare (SPEC 2).
        let control_core = (shared.config.control.pinning && core_ids.len() > shard_count)
            .then(|| core_ids[shard_count]);
        // The control thread waits in its event loop (a park if it has none), never
        // spinning: commands, shard replies and the admin endpoint's sockets wake it, so
        // spinning would buy nothing but CPU taken from the shards (which its raised
        // priority would make worse). The timeout bounds a missed wake-up.
        let control_waiting = wait::Resolved::SpinThenPark {
            spins: 0,
            yields: 0,
            park: std::time::Duration::from_millis(1),
        };
        let engine_shared = Arc::clone(&shared);
        let control_shared = Arc::clone(&control);
        let control_thread = std::thread::Builder::new()
            .name("spillway-control".to_string())
            .spawn(move || {
                if let Some(core_id) = control_core {
                    core_affinity::set_for_current(core_id);
                }
                crate::control::thread::run(
                    &engine_shared,
                    &control_shared,
                    control_links,
                    Waiter::new(control_waiting),
                );
            })
            .map_err(|source| Error::Spawn {
                shard: shard_count,
                source,
            })?;
        let _ = control.sleeper.thread.set(control_thread.thread().clone());
        engine.control_thread = Some(control_thread);
        // The control thread applies its niceness first thing; wait for that (bounded), so
        // that `control_nice` is settled once `start` returns and a caller can favour its own
        // health checker the same way.
        let settled_by = std::time::Instant::now() + CONTROL_START_WAIT;
        while control.nice.get().is_none() && std::time::Instant::now() < settled_by {
            std::thread::sleep(std::time::Duration::from_micros(100));
        }
        if shared.global.enabled() {
            engine.lease_thread = Some(LeaseThread::spawn(
                &shared.config.global,
                Arc::clone(&shared.global),
                engine.control_nice(),
            )?);
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
