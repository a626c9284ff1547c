//! The operator's HTTP endpoint: Prometheus metrics, health and readiness for a load
//! balancer, drains, the breaker, the effective configuration and run-time limits.
//!
//! [`AdminServer`] serves HTTP/1.1 from the control plane's side, never on a shard: its
//! sockets live in the control thread's own event loop, which serves `GET /health` and
//! `GET /ready` itself (the check goes to every shard through the control ring, and its
//! answer to the socket, with no other thread woken between), and hands every other URL to
//! the admin worker thread (a scrape's encoding, a drain or a reload would hold the control
//! thread). Requests are parsed by `httparse` and bounded
//! ([`AdminConfig`](crate::config::AdminConfig): request size, header count, connections,
//! idle time), metrics are encoded by `prometheus-client`. What the shards know it reads
//! the way any other reader does: counters from their seqlocks ([`Control::stats`]),
//! commands through the control ring ([`Control`]), so a scrape or a health check costs
//! the data path nothing but the control plane's own round trip.
//!
//! | method and path | answer |
//! |---|---|
//! | `GET /metrics` | every counter of SPEC 3 and the gauges, in the Prometheus text format (`exposition`) |
//! | `GET /health` | 200 when every shard is live, else 503; the full health check as JSON |
//! | `GET /ready` | 200 when ready to take work, else 503 (while draining, stopping, with the breaker open or a queue at overload) |
//! | `POST /drain` | readiness goes 503 for good (the process is being taken out); with `?connection=ID`, drains that connection and answers its report |
//! | `POST /breaker/open`, `/breaker/close`, `/breaker/auto` | forces the breaker open or closed, or returns it to automatic control |
//! | `GET /config` | the effective settings as JSON |
//! | `PUT /limits` | run-time caps and rates as JSON (`limits::LimitsRequest`), validated; answers the applied values or the error |
//! | `POST /reload` | reloads the configuration file, when the program gave the builder a [`ConfigLoader`] |
//!
//! ```no_run
//! use spillway::admin::AdminServer;
//! use spillway::config::Config;
//! use spillway::engine::Engine;
//! use spillway::handler::{Handler, HandlerError, ShardContext};
//! use spillway::message::{Bytes, Message};
//!
//! #[derive(Clone)]
//! struct Accept;
//! impl Handler for Accept {
//!     fn handle(&mut self, _: &Message, _: &mut ShardContext) -> Result<Bytes, HandlerError> {
//!         Ok(Bytes::new())
//!     }
//! }
//!
//! let mut config = Config::default();
//! config.admin.listen = Some("127.0.0.1:9901".to_string());
//! let engine = Engine::builder().config(config.clone()).handler(Accept).start().unwrap();
//! let admin = AdminServer::builder(engine.control(), config).start().unwrap();
//! println!("metrics on http://{}/metrics", admin.local_addr());
//! ```

mod exposition;
mod http;
pub mod limits;
mod routes;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::config::{Config, ConfigError};
use crate::control::Control;
use crate::net::server::TcpServer;
use crate::workers::WorkerListener;

/// Loads the program's configuration afresh for a reload (`POST /reload`,
/// [`AdminServer::reload`]): the file read and validated again, with the program's own
/// overrides (command-line flags) laid over it; `Err` with why it could not be.
pub type ConfigLoader = Box<dyn Fn() -> Result<Config, String> + Send + Sync>;

/// Reloads: `load`s the configuration and applies what differs from `current` through
/// `control` when all of it can change live ([`limits::reload`]), making `current` the new
/// settings. Returns each change in words, or why nothing was applied.
///
/// # Errors
/// The loader's error, or [`limits::LimitsError`]'s text.
pub fn reload_config(
    control: &Control,
    net: Option<&TcpServer>,
    current: &mut Config,
    load: &dyn Fn() -> Result<Config, String>,
) -> Result<Vec<String>, String> {
    let new = load()?;
    limits::reload(control, net, current, &new).map_err(|error| error.to_string())
}

/// Why the admin endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// `[admin] listen` is not set.
    #[error("no admin address: set [admin] listen")]
    NoAddress,
    /// A setting of `[admin]` is out of its range.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The address could not be bound, or the thread not started.
    #[error("admin endpoint on {address}: {source}")]
    Io {
        /// The address asked for.
        address: String,
        /// Why.
        source: io::Error,
    },
}

