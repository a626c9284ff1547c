#!/usr/bin/env bash
# workers-vs-nats smoke (README, "Measured against NATS"): a private nats-server started
# with scripts/nats-server.sh (Debian's package installed when absent), then one tiny
# comparison in a debug build: spillway serve --workers with Rust echo workers against
# NATS request/reply with NATS echo workers, 50 connections, 64 B payloads, 1 s open loop
# and 1 s closed loop each. Fails unless every response is its payload byte for byte and
# every count reconciles on both sides. About 10 s after the build.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --locked -q -p spillway --bin spillway --example echo_worker
cargo build --locked -q -p spillway-bench --bin workers-vs-nats --bin nats-echo-worker
work=$(mktemp -d)
cleanup() {
    scripts/nats-server.sh stop --dir "$work/nats" || true
    rm -rf "$work"
}
trap cleanup EXIT

url=$(scripts/nats-server.sh start --dir "$work/nats")
timeout 120 target/debug/workers-vs-nats --nats-url "$url" --bin-dir target/debug \
    --connections 50 --payload-bytes 64 --workers 2 --rates 2000 --window 2 \
    --duration-s 1 --warmup-s 0.2 --reps 1
echo "nats-ci: both systems echoed every payload"
