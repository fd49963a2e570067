"""A message no handler could apply never wedges a consumer: the reviewer's LoanOverdue with a
repayment channel of one space, written straight to loans.events, is refused at the contract
and set aside, the loan behind it on the same partition is reminded, and every service stays
ready. Over HTTP the same report is a 422."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime

import httpx

from dunwell import devstack
from shared import topics
from shared.auth import Role
from shared.kafka import make_producer, read_to_now
from shared.settings import KafkaSettings
from tests.e2e.stack import Stack
from tests.helpers import loan_body, wait_for, zone_at_local_hour


def raw_overdue(body: dict) -> bytes:
    """Built by hand, as another client would: no model of ours checks it on the way in."""
    event_id = str(uuid.uuid4())
    return json.dumps({
        "specversion": "1.0", "id": event_id, "source": "/lender-1/core",
        "type": "LoanOverdue", "time": datetime.now(UTC).isoformat(),
        "subject": body["loan_id"], "datacontenttype": "application/json",
        "correlationid": event_id, "data": body}).encode()


async def produce(bootstrap: str, key: bytes, values: list[bytes]) -> None:
    producer = make_producer(KafkaSettings(bootstrap=bootstrap))
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topics.LOANS, value, key=key,
                                         headers=[("content-type",
                                                   b"application/cloudevents+json")])
    finally:
        await producer.stop()


def set_aside(stack: Stack, loan_id: str) -> list[dict[str, bytes]]:
    """Dead letters about `loan_id`, on whichever topic a consumer set it aside."""
    found = []
    for topic in (topics.dlq(topics.LOANS), topics.dlq(topics.CASES)):
        records = asyncio.run(read_to_now(KafkaSettings(bootstrap=stack.bootstrap), topic))
        found.extend(dict(record.headers) for record in records
                     if loan_id.encode() in (record.value or b""))
    return found


def test_a_blank_repayment_channel_never_wedges_a_consumer(stack: Stack) -> None:
    zone = zone_at_local_hour(11)
    bad = loan_body(timezone_name=zone) | {"repayment_channel": " "}
    good = loan_body(timezone_name=zone)
    key = b"one-partition-" + uuid.uuid4().hex.encode()
    asyncio.run(produce(stack.bootstrap, key, [raw_overdue(bad), raw_overdue(good)]))

    def reminded(loan_id: str) -> bool:
        return any(e["type"] == "ReminderSent" for e in stack.timeline(loan_id))

    wait_for(lambda: reminded(good["loan_id"]), timeout=60, what="the loan behind the bad one")
    # Refused at the contract: a borrower cannot be told how to repay by a blank channel.
    # Every group that reads loans.events sets it aside: escalation, and the audit log.
    def both() -> list[dict[str, bytes]] | None:
        found = set_aside(stack, bad["loan_id"])
        return found if len(found) >= 2 else None

    letters = wait_for(both, timeout=60, what="both groups' letters")
    assert {letter[topics.DLQ_GROUP_HEADER] for letter in letters} == {
        b"dunwell-escalation", b"dunwell-audit"}
    for letter in letters:
        assert letter[topics.DLQ_REASON_HEADER].startswith(b"invalid: repayment_channel: ")
    assert not reminded(bad["loan_id"])
    for name in devstack.SERVICES:
        assert httpx.get(f"{stack.url(name)}/readyz", timeout=5).status_code == 200, name

    with stack.client("escalation", Role.LENDER) as lender:
        answer = lender.post("/v1/loans/overdue",
                             json=loan_body(timezone_name=zone) | {"repayment_channel": " "})
    assert answer.status_code == 422
    assert answer.json()["error"]["details"][0]["loc"] == ["body", "repayment_channel"]
