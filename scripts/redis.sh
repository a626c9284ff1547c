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
#   scripts/redis.sh stop --dir DIR
#       SIGTERM to the instance whose pid file is in DIR, SIGKILL after 5 s, then removes DIR.
#   scripts/redis.sh kill --dir DIR
#       SIGKILL to that instance now (a crash), waiting until it is gone; keeps DIR.
set -euo pipefail

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2
    exit 2
}

install_if_absent() {
    command -v redis-server >/dev/null && command -v redis-cli >/dev/null && return
    local sudo=()
    [ "$(id -u)" -eq 0 ] || sudo=(sudo)
    echo "redis-server is absent: installing Debian's package" >&2
    "${sudo[@]}" apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq redis-server >&2
}

# The pid in DIR's pid file, if that process is alive.
running_pid() {
    local dir=$1 pid
    [ -s "$dir/redis.pid" ] || return 1
    pid=$(<"$dir/redis.pid")
    kill -0 "$pid" 2>/dev/null || return 1
    echo "$pid"
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
    local dir=$1 pid
    if pid=$(running_pid "$dir"); then
        kill -TERM "$pid" 2>/dev/null || true
        await_exit "$pid" || { kill -KILL "$pid" 2>/dev/null || true; await_exit "$pid" || true; }
    fi
    # Only a directory this script made: it holds the pid file or the log.
    if [ -e "$dir/redis.pid" ] || [ -e "$dir/redis.log" ]; then
        rm -rf "$dir"
    fi
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
    rm -f "$dir/redis.pid"
    # setsid: the server outlives this script and its terminal's signals. No configuration
    # file: every setting is on the command line.
    setsid redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no \
        --dir "$dir" --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" --daemonize no \
        </dev/null >/dev/null 2>&1 &
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
    install_if_absent
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
    if [ -n "$port" ]; then
        launch "$dir" "$port" || {
            echo "redis-server did not start on port $port; its log:" >&2
            cat "$dir/redis.log" >&2 2>/dev/null || true
            exit 1
        }
    else
        # A random port in 20000..59999 (below Linux's default ephemeral range); another try
        # when it is taken. 20 tries: each fails fast.
        local started=""
        for _ in $(seq 20); do
            port=$((20000 + RANDOM % 40000))
            : >"$dir/redis.log"
            if launch "$dir" "$port"; then started=1; break; fi
            grep -q "Address already in use" "$dir/redis.log" 2>/dev/null || break
        done
        [ -n "$started" ] || {
            echo "redis-server did not start; its log:" >&2
            cat "$dir/redis.log" >&2 2>/dev/null || true
            exit 1
        }
    fi
    trap - EXIT INT TERM
    local url="redis://127.0.0.1:$port"
    [ -z "$url_file" ] || echo "$url" >"$url_file"
    echo "redis-server $(redis-server --version | grep -oE '[0-9]+\.[0-9]+\.[0-9]+' | head -n1) (pid $(<"$dir/redis.pid")) on port $port in $dir" >&2
    echo "$url"
}

case ${1:-} in
    start) shift; start "$@" ;;
    stop | kill)
        [ "${2:-}" = "--dir" ] && [ -n "${3:-}" ] || usage
        if [ "$1" = stop ]; then stop_instance "$3"; else kill_instance "$3"; fi
        ;;
    *) usage ;;
esac
