//! The lease store (`spillway::global::lease::LeaseStore`) against a real Redis: the
//! max-min fair shares of the lease script, the grants that never add up to more than the
//! capacity, expiry, release, `NOSCRIPT`, a paused and a killed server.
//!
//! The same against a Redis Cluster of three primaries: tenants on each node, the shares,
//! `NOSCRIPT` on every node, a slot moved under the store (`MOVED`), a paused node, and two
//! engines with `cluster = true` sharing a tenant.
//!
//! The tests that need Redis are ignored in a plain `cargo test`; `scripts/redis-ci.sh`
//! starts a private redis-server and a private cluster, sets `SPILLWAY_TEST_REDIS_URL`,
//! `SPILLWAY_TEST_REDIS_DIR` (the instance's directory, for the restart) and
//! `SPILLWAY_TEST_REDIS_CLUSTER_URLS` (the cluster's nodes, comma-separated) and runs them one
//! at a time. Each test uses tenants of its own, so they can share one server or cluster; the
//! restart test empties the server.

use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::process::Command;
use std::thread::sleep;
use std::time::{Duration, Instant};

use spillway::config::{Config, GlobalTenantConfig};
use spillway::control::{HealthKind, QuotaMode};
use spillway::engine::Engine;
use spillway::global::lease::{tenant_key, Demand, LeaseError, LeaseStore, Resource};
use spillway::message::{Message, TenantId};

const NEEDS_REDIS: &str = "needs Redis: scripts/redis-ci.sh";
const NEEDS_CLUSTER: &str = "needs a Redis Cluster: scripts/redis-ci.sh";

/// Generous for loopback: a test that means a shorter one says so.
const TIMEOUT: Duration = Duration::from_secs(2);

/// Long enough that no lease of a test expires unless the test waits for it.
const LEASE_FOR: Duration = Duration::from_secs(30);

fn redis_url() -> String {
    std::env::var("SPILLWAY_TEST_REDIS_URL")
        .unwrap_or_else(|_| panic!("SPILLWAY_TEST_REDIS_URL is not set ({NEEDS_REDIS})"))
}

fn store() -> LeaseStore {
    LeaseStore::new(&[redis_url()], TIMEOUT).unwrap()
}

fn messages(capacity_per_sec: u64, wants_per_sec: u64) -> Demand {
    Demand {
        resource: Resource::Messages,
        capacity_per_sec,
        wants_per_sec,
    }
}

fn bytes(capacity_per_sec: u64, wants_per_sec: u64) -> Demand {
    Demand {
        resource: Resource::Bytes,
        capacity_per_sec,
        wants_per_sec,
    }
}

/// The one grant of a one-demand lease.
fn grant(
    store: &mut LeaseStore,
    tenant: TenantId,
    process: &str,
    lease_for: Duration,
    demand: Demand,
) -> u64 {
    let lease = store.lease(tenant, process, lease_for, &[demand]).unwrap();
    assert_eq!(lease.expires_in, lease_for);
    assert_eq!(lease.granted_per_sec.len(), 1);
    lease.granted_per_sec[0]
}

/// `redis-cli` against the test server; its answer, trimmed.
fn redis_cli(arguments: &[&str]) -> String {
    redis_cli_at(&redis_url(), arguments)
}

/// `redis-cli` against the server at `url`; its answer, trimmed.
fn redis_cli_at(url: &str, arguments: &[&str]) -> String {
    let output = Command::new("redis-cli")
        .arg("-u")
        .arg(url)
        .args(arguments)
        .output()
        .expect("redis-cli (installed with redis-server by scripts/redis.sh)");
    assert!(
        output.status.success(),
        "redis-cli {arguments:?}: {output:?}"
    );
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

/// `scripts/redis.sh` with these arguments; fails the test unless it succeeds.
fn redis_sh(arguments: &[&str]) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/redis.sh");
    let status = Command::new(script).args(arguments).status().unwrap();
    assert!(status.success(), "scripts/redis.sh {arguments:?}: {status}");
}

