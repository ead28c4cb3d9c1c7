# One entry point for people and CI. `make demo` and `make test` work from a fresh clone on Debian 12 as root.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DURATION ?=

.PHONY: venv packages lint typecheck test test-fast bench demo schema docs clean

$(STAMP): pyproject.toml
	PYTHON=$(PYTHON) scripts/bootstrap-venv.sh $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

# Debian packages the local stack runs (mosquitto, influxdb); installed only when missing and root.
packages: $(STAMP)
	$(BIN)/ioc stack ensure

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy .

# The whole suite: lint, types, unit and integration tests against real Mosquitto and InfluxDB.
# Three workers on two cores: the long integration tests mostly wait (two-minute outages, ansible runs), and
# each worker starts its own stack on free ports. One file stays on one worker (its module fixtures are shared).
PYTEST_WORKERS ?= 3
test: lint typecheck packages
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadfile

# While iterating: everything but the slow suites.
test-fast: $(STAMP)
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadfile -m "not slow"

bench: $(STAMP) packages
	$(BIN)/python -m benchmarks

demo: $(STAMP) packages
	$(BIN)/ioc demo $(if $(DURATION),--duration $(DURATION),)

schema: $(STAMP)
	$(BIN)/python -m wire.jsonschema > docs/protocol-v1.schema.json

# The configuration reference, generated from the settings models (a unit test checks it is current).
docs: $(STAMP)
	$(BIN)/python -m ioc.configdoc > docs/configuration.md

clean:
	rm -rf $(VENV) .ioc .mypy_cache .ruff_cache .pytest_cache
