//! The baseline: the same workload built the way a typical Rust user would build it with
//! tokio and tower, driven by loadgen's generator through the same
//! [`Target`] interface as spillway's `Ingress`, so the `e2e` binary measures both the same
//! way.
//!
//! Shape (nothing here uses spillway's internals; only its message and completion types, so
//! that the generator's bookkeeping is unchanged):
//!
//! ```text
//! generator thread --try_send--> bounded tokio mpsc --> dispatcher task (one)
//!                                                        | governor keyed limiter (per connection)
//!                                                        |   no -> Refused(rate_limited)
//!                                                        | tower: LoadShed<ConcurrencyLimit<handler>>
//!                                                        |   ready().await, call(), tokio::spawn(response)
//!                                                        v
//!                                            spawned task: handler (busy wait service_ns)
//!                                                        |   Ok -> Delivered
//!                                                        |   Overloaded -> Refused(handler_queue_full)
//! generator thread <--try_recv-- bounded tokio mpsc <----+ send().await
//! ```
//!
//! - A tokio multi-thread runtime with as many workers as spillway has shards, so both get
//!   the same cores; its threads are not pinned (tokio does not pin, and a typical user does
//!   not either; spillway's default configuration does not pin its shards).
//! - `submit` is `try_send` on a bounded `tokio::sync::mpsc`: a full channel hands the message
//!   back, as spillway's ring does; a closed one (runtime shut down) says it stopped.
//! - One dispatcher task receives, asks governor's keyed limiter (`RateLimiter::keyed`, a
//!   DashMap of GCRA states keyed by connection id), then drives one tower stack
//!   `ServiceBuilder::new().load_shed().concurrency_limit(n)` in the canonical way:
//!   `ready().await`, `call()`, and `tokio::spawn` of the response future, as a server spawns
//!   a task per request.
//! - When every concurrency permit is taken, `load_shed` fails the call at once with
//!   `Overloaded`; that completes as `Refused { reason: HandlerQueueFull, retry_after_ns: 0 }`,
//!   the reason spillway gives when its handler queue is full (tower gives no retry hint).
//! - Each completion goes back through a second bounded `tokio::sync::mpsc` with
//!   `send().await`; the generator reads it with `try_recv`.
//!
//! What it does not have, by design of a typical stack: priorities, roles, tenants, byte
//! caps, a circuit breaker, a control plane, and adaptive rate limits (governor's quota is
//! fixed). The generator's traffic (one role, one priority, no payload, at most
//! 33 msg/s per connection in the 500K msg/s run) touches none of those in spillway either,
//! except that spillway still evaluates them.
//!
//! Every message gets exactly one completion and one count: the dispatcher counts what it
//! receives and what the limiter refuses, the handler counts what it starts (admitted), the
//! task counts how the response ended (delivered, shed, failed). [`BaselineStats`] checks
//! `received = rate_limited + shed + admitted` and `admitted = delivered + failed`, and the
//! generator reconciles its own counts against them.

use std::convert::Infallible;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_utils::CachePadded;
use governor::clock::Clock as _;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use spillway::clock::Clock;
use spillway::config::Config;
use spillway::control::Control;
use spillway::ingress::Full;
use spillway::message::{Message, Priority, Role};
use spillway::metrics::Tally;
use spillway::outcome::{Completion, FailureReason, Outcome, RefusalReason};
use spillway_loadgen::target::{ControlPlaneStats, SystemUnderTest, Target, TargetStats};
use tokio::sync::mpsc;
use tower::load_shed::error::Overloaded;
use tower::{BoxError, Service, ServiceBuilder, ServiceExt};

