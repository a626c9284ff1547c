//! NATS request/reply as a loadgen target: the client side of `workers-vs-nats`'s peer.
//!
//! Each simulated connection is its own `async_nats::Client` (its own TCP connection to
//! nats-server, its own reply inbox); a message is one `client.request(subject, payload)`
//! run as a task on a tokio runtime, and its reply (the echo workers' answer, through a
//! queue group) comes back to the generator as a [`Completion`] whose response is the
//! reply's payload. The generator (loadgen's `run_with_target`) is the very one that drives
//! `spillway serve` over TCP, so both systems get the same schedules, the same
//! coordinated-omission-corrected latency and the same byte-for-byte echo check.
//!
//! Known bias: the generator is a plain thread, so each request crosses into the runtime
//! (`Handle::spawn`) and each reply back (a channel): two hand-offs the loadgen TCP client
//! does not make, a few microseconds each. That is what a thread calling async-nats pays;
//! the runtime's own threads share the machine's cores with nats-server and its workers.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_nats::{RequestErrorKind, Subject};
use futures_util::future::try_join_all;
use spillway::control::Control;
use spillway::ingress::Full;
use spillway::message::{Bytes, Message};
use spillway::metrics::Tally;
use spillway::outcome::{Completion, FailureReason, Outcome};
use spillway_loadgen::target::{ControlPlaneStats, SystemUnderTest, Target, TargetStats};

/// Connections opened at once while connecting.
const CONNECT_IN_FLIGHT: usize = 64;

/// What the NATS side needs to know.
#[derive(Clone, Debug)]
pub struct NatsSettings {
    /// nats-server's URL (`nats://127.0.0.1:PORT`).
    pub url: String,
    /// The subject the echo workers' queue group listens on.
    pub subject: String,
    /// Client connections, one per simulated connection of the plan.
    pub connections: u32,
    /// Runtime worker threads.
    pub threads: usize,
    /// How long a request waits for its reply before it fails `worker_timeout` (the
    /// worker protocol's default answer deadline is the same 5 s).
    pub request_timeout: Duration,
}

/// What the request tasks count, whole run.
#[derive(Default)]
struct Counters {
    submitted: AtomicU64,
    delivered: AtomicU64,
    timed_out: AtomicU64,
    no_responders: AtomicU64,
    other_errors: AtomicU64,
}

/// The NATS side's own counts when it stops.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct NatsStats {
    /// Requests started.
    pub submitted: u64,
    /// Requests that got a reply.
    pub delivered: u64,
    /// Requests with no reply within the timeout (`worker_timeout`).
    pub timed_out: u64,
    /// Requests nobody was subscribed to answer (`worker_lost`).
    pub no_responders: u64,
    /// Requests that failed in the client or on its connection (`handler_error`).
    pub other_errors: u64,
}

impl NatsStats {
    /// Requests that did not get a reply.
    pub fn errors(&self) -> u64 {
        self.timed_out + self.no_responders + self.other_errors
    }
}

impl TargetStats for NatsStats {
    fn tally(&self) -> Tally {
        let mut tally = Tally {
            submitted: self.submitted,
            admitted: self.submitted,
            delivered: self.delivered,
            ..Tally::default()
        };
        tally.failed[FailureReason::WorkerTimeout.index()] = self.timed_out;
        tally.failed[FailureReason::WorkerLost.index()] = self.no_responders;
        tally.failed[FailureReason::HandlerError.index()] = self.other_errors;
        tally
    }

    fn self_check(&self) -> Vec<String> {
        let ended = self.delivered + self.errors();
        if ended == self.submitted {
            Vec::new()
        } else {
            vec![format!(
                "nats: {} requests submitted, {ended} ended (delivered or failed)",
                self.submitted
            )]
        }
    }

    fn control_plane(&self) -> Option<ControlPlaneStats> {
        None
    }
}

/// The running client side: a runtime and its connections.
pub struct NatsSystem {
    runtime: tokio::runtime::Runtime,
    clients: Arc<[async_nats::Client]>,
    counters: Arc<Counters>,
    settings: NatsSettings,
    target_taken: bool,
}

