#!/usr/bin/env bash
# A real Prometheus scrapes `spillway serve` and must agree with the load generator
# (issue 15, docs/OPERATING.md).
#
#   scripts/prometheus-check.sh [--duration S] [--service-ns NS]
#
# Installs Debian's `prometheus` package when the binary is absent (apt-get update once,
# then apt-get install; sudo only when not root). Starts `spillway serve` (1 shard, each
# message costing NS ns of handler time, default 7 ms) with its admin endpoint, and a
# private Prometheus on a free loopback port, in a temporary directory, scraping
# /metrics every second. Drives a loadgen TCP run of S seconds (default 20), one
# connection in closed loop (one message in flight: the server sees the whole of each
# message's wait, none of it spent unread in a socket buffer behind the handler), and
# then asks Prometheus's HTTP query API, over W = S - 2 seconds
# inside loadgen's measured window, for
#   sum(rate(spillway_messages_delivered_total[W]))               against loadgen's delivered rate
#   histogram_quantile(Q, sum by (le) (rate(spillway_message_latency_seconds_bucket[W])))
#                                                                 against the same quantile
#     interpolated the same way (Prometheus's rule) from loadgen's latencies counted at
#     the server's bucket bounds (its JSON `latency_buckets`), for Q = 0.5 and 0.99,
# and fails unless each pair is within 5%. The server measures admission to completion,
# the client send to reply; the handler cost makes the loopback trip a small part of
# both. The defaults keep every latency inside one bucket, (5 ms, 10 ms]: a quantile near
# a bound (3 ms of handler put p99 at 5 ms) can land in the next bucket on one side only,
# by the loopback trip's 0.1-0.2 ms, and interpolate 10% apart. Everything it started
# is stopped on exit; about 40 s after the build.
set -euo pipefail
cd "$(dirname "$0")/.."

duration=20
service_ns=7000000
while [ $# -gt 0 ]; do
    case $1 in
        --duration) duration=$2; shift 2 ;;
        --service-ns) service_ns=$2; shift 2 ;;
        *) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
    esac
done

source scripts/lib/debian.sh
if missing prometheus; then
    as_root apt-get update -qq >&2
    as_root apt-get install -y prometheus --no-install-recommends >&2
fi

cargo build --locked -q -p spillway --bin spillway -p spillway-loadgen --bin loadgen
work=$(mktemp -d "${TMPDIR:-/tmp}/spillway-prometheus.XXXXXX")
# cleanup (on EXIT) and await_line.
source scripts/lib/processes.sh

timeout $((duration + 60)) target/debug/spillway serve --listen 127.0.0.1:0 --admin 127.0.0.1:0 \
    --shards 1 --service-ns "$service_ns" >"$work/serve.log" 2>&1 &