/// How long [`Baseline::shutdown`] waits for the runtime's threads to finish what they run.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the baseline could not start.
#[derive(Debug, thiserror::Error)]
pub enum BaselineError {
    /// A setting is out of range.
    #[error("baseline setting {field} must be at least 1, got 0")]
    Zero {
        /// The setting's name.
        field: &'static str,
    },
    /// The tokio runtime could not be built (its threads could not be started).
    #[error("building the tokio runtime: {0}")]
    Runtime(#[from] std::io::Error),
}

/// The per-connection quota, governor's way: a rate and a burst.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateSettings {
    /// Messages per second per connection.
    pub per_connection_per_sec: NonZeroU32,
    /// Most messages a connection may send at once after being quiet.
    pub burst: NonZeroU32,
}

/// The baseline's settings. [`BaselineSettings::matching`] derives each from spillway's
/// configuration, so that the two systems get the same cores and the same limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BaselineSettings {
    /// Tokio worker threads.
    pub workers: usize,
    /// Slots in the bounded channel from the generator to the dispatcher.
    pub submission_capacity: usize,
    /// Requests the tower stack lets run at once (`concurrency_limit`); past it, load-shed
    /// refuses.
    pub concurrency_limit: usize,
    /// Slots in the bounded channel of completions back to the generator.
    pub completion_capacity: usize,
    /// governor's per-connection quota; `None` runs without a rate limiter.
    pub rate: Option<RateSettings>,
    /// Simulated handler cost per message (busy wait), ns.
    pub service_ns: u64,
}

impl BaselineSettings {
    /// Settings that match an engine started with `config` and `service_ns` handlers on a
    /// machine with `cores` cores:
    ///
    /// - workers: spillway's shard count for that machine
    ///   ([`Config::effective_shards`]), so both process messages on the same number of
    ///   threads;
    /// - submission capacity: `ring_capacity × workers`, the submission slots one spillway
    ///   `Ingress` has (one ring per shard), so both hand a message back at the same depth;
    /// - concurrency limit: the most admitted, unfinished messages spillway lets one
    ///   producer's traffic (role `session`, priority P1: what the generator sends) hold,
    ///   per shard the smaller of the session role cap and the handler-queue cap, each at
    ///   the P1 threshold, times the shards (9,500 per shard by default); the same depth of
    ///   queued work before refusals begin (with the caps switched off: the handler-queue
    ///   cap, since a typical user still bounds it);
    /// - completion capacity: submission capacity plus the concurrency limit, so that every
    ///   message that can be inside the baseline at once has a slot, and a finished task
    ///   waits for the generator only when the generator stops reading (spillway sizes its
    ///   completion rings by the same reasoning);
    /// - rate: spillway's per-connection rate and burst (500/s, burst 1000 by default), or
    ///   none when spillway's level 1 is switched off; governor has no adaptive variant, so
    ///   spillway's adaptive cut has no counterpart (it never triggers at the e2e loads).
    pub fn matching(config: &Config, cores: usize, service_ns: u64) -> Self {
        let workers = config.effective_shards(cores);
        let caps = &config.caps;
        let threshold = u64::from(caps.priority_threshold_percent[Priority::P1.index()]);
        let at_threshold = |cap: u32| (u64::from(cap) * threshold / 100).max(1);
        let handler_queue = at_threshold(caps.handler_queue);
        let per_shard = if config.levels.queue_caps {
            at_threshold(caps.role_messages[Role::Session.index()]).min(handler_queue)
        } else {
            handler_queue
        };
        let submission_capacity = config.ring_capacity * workers;
        let concurrency_limit = per_shard as usize * workers;
        let rate = config.levels.rate_limit.then(|| RateSettings {
            per_connection_per_sec: NonZeroU32::new(config.rate.per_connection_per_sec)
                .unwrap_or(NonZeroU32::MIN),
            burst: NonZeroU32::new(config.rate.burst).unwrap_or(NonZeroU32::MIN),
        });
        Self {
            workers,
            submission_capacity,
            concurrency_limit,
            completion_capacity: submission_capacity + concurrency_limit,
            rate,
            service_ns,
        }
    }

