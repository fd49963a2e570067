# dunwell: `make run` and `make test` do all set-up on a fresh machine.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: help install run test test-unit test-service test-e2e bench lint clean

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

test: $(STAMP) ## every tier: unit, service, end-to-end (starts its own broker)
	$(PY) -m pytest -p no:cacheprovider tests/unit tests/service tests/e2e

test-unit: $(STAMP)
	$(PY) -m pytest -p no:cacheprovider tests/unit

test-e2e: $(STAMP)
	$(PY) -m pytest -p no:cacheprovider tests/e2e

bench: $(STAMP) ## broker rate vs end-to-end rate (N=10000), figures in bench/results/
	$(PY) -m bench.run

clean: ## remove the virtualenv and local state
	rm -rf $(VENV) var
