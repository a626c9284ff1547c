//! `spillway serve`: the engine behind its TCP front end, with a handler that acknowledges
//! each message after an optional simulated cost.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use spillway::clock::Clock;
use spillway::config::Config;
use spillway::engine::Engine;
use spillway::message::Message;
use spillway::net::protocol::ErrorCode;
use spillway::net::server::{NetStats, ServerConfig, TcpServer};
use spillway::workers::{WorkerListener, WorkerStats};

/// Descriptors kept for everything but connections (listener, epoll, stdio, threads).
const SPARE_DESCRIPTORS: u64 = 64;

/// What `spillway serve` was asked to do.
pub struct Options {
    listen: String,
    config: Option<PathBuf>,
    shards: Option<usize>,
    service_ns: u64,
    max_connections: Option<usize>,
    duration: Option<Duration>,
    /// `--workers ADDR`: serve messages through worker processes (docs/WORKERS.md).
    workers: Option<String>,
}

pub fn parse(args: &[OsString]) -> anyhow::Result<Options> {
    let mut options = Options {
        listen: "127.0.0.1:7878".to_owned(),
        config: None,
        shards: None,
        service_ns: 0,
        max_connections: None,
        duration: None,
        workers: None,
    };
    let mut args = args.iter();
    while let Some(flag) = args.next() {
        let flag = flag.to_str().context("arguments must be UTF-8")?;
        let mut value = || -> anyhow::Result<String> {
            args.next()
                .and_then(|value| value.to_str())
                .map(str::to_owned)
                .with_context(|| format!("{flag} needs a value"))
        };
        let number = |text: String| -> anyhow::Result<u64> {
            text.parse()
                .with_context(|| format!("{flag} {text:?}: not a whole number"))
        };
        match flag {
            "--listen" => options.listen = value()?,
            "--config" => options.config = Some(PathBuf::from(value()?)),
            "--shards" => options.shards = Some(number(value()?)? as usize),
            "--service-ns" => options.service_ns = number(value()?)?,
            "--max-connections" => options.max_connections = Some(number(value()?)? as usize),
            "--workers" => options.workers = Some(value()?),
            "--duration-s" => options.duration = Some(Duration::from_secs(number(value()?)?)),
            other => bail!("serve: unknown argument {other:?}"),
        }
    }
    Ok(options)
}

pub fn run(options: Options) -> anyhow::Result<ExitCode> {
    let mut config = match &options.config {
        Some(file) => {
            Config::from_toml_file(file).with_context(|| format!("loading {}", file.display()))?
        }
        None => Config::default(),
    };
    if let Some(shards) = options.shards {
        config.shards = shards;
    }
    // The file's `[net]` and `[egress]`; `--max-connections` overrides its limit.
    let mut server_config = ServerConfig::from_config(&config);
    if let Some(max_connections) = options.max_connections {
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
        eprintln!(
            "spillway serve: descriptor limit {granted} < {wanted}: serving at most {fits} connections (raise `ulimit -Hn` for more)"
        );
        server_config.net.max_connections = fits;
    }

    let server = TcpServer::bind(&options.listen, server_config)
        .with_context(|| format!("listening on {}", options.listen))?;
    let clock = Clock::new();
    let service_ns = options.service_ns;
    let acknowledge = move |_: &Message| {
        clock.spin_for_ns(service_ns);
        Ok(())
    };
    let workers = match &options.workers {
        Some(address) => Some(
            WorkerListener::bind(address, config.workers)
                .with_context(|| format!("listening for workers on {address}"))?,
        ),
        None => None,
    };
    let builder = Engine::builder().config(config);
    let engine = match &workers {
        // The pool serves every message; the front end around it only feeds it.
        Some(listener) => builder
            .handler(listener.pool(server.front_end(acknowledge)))
            .start(),
        None => builder.handler(server.front_end(acknowledge)).start(),
    }
    .context("starting the engine")?;
    if let Some(listener) = &workers {
        println!("spillway serve: workers connect to {}", listener.address());
    }
    println!(
        "spillway serve: listening on {} ({} shards, pinned {}, service {} ns, at most {} connections)",
        server.local_addr(),
        engine.shards(),
        engine.pinned(),
        service_ns,
        server_config.net.max_connections
    );

    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .context("installing signal handlers")?;
    }
    let started = Instant::now();
    let mut next_report = started + Duration::from_secs(5);
    // Relaxed: the flag carries no data; the handler only sets it.
    while !stop.load(Ordering::Relaxed)
        && options
            .duration
            .is_none_or(|limit| started.elapsed() < limit)
    {
        std::thread::sleep(Duration::from_millis(50));
        if Instant::now() >= next_report {
            next_report += Duration::from_secs(5);
            let net = server.stats();
            let total = engine.stats().total;
            eprintln!(
                "spillway serve: {} open, {} submits, {} delivered, {} refused, {} replies sent, {} dropped",
                net.open,
                net.submits,
                total.delivered,
                total.refused_total(),
                net.replies_sent,
                net.replies_dropped_total()
            );
            if let Some(listener) = &workers {
                print_workers(&listener.stats());
            }
        }
    }
    let stats = engine.shutdown();
    let net = server.stats();
    print_summary(&net, &stats);
    if let Some(listener) = &workers {
        print_workers(&listener.stats());
    }
    Ok(ExitCode::SUCCESS)
}

fn print_workers(workers: &WorkerStats) {
    eprintln!(
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

fn print_summary(net: &NetStats, stats: &spillway::metrics::Stats) {
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
    println!("  closed: {}", closed.join(", "));
}