    fn validate(&self) -> Result<(), BaselineError> {
        let sizes = [
            ("workers", self.workers),
            ("submission_capacity", self.submission_capacity),
            ("concurrency_limit", self.concurrency_limit),
            ("completion_capacity", self.completion_capacity),
        ];
        match sizes.into_iter().find(|&(_, value)| value == 0) {
            Some((field, _)) => Err(BaselineError::Zero { field }),
            None => Ok(()),
        }
    }
}

/// The baseline's own counts, each written by the one place that decides it. Relaxed
/// throughout: they are statistics, read after the runtime has shut down (its wait for
/// the worker threads in `shutdown_timeout` orders those reads after every write).
#[derive(Debug, Default)]
struct Counters {
    /// Messages the dispatcher took from the submission channel.
    received: CachePadded<AtomicU64>,
    /// Refused by governor's keyed limiter.
    rate_limited: CachePadded<AtomicU64>,
    /// Refused by tower's load-shed (every concurrency permit taken).
    shed: CachePadded<AtomicU64>,
    /// Handlers started: the message got a permit and runs.
    admitted: CachePadded<AtomicU64>,
    /// Handlers that finished with success.
    delivered: CachePadded<AtomicU64>,
    /// Responses that ended in an error other than load-shed's.
    failed: CachePadded<AtomicU64>,
}

pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// The refusal for a message governor's keyed limiter turned away, with its retry-after.
pub(crate) fn rate_limited(
    not_until: &governor::NotUntil<governor::clock::QuantaInstant>,
    limiter: &DefaultKeyedRateLimiter<u64>,
) -> Outcome {
    let retry_after = not_until.wait_time_from(limiter.clock().now());
    Outcome::Refused {
        reason: RefusalReason::RateLimited,
        retry_after_ns: u64::try_from(retry_after.as_nanos()).unwrap_or(u64::MAX),
    }
}

/// What the tower stack's answer to one message means, counted in the matching counter:
/// delivered, shed by `load_shed` (refused `HandlerQueueFull`: every concurrency permit
/// was taken), or failed. Both baselines map answers this way.
pub(crate) fn counted_outcome(
    response: Result<(), BoxError>,
    delivered: &AtomicU64,
    shed: &AtomicU64,
    failed: &AtomicU64,
) -> Outcome {
    match response {
        Ok(()) => {
            bump(delivered);
            Outcome::Delivered
        }
        Err(error) if error.is::<Overloaded>() => {
            bump(shed);
            Outcome::Refused {
                reason: RefusalReason::HandlerQueueFull,
                retry_after_ns: 0,
            }
        }
        Err(_) => {
            bump(failed);
            Outcome::Failed {
                reason: FailureReason::HandlerError,
            }
        }
    }
}

/// The baseline's final counters, as [`Baseline::shutdown`] read them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BaselineStats {
    /// Messages the dispatcher received.
    pub received: u64,
    /// Refused by the governor limiter (completed `Refused(rate_limited)`).
    pub rate_limited: u64,
    /// Refused by tower's load-shed (completed `Refused(handler_queue_full)`).
    pub shed: u64,
    /// Handlers started.
    pub admitted: u64,
    /// Handlers finished with success (completed `Delivered`).
    pub delivered: u64,
    /// Responses that ended in another error (completed `Failed(handler_error)`).
    pub failed: u64,
    /// The settings it ran with.
    pub settings: BaselineSettings,
}

impl TargetStats for BaselineStats {
    fn tally(&self) -> Tally {
        let mut tally = Tally {
            submitted: self.received,
            admitted: self.admitted,
            delivered: self.delivered,
            ..Tally::default()
        };
        tally.refused[RefusalReason::RateLimited.index()] = self.rate_limited;
        tally.refused[RefusalReason::HandlerQueueFull.index()] = self.shed;
        tally.failed[FailureReason::HandlerError.index()] = self.failed;
        tally
    }

