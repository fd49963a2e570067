"""Two replicas of the reminder service on one store: they share the partitions and the agenda,
and no reminder is sent twice — not even when one of them is killed -9 halfway."""

from __future__ import annotations

import uuid
from collections import Counter

from dunwell import devstack
from shared.auth import Role
from tests.e2e.stack import Stack, sms_per_loan
from tests.helpers import loan_body, wait_for, zone_at_local_hour

LOANS = 150


def test_two_reminder_replicas_never_send_the_same_reminder_twice(stack: Stack) -> None:
    port = devstack.free_port()
    env = devstack.service_env("reminder", port, stack.var_dir, stack.bootstrap,
                               {**stack.extra_env, "REMINDER_REPLICA_ID": "second-replica",
                                "REMINDER_AGENDA_LEASE_SECONDS": "10"})
    second = devstack.start_service("reminder", env, stack.logs / "second")
    try:
        devstack.wait_ready(f"http://127.0.0.1:{port}", second)
        zone = zone_at_local_hour(11)
        prefix = f"TWIN-{uuid.uuid4().hex[:6]}"
        bodies = [loan_body(f"{prefix}-{i:03d}", timezone_name=zone) for i in range(LOANS)]
        loans = {body["loan_id"] for body in bodies}
        with stack.client("escalation", Role.LENDER) as lender:
            for i, body in enumerate(bodies):
                assert lender.post("/v1/loans/overdue", json=body).status_code == 202
                if i == LOANS // 2:
                    second.kill()  # mid-flow: its claims and partitions go to the other

        def reminded() -> bool:
            return all(sms_per_loan(stack)[loan] >= 1 for loan in loans)

        wait_for(reminded, timeout=180, every=1.0, what="an SMS for every loan")
        with stack.client("audit", Role.AUDITOR) as audit:
            def sent(loan: str) -> int:
                events = audit.get(f"/v1/loans/{loan}/timeline").json()["events"]
                return Counter(e["type"] for e in events)["ReminderSent"]

            wait_for(lambda: all(sent(loan) >= 1 for loan in loans), timeout=60,
                     what="every ReminderSent in the audit log")
            assert {loan: sent(loan) for loan in loans} == dict.fromkeys(loans, 1)
        assert {loan: n for loan, n in sms_per_loan(stack).items() if loan in loans} == \
            dict.fromkeys(loans, 1)
    finally:
        second.stop()
