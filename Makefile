# dunwell: `make run` and `make test` do all set-up on a fresh machine.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: help install run test test-unit test-integration test-e2e bench lint clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $@

install: $(STAMP) ## create .venv and install pinned dependencies

run: $(STAMP) ## start the embedded broker and the four services (Ctrl-C stops)
	$(VENV)/bin/dunwell run

lint: $(STAMP) ## ruff check over the code and tests, then mypy over the code
	$(VENV)/bin/ruff check dunwell shared services tests bench
	$(VENV)/bin/mypy dunwell shared services bench

test: $(STAMP) lint ## lint, then every tier: unit, service, integration, end-to-end
	$(PY) -m pytest -p no:cacheprovider --durations=20 tests/unit tests/service tests/integration tests/e2e

test-unit: $(STAMP) ## domain and policies, in memory
	$(PY) -m pytest -p no:cacheprovider tests/unit

test-integration: $(STAMP) ## the consumer loop, relay and runtime over a real broker
	$(PY) -m pytest -p no:cacheprovider tests/integration

test-e2e: $(STAMP)
	$(PY) -m pytest -p no:cacheprovider tests/e2e

bench: $(STAMP) ## broker vs end-to-end rate, store cost, readiness, audit, daily evaluation; figures in bench/results/
	$(PY) -m bench.run

clean: ## remove the virtualenv and local state
	rm -rf $(VENV) var
