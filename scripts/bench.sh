#!/usr/bin/env bash
# bench.sh: builds the load generator and runs the scenario table (light, normal, high,
# heavy, saturation, recovery) and the overload table (overload-0.5x/1x/2x/5x,
# priority-mix, plus priority-mix at 0.1x as its unloaded reference) against the in-process
# engine, one scenario at a time, each with `--json`.
# Each JSON object goes to docs/results/loadgen-<scenario>.json; then
# docs/results/loadgen-tables.md is generated from those files (python3).
#
# Duration: DURATION seconds measured per scenario (default 10), plus per scenario 1 s
# warm-up and a short drain; the overload scenarios and priority-mix add a 1 s capacity
# calibration each, and recovery adds a 5 s saturation lead-in. At DURATION=10 the whole
# run takes about 2.5 minutes on a 2-core machine (about 1.5 minutes at DURATION=5).
#
# Usage: scripts/bench.sh            (DURATION=10)
#        DURATION=5 scripts/bench.sh
set -euo pipefail

cd "$(dirname "$0")/.."
DURATION="${DURATION:-10}"
OUT=docs/results
mkdir -p "$OUT"

SCENARIO_TABLE=(light normal high heavy saturation recovery)
OVERLOAD_TABLE=(overload-0.5x overload-1x overload-2x overload-5x priority-mix)

cargo build --release -p spillway-loadgen
LOADGEN="${CARGO_TARGET_DIR:-target}/release/loadgen"

# run_one NAME ARGS...: one loadgen run with --json into docs/results/loadgen-NAME.json.
# loadgen exits 1 when counts do not reconcile; keep the JSON and go on (the table shows
# the reconciled flag), but stop on any other failure.
run_one() {
    local name="$1"
    shift
    echo "== $name ($* --duration $DURATION)" >&2
    local status=0
    "$LOADGEN" "$@" --duration "$DURATION" --json > "$OUT/loadgen-$name.json.tmp" || status=$?
    if [ "$status" -ne 0 ] && [ "$status" -ne 1 ]; then
        echo "bench.sh: loadgen $* failed (exit $status)" >&2
        exit "$status"
    fi
    mv "$OUT/loadgen-$name.json.tmp" "$OUT/loadgen-$name.json"
}

start=$(date +%s)
for scenario in "${SCENARIO_TABLE[@]}" "${OVERLOAD_TABLE[@]}"; do
    run_one "$scenario" --scenario "$scenario"
done
# The priority mix's unloaded reference: the same mix, connections and handler cost at
# 0.1x the measured capacity, for "P0 p99 within 1.5x of its unloaded value".
run_one priority-mix-unloaded --scenario priority-mix --overload 0.1
elapsed=$(( $(date +%s) - start ))

CPU_MODEL=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
export DURATION OUT ELAPSED="$elapsed" NPROC="$(nproc)" CPU_MODEL \
    GIT_REV="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" \
    SCENARIOS="${SCENARIO_TABLE[*]}" OVERLOADS="${OVERLOAD_TABLE[*]}"

python3 - > "$OUT/loadgen-tables.md" <<'PY'
import json, os

out = os.environ["OUT"]
duration = os.environ["DURATION"]

def load(name):
    with open(os.path.join(out, f"loadgen-{name}.json")) as f:
        return json.load(f)

def num(value, digits=0):
    if value is None:
        return "-"
    if digits == 0:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"

def row(r, overload):
    submitted = r.get("submitted") or 0
    refused = r.get("refused") or 0
    refused_pct = 100.0 * refused / submitted if submitted else 0.0
    lat = r.get("latency_us") or {}
    ctl = r.get("control_latency_us") or {}
    rss = r.get("peak_rss_bytes") or 0
    cells = [
        r["scenario"],
        num(r.get("connections")),
        num(r.get("offered_rate")),
        num(r.get("achieved_rate")),
        num(r.get("delivered")),
        f"{num(refused)} ({refused_pct:.1f}%)",
        num(r.get("shed")),
        f"{num(lat.get('p50'), 1)} / {num(lat.get('p99'), 1)} / {num(lat.get('p999'), 1)}",
        num(r.get("generator_lag_us"), 1),
        "yes" if r.get("generator_fell_behind") else "no",
        num(ctl.get("p99"), 1),
        num(rss / (1024 * 1024), 1) if rss else "?",
    ]
    if overload:
        cap = r.get("capacity_rate")
        delivered_rate = r.get("delivered_rate")
        cells.insert(1, num(cap))
        cells.append(f"{100.0 * delivered_rate / cap:.1f}%" if cap and delivered_rate is not None else "-")
    if not r.get("reconciled", True):
        cells[0] += " (NOT reconciled)"
    return "| " + " | ".join(cells) + " |"

