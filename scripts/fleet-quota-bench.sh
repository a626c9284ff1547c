#!/usr/bin/env bash
# fleet-quota-bench.sh: the fleet-wide quota's leases against the per-request design, one
# Redis round trip per message as Envoy's ratelimit service makes (issue 16). Builds the
# `fleet-quota` binary (bench profile: fat LTO, as `compare`; PROFILE=release for a quicker
# build), starts a private redis-server with scripts/redis.sh, runs the binary against it
# with the arguments given here, and stops Redis, pass or fail. Before the run it prints, on
# stderr, how busy the machine was over one second (/proc/stat) and its busiest processes
# (top); the table gives the load average before and after.
#
# The binary's defaults: one tenant limited to 50,000 msg/s, 150,000 msg/s offered by 2
# producer threads, 5 s measured after 1 s warm-up, 3 runs of each system, alternating:
# about 40 s after the build. It exits 1 when a run's counts do not reconcile.
#
# Usage: scripts/fleet-quota-bench.sh [--offered N] [--producers N] [--limit N]
#            [--duration-s S] [--warmup-s S] [--reps N] [--tenant ID]
#        PROFILE=release scripts/fleet-quota-bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."

PROFILE="${PROFILE:-bench}"
cargo build --locked --profile "$PROFILE" -p spillway-bench --bin fleet-quota
# Cargo writes the bench profile's output to release/, like release's own.
case $PROFILE in
    bench | release) out=release ;;
    dev) out=debug ;;
    *) out=$PROFILE ;;
esac
bin="${CARGO_TARGET_DIR:-target}/$out/fleet-quota"

work=$(mktemp -d)
cleanup() {
    scripts/redis.sh stop --dir "$work/redis" || true
    rm -rf "$work"
}
trap cleanup EXIT

url=$(scripts/redis.sh start --dir "$work/redis")
# The CPU time of the machine's cores over 1 s before the run: user+nice+system+irq+softirq+steal
# of all (the first line of /proc/stat).
cpu_busy_and_total() { awk '/^cpu /{print $2+$3+$4+$7+$8+$9, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat; }
read -r busy_before total_before < <(cpu_busy_and_total)
sleep 1
read -r busy_after total_after < <(cpu_busy_and_total)
echo "fleet-quota-bench: the machine was $(( 100 * (busy_after - busy_before) / (total_after - total_before) ))% busy over the second before the run; busiest processes:" >&2
top -bn1 -o %CPU | sed -n '7,12p' >&2
"$bin" --redis-url "$url" "$@"
