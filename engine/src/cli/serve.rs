//! `spillway serve`: the engine behind its TCP front end, with a handler that acknowledges
//! each message after an optional simulated cost (or worker processes that serve them),
//! until SIGINT or SIGTERM (or `--duration-s`), then a graceful stop (`stop_gracefully`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use spillway::admin::{self, AdminServer};
use spillway::clock::Clock;
use spillway::config::Config;
use spillway::engine::Engine;
use spillway::message::Message;
use spillway::metrics::Stats;
use spillway::net::protocol::ErrorCode;
use spillway::net::server::{NetStats, ServerConfig, TcpServer};
use spillway::workers::{WorkerListener, WorkerStats};
use tracing::{error, info, warn};

use super::logs::{self, LogFormat};
use super::EXIT_INVALID;

/// Descriptors kept for everything but connections (listener, epoll, stdio, threads).
const SPARE_DESCRIPTORS: u64 = 64;
/// How often the progress event is logged.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(5);
/// How often the main thread looks for a stop or a reload.
const STOP_POLL_INTERVAL: Duration = Duration::from_millis(50);
/// Where the admin endpoint listens when neither `--admin`, `SPILLWAY_ADMIN` nor the
/// file's `[admin] listen` says.
const DEFAULT_ADMIN: &str = "127.0.0.1:9901";

/// `spillway serve`'s command line.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to serve the wire protocol on; port 0 picks a free one
    #[arg(
        long,
        value_name = "ADDR",
        env = "SPILLWAY_LISTEN",
        default_value = "127.0.0.1:7878"
    )]
    listen: String,
    /// TOML configuration file (see `spillway check-config`): the engine's settings, and
    /// its [net] and [egress] set the server [default: the production profile]
    #[arg(long, value_name = "FILE", env = "SPILLWAY_CONFIG")]
    config: Option<PathBuf>,
    /// Shards, overriding the configuration's `shards` (0: one per core)
    #[arg(long, value_name = "N")]
    shards: Option<usize>,
    /// Each message is acknowledged after busy-waiting this long (a simulated cost)
    #[arg(long, value_name = "NS", default_value_t = 0)]
    service_ns: u64,
    /// Connection limit, overriding the configuration's `net.max_connections`
    #[arg(long, value_name = "N")]
    max_connections: Option<usize>,
    /// Stop after this many seconds, as at a signal [default: at a signal only]
    #[arg(long, value_name = "S")]
    duration_s: Option<u64>,
    /// Worker processes connect to ADDR (HOST:PORT or unix:PATH) and serve every message
    /// instead (docs/WORKERS.md)
    #[arg(long, value_name = "ADDR")]
    workers: Option<String>,
    /// At a stop, how long queued messages may still run before the rest is cancelled, in
    /// seconds (fractions allowed); sets the configuration's `control.drain_timeout_ns`,
    /// which also bounds a connection's drain [default: the configuration's, 5 s in
    /// production]
    #[arg(long, value_name = "S", value_parser = parse_seconds)]
    stop_deadline_s: Option<Duration>,
    /// Admin HTTP endpoint (metrics, health, drain, breaker, limits; docs/OPERATING.md):
    /// HOST:PORT, or `off` [default: the file's `[admin] listen`, else 127.0.0.1:9901]
    #[arg(long, value_name = "ADDR", env = "SPILLWAY_ADMIN")]
    admin: Option<String>,
    /// Format of the logs on stderr (their filter is RUST_LOG, default `info`)
    #[arg(
        long,
        value_name = "FORMAT",
        env = "SPILLWAY_LOG_FORMAT",
        value_enum,
        default_value_t = LogFormat::Text
    )]
    log_format: LogFormat,
}

/// A duration in seconds, fractions allowed, from 1 ms (the least stop deadline) on.
fn parse_seconds(text: &str) -> Result<Duration, String> {
    let seconds: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    let duration = Duration::try_from_secs_f64(seconds).map_err(|error| error.to_string())?;
    if duration < Duration::from_millis(1) {
        return Err("must be at least 0.001 s".to_owned());
    }
    Ok(duration)
}

/// Installs the logs, runs the server, and turns its error into exit status 1.
pub fn main(args: ServeArgs) -> ExitCode {
    logs::init(args.log_format);
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            error!(error = %format_args!("{error:#}"), "spillway serve failed");
            ExitCode::from(EXIT_INVALID)
        }
    }
}

