"""The end-to-end tier's suites. `DUNWELL_E2E_STORE=postgres` runs every suite on a throwaway
PostgreSQL cluster (a database per service) instead of SQLite files; `make test` runs the
tier on SQLite and its flows again on PostgreSQL."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.stack import Stack, start_stack
from tests.pg import Cluster


def cluster(request: pytest.FixtureRequest) -> Cluster | None:
    store = os.environ.get("DUNWELL_E2E_STORE", "sqlite")
    if store not in ("sqlite", "postgres"):
        pytest.fail(f"DUNWELL_E2E_STORE must be sqlite or postgres, not {store!r}")
    return request.getfixturevalue("postgres") if store == "postgres" else None


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory,
          request: pytest.FixtureRequest) -> Iterator[Stack]:
    running = start_stack(tmp_path_factory.mktemp("suite"), postgres=cluster(request))
    try:
        yield running
    finally:
        running.shutdown()


@pytest.fixture
def own_stack(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Stack]:
    """A suite of its own, for a test that kills, freezes or replaces parts of it."""
    running = start_stack(tmp_path / "suite", postgres=cluster(request))
    try:
        yield running
    finally:
        running.broker.popen.send_signal(signal.SIGCONT)  # in case the test froze it
        running.shutdown()


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory,
        request: pytest.FixtureRequest) -> Iterator[Stack]:
    """An installation on the simulated clock (`DUNWELL_CLOCK=simulated`), one per test
    module: its time only goes forward, so each test moves it to a moment of its own."""
    running = start_stack(tmp_path_factory.mktemp("simulated"),
                          extra_env={"DUNWELL_CLOCK": "simulated"}, postgres=cluster(request))
    try:
        yield running
    finally:
        running.shutdown()
