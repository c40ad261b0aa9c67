# Two commands matter: `make run` (the whole system on this machine) and `make test`.
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
PYTHON ?= python3

# Local services by default; `make test-containers` leaves them unset so testcontainers starts
# MySQL 8 and RabbitMQ (needs a Docker engine).
export PAYOUTS_DATABASE_URL ?= mysql+asyncmy://root@127.0.0.1:3306/payouts
export PAYOUTS_AMQP_URL ?= amqp://guest:guest@127.0.0.1:5672/

# The container targets use the official images (mysql:8.4, rabbitmq:3.13-management,
# python:3.11-slim) unless PAYOUTS_MYSQL_IMAGE, PAYOUTS_RABBITMQ_IMAGE, PAYOUTS_BASE_IMAGE name
# others. Without a registry, first: eval "$$(scripts/container-engine.sh env)" (.ci/run does).
# The integration tests that cover the database, the broker's dead-letter and TTL-retry topology,
# the relay and the processor; CONTAINER_TESTS=tests/integration runs the whole tier (~5 min).
CONTAINER_TESTS ?= tests/containers tests/integration/test_smoke.py \
	tests/integration/test_api_payouts.py tests/integration/test_rabbitmq_definitions.py \
	tests/integration/test_outbox_relay.py tests/integration/test_processor.py \
	tests/integration/test_dlq_commands.py tests/integration/test_psp_outcome_order.py

.PHONY: install services migrate seed run test test-containers compose-smoke docs bench fuzz lint \
	lock clean

# Every dependency at the version in constraints.txt, pip and the build backend too (the variable
# reaches pip's isolated build environments): a new release on PyPI never changes what CI tests.
# `make lock` takes the newest releases pyproject.toml allows; run the tests after it.
PINNED := PIP_CONSTRAINT=$(CURDIR)/constraints.txt

$(BIN)/payouts: pyproject.toml constraints.txt
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PINNED) $(BIN)/pip install -q --upgrade pip
	$(PINNED) $(BIN)/pip install -q -e '.[dev]'
	touch $@

install: $(BIN)/payouts

services:
	scripts/local-services.sh

migrate: install services
	$(BIN)/payouts migrate

seed: migrate
	$(BIN)/payouts seed

test: install services  # the tests reset their vhost through the management API
	# Unit, integration and container-check tests on three workers (most of a test is waiting on MariaDB
	# or RabbitMQ: 253 s against 296 s on two, same machine, same hour), each with its own database and
	# vhost; beside them, in a process of their own, the fault tests, which stop and start a MariaDB
	# and a RabbitMQ of their own (tests/faults/outages.py) and mostly wait (their output follows the
	# tier's). Then, in one process, the fuzzing (its last test judges what the others wrote) and
	# what runs the services as processes and waits on them with deadlines (browser and end-to-end
	# tests: they missed those deadlines three times beside the other worker's load).
	# FIRST_TIER_DONE: a file touched between the two (.ci/run starts the container checks then,
	# beside the fuzzing and the browser and end-to-end tests).
	@mkdir -p .run
	$(BIN)/pytest -q -p no:cacheprovider --durations=5 tests/faults > .run/fault-tests.log 2>&1 & \
	faults=$$!; \
	$(BIN)/pytest -q -n 3 --dist loadfile --durations=15 tests/unit tests/integration tests/containers; \
	tier=$$?; wait $$faults; faulted=$$?; \
	echo "--- the fault tests, beside the tier:"; cat .run/fault-tests.log; \
	[ $$tier -eq 0 ] && [ $$faulted -eq 0 ]
	$(if $(FIRST_TIER_DONE),touch $(FIRST_TIER_DONE))
	$(BIN)/pytest -q --durations=10 tests/fuzz tests/browser tests/e2e

test-containers: install
	env -u PAYOUTS_DATABASE_URL -u PAYOUTS_AMQP_URL $(BIN)/pytest -q $(CONTAINER_TESTS)

compose-smoke: install  # docker-compose.yml end to end on free ports; always `down -v` after
	$(BIN)/python -m tests.containers.compose_smoke

docs: install
	$(BIN)/payouts docs asyncapi --output docs/asyncapi.yaml

bench: install services  # BENCH_ARGS="--long-soak --profile" for the 5-minute soak and profiles
	$(PINNED) $(BIN)/pip install -q -e '.[dev,bench]'
	$(BIN)/python -m bench.run $(BENCH_ARGS)

fuzz: install services  # longer schemathesis and ledger state-machine runs than `make test`'s
	FUZZ_EXAMPLES=1000 STATEFUL_EXAMPLES=100 $(BIN)/pytest -q tests/fuzz \
		tests/integration/test_ledger_stateful.py

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

lock:  # constraints.txt from a new venv holding the newest releases pyproject.toml allows
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install -q --upgrade pip setuptools  # setuptools: the build backend
	.lock-venv/bin/pip install -q -e '.[dev,bench]'
	{ sed -n '/^#/p' constraints.txt; .lock-venv/bin/pip freeze --all --exclude-editable; } \
		> constraints.new
	mv constraints.new constraints.txt && rm -rf .lock-venv

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .run

run: migrate
	$(BIN)/payouts up