header = ["scenario", "connections", "offered msg/s", "achieved msg/s", "delivered",
          "refused (%)", "shed", "latency p50 / p99 / p99.9 (µs)",
          "generator lag p99 (µs)", "fell behind?", "control p99 (µs)", "peak RSS (MiB)"]

def table(names, overload):
    h = list(header)
    if overload:
        h.insert(1, "measured capacity msg/s")
        h.append("goodput (% of capacity)")
    lines = ["| " + " | ".join(h) + " |", "|" + "---|" * len(h)]
    lines += [row(load(n), overload) for n in names]
    return "\n".join(lines)

print("# loadgen results\n")
print(f"- Machine: {os.environ['NPROC']} CPUs (nproc), `{os.environ['CPU_MODEL']}`")
print(f"- Commit: {os.environ['GIT_REV']}")
print(f"- Command: `DURATION={duration} scripts/bench.sh`, which runs, for each scenario, "
      f"`target/release/loadgen --scenario <name> --duration {duration} --json` "
      f"(in-process engine, default production profile, 1 s warm-up not recorded)")
print(f"- Measured {duration} s per scenario; the whole run took {os.environ['ELAPSED']} s. "
      "Overload rows and priority-mix offer a multiple of the capacity measured by a 1 s "
      "closed-loop calibration run just before; recovery measures after a 5 s saturation lead-in.")
print("- refused (%) is refused / submitted in the measured phase; goodput is delivered msg/s / "
      "measured capacity; latency is from intended send time to the generator reading the "
      "completion (delivered messages only); fell behind? is loadgen's rule: open loop, "
      "generator lag p99 > 1 ms or unsent > 0 (the offered rate was then not fully offered on time).")
print("- Raw JSON per scenario: `docs/results/loadgen-<scenario>.json`.\n")
print("## Scenario table\n")
print(table(os.environ["SCENARIOS"].split(), False))
print("\n## Overload table\n")
print(table(os.environ["OVERLOADS"].split(), True))

loaded, unloaded = load("priority-mix"), load("priority-mix-unloaded")
print("\n## Priority mix per priority\n")
print(f"At {num(loaded.get('overload_factor'), 1)}x the measured capacity "
      f"({num(loaded.get('capacity_rate'))} msg/s), against the same mix at "
      f"{num(unloaded.get('overload_factor'), 1)}x (unloaded reference, "
      "`loadgen --scenario priority-mix --overload 0.1`).\n")
print("| priority | submitted | delivered | goodput (% of submitted) | refused | shed | "
      "p50 / p99 loaded (µs) | p99 unloaded (µs) | p99 loaded / unloaded |")
print("|---|---|---|---|---|---|---|---|---|")
for name in ("P0", "P1", "P2", "P3"):
    row_loaded = loaded["per_priority"][name]
    row_unloaded = unloaded["per_priority"][name]
    submitted = row_loaded["submitted"]
    lat = row_loaded["latency_us"]
    reference = row_unloaded["latency_us"]["p99"]
    ratio = (f"{lat['p99'] / reference:.2f}x"
             if row_loaded["delivered"] and reference else "-")
    print(f"| {name} | {num(submitted)} | {num(row_loaded['delivered'])} | "
          f"{100.0 * row_loaded['delivered'] / submitted if submitted else 0:.2f}% | "
          f"{num(row_loaded['refused'])} | {num(row_loaded['shed'])} | "
          f"{num(lat['p50'], 1) if row_loaded['delivered'] else '-'} / "
          f"{num(lat['p99'], 1) if row_loaded['delivered'] else '-'} | "
          f"{num(reference, 1)} | {ratio} |")
PY

echo "wrote $OUT/loadgen-tables.md (${elapsed} s of runs)" >&2
