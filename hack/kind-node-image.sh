#!/usr/bin/env bash
# Build a kind node image offline, for the Kubernetes version pinned in hack/tools/go.mod, from
# Debian packages and Go modules only (../shared/KIND-OFFLINE.md has the facts behind each step).
# `kind build node-image` cannot be used here: it pulls kindest/base and every image kubeadm names.
#
#   hack/kind-node-image.sh          build (or find) the image; prints its name on stdout
#   hack/kind-node-image.sh --name   print the name it would have, build nothing
#
# Cached by a key over everything that goes in (this script, hack/kind/node/, the tool pins,
# the Debian suite and package list): a cache hit is one `docker image inspect`. Cold (2 cores):
# ~6 min of Go builds (hack/build-tools.sh --kind, their own cache) with ~75 s of debootstrap
# beside them, then ~1 min to make and preload the control-plane images. The image is ~1.5 GB.
#
# What is where:
#   kubelet, kubeadm, kubectl (/usr/bin), crictl      hack/build-tools.sh --kind (Go modules)
#   systemd, containerd 1.6, runc, CNI plugins, ...   debootstrap bookworm (KIND-OFFLINE: trixie's
#                                                      systemd does not boot on cgroup v1)
#   entrypoint, containerd config, kubelet units      kind's own images/base/files (module zip)
#   registry.k8s.io/{kube-*,etcd,coredns,pause}       `docker import` of the static binaries under
#                                                      the names `kubeadm config images list` gives,
#                                                      preloaded into the node's containerd as
#                                                      kind's own node-image build does
#   CNI                                               bridge + host-local + portmap (kindnetd
#                                                      cannot be had offline): one node only
# Environment: SUITE (bookworm), MIRROR (Debian mirror), KEEP_WORKDIR=1.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
NODE_FILES="$ROOT/hack/kind/node"
SUITE="${SUITE:-bookworm}"
PACKAGES=(systemd systemd-sysv dbus conntrack iptables nftables iproute2 ethtool util-linux mount
    kmod libseccomp2 pigz fuse-overlayfs ca-certificates curl jq procps socat containerd runc
    containernetworking-plugins)