impl NatsSystem {
    /// Builds the runtime and opens `settings.connections` connections to nats-server.
    ///
    /// # Errors
    /// When the runtime cannot be built or a connection cannot be opened.
    pub fn connect(settings: NatsSettings) -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(settings.threads.max(1))
            .thread_name("nats-client")
            .enable_all()
            .build()
            .context("building the NATS clients' runtime")?;
        let mut clients = Vec::with_capacity(settings.connections as usize);
        runtime.block_on(async {
            let indices: Vec<u32> = (0..settings.connections).collect();
            for batch in indices.chunks(CONNECT_IN_FLIGHT) {
                let opened = try_join_all(batch.iter().map(|index| {
                    async_nats::ConnectOptions::new()
                        .name(format!("workers-vs-nats-{index}"))
                        .request_timeout(Some(settings.request_timeout))
                        .connect(settings.url.as_str())
                }))
                .await
                .with_context(|| format!("connecting to nats-server at {}", settings.url))?;
                // One request each before the run: a client subscribes to its reply inbox
                // on its first request, and the spillway side's connections have likewise
                // said Hello before the run starts.
                try_join_all(opened.iter().map(|client| {
                    client.request(Subject::from(settings.subject.as_str()), Bytes::new())
                }))
                .await
                .context("the first request of each NATS connection")?;
                clients.extend(opened);
            }
            anyhow::Ok(())
        })?;
        Ok(Self {
            runtime,
            clients: clients.into(),
            counters: Arc::default(),
            settings,
            target_taken: false,
        })
    }
}

/// The generator's handle.
pub struct NatsTarget {
    runtime: tokio::runtime::Handle,
    clients: Arc<[async_nats::Client]>,
    subject: Subject,
    counters: Arc<Counters>,
    sender: crossbeam_channel::Sender<Completion>,
    completions: crossbeam_channel::Receiver<Completion>,
    /// Submitted, completion not yet read.
    outstanding: usize,
}

impl Target for NatsTarget {
    fn submit(&mut self, message: Message) -> Result<(), Full<Message>> {
        let client = self.clients[message.connection.0 as usize % self.clients.len()].clone();
        let subject = self.subject.clone();
        let sender = self.sender.clone();
        let counters = Arc::clone(&self.counters);
        // Relaxed: counts read only after the runtime has stopped (its join orders them).
        counters.submitted.fetch_add(1, Ordering::Relaxed);
        self.runtime.spawn(async move {
            let whose = Message::new(message.connection, message.id)
                .with_tenant(message.tenant)
                .with_priority(message.priority);
            let completion = match client.request(subject, message.payload).await {
                Ok(reply) => {
                    counters.delivered.fetch_add(1, Ordering::Relaxed);
                    let mut completion = Completion::of(&whose, Outcome::Delivered);
                    completion.response = reply.payload;
                    completion
                }
                Err(error) => {
                    let (counter, reason) = match error.kind() {
                        RequestErrorKind::TimedOut => {
                            (&counters.timed_out, FailureReason::WorkerTimeout)
                        }
                        RequestErrorKind::NoResponders => {
                            (&counters.no_responders, FailureReason::WorkerLost)
                        }
                        RequestErrorKind::Other => {
                            (&counters.other_errors, FailureReason::HandlerError)
                        }
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                    Completion::of(&whose, Outcome::Failed { reason })
                }
            };
            // Fails only when the generator's end is gone: nobody reads completions any more.
            let _ = sender.send(completion);
        });
        self.outstanding += 1;
        Ok(())
    }

    fn poll_completions(&mut self, completions: &mut Vec<Completion>) -> usize {
        let before = completions.len();
        completions.extend(self.completions.try_iter());
        let read = completions.len() - before;
        self.outstanding -= read;
        read
    }

    fn outstanding(&self) -> usize {
        self.outstanding
    }
}

impl SystemUnderTest for NatsSystem {
    type Target = NatsTarget;
    type Stats = NatsStats;

    fn target(&mut self) -> anyhow::Result<NatsTarget> {
        anyhow::ensure!(!self.target_taken, "the NATS target was already taken");
        self.target_taken = true;
        let (sender, completions) = crossbeam_channel::unbounded();
        Ok(NatsTarget {
            runtime: self.runtime.handle().clone(),
            clients: Arc::clone(&self.clients),
            subject: Subject::from(self.settings.subject.as_str()),
            counters: Arc::clone(&self.counters),
            sender,
            completions,
            outstanding: 0,
        })
    }

    fn workers(&self) -> usize {
        self.settings.threads
    }

    fn pinned(&self) -> bool {
        false
    }

    fn control(&self) -> Option<Control> {
        None
    }

    fn shutdown(self) -> NatsStats {
        let Self {
            runtime,
            clients,
            counters,
            ..
        } = self;
        // Requests still running fail when their client's connection goes; the runtime is
        // stopped without waiting for them (the generator has drained what it could).
        drop(clients);
        runtime.shutdown_timeout(Duration::from_secs(1));
        // Relaxed: the runtime's threads have been joined (or abandoned after the timeout,
        // in which case a count may be one short and the self-check says so).
        NatsStats {
            submitted: counters.submitted.load(Ordering::Relaxed),
            delivered: counters.delivered.load(Ordering::Relaxed),
            timed_out: counters.timed_out.load(Ordering::Relaxed),
            no_responders: counters.no_responders.load(Ordering::Relaxed),
            other_errors: counters.other_errors.load(Ordering::Relaxed),
        }
    }
}
