#!/usr/bin/env bash
# Stable-Rust fuzz run, for CI: the property suites tests/tests/fuzz_*.rs at a fixed case
# count. They fuzz the wire decoders (fuzz_protocol), the configuration loader (fuzz_config)
# and the admission pipeline against a model (fuzz_admission); each file's header lists its
# properties. The nightly libFuzzer target in fuzz/ is separate (see fuzz/README.md).
#
# FUZZ_CASES: cases per property (default 2000; raise it for a longer search). A plain
# `cargo test` runs the same properties at a smoke count (tests/tests/fuzz_support/mod.rs),
# so this is the one full run in CI.
#
# It uses the test profile and the workspace's feature set, as the README test command does,
# so in CI it reuses that build and compiles nothing (`-p spillway-tests` would resolve
# features differently and rebuild spillway). Measured on the 2-core development machine,
# shared with other builds (load 5 to 6): 34 s wall, 39 s CPU at the default 2000 cases per
# property (admission 13 s, config 7 s, protocol 14 s); the three test binaries compile in
# 13 s when only they are out of date.
#
# A failing case is saved by proptest under tests/proptest-regressions/ (replayed first by
# every later run, so commit it with the fix) and printed here with its minimal input.
set -euo pipefail
cd "$(dirname "$0")/.."
export FUZZ_CASES="${FUZZ_CASES:-2000}"
regressions=tests/proptest-regressions
suites=(fuzz_protocol fuzz_config fuzz_admission)

saved_before=$(mktemp)
trap 'rm -f "$saved_before"' EXIT
cat "$regressions"/*.txt 2>/dev/null | sort >"$saved_before" || true

targets=()
for suite in "${suites[@]}"; do
    targets+=(--test "$suite")
done
echo "stable fuzz run: ${suites[*]}, $FUZZ_CASES cases per property"
status=0
cargo test --workspace --locked --no-fail-fast "${targets[@]}" || status=$?

if [ "$status" -ne 0 ]; then
    echo
    echo "=== failing cases saved under $regressions/ by this run (replayed first next time):"
    for file in "$regressions"/*.txt; do
        [ -e "$file" ] || continue
        new=$(sort "$file" | comm -13 "$saved_before" - | grep -v '^#' || true)
        if [ -n "$new" ]; then
            echo "--- $file"
            echo "$new"
        fi
    done
fi
exit "$status"
