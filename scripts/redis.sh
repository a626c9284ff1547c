#!/usr/bin/env bash
# A private redis-server on loopback, for the fleet-wide quota tests (tests/tests/global_lease.rs,
# scripts/redis-ci.sh) and a local fleet. Debian's `redis-server` package is installed when
# the binary is absent (apt-get update once, then apt-get install; sudo only when not root).
#
#   scripts/redis.sh start [--dir DIR] [--port PORT] [--url-file FILE]
#       Starts one instance on 127.0.0.1:PORT (a free port when not given: the script tries
#       random ones until one binds), with no persistence (--save '' --appendonly no), its
#       pid file and log in DIR (a fresh temporary directory when not given). Waits until it
#       answers PING, prints `redis://127.0.0.1:PORT` on stdout, and writes it to FILE when
#       given; says where DIR is on stderr. Fails, leaving nothing running, when the server
#       does not answer within 10 s. A DIR left by `kill` with `--port` of that instance
#       starts it again on the same address.
#   scripts/redis.sh start-cluster --dir DIR [--ports P1,P2,P3] [--url-file FILE]
#       Starts a Redis Cluster of three primaries on 127.0.0.1 (free ports when not given;
#       each port + 10000, its cluster bus, must be free too), each cluster-enabled with its
#       cluster-config-file, pid file and log in DIR/node-1..3 and no persistence; joins them
#       with `redis-cli --cluster create` (no replicas) and waits until every node says
#       cluster_state:ok. Prints the three URLs comma-separated (the `[global] redis` seeds of
#       `cluster = true`) and writes them to FILE when given. Fails, leaving nothing
#       running, when the cluster is not up within 10 s.
#   scripts/redis.sh stop --dir DIR
#       SIGTERM to the instance whose pid file is in DIR, or to each node of a cluster started
#       there, SIGKILL after 5 s, then removes DIR.
#   scripts/redis.sh kill --dir DIR
#       SIGKILL to that instance now (a crash), waiting until it is gone; keeps DIR.
set -euo pipefail
# shellcheck source=lib/debian.sh
source "$(dirname "$0")/lib/debian.sh"

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2
    exit 2
}


# The pid in DIR's pid file, if that process is alive.
running_pid() {
    live_pid "$1/redis.pid"
}

# Waits up to 5 s for PID to be gone.
await_exit() {
    local pid=$1
    for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    return 1
}

stop_instance() {
    local dir=$1 pid node made=""
    # A cluster's nodes live in DIR/node-N; a single instance in DIR itself.
    for node in "$dir" "$dir"/node-*; do
        [ -d "$node" ] || continue
        if pid=$(running_pid "$node"); then
            kill -TERM "$pid" 2>/dev/null || true
            await_exit "$pid" || { kill -KILL "$pid" 2>/dev/null || true; await_exit "$pid" || true; }
        fi
        # Only a directory this script made: it holds the pid file or the log.
        if [ -e "$node/redis.pid" ] || [ -e "$node/redis.log" ]; then made=1; fi
    done
    [ -z "$made" ] || rm -rf "$dir"
}

kill_instance() {
    local dir=$1 pid
    pid=$(running_pid "$dir") || { echo "no redis-server from $dir is running" >&2; exit 1; }
    kill -KILL "$pid"
    await_exit "$pid" || { echo "redis-server $pid outlived SIGKILL for 5 s" >&2; exit 1; }
    rm -f "$dir/redis.pid"
}

# Starts redis-server on PORT in DIR; succeeds once it answers PING, fails when it exits first
# (its log then says why) or stays silent for 10 s.
launch() {
    local dir=$1 port=$2
    shift 2
    rm -f "$dir/redis.pid"
    # setsid: the server outlives this script and its terminal's signals. No configuration
    # file: every setting is on the command line (the rest of the arguments add to them).
    setsid redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no \
        --dir "$dir" --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" --daemonize no \
        "$@" </dev/null >/dev/null 2>&1 &
    local launcher=$!
    # Not this shell's job: no "Killed" notice when a start that lost its port kills it.
    disown "$launcher"
    # The launcher is the server itself; the pid file may come later than PONG.
    echo "$launcher" >"$dir/redis.pid"
    for _ in $(seq 200); do
        if [ "$(redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null || true)" = PONG ]; then
            # Ours, not another server that already had the port.
            redis-cli -h 127.0.0.1 -p "$port" info server 2>/dev/null | tr -d '\r' |
                grep -qx "process_id:$launcher" && return 0
            kill -KILL "$launcher" 2>/dev/null || true
            echo "port $port: Address already in use (by another redis-server)" >>"$dir/redis.log"
            return 1
        fi
        kill -0 "$launcher" 2>/dev/null || return 1
        sleep 0.05
    done
    kill -KILL "$launcher" 2>/dev/null || true
    return 1
}