    fn self_check(&self) -> Vec<String> {
        let mut errors = Vec::new();
        let decided = self.rate_limited + self.shed + self.admitted;
        if self.received != decided {
            errors.push(format!(
                "baseline: received {} but rate-limited + shed + admitted = {decided}",
                self.received
            ));
        }
        let finished = self.delivered + self.failed;
        if self.admitted != finished {
            errors.push(format!(
                "baseline: admitted {} but delivered + failed = {finished}",
                self.admitted
            ));
        }
        errors
    }

    fn control_plane(&self) -> Option<ControlPlaneStats> {
        None
    }
}

/// The generator's handle: the sending end of the submission channel and the receiving
/// end of the completion channel.
pub struct BaselineTarget {
    submissions: mpsc::Sender<Message>,
    completions: mpsc::Receiver<Completion>,
    /// Most completions one poll moves, so that a poll ends even while tasks keep sending.
    poll_max: usize,
    /// Submitted, completion not yet read.
    outstanding: usize,
}

impl Target for BaselineTarget {
    #[inline]
    fn submit(&mut self, message: Message) -> Result<(), Full<Message>> {
        match self.submissions.try_send(message) {
            Ok(()) => {
                self.outstanding += 1;
                Ok(())
            }
            Err(mpsc::error::TrySendError::Full(message)) => Err(Full {
                message,
                stopped: false,
            }),
            Err(mpsc::error::TrySendError::Closed(message)) => Err(Full {
                message,
                stopped: true,
            }),
        }
    }

    #[inline]
    fn poll_completions(&mut self, completions: &mut Vec<Completion>) -> usize {
        let mut read = 0;
        while read < self.poll_max {
            match self.completions.try_recv() {
                Ok(completion) => {
                    completions.push(completion);
                    read += 1;
                }
                Err(_) => break,
            }
        }
        self.outstanding -= read;
        read
    }

    #[inline]
    fn outstanding(&self) -> usize {
        self.outstanding
    }
}

/// Governor's keyed limiter per connection with `rate`'s quota, or none when the rate
/// limit is off. Shared by the in-process baseline and its TCP twin.
pub(crate) fn keyed_limiter(rate: Option<RateSettings>) -> Option<DefaultKeyedRateLimiter<u64>> {
    rate.map(|rate| {
        RateLimiter::keyed(Quota::per_second(rate.per_connection_per_sec).allow_burst(rate.burst))
    })
}

/// The handler as a tokio user stacks it: tower's `load_shed` over `concurrency_limit`
/// over a service that busy-waits `service_ns` (the load generator's simulated cost).
/// `started` runs as each handler starts (the caller counts admissions with it). Shared by
/// the in-process baseline and its TCP twin.
pub(crate) fn service_stack(
    service_ns: u64,
    concurrency_limit: usize,
    started: impl Fn() + Clone + Send + Sync + 'static,
) -> impl Service<Message, Response = (), Error = BoxError, Future: Send + 'static>
       + Clone
       + Send
       + 'static {
    let clock = Clock::new();
    let handler = tower::service_fn(move |_message: Message| {
        let started = started.clone();
        let clock = clock.clone();
        async move {
            started();
            clock.spin_for_ns(service_ns);
            Ok::<(), Infallible>(())
        }
    });
    ServiceBuilder::new()
        .load_shed()
        .concurrency_limit(concurrency_limit)
        .service(handler)
}

/// The running baseline: a tokio runtime with the dispatcher task on it.
pub struct Baseline {
    runtime: tokio::runtime::Runtime,
    target: Option<BaselineTarget>,
    counters: Arc<Counters>,
    settings: BaselineSettings,
}

