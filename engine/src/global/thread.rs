//! The lease thread: one per engine with fleet-wide rates, never a shard. Every
//! `refresh_ns` it measures each tenant's demand here (what reached the check since the last
//! lease), asks Redis for a lease ([`LeaseStore::lease`], one script call), and sets the
//! tenant's bucket to the share granted. A failed call puts the tenant on its fallback at
//! once and retries with exponential backoff and full jitter; the first lease granted after
//! that restores the share. On stop it gives every share back so the others need not wait
//! for its leases to expire.

use core::time::Duration;
use std::time::Instant;

use crate::admission::global::{GlobalQuotas, QuotaMode, TenantQuota};
use crate::backoff::{backoff_delay, time_seed, BackoffConfig, SplitMix64};
use crate::config::GlobalConfig;
use crate::log_limit::{LogLimit, SECOND_NS};
use crate::sync::{Arc, AtomicBool, Ordering};

use super::lease::{Demand, LeaseError, LeaseStore, Resource};

/// Events about Redis told per second at most; the rest are counted into the next.
const REDIS_EVENTS_PER_SECOND: u32 = 4;

/// Weight of the newest interval in the demand estimate (an exponential moving average):
/// a half keeps the estimate within a few percent of a steady offered rate after three
/// renewals, and still follows a step within two.
const DEMAND_SMOOTHING: f64 = 0.5;

/// A process asks for this much more than the demand it measured: a share of exactly the
/// mean offered rate refuses the arrivals' bursts above the mean (measured: 2.7% of a
/// steady 15K msg/s sender's messages over TCP with `burst_ns` 100 ms). It costs the fleet
/// at most this fraction of the shares of processes that want less than their fair share.
const DEMAND_HEADROOM: f64 = 1.03;

/// The same for a pending share: the pending count is a level that swings with every
/// batch, not a rate, so it gets more room.
const PENDING_HEADROOM: f64 = 1.25;

/// The running lease thread; stopping it (or dropping this) gives the shares back.
#[derive(Debug)]
pub struct LeaseThread {
    stop: Arc<AtomicBool>,
    /// Ends the thread's wait in the watch's poll at once.
    waker: Arc<mio::Waker>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl LeaseThread {
    /// Starts the thread for `quotas`' tenants, at niceness `nice` when given (the control
    /// thread's: on a machine whose cores the shards saturate, a lease thread at the
    /// default priority can miss Redis's timeout). Fails on a Redis URL the client cannot
    /// parse or a thread that cannot start; Redis itself is first asked by the thread.
    pub fn spawn(
        config: &GlobalConfig,
        quotas: Arc<GlobalQuotas>,
        nice: Option<i32>,
    ) -> Result<Self, LeaseError> {
        let timeout = Duration::from_nanos(config.timeout_ns);
        let store = if config.cluster {
            LeaseStore::new_cluster(&config.redis, timeout)
        } else {
            LeaseStore::new(&config.redis, timeout)
        }?;
        let stop = Arc::new(AtomicBool::new(false));
        let no_thread = |error: std::io::Error| LeaseError::Unavailable {
            url: "(lease thread)".to_string(),
            detail: format!("cannot start the lease thread: {error}"),
        };
        let watch = Watch::new(&store).map_err(no_thread)?;
        let waker = Arc::clone(&watch.waker);
        let mut renewer = Renewer::new(config, quotas, store, watch);
        let thread_stop = Arc::clone(&stop);
        let handle = std::thread::Builder::new()
            .name("spillway-lease".to_string())
            .spawn(move || {
                if let Some(nice) = nice {
                    crate::control::raise_thread_priority(nice);
                }
                renewer.run(&thread_stop)
            })
            .map_err(no_thread)?;
        Ok(Self {
            stop,
            waker,
            handle: Some(handle),
        })
    }

    /// Stops the thread after it has given every share back (bounded by Redis's timeout
    /// per tenant).
    pub fn stop(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        // Release: the thread's Acquire load of the flag ends its loop; nothing else is
        // published with it.
        self.stop.store(true, Ordering::Release);
        if let Some(handle) = self.handle.take() {
            // A failed wake leaves the thread to notice the flag at its next renewal.
            let _ = self.waker.wake();
            let _ = handle.join();
        }
    }
}

impl Drop for LeaseThread {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// One tenant's lease as the thread keeps it.
struct TenantLease {
    /// Messages and bytes offered as of the last measurement.
    offered_then: (u64, u64),
    measured_at: Instant,
    /// Smoothed demand, per second.
    wants_per_sec: (f64, f64),
    /// Smoothed pending demand (messages at once), for a fleet-wide cap.
    wants_pending: f64,
    /// Cap refusals as of the last measurement.
    cap_refused_then: u64,
    /// Consecutive failed requests (the backoff's exponent).
    failures: u32,
    next_attempt: Instant,
    /// When the current lease, if any, runs out on this side (counted from sending).
    leased_until: Option<Instant>,
    /// Whether a lease was ever granted (the first is logged).
    ever_leased: bool,
    /// When a held lease was lost to a failure, until the next lease.
    fell_back_at: Option<Instant>,
}

struct Renewer {
    quotas: Arc<GlobalQuotas>,
    store: LeaseStore,
    process: String,
    refresh: Duration,
    lease_for: Duration,
    backoff: BackoffConfig,
    random: SplitMix64,
    leases: Vec<TenantLease>,
    failures_told: LogLimit<()>,
    started: Instant,
    watch: Watch,
}

impl Renewer {
    fn new(
        config: &GlobalConfig,
        quotas: Arc<GlobalQuotas>,
        store: LeaseStore,
        watch: Watch,
    ) -> Self {
        let now = Instant::now();
        let leases = quotas
            .iter()
            .map(|quota| TenantLease {
                offered_then: quota.offered(),
                measured_at: now,
                wants_per_sec: (0.0, 0.0),
                wants_pending: 0.0,
                cap_refused_then: 0,
                failures: 0,
                next_attempt: now,
                leased_until: None,
                ever_leased: false,
                fell_back_at: None,
            })
            .collect();
        Self {
            quotas,
            store,
            process: config.process.clone().unwrap_or_else(default_process_name),
            refresh: Duration::from_nanos(config.refresh_ns),
            lease_for: Duration::from_nanos(config.lease_ns),
            backoff: BackoffConfig {
                base_delay: Duration::from_nanos(config.refresh_ns),
                max_delay: Duration::from_nanos(config.reconnect_backoff_max_ns),
                max_retries: u32::MAX,
            },
            random: SplitMix64::new(time_seed(0)),
            leases,
            failures_told: LogLimit::new(SECOND_NS, REDIS_EVENTS_PER_SECOND),
            started: now,
            watch,
        }
    }

