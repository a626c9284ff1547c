# Sourced by the scripts that start a program from Debian's packages (nats-server.sh,
# redis.sh, prometheus-check.sh): installing it when absent, and reading a pid file.

# Whether any COMMAND is absent from the PATH: the caller then installs its package, with
# `as_root apt-get update` once and `as_root apt-get install -y PACKAGE`.
missing() {
    local command
    for command in "$@"; do
        if ! command -v "$command" >/dev/null; then
            echo "$command is absent: installing it from Debian's packages" >&2
            return 0
        fi
    done
    return 1
}

# Runs a command as root: directly when root, else through sudo; non-interactive for apt.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        env DEBIAN_FRONTEND=noninteractive "$@"
    else
        sudo env DEBIAN_FRONTEND=noninteractive "$@"
    fi
}

# The pid in FILE, if that process is alive.
live_pid() {
    local file=$1 pid
    [ -s "$file" ] || return 1
    pid=$(<"$file")
    kill -0 "$pid" 2>/dev/null || return 1
    echo "$pid"
}
