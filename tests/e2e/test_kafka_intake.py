"""The lender's core may write straight to loans.events; what cannot be read goes to the DLQ."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from shared import topics
from shared.auth import Role
from shared.events import LoanOverdue, envelope
from tests.e2e.stack import Stack
from tests.helpers import loan_body, wait_for, zone_at_local_hour


def _lender_event(body: dict) -> bytes:
    data = LoanOverdue.model_validate(body)
    event_id = str(uuid.uuid4())
    return envelope(data, event_id=event_id, source="/lender-1/core",
                    time=datetime.now(UTC), causation_id=None,
                    correlation_id=event_id).encode()


async def _produce(bootstrap: str, messages: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for key, value in messages:
            await producer.send_and_wait(topics.LOANS, value, key=key)
    finally:
        await producer.stop()


async def _dead_letters(bootstrap: str) -> list[tuple[bytes, dict[str, bytes]]]:
    partition = TopicPartition(topics.dlq(topics.LOANS), 0)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign([partition])
        consumer.seek(partition, 0)
        records = (await consumer.getmany(partition, timeout_ms=2000)).get(partition, [])
        return [(r.value, dict(r.headers)) for r in records]
    finally:
        await consumer.stop()


def _case_status(stack: Stack, loan_id: str) -> str | None:
    with stack.client("escalation", Role.OPS) as ops:
        response = ops.get(f"/v1/cases/{loan_id}")
    return response.json()["status"] if response.status_code == 200 else None


def test_loan_overdue_straight_to_kafka_opens_a_case(stack: Stack) -> None:
    body = loan_body(timezone_name=zone_at_local_hour(11))
    asyncio.run(_produce(stack.bootstrap, [(body["loan_id"].encode(), _lender_event(body))]))
    assert wait_for(lambda: _case_status(stack, body["loan_id"]), what="a case") == "open"


def test_garbage_goes_to_the_dlq_and_the_next_message_is_processed(stack: Stack) -> None:
    garbage = b"\x00not-a-cloudevent " + uuid.uuid4().hex.encode()
    body = loan_body(timezone_name=zone_at_local_hour(11))
    key = body["loan_id"].encode()
    # Same key, so the same partition: the good message sits right behind the garbage.
    asyncio.run(_produce(stack.bootstrap, [(key, garbage), (key, _lender_event(body))]))

    assert wait_for(lambda: _case_status(stack, body["loan_id"]), what="a case") == "open"
    letters = wait_for(lambda: [h for v, h in asyncio.run(_dead_letters(stack.bootstrap))
                                if v == garbage], what="the garbage in loans.events.dlq")
    groups = {h[topics.DLQ_GROUP_HEADER].decode() for h in letters}
    assert "dunwell-escalation" in groups
    reason = next(h for h in letters
                  if h[topics.DLQ_GROUP_HEADER] == b"dunwell-escalation")[topics.DLQ_REASON_HEADER]
    assert reason.startswith(b"invalid: not JSON")
