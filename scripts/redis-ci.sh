#!/usr/bin/env bash
# The lease store and the engine's fleet quotas against a real Redis (tests/tests/global_lease.rs,
# tests/tests/global_quota.rs): a private redis-server and a private Redis Cluster of three
# primaries, started with scripts/redis.sh (Debian's package installed when absent) in a
# temporary directory; the server's URL and directory exported as SPILLWAY_TEST_REDIS_URL and
# SPILLWAY_TEST_REDIS_DIR, the cluster's node URLs as SPILLWAY_TEST_REDIS_CLUSTER_URLS; then
# the tests that need them (ignored in a plain `cargo test`), one at a time: one of them kills
# and restarts the server. Both are stopped on exit, pass or fail. About 15 s after the build.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo test --locked -q -p spillway-tests --test global_lease --test global_quota --no-run
cargo test --locked -q -p spillway-bench --test fleet_quota --no-run
work=$(mktemp -d)
cleanup() {
    scripts/redis.sh stop --dir "$work/redis" || true
    scripts/redis.sh stop --dir "$work/cluster" || true
    rm -rf "$work"
}
trap cleanup EXIT

SPILLWAY_TEST_REDIS_URL=$(scripts/redis.sh start --dir "$work/redis")
SPILLWAY_TEST_REDIS_DIR=$work/redis
SPILLWAY_TEST_REDIS_CLUSTER_URLS=$(scripts/redis.sh start-cluster --dir "$work/cluster")
export SPILLWAY_TEST_REDIS_URL SPILLWAY_TEST_REDIS_DIR SPILLWAY_TEST_REDIS_CLUSTER_URLS
timeout 300 cargo test --locked -q -p spillway-tests --test global_lease --test global_quota -- \
    --include-ignored --test-threads 1
# The leases-vs-one-round-trip-per-message bench, briefly: each side's counts and bounds.
timeout 120 cargo test --locked -q -p spillway-bench --test fleet_quota -- \
    --include-ignored --test-threads 1
echo "redis-ci: the lease store and the engine's fleet quotas hold against a real Redis and a Redis Cluster"