#[test]
#[ignore = "needs Redis: scripts/redis-ci.sh"]
fn one_process_gets_its_demand_and_the_rest_as_headroom() {
    let mut store = store();
    let tenant = TenantId(1_601);
    // Alone, 20,000 wanted of 50,000: the demand plus all 30,000 left as headroom.
    assert_eq!(
        grant(&mut store, tenant, "a", LEASE_FOR, messages(50_000, 20_000)),
        50_000
    );
    // More than the capacity wanted: the capacity.
    assert_eq!(
        grant(&mut store, tenant, "a", LEASE_FOR, messages(50_000, 80_000)),
        50_000
    );
    // Nothing to share: nothing granted.
    assert_eq!(
        grant(&mut store, tenant, "a", LEASE_FOR, messages(0, 80_000)),
        0
    );
    // Two processes whose demands fit: each its demand plus half of the 20,000 left (once
    // each has leased twice, so that the first has given up its whole-capacity grant).
    let tenant = TenantId(1_602);
    for _ in 0..2 {
        grant(&mut store, tenant, "a", LEASE_FOR, messages(50_000, 10_000));
        grant(&mut store, tenant, "b", LEASE_FOR, messages(50_000, 20_000));
    }
    assert_eq!(
        grant(&mut store, tenant, "a", LEASE_FOR, messages(50_000, 10_000)),
        20_000
    );
    assert_eq!(
        grant(&mut store, tenant, "b", LEASE_FOR, messages(50_000, 20_000)),
        30_000
    );
}

#[test]
#[ignore = "needs Redis: scripts/redis-ci.sh"]
fn three_processes_converge_to_max_min_fair_shares_never_over_the_capacity() {
    assert_max_min_fair_shares(&mut store(), TenantId(1_603));
}

/// Three processes of `tenant` wanting 105,000, 30,000 and 15,000 of 50,000: never more than
/// 50,000 granted at once, and from the second round on 17,500, 17,500 and 15,000.
fn assert_max_min_fair_shares(store: &mut LeaseStore, tenant: TenantId) {
    let capacity = 50_000;
    let processes = [("a", 105_000), ("b", 30_000), ("c", 15_000)];
    let mut holding = [0_u64; 3];
    for round in 1..=3 {
        for (index, (process, wants)) in processes.iter().enumerate() {
            holding[index] = grant(
                store,
                tenant,
                process,
                LEASE_FOR,
                messages(capacity, *wants),
            );
            let total: u64 = holding.iter().sum();
            assert!(
                total <= capacity,
                "tenant {}, round {round}, after {process}: {holding:?} add up to {total} > {capacity}",
                tenant.0
            );
        }
        if round >= 2 {
            // 15,000 is met; the other two split the 35,000 left.
            assert_eq!(
                holding,
                [17_500, 17_500, 15_000],
                "tenant {}, round {round}",
                tenant.0
            );
        }
    }
}

#[test]
#[ignore = "needs Redis: scripts/redis-ci.sh"]
fn shares_are_whole_and_the_rounding_is_the_same_in_every_call() {
    let mut store = store();
    let tenant = TenantId(1_615);
    // 10 over three equal demands: floor(10 / 3) = 3, floor(7 / 2) = 3, then 4; equal demands
    // are taken in name order, so "c" gets the remainder every time.
    let mut holding = [0_u64; 3];
    for round in 1..=3 {
        for (index, process) in ["a", "b", "c"].into_iter().enumerate() {
            holding[index] = grant(&mut store, tenant, process, LEASE_FOR, messages(10, 100));
            assert!(holding.iter().sum::<u64>() <= 10, "{holding:?}");
        }
        if round >= 2 {
            assert_eq!(holding, [3, 3, 4], "round {round}");
        }
    }
}

#[test]
#[ignore = "needs Redis: scripts/redis-ci.sh"]
fn a_process_that_stops_renewing_loses_its_share_after_its_lease() {
    let mut store = store();
    let tenant = TenantId(1_604);
    let lease_for = Duration::from_millis(300);
    let demand = messages(50_000, 50_000);
    for _ in 0..2 {
        grant(&mut store, tenant, "a", lease_for, demand);
        grant(&mut store, tenant, "b", lease_for, demand);
    }
    let b_last_leased = Instant::now();
    // "a" renews every 20 ms; "b" has stopped. Its 25,000 stay its own until its lease has
    // run out (Redis counts from a little after b_last_leased), then "a" gets them.
    let whole_share_after = loop {
        let granted = grant(&mut store, tenant, "a", lease_for, demand);
        let since_b = b_last_leased.elapsed();
        if granted == 50_000 {
            break since_b;
        }
        assert_eq!(granted, 25_000, "after {since_b:?}");
        assert!(
            since_b < lease_for * 3,
            "b's share still held after {since_b:?}"
        );
        sleep(Duration::from_millis(20));
    };
    assert!(
        whole_share_after >= lease_for,
        "b's share handed over after {whole_share_after:?}, before its lease ran out"
    );
}

