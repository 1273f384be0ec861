# The wallet's two commands: `make run` (everything, with a demo) and `make test` (the suite).
SHELL := /bin/bash
.DEFAULT_GOAL := help
.PHONY: help install infra migrate keys run stop status test test-unit lint bench clean reset

export WALLET_HOME ?= $(CURDIR)/.run
VENV := $(CURDIR)/.venv
PY := $(VENV)/bin/python
export PYTHON := $(PY)
PYTHON_BIN ?= python3

help:
	@echo "make run     start Postgres, Kafka, migrate, start edge/ledger/projection, print a demo"
	@echo "make stop    stop the services, Kafka and Postgres (by pid)"
	@echo "make status  what is running"
	@echo "make test    the whole suite against real Postgres and Kafka (started if needed)"
	@echo "make lint    ruff and mypy"
	@echo "make bench   the callback benchmark (see README)"
	@echo "make reset   stop everything and wipe local data"

# The virtualenv, reinstalled when the dependencies or the set of packages change.
$(VENV)/.installed: pyproject.toml $(wildcard libs/*/__init__.py services/*/__init__.py)
	@test -x $(PY) || $(PYTHON_BIN) -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip
	@$(PY) -m pip install -q -e '.[dev]'
	@touch $@

install: $(VENV)/.installed

infra: install
	@bash deploy/local/postgres.sh start
	@bash deploy/local/kafka.sh start

migrate: infra
	@$(PY) -m wallet_platform.schema migrate

# A local stand-in for Quadcode's key pair (Quadcode signs callbacks with its private key; the
# wallet verifies with the public one), made with the openssl commands of Quadcode's README.
$(WALLET_HOME)/keys/quadcode-private.pem:
	@mkdir -p $(WALLET_HOME)/keys
	@openssl ecparam -name prime256v1 -genkey -noout -out $@
	@openssl ec -in $@ -pubout -out $(WALLET_HOME)/keys/quadcode-public.pem 2>/dev/null

$(WALLET_HOME)/wallet.env: $(WALLET_HOME)/keys/quadcode-private.pem
	@printf '%s\n' \
	  "# Local settings for make run (see README: Configuration)." \
	  "WALLET_QUADCODE_PUBLIC_KEY_FILES=$(WALLET_HOME)/keys/quadcode-public.pem" \
	  "WALLET_ENVIRONMENT=sandbox" > $@

keys: $(WALLET_HOME)/wallet.env

run: migrate keys
	@bash deploy/local/services.sh start
	@bash deploy/local/demo.sh

stop:
	@bash deploy/local/services.sh stop
	@bash deploy/local/kafka.sh stop
	@bash deploy/local/postgres.sh stop

status:
	@bash deploy/local/services.sh status || true
	@bash deploy/local/kafka.sh status || true
	@bash deploy/local/postgres.sh status || true

test: install
	@bash deploy/local/postgres.sh start >/dev/null
	@bash deploy/local/kafka.sh start >/dev/null
	@$(PY) -m pytest $(PYTEST_ARGS)

test-unit: install
	@$(PY) -m pytest -m unit $(PYTEST_ARGS)

lint: install
	@$(VENV)/bin/ruff check .
	@$(VENV)/bin/ruff format --check .
	@$(VENV)/bin/mypy libs services

bench: migrate keys
	@$(PY) -m bench $(BENCH_ARGS)

reset:
	@bash deploy/local/services.sh stop || true
	@bash deploy/local/kafka.sh reset
	@bash deploy/local/postgres.sh reset
