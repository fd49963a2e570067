"""The integration tier: the consumer loop, the relay and the runtime in process, over a real
Kafka-protocol broker (Tansu) started by the tests on a free loopback port."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.kit import Broker, start_broker


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    running = start_broker(tmp_path_factory.mktemp("broker"))
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[Broker]:
    """A broker for one test only: it may be killed and replaced."""
    running = start_broker(tmp_path / "own-broker")
    try:
        yield running
    finally:
        running.stop()
