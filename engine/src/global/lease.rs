//! Leases of a tenant's fleet-wide rates, kept in Redis (issue 16; the design follows
//! Google's Doorman: a process holds a *share of the rate* for a lease period, not a count of
//! tokens).
//!
//! One Lua script, run with `EVALSHA`, is the whole protocol. Each tenant has one hash,
//! `spillway:{tenant:ID}:leases` (hash-tagged, so a Redis Cluster keeps it in one slot), with
//! per process and per resource what it wants (its measured demand), what it has (its
//! granted share) and when its lease expires. A call, atomically in Redis:
//! 1. drops the processes whose lease has expired (a dead process's share returns to the
//!    pool within one lease period);
//! 2. records the caller's demand;
//! 3. computes the max-min fair allocation of the capacity over every live process's demand
//!    (each gets its demand or an equal share of what is left, whichever is less; capacity
//!    left when every demand is met is split equally as headroom);
//! 4. grants the caller `min(its allocation, capacity - what the others have)`, so the
//!    shares granted never add up to more than the capacity: a process whose allocation grew
//!    gets the room only once the others have given it up at their own next lease.
//!
//! [`LeaseStore`] is the client: it runs the script (`lease.lua` beside this file, whose head
//! lists the hash's fields and the arguments) over blocking connections, to standalone
//! servers (each tenant on one of them) or to one Redis Cluster (each tenant on the node that
//! owns its slot), from a thread that is not a shard's.

use core::time::Duration;
use std::time::Instant;

use redis::{ErrorKind, RedisError, ServerErrorKind};

use crate::message::TenantId;

/// What a lease shares out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Resource {
    /// Messages per second.
    Messages,
    /// Payload bytes per second.
    Bytes,
    /// Messages pending at once (a cap, not a rate: the "per second" of [`Demand`] and
    /// [`Lease`] does not apply to it).
    Pending,
}

impl Resource {
    /// The name used in the Redis hash's fields and in reports.
    pub const fn name(self) -> &'static str {
        match self {
            Resource::Messages => "messages",
            Resource::Bytes => "bytes",
            Resource::Pending => "pending",
        }
    }
}

/// One resource of a lease request: the fleet's capacity and this process's demand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Demand {
    /// Which resource.
    pub resource: Resource,
    /// The tenant's fleet-wide limit, per second.
    pub capacity_per_sec: u64,
    /// This process's measured demand, per second.
    pub wants_per_sec: u64,
}

/// A granted lease: each resource's share, in the order the demands were given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    /// The share of each resource this process may use, per second, in request order.
    pub granted_per_sec: Vec<u64>,
    /// How long the grant holds from the moment the request was sent.
    pub expires_in: Duration,
}

/// Why a lease could not be had.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// A configured URL is not a Redis URL.
    #[error("invalid Redis URL {url:?}: {detail}")]
    Url {
        /// The URL as configured.
        url: String,
        /// The client's complaint.
        detail: String,
    },
    /// Redis did not answer within the timeout.
    #[error("Redis at {url} did not answer within {timeout:?}")]
    Timeout {
        /// The server asked.
        url: String,
        /// The configured timeout.
        timeout: Duration,
    },
    /// Connecting to, writing to or reading from Redis failed.
    #[error("Redis at {url} is unavailable: {detail}")]
    Unavailable {
        /// The server asked.
        url: String,
        /// The client's error.
        detail: String,
    },
    /// Redis answered with an error or an answer the script cannot give.
    #[error("Redis at {url} refused the lease script: {detail}")]
    Script {
        /// The server asked.
        url: String,
        /// Redis's error text.
        detail: String,
    },
}

/// The tenant's hash key: the `{...}` hash tag keeps everything of one tenant in one
/// Redis Cluster slot.
pub fn tenant_key(tenant: TenantId) -> String {
    format!("spillway:{{tenant:{}}}:leases", tenant.0)
}

/// The lease script (Redis 7: `TIME` and writes in one script, replicated as effects).
const LEASE_SCRIPT: &str = include_str!("lease.lua");

/// The largest count the script takes: Lua's numbers are doubles, exact up to 2^53. Larger
/// capacities and demands are clamped to it (2^53 per second is no limit at all).
const SCRIPT_COUNT_MAX: u64 = 1 << 53;

