//! What both tokio/tower baselines are made of, the in-process one (`baseline`) and its TCP
//! twin (`baseline_tcp`): their shared settings (workers, concurrency limit,
//! per-connection quota, handler cost) derived from spillway's configuration, the tokio
//! runtime, governor's keyed limiter, the tower stack around the busy-wait handler, the
//! decision for one message, and the counts that reconcile it.
//!
//! One message's path, the same in both: counted `received`; governor's keyed limiter
//! (`RateLimiter::keyed`, a DashMap of GCRA states keyed by connection id) refuses it
//! (`rate_limited`, completed `Refused(rate_limited)` with governor's wait as the retry
//! hint) or lets it on to `ServiceBuilder::new().load_shed().concurrency_limit(n)` around
//! the handler, driven the canonical way: `ready().await`, `call()`, and the response
//! awaited in a task of its own, as a server spawns a task per request. When every permit
//! is taken, `load_shed` fails the call at once with `Overloaded`: `shed`, completed
//! `Refused { reason: HandlerQueueFull, retry_after_ns: 0 }` (spillway's reason when its
//! handler queue is full; tower gives no retry hint). Otherwise the handler starts
//! (`admitted`) and ends `delivered`, or `failed` on any other error. A stack that cannot
//! get ready is broken: the message is `abandoned` without an outcome, and its caller stops.

use std::convert::Infallible;
use std::future::Future;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_utils::CachePadded;
use governor::clock::Clock as _;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde::{Deserialize, Serialize};
use spillway::clock::Clock;
use spillway::config::Config;
use spillway::message::{Message, Priority, Role};
use spillway::metrics::Tally;
use spillway::outcome::{FailureReason, Outcome, RefusalReason};
use tower::load_shed::error::Overloaded;
use tower::{BoxError, Service, ServiceBuilder, ServiceExt};

/// How long a baseline's shutdown waits for its runtime's threads to finish what they run.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a baseline could not start.
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

/// The settings both baselines share. [`StackSettings::matching`] derives each from
/// spillway's configuration, so that a baseline and spillway get the same cores and the
/// same limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StackSettings {
    /// Tokio worker threads.
    pub workers: usize,
    /// Requests the tower stack lets run at once (`concurrency_limit`), all connections
    /// together; past it, load-shed refuses.
    pub concurrency_limit: usize,
    /// governor's per-connection quota; `None` runs without a rate limiter.
    pub rate: Option<RateSettings>,
    /// Simulated handler cost per message (busy wait), ns.
    pub service_ns: u64,
}

