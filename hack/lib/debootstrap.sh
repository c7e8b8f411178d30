# shellcheck shell=bash
# Shared by hack/make-base-images.sh and hack/kind-node-image.sh: a minimal Debian root file
# system from the Debian mirror apt already uses, trimmed as debian:*-slim is, then imported
# into the Docker engine. Source it; the caller sets `set -euo pipefail`, and defines log/die.
#
#   debian_mirror SUITE                       the mirror URL for SUITE (MIRROR overrides)
#   debian_rootfs SUITE ROOTFS INCLUDE LOG    debootstrap --variant=minbase, trimmed
#   rootfs_cleanup ROOTFS                     unmount what debootstrap may leave, remove it
#   rootfs_import ROOTFS IMAGE [--change ...] docker import of the tree (numeric owners, xattrs)

# The Debian mirror apt already uses (deb822 `URIs:` or one-line `deb URL suite ...`).
debian_mirror() {
    local suite="$1" f
    local files=(/etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources)
    if [[ -n "${MIRROR:-}" ]]; then
        printf '%s\n' "$MIRROR"
        return
    fi
    for f in "${files[@]}"; do
        [[ -r "$f" ]] || continue
        awk -v suite="$suite" '
            /^[[:space:]]*#/ { next }
            /^URIs:/ { uri = $2 }
            /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == suite && uri !~ /security/) { print uri; exit } }
            /^deb[[:space:]]/ {
                u = $2; s = $3
                if (u ~ /^\[/) { u = $3; s = $4 }
                if (s == suite && u !~ /security/) { print u; exit }
            }
        ' "$f"
    done | head -n1 | grep . || printf '%s\n' "http://deb.debian.org/debian"
}

debian_rootfs() {
    local suite="$1" rootfs="$2" include="$3" logfile="$4" mirror
    [[ "$(id -u)" -eq 0 ]] || die "debootstrap needs root"
    command -v debootstrap >/dev/null 2>&1 || die "debootstrap not found: apt-get install -y debootstrap"
    mirror="$(debian_mirror "$suite")"
    log "debootstrap $suite from $mirror (variant minbase, +$include) into $rootfs"
    mkdir -p "$rootfs/etc/dpkg/dpkg.cfg.d"
    # The same path-excludes debian:*-slim uses, so docs/man/locales never land on disk.
    cat >"$rootfs/etc/dpkg/dpkg.cfg.d/docker-slim" <<'EOS'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
EOS
    debootstrap --variant=minbase --include="$include" --components=main \
        "$suite" "$rootfs" "$mirror" >"$logfile" 2>&1 || {
        tail -n 30 "$logfile" >&2
        die "debootstrap failed (log above, full log: $logfile)"
    }
    # Trim what a container never needs (what debian:*-slim leaves out).
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* "$rootfs"/var/cache/debconf/*-old \
        "$rootfs"/var/log/* "$rootfs"/tmp/* "$rootfs"/var/tmp/* \
        "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/usr/share/locale/* \
        "$rootfs"/usr/share/lintian "$rootfs"/usr/share/linda
    find "$rootfs/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete 2>/dev/null || true
    find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete 2>/dev/null || true
    find "$rootfs/usr/lib" -name '__pycache__' -type d -prune -exec rm -rf {} + 2>/dev/null || true
    # No host identity in the image.
    : >"$rootfs/etc/hostname"
    rm -f "$rootfs/etc/machine-id" && : >"$rootfs/etc/machine-id"
    cp /dev/null "$rootfs/etc/resolv.conf" 2>/dev/null || true
    # apt inside the image talks to the same mirror.
    printf 'deb %s %s main\n' "$mirror" "$suite" >"$rootfs/etc/apt/sources.list"
}

rootfs_cleanup() {
    local rootfs="$1" m
    # debootstrap unmounts /proc and /sys itself; make sure nothing stays mounted before rm.
    for m in proc sys dev/pts dev; do
        if mountpoint -q "$rootfs/$m" 2>/dev/null; then umount -l "$rootfs/$m" || true; fi
    done
    rm -rf --one-file-system "$rootfs"
}

rootfs_import() {
    local rootfs="$1" image="$2"
    shift 2
    tar --numeric-owner --xattrs --one-file-system -C "$rootfs" -c . | docker import "$@" - "$image" >/dev/null
}
