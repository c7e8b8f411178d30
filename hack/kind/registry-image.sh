#!/usr/bin/env bash
# The local registry's image when `registry:2` cannot be pulled: Debian's docker-registry (the
# CNCF Distribution registry, the same program) with the libraries it links, `docker import`ed.
# Cached by the package version; prints the image name on stdout.
set -euo pipefail

log() { printf '[registry-image] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

BINARY=/usr/bin/docker-registry
[[ -x "$BINARY" ]] || die "$BINARY not found: hack/install-deps.sh installs docker-registry"
version="$(dpkg-query -W -f='${Version}' docker-registry 2>/dev/null || echo unknown)"
IMAGE="imagegate-local/registry:${version//[^A-Za-z0-9_.-]/_}"
if docker image inspect "$IMAGE" >/dev/null 2>&1; then
    echo "$IMAGE"
    exit 0
fi

dir="$(mktemp -d /tmp/imagegate-registry-image.XXXXXX)"
trap 'rm -rf "$dir"' EXIT
install -m 0755 -D "$BINARY" "$dir/usr/bin/docker-registry"
# The dynamic loader and the libraries it links (libc on Debian 12), at their own paths.
ldd "$BINARY" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' | while read -r lib; do
    cp --parents -L "$lib" "$dir/"
done
mkdir -p "$dir/etc/docker/registry" "$dir/var/lib/registry" "$dir/tmp"
chmod 1777 "$dir/tmp"
cat >"$dir/etc/docker/registry/config.yml" <<'EOC'
version: 0.1
log:
  fields:
    service: registry
storage:
  filesystem:
    rootdirectory: /var/lib/registry
  delete:
    enabled: true
http:
  addr: :5000
EOC
tar --numeric-owner --owner=0 --group=0 -C "$dir" -c . | docker import \
    --change 'ENTRYPOINT ["/usr/bin/docker-registry", "serve", "/etc/docker/registry/config.yml"]' \
    --change 'EXPOSE 5000' --change 'VOLUME ["/var/lib/registry"]' \
    --message "Debian docker-registry $version" - "$IMAGE" >/dev/null
log "made $IMAGE"
echo "$IMAGE"
