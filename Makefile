# Two entry points, each self-contained on a fresh clone:
#   make repro   set up .venv and run the whole DVC pipeline on the default data
#   make test    set up .venv and run the test suite (includes a real `dvc repro` on a slice)
#   make lint    ruff (lint and format), import-linter (the layer contracts in .importlinter), mypy
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Telemetry off for every tool this project starts.
export DO_NOT_TRACK := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export ORT_DISABLE_TELEMETRY := 1
export DVC_NO_ANALYTICS := 1

.PHONY: setup repro test lint test-fast prefect-up prefect-down clean-venv docs docs-serve screenshots

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

# The DVC remote the retrain flow pulls from and pushes to: $EVERGREEN_DVC_REMOTE when set, else a default
# remote DVC already has (e.g. one committed to .dvc/config with `dvc remote add -d`), else a folder in your
# home. Written to .dvc/config.local (git-ignored): a machine's path never lands in a commit. Idempotent.
DEFAULT_DVC_REMOTE := $(HOME)/.cache/evergreen/dvc-remote

setup: $(BIN)/.installed
	@if [ -n "$$EVERGREEN_DVC_REMOTE" ]; then \
		$(BIN)/dvc remote add --local --default --force evergreen "$$EVERGREEN_DVC_REMOTE"; \
	elif ! $(BIN)/dvc remote default >/dev/null 2>&1; then \
		$(BIN)/dvc remote add --local --default --force evergreen "$(DEFAULT_DVC_REMOTE)"; \
	fi
	@echo "DVC remote (default): $$($(BIN)/dvc remote default)"

# Stage commands call `python`: put the venv first on PATH so DVC runs them with its interpreter.
repro: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro

test: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest

# The inner loop: everything but the real pipeline runs, servers and process tests (under 2 minutes).
test-fast: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -m "not slow"

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy

# The lifecycle loop: Prefect server + process work pool + deployments (prefect.yaml) + worker.
prefect-up: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m flows.stack up

prefect-down:
	$(BIN)/python -m flows.stack down

clean-venv:
	rm -rf $(VENV)

# The documentation site (docs/, mkdocs.yml): built strictly (a broken link or a page missing from the nav fails).
# NO_MKDOCS_2_WARNING silences a banner the Material theme prints; it is not a build warning.
docs: setup
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

docs-serve: setup
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve

# Screenshots for the docs, made by headless Chromium (docs/screenshots.py), not by hand.
screenshots: setup
	$(BIN)/python docs/screenshots.py --workspace . --prefect
