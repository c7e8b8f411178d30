#!/usr/bin/env bash
# `make kind-up`: a kind cluster wired to a local registry, as kind's local-registry guide does:
# the registry container `kind-registry` is published on 127.0.0.1:5001 and joined to the `kind`
# network, and every node's containerd maps both `localhost:5001` and `kind-registry:5000` to it.
#
# Two paths, chosen by KIND_OFFLINE (auto|true|false; auto = offline when the registry image
# `registry:2` can neither be found nor pulled):
#   online   the official path of docs/kind.md: kind's default node image, kind-config.yaml,
#            the registry:2 image. Nothing below is applied.
#   offline  the node image hack/kind-node-image.sh builds, hack/kind/offline-config.yaml (one
#            node, no default CNI, the kubelet cgroup patch), and Debian's registry packaged by
#            hack/kind/registry-image.sh.
# Host quirks are detected, never assumed: when `docker run --privileged` fails (no
# CAP_SYS_RESOURCE in the bounding set), kind runs through hack/kind/shim/docker and containerd
# gets restrict_oom_score_adj = true.
#
# Environment: KIND_CLUSTER (imagegate), KIND_REGISTRY_NAME (kind-registry), KIND_REGISTRY_PORT
# (5001), KIND_OFFLINE, KIND_CONFIG / KIND_NODE_IMAGE / KIND_REGISTRY_IMAGE (override the
# path's choice), KIND (the kind binary; default the pinned one from hack/build-tools.sh --kind,
# else kind on PATH), KUBECTL, KIND_RECREATE=1 (delete an existing cluster first). Idempotent:
# an existing cluster whose API server answers, and the registry, are kept.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE="${IMAGEGATE_STATE:-/tmp/imagegate}"
CLUSTER="${KIND_CLUSTER:-imagegate}"
REG_NAME="${KIND_REGISTRY_NAME:-kind-registry}"
REG_PORT="${KIND_REGISTRY_PORT:-5001}"
KUBECTL="${KUBECTL:-kubectl}"
OFFLINE="${KIND_OFFLINE:-auto}"
SHIM="$ROOT/hack/kind/shim"

log() { printf '[kind-up] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
elapsed() { echo "$(($(date +%s) - start))s"; }
start=$(date +%s)

docker info >/dev/null 2>&1 || die "no Docker engine answers (make engine, or hack/start-dockerd.sh)"

# ---- which path ------------------------------------------------------------------------------
if [[ "$OFFLINE" == auto ]]; then
    if docker image inspect registry:2 >/dev/null 2>&1 || timeout 120 docker pull -q registry:2 >/dev/null 2>&1; then
        OFFLINE=false
    else
        OFFLINE=true
        log "registry:2 cannot be pulled: using the offline path (KIND_OFFLINE=false forces the official one)"
    fi
fi
case "$OFFLINE" in
true)
    REG_IMAGE="${KIND_REGISTRY_IMAGE:-$("$ROOT/hack/kind/registry-image.sh")}"
    NODE_IMAGE="${KIND_NODE_IMAGE:-$("$ROOT/hack/kind-node-image.sh")}"
    BASE_CONFIG="${KIND_CONFIG:-$ROOT/hack/kind/offline-config.yaml}"
    ;;
false)
    REG_IMAGE="${KIND_REGISTRY_IMAGE:-registry:2}"
    NODE_IMAGE="${KIND_NODE_IMAGE:-}" # kind's own default
    BASE_CONFIG="${KIND_CONFIG:-$ROOT/kind-config.yaml}"
    ;;
*) die "KIND_OFFLINE must be auto, true or false (got $OFFLINE)" ;;
esac

if [[ -z "${KIND:-}" ]]; then
    KIND="$("$ROOT/hack/build-tools.sh" --kind --print-dir)/kind"
    if [[ ! -x "$KIND" ]]; then
        if [[ "$OFFLINE" == false ]] && command -v kind >/dev/null 2>&1; then
            KIND="$(command -v kind)"
        else
            KIND="$("$ROOT/hack/build-tools.sh" --kind)/kind"
        fi
    fi
fi

