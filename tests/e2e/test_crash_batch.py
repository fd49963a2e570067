"""kill -9 while batches are being applied: the reminder service while it consumes a burst of
cases, then the audit service while it appends a burst of events. Every loan gets exactly one
first reminder and one SMS, every event is exactly one leaf, and verify-store passes."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from shared import topics
from shared.auth import Role
from shared.events import LoanOverdue, envelope
from shared.kafka import make_producer
from shared.settings import KafkaSettings
from tests.e2e.stack import Stack, sms_per_loan
from tests.helpers import loan_body, wait_for, zone_at_local_hour

LOANS = 400


async def _burst(bootstrap: str, bodies: list[dict]) -> None:
    """The lender's core writes a burst straight to loans.events: the consumers get it in
    large fetches, so each store transaction holds many messages."""
    producer = make_producer(KafkaSettings(bootstrap=bootstrap))
    await producer.start()
    try:
        sends = []
        for body in bodies:
            event_id = str(uuid.uuid4())
            event = envelope(LoanOverdue.model_validate(body), event_id=event_id,
                             source="/lender-1/core", time=datetime.now(UTC),
                             causation_id=None, correlation_id=event_id)
            sends.append(await producer.send(topics.LOANS, event.encode(),
                                             key=body["loan_id"].encode()))
        await asyncio.gather(*sends)
    finally:
        await producer.stop()


def test_kill_9_mid_batch_in_reminder_then_audit_loses_and_doubles_nothing(
        stack: Stack, tmp_path: Path) -> None:
    zone = zone_at_local_hour(11)
    prefix = f"BURST-{uuid.uuid4().hex[:6]}"
    bodies = [loan_body(f"{prefix}-{i:04d}", timezone_name=zone) for i in range(LOANS)]
    loans = {body["loan_id"] for body in bodies}
    inbox_before = stack.count("reminder", "SELECT COUNT(*) FROM {inbox}")
    leaves_before = stack.count("audit", "SELECT COUNT(*) FROM leaves")

    asyncio.run(_burst(stack.bootstrap, bodies))
    consumed = wait_for(
        lambda: stack.count("reminder", "SELECT COUNT(*) FROM {inbox}") - inbox_before or None,
        timeout=90, every=0.02, what="the reminder service to commit its first batch")
    stack.kill("reminder")
    assert consumed < LOANS, "the whole burst was consumed before the kill"

    appended = wait_for(
        lambda: stack.count("audit", "SELECT COUNT(*) FROM leaves") - leaves_before > LOANS
        or None,
        timeout=90, every=0.02, what="the audit service to append part of the burst")
    stack.kill("audit")
    assert appended
    stack.start("reminder", "audit")

    kinds = ("LoanOverdue", "CaseOpened", "ReminderScheduled", "ReminderSent")

    def logged() -> bool:
        # The audit reads each topic at its own pace: after its restart a loan's ReminderSent
        # (reminders.events) can be a leaf before its CaseOpened (cases.events). So wait for
        # every kind; an event lost for good times this out.
        counts = dict(stack.query("audit", "SELECT event_type, COUNT(*) FROM leaves WHERE "
                                           "subject LIKE ? GROUP BY event_type", f"{prefix}-%"))
        return all(counts.get(kind, 0) >= LOANS for kind in kinds)

    wait_for(logged, timeout=240, every=1.0, what=f"every loan's {', '.join(kinds)}")
    with stack.client("audit", Role.AUDITOR) as audit:
        for loan in sorted(loans)[:: LOANS // 40]:  # the timeline route, on a sample
            events = audit.get(f"/v1/loans/{loan}/timeline").json()["events"]
            assert Counter(e["type"] for e in events)["ReminderSent"] == 1

    per_loan = Counter()
    for subject, event_type, count in stack.query(
            "audit", "SELECT subject, event_type, COUNT(*) FROM leaves WHERE subject LIKE ? "
            "GROUP BY subject, event_type", f"{prefix}-%"):
        per_loan[(event_type, count)] += 1
        assert count == 1, (subject, event_type, count)
    repeated = stack.count("audit", "SELECT COUNT(*) FROM (SELECT event_id FROM leaves "
                                    "GROUP BY event_id HAVING COUNT(*) > 1) AS repeated")
    assert repeated == 0
    for event_type in kinds:
        assert per_loan[(event_type, 1)] == LOANS, event_type
    assert {loan: n for loan, n in sms_per_loan(stack).items() if loan in loans} == \
        dict.fromkeys(loans, 1)

    with stack.client("audit", Role.AUDITOR) as audit:
        key = audit.get("/v1/checkpoint").json()["public_key"]
    result = subprocess.run([sys.executable, "-m", "dunwell.cli", "audit", "verify-store",
                             "--store", stack.audit_store, "--key", key],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("OK: ")
