#!/usr/bin/env bash
# tcp-bench.sh: loadgen's TCP target against the tokio twin (baseline-serve), in two
# processes on loopback. Builds both (release), starts baseline-serve on 127.0.0.1:$PORT,
# runs `loadgen --target tcp://127.0.0.1:$PORT --scenario $SCENARIO --duration $DURATION`,
# samples the machine's CPU split (/proc/stat) over the measured phase, and, with PROFILE=1,
# records the generator thread with `perf record -e cpu-clock -g -p` over the measured phase
# (after the connect phase, which is not what is being measured). Then stops the twin with
# SIGTERM (it prints its own counters). Everything goes to stdout and to
# docs/results/tcp-twin-<scenario>.txt.
#
# The measured window is found from loadgen's stderr: it starts once the connect phase has
# printed its line and the warm-up (WARMUP s) has passed.
#
# Usage: scripts/tcp-bench.sh                          (saturation, 5 s, port 7979)
#        SCENARIO=light DURATION=3 PROFILE=1 scripts/tcp-bench.sh
set -euo pipefail

cd "$(dirname "$0")/.."
SCENARIO="${SCENARIO:-saturation}"
DURATION="${DURATION:-5}"
WARMUP="${WARMUP:-1}"
PORT="${PORT:-7979}"
PROFILE="${PROFILE:-0}"
OUT="docs/results/tcp-twin-$SCENARIO.txt"

cargo build --release -p spillway-loadgen -p spillway-bench --bin loadgen --bin baseline-serve
TARGET_DIR="${CARGO_TARGET_DIR:-target}"

tmp=$(mktemp -d)
twin=""
cleanup() {
    if [ -n "$twin" ] && kill -0 "$twin" 2>/dev/null; then kill -KILL "$twin"; fi
    rm -rf "$tmp"
}
trap cleanup EXIT

"$TARGET_DIR/release/baseline-serve" --listen "127.0.0.1:$PORT" > "$tmp/twin.out" 2> "$tmp/twin.err" &
twin=$!
for _ in $(seq 1 100); do
    grep -q '^listening on' "$tmp/twin.out" 2>/dev/null && break
    kill -0 "$twin" 2>/dev/null || { cat "$tmp/twin.err" >&2; exit 1; }
    sleep 0.1
done

cpu_sample() { grep '^cpu ' /proc/stat; }

cmd=("$TARGET_DIR/release/loadgen" --target "tcp://127.0.0.1:$PORT" --scenario "$SCENARIO"
     --duration "$DURATION" --warmup "$WARMUP")
"${cmd[@]}" > "$tmp/loadgen.txt" 2> "$tmp/loadgen.err" &
loadgen=$!
# The measured phase starts WARMUP s after the connect phase reports.
until grep -q 'connections to .* open in' "$tmp/loadgen.err" 2>/dev/null; do
    kill -0 "$loadgen" 2>/dev/null || break
    sleep 0.05
done
sleep "$WARMUP"
window=$(python3 -c "print(max(0.5, $DURATION - 0.5))")
before=$(cpu_sample)
if [ "$PROFILE" = "1" ]; then
    perf record -e cpu-clock -g -p "$loadgen" -o "$tmp/perf.data" -- sleep "$window" 2> /dev/null
else
    sleep "$window"
fi
after=$(cpu_sample)
wait "$loadgen" || true
kill -TERM "$twin"
wait "$twin" || true
twin=""

mkdir -p docs/results
{
    echo "# scripts/tcp-bench.sh: baseline-serve --listen 127.0.0.1:$PORT, then: ${cmd[*]}"
    echo "# machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'); commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    echo
    echo "# loadgen (stderr: progress)"
    cat "$tmp/loadgen.err"
    echo
    echo "# loadgen report"
    cat "$tmp/loadgen.txt"
    echo
    echo "# whole machine over ${window} s of the measured phase (/proc/stat, % of all CPUs)"
    python3 - "$before" "$after" <<'PY'
import sys
names = ["user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal"]
before = [int(x) for x in sys.argv[1].split()[1:9]]
after = [int(x) for x in sys.argv[2].split()[1:9]]
delta = [a - b for a, b in zip(after, before)]
total = sum(delta) or 1
print("  " + "  ".join(f"{n} {100 * d / total:.0f}%" for n, d in zip(names, delta)))
PY
    echo
    echo "# baseline-serve (stderr, then its counters)"
    cat "$tmp/twin.err"
    cat "$tmp/twin.out"
    if [ "$PROFILE" = "1" ]; then
        echo
        echo "# generator thread over the measured phase: perf record -e cpu-clock -g -p (loadgen)"
        echo "# where its time goes (inclusive):"
        perf report -i "$tmp/perf.data" --stdio --children --sort symbol -g none 2>/dev/null \
            | grep -v '^#' | grep -v '^$' \
            | grep -E 'entry_SYSCALL_64_after_hwframe|__sys_sendto|tcp_sendmsg$|do_softirq|tcp_v4_rcv|__sys_recvfrom|do_epoll_wait|sched_yield|spillway|hdrhistogram' \
            | sed -e 's/[ -]*$//' | sed -n '1,20p'
        echo "# top 15 symbols by self time:"
        perf report -i "$tmp/perf.data" --stdio --no-children --sort symbol -g none 2>/dev/null \
            | grep -v '^#' | grep -v '^$' | sed -e 's/[ -]*$//' | sed -n '1,15p'
    fi
} | tee "$OUT"