# ---- host quirks -----------------------------------------------------------------------------
mkdir -p "$STATE"
CONFIG="$STATE/kind-config-$CLUSTER.yaml"
cp "$BASE_CONFIG" "$CONFIG"
use_shim=0
probe_image="${NODE_IMAGE:-$REG_IMAGE}"
docker image inspect "$probe_image" >/dev/null 2>&1 || docker pull -q "$probe_image" >/dev/null
if ! out="$(docker run --rm --privileged --entrypoint /bin/true "$probe_image" 2>&1)"; then
    if grep -q 'unable to apply caps' <<<"$out"; then
        use_shim=1
        log "docker run --privileged fails here ($(grep -o 'unable to apply caps[^"]*' <<<"$out" | head -n1)):" \
            "kind runs through hack/kind/shim/docker, containerd gets restrict_oom_score_adj = true"
        cat >>"$CONFIG" <<'EOF'
  - |-
    [plugins."io.containerd.grpc.v1.cri"]
      restrict_oom_score_adj = true
EOF
    else
        die "docker run --privileged $probe_image failed: $out"
    fi
fi
kind_cmd() {
    if [[ $use_shim == 1 ]]; then PATH="$SHIM:$PATH" "$KIND" "$@"; else "$KIND" "$@"; fi
}

# ---- registry and cluster --------------------------------------------------------------------
if [[ "$(docker inspect -f '{{.State.Running}}' "$REG_NAME" 2>/dev/null)" != true ]]; then
    docker rm -f "$REG_NAME" >/dev/null 2>&1 || true
    docker run -d --restart=always -p "127.0.0.1:$REG_PORT:5000" --network bridge \
        --name "$REG_NAME" "$REG_IMAGE" >/dev/null
    log "registry $REG_NAME ($REG_IMAGE) on 127.0.0.1:$REG_PORT"
fi

# A cluster from before (a Docker engine restart, a machine handed over) is kept only when its
# API server answers; KIND_RECREATE=1 (CI) always starts from a new one.
if kind_cmd get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
    answers=0
    if [[ "${KIND_RECREATE:-0}" != 1 ]]; then
        for _ in $(seq 12); do
            if "$KUBECTL" --context "kind-$CLUSTER" get --raw /readyz --request-timeout=5s >/dev/null 2>&1; then
                answers=1
                break
            fi
            sleep 5
        done
    fi
    if [[ $answers == 0 ]]; then
        log "deleting the existing cluster $CLUSTER ($([[ "${KIND_RECREATE:-0}" == 1 ]] && echo KIND_RECREATE=1 || echo 'its API server does not answer'))"
        kind_cmd delete cluster --name "$CLUSTER"
    fi
fi
if ! kind_cmd get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
    log "creating cluster $CLUSTER (${NODE_IMAGE:-the default node image of kind}, $(basename "$BASE_CONFIG"))"
    kind_cmd create cluster --name "$CLUSTER" --config "$CONFIG" ${NODE_IMAGE:+--image "$NODE_IMAGE"} --wait 180s
fi

for node in $(kind_cmd get nodes --name "$CLUSTER"); do
    for host in "localhost:$REG_PORT" "$REG_NAME:5000"; do
        docker exec "$node" mkdir -p "/etc/containerd/certs.d/$host"
        printf '[host."http://%s:5000"]\n' "$REG_NAME" |
            docker exec -i "$node" cp /dev/stdin "/etc/containerd/certs.d/$host/hosts.toml"
    done
done
if [[ "$(docker inspect -f '{{json .NetworkSettings.Networks.kind}}' "$REG_NAME")" == null ]]; then
    docker network connect kind "$REG_NAME"
fi
"$KUBECTL" --context "kind-$CLUSTER" apply -f - >/dev/null <<EOF
apiVersion: v1
kind: ConfigMap
metadata: {name: local-registry-hosting, namespace: kube-public}
data:
  localRegistryHosting.v1: |
    host: "localhost:$REG_PORT"
    hostFromContainerRuntime: "$REG_NAME:5000"
    hostFromClusterNetwork: "$REG_NAME:5000"
    help: "https://kind.sigs.k8s.io/docs/user/local-registry/"
EOF
"$KUBECTL" --context "kind-$CLUSTER" wait --for=condition=Ready nodes --all --timeout=180s >/dev/null
"$KUBECTL" --context "kind-$CLUSTER" -n kube-system rollout status deployment/coredns --timeout=180s >/dev/null
echo "$OFFLINE" >"$STATE/kind-offline-$CLUSTER"
log "cluster kind-$CLUSTER ready ($([[ $OFFLINE == true ]] && echo offline || echo official) path) in $(elapsed);" \
    "registry localhost:$REG_PORT (in-cluster $REG_NAME:5000)"
