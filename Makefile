# One entry point for people and CI. `make demo` and `make test` work from a fresh clone on Debian 12 as root.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DURATION ?=

.PHONY: venv lock lockcheck timeless packages lint typecheck test test-fast bench soak demo schema docs clean

# The virtualenv is built from the committed locks (requirements/, docs/dependencies.md), with hashes checked;
# the project itself goes in editable and without dependencies. A changed lock rebuilds the virtualenv from
# scratch, so nothing of the old set stays behind.
LOCKS := requirements/bootstrap.txt requirements/dev.txt
$(STAMP): pyproject.toml $(LOCKS)
	@if [ -e $(STAMP) ] && [ -n "$(filter requirements/%,$?)" ]; then echo "make: the lock changed, rebuilding $(VENV)"; rm -rf $(VENV); fi
	PYTHON=$(PYTHON) scripts/bootstrap-venv.sh $(VENV)
	$(BIN)/pip install --quiet --require-hashes --no-deps -r requirements/bootstrap.txt
	$(BIN)/pip install --quiet --require-hashes --no-deps -r requirements/dev.txt
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	@touch $(STAMP)

venv: $(STAMP)

# Debian packages the local stack runs (mosquitto, influxdb); installed only when missing and root.
packages: $(STAMP)
	$(BIN)/ioc stack ensure

# Refresh the locks from pyproject.toml's ranges (a deliberate commit, after `make test` passes on them).
lock: $(STAMP)
	scripts/lock.sh

# The installed set is exactly the lock: nothing upgraded, added or missing by hand.
lockcheck: $(STAMP)
	$(BIN)/python scripts/check_lock.py $(LOCKS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy .

# The whole suite: lint, types, unit and integration tests against real Mosquitto and InfluxDB.
# Three workers on two cores: the long integration tests mostly wait (two-minute outages, ansible runs), and
# each worker starts its own stack on free ports. One file stays on one worker (its module fixtures are shared).
PYTEST_WORKERS ?= 3
test: lockcheck lint typecheck packages
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadfile
	$(MAKE) --no-print-directory timeless

# The unit tier on other days (tests/timetravel.py): a year and a day ahead at UTC+14, and across the end of a
# leap day at UTC-03:30. A test that holds a date of the day it was written, or assumes UTC, fails here.
timeless: $(STAMP)
	IOC_TEST_TRAVEL=+366d TZ=Pacific/Kiritimati $(BIN)/pytest -q -n $(PYTEST_WORKERS) tests/unit
	IOC_TEST_TRAVEL=2028-02-29T23:30:00+00:00 TZ=America/St_Johns $(BIN)/pytest -q -n $(PYTEST_WORKERS) tests/unit

# While iterating: everything but the slow suites.
test-fast: $(STAMP)
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadfile -m "not slow"

bench: $(STAMP) packages
	$(BIN)/python -m benchmarks

# The demo city at SOAK_FACTOR times its poll rate for SOAK_DURATION seconds: every process's memory and open files
# each minute, loss counted exactly (benchmarks/soak.py; figures in benchmarks/README.md). An hour by default.
SOAK_DURATION ?= 3600
SOAK_FACTOR ?= 10
soak: $(STAMP) packages
	$(BIN)/python -m benchmarks.soak --duration $(SOAK_DURATION) --factor $(SOAK_FACTOR)

demo: $(STAMP) packages
	$(BIN)/ioc demo $(if $(DURATION),--duration $(DURATION),)

schema: $(STAMP)
	$(BIN)/python -m wire.jsonschema > docs/protocol-v1.schema.json

# The configuration reference, generated from the settings models (a unit test checks it is current).
docs: $(STAMP)
	$(BIN)/python -m ioc.configdoc > docs/configuration.md

clean:
	rm -rf $(VENV) .ioc .mypy_cache .ruff_cache .pytest_cache