/// How many times the cluster client sends a command again after a failed attempt: once, so
/// that it follows one `MOVED` or `ASK` (a slot that moved, or is moving, to another node).
/// Any failure past that is the caller's (the lease thread backs off and asks again).
const CLUSTER_RETRIES: u32 = 1;

/// The longest pause, in ms, the cluster client makes before it sends a command again after
/// `TRYAGAIN` or `CLUSTERDOWN` (its default waits over a second): the lease thread must not
/// sleep in the client, it has every other tenant to renew.
const CLUSTER_RETRY_WAIT_MAX_MS: u64 = 1;

/// How long a cluster connection is kept through timeouts before it is rebuilt at the next
/// one (see `keeps_after_timeout`): a failover takes the cluster itself longer than this to
/// decide (`cluster-node-timeout`, 15 s by default).
const CLUSTER_REBUILD_AFTER: Duration = Duration::from_secs(5);

/// The client side of the lease protocol: runs the lease script where each tenant's hash
/// lives, over lazily opened blocking connections.
///
/// Two set-ups ([`LeaseStore::new`], [`LeaseStore::new_cluster`]):
/// - **Standalone servers.** A tenant's hash lives on `urls[tenant % urls.len()]`, so every
///   process of a fleet must list the same URLs in the same order. One connection per
///   server. Every call is bounded by the timeout as a whole (connecting included).
/// - **One Redis Cluster.** The URLs are seed nodes; a tenant's hash lives on the node that
///   owns its key's slot, as the cluster says (`CLUSTER SLOTS`), and the client follows
///   `MOVED` and `ASK`. One connection per node. Each step (a connection, a round trip) is
///   bounded by what is left of the timeout, but the client takes steps of its own:
///   connecting reaches a seed, reads the slot map and connects to every node, and a
///   command that failed is sent once more (to follow a redirection, or after a timeout).
///   So a call takes up to about twice the timeout when a node is slow to answer, and more
///   when nodes are slow to accept connections.
///
/// Each process must lease under a name of its own (two processes under one name share one
/// share). After an I/O error the connection is dropped and the next call connects again;
/// after a timeout too, but a cluster's connection is kept through timeouts for 5 s (one
/// slow node must not make the others' tenants reconnect to every node). The store itself
/// never sleeps or retries, so backoff is the caller's.
///
/// Blocking: call it from a thread of its own, never from a shard.
pub struct LeaseStore {
    /// Where the tenants' hashes live.
    backend: Backend,
    /// The limit of one `lease` or `release` call (of each round trip on a cluster).
    timeout: Duration,
    /// The lease script's SHA1 for `EVALSHA` (its text is [`LEASE_SCRIPT`]).
    script: redis::Script,
    /// Commands sent to Redis by `lease` and `release` (see [`LeaseStore::operations`]).
    operations: u64,
}

/// The Redis set-up the store talks to.
enum Backend {
    /// Standalone servers, in the configured order.
    Servers(Vec<Endpoint<redis::Client>>),
    /// One Redis Cluster, reached through its seed nodes (boxed: the cluster client and its
    /// connection are large, and one store holds one).
    Cluster(Box<Endpoint<redis::cluster::ClusterClient>>),
}

/// One place to run the script: a standalone server, or a whole cluster.
struct Endpoint<C: Connector> {
    /// As configured (a cluster's seeds comma-separated), for errors.
    url: String,
    /// The parsed addresses and settings.
    client: C,
    /// Open until a failure drops it (see [`Connector::keeps_after_timeout`]).
    connection: Option<C::Connection>,
    /// When `connection` was opened.
    opened_at: Instant,
}

impl core::fmt::Debug for LeaseStore {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let urls: Vec<&str> = match &self.backend {
            Backend::Servers(servers) => servers.iter().map(|one| one.url.as_str()).collect(),
            Backend::Cluster(cluster) => vec![cluster.url.as_str()],
        };
        formatter
            .debug_struct("LeaseStore")
            .field("urls", &urls)
            .field("cluster", &matches!(self.backend, Backend::Cluster(_)))
            .field("timeout", &self.timeout)
            .field("operations", &self.operations)
            .finish()
    }
}

/// What the script was asked to do, after the process name.
enum ScriptCall<'a> {
    /// A lease of `lease_ms` for these demands.
    Lease {
        lease_ms: u64,
        demands: &'a [Demand],
    },
    /// Drop the process's fields.
    Release,
}