pids+=("$!")
listen_at=$(await_line "$work/serve.log" "listening on")
admin_at=$(await_line "$work/serve.log" "admin endpoint on")
admin_at=${admin_at#http://}

prometheus_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$work/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  scrape_timeout: 900ms
  evaluation_interval: 1s
scrape_configs:
  - job_name: spillway
    static_configs:
      - targets: ["$admin_at"]
EOF
timeout $((duration + 60)) prometheus --config.file="$work/prometheus.yml" \
    --storage.tsdb.path="$work/data" --web.listen-address="127.0.0.1:$prometheus_port" \
    --log.level=warn >"$work/prometheus.log" 2>&1 &
pids+=("$!")

export PROMETHEUS="http://127.0.0.1:$prometheus_port"
# Ready once it has scraped spillway once.
python3 - <<'EOF' || { cat "$work/prometheus.log" >&2; exit 1; }
import json, os, time, urllib.parse, urllib.request
base = os.environ["PROMETHEUS"]
for _ in range(300):
    try:
        query = urllib.parse.urlencode({"query": 'up{job="spillway"}'})
        with urllib.request.urlopen(f"{base}/api/v1/query?{query}", timeout=1) as answer:
            result = json.load(answer)["data"]["result"]
            if result and result[0]["value"][1] == "1":
                raise SystemExit(0)
    except OSError:
        pass
    time.sleep(0.1)
raise SystemExit("prometheus never scraped spillway's /metrics")
EOF

echo "--- loadgen: ${duration} s, one connection in closed loop, against spillway serve (handler ${service_ns} ns); Prometheus scrapes http://$admin_at/metrics every second"
started=$(date +%s.%N)
(ulimit -n 20000 2>/dev/null || true; target/debug/loadgen --target "tcp://$listen_at" \
    --closed-loop --connections 1 --duration "$duration" --warmup 2 --json) >"$work/loadgen.json"
ended=$(date +%s.%N)

export LOADGEN_JSON="$work/loadgen.json" STARTED="$started" ENDED="$ended" DURATION="$duration"
python3 - <<'EOF'
import json, math, os, urllib.parse, urllib.request

base = os.environ["PROMETHEUS"]
report = json.load(open(os.environ["LOADGEN_JSON"]))
# The measured window is the run's last `duration` seconds before the generator stopped
# sending. Prometheus is asked about nearly all of it, the same messages loadgen counted:
# the range ends 1 s before the generator exited and starts 1 s after the window began.
ended, duration = float(os.environ["ENDED"]), float(os.environ["DURATION"])
at = ended - 1.0
window = f"{int(duration) - 2}s"
assert ended - float(os.environ["STARTED"]) >= duration, "the run was shorter than its window"
if report["generator_fell_behind"]:
    raise SystemExit("loadgen fell behind its schedule (the machine was too busy): its latencies "
                     "count the delay, the server's cannot; run the check on a quieter machine")

def query(expression):
    arguments = urllib.parse.urlencode({"query": expression, "time": f"{at:.3f}"})
    with urllib.request.urlopen(f"{base}/api/v1/query?{arguments}", timeout=5) as answer:
        body = json.load(answer)
    result = body["data"]["result"]
    if not result:
        raise SystemExit(f"prometheus has no value for {expression}")
    return float(result[0]["value"][1])

def quantile(q, cumulative):
    """Prometheus's histogram_quantile over (upper bound, cumulative count) pairs."""
    total = cumulative[-1][1]
    rank = q * total
    previous_bound, previous_count = 0.0, 0
    for bound, count in cumulative:
        if count >= rank:
            if bound is None or math.isinf(bound):
                return previous_bound
            in_bucket = count - previous_count
            return previous_bound + (bound - previous_bound) * (rank - previous_count) / in_bucket
        previous_bound, previous_count = bound, count
    return previous_bound

failures = []
def compare(name, scraped, generated):
    gap = abs(scraped - generated) / generated if generated else float("inf")
    verdict = "ok" if gap <= 0.05 else "FAIL"
    print(f"{name:<34} prometheus {scraped:>12.6g}   loadgen {generated:>12.6g}   {gap * 100:5.2f}% {verdict}")
    if verdict != "ok":
        failures.append(name)

assert report["reconciled"], report["reconcile_errors"]
compare("delivered msg/s", query(f"sum(rate(spillway_messages_delivered_total[{window}]))"),
        report["delivered_rate"])
buckets = [(math.inf if bound is None else bound, count) for bound, count in report["latency_buckets"]]
for q in (0.5, 0.99):
    scraped = query(f"histogram_quantile({q}, sum by (le) (rate(spillway_message_latency_seconds_bucket[{window}])))")
    compare(f"latency p{q * 100:g} (s, from buckets)", scraped, quantile(q, buckets))
print(f"loadgen's own latency (HDR, client side): p50 {report['latency_us']['p50']} us, p99 {report['latency_us']['p99']} us")
if failures:
    raise SystemExit(f"prometheus and loadgen disagree on: {', '.join(failures)}")
print("prometheus agrees with loadgen (within 5%)")
EOF