    fn run(&mut self, stop: &AtomicBool) {
        tracing::info!(
            process = %self.process,
            tenants = self.leases.len(),
            refresh_ms = self.refresh.as_millis() as u64,
            lease_ms = self.lease_for.as_millis() as u64,
            "fleet quotas: lease thread started"
        );
        // Acquire: pairs with `stop_and_join`'s Release.
        while !stop.load(Ordering::Acquire) {
            let quotas = Arc::clone(&self.quotas);
            for (position, quota) in quotas.iter().enumerate() {
                let now = Instant::now();
                if now >= self.leases[position].next_attempt {
                    self.renew(position, quota, now);
                } else if self.leases[position]
                    .leased_until
                    .is_some_and(|until| now >= until)
                {
                    // Not renewed in time (only while its retries back off): no share.
                    self.leases[position].leased_until = None;
                    self.quotas.fall_back(quota);
                }
            }
            let next = self
                .leases
                .iter()
                .map(|lease| lease.next_attempt)
                .min()
                .unwrap_or_else(|| Instant::now() + self.refresh);
            let wait = next.saturating_duration_since(Instant::now());
            if !wait.is_zero() {
                for lost in self.watch.wait(wait) {
                    // Its server closed the idle connection: ask now, so that the refused
                    // connection puts the tenants on their fallback without waiting for
                    // their renewal.
                    for (position, quota) in quotas.iter().enumerate() {
                        if self.store.server_index(quota.tenant()) == lost {
                            self.leases[position].next_attempt = Instant::now();
                        }
                    }
                }
            }
        }
        self.release_all();
    }

