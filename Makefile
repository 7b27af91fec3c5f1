# The two commands: `make run` (the main job on the local stack) and `make test`.
# Every target does its own set-up: the virtualenv, the packages, the services.

SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test up down status lint typecheck pytest unit crash-test bench-baseline bench-matching bench-e2e bench-sinks bench-gateway bench-wallet bench-pipeline bench-codecs lock clean

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), f"Python 3.11 is required, found {sys.version}"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

## The main job: the local stack, then a demo market through the whole pipeline (Ctrl-C stops).
RATE ?= 200
run: $(STAMP)
	bash ops/stack.sh up
	bash ops/prometheus/prometheus.sh up
	$(BIN)/trade-engine check
	$(BIN)/trade-engine demo --rate $(RATE)

## Kill matcher workers during seeded runs; trades must equal an offline replay.
crash-test: $(STAMP)
	bash ops/kafka/kafka.sh up
	$(BIN)/python -m ops.crash_test

## Lint, types, then every test (the broker-backed ones start the local stack).
test: lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest

## Only the pure tests: no services needed.
unit: $(STAMP)
	$(BIN)/pytest -m "not broker and not postgres and not rabbitmq and not cluster"

up:
	bash ops/stack.sh up
down:
	bash ops/stack.sh down
status:
	bash ops/stack.sh status

bench-baseline: $(STAMP)
	bash ops/kafka/kafka.sh up
	$(BIN)/python -m ops.benchmarks.bench_baseline

bench-e2e: $(STAMP)
	bash ops/kafka/kafka.sh up
	$(BIN)/python -m ops.benchmarks.bench_e2e

bench-sinks: $(STAMP)
	bash ops/stack.sh up
	$(BIN)/python -m ops.benchmarks.bench_sink

## POST /api/v1/orders -> 201 (durable in Kafka): latency at 2,000/s offered and accepted/s at saturation.
bench-gateway: $(STAMP)
	bash ops/stack.sh up
	$(BIN)/python -m ops.benchmarks.bench_gateway

bench-matching: $(STAMP)
	$(BIN)/python -m ops.benchmarks.bench_matching

## The whole pipeline as make run starts it, at stepped offered rates: sustained rate, latency, CPU per order by process.
bench-pipeline: $(STAMP)
	bash ops/stack.sh up
	$(BIN)/python -m ops.benchmarks.bench_pipeline

bench-wallet: $(STAMP)
	bash ops/postgres/postgres.sh up
	$(BIN)/python -m ops.benchmarks.bench_wallet

## Per-record decode cost of te.executions, te.trades and te.commands: the old decoders and the typed ones.
bench-codecs: $(STAMP)
	$(BIN)/python -m ops.benchmarks.bench_codecs

## Re-pin the versions CI installs (after changing dependencies in pyproject.toml).
lock:
	rm -rf /tmp/te-lock-venv && $(PYTHON) -m venv /tmp/te-lock-venv
	/tmp/te-lock-venv/bin/pip install -q -e '.[dev]'
	/tmp/te-lock-venv/bin/pip freeze --exclude-editable | grep -v '^-e' > constraints.txt

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache

## The three-node Kafka cluster of the chaos tests (127.0.0.1:19092-19094) and Toxiproxy (API on 18474).
.PHONY: cluster-up cluster-down cluster-status toxiproxy-up toxiproxy-down
cluster-up:
	bash ops/kafka/cluster.sh up
	bash ops/toxiproxy/toxiproxy.sh up
	@bash ops/kafka/cluster.sh env
cluster-down:
	bash ops/toxiproxy/toxiproxy.sh down
	bash ops/kafka/cluster.sh down
cluster-status:
	bash ops/kafka/cluster.sh status; bash ops/toxiproxy/toxiproxy.sh status
toxiproxy-up:
	bash ops/toxiproxy/toxiproxy.sh up
toxiproxy-down:
	bash ops/toxiproxy/toxiproxy.sh down

## Faults under load on the three-node cluster (issue 15); last stdout line: one JSON report.
.PHONY: chaos
CHAOS_ARGS ?=
chaos: $(STAMP)
	$(BIN)/python -m ops.chaos.run $(CHAOS_ARGS)