impl StackSettings {
    /// Settings that match an engine started with `config` and `service_ns` handlers on a
    /// machine with `cores` cores:
    ///
    /// - workers: spillway's shard count for that machine
    ///   ([`Config::effective_shards`]), so both process messages on the same number of
    ///   threads;
    /// - concurrency limit: the most admitted, unfinished messages spillway lets one
    ///   producer's traffic (role `session`, priority P1: what the generator sends) hold,
    ///   per shard the smaller of the session role cap and the handler-queue cap, each at
    ///   the P1 threshold, times the shards (9,500 per shard by default); the same depth of
    ///   queued work before refusals begin (with the caps switched off: the handler-queue
    ///   cap, since a typical user still bounds it);
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
        let rate = config.levels.rate_limit.then(|| RateSettings {
            per_connection_per_sec: NonZeroU32::new(config.rate.per_connection_per_sec)
                .unwrap_or(NonZeroU32::MIN),
            burst: NonZeroU32::new(config.rate.burst).unwrap_or(NonZeroU32::MIN),
        });
        Self {
            workers,
            concurrency_limit: per_shard as usize * workers,
            rate,
            service_ns,
        }
    }

    /// Refuses a zero among the worker count, the concurrency limit and `more` (each a
    /// setting's name and value), naming the first.
    pub(crate) fn validate(&self, more: &[(&'static str, usize)]) -> Result<(), BaselineError> {
        let sizes = [
            ("workers", self.workers),
            ("concurrency_limit", self.concurrency_limit),
        ];
        match sizes.iter().chain(more).find(|&&(_, value)| value == 0) {
            Some(&(field, _)) => Err(BaselineError::Zero { field }),
            None => Ok(()),
        }
    }

    /// The limiter description for start-up lines and tables.
    pub fn rate_text(&self) -> String {
        match self.rate {
            Some(rate) => format!(
                "governor keyed limiter {}/s burst {} per connection",
                rate.per_connection_per_sec, rate.burst
            ),
            None => "no rate limiter (spillway's level 1 is off)".to_string(),
        }
    }
}

/// A baseline's counts, each written by the one place that decides it. Relaxed
/// throughout: statistics, read once the runtime has shut down (its wait for the worker
/// threads in `shutdown_timeout` orders those reads after every write), or as a snapshot
/// that may be mid-way.
#[derive(Debug, Default)]
pub(crate) struct AdmissionCounters {
    received: CachePadded<AtomicU64>,
    rate_limited: CachePadded<AtomicU64>,
    shed: CachePadded<AtomicU64>,
    admitted: CachePadded<AtomicU64>,
    abandoned: CachePadded<AtomicU64>,
    delivered: CachePadded<AtomicU64>,
    failed: CachePadded<AtomicU64>,
}

impl AdmissionCounters {
    /// One more message received.
    pub(crate) fn received(&self) {
        bump(&self.received);
    }

    /// One more message abandoned before a decision (its caller's writer or stack is gone).
    pub(crate) fn abandoned(&self) {
        bump(&self.abandoned);
    }

    /// The counts now.
    pub(crate) fn snapshot(&self) -> AdmissionCounts {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        AdmissionCounts {
            received: load(&self.received),
            rate_limited: load(&self.rate_limited),
            shed: load(&self.shed),
            admitted: load(&self.admitted),
            abandoned: load(&self.abandoned),
            delivered: load(&self.delivered),
            failed: load(&self.failed),
        }
    }
}

/// Adds one to a statistics counter (Relaxed: see [`AdmissionCounters`]).
pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// A baseline's counts at one moment: every message received is decided once (rate
/// limited, shed, admitted, or abandoned), and every admitted one ends once (delivered or
/// failed).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdmissionCounts {
    /// Messages received.
    pub received: u64,
    /// Refused by governor's keyed limiter (completed `Refused(rate_limited)`).
    pub rate_limited: u64,
    /// Refused by tower's load-shed (completed `Refused(handler_queue_full)`).
    pub shed: u64,
    /// Handlers started.
    pub admitted: u64,
    /// Received but never decided: the caller's writer had stopped (the client went away)
    /// or the tower stack could not get ready. No outcome.
    pub abandoned: u64,
    /// Handlers finished with success (completed `Delivered`).
    pub delivered: u64,
    /// Responses that ended in another error (completed `Failed(handler_error)`).
    pub failed: u64,
}