    /// Measures the tenant's demand and asks for its next lease.
    fn renew(&mut self, position: usize, quota: &TenantQuota, now: Instant) {
        let lease = &mut self.leases[position];
        let offered = quota.offered();
        let elapsed_s = now.duration_since(lease.measured_at).as_secs_f64();
        if elapsed_s > 0.0 {
            let rate = |now: u64, then: u64| now.saturating_sub(then) as f64 / elapsed_s;
            let smooth = |old: f64, new: f64| old + DEMAND_SMOOTHING * (new - old);
            lease.wants_per_sec = (
                smooth(lease.wants_per_sec.0, rate(offered.0, lease.offered_then.0)),
                smooth(lease.wants_per_sec.1, rate(offered.1, lease.offered_then.1)),
            );
        }
        let offered_before = lease.offered_then;
        lease.offered_then = offered;
        lease.measured_at = now;
        let config = quota.config();
        let mut demands = vec![Demand {
            resource: Resource::Messages,
            capacity_per_sec: u64::from(config.rate_per_sec),
            wants_per_sec: (lease.wants_per_sec.0 * DEMAND_HEADROOM).round() as u64,
        }];
        if let Some(bytes_per_sec) = config.bytes_per_sec {
            demands.push(Demand {
                resource: Resource::Bytes,
                capacity_per_sec: u64::from(bytes_per_sec),
                wants_per_sec: (lease.wants_per_sec.1 * DEMAND_HEADROOM).round() as u64,
            });
        }
        if let Some(max_pending) = config.max_pending {
            // Pending demand by Little's law: what is pending here, scaled by the messages
            // that wanted to be (passed the cap or were refused by it) over those that were.
            let (pending, refused_total) = self.quotas.pending_demand(quota);
            let refused = refused_total.saturating_sub(lease.cap_refused_then) as f64;
            lease.cap_refused_then = refused_total;
            let passed = offered.0.saturating_sub(offered_before.0) as f64;
            let wants = if passed > 0.0 {
                pending as f64 * (passed + refused) / passed
            } else if refused > 0.0 {
                // Nothing passed (a zero share): ask for all, and get a fair part.
                f64::from(max_pending)
            } else {
                pending as f64
            };
            lease.wants_pending += DEMAND_SMOOTHING * (wants - lease.wants_pending);
            demands.push(Demand {
                resource: Resource::Pending,
                capacity_per_sec: u64::from(max_pending),
                wants_per_sec: (lease.wants_pending * PENDING_HEADROOM).ceil() as u64,
            });
        }
        let operations_before = self.store.operations();
        let sent = Instant::now();
        let answer = self
            .store
            .lease(quota.tenant(), &self.process, self.lease_for, &demands);
        let stats = &self.quotas.stats;
        // Relaxed: monotonic counts for reports.
        stats.redis_operations.fetch_add(
            self.store.operations() - operations_before,
            Ordering::Relaxed,
        );
        let lease = &mut self.leases[position];
        match answer {
            Ok(granted) => {
                stats.granted.fetch_add(1, Ordering::Relaxed);
                // The grants come in the order of the demands.
                let grant_of = |resource: Resource| {
                    demands
                        .iter()
                        .position(|demand| demand.resource == resource)
                        .map(|position| granted.granted_per_sec.get(position).copied().unwrap_or(0))
                };
                let messages = grant_of(Resource::Messages).unwrap_or(0);
                quota.apply_share(messages, grant_of(Resource::Bytes));
                if let Some(pending) = grant_of(Resource::Pending) {
                    self.quotas.apply_pending_share(quota, pending);
                }
                self.watch.ensure(self.store.server_index(quota.tenant()));
                let lease = &mut self.leases[position];
                lease.leased_until = Some(sent + granted.expires_in);
                lease.failures = 0;
                lease.next_attempt = sent + self.refresh;
                let first = !lease.ever_leased;
                lease.ever_leased = true;
                let fell_back_at = lease.fell_back_at.take();
                if fell_back_at.is_some() {
                    stats.recoveries.fetch_add(1, Ordering::Relaxed);
                }
                if first || fell_back_at.is_some() {
                    tracing::info!(
                        tenant = quota.tenant().0,
                        share_per_sec = messages,
                        without_lease_ms =
                            fell_back_at.unwrap_or(self.started).elapsed().as_millis() as u64,
                        "fleet quota: leased"
                    );
                }
            }
            Err(error) => {
                stats.failed.fetch_add(1, Ordering::Relaxed);
                // A late answer from a live Redis does not void a lease that still holds:
                // the share stays until the lease runs out (the loop then falls back). A
                // refused or broken connection does: Redis is gone, so the fallback applies
                // at once.
                let lease_holds = matches!(error, LeaseError::Timeout { .. })
                    && lease
                        .leased_until
                        .is_some_and(|until| Instant::now() < until);
                if !lease_holds {
                    // A tenant already on its fallback (or not leased yet) stays as it is.
                    if matches!(quota.mode(), QuotaMode::Leased | QuotaMode::Exhausted) {
                        self.quotas.fall_back(quota);
                        stats.fallbacks.fetch_add(1, Ordering::Relaxed);
                        lease.fell_back_at = Some(now);
                    }
                    lease.leased_until = None;
                }
                let delay = backoff_delay(
                    &self.backoff,
                    lease.failures,
                    Duration::ZERO,
                    &mut self.random,
                )
                .max(Duration::from_millis(1));
                lease.failures = lease.failures.saturating_add(1);
                lease.next_attempt = Instant::now() + delay;
                self.quotas
                    .set_unavailable_retry_ns(delay.as_nanos().min(u128::from(u64::MAX)) as u64);
                let now_ns = self.started.elapsed().as_nanos() as u64;
                if let Some(told) = self.failures_told.record(now_ns, 1, ()) {
                    tracing::warn!(
                        tenant = quota.tenant().0,
                        mode = quota.mode().name(),
                        failures = told.count,
                        retry_in_ms = delay.as_millis() as u64,
                        %error,
                        "fleet quota: no lease, on fallback"
                    );
                }
            }
        }
    }

