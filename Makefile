# One command per job; `make test` is exactly what CI (.ci/run) runs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# $(call need,COMMAND,PACKAGE): install the Debian PACKAGE unless COMMAND is on the PATH.
need = command -v $(1) >/dev/null 2>&1 || { apt-get update -qq && \
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(2) >/dev/null; }

.PHONY: demo test check lint format typecheck docs pytest services bench-services bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

## demo: install and serve the showcase chat on http://127.0.0.1:8000 (rooms in memory)
demo: $(STAMP)
	REDIS_URL= $(PY) -m microasgi run examples.chat.app:app --host 127.0.0.1 --port 8000

## services: system packages the test suite needs (Redis; Chromium for the browser test)
services:
	@$(call need,redis-server,redis-server)
	@$(call need,chromium,chromium)

## bench-services: system packages the benchmarks need (wrk; Redis for the fan-out)
bench-services:
	@$(call need,wrk,wrk)
	@$(call need,redis-server,redis-server)

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: $(STAMP)
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

typecheck: $(STAMP)
	$(PY) -m mypy --strict microasgi

docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --quiet --site-dir site

pytest: $(STAMP) services
	$(PY) -m pytest --cov --cov-report=term-missing:skip-covered --cov-fail-under=95

check: lint typecheck docs

## test: everything CI runs: linters, type checks, docs build, the whole suite with coverage
test: $(STAMP) services lint typecheck docs pytest

## bench: every benchmark beside the peers (about half an hour); each rewrites its own section
## of docs/benchmarks.md (chart beside it) and of README.md. `make bench QUICK=1`: a smoke run
## of each, written to copies in benchmarks/results/quick/ (docs/ and README.md left alone)
bench: BENCH_DIR = $(if $(QUICK),benchmarks/results/quick,.)
bench: BENCH_FLAGS = $(if $(QUICK),--quick)
bench: $(STAMP) bench-services
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	$(if $(QUICK),mkdir -p $(BENCH_DIR)/docs && cp docs/benchmarks.md $(BENCH_DIR)/docs/ && cp README.md $(BENCH_DIR)/)
	$(PY) benchmarks/run.py $(BENCH_FLAGS) --endtoend --output $(BENCH_DIR)/docs/benchmarks.md --readme $(BENCH_DIR)/README.md
	$(PY) benchmarks/wsecho.py $(BENCH_FLAGS) --output $(BENCH_DIR)/docs/benchmarks.md
	$(PY) benchmarks/uploads.py $(BENCH_FLAGS) --output $(BENCH_DIR)/docs/benchmarks.md
	$(PY) benchmarks/fanout.py $(BENCH_FLAGS) --output $(BENCH_DIR)/docs/benchmarks.md
	$(PY) benchmarks/startup.py $(BENCH_FLAGS) --output $(BENCH_DIR)/docs/benchmarks.md --readme $(BENCH_DIR)/README.md

clean:
	rm -rf $(VENV) site .coverage .mypy_cache .ruff_cache
