//! What the generator drives: a [`Target`] takes messages and hands back one completion per
//! message; a [`SystemUnderTest`] starts, hands out that target, and reports its own
//! counters when it shuts down.
//!
//! The generator's open and closed loops are generic over [`Target`] and monomorphised for
//! each, so the in-process path through spillway's [`Ingress`] pays nothing for the trait.
//! Anything else measured "the same way" (the tokio/tower baseline in `spillway-bench`)
//! implements these traits and goes through the generator's `run_with_target`: the same
//! schedules, the same coordinated-omission-corrected latency, the same lag histogram, the
//! same reconciliation and the same report. So does the TCP client (module `tcp`), against
//! a server in another process, or several at once: a system that splits its connections
//! among several servers says so ([`SystemUnderTest::split`]), and the generator then
//! counts, reconciles and reports each server on its own as well as all together.

use anyhow::Context;
use spillway::control::{CommandKind, CommandLatency, Control};
use spillway::engine::Engine;
use spillway::ingress::{Full, Ingress};
use spillway::message::Message;
use spillway::metrics::{Stats, Tally};
use spillway::outcome::Completion;

use crate::split::ConnectionSplit;
use crate::tcp_stats::TcpStats;

/// A producer's handle on the system under test, owned by the generator thread.
pub trait Target {
    /// Hands `message` to the target, or hands it back in [`Full`]: `stopped: false` when
    /// the target has no room now (read completions, then retry), `stopped: true` when it
    /// has stopped and retrying cannot help.
    fn submit(&mut self, message: Message) -> Result<(), Full<Message>>;

    /// Sends what the `submit` calls since the last flush left buffered. The generator
    /// calls it once per turn, after that turn's submissions. Targets that hand each
    /// message over in `submit` (spillway's `Ingress`) have nothing to do.
    #[inline]
    fn flush(&mut self) {}

    /// Moves the completions that have arrived to the end of `completions`; returns how
    /// many.
    fn poll_completions(&mut self, completions: &mut Vec<Completion>) -> usize;

    /// Messages submitted whose completions have not been collected yet.
    fn outstanding(&self) -> usize;

    /// For a target that splits its connections among several servers
    /// ([`SystemUnderTest::split`]), [`outstanding`](Self::outstanding) by server, in
    /// order; empty (the default) for one.
    fn outstanding_by_target(&self) -> Vec<usize> {
        Vec::new()
    }
}

impl Target for Ingress {
    #[inline]
    fn submit(&mut self, message: Message) -> Result<(), Full<Message>> {
        Ingress::submit(self, message)
    }

    #[inline]
    fn poll_completions(&mut self, completions: &mut Vec<Completion>) -> usize {
        Ingress::poll_completions(self, completions)
    }

    #[inline]
    fn outstanding(&self) -> usize {
        Ingress::outstanding(self)
    }
}

/// A control plane's final figures, for a target that has one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ControlPlaneStats {
    /// The circuit breaker's state at the end, by name.
    pub breaker_final: &'static str,
    /// Health-check latency as the control plane measured it, if any check was served.
    pub health_latency: Option<CommandLatency>,
    /// Health checks slower than the target's SLO, whole run.
    pub slo_violations: u64,
}

/// A target's own counters after it shut down, which the generator's counts are
/// reconciled against.
pub trait TargetStats {
    /// Every message's outcome as the target itself counted it, whole run, in spillway's
    /// terms (submitted = refused + shed + admitted; admitted = delivered + failed +
    /// cancelled + dropped).
    fn tally(&self) -> Tally;

    /// Where the target's own counters disagree with each other; empty when they
    /// reconcile.
    fn self_check(&self) -> Vec<String>;

    /// The control plane's figures; `None` when the target has no control plane (reports
    /// then say so instead of printing zeros).
    fn control_plane(&self) -> Option<ControlPlaneStats>;

    /// Submitted messages the target accounted for that have no completion and never
    /// will: for a TCP target, replies the server reported dropped, and messages in flight
    /// on a connection that closed. The generator's reconciliation counts them with the
    /// completions it read. 0 (the default) for a target that completes every message.
    fn without_reply(&self) -> u64 {
        0
    }

    /// The TCP client's figures, for a TCP target (reports then add them); `None` (the
    /// default) for any other.
    fn tcp(&self) -> Option<&TcpStats> {
        None
    }

    /// For a system that split its connections among several servers, each server's own
    /// counters, in order (the generator reconciles and reports each); empty (the default)
    /// for one.
    fn targets(&self) -> &[TcpStats] {
        &[]
    }
}

impl TargetStats for Stats {
    fn tally(&self) -> Tally {
        self.total
    }

    fn self_check(&self) -> Vec<String> {
        if self.reconciles() {
            Vec::new()
        } else {
            vec!["the engine's own counters do not reconcile".to_string()]
        }
    }

    fn control_plane(&self) -> Option<ControlPlaneStats> {
        Some(ControlPlaneStats {
            breaker_final: self.breaker.name(),
            health_latency: self
                .control
                .latency
                .iter()
                .find(|latency| latency.command == CommandKind::Health)
                .copied(),
            slo_violations: self.control.slo_violations,
        })
    }
}

impl TargetStats for TcpStats {
    fn tally(&self) -> Tally {
        self.replies
    }

    fn self_check(&self) -> Vec<String> {
        TcpStats::self_check(self)
    }

    fn control_plane(&self) -> Option<ControlPlaneStats> {
        None
    }

    fn without_reply(&self) -> u64 {
        self.without_reply.total()
    }

    fn tcp(&self) -> Option<&TcpStats> {
        Some(self)
    }

    fn targets(&self) -> &[TcpStats] {
        &self.targets
    }
}

/// A started system the generator can run a plan against.
pub trait SystemUnderTest {
    /// The producer handle the generator thread drives.
    type Target: Target;
    /// What [`shutdown`](Self::shutdown) reports.
    type Stats: TargetStats;

    /// The producer handle; called once per run, before the first message.
    fn target(&mut self) -> anyhow::Result<Self::Target>;

    /// Threads that process messages (spillway's shards, a runtime's workers).
    fn workers(&self) -> usize;

    /// Whether every one of those threads is pinned to its own core.
    fn pinned(&self) -> bool;

    /// A control-plane handle for the health-check probe and the progress line; `None`
    /// when the system has no control plane (the probe is then not run).
    fn control(&self) -> Option<Control>;

    /// Which server each connection goes to, for a system that drives several at once;
    /// `None` (the default) for one. Its stats then give each server's counters
    /// ([`TargetStats::targets`]) and its target each server's outstanding messages
    /// ([`Target::outstanding_by_target`]), in the split's order.
    fn split(&self) -> Option<ConnectionSplit> {
        None
    }

    /// Stops the system and returns its own final counters. The target is still held by
    /// the caller, which reads any completions made during the stop.
    fn shutdown(self) -> Self::Stats;
}

impl SystemUnderTest for Engine {
    type Target = Ingress;
    type Stats = Stats;

    fn target(&mut self) -> anyhow::Result<Ingress> {
        self.ingress().context("taking an ingress")
    }

    fn workers(&self) -> usize {
        self.shards()
    }

    fn pinned(&self) -> bool {
        Engine::pinned(self)
    }

    fn control(&self) -> Option<Control> {
        Some(Engine::control(self))
    }

    fn shutdown(self) -> Stats {
        Engine::shutdown(self)
    }
}