/// Parses one configured URL (`redis://host:port[/db]`), naming it when it is not one.
fn connection_info(url: &str) -> Result<redis::ConnectionInfo, LeaseError> {
    redis::IntoConnectionInfo::into_connection_info(url).map_err(invalid_url(url))
}

/// The client's complaint about `url` (or a cluster's seeds), as a [`LeaseError::Url`].
fn invalid_url(url: &str) -> impl FnOnce(RedisError) -> LeaseError + '_ {
    move |error| LeaseError::Url {
        url: url.to_owned(),
        detail: error.to_string(),
    }
}

/// Refuses an empty URL list.
fn require_urls(urls: &[String]) -> Result<(), LeaseError> {
    if urls.is_empty() {
        return Err(LeaseError::Url {
            url: String::new(),
            detail: "no Redis URL given".to_owned(),
        });
    }
    Ok(())
}

impl LeaseStore {
    /// Parses the URLs of standalone servers (`redis://host:port[/db]`, with user and
    /// password when the server wants them); connects to none of them. A tenant's hash
    /// lives on `urls[tenant.0 as usize % urls.len()]`: every process of a fleet must list
    /// the same URLs in the same order. `timeout` bounds each later call, connecting
    /// included; a zero timeout makes every call fail with [`LeaseError::Timeout`].
    pub fn new(urls: &[String], timeout: Duration) -> Result<Self, LeaseError> {
        require_urls(urls)?;
        let servers = urls
            .iter()
            .map(|url| {
                let info = connection_info(url)?;
                // No `CLIENT SETINFO` after connecting: one round trip less on every
                // reconnect, and nothing sent that `operations` does not count but a
                // configured AUTH or SELECT.
                let settings = info.redis_settings().clone().set_skip_set_lib_name();
                let client = redis::Client::open(info.set_redis_settings(settings))
                    .map_err(invalid_url(url))?;
                Ok(Endpoint::new(url.clone(), client))
            })
            .collect::<Result<Vec<_>, LeaseError>>()?;
        Ok(Self::with_backend(Backend::Servers(servers), timeout))
    }

    /// Parses the URLs of seed nodes of one Redis Cluster (any of its nodes; more than one
    /// so that one down does not keep the store from the cluster); connects to none of
    /// them. A tenant's hash lives on the node that owns the slot of its key's hash tag
    /// (`{tenant:ID}`). `timeout` bounds each later round trip (see [`LeaseStore`]); a zero
    /// timeout makes every call fail with [`LeaseError::Timeout`].
    pub fn new_cluster(seeds: &[String], timeout: Duration) -> Result<Self, LeaseError> {
        require_urls(seeds)?;
        let infos = seeds
            .iter()
            .map(|url| connection_info(url))
            .collect::<Result<Vec<_>, LeaseError>>()?;
        let url = seeds.join(",");
        // The client takes no zero timeout; with a zero one no call gets as far as the
        // client (the deadline has passed before the first step).
        let step_timeout = timeout.max(Duration::from_millis(1));
        let client = redis::cluster::ClusterClient::builder(infos)
            .connection_timeout(step_timeout)
            .response_timeout(step_timeout)
            .retries(CLUSTER_RETRIES)
            .min_retry_wait(0)
            .max_retry_wait(CLUSTER_RETRY_WAIT_MAX_MS)
            .build()
            .map_err(invalid_url(&url))?;
        Ok(Self::with_backend(
            Backend::Cluster(Box::new(Endpoint::new(url, client))),
            timeout,
        ))
    }

    fn with_backend(backend: Backend, timeout: Duration) -> Self {
        Self {
            backend,
            timeout,
            script: redis::Script::new(LEASE_SCRIPT),
            operations: 0,
        }
    }

