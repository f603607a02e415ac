# traitstream: make run | make test | make lint | make bench | make fuzz
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install run test unit lint format bench bench-scaling fuzz services sdks clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml setup.py $(wildcard src/traitstream/compiled/*.[ch])
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "traitstream needs Python 3.11 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

## Run the whole pipeline in the foreground (broker, migrations, edge, workers). Ctrl-C stops it.
run: install
	$(BIN)/traitstream dev

## Install (Debian, as root) and start what the project needs beside Python: Java, Maven, PostgreSQL, Redis,
## and for the SDK tests Node.js, npm and Chromium.
services:
	deploy/local/services.sh

## The whole suite against Apache Kafka (started by the tests), local PostgreSQL and Redis,
## with the compiled modules required; then the unit, contract and integration tests again with
## the Python implementation alone (TRAITSTREAM_IMPL, docs/performance.md).
test: install sdks
	TRAITSTREAM_IMPL=c $(BIN)/python -m pytest
	TRAITSTREAM_IMPL=python $(BIN)/python -m pytest tests/unit tests/contract tests/integration

## The JavaScript SDKs the tests drive (tests/sdks), from its lock file.
sdks: tests/sdks/node_modules/.package-lock.json

tests/sdks/node_modules/.package-lock.json: tests/sdks/package.json tests/sdks/package-lock.json
	cd tests/sdks && npm ci --no-audit --no-fund

## Unit tests only, and the in-memory half of the contract tests: no network, seconds.
unit: install
	$(BIN)/python -m pytest tests/unit tests/contract -m "not integration"

lint: install
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(BIN)/mypy

format: install
	$(BIN)/ruff format src tests
	$(BIN)/ruff check --fix src tests

bench: install
	$(BIN)/traitstream bench

## The consumer group protocols measured while the workers scale 1 -> 3 -> 6 -> 1 (docs/scaling.md).
bench-scaling: install
	$(BIN)/python -m tests.bench.scaling --rounds 3

## Fuzz every compiled entry point under AddressSanitizer, FUZZ_SECONDS each (corpus in .fuzz/).
FUZZ_SECONDS ?= 600
fuzz: install
	$(BIN)/python -m tests.fuzz --seconds $(FUZZ_SECONDS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis .fuzz tests/sdks/node_modules