# Starts redis-server in DIR on PORT, or on a free port when PORT is empty, with the rest of
# the arguments added; sets launched_port. Says why on stderr (the log) when it cannot.
launched_port=""
launch_on() {
    local dir=$1 port=$2
    shift 2
    if [ -n "$port" ]; then
        launch "$dir" "$port" "$@" || {
            echo "redis-server did not start on port $port; its log:" >&2
            cat "$dir/redis.log" >&2 2>/dev/null || true
            return 1
        }
    else
        # A random port in 20000..49999 (below Linux's default ephemeral range, and so is a
        # cluster node's bus port, 10000 up); another try when it is taken. 20 tries: each
        # fails fast.
        local started=""
        for _ in $(seq 20); do
            port=$((20000 + RANDOM % 30000))
            : >"$dir/redis.log"
            if launch "$dir" "$port" "$@"; then started=1; break; fi
            grep -q "Address already in use" "$dir/redis.log" 2>/dev/null || break
        done
        [ -n "$started" ] || {
            echo "redis-server did not start; its log:" >&2
            cat "$dir/redis.log" >&2 2>/dev/null || true
            return 1
        }
    fi
    launched_port=$port
}

# Debian's redis-server package (redis-server and redis-cli), when either is absent.
install_redis() {
    if missing redis-server redis-cli; then
        as_root apt-get update -qq >&2
        as_root apt-get install -y redis-server --no-install-recommends >&2
    fi
}

start() {
    local dir="" port="" url_file=""
    while [ $# -gt 0 ]; do
        case $1 in
            --dir) dir=$2; shift 2 ;;
            --port) port=$2; shift 2 ;;
            --url-file) url_file=$2; shift 2 ;;
            *) usage ;;
        esac
    done
    install_redis
    if [ -z "$dir" ]; then
        dir=$(mktemp -d "${TMPDIR:-/tmp}/spillway-redis.XXXXXX")
    else
        mkdir -p "$dir"
        if running_pid "$dir" >/dev/null; then
            echo "a redis-server from $dir is already running" >&2
            exit 1
        fi
    fi
    # Until the server answers, any failure stops it and removes DIR.
    trap 'stop_instance "$dir"' EXIT
    trap 'exit 1' INT TERM
    launch_on "$dir" "$port" || exit 1
    port=$launched_port
    trap - EXIT INT TERM
    local url="redis://127.0.0.1:$port"
    [ -z "$url_file" ] || echo "$url" >"$url_file"
    echo "redis-server $(redis-server --version | grep -oE '[0-9]+\.[0-9]+\.[0-9]+' | head -n1) (pid $(<"$dir/redis.pid")) on port $port in $dir" >&2
    echo "$url"
}

start_cluster() {
    local dir="" ports="" url_file=""
    while [ $# -gt 0 ]; do
        case $1 in
            --dir) dir=$2; shift 2 ;;
            --ports) ports=$2; shift 2 ;;
            --url-file) url_file=$2; shift 2 ;;
            *) usage ;;
        esac
    done
    [ -n "$dir" ] || usage
    local wanted=()
    if [ -n "$ports" ]; then
        IFS=, read -r -a wanted <<<"$ports"
        [ "${#wanted[@]}" -eq 3 ] || { echo "--ports takes three ports, got $ports" >&2; exit 2; }
    else
        wanted=("" "" "")
    fi
    install_redis
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    if compgen -G "$dir/node-*" >/dev/null; then
        echo "$dir already holds cluster nodes: stop them first" >&2
        exit 1
    fi
    # Until the cluster is up, any failure stops every node and removes DIR.
    trap 'stop_instance "$dir"' EXIT
    trap 'exit 1' INT TERM
    local started=() index=0 node want
    for want in "${wanted[@]}"; do
        index=$((index + 1))
        node=$dir/node-$index
        mkdir "$node"
        launch_on "$node" "$want" --cluster-enabled yes \
            --cluster-config-file "$node/nodes.conf" || exit 1
        started+=("$launched_port")
    done
    local addresses=() urls=() port
    for port in "${started[@]}"; do
        addresses+=("127.0.0.1:$port")
        urls+=("redis://127.0.0.1:$port")
    done
    redis-cli --cluster create "${addresses[@]}" --cluster-replicas 0 --cluster-yes \
        >"$dir/cluster-create.log" 2>&1 || {
        echo "redis-cli --cluster create failed:" >&2
        cat "$dir/cluster-create.log" >&2
        exit 1
    }
    local ok
    for _ in $(seq 200); do
        ok=0
        for port in "${started[@]}"; do
            redis-cli -p "$port" cluster info 2>/dev/null | tr -d '\r' |
                grep -qx 'cluster_state:ok' && ok=$((ok + 1))
        done
        [ "$ok" -eq 3 ] && break
        sleep 0.05
    done
    [ "$ok" -eq 3 ] || { echo "the cluster is not ok after 10 s" >&2; exit 1; }
    trap - EXIT INT TERM
    local joined
    joined=$(IFS=,; echo "${urls[*]}")
    [ -z "$url_file" ] || echo "$joined" >"$url_file"
    echo "redis cluster of three primaries (ports ${started[*]}) in $dir" >&2
    echo "$joined"
}

case ${1:-} in
    start) shift; start "$@" ;;
    start-cluster) shift; start_cluster "$@" ;;
    stop | kill)
        [ "${2:-}" = "--dir" ] && [ -n "${3:-}" ] || usage
        if [ "$1" = stop ]; then stop_instance "$3"; else kill_instance "$3"; fi
        ;;
    *) usage ;;
esac