/// Requests the endpoint answered, by status; [`AdminServer::stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AdminStats {
    /// Answered 2xx.
    pub ok: u64,
    /// Answered 400 (unparsable request, bad JSON, bad query).
    pub bad_request: u64,
    /// Answered 404 (no such path).
    pub not_found: u64,
    /// Answered 405 (a path that exists, with another method).
    pub method_not_allowed: u64,
    /// Answered 413 (request over `max_request_bytes`).
    pub too_large: u64,
    /// Answered 422 (well-formed limits that fail validation).
    pub invalid: u64,
    /// Answered 431 (more header lines than `max_headers`).
    pub too_many_headers: u64,
    /// Answered 503 (not healthy or not ready) or 500 (a control command failed).
    pub unavailable: u64,
    /// Connections closed at accept because `max_connections` were open.
    pub connections_refused: u64,
    /// Connections closed after `idle_timeout_ns` without a request.
    pub connections_idle_closed: u64,
}

/// What the HTTP thread and the handle share.
pub(crate) struct AdminShared {
    control: Control,
    /// The settings the engine started with, updated by `PUT /limits` and reloads.
    config: Mutex<Config>,
    net: Option<TcpServer>,
    workers: Option<WorkerListener>,
    loader: Option<ConfigLoader>,
    /// Set by `POST /drain`, [`AdminServer::set_ready`]`(false)`, or whoever holds the flag
    /// given to [`AdminBuilder::not_ready_flag`]: readiness answers 503 whatever the engine
    /// says.
    not_ready: Arc<AtomicBool>,
    /// Counters by status, in [`AdminStats`] field order.
    counters: [AtomicU64; STAT_FIELDS],
    /// The tenants with metric series of their own: it only grows (see
    /// `exposition::name_busiest_tenants`).
    named_tenants: Mutex<Vec<crate::message::TenantId>>,
}

const STAT_FIELDS: usize = 10;

/// Which [`AdminStats`] field an answer or event counts in.
#[derive(Clone, Copy)]
pub(crate) enum Stat {
    Ok,
    BadRequest,
    NotFound,
    MethodNotAllowed,
    TooLarge,
    Invalid,
    TooManyHeaders,
    Unavailable,
    ConnectionsRefused,
    ConnectionsIdleClosed,
}

impl AdminShared {
    pub(crate) fn count(&self, stat: Stat) {
        // Relaxed: a statistic; only the admin thread writes, readers want a recent value.
        self.counters[stat as usize].fetch_add(1, Ordering::Relaxed);
    }

    fn stats(&self) -> AdminStats {
        // Relaxed: statistics, each read on its own.
        let read = |stat: Stat| self.counters[stat as usize].load(Ordering::Relaxed);
        AdminStats {
            ok: read(Stat::Ok),
            bad_request: read(Stat::BadRequest),
            not_found: read(Stat::NotFound),
            method_not_allowed: read(Stat::MethodNotAllowed),
            too_large: read(Stat::TooLarge),
            invalid: read(Stat::Invalid),
            too_many_headers: read(Stat::TooManyHeaders),
            unavailable: read(Stat::Unavailable),
            connections_refused: read(Stat::ConnectionsRefused),
            connections_idle_closed: read(Stat::ConnectionsIdleClosed),
        }
    }

    /// [`reload_config`] on the settings `/config` shows; `None` without a loader.
    pub(crate) fn reload(&self) -> Option<Result<Vec<String>, String>> {
        let load = self.loader.as_ref()?;
        let mut config = self
            .config
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let result = reload_config(&self.control, self.net.as_ref(), &mut config, load);
        if let Err(error) = &result {
            tracing::warn!(target: "spillway::admin", %error, "reload refused: the old settings stay");
        }
        Some(result)
    }

    fn not_ready(&self) -> bool {
        // Relaxed: a flag read on its own; a health check that races a drain may answer
        // the state just before it, as it would a moment earlier.
        self.not_ready.load(Ordering::Relaxed)
    }
}