/// SIGINT and SIGTERM: the first starts the graceful stop; another one at least
/// [`REPEAT_WINDOW`] later (or any one after a stop began for `--duration-s`) exits at
/// once, 130 after SIGINT, 143 after SIGTERM, without the final counters.
///
/// The signals are read by a thread of their own (signal_hook's iterator), so that what
/// to do with one is decided in ordinary code, not in a signal handler. Not signal_hook's
/// `register_conditional_shutdown` pattern: GNU `timeout`, which scripts run the server
/// under, delivers its SIGTERM twice (to the child, then to its process group), which that
/// pattern reads as a second signal. A repeat within the window is the same request.
struct StopSignals {
    /// Set when the stop begins, by a signal or by the main loop: the process is no longer
    /// ready (the admin endpoint's `/ready` answers 503 once it is set).
    stopping: Arc<AtomicBool>,
    /// The number of the signal that began the stop; 0 for none.
    received: Arc<AtomicUsize>,
}

/// Signals this close after the one that began the stop are taken as the same request.
/// Far longer than the microseconds between `timeout`'s two deliveries, far shorter than a
/// person pressing Ctrl-C twice.
const REPEAT_WINDOW: Duration = Duration::from_millis(100);

impl StopSignals {
    fn install() -> anyhow::Result<Self> {
        let stopping = Arc::new(AtomicBool::new(false));
        let received = Arc::new(AtomicUsize::new(0));
        let mut signals = Signals::new([SIGINT, SIGTERM]).context("installing signal handlers")?;
        let (stop_flag, signal_number) = (Arc::clone(&stopping), Arc::clone(&received));
        std::thread::Builder::new()
            .name("spillway-signals".to_owned())
            .spawn(move || {
                // When the signal that began the stop came (`None`: no signal began it).
                let mut first: Option<Instant> = None;
                for signal in signals.forever() {
                    // Relaxed: the flag's value alone decides. This thread sees its own
                    // stores in program order, and the main loop's stop publishes
                    // nothing else through it.
                    if stop_flag.load(Ordering::Relaxed) {
                        if first.is_some_and(|first| first.elapsed() < REPEAT_WINDOW) {
                            continue;
                        }
                        std::process::exit(128 + signal);
                    }
                    first = Some(Instant::now());
                    // Relaxed: published by the Release store of the flag after it.
                    signal_number.store(signal as usize, Ordering::Relaxed);
                    // Release: the main loop's Acquire load of the flag then sees the
                    // signal's number.
                    stop_flag.store(true, Ordering::Release);
                }
            })
            .context("starting the signal thread")?;
        Ok(Self { stopping, received })
    }

    /// The signal that began the stop, if one did.
    fn received(&self) -> Option<&'static str> {
        // Relaxed: read after an Acquire load saw `stopping` set, which the signal thread
        // stored (Release) after this number.
        match self.received.load(Ordering::Relaxed) {
            0 => None,
            signal => {
                Some(signal_hook::low_level::signal_name(signal as i32).unwrap_or("a signal"))
            }
        }
    }
}

/// The settings: the file's (or the production profile's), with the command line's
/// overrides laid over them. A reload loads them the same way, so that an override does
/// not read as a change.
#[derive(Clone, Debug)]
struct ConfigSource {
    file: Option<PathBuf>,
    shards: Option<usize>,
    stop_deadline: Option<Duration>,
    admin: Option<String>,
}

impl ConfigSource {
    fn of(args: &ServeArgs) -> Self {
        Self {
            file: args.config.clone(),
            shards: args.shards,
            stop_deadline: args.stop_deadline_s,
            admin: args.admin.clone(),
        }
    }

    fn load(&self) -> anyhow::Result<Config> {
        let mut config = match &self.file {
            Some(file) => Config::from_toml_file(file)
                .with_context(|| format!("loading {}", file.display()))?,
            None => Config::default(),
        };
        if let Some(shards) = self.shards {
            config.shards = shards;
        }
        if let Some(deadline) = self.stop_deadline {
            // Out of the setting's range (over an hour), the engine's validation says so.
            config.control.drain_timeout_ns =
                u64::try_from(deadline.as_nanos()).unwrap_or(u64::MAX);
        }
        config.admin.listen = match self.admin.as_deref() {
            Some("off") => None,
            Some(address) => Some(address.to_owned()),
            None => config.admin.listen.or(Some(DEFAULT_ADMIN.to_owned())),
        };
        Ok(config)
    }
}

