from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.stack import Stack, start_stack


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = start_stack(tmp_path_factory.mktemp("suite"))
    try:
        yield running
    finally:
        running.shutdown()


@pytest.fixture
def own_stack(tmp_path: Path) -> Iterator[Stack]:
    """A suite of its own, for a test that kills, freezes or replaces parts of it."""
    running = start_stack(tmp_path / "suite")
    try:
        yield running
    finally:
        running.broker.popen.send_signal(signal.SIGCONT)  # in case the test froze it
        running.shutdown()


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """An installation on the simulated clock (`DUNWELL_CLOCK=simulated`), one per test
    module: its time only goes forward, so each test moves it to a moment of its own."""
    running = start_stack(tmp_path_factory.mktemp("simulated"),
                          extra_env={"DUNWELL_CLOCK": "simulated"})
    try:
        yield running
    finally:
        running.shutdown()