#[test]
#[ignore = "needs Redis: scripts/redis-ci.sh"]
fn release_gives_the_share_back_at_once() {
    let mut store = store();
    let tenant = TenantId(1_605);
    let demand = messages(50_000, 50_000);
    for _ in 0..2 {
        grant(&mut store, tenant, "a", LEASE_FOR, demand);
        grant(&mut store, tenant, "b", LEASE_FOR, demand);
    }
    assert_eq!(grant(&mut store, tenant, "a", LEASE_FOR, demand), 25_000);
    let before = store.operations();
    store.release(tenant, "b").unwrap();
    assert_eq!(store.operations(), before + 1);
    assert_eq!(grant(&mut store, tenant, "a", LEASE_FOR, demand), 50_000);
    // Nothing of "b" is left in the tenant's hash.
    let fields = redis_cli(&["HKEYS", &tenant_key(tenant)]);
    assert!(!fields.contains(":b"), "{fields}");
    assert!(fields.contains("exp:a"), "{fields}");
}

#[test]
#[ignore = "needs Redis: scripts/redis-ci.sh"]
fn bytes_and_messages_in_one_call() {
    let mut store = store();
    let tenant = TenantId(1_606);
    let of_a = [messages(1_000, 600), bytes(1_000_000, 2_000_000)];
    let of_b = [bytes(1_000_000, 100_000), messages(1_000, 300)];
    let mut last = (Vec::new(), Vec::new());
    for _ in 0..2 {
        last.0 = store
            .lease(tenant, "a", LEASE_FOR, &of_a)
            .unwrap()
            .granted_per_sec;
        last.1 = store
            .lease(tenant, "b", LEASE_FOR, &of_b)
            .unwrap()
            .granted_per_sec;
    }
    // Messages: 300 and 600 met, the 100 left split as headroom. Bytes: 100,000 met, "a"
    // gets the other 900,000. Grants in each request's own order.
    assert_eq!(last.0, [650, 900_000]);
    assert_eq!(last.1, [100_000, 350]);
}

#[test]
#[ignore = "needs Redis: scripts/redis-ci.sh"]
fn counts_beyond_two_to_the_53_are_taken_as_that() {
    let mut store = store();
    let tenant = TenantId(1_607);
    let granted = grant(
        &mut store,
        tenant,
        "a",
        LEASE_FOR,
        bytes(u64::MAX, u64::MAX),
    );
    assert_eq!(granted, 1 << 53);
}

#[test]
#[ignore = "needs Redis: scripts/redis-ci.sh"]
fn an_idle_tenants_hash_vanishes_after_two_leases() {
    let mut store = store();
    let tenant = TenantId(1_608);
    let lease_for = Duration::from_millis(400);
    grant(&mut store, tenant, "a", lease_for, messages(100, 10));
    let key = tenant_key(tenant);
    let ttl_ms: u64 = redis_cli(&["PTTL", &key]).parse().unwrap();
    assert!((400..=800).contains(&ttl_ms), "PTTL {ttl_ms} ms");
    sleep(Duration::from_millis(900));
    assert_eq!(redis_cli(&["EXISTS", &key]), "0");
}

#[test]
#[ignore = "needs Redis: scripts/redis-ci.sh"]
fn script_flush_then_a_lease_loads_the_script_again() {
    let mut store = store();
    let tenant = TenantId(1_609);
    grant(&mut store, tenant, "a", LEASE_FOR, messages(100, 10));
    assert_eq!(redis_cli(&["SCRIPT", "FLUSH"]), "OK");
    let before = store.operations();
    assert_eq!(
        grant(&mut store, tenant, "a", LEASE_FOR, messages(100, 10)),
        100
    );
    // EVALSHA (NOSCRIPT), SCRIPT LOAD, EVALSHA.
    assert_eq!(store.operations(), before + 3);
    grant(&mut store, tenant, "a", LEASE_FOR, messages(100, 10));
    assert_eq!(store.operations(), before + 4);
}