log() { printf '[kind-node-image] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
# shellcheck source=lib/debootstrap.sh
source "$ROOT/hack/lib/debootstrap.sh"

command -v docker >/dev/null 2>&1 || die "docker CLI not found (hack/install-deps.sh installs docker.io)"
docker info >/dev/null 2>&1 || die "no Docker engine answers (run hack/start-dockerd.sh)"

# shellcheck source=tools/versions.env
source "$ROOT/hack/tools/versions.env"
kube_ver="$(awk '$1 == "k8s.io/kubernetes" { print $2; exit }' "$ROOT/hack/tools/go.mod")"
[[ -n "$kube_ver" ]] || die "no k8s.io/kubernetes version in hack/tools/go.mod"
key="$(cat "${BASH_SOURCE[0]}" "$ROOT/hack/lib/debootstrap.sh" "$ROOT/hack/tools/go.mod" \
    "$ROOT/hack/tools/go.sum" "$ROOT/hack/tools/versions.env" "$NODE_FILES"/* \
    <(echo "$SUITE ${PACKAGES[*]}") | sha256sum | cut -c1-12)"
IMAGE="imagegate-local/kind-node:$kube_ver-$key"

if [[ "${1:-}" == "--name" ]]; then
    echo "$IMAGE"
    exit 0
elif [[ $# -gt 0 ]]; then
    die "usage: $0 [--name]"
fi
if docker image inspect "$IMAGE" >/dev/null 2>&1; then
    log "$IMAGE is cached"
    echo "$IMAGE"
    exit 0
fi

WORKDIR="$(mktemp -d /tmp/imagegate-kind-node.XXXXXX)"
ROOTFS="$WORKDIR/rootfs"
BUILDER=""
cleanup() {
    [[ -n "$BUILDER" ]] && docker rm -f "$BUILDER" >/dev/null 2>&1
    [[ "${KEEP_WORKDIR:-0}" == 1 ]] || { rootfs_cleanup "$ROOTFS"; rm -rf "$WORKDIR"; }
}
trap cleanup EXIT

# ---- 1. the node's root file system ----------------------------------------------------------
start=$(date +%s)
debian_rootfs "$SUITE" "$ROOTFS" "$(IFS=,; echo "${PACKAGES[*]}")" "$WORKDIR/debootstrap.log"
log "debootstrap took $(($(date +%s) - start))s; the Kubernetes binaries next"
BIN="$("$ROOT/hack/build-tools.sh" --kind)"
KIND_FILES="$(cd "$WORKDIR" && GOFLAGS= go mod download -json "sigs.k8s.io/kind@$KIND_VERSION" \
    | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')/images/base/files"
[[ -d "$KIND_FILES" ]] || die "kind's images/base/files not found in the sigs.k8s.io/kind@$KIND_VERSION module"

# The images kubeadm will ask containerd for (names and tags exactly as it lists them).
mapfile -t REQUIRED < <("$BIN/kubeadm" config images list --kubernetes-version "$kube_ver")
image_for() { printf '%s\n' "${REQUIRED[@]}" | grep -m1 "^registry.k8s.io/$1:" || die "kubeadm lists no $1 image"; }
PAUSE_IMAGE="$(image_for pause)"


log "adding kind's base files ($KIND_FILES), the Kubernetes binaries and imagegate's node files"
install -m 0755 "$KIND_FILES"/usr/local/bin/* "$ROOTFS/usr/local/bin/"
mkdir -p "$ROOTFS/kind/bin" "$ROOTFS/LICENSES" "$ROOTFS/etc/systemd/system/kubelet.service.d"
install -m 0644 "$KIND_FILES"/kind/README.txt "$ROOTFS/kind/"
install -m 0755 "$KIND_FILES"/kind/bin/* "$ROOTFS/kind/bin/"
install -m 0644 "$KIND_FILES"/etc/crictl.yaml "$ROOTFS/etc/"
install -m 0644 -D "$KIND_FILES"/etc/containerd/config.toml "$ROOTFS/etc/containerd/config.toml"
install -m 0644 "$KIND_FILES"/etc/default/kubelet "$ROOTFS/etc/default/"
install -m 0644 "$KIND_FILES"/etc/sysctl.d/* "$ROOTFS/etc/sysctl.d/"
install -m 0644 "$KIND_FILES"/etc/systemd/system/*.service "$KIND_FILES"/etc/systemd/system/*.slice \
    "$ROOTFS/etc/systemd/system/"
install -m 0644 "$KIND_FILES"/etc/systemd/system/kubelet.service.d/* "$ROOTFS/etc/systemd/system/kubelet.service.d/"
# Debian installs containerd in /usr/bin and the CNI plugins in /usr/lib/cni.
sed -i 's|^ExecStart=/usr/local/bin/containerd$|ExecStart=/usr/bin/containerd|' \
    "$ROOTFS/etc/systemd/system/containerd.service"
mkdir -p "$ROOTFS/opt/cni/bin"
for plugin in "$ROOTFS"/usr/lib/cni/*; do ln -sf "/usr/lib/cni/$(basename "$plugin")" "$ROOTFS/opt/cni/bin/"; done
# The sandbox image kubeadm names (containerd's own default would be pulled).
sed -i "s|^\([[:space:]]*sandbox_image = \).*|\1\"$PAUSE_IMAGE\"|" "$ROOTFS/etc/containerd/config.toml"
grep -q "sandbox_image = \"$PAUSE_IMAGE\"" "$ROOTFS/etc/containerd/config.toml" \
    || die "could not set sandbox_image in kind's containerd config.toml"

for b in kubelet kubeadm kubectl; do install -m 0755 "$BIN/$b" "$ROOTFS/usr/bin/$b"; done
install -m 0755 "$BIN/crictl" "$ROOTFS/usr/local/bin/crictl"
install -m 0755 "$NODE_FILES/imagegate-node-entrypoint" "$ROOTFS/usr/local/bin/"
install -m 0644 -D "$NODE_FILES/10-bridge.conflist" "$ROOTFS/etc/cni/net.d/10-bridge.conflist"
mkdir -p "$ROOTFS/etc/kubernetes/manifests"
echo "$kube_ver" >"$ROOTFS/kind/version"

# What kind's base Dockerfile does to systemd, then the services it enables.
chroot "$ROOTFS" /bin/bash -euo pipefail -c '
    find /lib/systemd/system/sysinit.target.wants/ -name systemd-tmpfiles-setup.service -delete
    rm -f /lib/systemd/system/multi-user.target.wants/* /etc/systemd/system/*.wants/* \
        /lib/systemd/system/local-fs.target.wants/* /lib/systemd/system/sockets.target.wants/*udev* \
        /lib/systemd/system/sockets.target.wants/*initctl* /lib/systemd/system/basic.target.wants/*
    echo ReadKMsg=no >>/etc/systemd/journald.conf
    [ -e /sbin/init ] || ln -s /usr/lib/systemd/systemd /sbin/init
    systemctl enable kubelet.service containerd.service undo-mount-hacks.service >/dev/null 2>&1
    systemctl mask systemd-binfmt.service >/dev/null 2>&1
    ctr oci spec \
        | jq ".hooks.createContainer[.hooks.createContainer | length] |= . + {\"path\": \"/kind/bin/mount-product-files.sh\"}" \
        | jq "del(.process.rlimits)" >/etc/containerd/cri-base.json
'

BASE="imagegate-local/kind-node-base:$kube_ver-$key"
log "docker import as $BASE"
rootfs_import "$ROOTFS" "$BASE" --change 'ENV container=docker' \
    --message "debootstrap $SUITE + kind $KIND_VERSION base files + Kubernetes $kube_ver"
rootfs_cleanup "$ROOTFS"

# ---- 2. the control-plane images, under the names kubeadm lists ------------------------------
# Static binaries need nothing else; kube-proxy runs iptables, so it is made on the node base.
binary_image() { # image binary path-in-image
    local dir="$WORKDIR/img-$2"
    mkdir -p "$dir$(dirname "$3")" "$dir/tmp" "$dir/var/lib/etcd"
    chmod 1777 "$dir/tmp"
    install -m 0755 "$BIN/$2" "$dir$3"
    tar --numeric-owner --owner=0 --group=0 -C "$dir" -c . \
        | docker import --change "ENTRYPOINT [\"$3\"]" --message "$2 $kube_ver (hack/kind-node-image.sh)" - "$1" >/dev/null
}
for image in "${REQUIRED[@]}"; do
    name="${image#registry.k8s.io/}"
    name="${name%%:*}"
    case "$name" in
    kube-apiserver | kube-controller-manager | kube-scheduler | etcd)
        binary_image "$image" "$name" "/usr/local/bin/$name" ;;
    coredns/coredns) binary_image "$image" coredns /coredns ;;
    pause) binary_image "$image" pause /pause ;;
    kube-proxy)
        cid="$(docker create "$BASE" /bin/true)"
        docker cp "$BIN/kube-proxy" "$cid:/usr/local/bin/kube-proxy"
        docker commit --change 'ENTRYPOINT ["/usr/local/bin/kube-proxy"]' "$cid" "$image" >/dev/null
        docker rm "$cid" >/dev/null
        ;;
    *) die "kubeadm lists $image, which this script cannot make" ;;
    esac
    log "made $image"
done

# ---- 3. preload them into the node's containerd, as kind's node-image build does -------------
BUILDER="imagegate-kind-build-$$"
docker run -d --name "$BUILDER" --entrypoint sleep "$BASE" infinity >/dev/null
docker exec -d "$BUILDER" containerd
for _ in $(seq 60); do
    docker exec "$BUILDER" ctr version >/dev/null 2>&1 && break
    sleep 0.5
done
docker exec "$BUILDER" ctr version >/dev/null 2>&1 || die "containerd did not start in the build container"
log "importing ${#REQUIRED[@]} images into the node's containerd"
docker save "${REQUIRED[@]}" | docker exec -i "$BUILDER" ctr --namespace=k8s.io images import \
    --all-platforms --no-unpack --snapshotter=overlayfs - >&2
docker exec "$BUILDER" ctr --namespace=k8s.io images list -q | sort >"$WORKDIR/imported"
for image in "${REQUIRED[@]}"; do
    grep -qx "$image" "$WORKDIR/imported" || die "$image is not in the node's containerd after the import"
    # Pinned, so the kubelet's image garbage collection never removes them (containerd 1.6's
    # `ctr images import` has no --label, so the label is added after).
    docker exec "$BUILDER" ctr --namespace=k8s.io images label "$image" io.cri-containerd.pinned=pinned >/dev/null
done
docker exec "$BUILDER" pkill containerd || true
for _ in $(seq 20); do docker exec "$BUILDER" pgrep -x containerd >/dev/null || break; sleep 0.5; done

# (kind's base also sets STOPSIGNAL SIGRTMIN+3, which `docker commit --change` cannot; kind
# removes nodes with `docker rm -f`, so it is never used.)
docker commit \
    --change 'ENTRYPOINT ["/usr/local/bin/imagegate-node-entrypoint", "/usr/local/bin/entrypoint", "/sbin/init"]' \
    --change 'CMD []' \
    --change 'ENV container=docker' \
    "$BUILDER" "$IMAGE" >/dev/null
docker image rm "$BASE" >/dev/null 2>&1 || true
size=$(docker image inspect -f '{{.Size}}' "$IMAGE")
log "made $IMAGE ($((size / 1000000)) MB) in $(($(date +%s) - start))s"
echo "$IMAGE"
