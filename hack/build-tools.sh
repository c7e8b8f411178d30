#!/usr/bin/env bash
# Build the binaries of the e2e control plane and the chart tests — kube-apiserver, etcd, helm —
# from the pinned Go module in hack/tools/ (go.mod holds every version; tools.go names the main
# packages), into a cache outside the repository:
#
#   ${IMAGEGATE_TOOLS:-/var/cache/imagegate-tools}/<sha256(go.mod, go.sum, versions.env)[:16]>/bin/
#
# Rebuilt only when the pins change; a cache hit takes milliseconds. Prints the bin dir on stdout
# (progress goes to stderr), so `bin=$(hack/build-tools.sh)` works.
#
#   hack/build-tools.sh              build what is missing, print the bin dir
#   hack/build-tools.sh --kind       also what an offline kind node image is made of
#                                    (hack/kind-node-image.sh): kubelet, kubeadm, kubectl,
#                                    kube-controller-manager, kube-scheduler, kube-proxy (same
#                                    module), kind and crictl (hack/tools/versions.env), coredns
#                                    (the version kubeadm names), pause (gcc -static of the
#                                    pause.c in the k8s.io/kubernetes module)
#   hack/build-tools.sh --print-dir  print the bin dir without building (it may be incomplete);
#                                    with --kind, the dir the kind set is built into
#
# KUBEBUILDER_ASSETS: if set and it holds executable kube-apiserver and etcd (envtest's
# binaries), those are linked into the bin dir instead of being built; helm is still built.
# etcd: Debian's etcd-server (bookworm: 3.4.23) is older than the etcd 3.5+ that kube-apiserver
# 1.3x supports, so etcd is built from go.etcd.io/etcd/server/v3 at the version k8s.io/kubernetes
# itself requires (one module graph, no second pin).
#
# Cold build on 2 cores: ~1 min of module downloads plus ~15-20 min of compiling (kube-apiserver
# dominates). Needs Go >= the `go` line of hack/tools/go.mod and the Go module proxy.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODDIR="$ROOT/hack/tools"
CACHE_ROOT="${IMAGEGATE_TOOLS:-/var/cache/imagegate-tools}"

log() { printf '[build-tools] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

[[ -f "$MODDIR/go.mod" && -f "$MODDIR/go.sum" ]] || die "missing $MODDIR/go.mod or go.sum"
# shellcheck source=tools/versions.env
source "$MODDIR/versions.env"
key="$(cat "$MODDIR/go.mod" "$MODDIR/go.sum" "$MODDIR/versions.env" | sha256sum | cut -c1-16)"
BUILT="$CACHE_ROOT/$key/bin"  # what this script builds

usable() { [[ -x "$1" && -f "$1" ]]; }

# kube-apiserver + etcd from KUBEBUILDER_ASSETS when it has both: then the bin dir is a
# directory of symlinks (those two into KUBEBUILDER_ASSETS, helm into $BUILT).
assets=""
if [[ -n "${KUBEBUILDER_ASSETS:-}" ]]; then
    if usable "$KUBEBUILDER_ASSETS/kube-apiserver" && usable "$KUBEBUILDER_ASSETS/etcd"; then
        assets="$(cd "$KUBEBUILDER_ASSETS" && pwd)"
    else
        log "KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS lacks an executable kube-apiserver or etcd;" \
            "building them instead"
    fi
fi
if [[ -n "$assets" ]]; then
    BIN="$CACHE_ROOT/$key/envtest-$(printf '%s' "$assets" | sha256sum | cut -c1-12)/bin"
else
    BIN="$BUILT"
fi

KIND_SET=(kubelet kubeadm kubectl kube-controller-manager kube-scheduler kube-proxy kind crictl coredns pause)
with_kind=0
print_only=0
for arg in "$@"; do
    case "$arg" in
    --print-dir) print_only=1 ;;
    --kind) with_kind=1 ;;
    *) die "usage: $0 [--kind] [--print-dir]" ;;
    esac
done
# The node image is made of what this script built, never of envtest's binaries.
[[ $with_kind == 1 ]] && BIN="$BUILT"
if [[ $print_only == 1 ]]; then
    printf '%s\n' "$BIN"
    exit 0
