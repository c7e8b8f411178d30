#!/usr/bin/env bash
# Make the local base image imagegate's own image is built on when no image can be pulled.
#
#   hack/make-base-images.sh            # builds imagegate-local/python:3.11-slim once (cached)
#   FORCE=1 hack/make-base-images.sh    # rebuild even if the image exists
#
# The Dockerfile's documented defaults are python:3.12-slim (builder and runtime). Here nothing
# can be pulled, so this script bootstraps a minimal Debian bookworm root file system with
# debootstrap (`--variant=minbase`, plus python3 and python3-venv: Debian's Python 3.11), trims it
# the way debian:*-slim images are trimmed (no docs, man pages, locales, apt lists or caches) and
# `docker import`s it. Build imagegate on it with:
#
#   docker build --build-arg BUILDER_IMAGE=imagegate-local/python:3.11-slim \
#                --build-arg RUNTIME_IMAGE=imagegate-local/python:3.11-slim -t imagegate:dev .
#
# Needs root, debootstrap (Debian package `debootstrap`) and a Docker engine. The Debian mirror is
# the first `deb.debian.org`-style Debian URI in apt's sources (override with MIRROR=URL).
# Takes 1-3 minutes with a nearby mirror; later runs return at once while the image exists.
#
# Environment: IMAGE (default imagegate-local/python:3.11-slim), SUITE (bookworm), MIRROR,
# FORCE=1, KEEP_ROOTFS=1 (keep the unpacked tree under $WORKDIR for inspection).
set -euo pipefail

IMAGE="${IMAGE:-imagegate-local/python:3.11-slim}"
SUITE="${SUITE:-bookworm}"
INCLUDE="${INCLUDE:-python3,python3-venv,ca-certificates}"
FORCE="${FORCE:-0}"

log() { printf '[make-base-images] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

command -v docker >/dev/null 2>&1 || die "docker CLI not found (hack/install-deps.sh installs docker.io)"
docker info >/dev/null 2>&1 || die "no Docker engine answers (run hack/start-dockerd.sh)"

if [[ "$FORCE" != 1 ]] && docker image inspect "$IMAGE" >/dev/null 2>&1; then
    log "$IMAGE exists (FORCE=1 rebuilds it)"
    exit 0
fi

# shellcheck source=lib/debootstrap.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/debootstrap.sh"

WORKDIR="${WORKDIR:-$(mktemp -d /tmp/imagegate-base.XXXXXX)}"
ROOTFS="$WORKDIR/rootfs"
cleanup() {
    [[ "${KEEP_ROOTFS:-0}" == 1 ]] || { rootfs_cleanup "$ROOTFS"; rm -rf "$WORKDIR"; }
}
trap cleanup EXIT

start=$(date +%s)
debian_rootfs "$SUITE" "$ROOTFS" "$INCLUDE" "$WORKDIR/debootstrap.log"

log "docker import as $IMAGE"
rootfs_import "$ROOTFS" "$IMAGE" \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    --message "debootstrap --variant=minbase $SUITE +$INCLUDE ($(debian_mirror "$SUITE"))"

size=$(docker image inspect -f '{{.Size}}' "$IMAGE")
log "made $IMAGE ($((size / 1000000)) MB uncompressed) in $(($(date +%s) - start))s"
