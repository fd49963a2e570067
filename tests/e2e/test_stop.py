"""SIGTERM stops every service within 10 s whatever the broker does — here, a broker frozen
with SIGSTOP, which accepts connections and answers nothing."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.auth import Role
from tests.e2e.stack import Stack, start_stack
from tests.helpers import loan_body, zone_at_local_hour


@pytest.fixture
def own_stack(tmp_path: Path) -> Iterator[Stack]:
    stack = start_stack(tmp_path / "suite")
    try:
        yield stack
    finally:
        stack.broker.popen.send_signal(signal.SIGCONT)
        stack.shutdown()


def test_sigterm_stops_every_service_in_time_while_the_broker_hangs(own_stack: Stack) -> None:
    stack = own_stack
    with stack.client("escalation", Role.LENDER) as lender:
        for _ in range(20):
            body = loan_body(timezone_name=zone_at_local_hour(11))
            assert lender.post("/v1/loans/overdue", json=body).status_code == 202
    stack.broker.popen.send_signal(signal.SIGSTOP)
    time.sleep(2)  # the loops are now waiting on a broker that will not answer

    took = {}
    for name in list(stack.services):
        process = stack.services.pop(name)
        started = time.monotonic()
        code = process.stop(timeout=30)
        took[name] = time.monotonic() - started
        assert code in (0, -signal.SIGTERM), f"{name} exited {code}; see {process.log_path}"
        assert "shared.runtime stopped in" in process.log_path.read_text(), name
    assert max(took.values()) < 10, took