fn run(args: &ServeArgs) -> anyhow::Result<()> {
    let signals = StopSignals::install()?;
    let reload_asked = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(SIGHUP, Arc::clone(&reload_asked))
        .context("installing the SIGHUP handler")?;
    let source = ConfigSource::of(args);
    let config = source.load()?;
    // The file's `[net]` and `[egress]`; `--max-connections` overrides its limit.
    let mut server_config = ServerConfig::from_config(&config);
    if let Some(max_connections) = args.max_connections {
        server_config.net.max_connections = max_connections;
    }
    // 15,000 connections need 15,000 descriptors: raise the soft limit to what is needed,
    // up to the hard limit, and shrink the connection limit to fit when the hard limit is
    // lower (the excess is then refused with `too_many_connections`, never EMFILE).
    let wanted = server_config.net.max_connections as u64 + SPARE_DESCRIPTORS;
    let granted = rlimit::increase_nofile_limit(wanted).context("raising RLIMIT_NOFILE")?;
    if granted < wanted {
        let fits = granted.saturating_sub(SPARE_DESCRIPTORS) as usize;
        if fits == 0 {
            bail!("the descriptor limit is {granted}: too low to serve any connection (raise `ulimit -Hn`)");
        }
        warn!(
            descriptor_limit = granted,
            wanted,
            max_connections = fits,
            "descriptor limit too low: serving fewer connections (raise `ulimit -Hn` for more)"
        );
        server_config.net.max_connections = fits;
    }

    let server = TcpServer::bind(&args.listen, server_config)
        .with_context(|| format!("listening on {}", args.listen))?;
    let clock = Clock::new();
    let service_ns = args.service_ns;
    let acknowledge = move |_: &Message| {
        clock.spin_for_ns(service_ns);
        Ok(())
    };
    let workers = match &args.workers {
        Some(address) => Some(
            WorkerListener::bind(address, config.workers)
                .with_context(|| format!("listening for workers on {address}"))?,
        ),
        None => None,
    };
    let builder = Engine::builder().config(config.clone());
    let engine = match &workers {
        // The pool serves every message; the front end around it only feeds it.
        Some(listener) => builder
            .handler(listener.pool(server.front_end(acknowledge)))
            .start(),
        None => builder.handler(server.front_end(acknowledge)).start(),
    }
    .context("starting the engine")?;
    log_configuration(&config, &engine, &server_config, service_ns);
    // Scripts wait for these two messages, the address right after the words, the worker
    // address first (docs/WORKERS.md).
    if let Some(listener) = &workers {
        let address = listener.address();
        info!(%address, "workers connect to {address}");
    }
    let address = server.local_addr();
    info!(%address, max_connections = server_config.net.max_connections, "listening on {address}");
    // A reload reads the file again; without one there is nothing to reload.
    let loader = source.file.is_some().then(|| {
        let source = source.clone();
        move || source.load().map_err(|error| format!("{error:#}"))
    });
    let admin = match &config.admin.listen {
        Some(_) => {
            // `/ready` answers 503 as soon as a stop signal sets the flag.
            let mut builder = AdminServer::builder(engine.control(), config.clone())
                .net(server.clone())
                .not_ready_flag(Arc::clone(&signals.stopping));
            if let Some(listener) = &workers {
                builder = builder.workers(listener.clone());
            }
            if let Some(loader) = loader.clone() {
                builder = builder.loader(Box::new(loader));
            }
            let admin = builder.start().context("starting the admin endpoint")?;
            let address = admin.local_addr();
            // Scripts wait for this message too, the URL right after the words.
            info!(%address, "admin endpoint on http://{address}");
            Some(admin)
        }
        None => None,
    };
    // The settings a reload starts from when there is no admin endpoint to hold them.
    let mut current = config.clone();

    let started = Instant::now();
    let mut next_progress = started + PROGRESS_INTERVAL;
    let limit = args.duration_s.map(Duration::from_secs);
    let reason = loop {
        // Acquire: pairs with the signal thread's Release store, so that the signal's number,
        // stored before it, is seen too.
        if signals.stopping.load(Ordering::Acquire) {
            break signals.received().unwrap_or("a signal");
        }
        if limit.is_some_and(|limit| started.elapsed() >= limit) {
            break "--duration-s";
        }
        std::thread::sleep(STOP_POLL_INTERVAL);
        // Relaxed: the flag carries no data; the handler only sets it.
        if reload_asked.swap(false, Ordering::Relaxed) {
            reload(
                admin.as_ref(),
                &engine,
                &server,
                &mut current,
                loader.as_ref(),
            );
        }
        if Instant::now() >= next_progress {
            next_progress += PROGRESS_INTERVAL;
            log_progress(&server.stats(), &engine.stats());
            if let Some(listener) = &workers {
                log_workers("workers", &listener.stats());
            }
        }
    };
    stop_gracefully(
        &signals,
        reason,
        &config,
        server,
        engine,
        workers.as_ref(),
        admin,
    );
    Ok(())
}

