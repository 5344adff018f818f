# Two commands: `make up` brings the system up, `make test` runs every test.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

SHELL := /bin/bash
.PHONY: up test lint format bench clean

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

up: $(STAMP)
	$(PY) runner.py

# Tests in parallel processes (pytest-xdist): most of a test's time is spent waiting
# on Postgres or on a subprocess. TEST_WORKERS=0 runs them in this one process.
TEST_WORKERS ?= 2
test: lint
	$(PY) -m pytest -n $(TEST_WORKERS)

# ruff, then mypy: --strict for the library, its defaults for the rest.
lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy --strict queue/pgcourier
	$(PY) -m mypy services runner.py bench examples

format: $(STAMP)
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

BENCH_STAMP := $(VENV)/.bench-installed

$(BENCH_STAMP): $(STAMP) bench/requirements.lock
	$(PY) -m pip install --quiet --disable-pip-version-check -r bench/requirements.lock
	touch $(BENCH_STAMP)

# Every benchmark, one after the other on the same Postgres; the output is also kept
# in bench/last-run.txt. BENCH_ARGS=--quick for a short pass. throughput.py runs
# pgcourier with metrics and tracing off and on, side by side, and observing.py what
# they cost a worker in CPU per message. shop.py runs the shop
# with a database per service and with one database, and compares the two.
bench: $(BENCH_STAMP)
	@set -o pipefail; { \
	  $(PY) bench/throughput.py $(BENCH_ARGS) && \
	  $(PY) bench/observing.py && \
	  $(PY) bench/links.py $(BENCH_ARGS) && \
	  $(PY) bench/latency_path.py && \
	  $(PY) bench/ceiling.py && \
	  $(PY) bench/growth.py $(BENCH_ARGS) && \
	  $(PY) bench/shop.py; \
	} 2>&1 | tee bench/last-run.txt

# The tests' servers' folders: on disk, and in memory (tests/helpers.py: server_folder).
clean:
	rm -rf $(VENV) .pgdata-test .pgdata-test-second* .pgdata-chaos-test
	rm -rf /dev/shm/pgcourier-test-$$(printf %s "$(CURDIR)" | sha256sum | cut -c1-10)

# The fault suite: the whole shop under load while workers are killed, Postgres is
# crashed and LISTEN connections are dropped; then every invariant is checked in SQL.
# 10 minutes by default: CHAOS_ARGS="--minutes 30" for longer (python -m tests.chaos -h).
.PHONY: chaos
chaos: $(STAMP)
	$(PY) -m tests.chaos $(CHAOS_ARGS)
