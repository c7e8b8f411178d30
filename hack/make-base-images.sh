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

[[ "$(id -u)" -eq 0 ]] || die "debootstrap needs root"
command -v debootstrap >/dev/null 2>&1 || die "debootstrap not found: apt-get install -y debootstrap"

# The Debian mirror apt already uses (deb822 `URIs:` or one-line `deb URL suite ...`).
find_mirror() {
    local files=(/etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources)
    local f
    for f in "${files[@]}"; do
        [[ -r "$f" ]] || continue
        awk -v suite="$SUITE" '
            /^[[:space:]]*#/ { next }
            /^URIs:/ { uri = $2 }
            /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == suite && uri !~ /security/) { print uri; exit } }
            /^deb[[:space:]]/ {
                u = $2; s = $3
                if (u ~ /^\[/) { u = $3; s = $4 }
                if (s == suite && u !~ /security/) { print u; exit }
            }
        ' "$f"
    done | head -n1
}
MIRROR="${MIRROR:-$(find_mirror)}"
MIRROR="${MIRROR:-http://deb.debian.org/debian}"

WORKDIR="${WORKDIR:-$(mktemp -d /tmp/imagegate-base.XXXXXX)}"
ROOTFS="$WORKDIR/rootfs"
cleanup() {
    # debootstrap unmounts /proc and /sys itself; make sure nothing stays mounted before rm.
    local m
    for m in proc sys dev/pts dev; do
        mountpoint -q "$ROOTFS/$m" 2>/dev/null && umount -l "$ROOTFS/$m" || true
    done
    [[ "${KEEP_ROOTFS:-0}" == 1 ]] || rm -rf --one-file-system "$WORKDIR"
}
trap cleanup EXIT

start=$(date +%s)
log "debootstrap $SUITE from $MIRROR (variant minbase, +$INCLUDE) into $ROOTFS"
mkdir -p "$ROOTFS"
# The same path-excludes debian:*-slim uses, so docs/man/locales never land on disk.
mkdir -p "$ROOTFS/etc/dpkg/dpkg.cfg.d"
cat >"$ROOTFS/etc/dpkg/dpkg.cfg.d/docker-slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
EOF
debootstrap --variant=minbase --include="$INCLUDE" --components=main \
    "$SUITE" "$ROOTFS" "$MIRROR" >"$WORKDIR/debootstrap.log" 2>&1 || {
    tail -n 30 "$WORKDIR/debootstrap.log" >&2
    die "debootstrap failed (log above)"
}

# Trim what a container never needs (what debian:*-slim leaves out).
rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/* "$ROOTFS"/var/cache/debconf/*-old \
    "$ROOTFS"/var/log/* "$ROOTFS"/tmp/* "$ROOTFS"/var/tmp/* \
    "$ROOTFS"/usr/share/man/* "$ROOTFS"/usr/share/info/* "$ROOTFS"/usr/share/locale/* \
    "$ROOTFS"/usr/share/lintian "$ROOTFS"/usr/share/linda
find "$ROOTFS/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete 2>/dev/null || true
find "$ROOTFS/usr/share/doc" -mindepth 1 -type d -empty -delete 2>/dev/null || true
find "$ROOTFS/usr/lib" -name '__pycache__' -type d -prune -exec rm -rf {} + 2>/dev/null || true
# No host identity in the image.
: >"$ROOTFS/etc/hostname"
rm -f "$ROOTFS/etc/machine-id" && : >"$ROOTFS/etc/machine-id"
cp /dev/null "$ROOTFS/etc/resolv.conf" 2>/dev/null || true
# apt inside the image talks to the same mirror.
printf 'deb %s %s main\n' "$MIRROR" "$SUITE" >"$ROOTFS/etc/apt/sources.list"

log "docker import as $IMAGE"
tar --numeric-owner --xattrs --one-file-system -C "$ROOTFS" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    --message "debootstrap --variant=minbase $SUITE +$INCLUDE ($MIRROR)" \
    - "$IMAGE" >/dev/null

size=$(docker image inspect -f '{{.Size}}' "$IMAGE")
log "made $IMAGE ($((size / 1000000)) MB uncompressed) in $(($(date +%s) - start))s"
