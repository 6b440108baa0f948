# Quick start (README): `make run` and `make test`, on a fresh machine with Python 3.11.
# Both build a local .venv from the pinned requirements first.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
SOURCES := lib reconciler.py
PYFILES := $(SOURCES) tests tools $(wildcard bench)

.PHONY: run test lint manifests k8s-tools bench soak clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# The stamps re-install when a requirements file changes.
$(VENV)/.runtime: requirements.txt | $(BIN)/python
	$(BIN)/pip install -q -r requirements.txt
	touch $@

$(VENV)/.dev: requirements.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/pip install -q -r requirements-dev.txt
	touch $@ $(VENV)/.runtime

# The built-in demo cluster, always: a first command copied from the README
# must be safe anywhere, so KUBECONFIG and ~/.kube/config are ignored here.
# A real cluster is always an explicit command: `.venv/bin/python
# reconciler.py --dry-run ...`, which the demo prints at its end.
run: $(VENV)/.runtime
	$(BIN)/python -m tools.demo $(ARGS)

lint: $(VENV)/.dev
	$(BIN)/ruff check $(PYFILES)
	$(BIN)/ruff format --check $(PYFILES)
	$(BIN)/mypy $(SOURCES)

test: lint
	$(BIN)/pytest

# helm and kubectl (with kustomize) for the chart and kustomize tests and for
# `make manifests`, cached under ~/.cache/kubelet-endpoints-reconciler.
k8s-tools:
	tools/install-k8s-tools.sh

# cronjob.yaml and deploy/cronjob.yaml are rendered from the Helm chart, and
# the chart's files/ copy deploy/alerts.yaml and deploy/servicemonitor.yaml:
# edit the sources, then run this (tests/deploy/test_chart.py fails when stale).
manifests: $(VENV)/.runtime k8s-tools
	$(BIN)/python -m tools.manifests

# The benchmark (docs/performance.md): 1,000 / 5,000 / 15,000 nodes of ~20 KB
# served by the fake API server in a process of its own; about 15 minutes.
# Options in ARGS, e.g. ARGS="--sizes 1000 --runs 3"; ARGS=--smoke takes seconds.
# It runs in a venv of the runtime requirements only, as the image has them:
# a dev pin (kubernetes-validate) makes `import kubernetes` 0.1 s slower.
BENCH_VENV := .venv-bench
$(BENCH_VENV)/.runtime: requirements.txt
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install -q --upgrade pip
	$(BENCH_VENV)/bin/pip install -q -r requirements.txt
	touch $@

bench: $(BENCH_VENV)/.runtime
	$(BENCH_VENV)/bin/python -m bench.bench $(ARGS)

# The fault soak (docs/reliability.md): thousands of runs under injected faults,
# every invariant checked after each write and each run; about 5 minutes with
# the defaults below. CI runs a bounded version (tests/fake/test_soak.py).
SOAK_ARGS ?= --runs 500 --seed 1 2 3 4 5 6 --overlaps 10 --jobs 6
soak: $(VENV)/.dev
	$(BIN)/python -m bench.soak $(SOAK_ARGS)

clean:
	rm -rf $(VENV) $(BENCH_VENV) .pytest_cache .mypy_cache .ruff_cache
