"""`dunwell broker` against a broker that is not there: a bounded wait, a reason, exit 2."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from dunwell.cli import app


@pytest.fixture
def silent() -> Iterator[str]:
    """A port that accepts connections and never answers, as a hung or firewalled broker."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    try:
        yield f"127.0.0.1:{listener.getsockname()[1]}"
    finally:
        listener.close()


def test_reincarnate_against_a_silent_broker_says_why_within_its_timeout(
        silent: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP", silent)
    started = time.monotonic()
    result = CliRunner().invoke(app, ["broker", "reincarnate", "--yes", "--timeout", "2"])
    assert time.monotonic() - started < 10
    assert result.exit_code == 2
    assert f"could not reincarnate the broker at {silent}: no answer within 2 s" \
        in result.output


def test_reincarnate_against_no_broker_at_all_names_the_failure(
        monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens there
    monkeypatch.setenv("KAFKA_BOOTSTRAP", f"127.0.0.1:{port}")
    result = CliRunner().invoke(app, ["broker", "reincarnate", "--yes", "--timeout", "5"])
    assert result.exit_code == 2
    assert "Unable to bootstrap" in result.output
