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
//! lists the hash's fields and the arguments) over one blocking connection per Redis server,
//! from a thread that is not a shard's.

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

/// The client side of the lease protocol: runs the lease script on the Redis server that
/// keeps each tenant's hash, over one lazily opened blocking connection per server.
///
/// A tenant's hash lives on `urls[tenant % urls.len()]`, so every process of a fleet must
/// list the same URLs in the same order; and each process must lease under a name of its own
/// (two processes under one name share one share). Every call is bounded by the timeout as a
/// whole (connecting included). After an I/O error or a timeout the connection is dropped and
/// the next call to that server connects again; the store itself never sleeps or retries, so
/// backoff is the caller's.
///
/// Blocking: call it from a thread of its own, never from a shard.
pub struct LeaseStore {
    /// One per configured URL, in the configured order.
    servers: Vec<LeaseServer>,
    /// The limit of one `lease` or `release` call, connecting included.
    timeout: Duration,
    /// The lease script: its text for `SCRIPT LOAD` and its SHA1 for `EVALSHA`.
    script: redis::Script,
    /// Commands sent to Redis by `lease` and `release` (see [`LeaseStore::operations`]).
    operations: u64,
}

/// One Redis server of the store.
struct LeaseServer {
    /// As configured, for errors.
    url: String,
    /// The parsed address and settings.
    client: redis::Client,
    /// Open until an I/O error or a timeout drops it.
    connection: Option<redis::Connection>,
}

impl core::fmt::Debug for LeaseStore {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let urls: Vec<&str> = self
            .servers
            .iter()
            .map(|server| server.url.as_str())
            .collect();
        formatter
            .debug_struct("LeaseStore")
            .field("urls", &urls)
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

impl LeaseStore {
    /// Parses the URLs (`redis://host:port[/db]`, with user and password when the server
    /// wants them); connects to none of them. A tenant's hash lives on
    /// `urls[tenant.0 as usize % urls.len()]`: every process of a fleet must list the same
    /// URLs in the same order. `timeout` bounds each later call, connecting included; a zero
    /// timeout makes every call fail with [`LeaseError::Timeout`].
    pub fn new(urls: &[String], timeout: Duration) -> Result<Self, LeaseError> {
        if urls.is_empty() {
            return Err(LeaseError::Url {
                url: String::new(),
                detail: "no Redis URL given".to_owned(),
            });
        }
        let servers = urls
            .iter()
            .map(|url| {
                let invalid = |error: RedisError| LeaseError::Url {
                    url: url.clone(),
                    detail: error.to_string(),
                };
                let info = redis::IntoConnectionInfo::into_connection_info(url.as_str())
                    .map_err(invalid)?;
                // No `CLIENT SETINFO` after connecting: one round trip less on every
                // reconnect, and nothing sent that `operations` does not count but a
                // configured AUTH or SELECT.
                let settings = info.redis_settings().clone().set_skip_set_lib_name();
                let client =
                    redis::Client::open(info.set_redis_settings(settings)).map_err(invalid)?;
                Ok(LeaseServer {
                    url: url.clone(),
                    client,
                    connection: None,
                })
            })
            .collect::<Result<Vec<_>, LeaseError>>()?;
        Ok(Self {
            servers,
            timeout,
            script: redis::Script::new(LEASE_SCRIPT),
            operations: 0,
        })
    }

    /// Leases `tenant`'s rates for `process` for `lease_for` (at least 1 ms; whole
    /// milliseconds): one `EVALSHA` of the lease script, or `EVALSHA`, `SCRIPT LOAD` and
    /// `EVALSHA` again when Redis answers `NOSCRIPT` (after a restart or `SCRIPT FLUSH`).
    /// The grants come back in the order of `demands`; capacities and demands above 2^53
    /// are taken as 2^53.
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
                url: self.server_of(tenant).url.clone(),
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
    /// admitted message"). Connecting sends nothing unless the URL names a password or a
    /// database (`AUTH`, `SELECT`), which this does not count.
    pub fn operations(&self) -> u64 {
        self.operations
    }

