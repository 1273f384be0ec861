# The wallet's two commands: `make run` (everything, with a demo) and `make test` (the suite).
SHELL := /bin/bash
.DEFAULT_GOAL := help
.PHONY: help install infra migrate keys operator-admin-key run stop status test test-unit lint bench bench-compare \
	clean reset test-image

export WALLET_HOME ?= $(CURDIR)/.run
VENV := $(CURDIR)/.venv
PY := $(VENV)/bin/python
export PYTHON := $(PY)
PYTHON_BIN ?= python3

help:
	@echo "make run     start Postgres, Kafka, migrate, start the services and the Quadcode and"
	@echo "             Swapgate simulators, print a demo (callbacks, trading room, trades,"
	@echo "             one USDT -> BTC exchange)"
	@echo "make stop    stop the services, Kafka and Postgres (by pid)"
	@echo "make status  what is running"
	@echo "make test    the whole suite against real Postgres and Kafka (started if needed)"
	@echo "make test-image  build the service image with buildah (no registry needed; root; minutes"
	@echo "             when cold) and start a service from it (docs/deployment.md)"
	@echo "make lint    ruff and mypy"
	@echo "make bench   the callback benchmark (see docs/performance.md)"
	@echo "make bench-compare  the product and the naive wallet of ../shared side by side, in one"
	@echo "             sitting; options in BENCH_COMPARE_ARGS (see docs/performance.md)"
	@echo "make reset   stop everything and wipe local data"