/// SIGHUP: the file loaded again and what changed applied live, through the admin
/// endpoint when there is one (so that its `/config` follows), else here. A file that is
/// invalid, or changes a setting that cannot change live, is refused and the old settings
/// stay; either way the outcome is logged.
fn reload(
    admin: Option<&AdminServer>,
    engine: &Engine,
    server: &TcpServer,
    current: &mut Config,
    loader: Option<&impl Fn() -> Result<Config, String>>,
) {
    let Some(loader) = loader else {
        warn!("SIGHUP: no configuration file to reload (serve was started without --config)");
        return;
    };
    let result = match admin {
        Some(admin) => admin.reload().expect("the admin endpoint has the loader"),
        None => admin::reload_config(&engine.control(), Some(server), current, loader),
    };
    match result {
        Ok(changes) => info!(?changes, "SIGHUP: configuration reloaded"),
        Err(error) => warn!(%error, "SIGHUP: reload refused, the old settings stay"),
    }
}

/// The stop, in order: not ready; the listener closed; what is queued run until the stop
/// deadline and cancelled then, every Reply written and each connection closed
/// (`Engine::shutdown`, `TcpServer::begin_stop`); the final counters logged and printed.
fn stop_gracefully(
    signals: &StopSignals,
    reason: &str,
    config: &Config,
    server: TcpServer,
    engine: Engine,
    workers: Option<&WorkerListener>,
    admin: Option<AdminServer>,
) {
    let stop_started = Instant::now();
    if let Some(admin) = &admin {
        admin.set_ready(false);
    }
    // 1. Not ready (a signal has set it already; `--duration-s` has not). From here on a
    // signal exits at once. Relaxed: the signal thread reads the flag on its own.
    signals.stopping.store(true, Ordering::Relaxed);
    info!(
        reason,
        stop_deadline_ms = config.control.drain_timeout_ns / 1_000_000,
        close_timeout_ms = config.net.close_timeout_ns / 1_000_000,
        "stopping: not ready"
    );
    // 2. New connections are refused; the open ones get their Replies as they complete.
    let address = server.local_addr();
    match server.begin_stop() {
        Ok(()) => info!(%address, "listener closed: new connections are refused"),
        Err(error) => warn!(%address, %error, "the listener could not be closed"),
    }
    // 3. Intake closed; what is queued runs until the stop deadline, then is cancelled;
    // each shard's connections get their last Replies and `shutting_down`, and close.
    let stats = engine.shutdown();
    // Health checks were answered through the stop; the engine is gone now.
    if let Some(admin) = admin {
        admin.stop();
    }
    let net = server.stats();
    let workers = workers.map(WorkerListener::stats);
    log_final(&stats, &net, workers.as_ref(), stop_started.elapsed());
    print_summary(&stats, &net, workers.as_ref());
}

/// The settings an operator checks at start-up.
fn log_configuration(
    config: &Config,
    engine: &Engine,
    server_config: &ServerConfig,
    service_ns: u64,
) {
    info!(
        version = env!("CARGO_PKG_VERSION"),
        profile = %config.profile,
        shards = engine.shards(),
        pinning = config.pinning,
        pinned = engine.pinned(),
        wait = ?config.wait,
        service_ns,
        shutdown_finishes_queued = config.shutdown_finishes_queued,
        stop_deadline_ms = config.control.drain_timeout_ns / 1_000_000,
        "configuration: engine"
    );
    info!(
        rate_limit = config.levels.rate_limit,
        queue_caps = config.levels.queue_caps,
        circuit_breaker = config.levels.circuit_breaker,
        rate_per_connection_per_sec = config.rate.per_connection_per_sec,
        rate_burst = config.rate.burst,
        cap_connection_messages = config.caps.connection_messages,
        cap_connection_bytes = config.caps.connection_bytes,
        cap_handler_queue = config.caps.handler_queue,
        cap_action = ?config.caps.action,
        tenants = config.tenants.len(),
        "configuration: admission"
    );
    let net = &server_config.net;
    let egress = &server_config.egress;
    info!(
        max_connections = net.max_connections,
        max_frame_bytes = net.max_frame_bytes,
        hello_timeout_ms = net.hello_timeout_ns / 1_000_000,
        frame_timeout_ms = net.frame_timeout_ns / 1_000_000,
        close_timeout_ms = net.close_timeout_ns / 1_000_000,
        egress_buffer_replies = egress.buffer_capacity,
        egress_buffer_bytes = egress.buffer_bytes,
        egress_drop_policy = ?egress.drop_policy,
        "configuration: net"
    );
}

