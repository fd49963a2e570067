"""kill -9 the reminder service while loans flow: nothing lost, nothing sent twice."""

from __future__ import annotations

from collections import Counter

import httpx

from shared.auth import Role
from tests.e2e.stack import Stack, sms_per_loan
from tests.helpers import loan_body, wait_for, zone_at_local_hour

LOANS = 200


def _sms_per_loan(stack: Stack, loan_ids: set[str]) -> Counter[str]:
    return Counter({loan: n for loan, n in sms_per_loan(stack).items() if loan in loan_ids})


def _sent_in_timeline(stack: Stack, audit: httpx.Client, loan_id: str) -> int:
    response = audit.get(f"/v1/loans/{loan_id}/timeline")
    if response.status_code != 200:
        return 0
    return sum(1 for e in response.json()["events"] if e["type"] == "ReminderSent")


def test_kill_9_reminder_mid_flow_loses_nothing_and_doubles_nothing(stack: Stack) -> None:
    zone = zone_at_local_hour(11)
    bodies = [loan_body(f"CRASH-{i:04d}", timezone_name=zone) for i in range(LOANS)]
    loan_ids = {b["loan_id"] for b in bodies}
    with stack.client("escalation", Role.LENDER) as lender:
        for body in bodies[: LOANS // 2]:
            assert lender.post("/v1/loans/overdue", json=body).status_code == 202
        wait_for(lambda: sum(_sms_per_loan(stack, loan_ids).values()) >= 10, timeout=60,
                 every=0.02, what="the first reminders to go out")
        stack.kill("reminder")
        for body in bodies[LOANS // 2:]:
            assert lender.post("/v1/loans/overdue", json=body).status_code == 202
    stack.start("reminder")

    with stack.client("audit", Role.AUDITOR) as audit:
        def all_sent() -> bool:
            return all(_sent_in_timeline(stack, audit, loan_id) >= 1 for loan_id in loan_ids)

        wait_for(all_sent, timeout=120, every=1.0, what="a ReminderSent for every loan")
        sent = {loan_id: _sent_in_timeline(stack, audit, loan_id) for loan_id in loan_ids}
    assert set(sent.values()) == {1}, {k: v for k, v in sent.items() if v != 1}
    assert _sms_per_loan(stack, loan_ids) == Counter(dict.fromkeys(loan_ids, 1))
