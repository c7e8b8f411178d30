# imagegate — developer and CI entry points. `.ci/run` runs: deps, engine, `make test`.
#
#   make venv    .venv with python3 >= 3.11 and `pip install -e '.[dev]'` (redone when
#                pyproject.toml changes)
#   make deps    Debian packages: docker.io docker-registry skopeo busybox-static ...
#   make engine  deps + a running Docker engine (hack/start-dockerd.sh)
#   make lint    ruff check, ruff format --check, mypy
#   make test    engine + lint + kind-up (a kind cluster, offline when nothing can be pulled),
#                then the whole pytest suite, the in-cluster one (tests/kind) included
#   make demo    engine, then hack/demo.py (on kind when a node image is cached or pullable)
#   make bench   engine, then bench/bench_check.py
#   make fuzz    the admission property test (hypothesis) with a long budget
#   make mutate  mutation testing (hack/mutate.py, mutmut) with tests/unit: >= 90% killed
#   make mutate-ci  the CI share of it: what the last commit changed, or a sample
#   make chaos   imagegate serve against a registry misbehaving in every way, then make fuzz

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := test
.DELETE_ON_ERROR:

VENV := .venv
VENV_STAMP := $(VENV)/.imagegate-installed
# The interpreter for the venv: $(PYTHON) if given, else the first python3 >= 3.11 found.
ifeq ($(origin PYTHON),undefined)
PYTHON := $(shell for p in python3 python3.13 python3.12 python3.11; do \
	$$p -c 'import sys, ensurepip; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1 \
	&& { command -v $$p; break; }; done)
endif
PYTEST_ARGS ?=

export IMAGEGATE_STATE ?= /tmp/imagegate

.PHONY: venv deps engine lint test e2e demo bench fuzz chaos mutate mutate-ci

venv: $(VENV_STAMP)

$(VENV_STAMP): pyproject.toml
	@if [ -z "$(PYTHON)" ]; then \
		echo "make venv: no python3 >= 3.11 with venv support (Debian: apt-get install python3-venv)" >&2; \
		exit 1; fi
	@if [ ! -x $(VENV)/bin/python ] || ! $(VENV)/bin/python -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then \
		echo "make venv: creating $(VENV) with $(PYTHON)"; \
		rm -rf $(VENV); $(PYTHON) -m venv $(VENV); fi
	$(VENV)/bin/python -m pip install --disable-pip-version-check -q -e '.[dev]'
	@touch $@

deps:
	hack/install-deps.sh

engine: deps
	hack/start-dockerd.sh

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

# The pinned kube-apiserver, etcd and helm (hack/tools) are built on first use (cached), and
# so is the kind node image (hack/kind-node-image.sh) when the cluster is made offline.
test: engine lint kind-up
	eval "$$(hack/tools-env.sh)" && $(VENV)/bin/pytest -q $(PYTEST_ARGS) tests

# End-to-end tests only: a real kube-apiserver + etcd, the chart installed with helm.
e2e: engine venv tools
	eval "$$(hack/tools-env.sh)" && $(VENV)/bin/pytest -q $(PYTEST_ARGS) tests/e2e

demo: engine venv tools
	$(VENV)/bin/python hack/demo.py

# The admission property test with a long budget (the suite runs it with a fixed, short one).
fuzz: venv
	HYPOTHESIS_PROFILE=fuzz $(VENV)/bin/pytest -q $(PYTEST_ARGS) tests/unit/test_admission_fuzz.py

# Rules, decision, pod templates, references, digest checks; MUTATE_ARGS=--changed-since origin/main
mutate: venv
	$(VENV)/bin/python hack/mutate.py --min-score 90 $(MUTATE_ARGS)

# CI's share (.ci/run): the functions the last commit changed (<= 150 mutants), or, when it
# changed none, 60 mutants of everything seeded by the commit; any unexplained survivor fails.
MUTATE_BASE ?= HEAD~1
mutate-ci: venv
	$(VENV)/bin/python hack/mutate.py --changed-since $(MUTATE_BASE) --max-mutants 150 \
		--or-sample 60 --seed "$$(git rev-parse HEAD)" --max-unexplained 0 --min-score 90

# The reliability suite, long: imagegate serve against a registry that misbehaves in every way
# (hack/chaos.py; the suite runs tests/integration/test_chaos.py briefly), then the fuzz corpus.
chaos: venv
	$(VENV)/bin/python hack/chaos.py
	$(MAKE) fuzz

bench: engine venv tools
	$(VENV)/bin/python bench/bench_check.py
	$(VENV)/bin/python bench/bench_webhook.py
	$(VENV)/bin/python bench/bench_warm.py
	$(VENV)/bin/python bench/bench_cold.py
	$(VENV)/bin/python bench/bench_scan.py
	$(VENV)/bin/python bench/bench_memory.py
	$(VENV)/bin/python bench/bench_isolation.py
	$(VENV)/bin/python bench/bench_deep.py
	$(VENV)/bin/python bench/bench_layers.py
	$(VENV)/bin/python bench/bench_rebuild_files.py

# Targets of other areas (kind, local control plane, ...) live in hack/make/*.mk.
-include hack/make/*.mk