/// The progress event, every `PROGRESS_INTERVAL`.
fn log_progress(net: &NetStats, stats: &Stats) {
    let total = &stats.total;
    info!(
        open = net.open,
        submits = net.submits,
        delivered = total.delivered,
        refused = total.refused_total(),
        replies_sent = net.replies_sent,
        replies_dropped = net.replies_dropped_total(),
        "progress"
    );
}

fn log_workers(message: &str, workers: &WorkerStats) {
    info!(
        open = workers.open,
        connected = workers.connected,
        credit_free = workers.credit_free,
        credit_total = workers.credit_total,
        works_sent = workers.works_sent,
        answers = workers.answers,
        answer_latency_ns_mean = workers.answer_latency_ns_mean(),
        answer_latency_ns_max = workers.answer_latency_ns_max,
        retries = workers.retries,
        cut_lost = workers.cut_lost,
        cut_timeout = workers.cut_timeout,
        cut_garbage = workers.cut_garbage,
        refused_too_many = workers.refused_too_many,
        "{message}"
    );
}

/// The final counters, as events (`print_summary` prints the same on stdout).
fn log_final(stats: &Stats, net: &NetStats, workers: Option<&WorkerStats>, took: Duration) {
    let total = &stats.total;
    info!(
        submitted = total.submitted,
        admitted = total.admitted,
        delivered = total.delivered,
        refused = total.refused_total(),
        shed = total.shed_total(),
        failed = total.failed_total(),
        cancelled = total.cancelled,
        dropped = total.dropped_total(),
        reconciles = stats.reconciles(),
        stop_ms = took.as_millis() as u64,
        "stopped: engine"
    );
    info!(
        accepted = net.accepted,
        refused_connection_limit = net.refused_connection_limit,
        accept_backoffs = net.accept_backoffs,
        frames_in = net.frames_in,
        submits = net.submits,
        replies_sent = net.replies_sent,
        replies_dropped = net.replies_dropped_total(),
        replies_discarded = net.replies_discarded,
        flow_signals = net.flow_signals,
        closed = %closures(net).join(", "),
        "stopped: net"
    );
    if let Some(workers) = workers {
        log_workers("stopped: workers", workers);
    }
}

/// Closures by reason: the peer's and I/O errors always, each error code when it happened.
fn closures(net: &NetStats) -> Vec<String> {
    let mut closed = vec![
        format!("peer {}", net.closed_peer),
        format!("io_error {}", net.closed_io_error),
    ];
    for code in ErrorCode::ALL {
        let count = net.closed_with(code);
        if count > 0 {
            closed.push(format!("{} {count}", code.name()));
        }
    }
    closed
}

/// The final summary on stdout, in the layout scripts read (scripts/workers-ci.sh,
/// bench-harness's workers_vs_nats): output of the run, beside its log events.
fn print_summary(stats: &Stats, net: &NetStats, workers: Option<&WorkerStats>) {
    let total = &stats.total;
    println!("spillway serve: stopped");
    println!(
        "  engine: submitted {} admitted {} delivered {} refused {} shed {} failed {} cancelled {} dropped {} (reconciles: {})",
        total.submitted,
        total.admitted,
        total.delivered,
        total.refused_total(),
        total.shed_total(),
        total.failed_total(),
        total.cancelled,
        total.dropped_total(),
        stats.reconciles()
    );
    println!(
        "  net: accepted {} refused at the connection limit {} accept backoffs {} frames in {} submits {} replies sent {} replies dropped {} replies discarded {} flow signals {}",
        net.accepted,
        net.refused_connection_limit,
        net.accept_backoffs,
        net.frames_in,
        net.submits,
        net.replies_sent,
        net.replies_dropped_total(),
        net.replies_discarded,
        net.flow_signals
    );
    println!("  closed: {}", closures(net).join(", "));
    if let Some(workers) = workers {
        println!(
            "  workers: {} open ({} ever), credit {} free of {}, {} works sent, {} answers (mean {} ns, max {} ns), {} retries, cut: lost {} timeout {} garbage {}, refused {}",
            workers.open,
            workers.connected,
            workers.credit_free,
            workers.credit_total,
            workers.works_sent,
            workers.answers,
            workers.answer_latency_ns_mean(),
            workers.answer_latency_ns_max,
            workers.retries,
            workers.cut_lost,
            workers.cut_timeout,
            workers.cut_garbage,
            workers.refused_too_many
        );
    }
}
