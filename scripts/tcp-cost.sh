#!/usr/bin/env bash
# tcp-cost.sh: what one message costs over TCP, for spillway (`spillway serve --shards 1`),
# the tokio twin (`baseline-serve`) and the floor (`floor-serve`, the least a server can do
# for the protocol over mio), side by side in one run (issue 17).
#
# For each window W in WINDOWS and each server, RUNS times (the servers taking turns within
# each run), it starts the server on 127.0.0.1, runs
#   loadgen --target tcp://127.0.0.1:PORT --closed-loop --window W --connections C
#           --duration D --warmup WARMUP --json
# and measures over the measured phase only (it begins WARMUP s after the connect phase
# ends, as loadgen reports it on stderr; the window leaves out its first 0.1 s and its
# last 0.25 s):
#   - delivered msg/s: loadgen's JSON (`delivered_rate`, the whole measured phase);
#   - server and client CPU µs per message: utime + stime (all threads) from
#     /proc/PID/stat over the window, divided by the messages delivered in it
#     (delivered_rate x the window's length);
#   - TCP segments per message: `nstat -asz TcpOutSegs` over the window, divided likewise;
#     on loopback that is both sides' segments together (Submits, Replies, ACKs).
# Then, once per (server, window), a separate short run under `strace -c -f -p` attached to
# the server and to loadgen at once for STRACE_S s of its measured phase: system calls per
# message on each side, the messages being the rate while both were traced (loadgen's
# progress lines, one a second, their cumulative `delivered` count, from those that fall
# between strace's attach and detach only) times the time each strace was attached. strace
# slows the traced processes a lot, so only the ratio is reported, never that run's
# throughput.
# loadgen's own count of its system calls (write, read, epoll_wait; whole run, untraced) is
# reported beside the client's strace figure.
#
# Unless NETNS=0, the measurements run in a network namespace of their own (`unshare -n`,
# loopback only), so that nstat counts this script's segments alone, not those of other
# programs on the machine's loopback.
#
# Environment: RUNS (3), DURATION (5 s measured), WARMUP (1 s), CONNECTIONS (15000),
# WINDOWS ("1 4 16"), PORT (first port, 7990; each server start takes the next),
# STRACE_S (3, at least 2.5: the rate while traced is read from loadgen's progress lines,
# one a second; 0: no strace runs), TWIN_WORKERS (1: one tokio worker beside spillway's
# one shard and the floor's one thread), SERVERS ("spillway twin floor", any of them),
# NETNS (1), OUT (docs/results/issue17/tcp-cost.txt).
# QUICK=1: a smoke run of 100 connections, 1 s measured, 1 run, no strace, written to
# docs/results/issue17/tcp-cost-quick.txt. Beside OUT, the same name in .jsonl: every run's
# figures, one JSON object each.
#
# Usage: scripts/tcp-cost.sh
#        QUICK=1 scripts/tcp-cost.sh
#        RUNS=5 WINDOWS="1 16" scripts/tcp-cost.sh
set -euo pipefail

cd "$(dirname "$0")/.."
QUICK="${QUICK:-0}"
if [ "$QUICK" = "1" ]; then
    CONNECTIONS="${CONNECTIONS:-100}"
    DURATION="${DURATION:-1}"
    RUNS="${RUNS:-1}"
    STRACE_S="${STRACE_S:-0}"
    OUT="${OUT:-docs/results/issue17/tcp-cost-quick.txt}"
fi
RUNS="${RUNS:-3}"
DURATION="${DURATION:-5}"
WARMUP="${WARMUP:-1}"
CONNECTIONS="${CONNECTIONS:-15000}"
WINDOWS="${WINDOWS:-1 4 16}"
PORT="${PORT:-7990}"
STRACE_S="${STRACE_S:-3}"
TWIN_WORKERS="${TWIN_WORKERS:-1}"
NETNS="${NETNS:-1}"
OUT="${OUT:-docs/results/issue17/tcp-cost.txt}"
# Not exported by that name: an array does not survive the re-exec below.
read -r -a servers <<< "${SERVERS:-spillway twin floor}"
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
BIN="$TARGET_DIR/release"

