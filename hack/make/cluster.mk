# Local control plane (etcd + kube-apiserver) and the pinned tools (kube-apiserver, etcd, helm).
#
#   make tools         build the pinned binaries (hack/tools/go.mod) into
#                      $${IMAGEGATE_TOOLS:-/var/cache/imagegate-tools}/<hash>/bin (cached)
#   make cluster-up    start etcd + kube-apiserver in the background (state in
#                      $(IMAGEGATE_STATE)/cluster); use it with: eval "$$(make -s cluster-up)"
#   make cluster-down  stop it
#   make cluster-status

.PHONY: tools cluster-up cluster-down cluster-status

tools:
	hack/build-tools.sh

cluster-up: venv
	@hack/build-tools.sh >/dev/null
	@$(VENV)/bin/python hack/cluster.py up --state "$(IMAGEGATE_STATE)/cluster"

cluster-down: venv
	@$(VENV)/bin/python hack/cluster.py down --state "$(IMAGEGATE_STATE)/cluster"

cluster-status: venv
	@$(VENV)/bin/python hack/cluster.py status --state "$(IMAGEGATE_STATE)/cluster"
