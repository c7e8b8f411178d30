#!/usr/bin/env bash
# Make sure a Docker engine answers `docker info`; start /usr/sbin/dockerd if not.
#
# Idempotent: exits 0 at once when an engine already answers. Otherwise starts dockerd
# in the background (log: $IMAGEGATE_STATE/dockerd.log, default /tmp/imagegate), waits
# up to 60 s for it, and fails loudly with the tail of the log. overlay2 is tried first;
# if the kernel refuses it, dockerd is restarted with --storage-driver=vfs.
set -euo pipefail

STATE="${IMAGEGATE_STATE:-/tmp/imagegate}"
DOCKERD="${DOCKERD:-/usr/sbin/dockerd}"
TIMEOUT="${DOCKERD_TIMEOUT:-60}"
LOG="$STATE/dockerd.log"
PIDFILE="$STATE/dockerd.pid"

log() { printf '[start-dockerd] %s\n' "$*" >&2; }

docker_ok() {
    # `docker info` (the CLI) when present, else the socket API via curl or python.
    if command -v docker >/dev/null 2>&1; then
        docker info >/dev/null 2>&1
    elif command -v curl >/dev/null 2>&1; then
        curl -fsS --unix-socket /var/run/docker.sock http://localhost/_ping >/dev/null 2>&1
    else
        return 1
    fi
}

if docker_ok; then
    log "Docker engine already running"
    exit 0
fi

if [[ ! -x "$DOCKERD" ]]; then
    log "ERROR: $DOCKERD not found: run hack/install-deps.sh (Debian package docker.io)"
    exit 1
fi
if [[ "$(id -u)" -ne 0 ]]; then
    log "ERROR: no Docker engine answers and starting dockerd needs root"
    exit 1
fi

mkdir -p "$STATE"

# A dockerd that is still coming up (ours from an earlier call, or anyone's) is waited
# for, never doubled. /proc is read directly: procps may be absent on a fresh machine.
running_dockerd() {
    local f
    for f in /proc/[0-9]*/comm; do
        if [[ "$(cat "$f" 2>/dev/null)" == "dockerd" ]]; then
            f="${f#/proc/}"
            echo "${f%/comm}"
            return 0
        fi
    done
}

wait_ready() {
    local pid="$1" i
    for ((i = 0; i < TIMEOUT * 2; i++)); do
        if docker_ok; then
            return 0
        fi
        if [[ -n "$pid" ]] && ! kill -0 "$pid" 2>/dev/null; then
            return 2 # died
        fi
        sleep 0.5
    done
    return 1 # timed out
}

start() {
    # $@: extra dockerd flags
    log "starting $DOCKERD${*:+ $*} (log: $LOG)"
    # setsid: survive the calling shell (make, .ci/run); no stdin.
    setsid "$DOCKERD" "$@" </dev/null >>"$LOG" 2>&1 &
    echo $! >"$PIDFILE"
}

fail() {
    log "ERROR: $*"
    log "---- last 40 lines of $LOG ----"
    tail -n 40 "$LOG" >&2 || true
    exit 1
}

existing="$(running_dockerd)"
if [[ -n "$existing" ]]; then
    log "a dockerd (pid $existing) is running but not answering yet; waiting"
    rc=0
    wait_ready "$existing" || rc=$?
    [[ $rc -eq 0 ]] && { log "Docker engine ready"; exit 0; }
    fail "dockerd pid $existing did not answer within ${TIMEOUT}s"
fi

: >>"$LOG"
printf '\n==== %s start-dockerd ====\n' "$(date -Is)" >>"$LOG"

if ! grep -qw overlay /proc/filesystems 2>/dev/null; then
    modprobe overlay 2>/dev/null || true
fi

if grep -qw overlay /proc/filesystems 2>/dev/null; then
    start
else
    log "kernel has no overlay filesystem: using --storage-driver=vfs"
    start --storage-driver=vfs
fi

rc=0
wait_ready "$(cat "$PIDFILE")" || rc=$?
if [[ $rc -eq 2 ]] && grep -qiE 'overlay2?|storage.driver|graphdriver' <(tail -n 60 "$LOG"); then
    log "dockerd exited (storage driver refused?): retrying with --storage-driver=vfs"
    start --storage-driver=vfs
    rc=0
    wait_ready "$(cat "$PIDFILE")" || rc=$?
fi

case $rc in
0) log "Docker engine ready (dockerd pid $(cat "$PIDFILE"))" ;;
1) fail "dockerd did not answer \`docker info\` within ${TIMEOUT}s" ;;
*) fail "dockerd exited" ;;
esac