# The command as given, for the report (the knobs that were set, then the script).
command_line() {
    local knob words=()
    for knob in QUICK RUNS DURATION WARMUP CONNECTIONS WINDOWS PORT STRACE_S TWIN_WORKERS \
        SERVERS NETNS OUT; do
        if printenv "$knob" > /dev/null; then
            words+=("$knob=\"$(printenv "$knob")\"")
        fi
    done
    echo "${words[*]} scripts/tcp-cost.sh"
}

if [ -z "${TCP_COST_INSIDE:-}" ]; then
    cargo build --release --locked -p spillway -p spillway-loadgen -p spillway-bench \
        --bin spillway --bin loadgen --bin baseline-serve --bin floor-serve
    TCP_COST_COMMAND="$(command_line)"
    export TCP_COST_COMMAND TCP_COST_INSIDE=1 CONNECTIONS DURATION RUNS STRACE_S OUT
    if [ "$NETNS" = "1" ]; then
        if unshare -n true 2> /dev/null; then
            exec unshare -n "$0" "$@"
        fi
        echo "tcp-cost.sh: cannot make a network namespace (unshare -n): measuring on the shared loopback, where nstat also counts other programs' segments" >&2
        NETNS=0
    fi
fi
if [ "$NETNS" = "1" ]; then
    ip link set lo up
fi

# 15,000 connections need about 15,100 descriptors in each process (server and loadgen
# are separate processes); each also raises its own soft limit as far as it needs.
ulimit -n "$(ulimit -Hn)"
if [ "$(ulimit -n)" != "unlimited" ] && [ "$(ulimit -n)" -lt $((CONNECTIONS + 100)) ]; then
    echo "tcp-cost.sh: $CONNECTIONS connections need $((CONNECTIONS + 100)) descriptors per process; the hard limit is $(ulimit -Hn)" >&2
    exit 1
fi
CLOCK_TICKS=$(getconf CLK_TCK)

work=$(mktemp -d)
# shellcheck source=lib/processes.sh
source scripts/lib/processes.sh
cells="$work/cells.jsonl"
: > "$cells"
next_port=$PORT

# Everything timed below is in µs since the epoch and done with bash builtins only: the
# servers and loadgen keep both cores busy, and a program started meanwhile (python3, even
# sleep's arithmetic) can take long enough to land outside the measured phase.
now_us() { echo "${EPOCHREALTIME/./}"; }

