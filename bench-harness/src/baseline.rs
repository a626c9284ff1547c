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
//! - One dispatcher task receives each message and decides it as the shared stack does
//!   (`baseline_stack`: governor's keyed limiter, then tower's load-shed over
//!   concurrency-limit, the response awaited in a spawned task).
//! - Each completion goes back through a second bounded `tokio::sync::mpsc` with
//!   `send().await`; the generator reads it with `try_recv`.
//!
//! What it does not have, by design of a typical stack: priorities, roles, tenants, byte
//! caps, a circuit breaker, a control plane, and adaptive rate limits (governor's quota is
//! fixed). The generator's traffic (one role, one priority, no payload, at most
//! 33 msg/s per connection in the 500K msg/s run) touches none of those in spillway either,
//! except that spillway still evaluates them.
//!
//! Every message gets exactly one completion and one count ([`AdmissionCounts`]); the
//! generator reconciles its own counts against them.

use std::sync::Arc;

use spillway::config::Config;
use spillway::control::Control;
use spillway::ingress::Full;
use spillway::message::Message;
use spillway::metrics::Tally;
use spillway::outcome::Completion;
use spillway_loadgen::target::{ControlPlaneStats, SystemUnderTest, Target, TargetStats};
use tokio::sync::mpsc;
use tower::{BoxError, Service};

use crate::baseline_stack::{
    self, AdmissionCounters, AdmissionCounts, BaselineError, Decision, StackSettings,
    SHUTDOWN_TIMEOUT,
};

/// The baseline's settings. [`BaselineSettings::matching`] derives each from spillway's
/// configuration, so that the two systems get the same cores and the same limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BaselineSettings {
    /// Workers, concurrency limit, quota and handler cost, as the TCP twin has them.
    pub stack: StackSettings,
    /// Slots in the bounded channel from the generator to the dispatcher.
    pub submission_capacity: usize,
    /// Slots in the bounded channel of completions back to the generator.
    pub completion_capacity: usize,
}

impl BaselineSettings {
    /// Settings that match an engine started with `config` and `service_ns` handlers on a
    /// machine with `cores` cores: the stack's as [`StackSettings::matching`] gives them,
    /// and
    ///
    /// - submission capacity: `ring_capacity × workers`, the submission slots one spillway
    ///   `Ingress` has (one ring per shard), so both hand a message back at the same depth;
    /// - completion capacity: submission capacity plus the concurrency limit, so that every
    ///   message that can be inside the baseline at once has a slot, and a finished task
    ///   waits for the generator only when the generator stops reading (spillway sizes its
    ///   completion rings by the same reasoning).
    pub fn matching(config: &Config, cores: usize, service_ns: u64) -> Self {
        let stack = StackSettings::matching(config, cores, service_ns);
        let submission_capacity = config.ring_capacity * stack.workers;
        Self {
            stack,
            submission_capacity,
            completion_capacity: submission_capacity + stack.concurrency_limit,
        }
    }
}

/// The baseline's final counters, as [`Baseline::shutdown`] read them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BaselineStats {
    /// Every message's count.
    pub counts: AdmissionCounts,
    /// The settings it ran with.
    pub settings: BaselineSettings,
}

impl TargetStats for BaselineStats {
    fn tally(&self) -> Tally {
        self.counts.tally()
    }

    fn self_check(&self) -> Vec<String> {
        self.counts.self_check("baseline")
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

/// The running baseline: a tokio runtime with the dispatcher task on it.
pub struct Baseline {
    runtime: tokio::runtime::Runtime,
    target: Option<BaselineTarget>,
    counters: Arc<AdmissionCounters>,
    settings: BaselineSettings,
}

impl Baseline {
    /// Builds the runtime and starts the dispatcher.
    pub fn start(settings: BaselineSettings) -> Result<Self, BaselineError> {
        settings.stack.validate(&[
            ("submission_capacity", settings.submission_capacity),
            ("completion_capacity", settings.completion_capacity),
        ])?;
        let stack = baseline_stack::start(&settings.stack, "baseline-worker")?;
        let (submit_sender, submit_receiver) = mpsc::channel(settings.submission_capacity);
        let (complete_sender, complete_receiver) = mpsc::channel(settings.completion_capacity);
        stack.runtime.spawn(dispatch(
            submit_receiver,
            stack.limiter,
            stack.service,
            complete_sender,
            Arc::clone(&stack.counters),
        ));
        Ok(Self {
            runtime: stack.runtime,
            target: Some(BaselineTarget {
                submissions: submit_sender,
                completions: complete_receiver,
                poll_max: settings.completion_capacity,
                outstanding: 0,
            }),
            counters: stack.counters,
            settings,
        })
    }
}

/// The dispatcher: one task that takes every submission in order and decides it; a
/// message in the tower stack completes from a task of its own.
async fn dispatch<S>(
    mut submissions: mpsc::Receiver<Message>,
    limiter: Option<governor::DefaultKeyedRateLimiter<u64>>,
    mut service: S,
    completions: mpsc::Sender<Completion>,
    counters: Arc<AdmissionCounters>,
) where
    S: Service<Message, Response = (), Error = BoxError>,
    S::Future: Send + 'static,
{
    while let Some(message) = submissions.recv().await {
        counters.received();
        // The completion says whose message it was, as the engine's do.
        let whose = Message::new(message.connection, message.id)
            .with_tenant(message.tenant)
            .with_priority(message.priority);
        let completion = move |outcome| Completion::of(&whose, outcome);
        match baseline_stack::decide(message, limiter.as_ref(), &mut service, &counters).await {
            Decision::RateLimited(outcome) => {
                if completions.send(completion(outcome)).await.is_err() {
                    // The generator's end is gone: nobody reads completions any more.
                    return;
                }
            }
            Decision::Running(outcome) => {
                let completions = completions.clone();
                tokio::spawn(async move {
                    // Fails only when the generator's end is gone; nothing is left to tell.
                    let _ = completions.send(completion(outcome.await)).await;
                });
            }
            // The message has no completion; the run's reconciliation reports it.
            Decision::Broken => return,
        }
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
        self.settings.stack.workers
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
        BaselineStats {
            counts: self.counters.snapshot(),
            settings: self.settings,
        }
    }
}
