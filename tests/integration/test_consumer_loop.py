"""The consumer loop over a real broker: one bad message neither stalls nor takes its
neighbours down; it is retried, then dead-lettered with its error, and the loop goes on."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from eventsourcing.persistence import OperationalError

import shared.kafka
from shared import topics
from shared.application import Conflict
from shared.clock import SystemClock
from shared.consumer import ConsumerSettings, EventConsumer, HandlerSink, Rejected
from shared.events import CaseClosed
from shared.runtime import Runtime
from tests.integration.kit import (
    Behaviour,
    Broker,
    Marks,
    closed_event,
    create_topics,
    eventually,
    fresh_topic,
    marks,
    produce,
    records,
    started_producer,
)

FAST = ConsumerSettings(attempts=3, backoff_seconds=0.05)


def consumer(broker: Broker, app: Marks, topic: str, behaviour: Behaviour,
             producer: Callable[[], AIOKafkaProducer], **options: Any) -> EventConsumer:
    return EventConsumer(
        group=f"group-{topic}", subscribe=[topic],
        sink=HandlerSink(app, {CaseClosed: behaviour.handler}, SystemClock()),
        kafka_options=broker.settings().consumer_options(), producer=producer,
        incarnation=lambda: broker.incarnation, clock=SystemClock(), settings=FAST, **options)


@asynccontextmanager
async def running(loop: Callable[[asyncio.Event], Any]) -> AsyncIterator[asyncio.Task[Any]]:
    stop = asyncio.Event()
    task = asyncio.ensure_future(loop(stop))
    try:
        yield task
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


async def dead_letters(broker: Broker, topic: str) -> list[Any]:
    return await records(broker.settings(), topics.dlq(topic))


async def test_a_handler_error_is_retried_then_dead_lettered_and_the_next_message_is_processed(
        broker: Broker, tmp_path: Path) -> None:
    topic = fresh_topic()
    await create_topics(broker.settings(), topic, topics.dlq(topic))
    behaviour = Behaviour(fail={"BAD": lambda n: ValueError("repayment channel is blank")})
    app = marks(tmp_path)
    bad = closed_event("BAD")
    await produce(broker.settings(), topic, [closed_event("OK-1"), bad, closed_event("OK-2")])
    producer = await started_producer(broker.settings())
    try:
        loop = consumer(broker, app, topic, behaviour, lambda: producer)
        async with running(loop.run):
            await eventually(lambda: app.marked("OK-2"), what="the message after the bad one")
            letters = await eventually(lambda: dead_letters(broker, topic), what="a dead letter")
            assert loop.ready()
    finally:
        await producer.stop()

    # The batch's first try ran OK-1 too, then was split: run twice, recorded once.
    assert (behaviour.calls["BAD"], behaviour.calls["OK-2"]) == (3, 1)
    assert app.marked("OK-1")
    [letter] = letters
    headers = dict(letter.headers)
    assert letter.value == bad.encode()
    assert headers[topics.DLQ_ERROR_TYPE_HEADER] == b"ValueError"
    assert headers[topics.DLQ_REASON_HEADER] == (
        b"failed 3 times: ValueError: repayment channel is blank")
    assert headers[topics.DLQ_GROUP_HEADER] == f"group-{topic}".encode()
    assert headers[topics.DLQ_ORIGIN_HEADER] == f"{topic}/0/1".encode()
    assert app.position(f"kafka/{broker.incarnation}/{topic}/0") == 2


async def test_one_bad_message_in_a_batch_takes_none_of_its_neighbours_down(
        broker: Broker, tmp_path: Path) -> None:
    topic = fresh_topic()
    await create_topics(broker.settings(), topic, topics.dlq(topic))
    names = [f"N-{i:02d}" for i in range(40)]
    behaviour = Behaviour(fail={"N-17": lambda n: KeyError("borrower"),
                                "N-31": lambda n: Rejected("no case for this loan")})
    app = marks(tmp_path)
    await produce(broker.settings(), topic, [closed_event(name) for name in names])
    producer = await started_producer(broker.settings())
    try:  # all 40 are on the broker before the loop starts: they come in one fetch
        async with running(consumer(broker, app, topic, behaviour, lambda: producer).run):
            await eventually(lambda: all(app.marked(n) for n in names if n not in
                                         ("N-17", "N-31")), what="every good message")
            letters = await eventually(
                lambda: _at_least(dead_letters(broker, topic), 2), what="two dead letters")
    finally:
        await producer.stop()

    assert {dict(r.headers)[topics.DLQ_ORIGIN_HEADER] for r in letters} == {
        f"{topic}/0/17".encode(), f"{topic}/0/31".encode()}
    reasons = sorted(dict(r.headers)[topics.DLQ_REASON_HEADER] for r in letters)
    assert reasons == [b"failed 3 times: KeyError: 'borrower'",
                       b"rejected: Rejected: no case for this loan"]
    assert behaviour.calls["N-31"] == 1  # a refusal is not retried
    assert behaviour.calls["N-17"] == 3
    assert app.position(f"kafka/{broker.incarnation}/{topic}/0") == 39


async def _at_least(found: Any, count: int) -> Any:
    items = await found
    return items if len(items) >= count else None


async def test_a_conflict_is_tried_again_not_dead_lettered(broker: Broker,
                                                           tmp_path: Path) -> None:
    topic = fresh_topic()
    await create_topics(broker.settings(), topic, topics.dlq(topic))
    behaviour = Behaviour(fail={"RACE": lambda n: Conflict("moved meanwhile") if n < 3 else None})
    app = marks(tmp_path)
    await produce(broker.settings(), topic, [closed_event("RACE"), closed_event("AFTER")])
    producer = await started_producer(broker.settings())
    try:
        async with running(consumer(broker, app, topic, behaviour, lambda: producer).run):
            await eventually(lambda: app.marked("AFTER"), what="the next message")
    finally:
        await producer.stop()
    assert app.marked("RACE") and behaviour.calls["RACE"] == 3
    assert await dead_letters(broker, topic) == []


async def test_a_dead_letter_not_sent_before_a_crash_is_sent_by_the_next_run(
        broker: Broker, tmp_path: Path) -> None:
    topic = fresh_topic()
    await create_topics(broker.settings(), topic, topics.dlq(topic))
    behaviour = Behaviour(fail={"BAD": lambda n: ValueError("bad")})
    app = marks(tmp_path)
    await produce(broker.settings(), topic, [closed_event("BAD"), closed_event("OK")])
    real = await started_producer(broker.settings())

    class Unreachable:
        async def send_and_wait(self, *args: Any, **kwargs: Any) -> None:
            raise TimeoutError("the broker went away")

    try:
        first = consumer(broker, app, topic, behaviour, Unreachable)  # type: ignore[arg-type]
        stop = asyncio.Event()
        # The send of the dead letter fails: the run ends, as a crash would.
        with suppress(TimeoutError):
            await asyncio.wait_for(first.run(stop), 30)
        assert await dead_letters(broker, topic) == []
        assert app.extras.unsent_dead_letters("consumer/", 10)  # kept with the batch

        async with running(consumer(broker, app, topic, behaviour, lambda: real).run):
            letters = await eventually(lambda: dead_letters(broker, topic), what="the letter")
            await eventually(lambda: app.marked("OK"), what="the next message")
    finally:
        await real.stop()
    assert len(letters) == 1 and behaviour.calls["BAD"] == 3  # not handled again
    assert app.extras.unsent_dead_letters("consumer/", 10) == []


async def test_a_store_that_keeps_failing_shows_in_readiness_and_recovers(
        broker: Broker, tmp_path: Path) -> None:
    topic = fresh_topic()
    await create_topics(broker.settings(), topic, topics.dlq(topic))
    app = marks(tmp_path)
    broken = {"yes": True}

    def store_error(n: int) -> BaseException | None:
        return OperationalError("disk I/O error") if broken["yes"] else None

    behaviour = Behaviour(fail={"DISK": store_error})
    await produce(broker.settings(), topic, [closed_event("DISK")])
    runtime = Runtime(broker.settings())
    runtime.start()
    try:
        loop = consumer(broker, app, topic, behaviour, runtime.current_producer,
                        on_progress=runtime.beat("consumer"))
        runtime.spawn("consumer", loop.run)
        await eventually(lambda: runtime.checks().get("loop:consumer") is False, timeout=60,
                         what="the failing loop in readiness")
        assert runtime.health["consumer"].last_error == "OperationalError: disk I/O error"
        assert await dead_letters(broker, topic) == []  # the store's fault, not the message's
        broken["yes"] = False
        await eventually(lambda: app.marked("DISK"), timeout=60, what="recovery")
        await eventually(lambda: runtime.checks()["loop:consumer"], what="ready again")
    finally:
        await runtime.close()


async def test_a_message_too_large_to_copy_is_set_aside_without_its_value(
        broker: Broker, tmp_path: Path) -> None:
    """A lender's producer allowed more than dunwell's: the dead letter, with its headers, would
    be too large to send, so it goes without its value rather than wedging the loop."""
    topic = fresh_topic()
    await create_topics(broker.settings(), topic, topics.dlq(topic))
    app = marks(tmp_path)
    limit = broker.settings().max_request_bytes
    big = b"\x00not an event " + b"x" * (limit - 100)
    lender = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all",
                              max_request_size=2 * limit)
    await lender.start()
    try:
        await lender.send_and_wait(topic, big, key=b"same-partition")
    finally:
        await lender.stop()
    await produce(broker.settings(), topic, [closed_event("AFTER-BIG")])
    producer = await started_producer(broker.settings())
    try:
        async with running(consumer(broker, app, topic, Behaviour(), lambda: producer).run):
            await eventually(lambda: app.marked("AFTER-BIG"), what="the message after it")
            [letter] = await eventually(lambda: dead_letters(broker, topic), what="the letter")
    finally:
        await producer.stop()
    headers = dict(letter.headers)
    assert letter.value is None
    assert headers[topics.DLQ_ORIGIN_HEADER] == f"{topic}/0/0".encode()
    assert headers[topics.DLQ_VALUE_OMITTED_HEADER].startswith(f"{len(big)} bytes".encode())
    assert headers[topics.DLQ_REASON_HEADER].startswith(b"invalid: not JSON")
    assert app.extras.unsent_dead_letters("consumer/", 10) == []


async def test_a_run_whose_cleanup_is_cancelled_still_leaves_the_group(
        broker: Broker, tmp_path: Path, monkeypatch: Any) -> None:
    """With the broker gone, aiokafka may cancel a future that stopping the incarnation check
    awaits. The group member must be stopped all the same: one left running rejoins the next
    broker, heartbeats and holds partitions that nobody reads (loans never reminded)."""
    topic = fresh_topic()
    await create_topics(broker.settings(), topic, topics.dlq(topic), partitions=2)
    app = marks(tmp_path)
    await produce(broker.settings(), topic, [closed_event("FIRST")])
    real_stop = shared.kafka.IncarnationCheck.stop

    async def cancelled_stop(self: shared.kafka.IncarnationCheck) -> None:
        await real_stop(self)
        raise asyncio.CancelledError  # what a client does to a future the stop awaits

    producer = await started_producer(broker.settings())
    try:
        first = consumer(broker, app, topic, Behaviour(), lambda: producer)
        stop = asyncio.Event()
        task = asyncio.ensure_future(first.run(stop))
        await eventually(lambda: app.marked("FIRST"), what="the first run at work")
        monkeypatch.setattr(shared.kafka.IncarnationCheck, "stop", cancelled_stop)
        stop.set()
        with suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 15)
        monkeypatch.undo()

        # Both partitions: every one must reach the next run's member.
        later = [f"LATER-{i}" for i in range(8)]
        for i, loan in enumerate(later):
            await producer.send_and_wait(topic, closed_event(loan).encode(), partition=i % 2)
        async with running(consumer(broker, app, topic, Behaviour(), lambda: producer).run):
            await eventually(lambda: all(app.marked(loan) for loan in later), timeout=40,
                             what="every partition read by the next run")
    finally:
        await producer.stop()