    /// Gives every share back at stop (best effort: Redis may be the reason for stopping).
    fn release_all(&mut self) {
        let quotas = Arc::clone(&self.quotas);
        for (position, quota) in quotas.iter().enumerate() {
            if self.leases[position].leased_until.is_none() {
                continue;
            }
            let operations_before = self.store.operations();
            if let Err(error) = self.store.release(quota.tenant(), &self.process) {
                tracing::warn!(tenant = quota.tenant().0, %error, "fleet quota: release failed; the lease expires instead");
            }
            // Relaxed: a monotonic count.
            quotas.stats.redis_operations.fetch_add(
                self.store.operations() - operations_before,
                Ordering::Relaxed,
            );
            quotas.fall_back(quota);
        }
        tracing::info!(process = %self.process, "fleet quotas: lease thread stopped, shares released");
    }
}

/// Each Redis server's liveness, seen over an idle TCP connection of the lease thread's own.
/// Redis writes nothing to a connection that sends nothing, so the socket turns readable only
/// when the server closes it (killed, crashed, restarted): the kernel says so at once, and
/// the tenants on that server are asked for at once instead of at their next renewal (the
/// renewal period bounds how late a lost Redis is noticed otherwise). It sends no command,
/// so it costs Redis no operation. A server slow to answer stays open here; the lease
/// calls' timeout covers that.
struct Watch {
    poll: mio::Poll,
    waker: Arc<mio::Waker>,
    events: mio::Events,
    /// In the configured order.
    servers: Vec<WatchedServer>,
    connect_timeout: Duration,
}

struct WatchedServer {
    /// Host and port; `None`: not plain TCP, never watched.
    address: Option<(String, u16)>,
    /// The idle connection while one is open.
    connection: Option<mio::net::TcpStream>,
}

/// The waker's token: past every server index.
const WAKE: mio::Token = mio::Token(usize::MAX);

impl Watch {
    fn new(store: &LeaseStore) -> std::io::Result<Self> {
        let poll = mio::Poll::new()?;
        let waker = Arc::new(mio::Waker::new(poll.registry(), WAKE)?);
        Ok(Self {
            poll,
            waker,
            events: mio::Events::with_capacity(store.servers() + 1),
            servers: (0..store.servers())
                .map(|index| WatchedServer {
                    address: store.server_host_port(index),
                    connection: None,
                })
                .collect(),
            connect_timeout: Duration::from_millis(100),
        })
    }

    /// Opens server `index`'s idle connection if it has none (after a lease from it, so the
    /// server is up). A failure leaves it unwatched until the next lease.
    fn ensure(&mut self, index: usize) {
        let WatchedServer {
            address: Some((host, port)),
            connection: None,
        } = &self.servers[index]
        else {
            return;
        };
        let connected = std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), *port))
            .ok()
            .and_then(|mut addresses| addresses.next())
            .and_then(|address| {
                std::net::TcpStream::connect_timeout(&address, self.connect_timeout).ok()
            })
            .and_then(|stream| stream.set_nonblocking(true).ok().map(|()| stream));
        if let Some(stream) = connected {
            let mut stream = mio::net::TcpStream::from_std(stream);
            if self
                .poll
                .registry()
                .register(&mut stream, mio::Token(index), mio::Interest::READABLE)
                .is_ok()
            {
                self.servers[index].connection = Some(stream);
            }
        }
    }

    /// Waits up to `wait` (or until woken); returns the servers whose connection closed.
    fn wait(&mut self, wait: Duration) -> Vec<usize> {
        if self.poll.poll(&mut self.events, Some(wait)).is_err() {
            return Vec::new();
        }
        let mut lost = Vec::new();
        for event in self.events.iter() {
            let index = event.token().0;
            let Some(WatchedServer {
                connection: Some(stream),
                ..
            }) = self.servers.get(index)
            else {
                continue;
            };
            // Readable with nothing to read is the end of the stream; data (Redis sends
            // none unasked) or an error is as good as lost too.
            let mut byte = [0u8; 1];
            match stream.peek(&mut byte) {
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => continue,
                _ => lost.push(index),
            }
        }
        for &index in &lost {
            if let Some(mut stream) = self.servers[index].connection.take() {
                let _ = self.poll.registry().deregister(&mut stream);
            }
        }
        lost
    }
}

/// `HOSTNAME-PID-START`: unique per run on a host, readable in Redis.
fn default_process_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().replace(':', "_"))
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "host".to_string());
    let start_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_millis());
    format!("{host}-{}-{start_ms}", std::process::id())
}
