#!/usr/bin/env bash
# Model-check the lock-free code with loom: every interleaving (up to the preemption bound)
# of the SPSC ring's producer and consumer, of token-bucket checks racing a rate change, of
# a stats seqlock reader racing its writer, of the shutdown hand-off (an engine stop
# racing a producer that submits and collects), and of the wake-up handshake of a producer
# blocked waiting for its completions (one shard, two shards, the engine stop: a lost
# wake-up is a deadlock loom reports). The models are the `loom_tests` modules in
# engine/src/ring/spsc.rs, engine/src/bucket/mod.rs, engine/src/metrics.rs and
# engine/src/ingress.rs;
# `--cfg loom` swaps crate::sync's atomics for loom's.
#
# LOOM_MAX_PREEMPTIONS=4: every bug scripts/loom-mutants.sh injects (a slot read before its
# write is published, an index published before the slot is freed, a lost TAT update, a
# torn snapshot) shows within two preemptions; four leaves a margin. Measured on 2 cores:
# about 1 s of model time at 3, 3.4 s at 4, 28 s at 6 before the wake-up models, which add
# about 4 s (the two-shard one caps itself at 3). Override it from the environment to search
# deeper.
set -euo pipefail
cd "$(dirname "$0")/.."
export LOOM_MAX_PREEMPTIONS="${LOOM_MAX_PREEMPTIONS:-4}"
export RUSTFLAGS="--cfg loom ${RUSTFLAGS:-}"
# A target directory of its own: --cfg loom rebuilds every crate, and sharing target/ would
# throw away the normal build each time.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}/loom"
cargo test --release -p spillway --lib -- loom_tests --test-threads=1 "$@"