impl Baseline {
    /// Builds the runtime and starts the dispatcher.
    pub fn start(settings: BaselineSettings) -> Result<Self, BaselineError> {
        settings.validate()?;
        // `enable_all` as `#[tokio::main]` does; with the features used here that is the
        // timer, which nothing in the message path needs.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(settings.workers)
            .thread_name("baseline-worker")
            .enable_all()
            .build()?;
        let counters = Arc::new(Counters::default());
        let (submit_sender, submit_receiver) = mpsc::channel(settings.submission_capacity);
        let (complete_sender, complete_receiver) = mpsc::channel(settings.completion_capacity);
        let limiter = keyed_limiter(settings.rate);
        let handler_counters = Arc::clone(&counters);
        let service = service_stack(settings.service_ns, settings.concurrency_limit, move || {
            bump(&handler_counters.admitted)
        });
        runtime.spawn(dispatch(
            submit_receiver,
            limiter,
            service,
            complete_sender,
            Arc::clone(&counters),
        ));
        Ok(Self {
            runtime,
            target: Some(BaselineTarget {
                submissions: submit_sender,
                completions: complete_receiver,
                poll_max: settings.completion_capacity,
                outstanding: 0,
            }),
            counters,
            settings,
        })
    }
}

/// The dispatcher: one task that takes every submission in order, asks the limiter, then
/// hands the message to the tower stack and spawns the response.
async fn dispatch<S>(
    mut submissions: mpsc::Receiver<Message>,
    limiter: Option<DefaultKeyedRateLimiter<u64>>,
    mut service: S,
    completions: mpsc::Sender<Completion>,
    counters: Arc<Counters>,
) where
    S: Service<Message, Response = (), Error = BoxError>,
    S::Future: Send + 'static,
{
    while let Some(message) = submissions.recv().await {
        bump(&counters.received);
        let (id, connection) = (message.id, message.connection);
        if let Some(limiter) = &limiter {
            if let Err(not_until) = limiter.check_key(&connection.0) {
                bump(&counters.rate_limited);
                let outcome = rate_limited(&not_until, limiter);
                let completion = Completion {
                    message: id,
                    connection,
                    outcome,
                };
                if completions.send(completion).await.is_err() {
                    // The generator's end is gone: nobody reads completions any more.
                    return;
                }
                continue;
            }
        }
        // load_shed's poll_ready never fails: it answers ready and fails the call instead
        // when the limit is reached. A service that cannot get ready is broken, and a tower
        // server stops (`svc.ready().await?`); so does this one. The message was counted
        // received and gets no completion, so the run's reconciliation reports it.
        let Ok(ready) = service.ready().await else {
            return;
        };
        let response = ready.call(message);
        let completions = completions.clone();
        let counters = Arc::clone(&counters);
        tokio::spawn(async move {
            let outcome = counted_outcome(
                response.await,
                &counters.delivered,
                &counters.shed,
                &counters.failed,
            );
            // Fails only when the generator's end is gone; nothing is left to tell.
            let _ = completions
                .send(Completion {
                    message: id,
                    connection,
                    outcome,
                })
                .await;
        });
    }
}

impl SystemUnderTest for Baseline {
    type Target = BaselineTarget;
    type Stats = BaselineStats;

    fn target(&mut self) -> anyhow::Result<BaselineTarget> {
        self.target
            .take()
            .ok_or_else(|| anyhow::anyhow!("the baseline's target was already taken"))
    }

    fn workers(&self) -> usize {
        self.settings.workers
    }

    fn pinned(&self) -> bool {
        false
    }

    fn control(&self) -> Option<Control> {
        None
    }

    fn shutdown(self) -> BaselineStats {
        // Stops the dispatcher and every task at their next await; a message still in the
        // submission channel then was never received and stays uncounted (the generator
        // reports it as never completed).
        self.runtime.shutdown_timeout(SHUTDOWN_TIMEOUT);
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let counters = &self.counters;
        BaselineStats {
            received: load(&counters.received),
            rate_limited: load(&counters.rate_limited),
            shed: load(&counters.shed),
            admitted: load(&counters.admitted),
            delivered: load(&counters.delivered),
            failed: load(&counters.failed),
            settings: self.settings,
        }
    }
}
