"""What the end-to-end tests on the simulated clock share: the `dunwell clock` an operator
runs, the clock's reading, a loan's events as the audit log holds them, events put straight
on a topic as a lender's core (or a rogue service) would, and a lender's loans: reported at a
DPD, called without answer, paid, and judged by the audit."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from aiokafka import AIOKafkaProducer

from shared.clock import SimulatedClock
from shared.events import CLOUDEVENTS_CONTENT_TYPE, CloudEvent
from shared.roles import Role
from tests.e2e.stack import Stack
from tests.helpers import loan_body, wait_for


def clock(stack: Stack, *args: str) -> str:
    """`dunwell clock ...` for this installation, as an operator runs it."""
    command = [str(Path(sys.executable).with_name("dunwell")), "clock", *args]
    done = subprocess.run(command, env={**os.environ, "DUNWELL_VAR_DIR": str(stack.var_dir)},
                          capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def now(stack: Stack) -> datetime:
    return SimulatedClock(stack.var_dir / "clock.json").now()


def events(stack: Stack, loan_id: str, kind: str) -> list[dict[str, Any]]:
    """The data of the loan's `kind` events, in log order."""
    return [e["cloudevent"]["data"] for e in stack.timeline(loan_id) if e["type"] == kind]


def wait_event(stack: Stack, loan_id: str, kind: str, count: int = 1, timeout: float = 90,
               **fields: Any) -> list[dict[str, Any]]:
    """Once the log holds `count` of the loan's `kind` events with these fields: those."""
    def found() -> list[dict[str, Any]] | None:
        matching = [d for d in events(stack, loan_id, kind)
                    if all(d.get(k) == v for k, v in fields.items())]
        return matching if len(matching) >= count else None

    return wait_for(found, timeout=timeout, what=f"{count} {kind} {fields} for {loan_id}")


async def produce(bootstrap: str, topic: str, sent: list[CloudEvent]) -> None:
    """Events straight onto `topic`, keyed by their subject, as anyone may write them."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for event in sent:
            await producer.send(topic, event.encode(), key=event.subject.encode(),
                                headers=[("content-type", CLOUDEVENTS_CONTENT_TYPE.encode())])
        await producer.flush()
    finally:
        await producer.stop()


# --- a lender's loans on the simulated clock (the escalation and visit modules share them) ---

SHANGHAI = ZoneInfo("Asia/Shanghai")


def today(stack: Stack) -> date:
    return now(stack).astimezone(SHANGHAI).date()


def move_to_ten(stack: Stack) -> datetime:
    """The clock forward to the next 10:00 in Shanghai (inside the contact hours)."""
    local = now(stack).astimezone(SHANGHAI) + timedelta(hours=1)
    target = local.replace(hour=10, minute=0, second=0, microsecond=0)
    if target < local:
        target += timedelta(days=1)
    clock(stack, "set", target.isoformat())
    return target.astimezone(UTC)


def advance(stack: Stack, days: int) -> None:
    """Day by day, letting each service's agenda catch up between (as real days would)."""
    for _ in range(days):
        clock(stack, "advance", "1d")
        time.sleep(0.5)


def overdue_body(stack: Stack, dpd: int, amount: str, lender_id: str = "lender-1"
                 ) -> dict[str, Any]:
    body = loan_body(amount=amount, dpd=dpd, lender_id=lender_id)
    body["due_date"] = (today(stack) - timedelta(days=dpd)).isoformat()
    body["borrower"] = {**body["borrower"], "borrower_id": f"B-{uuid.uuid4().hex[:10]}"}
    return body


def post_loan(stack: Stack, dpd: int = 85, amount: str = "5000.00",
              lender_id: str = "lender-1") -> str:
    body = overdue_body(stack, dpd, amount, lender_id)
    with stack.client("escalation", Role.LENDER, lender_id) as lender:
        response = lender.post("/v1/loans/overdue", json=body)
    assert response.status_code == 202, response.text
    return str(body["loan_id"])


def failed_calls(stack: Stack, loan_id: str, count: int = 3) -> None:
    """A collector reports `count` unanswered calls to the borrower; then escalation has
    counted them (its case view says so)."""
    with stack.client("reminder", Role.COLLECTOR, "collector-1") as collector:
        for n in range(count):
            body = {"loan_id": loan_id, "channel": "call", "phone": "+8613800000000",
                    "outcome": "no_answer",
                    "attempted_at": (now(stack) - timedelta(minutes=10 - n)).isoformat()}
            wait_for(lambda b=body: collector.post("/v1/contact-attempts",
                                                   json=b).status_code == 202,
                     what=f"the reminder service to know {loan_id}")
    wait_for(lambda: case(stack, loan_id).get("failed_contacts") == count,
             what=f"escalation to count {count} failed calls on {loan_id}")


def case(stack: Stack, loan_id: str, lender_id: str = "lender-1") -> dict[str, Any]:
    with stack.client("escalation", Role.LENDER, lender_id) as lender:
        response = lender.get(f"/v1/cases/{loan_id}")
    return response.json() if response.status_code == 200 else {}


def compliance(stack: Stack, loan_id: str, covering: int) -> dict[str, dict[str, Any]]:
    with stack.client("audit", Role.AUDITOR) as audit:
        def answered() -> dict[str, Any] | None:
            response = audit.get(f"/v1/loans/{loan_id}/compliance")
            body: dict[str, Any] = response.json() if response.status_code == 200 else {}
            return body if body.get("tree_size", 0) > covering else None

        body = wait_for(answered, timeout=60, what=f"verdicts of {loan_id} past {covering}")
    return {rule["rule"]: rule for rule in body["rules"]}


def leaf_of(stack: Stack, loan_id: str, kind: str) -> int:
    return int(next(e["leaf_index"] for e in reversed(stack.timeline(loan_id))
                    if e["type"] == kind))


def pay(stack: Stack, loan_id: str, amount: str, remaining: str) -> None:
    with stack.client("escalation", Role.LENDER) as lender:
        response = lender.post(f"/v1/loans/{loan_id}/payments", json={
            "amount": amount, "currency": "CNY", "paid_at": now(stack).isoformat(),
            "remaining_overdue": remaining})
    assert response.status_code == 202, response.text
