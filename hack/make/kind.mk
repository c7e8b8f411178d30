# kind: a local cluster wired to a local registry, with imagegate installed (docs/kind.md).
#
#   make kind-up        local registry (kind-registry, 127.0.0.1:5001) + kind cluster
#   make kind-load      build imagegate's image, push it to localhost:5001
#   make kind-install   helm upgrade --install (KIND_MODE=enforce|audit), pinned by digest
#   make kind-down      delete the cluster and the registry container
#
# Needs docker, kind and helm (helm: $IMAGEGATE_TOOLS_BIN/helm from hack/build-tools.sh, else
# PATH). Base images: BUILDER_IMAGE / RUNTIME_IMAGE (default python:3.12-slim, see Dockerfile).

KIND ?= kind
KUBECTL ?= kubectl
HELM ?= $(or $(wildcard $(IMAGEGATE_TOOLS_BIN)/helm),helm)
KIND_CLUSTER ?= imagegate
KIND_CONFIG ?= kind-config.yaml
KIND_REGISTRY_NAME ?= kind-registry
KIND_REGISTRY_PORT ?= 5001
KIND_REGISTRY_IMAGE ?= registry:2
KIND_NAMESPACE ?= imagegate-system
KIND_MODE ?= enforce
KIND_IMAGE_REPO ?= localhost:$(KIND_REGISTRY_PORT)/imagegate
IMAGEGATE_VERSION := $(shell sed -n 's/^__version__ = "\(.*\)"/\1/p' webhook/__init__.py)
BUILDER_IMAGE ?= python:3.12-slim
RUNTIME_IMAGE ?= python:3.12-slim
KIND_DIGEST_FILE := $(IMAGEGATE_STATE)/kind-image-digest

.PHONY: kind-up kind-load kind-install kind-down

kind-up:
	@command -v $(KIND) >/dev/null || { echo "kind-up: kind not found (https://kind.sigs.k8s.io)" >&2; exit 1; }
	@if [ "$$(docker inspect -f '{{.State.Running}}' $(KIND_REGISTRY_NAME) 2>/dev/null)" != true ]; then \
		docker rm -f $(KIND_REGISTRY_NAME) >/dev/null 2>&1 || true; \
		docker run -d --restart=always -p "127.0.0.1:$(KIND_REGISTRY_PORT):5000" --network bridge \
			--name $(KIND_REGISTRY_NAME) $(KIND_REGISTRY_IMAGE); fi
	@if ! $(KIND) get clusters 2>/dev/null | grep -qx '$(KIND_CLUSTER)'; then \
		$(KIND) create cluster --name $(KIND_CLUSTER) --config $(KIND_CONFIG) --wait 120s; fi
	@for node in $$($(KIND) get nodes --name $(KIND_CLUSTER)); do \
		for host in localhost:$(KIND_REGISTRY_PORT) $(KIND_REGISTRY_NAME):5000; do \
			docker exec "$$node" mkdir -p "/etc/containerd/certs.d/$$host"; \
			printf '[host."http://%s:5000"]\n' $(KIND_REGISTRY_NAME) \
				| docker exec -i "$$node" cp /dev/stdin "/etc/containerd/certs.d/$$host/hosts.toml"; \
		done; done
	@if [ "$$(docker inspect -f '{{json .NetworkSettings.Networks.kind}}' $(KIND_REGISTRY_NAME))" = null ]; then \
		docker network connect kind $(KIND_REGISTRY_NAME); fi
	@printf '%s\n' \
		'apiVersion: v1' 'kind: ConfigMap' \
		'metadata: {name: local-registry-hosting, namespace: kube-public}' \
		'data:' '  localRegistryHosting.v1: |' \
		'    host: "localhost:$(KIND_REGISTRY_PORT)"' \
		'    hostFromContainerRuntime: "$(KIND_REGISTRY_NAME):5000"' \
		'    hostFromClusterNetwork: "$(KIND_REGISTRY_NAME):5000"' \
		'    help: "https://kind.sigs.k8s.io/docs/user/local-registry/"' \
		| $(KUBECTL) --context kind-$(KIND_CLUSTER) apply -f -
	@echo "kind-up: cluster kind-$(KIND_CLUSTER), registry localhost:$(KIND_REGISTRY_PORT) (in-cluster $(KIND_REGISTRY_NAME):5000)"

kind-load:
	docker build \
		--build-arg BUILDER_IMAGE=$(BUILDER_IMAGE) --build-arg RUNTIME_IMAGE=$(RUNTIME_IMAGE) \
		--build-arg VERSION=$(IMAGEGATE_VERSION) \
		--build-arg REVISION=$$(git rev-parse HEAD 2>/dev/null || echo unknown) \
		-t $(KIND_IMAGE_REPO):$(IMAGEGATE_VERSION) .
	docker push $(KIND_IMAGE_REPO):$(IMAGEGATE_VERSION)
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
		--set image.registry=localhost:$(KIND_REGISTRY_PORT) --set image.repository=imagegate \
		--set image.digest=$$(cat $(KIND_DIGEST_FILE)) \
		--set-json 'webhook.extraEnv=[{"name":"IMAGEGATE_REGISTRY_MIRRORS","value":"{\"localhost:$(KIND_REGISTRY_PORT)\":\"$(KIND_REGISTRY_NAME):5000\"}"}]' \
		--set-json 'operator.extraEnv=[{"name":"IMAGEGATE_REGISTRY_MIRRORS","value":"{\"localhost:$(KIND_REGISTRY_PORT)\":\"$(KIND_REGISTRY_NAME):5000\"}"}]' \
		--wait --timeout 5m
	$(HELM) test imagegate --kube-context kind-$(KIND_CLUSTER) --namespace $(KIND_NAMESPACE)

kind-down:
	-$(KIND) delete cluster --name $(KIND_CLUSTER)
	-docker rm -f $(KIND_REGISTRY_NAME)
