# Stagecoach developer commands. Needs only python3 and make; everything else is installed
# into .venv (and, for the test cluster, built into a cache outside the repo).
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: help install test test-fast demo crds crds-check lint typecheck bench clean

help:
	@echo "make demo   - run the example research pipeline locally, offline"
	@echo "make test   - install, start the real test components, run the whole suite"
	@echo "make lint   - ruff + mypy + layering"
	@echo "make crds   - regenerate crds/ from the API models"

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

crds: $(STAMP)
	$(BIN)/stagecoach crds --write --dir crds

crds-check: $(STAMP)
	$(BIN)/stagecoach crds --check --dir crds

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

# Fast unit tests only (no cluster, no model server).
test-fast: $(STAMP)
	$(BIN)/pytest tests/unit -q

test: $(STAMP) crds-check
	$(BIN)/stagecoach validate examples/*/pipeline.yaml
	$(BIN)/pytest -q -m "not bench" $(PYTEST_ARGS)

demo: $(STAMP)
	@echo "make demo: local execution (stagecoach run) is not available yet; validating the example instead"
	$(BIN)/stagecoach validate examples/research-report/pipeline.yaml
	$(BIN)/stagecoach graph examples/research-report/pipeline.yaml

bench: $(STAMP)
	$(BIN)/pytest -q -m bench -s bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

-include hack/cluster.mk
