#!/usr/bin/env bash
# The lease store and the engine's fleet quotas against a real Redis (tests/tests/global_lease.rs,
# tests/tests/global_quota.rs): a private redis-server
# started with scripts/redis.sh (Debian's package installed when absent) in a temporary
# directory, its URL and directory exported as SPILLWAY_TEST_REDIS_URL and
# SPILLWAY_TEST_REDIS_DIR, then the tests that need it (ignored in a plain `cargo test`), one
# at a time: one of them kills and restarts the server. Redis is stopped on exit, pass or
# fail. About 10 s after the build.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo test --locked -q -p spillway-tests --test global_lease --test global_quota --no-run
work=$(mktemp -d)
cleanup() {
    scripts/redis.sh stop --dir "$work/redis" || true
    rm -rf "$work"
}
trap cleanup EXIT

SPILLWAY_TEST_REDIS_URL=$(scripts/redis.sh start --dir "$work/redis")
SPILLWAY_TEST_REDIS_DIR=$work/redis
export SPILLWAY_TEST_REDIS_URL SPILLWAY_TEST_REDIS_DIR
timeout 300 cargo test --locked -q -p spillway-tests --test global_lease --test global_quota -- \
    --include-ignored --test-threads 1
echo "redis-ci: the lease store and the engine's fleet quotas hold against a real Redis"
