#!/usr/bin/env bash
# rss-flat.sh: is memory flat under sustained overload (SPEC 9, issue #6)? Runs one loadgen
# scenario (default overload-2x) for DURATION seconds measured (default 60) and samples the
# process's resident set (VmRSS, and the peak VmHWM) from /proc once a second. Prints the
# samples and the verdict: peak RSS at the end against the RSS at 10 s into the measured
# phase, which must be within 5%.
#
# Usage: scripts/rss-flat.sh                       (overload-2x, 60 s)
#        SCENARIO=overload-5x DURATION=120 scripts/rss-flat.sh
# Writes docs/results/rss-<scenario>.txt (the samples) and prints the summary.
set -euo pipefail

cd "$(dirname "$0")/.."
SCENARIO="${SCENARIO:-overload-2x}"
DURATION="${DURATION:-60}"
OUT=docs/results
mkdir -p "$OUT"
SAMPLES="$OUT/rss-$SCENARIO.txt"

cargo build --release -p spillway-loadgen
"${CARGO_TARGET_DIR:-target}/release/loadgen" --scenario "$SCENARIO" --duration "$DURATION" --json \
    >"$OUT/rss-$SCENARIO.json" 2>/dev/null &
pid=$!
start_ns=$(date +%s%N)
echo "# seconds_since_start vm_rss_kib vm_hwm_kib  (loadgen --scenario $SCENARIO --duration $DURATION)" >"$SAMPLES"
while kill -0 "$pid" 2>/dev/null; do
    if status=$(cat "/proc/$pid/status" 2>/dev/null); then
        rss=$(awk '/^VmRSS:/ {print $2}' <<<"$status")
        hwm=$(awk '/^VmHWM:/ {print $2}' <<<"$status")
        elapsed_ms=$(( ($(date +%s%N) - start_ns) / 1000000 ))
        if [[ -n "$rss" ]]; then
            printf '%d.%03d %s %s\n' $((elapsed_ms / 1000)) $((elapsed_ms % 1000)) "$rss" "$hwm" >>"$SAMPLES"
        fi
    fi
    sleep 1
done
wait "$pid"

# The measured phase starts after the calibration (about 1.2 s) and the 1 s warm-up; take
# the sample nearest to 10 s into it, and the last peak.
python3 - "$SAMPLES" <<'PY'
import sys
rows = [line.split() for line in open(sys.argv[1]) if not line.startswith("#")]
rows = [(float(t), int(rss), int(hwm)) for t, rss, hwm in rows]
lead_in_s = 2.2
at_10 = min(rows, key=lambda row: abs(row[0] - (lead_in_s + 10)))
last = rows[-1]
print(f"samples: {len(rows)} over {last[0]:.0f} s")
print(f"RSS at 10 s into the measured phase: {at_10[1] / 1024:.1f} MiB (t={at_10[0]:.0f} s)")
print(f"peak RSS by the end: {last[2] / 1024:.1f} MiB; RSS at the end {last[1] / 1024:.1f} MiB")
growth = (last[2] - at_10[1]) / at_10[1] * 100
print(f"peak vs RSS at 10 s: {growth:+.1f}% ({'within' if growth <= 5 else 'OVER'} the 5% bound)")
PY