#[test]
#[ignore = "needs Redis: scripts/redis-ci.sh"]
fn each_tenant_lives_on_its_entry_of_the_url_list() {
    // A port nothing listens on: the second URL is a dead server.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("redis://{}", dead.local_addr().unwrap());
    drop(dead);
    let mut store = LeaseStore::new(&[redis_url(), dead_url.clone()], TIMEOUT).unwrap();
    let demand = [messages(100, 10)];
    assert!(store
        .lease(TenantId(1_610), "a", LEASE_FOR, &demand)
        .is_ok());
    match store.lease(TenantId(1_611), "a", LEASE_FOR, &demand) {
        Err(LeaseError::Unavailable { url, .. }) => assert_eq!(url, dead_url),
        other => panic!("tenant 1611 on {dead_url}: {other:?}"),
    }
}

#[test]
#[ignore = "needs Redis: scripts/redis-ci.sh"]
fn a_paused_redis_times_out_within_the_timeout_and_the_next_call_reconnects() {
    let timeout = Duration::from_millis(200);
    let mut store = LeaseStore::new(&[redis_url()], timeout).unwrap();
    let tenant = TenantId(1_612);
    let demand = [messages(100, 10)];
    store.lease(tenant, "a", LEASE_FOR, &demand).unwrap();
    // Every client's commands wait 600 ms (redis-cli's own PAUSE is answered first).
    assert_eq!(redis_cli(&["CLIENT", "PAUSE", "600", "ALL"]), "OK");
    let started = Instant::now();
    let failed = store.lease(tenant, "a", LEASE_FOR, &demand);
    let took = started.elapsed();
    assert!(
        matches!(failed, Err(LeaseError::Timeout { .. })),
        "{failed:?}"
    );
    assert!(took < timeout + Duration::from_millis(100), "{took:?}");
    sleep(Duration::from_millis(600));
    let lease = store.lease(tenant, "a", LEASE_FOR, &demand).unwrap();
    assert_eq!(lease.granted_per_sec, [100]);
}

#[test]
#[ignore = "needs Redis: scripts/redis-ci.sh"]
fn a_killed_redis_fails_fast_and_a_restarted_one_serves_the_next_lease() {
    let dir = std::env::var("SPILLWAY_TEST_REDIS_DIR")
        .unwrap_or_else(|_| panic!("SPILLWAY_TEST_REDIS_DIR is not set ({NEEDS_REDIS})"));
    let url = redis_url();
    let port = url.rsplit(':').next().unwrap().to_owned();
    let timeout = Duration::from_millis(200);
    let mut store = LeaseStore::new(&[url], timeout).unwrap();
    let tenant = TenantId(1_613);
    let demand = [messages(100, 10)];
    store.lease(tenant, "a", LEASE_FOR, &demand).unwrap();

    redis_sh(&["kill", "--dir", &dir]);
    // Twice: once on the connection that was open, once connecting afresh.
    for attempt in ["open connection", "new connection"] {
        let started = Instant::now();
        let failed = store.lease(tenant, "a", LEASE_FOR, &demand);
        let took = started.elapsed();
        assert!(
            matches!(
                failed,
                Err(LeaseError::Unavailable { .. } | LeaseError::Timeout { .. })
            ),
            "{attempt}: {failed:?}"
        );
        assert!(
            took <= timeout + Duration::from_millis(50),
            "{attempt}: {took:?}"
        );
    }

    redis_sh(&["start", "--dir", &dir, "--port", &port]);
    // An empty server without the script: the NOSCRIPT path, on a new connection.
    let before = store.operations();
    let lease = store.lease(tenant, "a", LEASE_FOR, &demand).unwrap();
    assert_eq!(lease.granted_per_sec, [100]);
    assert_eq!(store.operations(), before + 3);
}

#[test]
#[ignore = "needs Redis: scripts/redis-ci.sh"]
fn lease_latency_on_loopback() {
    print_lease_latency(&mut store(), TenantId(1_614), "a server");
}

/// Times 2,000 leases of `tenant` by two processes, after a first that connects and loads
/// the script: the steady state is one EVALSHA per call. Prints the median, p99 and max.
fn print_lease_latency(store: &mut LeaseStore, tenant: TenantId, of: &str) {
    const CALLS: usize = 2_000;
    let demands = [messages(50_000, 20_000), bytes(50_000_000, 10_000_000)];
    store.lease(tenant, "a", LEASE_FOR, &demands).unwrap();
    store.lease(tenant, "b", LEASE_FOR, &demands).unwrap();
    let before = store.operations();
    let mut latencies: Vec<Duration> = (0..CALLS)
        .map(|call| {
            let process = if call % 2 == 0 { "a" } else { "b" };
            let started = Instant::now();
            let lease = store.lease(tenant, process, LEASE_FOR, &demands).unwrap();
            let took = started.elapsed();
            assert_eq!(lease.granted_per_sec, [25_000, 25_000_000]);
            took
        })
        .collect();
    assert_eq!(store.operations(), before + CALLS as u64);
    latencies.sort();
    println!(
        "lease latency on loopback ({of}), two processes, two resources, {CALLS} calls: \
         median {:?}, p99 {:?}, max {:?}",
        latencies[CALLS / 2],
        latencies[CALLS * 99 / 100],
        latencies[CALLS - 1]
    );
}