fi

is_built() { [[ -f "$BUILT/$1" && -x "$BUILT/$1" ]]; }
wanted=()
is_built helm || wanted+=(helm)
if [[ -z "$assets" || $with_kind == 1 ]]; then
    # The node image needs the real kube-apiserver and etcd (they become its control-plane
    # images), whatever KUBEBUILDER_ASSETS says.
    is_built kube-apiserver || wanted+=(kube-apiserver)
    is_built etcd || wanted+=(etcd)
fi
if [[ $with_kind == 1 ]]; then
    for b in "${KIND_SET[@]}"; do is_built "$b" || wanted+=("$b"); done
fi

mkdir -p "$CACHE_ROOT/$key" || die "cannot create $CACHE_ROOT/$key (set IMAGEGATE_TOOLS to a writable dir)"

if [[ ${#wanted[@]} -gt 0 ]]; then
    # One builder at a time per pin set (make tools and a pytest session may race).
    exec 9>"$CACHE_ROOT/$key/.lock"
    if ! flock -n 9; then
        log "another build of $key is running; waiting for it"
        flock 9
    fi
    wanted2=()
    for b in "${wanted[@]}"; do is_built "$b" || wanted2+=("$b"); done
    wanted=("${wanted2[@]+"${wanted2[@]}"}")
fi

if [[ ${#wanted[@]} -gt 0 ]]; then
    command -v go >/dev/null 2>&1 || die "go is not installed (need Go >= $(awk '$1=="go"{print $2}' "$MODDIR/go.mod"))"
    export GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0
    # 2 cores: the compiler is already parallel inside a package; -p bounds the package
    # builds in flight (and the peak memory of linking kube-apiserver).
    ncpu="$(nproc 2>/dev/null || echo 2)"
    export GOMAXPROCS="${GOMAXPROCS:-$ncpu}"
    par="${IMAGEGATE_BUILD_P:-$ncpu}"

    cd "$MODDIR"
    modver() { go list -m -f '{{.Version}}' "$1"; }
    modtime() { go list -m -f '{{with .Time}}{{.UTC.Format "2006-01-02T15:04:05Z"}}{{end}}' "$1"; }
    log "resolving modules (go $(go env GOVERSION), GOPROXY=$(go env GOPROXY))"
    go mod download >&2 || die "go mod download failed (is the Go module proxy reachable?)"

    kube_ver="$(modver k8s.io/kubernetes)"
    helm_ver="$(modver helm.sh/helm/v3)"
    etcd_ver="$(modver go.etcd.io/etcd/server/v3)"
    client_go_ver="$(modver k8s.io/client-go)"

    # What hack/lib/version.sh stamps; without it the binaries report v0.0.0-master, kubeadm
    # refuses to run and `helm install` of a chart with a kubeVersion constraint fails.
    IFS=. read -r major minor _ <<<"${kube_ver#v}"
    kflags=()
    for pkgvar in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
        kflags+=("-X '$pkgvar.gitVersion=$kube_ver'" "-X '$pkgvar.gitMajor=$major'"
            "-X '$pkgvar.gitMinor=$minor'" "-X '$pkgvar.gitTreeState=clean'"
            "-X '$pkgvar.buildDate=$(modtime k8s.io/kubernetes)'")
    done

    tmp="$(mktemp -d "$CACHE_ROOT/$key/.build.XXXXXX")"
    trap 'rm -rf "$tmp"' EXIT
    build() { # name package ldflags...
        local name="$1" pkg="$2" start
        shift 2
        start=$(date +%s)
        log "building $name from $pkg (-p $par, GOMAXPROCS=$GOMAXPROCS)"
        go build -p "$par" -trimpath -ldflags="-s -w $*" -o "$tmp/$name" "$pkg" >&2 \
            || die "go build $pkg failed"
        log "built $name in $(($(date +%s) - start))s"
    }
    # A tool that is its own Go module: `go install MODULE/PKG@VERSION` (its go.mod decides).
    install_module() { # name package@version
        local name="$1" start
        start=$(date +%s)
        log "installing $name from $2"
        (cd "$tmp" && GOFLAGS= GOBIN="$tmp/gobin" go install -trimpath -ldflags="-s -w" "$2") >&2 \
            || die "go install $2 failed"
        mv -f "$tmp/gobin/$(basename "${2%@*}")" "$tmp/$name"
        log "built $name in $(($(date +%s) - start))s"
    }
    # The image versions kubeadm names for this Kubernetes (coredns, pause).
    kubeadm_image_tag() { # repository suffix, e.g. coredns/coredns
        local kubeadm="$tmp/kubeadm"
        is_built kubeadm && kubeadm="$BUILT/kubeadm"
        "$kubeadm" config images list --kubernetes-version "$kube_ver" 2>/dev/null \
            | sed -n "s|^registry.k8s.io/$1:||p"
    }

    for b in "${wanted[@]}"; do
        case "$b" in
        kube-apiserver | kubelet | kubeadm | kubectl | kube-controller-manager | kube-scheduler | kube-proxy)
            build "$b" "k8s.io/kubernetes/cmd/$b" "${kflags[*]}"
            ;;
        kind) install_module kind "sigs.k8s.io/kind@$KIND_VERSION" ;;
        crictl) install_module crictl "sigs.k8s.io/cri-tools/cmd/crictl@$CRICTL_VERSION" ;;
        coredns)
            coredns_ver="$(kubeadm_image_tag coredns/coredns)"
            [[ -n "$coredns_ver" ]] || die "kubeadm names no coredns image for $kube_ver"
            install_module coredns "github.com/coredns/coredns@$coredns_ver"
            ;;
        pause)
            # What build/pause/Makefile does, from the source in the module cache.
            pause_ver="$(kubeadm_image_tag pause)"
            src="$(go list -m -f '{{.Dir}}' k8s.io/kubernetes)/build/pause/linux/pause.c"
            command -v gcc >/dev/null 2>&1 || die "gcc is needed to build pause (apt-get install gcc)"
            gcc -Os -Wall -Werror -static -DVERSION="v$pause_ver-imagegate" -o "$tmp/pause" "$src" >&2 \
                || die "gcc -static $src failed (Debian: apt-get install libc6-dev)"
            strip "$tmp/pause"
            ;;
        etcd)
            build etcd go.etcd.io/etcd/server/v3
            ;;
        helm)
            # As helm's Makefile: the client-go minor sets the default kube version of
            # `helm template` and `helm lint` (k8s.io/* v0.36 -> Kubernetes 1.36).
            IFS=. read -r cmajor cminor _ <<<"${client_go_ver#v}"
            hmajor=$((cmajor + 1))
            hflags="-X helm.sh/helm/v3/internal/version.version=$helm_ver"
            hflags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
            for p in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
                hflags+=" -X $p.k8sVersionMajor=$hmajor -X $p.k8sVersionMinor=$cminor"
            done
            build helm helm.sh/helm/v3/cmd/helm "$hflags"
            ;;
        esac
    done

    mkdir -p "$BUILT"
    for b in "${wanted[@]}"; do
        mv -f "$tmp/$b" "$BUILT/$b"
    done
    {
        echo "k8s.io/kubernetes $kube_ver"
        echo "go.etcd.io/etcd/server/v3 $etcd_ver"
        echo "helm.sh/helm/v3 $helm_ver"
        echo "sigs.k8s.io/kind $KIND_VERSION"
        echo "sigs.k8s.io/cri-tools $CRICTL_VERSION"
        echo "go $(go env GOVERSION)"
    } >"$CACHE_ROOT/$key/VERSIONS"
fi

if [[ -n "$assets" && $with_kind == 0 ]]; then
    mkdir -p "$BIN"
    ln -sfn "$assets/kube-apiserver" "$BIN/kube-apiserver"
    ln -sfn "$assets/etcd" "$BIN/etcd"
    ln -sfn "$BUILT/helm" "$BIN/helm"
fi

check=(kube-apiserver etcd helm)
[[ $with_kind == 1 ]] && check+=("${KIND_SET[@]}")
for b in "${check[@]}"; do
    [[ -x "$BIN/$b" || -x "$BUILT/$b" ]] || die "$b is missing after the build"
done
printf '%s\n' "$BIN"