# Seconds (fractions allowed) in µs.
to_us() {
    local whole=${1%%.*} fraction=""
    [[ $1 == *.* ]] && fraction=${1#*.}
    fraction="${fraction}000000"
    echo $((${whole:-0} * 1000000 + 10#${fraction:0:6}))
}

# µs in seconds, as `sleep` and loadgen take them.
to_s() { printf '%d.%06d' $(($1 / 1000000)) $(($1 % 1000000)); }

# Sleeps until µs time $1 (at once if it has passed).
sleep_until() {
    local left=$(($1 - $(now_us)))
    if [ "$left" -gt 0 ]; then sleep "$(to_s "$left")"; fi
}

WARMUP_US=$(to_us "$WARMUP")
DURATION_US=$(to_us "$DURATION")
STRACE_US=$(to_us "$STRACE_S")
# The traced run's measured phase: the strace window, 0.5 s before it and 2 s after (loadgen
# must outlive it).
TRACED_RUN_US=$((STRACE_US + 2500000))
# The measured window leaves this much of the measured phase out at its start (the warm-up
# settling) and at its end (loadgen stopping on its own clock).
MARGIN_START_US=100000
MARGIN_END_US=250000
if [ "$DURATION_US" -lt $((MARGIN_START_US + MARGIN_END_US + 250000)) ]; then
    echo "tcp-cost.sh: DURATION=$DURATION leaves no measured window: 0.6 s at least" >&2
    exit 1
fi

# Prefixes each line of stdin with the time it arrived (s since the epoch, µs).
stamp_lines() {
    local line
    while IFS= read -r line; do printf '%s %s\n' "$EPOCHREALTIME" "$line"; done
}

# utime + stime of process $1, all threads, in clock ticks; fails when it has ended.
cpu_ticks() {
    local stat rest fields
    stat=$(< "/proc/$1/stat") || return 1
    # Fields after the command name (which may hold spaces): state is the 3rd field.
    rest=${stat##*) }
    read -r -a fields <<< "$rest"
    [ "${fields[0]}" != "Z" ] || return 1
    echo $((fields[11] + fields[12]))
}

# One sample for the measured window: time, server ticks, loadgen ticks, segments sent.
# Fails, naming what ended, when the server or loadgen is no longer running.
sample() {
    local at server client
    at=$EPOCHREALTIME
    server=$(cpu_ticks "$server_pid") || { echo "tcp-cost.sh: the server ended during the measured window" >&2; return 1; }
    client=$(cpu_ticks "$loadgen_pid") || { echo "tcp-cost.sh: loadgen ended before the measured window did (is the machine too busy for DURATION=$DURATION?)" >&2; return 1; }
    echo "$at $server $client $(segments_out)"
}

segments_out() { nstat -asz TcpOutSegs | awk '$1 == "TcpOutSegs" { print $2 }'; }

# Starts server $1 for window $2 on a fresh port; sets server_pid, server_log, port.
start_server() {
    local name=$1 window=$2
    port=$next_port
    next_port=$((next_port + 1))
    server_log="$work/$name-$window-$port"
    local listen="127.0.0.1:$port" max=$((CONNECTIONS + 100))
    case $name in
        spillway)
            "$BIN/spillway" serve --listen "$listen" --shards 1 --admin off \
                --max-connections "$max" > "$server_log.out" 2> "$server_log.err" &
            ;;
        twin)
            "$BIN/baseline-serve" --listen "$listen" --workers "$TWIN_WORKERS" \
                --concurrency-limit $((CONNECTIONS * window)) --max-connections "$max" \
                > "$server_log.out" 2> "$server_log.err" &
            ;;
        floor)
            "$BIN/floor-serve" --listen "$listen" --max-connections "$max" \
                > "$server_log.out" 2> "$server_log.err" &
            ;;
    esac
    server_pid=$!
    pids+=("$server_pid")
    for _ in $(seq 200); do
        cat "$server_log.out" "$server_log.err" | grep -q 'listening on' && return
        kill -0 "$server_pid" 2> /dev/null || break
        sleep 0.05
    done
    echo "tcp-cost.sh: $name did not start:" >&2
    cat "$server_log.err" >&2
    exit 1
}

stop_server() {
    kill -TERM "$server_pid" 2> /dev/null || true
    wait "$server_pid" 2> /dev/null || true
}

# Starts loadgen against $port at window $1 for $2 s measured; sets loadgen_pid and
# loadgen_log (.json: the report; .err: stderr, each line stamped).
start_loadgen() {
    local window=$1 duration=$2
    loadgen_log="$server_log.loadgen"
    "$BIN/loadgen" --target "tcp://127.0.0.1:$port" --closed-loop --window "$window" \
        --connections "$CONNECTIONS" --duration "$duration" --warmup "$WARMUP" --json \
        > "$loadgen_log.json" 2> >(stamp_lines > "$loadgen_log.err") &
    loadgen_pid=$!
    pids+=("$loadgen_pid")
}

# Waits for the end of loadgen's connect phase; sets measured_us, when its measured phase
# began (the connect line's arrival, stamped, plus the warm-up).
await_measured_phase() {
    local line
    until line=$(grep -m1 'connections to .* open in' "$loadgen_log.err" 2> /dev/null); do
        if ! kill -0 "$loadgen_pid" 2> /dev/null; then
            echo "tcp-cost.sh: loadgen ended before connecting:" >&2
            cat "$loadgen_log.err" >&2
            exit 1
        fi
        sleep 0.05
    done
    measured_us=$(($(to_us "${line%% *}") + WARMUP_US))
}

finish_loadgen() {
    if ! wait "$loadgen_pid"; then
        echo "tcp-cost.sh: loadgen failed:" >&2
        cat "$loadgen_log.err" >&2
        exit 1
    fi
    # The stamping loop writes the last lines after loadgen has exited.
    sleep 0.1
}

# One measured run of server $1 at window $2, run $3: one JSON line into $cells.
measure() {
    local name=$1 window=$2 run=$3
    start_server "$name" "$window"
    start_loadgen "$window" "$DURATION"
    await_measured_phase
    local before after
    sleep_until $((measured_us + MARGIN_START_US))
    before=$(sample)
    sleep_until $((measured_us + DURATION_US - MARGIN_END_US))
    after=$(sample)
    finish_loadgen
    stop_server
    python3 - "$name" "$window" "$run" "$before" "$after" "$CLOCK_TICKS" "$loadgen_log.json" \
        >> "$cells" <<'PY'
import json, sys
name, window, run, before, after, ticks, report = sys.argv[1:]
t0, server0, client0, segments0 = (float(x) for x in before.split())
t1, server1, client1, segments1 = (float(x) for x in after.split())
with open(report) as file:
    report = json.load(file)
rate = report["delivered_rate"]
messages = rate * (t1 - t0)
tcp = report.get("tcp") or {}
syscalls = tcp.get("syscalls") or {}
replies = tcp.get("replies") or 0
per = lambda value: value / messages if messages else float("nan")
print(json.dumps({
    "kind": "measure", "server": name, "window": int(window), "run": int(run),
    "delivered_rate": rate, "window_s": t1 - t0, "messages": messages,
    "server_cpu_us": per((server1 - server0) / float(ticks) * 1e6),
    "client_cpu_us": per((client1 - client0) / float(ticks) * 1e6),
    "segments": per(segments1 - segments0),
    "server_ticks": server1 - server0, "client_ticks": client1 - client0,
    # loadgen's own count, whole run (connect phase and warm-up included), untraced.
    "client_syscalls_own": (sum(syscalls.get(k, 0) for k in ("write", "read", "epoll_wait"))
                            / replies if replies else float("nan")),
    "reconciled": report.get("reconciled"),
    "refused": report.get("refused"), "shed": report.get("shed"),
}))
PY
}

# System calls per message on each side, server $1 at window $2: one JSON line into $cells.
# The count of each side's strace over the messages delivered while it was attached (the
# rate while both were traced, times its time attached).
trace() {
    local name=$1 window=$2
    start_server "$name" "$window"
    start_loadgen "$window" "$(to_s "$TRACED_RUN_US")"
    await_measured_phase
    sleep_until $((measured_us + 500000))
    # strace says on stderr when it has attached to each thread and when it detaches:
    # stamped, those lines bound the time each count covers.
    timeout -s INT "$STRACE_S" strace -c -f -p "$server_pid" -o "$server_log.strace" \
        2> >(stamp_lines > "$server_log.strace.err") &
    local tracing_server=$!
    timeout -s INT "$STRACE_S" strace -c -f -p "$loadgen_pid" -o "$loadgen_log.strace" \
        2> >(stamp_lines > "$loadgen_log.strace.err") &
    local tracing_client=$!
    wait "$tracing_server" "$tracing_client" || true
    # The stamping runs in process substitutions, which `wait` does not wait for: give
    # them up to 5 s to write strace's last (detach) lines.
    local tries
    for tries in $(seq 1 50); do
        grep -q ' detached$' "$server_log.strace.err" 2>/dev/null \
            && grep -q ' detached$' "$loadgen_log.strace.err" 2>/dev/null && break
        sleep 0.1
    done
    finish_loadgen
    stop_server
    python3 - "$name" "$window" "$loadgen_log.err" "$server_log.strace" "$loadgen_log.strace" \
        >> "$cells" <<'PY'
import json, re, sys
name, window, progress, server_trace, client_trace = sys.argv[1:]

def fail(why):
    sys.exit(f"tcp-cost.sh: {name}, window {window}, under strace: {why}")

def calls(path):
    """strace -c's table (calls by system call name, and their total), and the span its
    stamped stderr gives: from the last thread attached to the first detached."""
    by_name, total = {}, 0
    with open(path) as file:
        for line in file:
            fields = line.split()
            if len(fields) in (5, 6) and fields[-1] != "syscall" and fields[3].isdigit():
                if fields[-1] == "total":
                    total = int(fields[3])
                else:
                    by_name[fields[-1]] = int(fields[3])
    attached, detached = [], []
    with open(path + ".err") as file:
        for line in file:
            stamp = float(line.split()[0])
            # "Process N attached", or "... attached with T threads" for a process
            # with several threads (strace attaches to all of them at once).
            if re.search(r" attached( with \d+ threads)?$", line.rstrip()):
                attached.append(stamp)
            elif line.rstrip().endswith(" detached"):
                detached.append(stamp)
    if not attached or not detached:
        fail(f"strace did not say when it attached and detached ({path}.err)")
    return by_name, total, (max(attached), min(detached))

server_by_name, server_total, server_span = calls(server_trace)
client_by_name, client_total, client_span = calls(client_trace)
# The rate while both were traced, from loadgen's progress lines (cumulative `delivered`,
# one a second) inside that time only: strace slows both sides many times over, so a line
# from before it attached would count untraced messages.
start, end = max(server_span[0], client_span[0]), min(server_span[1], client_span[1])
points = []
with open(progress) as file:
    for line in file:
        match = re.search(r"totals: delivered (\d+)", line)
        stamp = float(line.split()[0])
        if match and start <= stamp <= end:
            points.append((stamp, int(match.group(1))))
if len(points) < 2:
    fail(f"fewer than two progress lines of loadgen while both were traced ({progress}); raise STRACE_S")
(first_at, first), (last_at, last) = points[0], points[-1]
rate = (last - first) / (last_at - first_at)
if rate <= 0:
    fail("no message delivered while traced")
server_messages = rate * (server_span[1] - server_span[0])
client_messages = rate * (client_span[1] - client_span[0])
top = lambda by_name, messages: {k: v / messages for k, v in
                                 sorted(by_name.items(), key=lambda item: -item[1])[:4]}
print(json.dumps({
    "kind": "trace", "server": name, "window": int(window),
    "server_syscalls": server_total / server_messages,
    "client_syscalls": client_total / client_messages,
    "server_top": top(server_by_name, server_messages),
    "client_top": top(client_by_name, client_messages),
}))
PY
}

for window in $WINDOWS; do
    for run in $(seq "$RUNS"); do
        for name in "${servers[@]}"; do
            echo "tcp-cost.sh: window $window, run $run, $name" >&2
            measure "$name" "$window" "$run"
        done
    done
    if [ "$STRACE_S" != "0" ]; then
        for name in "${servers[@]}"; do
            echo "tcp-cost.sh: window $window, $name under strace" >&2
            trace "$name" "$window"
        done
    fi
done

mkdir -p "$(dirname "$OUT")"
{
    echo "# scripts/tcp-cost.sh: what one message costs over TCP, spillway beside the tokio twin and the floor"
    echo "# command: ${TCP_COST_COMMAND:-scripts/tcp-cost.sh}"
    echo "# machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')), kernel $(uname -r); commit $(git rev-parse --short HEAD 2> /dev/null || echo unknown)"
    echo "# servers: spillway serve --shards 1 --admin off; baseline-serve --workers $TWIN_WORKERS --concurrency-limit connections x window; floor-serve (one thread)"
    echo "# loadgen --closed-loop --window W --connections $CONNECTIONS --duration $DURATION --warmup $WARMUP; $RUNS run(s) per cell, the servers taking turns"
    if [ "$NETNS" = "1" ]; then
        echo "# network: a namespace of its own (unshare -n): nstat counts this run's segments only"
    else
        echo "# network: the machine's loopback, shared: nstat also counts other programs' segments"
    fi
    python3 - "$cells" "$RUNS" "$STRACE_S" <<'PY'
import json, statistics, sys
path, runs, strace_s = sys.argv[1], int(sys.argv[2]), sys.argv[3]
cells = [json.loads(line) for line in open(path)]
servers = ["spillway", "twin", "floor"]
titles = {"spillway": "spillway", "twin": "tokio twin", "floor": "floor"}
windows = sorted({cell["window"] for cell in cells})

def fmt(value, digits):
    if value != value:  # NaN
        return "-"
    return f"{value:,.0f}" if digits == 0 else f"{value:.{digits}f}"

def summary(values, digits):
    if not values:
        return "-", float("nan")
    median = statistics.median(values)
    text = fmt(median, digits)
    if len(values) > 1:
        text += f" ({fmt(min(values), digits)}-{fmt(max(values), digits)})"
    return text, median

def ratio(a, b):
    return "-" if not (a == a and b == b) or b == 0 else f"{a / b:.2f}"

rows = [
    ("delivered msg/s", "delivered_rate", 0, "measure"),
    ("server CPU µs/msg", "server_cpu_us", 2, "measure"),
    ("client CPU µs/msg", "client_cpu_us", 2, "measure"),
    ("TCP segments/msg (both sides, loopback)", "segments", 2, "measure"),
    ("server system calls/msg (strace)", "server_syscalls", 2, "trace"),
    ("client system calls/msg (strace)", "client_syscalls", 2, "trace"),
    ("client system calls/msg (loadgen's own count, untraced)", "client_syscalls_own", 2, "measure"),
]
for window in windows:
    print()
    print(f"## window {window}")
    print()
    print(f"Medians of {runs} run(s), min-max in brackets; ratios are of the medians.")
    print()
    print("| per message | " + " | ".join(titles[s] for s in servers)
          + " | spillway/floor | spillway/twin |")
    print("|---|" + "---|" * (len(servers) + 2))
    for label, key, digits, kind in rows:
        if kind == "trace" and strace_s == "0":
            continue
        texts, medians = [], {}
        for server in servers:
            values = [c[key] for c in cells if c["kind"] == kind and c["server"] == server
                      and c["window"] == window and key in c]
            text, medians[server] = summary(values, digits)
            texts.append(text)
        ratios = [ratio(medians["spillway"], medians["floor"]),
                  ratio(medians["spillway"], medians["twin"])]
        print(f"| {label} | " + " | ".join(texts + ratios) + " |")
    traces = [c for c in cells if c["kind"] == "trace" and c["window"] == window]
    if traces:
        print()
        print("Where the system calls go, per message (strace -c, the four most frequent):")
        for trace in traces:
            for side in ("server", "client"):
                calls = ", ".join(f"{k} {v:.2f}" for k, v in trace[side + "_top"].items())
                print(f"- {titles[trace['server']]}, {side}: {calls}")
    refusing = sorted({titles[c["server"]] for c in cells if c["kind"] == "measure"
                       and c["window"] == window and (c["refused"] or c["shed"])})
    if refusing:
        print()
        print(f"Note: {', '.join(refusing)} refused or shed messages in this window (at few "
              "connections the per-connection rate limit, 500 msg/s by default, binds): the "
              "costs above are per delivered message and include the work of the refusals.")
    print()
    print("Each run:")
    for cell in cells:
        if cell["kind"] == "measure" and cell["window"] == window:
            print(f"- {titles[cell['server']]} run {cell['run']}: "
                  f"{cell['delivered_rate']:,.0f} msg/s, window {cell['window_s']:.2f} s, "
                  f"{cell['messages']:,.0f} messages; server {cell['server_cpu_us']:.2f} µs, "
                  f"client {cell['client_cpu_us']:.2f} µs, {cell['segments']:.2f} segments; "
                  f"reconciled {cell['reconciled']}, refused {cell['refused']}, shed {cell['shed']}")
print()
print("How: CPU is utime + stime from /proc/PID/stat (all threads; 10 ms ticks) over the "
      "measured window, divided by the messages delivered in it (loadgen's delivered msg/s "
      "x the window). Segments: nstat TcpOutSegs over the same window; on loopback both "
      "sides' segments count (Submits, Replies, ACKs).")
if strace_s != "0":
    print(f"System calls: a separate run per server and window with `strace -c -f -p` on "
          f"the server and on loadgen at once for {strace_s} s of the measured phase; "
          "calls over the messages delivered while attached (the rate from loadgen's "
          "progress lines within the traced time, times the time attached). strace slows "
          "both processes many times over, and a slower server reads and writes fuller "
          "batches, so these ratios can be lower than untraced ones (compare loadgen's own "
          "count); that run's throughput is not reported.")
else:
    print("System calls under strace: not measured in this run (QUICK=1 or STRACE_S=0).")
print("loadgen's own count: its write, read and epoll_wait calls over the replies it "
      "received, whole run (connect phase and warm-up included), without strace.")
PY
} | tee "$OUT"
# The figures behind the tables, one JSON object per run or traced run.
cp "$cells" "${OUT%.txt}.jsonl"