#[test]
fn new_refuses_no_urls_and_urls_that_are_not_redis() {
    assert!(matches!(
        LeaseStore::new(&[], TIMEOUT),
        Err(LeaseError::Url { .. })
    ));
    match LeaseStore::new(&["http://127.0.0.1:6379".to_owned()], TIMEOUT) {
        Err(LeaseError::Url { url, .. }) => assert_eq!(url, "http://127.0.0.1:6379"),
        other => panic!("{other:?}"),
    }
    // Parsing connects to nothing: a URL of a server that is not there is fine.
    assert!(LeaseStore::new(&["redis://127.0.0.1:1".to_owned()], TIMEOUT).is_ok());
}

#[test]
fn a_zero_timeout_fails_every_call_as_a_timeout() {
    let url = ["redis://127.0.0.1:1".to_owned()];
    for mut store in [
        LeaseStore::new(&url, Duration::ZERO).unwrap(),
        LeaseStore::new_cluster(&url, Duration::ZERO).unwrap(),
    ] {
        let failed = store.lease(TenantId(1), "a", LEASE_FOR, &[messages(100, 10)]);
        assert!(
            matches!(failed, Err(LeaseError::Timeout { .. })),
            "{store:?}: {failed:?}"
        );
        assert!(matches!(
            store.release(TenantId(1), "a"),
            Err(LeaseError::Timeout { .. })
        ));
        // Nothing was sent.
        assert_eq!(store.operations(), 0);
    }
}

// A Redis Cluster (`[global] cluster = true`).

fn cluster_seeds() -> Vec<String> {
    std::env::var("SPILLWAY_TEST_REDIS_CLUSTER_URLS")
        .unwrap_or_else(|_| panic!("SPILLWAY_TEST_REDIS_CLUSTER_URLS is not set ({NEEDS_CLUSTER})"))
        .split(',')
        .map(str::to_owned)
        .collect()
}

fn cluster_store() -> LeaseStore {
    LeaseStore::new_cluster(&cluster_seeds(), TIMEOUT).unwrap()
}

/// A primary of the test cluster.
struct ClusterNode {
    url: String,
    id: String,
    slots: Vec<RangeInclusive<u16>>,
}

/// The cluster's primaries as `CLUSTER NODES` says now, in its order.
fn cluster_primaries() -> Vec<ClusterNode> {
    let nodes = redis_cli_at(&cluster_seeds()[0], &["CLUSTER", "NODES"]);
    let primaries: Vec<ClusterNode> = nodes
        .lines()
        .filter(|line| line.split_whitespace().nth(2).unwrap().contains("master"))
        .map(|line| {
            // ID ADDRESS@BUS FLAGS MASTER PING PONG EPOCH LINK SLOT...
            let fields: Vec<&str> = line.split_whitespace().collect();
            let address = fields[1].split('@').next().unwrap();
            let slots = fields[8..]
                .iter()
                // `[SLOT->-ID]`: a slot being migrated, still owned here as a plain slot.
                .filter(|range| !range.starts_with('['))
                .map(|range| {
                    let (first, last) = range.split_once('-').unwrap_or((range, range));
                    first.parse().unwrap()..=last.parse().unwrap()
                })
                .collect();
            ClusterNode {
                url: format!("redis://{address}"),
                id: fields[0].to_owned(),
                slots,
            }
        })
        .collect();
    assert_eq!(primaries.len(), 3, "{nodes}");
    primaries
}

/// `tenant`'s key's slot, as `CLUSTER KEYSLOT` says.
fn key_slot(tenant: TenantId) -> u16 {
    redis_cli_at(
        &cluster_seeds()[0],
        &["CLUSTER", "KEYSLOT", &tenant_key(tenant)],
    )
    .parse()
    .unwrap()
}