    /// Leases `tenant`'s rates for `process` for `lease_for` (at least 1 ms; whole
    /// milliseconds): one `EVALSHA` of the lease script, or `EVALSHA`, `SCRIPT LOAD` and
    /// `EVALSHA` again when Redis answers `NOSCRIPT` (after a restart or `SCRIPT FLUSH`; on a
    /// cluster the script is loaded on the node that answered, the one owning the tenant's
    /// slot). The grants come back in the order of `demands`; capacities and demands above
    /// 2^53 are taken as 2^53.
    ///
    /// [`Lease::expires_in`] is `lease_for`: the caller counts it from before it sent the
    /// request, which is earlier than Redis starts its own count, so the caller gives a share
    /// up before Redis hands it to another process.
    pub fn lease(
        &mut self,
        tenant: TenantId,
        process: &str,
        lease_for: Duration,
        demands: &[Demand],
    ) -> Result<Lease, LeaseError> {
        let lease_ms = u64::try_from(lease_for.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let grants: Vec<u64> =
            self.run_script(tenant, process, ScriptCall::Lease { lease_ms, demands })?;
        if grants.len() != demands.len() {
            return Err(LeaseError::Script {
                url: self.url_of(tenant).to_owned(),
                detail: format!("{} grants for {} demands", grants.len(), demands.len()),
            });
        }
        Ok(Lease {
            granted_per_sec: grants,
            expires_in: lease_for,
        })
    }

    /// Gives every share of `process` in `tenant` back at once (a graceful stop), so the other
    /// processes get it at their next lease instead of after this one's expiry: one script
    /// call (three on `NOSCRIPT`, as for [`LeaseStore::lease`]).
    pub fn release(&mut self, tenant: TenantId, process: &str) -> Result<(), LeaseError> {
        let _: redis::Value = self.run_script(tenant, process, ScriptCall::Release)?;
        Ok(())
    }

    /// Commands sent to Redis so far by [`LeaseStore::lease`] and [`LeaseStore::release`]:
    /// each `EVALSHA` and `SCRIPT LOAD`, answered or not (the figure for "Redis operations per
    /// admitted message"). Connecting to a standalone server sends nothing unless the URL
    /// names a password or a database (`AUTH`, `SELECT`); connecting to a cluster sends
    /// `PING`, `CLIENT SETINFO` and `CLUSTER SLOTS`; on a cluster the client also sends a
    /// command again to follow a `MOVED` or `ASK` (after `CLUSTER SLOTS` for a `MOVED`). None
    /// of those are counted: they are not made per lease but per connection or per slot
    /// migration.
    pub fn operations(&self) -> u64 {
        self.operations
    }

    /// Which configured server keeps `tenant`'s hash (its index in the URLs); 0 on a cluster,
    /// which is one store.
    pub fn server_index(&self, tenant: TenantId) -> usize {
        match &self.backend {
            Backend::Servers(servers) => tenant.0 as usize % servers.len(),
            Backend::Cluster(_) => 0,
        }
    }

    /// The number of configured servers; 1 for a cluster, which is one store.
    pub fn servers(&self) -> usize {
        match &self.backend {
            Backend::Servers(servers) => servers.len(),
            Backend::Cluster(_) => 1,
        }
    }

    /// Server `index`'s host and port, for a plain TCP URL (`None` for TLS, a Unix socket or
    /// a cluster): the lease thread watches it over an idle connection of its own.
    pub fn server_host_port(&self, index: usize) -> Option<(String, u16)> {
        let Backend::Servers(servers) = &self.backend else {
            return None;
        };
        match servers.get(index)?.client.get_connection_info().addr() {
            redis::ConnectionAddr::Tcp(host, port) => Some((host.clone(), *port)),
            _ => None,
        }
    }

    /// The URL errors about `tenant` name.
    fn url_of(&self, tenant: TenantId) -> &str {
        match &self.backend {
            Backend::Servers(servers) => &servers[self.server_index(tenant)].url,
            Backend::Cluster(cluster) => &cluster.url,
        }
    }

    /// One script call where the tenant's hash lives, within the timeout: connects when no
    /// connection is open, loads the script once on `NOSCRIPT`, and drops the connection on
    /// any error but the script's own.
    fn run_script<T: redis::FromRedisValue>(
        &mut self,
        tenant: TenantId,
        process: &str,
        call: ScriptCall<'_>,
    ) -> Result<T, LeaseError> {
        let deadline = Instant::now() + self.timeout;
        let key = tenant_key(tenant);
        let mut evalsha = redis::cmd("EVALSHA");
        evalsha
            .arg(self.script.get_hash())
            .arg(1)
            .arg(&key)
            .arg(process);
        match call {
            ScriptCall::Lease { lease_ms, demands } => {
                evalsha.arg(lease_ms);
                for demand in demands {
                    evalsha
                        .arg(demand.resource.name())
                        .arg(demand.capacity_per_sec.min(SCRIPT_COUNT_MAX))
                        .arg(demand.wants_per_sec.min(SCRIPT_COUNT_MAX));
                }
            }
            ScriptCall::Release => {
                evalsha.arg("release");
            }
        }
        let call = ScriptRun {
            evalsha: &evalsha,
            key: &key,
            deadline,
            timeout: self.timeout,
        };
        let index = self.server_index(tenant);
        match &mut self.backend {
            Backend::Servers(servers) => servers[index].call(&call, &mut self.operations),
            Backend::Cluster(cluster) => cluster.call(&call, &mut self.operations),
        }
    }
}

// The lease thread owns the store: it must be able to move there.
const _: fn() = || {
    fn is_send<T: Send>() {}
    is_send::<LeaseStore>();
};

/// One script call's command and bounds.
struct ScriptRun<'a> {
    /// The `EVALSHA` of the lease script with its key and arguments.
    evalsha: &'a redis::Cmd,
    /// The tenant's hash key, for routing `SCRIPT LOAD` on a cluster.
    key: &'a str,
    /// When the call must be over.
    deadline: Instant,
    /// The configured timeout, for errors.
    timeout: Duration,
}

