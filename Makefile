# Front door of the monorepo. `make help` lists every target with one line each.
# All targets run inside .venv, which `make setup` creates from the pinned requirement files.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# The stamp is keyed on the requirement files and package manifests: setup re-runs only when they change.
SETUP_INPUTS := requirements/cpu.txt requirements/assets.txt packages/common/pyproject.toml \
	packages/rexrag/pyproject.toml packages/anessuite/pyproject.toml
SETUP_KEY := $(shell cat $(SETUP_INPUTS) 2>/dev/null | sha256sum | cut -c1-16)
STAMP := $(VENV)/.setup-$(SETUP_KEY)

export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_NO_ADVISORY_WARNINGS ?= 1
export TOKENIZERS_PARALLELISM ?= false
export PYTHONHASHSEED ?= 0

.PHONY: help setup test test-fast lint format mlflow-ui clean

help: ## list targets
	@grep -hE '^[a-zA-Z0-9_.-]+:.*## ' $(MAKEFILE_LIST) | sort | awk 'BEGIN{FS=":.*## "}{printf "  %-32s %s\n", $$1, $$2}'

setup: $(STAMP) ## create .venv with the pinned CPU stack and the three packages (idempotent)

$(STAMP): $(SETUP_INPUTS)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	DS_BUILD_OPS=0 $(PIP) install -r requirements/cpu.txt
	$(PIP) install --no-deps -r requirements/assets.txt
	$(PIP) install --no-deps --no-build-isolation -e packages/common -e packages/rexrag -e packages/anessuite
	@rm -f $(VENV)/.setup-*
	@touch $@

# Parallel test processes (pytest-xdist), one file per process at a time; `make test TEST_WORKERS=1` runs serially.
TEST_WORKERS ?= 2

test: setup ## run the whole test suite (CPU, offline)
	$(PY) -m pytest tests -q -n $(TEST_WORKERS) --dist loadfile --durations=25

test-fast: setup ## run the tests not marked slow
	$(PY) -m pytest tests -q -m "not slow"

lint: setup ## ruff check
	$(VENV)/bin/ruff check packages tests experiments infra

format: setup ## ruff format + autofix
	$(VENV)/bin/ruff format packages tests experiments infra
	$(VENV)/bin/ruff check --fix packages tests experiments infra

MLFLOW_PORT ?= 5000
mlflow-ui: setup ## the MLflow UI over runs/mlflow.db (or $MLFLOW_TRACKING_URI) on http://127.0.0.1:$(MLFLOW_PORT); prints each experiment's runs page
	$(PY) -m rlcore.mlflow_ui --port $(MLFLOW_PORT)

clean: ## remove caches and test outputs (keeps .venv, runs/ and the model cache)
	rm -rf .pytest_cache .ruff_cache build dist
	find . -name __pycache__ -type d -prune -not -path './.venv/*' -exec rm -rf {} +

# Area makefiles add their own targets (index, serve-retriever, bench-*, demo, reproduce-*, compare, ...).
-include mk/*.mk