/// The index in `nodes` of the primary owning `tenant`'s slot.
fn owner_of(nodes: &[ClusterNode], tenant: TenantId) -> usize {
    let slot = key_slot(tenant);
    nodes
        .iter()
        .position(|node| node.slots.iter().any(|range| range.contains(&slot)))
        .unwrap_or_else(|| panic!("no primary owns slot {slot}"))
}

/// Tenants from `first` on whose keys land on different nodes: the first found on each of
/// `nodes`, in their order.
fn tenant_per_node(nodes: &[ClusterNode], first: u32) -> Vec<TenantId> {
    let mut found: Vec<Option<TenantId>> = nodes.iter().map(|_| None).collect();
    for id in first..first + 200 {
        let tenant = TenantId(id);
        found[owner_of(nodes, tenant)].get_or_insert(tenant);
        if found.iter().all(Option::is_some) {
            return found.into_iter().flatten().collect();
        }
    }
    panic!("200 tenants from {first} on do not cover every node");
}

#[test]
#[ignore = "needs a Redis Cluster: scripts/redis-ci.sh"]
fn cluster_each_tenant_lives_on_the_node_owning_its_slot() {
    let nodes = cluster_primaries();
    let tenants = tenant_per_node(&nodes, 1_700);
    // One seed is enough: the client learns the other nodes from it.
    let mut store = LeaseStore::new_cluster(&cluster_seeds()[..1], TIMEOUT).unwrap();
    for (owner, &tenant) in tenants.iter().enumerate() {
        assert_eq!(
            grant(&mut store, tenant, "a", LEASE_FOR, messages(100, 10)),
            100
        );
        let key = tenant_key(tenant);
        for (index, node) in nodes.iter().enumerate() {
            let exists = redis_cli_at(&node.url, &["EXISTS", &key]);
            if index == owner {
                assert_eq!(exists, "1", "{key} on {}", node.url);
            } else {
                assert!(
                    exists.starts_with("MOVED"),
                    "{key} on {}: {exists}",
                    node.url
                );
            }
        }
    }
    one_operation_per_lease(&mut store, &tenants);
}

/// Steady state: one EVALSHA per lease, whichever node answers it.
fn one_operation_per_lease(store: &mut LeaseStore, tenants: &[TenantId]) {
    let before = store.operations();
    for &tenant in tenants {
        grant(store, tenant, "a", LEASE_FOR, messages(100, 10));
    }
    assert_eq!(store.operations(), before + tenants.len() as u64);
}

#[test]
#[ignore = "needs a Redis Cluster: scripts/redis-ci.sh"]
fn cluster_three_processes_converge_to_max_min_fair_shares_on_every_node() {
    let nodes = cluster_primaries();
    let mut store = cluster_store();
    for tenant in tenant_per_node(&nodes, 1_720) {
        assert_max_min_fair_shares(&mut store, tenant);
    }
}

#[test]
#[ignore = "needs a Redis Cluster: scripts/redis-ci.sh"]
fn cluster_script_flush_on_every_node_then_each_node_gets_the_script_at_its_first_lease() {
    let nodes = cluster_primaries();
    let tenants = tenant_per_node(&nodes, 1_740);
    let mut store = cluster_store();
    for &tenant in &tenants {
        grant(&mut store, tenant, "a", LEASE_FOR, messages(100, 10));
    }
    for node in &nodes {
        assert_eq!(redis_cli_at(&node.url, &["SCRIPT", "FLUSH"]), "OK");
    }
    // EVALSHA (NOSCRIPT), SCRIPT LOAD, EVALSHA on each node in turn: the script is loaded on
    // the node that said NOSCRIPT alone, so the next node says it too.
    for &tenant in &tenants {
        let before = store.operations();
        assert_eq!(
            grant(&mut store, tenant, "a", LEASE_FOR, messages(100, 10)),
            100
        );
        assert_eq!(store.operations(), before + 3, "tenant {}", tenant.0);
    }
    one_operation_per_lease(&mut store, &tenants);
}

