"""SIGTERM stops every service within 10 s whatever the broker does — here, a broker frozen
with SIGSTOP, which accepts connections and answers nothing."""

from __future__ import annotations

import signal
import time

from shared.auth import Role
from tests.e2e.stack import Stack
from tests.helpers import loan_body, zone_at_local_hour


def test_sigterm_stops_every_service_in_time_while_the_broker_hangs(own_stack: Stack) -> None:
    stack = own_stack
    with stack.client("escalation", Role.LENDER) as lender:
        for _ in range(20):
            body = loan_body(timezone_name=zone_at_local_hour(11))
            assert lender.post("/v1/loans/overdue", json=body).status_code == 202
    stack.broker.popen.send_signal(signal.SIGSTOP)
    time.sleep(2)  # the loops are now waiting on a broker that will not answer

    # uvicorn re-raises the signal once it has shut down: -15 is a clean stop, -9 a kill.
    assert set(stack.stop_within(10.0).values()) <= {0, -15}