impl AdmissionCounts {
    /// The outcomes in spillway's terms (submitted = received).
    pub fn tally(&self) -> Tally {
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

    /// Where the counts disagree with each other, each error naming `who`; empty when they
    /// reconcile.
    pub fn self_check(&self, who: &str) -> Vec<String> {
        let mut errors = Vec::new();
        let decided = self.rate_limited + self.shed + self.admitted + self.abandoned;
        if self.received != decided {
            errors.push(format!(
                "{who}: received {} but rate-limited + shed + admitted + abandoned = {decided}",
                self.received
            ));
        }
        let finished = self.delivered + self.failed;
        if self.admitted != finished {
            errors.push(format!(
                "{who}: admitted {} but delivered + failed = {finished}",
                self.admitted
            ));
        }
        errors
    }
}

/// A baseline's pieces, built by [`start`]: the runtime, the counters, the limiter and the
/// tower stack.
pub(crate) struct Stack<S> {
    pub(crate) runtime: tokio::runtime::Runtime,
    pub(crate) counters: Arc<AdmissionCounters>,
    pub(crate) limiter: Option<DefaultKeyedRateLimiter<u64>>,
    pub(crate) service: S,
}

/// Builds the pieces of a baseline with `settings`: a tokio multi-thread runtime with
/// `settings.workers` threads named `thread_name`, governor's keyed limiter, and the tower
/// stack (`load_shed` over `concurrency_limit` over a service that busy-waits
/// `service_ns`, the load generator's simulated cost) counting admissions. Clones of the
/// service share the concurrency limit's semaphore.
pub(crate) fn start(
    settings: &StackSettings,
    thread_name: &str,
) -> Result<
    Stack<
        impl Service<Message, Response = (), Error = BoxError, Future: Send + 'static>
            + Clone
            + Send
            + 'static,
    >,
    BaselineError,
> {
    // `enable_all` as `#[tokio::main]` does: the twin's timeouts need the timer.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(settings.workers)
        .thread_name(thread_name)
        .enable_all()
        .build()?;
    let counters = Arc::new(AdmissionCounters::default());
    let limiter = settings.rate.map(|rate| {
        RateLimiter::keyed(Quota::per_second(rate.per_connection_per_sec).allow_burst(rate.burst))
    });
    let clock = Clock::new();
    let service_ns = settings.service_ns;
    let handler_counters = Arc::clone(&counters);
    let handler = tower::service_fn(move |_message: Message| {
        let counters = Arc::clone(&handler_counters);
        let clock = clock.clone();
        async move {
            bump(&counters.admitted);
            clock.spin_for_ns(service_ns);
            Ok::<(), Infallible>(())
        }
    });
    let service = ServiceBuilder::new()
        .load_shed()
        .concurrency_limit(settings.concurrency_limit)
        .service(handler);
    Ok(Stack {
        runtime,
        counters,
        limiter,
        service,
    })
}

/// Where [`decide`] sent one message.
pub(crate) enum Decision<F> {
    /// Refused by the limiter: its outcome now.
    RateLimited(Outcome),
    /// In the tower stack: the future gives its outcome (await it in a task of its own).
    Running(F),
    /// The stack could not get ready: abandoned, and the caller stops, as a tower server
    /// does (`svc.ready().await?`).
    Broken,
}

/// One received message through the limiter and the tower stack (see the module).
pub(crate) async fn decide<S>(
    message: Message,
    limiter: Option<&DefaultKeyedRateLimiter<u64>>,
    service: &mut S,
    counters: &Arc<AdmissionCounters>,
) -> Decision<impl Future<Output = Outcome> + Send + 'static>
where
    S: Service<Message, Response = (), Error = BoxError>,
    S::Future: Send + 'static,
{
    if let Some(limiter) = limiter {
        if let Err(not_until) = limiter.check_key(&message.connection.0) {
            bump(&counters.rate_limited);
            let retry_after = not_until.wait_time_from(limiter.clock().now());
            return Decision::RateLimited(Outcome::Refused {
                reason: RefusalReason::RateLimited,
                retry_after_ns: u64::try_from(retry_after.as_nanos()).unwrap_or(u64::MAX),
            });
        }
    }
    // load_shed's poll_ready never fails: it answers ready and fails the call instead when
    // the limit is reached.
    let Ok(ready) = service.ready().await else {
        counters.abandoned();
        return Decision::Broken;
    };
    let response = ready.call(message);
    let counters = Arc::clone(counters);
    Decision::Running(async move {
        match response.await {
            Ok(()) => {
                bump(&counters.delivered);
                Outcome::Delivered
            }
            Err(error) if error.is::<Overloaded>() => {
                bump(&counters.shed);
                Outcome::Refused {
                    reason: RefusalReason::HandlerQueueFull,
                    retry_after_ns: 0,
                }
            }
            Err(_) => {
                bump(&counters.failed);
                Outcome::Failed {
                    reason: FailureReason::HandlerError,
                }
            }
        }
    })
}