#[test]
#[ignore = "needs a Redis Cluster: scripts/redis-ci.sh"]
fn cluster_a_slot_moved_under_the_store_is_followed_and_the_script_loaded_there() {
    let nodes = cluster_primaries();
    let tenant = tenant_per_node(&nodes, 1_760)[0];
    let (from, to) = (&nodes[0], &nodes[1]);
    let key = tenant_key(tenant);
    let slot = key_slot(tenant).to_string();
    let mut store = cluster_store();
    assert_eq!(
        grant(&mut store, tenant, "a", LEASE_FOR, messages(100, 10)),
        100
    );
    // Empty the slot, then hand it to the second node as a resharding does (with no key to
    // migrate): the store's slot map is now stale.
    assert_eq!(redis_cli_at(&from.url, &["DEL", &key]), "1");
    assert_eq!(
        redis_cli_at(&from.url, &["CLUSTER", "COUNTKEYSINSLOT", &slot]),
        "0"
    );
    let set_slot = |node: &ClusterNode, arguments: &[&str]| {
        let mut command = vec!["CLUSTER", "SETSLOT", &slot];
        command.extend_from_slice(arguments);
        assert_eq!(redis_cli_at(&node.url, &command), "OK", "{command:?}");
    };
    set_slot(to, &["IMPORTING", &from.id]);
    set_slot(from, &["MIGRATING", &to.id]);
    set_slot(to, &["NODE", &to.id]);
    set_slot(from, &["NODE", &to.id]);
    set_slot(&nodes[2], &["NODE", &to.id]);
    assert_eq!(redis_cli_at(&to.url, &["SCRIPT", "FLUSH"]), "OK");

    let before = store.operations();
    assert_eq!(
        grant(&mut store, tenant, "a", LEASE_FOR, messages(100, 10)),
        100
    );
    // EVALSHA (MOVED, followed by the client: not counted; NOSCRIPT on the new owner),
    // SCRIPT LOAD there, EVALSHA.
    assert_eq!(store.operations(), before + 3);
    assert_eq!(redis_cli_at(&to.url, &["EXISTS", &key]), "1");
    let before = store.operations();
    grant(&mut store, tenant, "a", LEASE_FOR, messages(100, 10));
    assert_eq!(store.operations(), before + 1);
}

#[test]
#[ignore = "needs a Redis Cluster: scripts/redis-ci.sh"]
fn cluster_a_paused_node_times_out_within_twice_the_timeout_and_the_next_call_reconnects() {
    let nodes = cluster_primaries();
    let tenants = tenant_per_node(&nodes, 1_780);
    let (paused, tenant) = (&nodes[2], tenants[2]);
    let timeout = Duration::from_millis(200);
    let mut store = LeaseStore::new_cluster(&cluster_seeds(), timeout).unwrap();
    let demand = [messages(100, 10)];
    store.lease(tenant, "a", LEASE_FOR, &demand).unwrap();
    assert_eq!(
        redis_cli_at(&paused.url, &["CLIENT", "PAUSE", "700", "ALL"]),
        "OK"
    );
    let started = Instant::now();
    let failed = store.lease(tenant, "a", LEASE_FOR, &demand);
    let took = started.elapsed();
    assert!(
        matches!(failed, Err(LeaseError::Timeout { .. })),
        "{failed:?}"
    );
    // The client sends a timed-out command once more.
    assert!(took < timeout * 2 + Duration::from_millis(100), "{took:?}");
    println!("a paused cluster node: Timeout after {took:?} (timeout {timeout:?})");
    // A tenant on another node is served meanwhile (over a new connection).
    let other = store.lease(tenants[0], "a", LEASE_FOR, &demand);
    assert!(other.is_ok(), "{other:?} after {:?}", started.elapsed());
    sleep(Duration::from_millis(700));
    let lease = store.lease(tenant, "a", LEASE_FOR, &demand).unwrap();
    assert_eq!(lease.granted_per_sec, [100]);
}

