# Two commands matter: `make run` (the whole system on this machine) and `make test`.
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
PYTHON ?= python3

# Local services by default; `make test-containers` leaves them unset so testcontainers starts
# MySQL 8 and RabbitMQ (needs a Docker engine).
export PAYOUTS_DATABASE_URL ?= mysql+asyncmy://root@127.0.0.1:3306/payouts
export PAYOUTS_AMQP_URL ?= amqp://guest:guest@127.0.0.1:5672/

.PHONY: install services migrate seed run test test-containers docs bench fuzz lint clean

$(BIN)/payouts: pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

install: $(BIN)/payouts

services:
	scripts/local-services.sh

migrate: install services
	$(BIN)/payouts migrate

seed: migrate
	$(BIN)/payouts seed

test: install
	$(BIN)/pytest -q

test-containers: install
	env -u PAYOUTS_DATABASE_URL -u PAYOUTS_AMQP_URL $(BIN)/pytest -q

docs: install
	$(BIN)/payouts docs asyncapi --output docs/asyncapi.yaml

bench: install services  # BENCH_ARGS="--long-soak --profile" for the 5-minute soak and profiles
	$(BIN)/pip install -q -e '.[dev,bench]'
	$(BIN)/python -m bench.run $(BENCH_ARGS)

fuzz: install  # a longer schemathesis run than the one in `make test`
	FUZZ_EXAMPLES=1000 $(BIN)/pytest -q tests/fuzz

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .run

run: migrate
	$(BIN)/payouts up
