#!/usr/bin/env bash
# Print `export IMAGEGATE_TOOLS_BIN=<bin dir>` for the pinned kube-apiserver, etcd and helm, so
# scripts and tests (helm tests, e2e) find them:
#
#   eval "$(hack/tools-env.sh)"              builds what is missing first (hack/build-tools.sh;
#                                            a cache hit is instant, a cold build takes minutes)
#   eval "$(hack/tools-env.sh --no-build)"   only prints where they are (or would be)
#
# Build progress goes to stderr; only the export line is printed on stdout.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
case "${1:-}" in
"") bin="$("$here/build-tools.sh")" ;;
--no-build) bin="$("$here/build-tools.sh" --print-dir)" ;;
*)
    echo "usage: $0 [--no-build]" >&2
    exit 2
    ;;
esac
printf 'export IMAGEGATE_TOOLS_BIN=%q\n' "$bin"
