#!/usr/bin/env bash
# Model-check the lock-free code with loom: every interleaving (up to the preemption bound)
# of the SPSC ring's producer and consumer, and of token-bucket checks racing a rate change.
# The models are the `loom_tests` modules in engine/src/ring/spsc.rs and
# engine/src/bucket/mod.rs; `--cfg loom` swaps crate::sync's atomics for loom's.
#
# LOOM_MAX_PREEMPTIONS=3: the bugs these models look for (a slot read before its write is
# published, an index published before the slot is freed, a lost or doubled TAT update) need
# at most two preemptions to show; three leaves a margin and keeps the run to a minute or two
# on 2 cores, where an unbounded search of the 6-attempt bucket model would not finish.
# Override it from the environment to search deeper.
set -euo pipefail
cd "$(dirname "$0")/.."
export LOOM_MAX_PREEMPTIONS="${LOOM_MAX_PREEMPTIONS:-3}"
export RUSTFLAGS="--cfg loom ${RUSTFLAGS:-}"
# A target directory of its own: --cfg loom rebuilds every crate, and sharing target/ would
# throw away the normal build each time.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}/loom"
cargo test --release -p spillway --lib -- loom_tests --test-threads=1 "$@"