    /// Which configured server keeps `tenant`'s hash (its index in the URLs).
    pub fn server_index(&self, tenant: TenantId) -> usize {
        tenant.0 as usize % self.servers.len()
    }

    /// The number of configured servers.
    pub fn servers(&self) -> usize {
        self.servers.len()
    }

    /// Server `index`'s host and port, for a plain TCP URL (`None` for TLS or a Unix
    /// socket): the lease thread watches it over an idle connection of its own.
    pub fn server_host_port(&self, index: usize) -> Option<(String, u16)> {
        match self.servers.get(index)?.client.get_connection_info().addr() {
            redis::ConnectionAddr::Tcp(host, port) => Some((host.clone(), *port)),
            _ => None,
        }
    }

    fn server_of(&self, tenant: TenantId) -> &LeaseServer {
        &self.servers[self.server_index(tenant)]
    }

    /// One script call on the tenant's server within the timeout: connects when no
    /// connection is open, loads the script once on `NOSCRIPT`, and drops the connection on
    /// any error but the script's own.
    fn run_script<T: redis::FromRedisValue>(
        &mut self,
        tenant: TenantId,
        process: &str,
        call: ScriptCall<'_>,
    ) -> Result<T, LeaseError> {
        let deadline = Instant::now() + self.timeout;
        let mut evalsha = redis::cmd("EVALSHA");
        evalsha
            .arg(self.script.get_hash())
            .arg(1)
            .arg(tenant_key(tenant))
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
        let index = self.server_index(tenant);
        let server = &mut self.servers[index];
        server
            .run(&evalsha, &self.script, deadline, &mut self.operations)
            .map_err(|failure| server.fail(failure, self.timeout))
    }
}

// The lease thread owns the store: it must be able to move there.
const _: fn() = || {
    fn is_send<T: Send>() {}
    is_send::<LeaseStore>();
};

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
fn set_deadline(connection: &mut redis::Connection, deadline: Instant) -> Result<(), CallFailure> {
    let left = time_left(deadline)?;
    connection.set_read_timeout(Some(left))?;
    connection.set_write_timeout(Some(left))?;
    Ok(())
}

impl LeaseServer {
    /// `evalsha` on this server before `deadline`; on `NOSCRIPT`, `SCRIPT LOAD` and
    /// `evalsha` again. Counts each command sent in `operations`.
    fn run<T: redis::FromRedisValue>(
        &mut self,
        evalsha: &redis::Cmd,
        script: &redis::Script,
        deadline: Instant,
        operations: &mut u64,
    ) -> Result<T, CallFailure> {
        let connection = self.connection(deadline)?;
        set_deadline(connection, deadline)?;
        *operations += 1;
        match evalsha.query(connection) {
            Err(error) if error.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                set_deadline(connection, deadline)?;
                *operations += 1;
                script.load(connection)?;
                set_deadline(connection, deadline)?;
                *operations += 1;
                Ok(evalsha.query(connection)?)
            }
            answer => Ok(answer?),
        }
    }

    /// The open connection, or a new one made within what is left of the call's time.
    fn connection(&mut self, deadline: Instant) -> Result<&mut redis::Connection, CallFailure> {
        let connection = match self.connection.take() {
            Some(open) => open,
            None => self
                .client
                .get_connection_with_timeout(time_left(deadline)?)?,
        };
        Ok(self.connection.insert(connection))
    }

    /// Tells a failure as a [`LeaseError`], dropping the connection unless the failure was
    /// the script's own answer (the connection is then in step and fine).
    fn fail(&mut self, failure: CallFailure, timeout: Duration) -> LeaseError {
        let url = self.url.clone();
        let error = match failure {
            CallFailure::Deadline => {
                self.connection = None;
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
            _ => {
                self.connection = None;
                if error.is_timeout() {
                    LeaseError::Timeout { url, timeout }
                } else {
                    LeaseError::Unavailable {
                        url,
                        detail: error.to_string(),
                    }
                }
            }
        }
    }
}
