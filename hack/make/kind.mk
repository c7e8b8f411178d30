# kind: a local cluster wired to a local registry, with imagegate installed (docs/kind.md).
#
#   make kind-up        local registry (kind-registry, 127.0.0.1:5001) + kind cluster
#                       (hack/kind-up.sh: the official path with internet, else offline with the
#                       node image hack/kind-node-image.sh builds; KIND_OFFLINE=auto|true|false)
#   make kind-load      build imagegate's image, push it to localhost:5001
#   make kind-install   helm upgrade --install (KIND_MODE=enforce|audit), pinned by digest, helm test
#   make kind-test      kind-up, then the in-cluster end-to-end suite (tests/kind)
#   make kind-down      delete the cluster and the registry container
#
# Needs docker, kubectl and helm ($IMAGEGATE_TOOLS_BIN/helm from hack/build-tools.sh, else PATH);
# kind is the pinned one (hack/build-tools.sh --kind) unless KIND is set. Base images of
# imagegate's own image: BUILDER_IMAGE / RUNTIME_IMAGE, default python:3.12-slim, or the local
# imagegate-local/python:3.11-slim (hack/make-base-images.sh) when the cluster is offline.
# Behind a TLS-intercepting proxy the build's pip trusts the host's extra CAs
# (/usr/local/share/ca-certificates/*.crt, or IMAGEGATE_BUILD_CA_FILE); they never reach the image.

KUBECTL ?= kubectl
HELM ?= $(or $(wildcard $(IMAGEGATE_TOOLS_BIN)/helm),$(wildcard $(shell hack/build-tools.sh --print-dir)/helm),helm)
KIND_CLUSTER ?= imagegate
KIND_REGISTRY_PORT ?= 5001
KIND_REGISTRY_NAME ?= kind-registry
KIND_NAMESPACE ?= imagegate-system
KIND_MODE ?= enforce
KIND_IMAGE_REPO ?= localhost:$(KIND_REGISTRY_PORT)/imagegate
IMAGEGATE_VERSION := $(shell sed -n 's/^__version__ = "\(.*\)"/\1/p' webhook/__init__.py)
KIND_DIGEST_FILE := $(IMAGEGATE_STATE)/kind-image-digest
KIND_OFFLINE_FILE := $(IMAGEGATE_STATE)/kind-offline-$(KIND_CLUSTER)
export KIND_CLUSTER KIND_REGISTRY_PORT KIND_REGISTRY_NAME

.PHONY: kind-up kind-load kind-install kind-test kind-down kind-node-image

kind-up: engine
	hack/kind-up.sh

kind-node-image: engine
	hack/kind-node-image.sh

# Offline, python:3.12-slim cannot be pulled: the image is built on the local Debian base, pushed
# to the kind registry first so that the image's base label is a reference the webhook can verify.
KIND_LOCAL_BASE := localhost:$(KIND_REGISTRY_PORT)/imagegate-local/python:3.11-slim
kind_offline = $(filter true,$(shell cat $(KIND_OFFLINE_FILE) 2>/dev/null))

kind-load:
	@if [ -n "$(kind_offline)" ] && [ -z "$${BUILDER_IMAGE:-}$${RUNTIME_IMAGE:-}" ]; then \
		hack/make-base-images.sh; base=$(KIND_LOCAL_BASE); \
		docker tag imagegate-local/python:3.11-slim $$base && docker push -q $$base; \
	else base=python:3.12-slim; fi; \
	set -x; docker build -q \
		--build-arg BUILDER_IMAGE=$${BUILDER_IMAGE:-$$base} --build-arg RUNTIME_IMAGE=$${RUNTIME_IMAGE:-$$base} \
		--build-arg BUILD_CA_CERTS="$$(cat $${IMAGEGATE_BUILD_CA_FILE:-/usr/local/share/ca-certificates/*.crt} 2>/dev/null || true)" \
		--build-arg VERSION=$(IMAGEGATE_VERSION) \
		--build-arg REVISION=$$(git rev-parse HEAD 2>/dev/null || echo unknown) \
		-t $(KIND_IMAGE_REPO):$(IMAGEGATE_VERSION) .
	docker push -q $(KIND_IMAGE_REPO):$(IMAGEGATE_VERSION)
	@mkdir -p $(dir $(KIND_DIGEST_FILE))
	@docker inspect -f '{{range .RepoDigests}}{{println .}}{{end}}' $(KIND_IMAGE_REPO):$(IMAGEGATE_VERSION) \
		| sed -n 's|^$(KIND_IMAGE_REPO)@||p' | head -n1 > $(KIND_DIGEST_FILE)
	@echo "kind-load: pushed $(KIND_IMAGE_REPO)@$$(cat $(KIND_DIGEST_FILE))"

kind-install:
	@test -s $(KIND_DIGEST_FILE) || { echo "kind-install: run make kind-load first" >&2; exit 1; }
	$(HELM) upgrade --install imagegate charts/imagegate \
		--kube-context kind-$(KIND_CLUSTER) \
		--namespace $(KIND_NAMESPACE) --create-namespace \
		--values charts/imagegate/ci/$(KIND_MODE)-values.yaml \
		$(if $(kind_offline),--values hack/kind/offline-values.yaml) \
		--set image.registry=localhost:$(KIND_REGISTRY_PORT) --set image.repository=imagegate \
		--set image.digest=$$(cat $(KIND_DIGEST_FILE)) \
		--set-json 'webhook.extraEnv=[{"name":"IMAGEGATE_REGISTRY_MIRRORS","value":"{\"localhost:$(KIND_REGISTRY_PORT)\":\"$(KIND_REGISTRY_NAME):5000\"}"}]' \
		--set-json 'operator.extraEnv=[{"name":"IMAGEGATE_REGISTRY_MIRRORS","value":"{\"localhost:$(KIND_REGISTRY_PORT)\":\"$(KIND_REGISTRY_NAME):5000\"}"}]' \
		--wait --timeout 5m
	$(HELM) test imagegate --kube-context kind-$(KIND_CLUSTER) --namespace $(KIND_NAMESPACE)

kind-test: kind-up venv tools
	eval "$$(hack/tools-env.sh)" && $(VENV)/bin/pytest -q $(PYTEST_ARGS) tests/kind

kind-down:
	-$(or $(KIND),$(shell hack/build-tools.sh --kind --print-dir)/kind) delete cluster --name $(KIND_CLUSTER)
	-docker rm -f $(KIND_REGISTRY_NAME)
	-rm -f $(KIND_OFFLINE_FILE)
