"""The outbox relay over a real broker: a stored event whose mapping raises is set aside on
the outbox DLQ, and every later event is still published."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from shared import topics
from shared.events import CaseClosed, decode
from shared.relay import OutboxRelay, Publication, StoredEvents
from tests.integration.kit import NOW, Broker, Mark, eventually, marks, records, started_producer


def mapping(event: Any) -> Publication | None:
    if not isinstance(event, Mark.Marked):
        return None
    if event.loan_id.startswith("UNMAPPABLE"):
        raise KeyError("a field the mapping expects")
    return Publication(CaseClosed(loan_id=event.loan_id, reason="paid", closed_at=NOW),
                       causation_id=None, correlation_id=None)


async def published(broker: Broker, prefix: str) -> list[str]:
    found = []
    for record in await records(broker.settings(), topics.CASES):
        _, data = decode(record.value)
        if data.subject().startswith(prefix):
            found.append(data.subject())
    return found


async def test_an_unmappable_stored_event_is_set_aside_and_the_outbox_goes_on(
        broker: Broker, tmp_path: Path) -> None:
    app = marks(tmp_path)
    prefix = tmp_path.name[-12:]
    names = [f"{prefix}-A", f"UNMAPPABLE-{prefix}", f"{prefix}-B", f"{prefix}-C"]
    for name in names:
        app.save(Mark(loan_id=name))
    producer = await started_producer(broker.settings())
    relay = OutboxRelay(outbox=StoredEvents(app, mapping, "/test"), producer=lambda: producer,
                        incarnation=lambda: "inc-relay", idle_seconds=0.1)
    stop = asyncio.Event()
    task = asyncio.ensure_future(relay.run(stop))
    try:
        subjects = await eventually(lambda: _at_least(published(broker, prefix), 3),
                                    what="the events after the unmappable one")
        app.save(Mark(loan_id=f"{prefix}-D"))  # and the relay keeps following the store
        await eventually(lambda: _at_least(published(broker, prefix), 4), what="a later one")
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        await producer.stop()
    assert sorted(subjects) == [f"{prefix}-A", f"{prefix}-B", f"{prefix}-C"]

    letters = [r for r in await records(broker.settings(), topics.OUTBOX_DLQ)
               if dict(r.headers)[topics.DLQ_ORIGIN_HEADER] == b"marks/2"]
    [letter] = letters
    headers = dict(letter.headers)
    assert headers[topics.DLQ_ERROR_TYPE_HEADER] == b"KeyError"
    assert headers[topics.DLQ_REASON_HEADER] == (
        b"unmappable: KeyError: 'a field the mapping expects'")
    assert app.extras.unsent_dead_letters("relay/", 10) == []
    assert app.position("relay/inc-relay") == 5


async def _at_least(found: Any, count: int) -> Any:
    items = await found
    return items if len(items) >= count else None



def long_reason(event: Any) -> Publication | None:
    if not isinstance(event, Mark.Marked):
        return None
    reason = "r" * 480 if event.loan_id.startswith("LONG") else "paid"
    return Publication(CaseClosed(loan_id=event.loan_id, reason=reason, closed_at=NOW),
                       causation_id=None, correlation_id=None)


async def test_an_event_too_large_for_the_producer_is_set_aside_and_the_outbox_goes_on(
        broker: Broker, tmp_path: Path) -> None:
    app = marks(tmp_path)
    prefix = tmp_path.name[-12:]
    for name in (f"LONG-{prefix}", f"{prefix}-E", f"{prefix}-F"):
        app.save(Mark(loan_id=name))
    # A normal event fits in 600 bytes; the long one does not.
    small = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all",
                             max_request_size=600)
    await small.start()
    relay = OutboxRelay(outbox=StoredEvents(app, long_reason, "/test"), producer=lambda: small,
                        incarnation=lambda: "inc-small", idle_seconds=0.1)
    stop = asyncio.Event()
    task = asyncio.ensure_future(relay.run(stop))
    try:
        subjects = await eventually(lambda: _at_least(published(broker, prefix), 2),
                                    what="the events after the large one")
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        await small.stop()
    assert sorted(subjects) == [f"{prefix}-E", f"{prefix}-F"]
    letters = [r for r in await records(broker.settings(), topics.OUTBOX_DLQ)
               if r.key == f"LONG-{prefix}".encode()]
    [letter] = letters
    assert dict(letter.headers)[topics.DLQ_REASON_HEADER].startswith(b"too large to publish")
    assert app.position("relay/inc-small") == 3
