#!/usr/bin/env bash
# Worker mode end to end (docs/WORKERS.md section 10): `spillway serve --workers` with each
# reference worker (Rust echo, Rust CPU-cost, Python echo) over TCP on loopback, and the
# Rust echo worker over a Unix socket, each under a short client load in which every
# message must be delivered with its payload as the response, byte for byte, in its
# version-2 Reply (check_echo --server); then each worker against check_echo
# --host-workers, the engine embedded, where every response must equal its payload byte
# for byte too. Every process is bounded by `timeout`
# and stopped on exit. About 5 s after the build.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --locked -q -p spillway --bin spillway \
    --example echo_worker --example cpu_worker --example check_echo
bin=target/debug
examples=target/debug/examples
work=$(mktemp -d)
# cleanup (on EXIT) and await_line.
source scripts/lib/processes.sh

# The worker commands, each given its address as the last argument.
declare -A workers=(
    [rust-echo]="$examples/echo_worker --name rust-echo --credit 8 --connect"
    [rust-cpu]="$examples/cpu_worker --name rust-cpu --credit 4 --cost-us 20 --connect"
    [python-echo]="python3 engine/examples/workers/echo_worker.py --name python-echo --credit 8 --connect"
)

# serve WORKER WORKER_ADDRESS: spillway serve, the worker, a client load, then a clean stop.
serve() {
    local name=$1 worker_address=$2 log="$work/serve-$1.log"
    echo "--- spillway serve --workers $worker_address with $name"
    timeout 60 "$bin/spillway" serve --listen 127.0.0.1:0 --admin 127.0.0.1:0 --workers "$worker_address" --shards 2 \
        >"$log" 2>&1 &
    local serve_pid=$!
    pids+=("$serve_pid")
    local workers_at listen_at
    workers_at=$(await_line "$log" "workers connect to")
    listen_at=$(await_line "$log" "listening on")
    # Two workers: with fewer workers than shards, one shard's messages would wait.
    local worker_pids=()
    for index in 1 2; do
        timeout 60 ${workers[$name]} "$workers_at" >"$work/$name-$index.log" 2>&1 &
        worker_pids+=($!)
        pids+=($!)
    done
    timeout 30 "$examples/check_echo" --server "$listen_at" --connections 4 --messages 250
    kill -TERM "$serve_pid"
    wait "$serve_pid"
    # The workers exit 0 when spillway says it is shutting down.
    for pid in "${worker_pids[@]}"; do
        wait "$pid" || { echo "$name exited with $?" >&2; cat "$work/$name"-*.log >&2; exit 1; }
    done
    grep -q "delivered 1000 .*reconciles: true" "$log" ||
        { echo "serve's counts are off:" >&2; cat "$log" >&2; exit 1; }
    grep -q "workers: 0 open (2 ever).* 1000 answers" "$log" ||
        { echo "serve's worker counts are off:" >&2; cat "$log" >&2; exit 1; }
}

# host WORKER ADDRESS: check_echo serves the worker address; the worker's every response
# is checked.
host() {
    local name=$1 address=$2 log="$work/host-$1.log"
    echo "--- check_echo --host-workers $address with $name"
    timeout 30 "$examples/check_echo" --host-workers "$address" --messages 2000 >"$log" 2>&1 &
    local check_pid=$!
    pids+=("$check_pid")
    local workers_at
    workers_at=$(await_line "$log" "workers connect to")
    timeout 30 ${workers[$name]} "$workers_at" >"$work/$name-host.log" 2>&1 &
    local worker_pid=$!
    pids+=("$worker_pid")
    wait "$check_pid" || { cat "$log" >&2; exit 1; }
    cat "$log"
    wait "$worker_pid" || { echo "$name exited with $?" >&2; cat "$work/$name-host.log" >&2; exit 1; }
}

for name in rust-echo rust-cpu python-echo; do
    serve "$name" 127.0.0.1:0
done
serve rust-echo "unix:$work/workers.sock"
for name in rust-echo rust-cpu python-echo; do
    host "$name" 127.0.0.1:0
done
host python-echo "unix:$work/host.sock"
echo "workers-ci: every worker answered every message"