# The virtualenv, reinstalled when the dependencies or the set of packages change.
$(VENV)/.installed: pyproject.toml $(wildcard libs/*/__init__.py services/*/__init__.py tools/*/__init__.py)
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

# Local keys, made with the openssl commands of Quadcode's README (P-256, for ES256):
# - quadcode-*.pem: a stand-in for Quadcode's pair. The simulator signs the balance callbacks with
#   the private half; the wallet (edge, projection) verifies them with the public half.
# - client-*.pem: our own pair, as the B2B client. The operator API signs its calls to Quadcode's
#   gateway with the private half; the simulator, playing Quadcode, verifies with the public half.
# Private keys are listed as prerequisites below, so make never treats them as intermediate files
# (which it would delete).
KEYS := $(WALLET_HOME)/keys
QUADCODE_SIM_URL := http://127.0.0.1:18090
SWAPGATE_SIM_URL := http://127.0.0.1:18091

$(KEYS)/%-private.pem:
	@mkdir -p $(@D)
	@(umask 077 && openssl ecparam -name prime256v1 -genkey -noout -out $@)

$(KEYS)/%-public.pem: $(KEYS)/%-private.pem
	@openssl ec -in $< -pubout -out $@ 2>/dev/null

# The master key that encrypts operator API key secrets at rest (Fernet; see
# docs/operator-keys.md). Rotation: put a new key on the first line, `python -m operator_api
# master rotate`, then remove the old line.
$(KEYS)/operator-master-keys: $(VENV)/.installed
	@mkdir -p $(@D)
	@test -s $@ || (umask 077 && $(PY) -m operator_api master new > $@)

# Our Swapgate API key pair, in the formats of Swapgate's generate-api-key (public: base64 of 32
# bytes, secret: hex of 32 bytes). Locally the Swapgate simulator is started knowing this pair
# (deploy/local/services.sh); against the real Swapgate, the pair comes from its generate-api-key.
$(KEYS)/swapgate-api-public-key:
	@mkdir -p $(@D)
	@openssl rand -base64 32 > $@

$(KEYS)/swapgate-api-secret-key:
	@mkdir -p $(@D)
	@(umask 077 && openssl rand -hex 32 > $@)

# Rewritten when a key is new or this Makefile changed; keys and secrets are never replaced.
# (services.sh restarts a running service when this file is newer than its start.)
$(WALLET_HOME)/wallet.env: Makefile $(KEYS)/quadcode-private.pem $(KEYS)/quadcode-public.pem \
		$(KEYS)/client-private.pem $(KEYS)/client-public.pem $(KEYS)/operator-master-keys \
		$(KEYS)/swapgate-api-public-key $(KEYS)/swapgate-api-secret-key
	@printf '%s\n' \
	  "# Local settings for make run (see docs/configuration.md, docs/quadcode-integration.md)." \
	  "WALLET_QUADCODE_PUBLIC_KEY_FILES=$(KEYS)/quadcode-public.pem" \
	  "WALLET_ENVIRONMENT=sandbox" \
	  "# Our calls to Quadcode's gateway; locally the simulator plays Quadcode." \
	  "WALLET_QUADCODE_BASE_URL=$(QUADCODE_SIM_URL)" \
	  "WALLET_QUADCODE_ISSUER=local-b2b-client" \
	  "WALLET_QUADCODE_ENVIRONMENT=sandbox" \
	  "WALLET_QUADCODE_PRIVATE_KEY_PATH=$(KEYS)/client-private.pem" \
	  "WALLET_OPERATOR_MASTER_KEYS_FILE=$(KEYS)/operator-master-keys" \
	  "# Exchanges through Swapgate (see docs/exchange.md); locally the Swapgate simulator." \
	  "WALLET_SWAPGATE_BASE_URL=$(SWAPGATE_SIM_URL)" \
	  "WALLET_SWAPGATE_PUBLIC_KEY=$$(cat $(KEYS)/swapgate-api-public-key)" \
	  "WALLET_SWAPGATE_SECRET_KEY_FILE=$(KEYS)/swapgate-api-secret-key" \
	  "WALLET_SWAPGATE_MARKUP=0.3" \
	  "WALLET_SWAPGATE_PAYOUT_ADDRESSES=BTC:local-treasury-btc,USDT:local-treasury-usdt,ETH:local-treasury-eth" \
	  "WALLET_EXCHANGE_POLL_MAX=2" > $@

keys: $(WALLET_HOME)/wallet.env

# The first operator API key (admin), made with the bootstrap CLI straight in the database; its
# credentials {baseUrl, apiId, publicKey, secretKey} go to $(KEYS)/operator-admin.json (mode 0600).
# Reused while the database holds it active with that secret; made anew otherwise (make reset).
OPERATOR_ADMIN := $(KEYS)/operator-admin.json
operator-admin-key: migrate keys
	@export WALLET_ENV_FILE=$(WALLET_HOME)/wallet.env; \
	if ! $(PY) -m operator_api keys check $(OPERATOR_ADMIN) >/dev/null 2>&1; then \
	  $(PY) -m operator_api keys create --name operator-admin --role admin \
	    --whitelist 127.0.0.1/32,::1/128 --credentials $(OPERATOR_ADMIN) \
	    --base-url http://127.0.0.1:$${WALLET_OPERATOR_API_PORT:-18083} --json >/dev/null && \
	  echo "operator API admin key made: $(OPERATOR_ADMIN)"; \
	fi

run: migrate keys operator-admin-key
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
	@bash deploy/local/chromium.sh install  # the operator console's browser tests
	@bash deploy/local/promtool.sh install  # the alert rules' tests
	@$(PY) -m pytest $(PYTEST_ARGS)

test-unit: install
	@$(PY) -m pytest -m unit $(PYTEST_ARGS)

# Not part of make test: a cold build (the Debian base from the mirror) takes about 5 minutes.
test-image: install
	@bash deploy/local/postgres.sh start >/dev/null
	@bash deploy/local/kafka.sh start >/dev/null
	@$(PY) -m pytest -m image tests/e2e/test_container_image.py $(PYTEST_ARGS)

lint: install
	@$(VENV)/bin/ruff check .
	@$(VENV)/bin/ruff format --check .
	@$(VENV)/bin/mypy libs services tools

bench: migrate keys
	@$(PY) -m bench $(BENCH_ARGS)

# A developer tool, not part of make test or CI: it needs ../shared/bench/naive (and root, for
# run.sh's own Postgres). Its product stack migrates a database of its own.
bench-compare: infra
	@$(PY) -m bench.compare $(BENCH_COMPARE_ARGS)

reset:
	@bash deploy/local/services.sh stop || true
	@bash deploy/local/kafka.sh reset
	@bash deploy/local/postgres.sh reset
