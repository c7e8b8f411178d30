#!/usr/bin/env bash
# Install the real parts the tests, the demo and the bench need (DESIGN.md §5):
# the Docker engine, the Distribution registry, skopeo, a static busybox (for
# FROM-scratch fixture images), htpasswd (bcrypt) and wrk.
#
# Idempotent and quick: packages already installed are skipped and `apt-get update`
# only runs when something is missing. Not root or not Debian: prints what to
# install and exits 0 (the tests then skip, or fail under CI=true).
set -euo pipefail

PACKAGES=(docker.io docker-registry skopeo busybox-static apache2-utils wrk debootstrap chromium)

log() { printf '[install-deps] %s\n' "$*" >&2; }

is_installed() {
    [[ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || true)" == "installed" ]]
}

if [[ ! -r /etc/debian_version ]] || ! command -v apt-get >/dev/null 2>&1; then
    log "not a Debian system: install these yourself (Debian package names): ${PACKAGES[*]}"
    exit 0
fi

missing=()
for pkg in "${PACKAGES[@]}"; do
    is_installed "$pkg" || missing+=("$pkg")
done
# Also needed by the Makefile, and absent from a minimal Debian: make, and venv support
# for Debian's python3 (only when the python3 on PATH cannot make a venv).
command -v make >/dev/null 2>&1 || is_installed make || missing+=(make)
if ! python3 -c 'import ensurepip' >/dev/null 2>&1 && ! is_installed python3-venv; then
    missing+=(python3-venv)
fi

if [[ ${#missing[@]} -eq 0 ]]; then
    log "all installed: ${PACKAGES[*]}"
    exit 0
fi

if [[ "$(id -u)" -ne 0 ]]; then
    log "not root: run as root: apt-get update && apt-get install -y ${missing[*]}"
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive
log "installing: ${missing[*]}"
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"

for pkg in "${missing[@]}"; do
    if ! is_installed "$pkg"; then
        log "ERROR: $pkg is still not installed"
        exit 1
    fi
done
log "done"
