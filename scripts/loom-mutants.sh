#!/usr/bin/env bash
# Shows that the loom models bite: applies one deliberate bug at a time to a scratch copy of
# the engine (never to this tree), runs scripts/loom.sh there, and expects it to FAIL.
# Known gap: removing `is_abandoned`'s Acquire fence is not caught, because loom's
# `Arc::strong_count` synchronizes by itself (std's is a Relaxed load).
# Prints one line per mutant; exits non-zero if any mutant survives. Not run by CI (each
# mutant rebuilds the engine under --cfg loom: about 15 s each on 2 cores).
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
scratch=$(mktemp -d /tmp/spillway-mutants.XXXX)
trap 'rm -rf "$scratch"' EXIT
survivors=0

# name | file | exact text | replacement
mutants=(
  "producer publishes tail Relaxed|engine/src/ring/spsc.rs|self.shared.tail.store(tail, Ordering::Release);|self.shared.tail.store(tail, Ordering::Relaxed);"
  "consumer publishes head Relaxed|engine/src/ring/spsc.rs|self.shared.head.store(head, Ordering::Release);|self.shared.head.store(head, Ordering::Relaxed);"
  "producer overfills by one|engine/src/ring/spsc.rs|self.capacity - self.tail.wrapping_sub(self.head_cached)|self.capacity + 1 - self.tail.wrapping_sub(self.head_cached)"
  "items left are never dropped|engine/src/ring/spsc.rs|while head != tail {|while head != tail && false {"
  "seqlock writer closes with Relaxed|engine/src/metrics.rs|.store(sequence.wrapping_add(2), Ordering::Release);|.store(sequence.wrapping_add(2), Ordering::Relaxed);"
  "seqlock reader drops its Acquire fence|engine/src/metrics.rs|                fence(Ordering::Acquire);|                let _ = Ordering::Acquire;"
  "seqlock writer drops its Release fence|engine/src/metrics.rs|        fence(Ordering::Release);|        let _ = Ordering::Release;"
  "consumer loads tail Relaxed|engine/src/ring/spsc.rs|self.tail_cached = self.shared.tail.load(Ordering::Acquire);|self.tail_cached = self.shared.tail.load(Ordering::Relaxed);"
  "producer loads head Relaxed|engine/src/ring/spsc.rs|self.head_cached = self.shared.head.load(Ordering::Acquire);|self.head_cached = self.shared.head.load(Ordering::Relaxed);"
  "seqlock reader's first load Relaxed|engine/src/metrics.rs|let before = self.sequence.load(Ordering::Acquire);|let before = self.sequence.load(Ordering::Relaxed);"
  "seqlock reader ignores the odd sequence|engine/src/metrics.rs|if before % 2 == 0 {|if before < u64::MAX {"
  "consumer retires before its producer is gone|engine/src/ring/spsc.rs|self.is_abandoned() && self.is_empty()|self.is_empty() && self.is_abandoned()"
  "ingress never refuses its orphaned ring|engine/src/ingress.rs|        if stopped {|        if stopped && false {"
  "shard drops its ring instead of leaving it|engine/src/shard/shared.rs|*place = Some(self.submissions);|drop(self.submissions);"
  "bucket update is a plain store|engine/src/bucket/mod.rs|match self.tat_ns.compare_exchange_weak(|self.tat_ns.store(new_tat_ns, Ordering::Relaxed); return Ok(()); #[allow(unreachable_code)] match self.tat_ns.compare_exchange_weak("
)

for mutant in "${mutants[@]}"; do
  IFS='|' read -r name file from to <<<"$mutant"
  rm -rf "$scratch/tree"
  mkdir -p "$scratch/tree"
  (cd "$root" && git ls-files -z | xargs -0 cp --parents -t "$scratch/tree")
  if ! python3 - "$scratch/tree/$file" "$from" "$to" <<'PY'
import sys
path, old, new = sys.argv[1], sys.argv[2], sys.argv[3]
text = open(path).read()
if old not in text:
    sys.exit(f"mutation site not found in {path}: {old}")
open(path, "w").write(text.replace(old, new, 1))
PY
  then
    echo "MISSING:  $name (the code changed; update the mutation site)"
    survivors=$((survivors + 1))
    continue
  fi
  CARGO_TARGET_DIR="$root/target/mutants" "$scratch/tree/scripts/loom.sh" >"$scratch/log" 2>&1
  # Caught means a model failed: a loom causality report or a failed assertion in a test,
  # not a build error or a missing file.
  failed_tests=$(grep -oE '^test [a-z_:]+ \.\.\. FAILED' "$scratch/log" | sed -E 's/^test ([a-z_:]+) .*/\1/' | sed -E 's/.*:://' | paste -sd, -)
  if [ -n "$failed_tests" ]; then
    echo "caught:   $name (by $failed_tests)"
  else
    echo "SURVIVED: $name"
    tail -5 "$scratch/log" | sed 's/^/    /'
    survivors=$((survivors + 1))
  fi
done
exit "$survivors"
