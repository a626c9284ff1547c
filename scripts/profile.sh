#!/usr/bin/env bash
# profile.sh: CPU profile of one loadgen run. Builds the release loadgen (which carries
# debug info), records it with `perf record -e cpu-clock -g` (a software clock event, so it
# works in VMs without hardware performance counters), then prints the top 25 symbols by
# self time (`perf report --stdio --no-children --sort symbol`). The output is also written
# to docs/results/profile-<scenario>.txt. perf.data goes to a temporary directory.
#
# Defaults: SCENARIO=saturation, DURATION=5 (s measured, plus 1 s warm-up), so about 10 s
# including the report. If perf is missing it is installed (apt-get install linux-perf)
# only when running as root; otherwise the script stops and says so.
#
# Usage: scripts/profile.sh                  (saturation, 5 s)
#        SCENARIO=overload-5x DURATION=3 scripts/profile.sh
set -euo pipefail

cd "$(dirname "$0")/.."
SCENARIO="${SCENARIO:-saturation}"
DURATION="${DURATION:-5}"
OUT="docs/results/profile-$SCENARIO.txt"

if ! command -v perf >/dev/null 2>&1; then
    if [ "$(id -u)" -eq 0 ]; then
        apt-get update && apt-get install -y linux-perf
    else
        echo "profile.sh: perf is not installed and this is not root; install it (e.g. apt-get install linux-perf) and run again" >&2
        exit 1
    fi
fi

cargo build --release -p spillway-loadgen

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

cmd=("${CARGO_TARGET_DIR:-target}/release/loadgen" --scenario "$SCENARIO" --duration "$DURATION")
perf record -e cpu-clock -g -o "$tmp/perf.data" -- "${cmd[@]}" > "$tmp/loadgen.txt" 2> "$tmp/loadgen.err"

mkdir -p docs/results
{
    echo "# perf profile: ${cmd[*]}"
    echo "# recorded with: perf record -e cpu-clock -g ($(perf --version))"
    echo "# machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'); commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    echo "# top 25 symbols by self time (head of): perf report --stdio --no-children --sort symbol -g none"
    echo
    perf report -i "$tmp/perf.data" --stdio --no-children --sort symbol -g none 2>/dev/null \
        | grep -v '^#' | grep -v '^$' | sed -e 's/[ -]*$//' | sed -n '1,25p'
    echo
    echo "# loadgen report for the profiled run:"
    cat "$tmp/loadgen.txt"
} | tee "$OUT"
