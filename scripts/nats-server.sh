#!/usr/bin/env bash
# A private nats-server on loopback, the peer of `workers-vs-nats` (README, "Measured against
# NATS"). Debian's `nats-server` package is installed when the binary is absent (apt-get
# update once, then apt-get install; sudo only when not root).
#
#   scripts/nats-server.sh start [--dir DIR] [--url-file FILE]
#       Starts one instance on a free 127.0.0.1 port (the server picks it: -p -1), with its
#       pid file, log and ports file in DIR (a fresh temporary directory when not given) and
#       no configuration file at all. Prints `nats://127.0.0.1:PORT` on stdout, and writes
#       it to FILE when given; says where DIR is on stderr. Fails, leaving nothing running,
#       when the server does not report its port within 10 s.
#   scripts/nats-server.sh stop --dir DIR
#       SIGTERM to the instance whose pid file is in DIR, SIGKILL after 5 s, then removes DIR.
set -euo pipefail
# shellcheck source=lib/debian.sh
source "$(dirname "$0")/lib/debian.sh"

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2
    exit 2
}


# The pid in DIR's pid file, if that process is alive.
running_pid() {
    live_pid "$1/nats.pid"
}

stop_instance() {
    local dir=$1 pid
    if pid=$(running_pid "$dir"); then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
    fi
    # Only a directory this script made: it holds the pid file or the log.
    if [ -e "$dir/nats.pid" ] || [ -e "$dir/nats.log" ]; then
        rm -rf "$dir"
    fi
}

start() {
    local dir="" url_file=""
    while [ $# -gt 0 ]; do
        case $1 in
            --dir) dir=$2; shift 2 ;;
            --url-file) url_file=$2; shift 2 ;;
            *) usage ;;
        esac
    done
    if missing nats-server; then
        as_root apt-get update -qq >&2
        as_root apt-get install -y nats-server --no-install-recommends >&2
    fi
    if [ -z "$dir" ]; then
        dir=$(mktemp -d "${TMPDIR:-/tmp}/spillway-nats.XXXXXX")
    else
        mkdir -p "$dir"
        if running_pid "$dir" >/dev/null; then
            echo "a nats-server from $dir is already running" >&2
            exit 1
        fi
    fi
    # Until the server has said where it listens, any failure stops it and removes DIR.
    trap 'stop_instance "$dir"' EXIT
    trap 'exit 1' INT TERM
    # setsid: the server outlives this script and its terminal's signals.
    setsid nats-server -a 127.0.0.1 -p -1 -n spillway-peer \
        -P "$dir/nats.pid" -l "$dir/nats.log" --ports_file_dir "$dir" \
        </dev/null >/dev/null 2>&1 &
    local launcher=$! ports="" port=""
    for _ in $(seq 200); do
        ports=$(ls "$dir"/*.ports 2>/dev/null | head -n1 || true)
        if [ -n "$ports" ]; then
            port=$(grep -oE '127\.0\.0\.1:[0-9]+' "$ports" | head -n1 | cut -d: -f2 || true)
            [ -n "$port" ] && break
        fi
        kill -0 "$launcher" 2>/dev/null || break
        sleep 0.05
    done
    if [ -z "$port" ]; then
        echo "nats-server did not report its port; its log:" >&2
        cat "$dir/nats.log" >&2 2>/dev/null || true
        exit 1
    fi
    # The pid file is written before the ports file; the launcher is the server itself.
    [ -s "$dir/nats.pid" ] || echo "$launcher" >"$dir/nats.pid"
    trap - EXIT INT TERM
    local url="nats://127.0.0.1:$port"
    [ -z "$url_file" ] || echo "$url" >"$url_file"
    echo "nats-server $(nats-server --version | grep -oE '[0-9]+\.[0-9]+\.[0-9]+' | head -n1) (pid $(<"$dir/nats.pid")) in $dir" >&2
    echo "$url"
}

case ${1:-} in
    start) shift; start "$@" ;;
    stop)
        shift
        [ "${1:-}" = "--dir" ] && [ -n "${2:-}" ] || usage
        stop_instance "$2"
        ;;
    *) usage ;;
esac
