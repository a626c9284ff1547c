# Sourced by the scripts that start a program from Debian's packages (nats-server.sh,
# redis.sh, prometheus-check.sh): installing it when absent, and reading a pid file.

# Installs Debian's PACKAGE unless every COMMAND after it is on the PATH: apt-get update
# once, then apt-get install without recommends (sudo only when not root).
install_package_for() {
    local package=$1 command
    shift
    for command in "$@"; do
        command -v "$command" >/dev/null && continue
        local sudo=()
        [ "$(id -u)" -eq 0 ] || sudo=(sudo)
        echo "$command is absent: installing Debian's package $package" >&2
        "${sudo[@]}" apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq \
            --no-install-recommends "$package" >&2
        return
    done
}

# The pid in FILE, if that process is alive.
live_pid() {
    local file=$1 pid
    [ -s "$file" ] || return 1
    pid=$(<"$file")
    kill -0 "$pid" 2>/dev/null || return 1
    echo "$pid"
}