/// The `SCRIPT LOAD` of the lease script.
fn script_load() -> redis::Cmd {
    let mut load = redis::cmd("SCRIPT");
    load.arg("LOAD").arg(LEASE_SCRIPT);
    load
}

/// How a client opens its connection: a standalone server's or a cluster's.
trait Connector {
    /// The open connection.
    type Connection: ScriptConnection;

    /// Connects, waiting at most `left`.
    fn connect(&self, left: Duration) -> redis::RedisResult<Self::Connection>;

    /// Whether a connection opened `open_for` ago stays after a timeout (its own or the
    /// call's deadline); any other failure but the script's own drops it.
    fn keeps_after_timeout(&self, open_for: Duration) -> bool;
}

/// What a script call needs of an open connection beyond sending commands.
trait ScriptConnection: redis::ConnectionLike {
    /// Bounds each following round trip (read and write) by `left`.
    fn bound_round_trips(&mut self, left: Duration) -> redis::RedisResult<()>;

    /// `SCRIPT LOAD` of the lease script on the node that keeps `key`.
    fn load_script(&mut self, key: &str) -> redis::RedisResult<()>;
}

impl Connector for redis::Client {
    type Connection = redis::Connection;

    fn connect(&self, left: Duration) -> redis::RedisResult<redis::Connection> {
        self.get_connection_with_timeout(left)
    }

    /// Never: reconnecting costs one connection to the one server.
    fn keeps_after_timeout(&self, _open_for: Duration) -> bool {
        false
    }
}

impl ScriptConnection for redis::Connection {
    fn bound_round_trips(&mut self, left: Duration) -> redis::RedisResult<()> {
        self.set_read_timeout(Some(left))?;
        self.set_write_timeout(Some(left))
    }

    fn load_script(&mut self, _key: &str) -> redis::RedisResult<()> {
        script_load().exec(self)
    }
}

impl Connector for redis::cluster::ClusterClient {
    type Connection = redis::cluster::ClusterConnection;

    /// Connects to the first seed that answers, reads the slot map (`CLUSTER SLOTS`) and
    /// connects to every node in it, each step waiting at most `left`.
    fn connect(&self, left: Duration) -> redis::RedisResult<redis::cluster::ClusterConnection> {
        self.get_connection_with_config(
            redis::cluster::ClusterConfig::new()
                .set_connection_timeout(left)
                .set_response_timeout(left),
        )
    }

    /// Kept for [`CLUSTER_REBUILD_AFTER`]: reconnecting connects to every node, the slow one
    /// included, so one slow node would cost every other node's tenants their calls. The
    /// client keeps the slow node's connection in step (it skips the late answers) and
    /// reconnects a node whose connection broke; but it reads the slot map again only on
    /// `MOVED`, which a node that does not answer never sends. Rebuilt after that long, the
    /// connection learns a failover from a fresh `CLUSTER SLOTS`.
    fn keeps_after_timeout(&self, open_for: Duration) -> bool {
        open_for < CLUSTER_REBUILD_AFTER
    }
}

impl ScriptConnection for redis::cluster::ClusterConnection {
    /// On every node's connection, and on those it opens later (after a `MOVED`).
    fn bound_round_trips(&mut self, left: Duration) -> redis::RedisResult<()> {
        self.set_read_timeout(Some(left))?;
        self.set_write_timeout(Some(left))
    }