#[test]
#[ignore = "needs a Redis Cluster: scripts/redis-ci.sh"]
fn cluster_two_engines_with_cluster_true_share_a_tenant_rate_and_release_it_at_shutdown() {
    const RATE: u64 = 4_000;
    let nodes = cluster_primaries();
    let tenants = tenant_per_node(&nodes, 1_800);
    // A tenant on a node that is not the first seed: reached through the slot map.
    let (owner, tenant) = (&nodes[1], tenants[1]);
    let engine = |process: &str| {
        let mut config = Config::default();
        config.shards = 1;
        config.global.redis = cluster_seeds();
        config.global.cluster = true;
        config.global.refresh_ns = 20_000_000;
        config.global.lease_ns = 400_000_000;
        config.global.process = Some(process.to_owned());
        config.global.tenants = vec![GlobalTenantConfig::new(tenant, RATE as u32)];
        Engine::builder()
            .config(config)
            .handler(|_: &Message| Ok(()))
            .start()
            .unwrap()
    };
    let engines = [engine("cluster-one"), engine("cluster-two")];
    let started = Instant::now();
    loop {
        let health: Vec<_> = engines
            .iter()
            .map(|engine| engine.control().health(HealthKind::Full).unwrap())
            .collect();
        let shares: Vec<u64> = health
            .iter()
            .map(|health| health.global[0].share_per_sec)
            .collect();
        assert!(shares.iter().sum::<u64>() <= RATE, "shares {shares:?}");
        let leased = health
            .iter()
            .all(|health| health.global[0].mode == QuotaMode::Leased && !health.degraded);
        if leased && shares.iter().all(|&share| share > 0) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "shares {shares:?}, health {health:?}"
        );
        sleep(Duration::from_millis(5));
    }
    let key = tenant_key(tenant);
    let fields = redis_cli_at(&owner.url, &["HKEYS", &key]);
    for field in ["exp:cluster-one", "exp:cluster-two"] {
        assert!(fields.contains(field), "{field} not in {fields}");
    }
    for engine in engines {
        assert!(engine.shutdown().reconciles());
    }
    // Both gave their shares back at shutdown: nothing of theirs is left.
    assert_eq!(redis_cli_at(&owner.url, &["EXISTS", &key]), "0");
}

#[test]
#[ignore = "needs a Redis Cluster: scripts/redis-ci.sh"]
fn cluster_lease_latency_on_loopback() {
    let nodes = cluster_primaries();
    // A tenant on a node that is not the first seed.
    let tenant = tenant_per_node(&nodes, 1_820)[1];
    print_lease_latency(&mut cluster_store(), tenant, "a cluster");
}

#[test]
fn new_cluster_refuses_no_urls_and_urls_that_are_not_redis_and_is_one_unwatched_store() {
    assert!(matches!(
        LeaseStore::new_cluster(&[], TIMEOUT),
        Err(LeaseError::Url { .. })
    ));
    let seeds = [
        "redis://127.0.0.1:7000".to_owned(),
        "http://127.0.0.1:7001".to_owned(),
    ];
    match LeaseStore::new_cluster(&seeds, TIMEOUT) {
        Err(LeaseError::Url { url, .. }) => assert_eq!(url, seeds[1]),
        other => panic!("{other:?}"),
    }
    // Parsing connects to nothing. A cluster is one store: no per-server index, no address
    // for the idle-connection watch.
    let store = LeaseStore::new_cluster(&seeds[..1], TIMEOUT).unwrap();
    assert_eq!(store.servers(), 1);
    assert_eq!(store.server_index(TenantId(1)), 0);
    assert_eq!(store.server_index(TenantId(2)), 0);
    assert_eq!(store.server_host_port(0), None);
}

#[test]
fn a_cluster_with_no_seed_up_is_unavailable_at_once() {
    // Ports nothing listens on.
    let seeds: Vec<String> = (0..2)
        .map(|_| {
            let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!("redis://{}", dead.local_addr().unwrap())
        })
        .collect();
    let mut store = LeaseStore::new_cluster(&seeds, TIMEOUT).unwrap();
    let started = Instant::now();
    match store.lease(TenantId(1), "a", LEASE_FOR, &[messages(100, 10)]) {
        Err(LeaseError::Unavailable { url, .. }) => assert_eq!(url, seeds.join(",")),
        other => panic!("{other:?}"),
    }
    assert!(started.elapsed() < TIMEOUT, "{:?}", started.elapsed());
    assert_eq!(store.operations(), 0);
}

#[test]
fn cluster_true_loads_and_check_config_prints_it() {
    let text = r#"
        [global]
        redis = ["redis://10.0.0.1:7000", "redis://10.0.0.2:7000"]
        cluster = true
        [[global.tenants]]
        tenant = 7
        rate_per_sec = 50000
    "#;
    let config = Config::from_toml_str(text).unwrap();
    assert!(config.global.cluster);
    assert!(config.global.enabled());
    // What `spillway check-config` prints after its first line, and it loads back the same.
    let printed = config.to_toml_string();
    assert!(printed.contains("cluster = true"), "{printed}");
    assert_eq!(Config::from_toml_str(&printed).unwrap(), config);
    // Off unless said.
    let standalone = Config::from_toml_str(&text.replace("cluster = true", "")).unwrap();
    assert!(!standalone.global.cluster);
    assert!(standalone.to_toml_string().contains("cluster = false"));
}