/// Builds an [`AdminServer`]: the control handle and settings are required; the TCP
/// server and worker listener add their metrics, a configuration loader `POST /reload`.
pub struct AdminBuilder {
    control: Control,
    config: Config,
    net: Option<TcpServer>,
    workers: Option<WorkerListener>,
    loader: Option<ConfigLoader>,
    not_ready: Option<Arc<AtomicBool>>,
}

impl AdminBuilder {
    /// Readiness answers 503 from the moment `flag` is set, by anyone: a program's stop
    /// flag, set by its signal handling, takes the process out of a load balancer's
    /// rotation at the signal itself, not when the program's main loop next looks.
    pub fn not_ready_flag(mut self, flag: Arc<AtomicBool>) -> Self {
        self.not_ready = Some(flag);
        self
    }

    /// Adds the TCP front end's counters (connections, replies, flow signals) to `/metrics`.
    pub fn net(mut self, server: TcpServer) -> Self {
        self.net = Some(server);
        self
    }

    /// Adds the worker pool's figures to `/metrics`.
    pub fn workers(mut self, listener: WorkerListener) -> Self {
        self.workers = Some(listener);
        self
    }

    /// Serves `POST /reload` (and [`AdminServer::reload`]) with `loader`.
    pub fn loader(mut self, loader: ConfigLoader) -> Self {
        self.loader = Some(loader);
        self
    }

    /// Binds `[admin] listen` and starts the HTTP thread.
    ///
    /// # Errors
    /// [`AdminError::NoAddress`] without an address, [`AdminError::Config`] for a setting
    /// out of range, [`AdminError::Io`] if the address cannot be bound.
    pub fn start(self) -> Result<AdminServer, AdminError> {
        let settings = self.config.admin.clone();
        settings.validate()?;
        let address = settings.listen.clone().ok_or(AdminError::NoAddress)?;
        let io_error = |source| AdminError::Io {
            address: address.clone(),
            source,
        };
        let listener = std::net::TcpListener::bind(&address).map_err(io_error)?;
        let local_addr = listener.local_addr().map_err(io_error)?;
        let shared = Arc::new(AdminShared {
            control: self.control,
            config: Mutex::new(self.config),
            net: self.net,
            workers: self.workers,
            loader: self.loader,
            not_ready: self
                .not_ready
                .unwrap_or_else(|| Arc::new(AtomicBool::new(false))),
            counters: Default::default(),
            named_tenants: Mutex::new(Vec::new()),
        });
        let stop = http::start(listener, settings, Arc::clone(&shared)).map_err(io_error)?;
        Ok(AdminServer {
            shared,
            local_addr,
            stop,
        })
    }
}

/// The running admin endpoint. Dropping it (or [`stop`](Self::stop)) closes it.
pub struct AdminServer {
    shared: Arc<AdminShared>,
    local_addr: SocketAddr,
    stop: http::StopHandle,
}

impl AdminServer {
    /// A builder for the engine `control` belongs to, with its `config` (whose `[admin]`
    /// section says where and how to serve).
    pub fn builder(control: Control, config: Config) -> AdminBuilder {
        AdminBuilder {
            control,
            config,
            net: None,
            workers: None,
            loader: None,
            not_ready: None,
        }
    }

    /// The address it serves on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// `false` makes `GET /ready` answer 503 whatever the engine's state (a graceful stop
    /// sets it first, so that load balancers stop sending); `true` gives readiness back to
    /// the engine's own check.
    pub fn set_ready(&self, ready: bool) {
        // Relaxed: see `AdminShared::not_ready`.
        self.shared.not_ready.store(!ready, Ordering::Relaxed);
    }

    /// Requests answered, by status, and connections refused or closed idle.
    pub fn stats(&self) -> AdminStats {
        self.shared.stats()
    }

    /// The settings `GET /config` shows: those the engine started with, with the changes
    /// `PUT /limits` and reloads applied since.
    pub fn config(&self) -> Config {
        self.shared
            .config
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Reloads the configuration through the builder's loader, as `POST /reload` does
    /// (`spillway serve` calls it on SIGHUP): each change in words, or why nothing was
    /// applied. `None` without a loader.
    pub fn reload(&self) -> Option<Result<Vec<String>, String>> {
        self.shared.reload()
    }

    /// Closes the endpoint and joins its worker thread.
    pub fn stop(mut self) {
        self.stop.stop();
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        self.stop.stop();
    }
}