    /// The client would send `SCRIPT LOAD` to every node, replicas included, and fail when
    /// one does not answer: routed here to the primary of `key`'s slot alone, the node whose
    /// `EVALSHA` said `NOSCRIPT`.
    fn load_script(&mut self, key: &str) -> redis::RedisResult<()> {
        use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
        let primary = Route::with_key(key, SlotAddr::Master);
        self.route_command(
            &script_load(),
            RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(primary)),
        )
        .map(drop)
    }
}

/// Why one script call failed, before it is told as a [`LeaseError`].
enum CallFailure {
    /// The deadline passed before the next step could start.
    Deadline,
    /// The client's error.
    Redis(RedisError),
}

impl From<RedisError> for CallFailure {
    fn from(error: RedisError) -> Self {
        CallFailure::Redis(error)
    }
}

/// The time left before `deadline`, or `Deadline` when none is.
fn time_left(deadline: Instant) -> Result<Duration, CallFailure> {
    let left = deadline.saturating_duration_since(Instant::now());
    // A zero read timeout means "none" to the socket: refuse it instead.
    if left.is_zero() {
        Err(CallFailure::Deadline)
    } else {
        Ok(left)
    }
}

/// Bounds the next round trip by what is left of the call's time.
fn set_deadline(
    connection: &mut impl ScriptConnection,
    deadline: Instant,
) -> Result<(), CallFailure> {
    connection.bound_round_trips(time_left(deadline)?)?;
    Ok(())
}

impl<C: Connector> Endpoint<C> {
    fn new(url: String, client: C) -> Self {
        Self {
            url,
            client,
            connection: None,
            opened_at: Instant::now(),
        }
    }

    /// `run`, its failure told as a [`LeaseError`].
    fn call<T: redis::FromRedisValue>(
        &mut self,
        call: &ScriptRun<'_>,
        operations: &mut u64,
    ) -> Result<T, LeaseError> {
        self.run(call, operations)
            .map_err(|failure| self.fail(failure, call.timeout))
    }

    /// The call's `EVALSHA` before its deadline; on `NOSCRIPT`, `SCRIPT LOAD` and `EVALSHA`
    /// again. Counts each command sent in `operations`.
    fn run<T: redis::FromRedisValue>(
        &mut self,
        call: &ScriptRun<'_>,
        operations: &mut u64,
    ) -> Result<T, CallFailure> {
        let connection = self.connection(call.deadline)?;
        set_deadline(connection, call.deadline)?;
        *operations += 1;
        match call.evalsha.query(connection) {
            Err(error) if error.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                set_deadline(connection, call.deadline)?;
                *operations += 1;
                connection.load_script(call.key)?;
                set_deadline(connection, call.deadline)?;
                *operations += 1;
                Ok(call.evalsha.query(connection)?)
            }
            answer => Ok(answer?),
        }
    }

    /// The open connection, or a new one made within what is left of the call's time.
    fn connection(&mut self, deadline: Instant) -> Result<&mut C::Connection, CallFailure> {
        let connection = match self.connection.take() {
            Some(open) => open,
            None => {
                let opened = self.client.connect(time_left(deadline)?)?;
                self.opened_at = Instant::now();
                opened
            }
        };
        Ok(self.connection.insert(connection))
    }

    /// Tells a failure as a [`LeaseError`], dropping the connection unless the failure was
    /// the script's own answer (the connection is then in step and fine) or a timeout the
    /// connector keeps it after.
    fn fail(&mut self, failure: CallFailure, timeout: Duration) -> LeaseError {
        let url = self.url.clone();
        let error = match failure {
            CallFailure::Deadline => {
                self.drop_after_timeout();
                return LeaseError::Timeout { url, timeout };
            }
            CallFailure::Redis(error) => error,
        };
        match error.kind() {
            ErrorKind::Server(ServerErrorKind::ResponseError)
            | ErrorKind::Extension
            | ErrorKind::UnexpectedReturnType => LeaseError::Script {
                url,
                detail: error.to_string(),
            },
            _ if error.is_timeout() => {
                self.drop_after_timeout();
                LeaseError::Timeout { url, timeout }
            }
            _ => {
                self.connection = None;
                LeaseError::Unavailable {
                    url,
                    detail: error.to_string(),
                }
            }
        }
    }

    fn drop_after_timeout(&mut self) {
        if !self.client.keeps_after_timeout(self.opened_at.elapsed()) {
            self.connection = None;
        }
    }
}
