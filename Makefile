# dunwell: `make run` and `make test` do all set-up on a fresh machine.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# PostgreSQL 15's server binaries: on the machine image, else Debian's package.
PG_BIN ?= /usr/lib/postgresql/15/bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# The end-to-end flows that run a second time on PostgreSQL (a database per service).
PG_E2E := tests/e2e/test_loan_flow.py tests/e2e/test_crash.py tests/e2e/test_crash_batch.py \
	tests/e2e/test_broker_loss.py tests/e2e/test_replicas.py tests/e2e/test_restart.py \
	tests/e2e/test_kafka_intake.py tests/e2e/test_poison.py tests/e2e/test_visits.py \
	tests/e2e/test_evidence.py tests/e2e/test_rollback.py tests/e2e/test_observability.py

.PHONY: help install postgres run test test-unit test-integration test-e2e test-e2e-postgres bench lint clean

help: ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $@

install: $(STAMP) ## create .venv and install pinned dependencies

$(PG_BIN)/initdb:
	@echo "PostgreSQL 15 server binaries are missing from $(PG_BIN): installing Debian's postgresql-15"
	$(SUDO) mkdir -p /etc/postgresql-common/createcluster.d
	echo "create_main_cluster = false" | $(SUDO) tee /etc/postgresql-common/createcluster.d/dunwell.conf >/dev/null
	$(SUDO) apt-get update -q
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends postgresql-15

postgres: $(PG_BIN)/initdb ## PostgreSQL 15's server binaries for the tests (Debian's package if missing)

run: $(STAMP) ## start the embedded broker and the four services (Ctrl-C stops)
	$(VENV)/bin/dunwell run

lint: $(STAMP) ## ruff check over the code and tests, then mypy over the code
	$(VENV)/bin/ruff check dunwell shared services tests bench
	$(VENV)/bin/mypy dunwell shared services bench

test: $(STAMP) postgres lint k8s ## lint, then every tier: unit, service, integration, end-to-end (on SQLite, then on PostgreSQL)
	$(PY) -m pytest -p no:cacheprovider --durations=20 tests/unit tests/service tests/integration tests/e2e
	DUNWELL_E2E_STORE=postgres $(PY) -m pytest -p no:cacheprovider --durations=10 $(PG_E2E)

test-unit: $(STAMP) ## domain and policies, in memory
	$(PY) -m pytest -p no:cacheprovider tests/unit

test-integration: $(STAMP) ## the consumer loop, relay and runtime over a real broker
	$(PY) -m pytest -p no:cacheprovider tests/integration

test-e2e: $(STAMP) ## the end-to-end tier on SQLite
	$(PY) -m pytest -p no:cacheprovider tests/e2e

test-e2e-postgres: $(STAMP) postgres ## the end-to-end tier, every suite, on PostgreSQL
	DUNWELL_E2E_STORE=postgres $(PY) -m pytest -p no:cacheprovider tests/e2e

.PHONY: k8s
k8s: $(STAMP) ## render deploy/k8s's overlays with kubectl kustomize and validate them, offline
	$(PY) deploy/k8s/validate.py deploy/k8s/overlays/dev deploy/k8s/overlays/prod

bench: $(STAMP) ## broker vs end-to-end rate, store cost, readiness, audit, daily evaluation; figures in bench/results/
	$(PY) -m bench.run

clean: ## remove the virtualenv and local state
	rm -rf $(VENV) var
