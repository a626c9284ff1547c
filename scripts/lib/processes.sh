# Sourced by the scripts that start processes and wait for their log lines
# (workers-ci.sh, prometheus-check.sh). The caller sets `work` (a temporary directory)
# before any exit can happen, and appends each background process's pid to `pids`.

pids=()

# Stops every process in `pids` and removes `work`; installed for EXIT.
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# Waits up to 10 s for `file` to have a line matching `pattern`; prints its first word
# after the pattern.
await_line() {
    local file=$1 pattern=$2
    for _ in $(seq 200); do
        if grep -q "$pattern" "$file" 2>/dev/null; then
            grep -m1 -o "$pattern [^ ]*" "$file" | awk '{print $NF}'
            return
        fi
        sleep 0.05
    done
    echo "timed out waiting for '$pattern' in $file:" >&2
    cat "$file" >&2
    return 1
}
