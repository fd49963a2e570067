"""The runtime over a real broker: a broker that comes back empty is noticed within seconds
and every loop starts again under the new incarnation; stopping is bounded whatever the
broker does."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from shared.runtime import Runtime
from tests.integration.kit import Broker, eventually


async def test_a_broker_that_lost_its_data_is_noticed_and_the_loops_restart(
        own_broker: Broker) -> None:
    runtime = Runtime(own_broker.settings(incarnation_check_seconds=0.5))
    runtime.start()
    runs: list[str] = []

    async def loop(stop: asyncio.Event) -> None:
        runs.append(runtime.current_incarnation())
        await stop.wait()

    runtime.spawn("follower", loop)
    try:
        first = await eventually(lambda: runtime.incarnation, what="a first incarnation")
        await eventually(lambda: runs, what="the loop to start")
        assert runtime.checks() == {"broker": True, "loop:follower": True}

        own_broker.replace_with_empty()
        noticed = time.monotonic()
        second = await eventually(lambda: runtime.incarnation != first and runtime.incarnation,
                                  timeout=20, what="the new incarnation")
        noticed = time.monotonic() - noticed
        await eventually(lambda: len(runs) == 2, what="the loop to start again")
    finally:
        await runtime.close()
    assert runs == [first, second]
    assert noticed < 10, f"took {noticed:.1f} s"


async def test_a_cancellation_from_inside_a_loop_restarts_it_and_close_still_stops_it(
        broker: Broker) -> None:
    """aiokafka may cancel a future of its own that a loop awaits (a rejoin resetting the
    group): the CancelledError is the loop's failure, not the end of the service's loop."""
    runtime = Runtime(broker.settings(incarnation_check_seconds=0.5))
    runtime.start()
    runs: list[int] = []

    async def loop(stop: asyncio.Event) -> None:
        runs.append(len(runs))
        if len(runs) == 1:
            inner: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            inner.cancel()  # what a client does to a future the loop awaits
            await inner
        await stop.wait()

    runtime.spawn("consumer", loop)
    try:
        await eventually(lambda: len(runs) == 2, timeout=20, what="the loop to run again")
        assert runtime.health["consumer"].failures == 1
    finally:
        started = time.monotonic()
        await runtime.close()
    assert time.monotonic() - started < 5  # a real stop still ends it
    assert len(runs) == 2


async def test_readiness_says_the_broker_is_gone_while_it_is(own_broker: Broker) -> None:
    runtime = Runtime(own_broker.settings(incarnation_check_seconds=0.5))
    runtime.start()
    try:
        await eventually(lambda: runtime.checks()["broker"], what="connected")
        own_broker.process.kill()
        await eventually(lambda: runtime.checks()["broker"] is False, timeout=20,
                         what="readiness to notice")
    finally:
        await runtime.close()


async def test_close_is_bounded_when_the_broker_hangs(own_broker: Broker,
                                                      tmp_path: Path) -> None:
    """A frozen broker (SIGSTOP) answers nothing and closes nothing: stop anyway."""
    from tests.integration.kit import (
        Behaviour,
        closed_event,
        create_topics,
        fresh_topic,
        marks,
        produce,
    )
    from tests.integration.test_consumer_loop import consumer

    topic = fresh_topic()
    settings = own_broker.settings()
    await create_topics(settings, topic)
    await produce(settings, topic, [closed_event("FROZEN")])
    runtime = Runtime(own_broker.settings(incarnation_check_seconds=0.5))
    runtime.start()
    app = marks(tmp_path)
    runtime.spawn("consumer", consumer(own_broker, app, topic, Behaviour(),
                                       runtime.current_producer).run)
    try:
        await eventually(lambda: app.marked("FROZEN"), what="the consumer running")
        own_broker.freeze()
        await asyncio.sleep(1.0)
        started = time.monotonic()
        await runtime.close()
        took = time.monotonic() - started
    finally:
        own_broker.thaw()
    assert took < 9, f"close took {took:.1f} s"


async def test_records_of_a_new_broker_are_never_read_from_the_old_positions(
        own_broker: Broker, tmp_path: Path) -> None:
    """Another service refills the new broker before this one's own check comes round: the
    consumer must not read it from the old incarnation's positions (records skipped as applied,
    later ones applied early). Everything is applied under the new incarnation, in order."""
    from shared.clock import SystemClock
    from shared.consumer import ConsumerSettings, EventConsumer, HandlerSink
    from shared.events import CaseClosed
    from shared.kafka import prepare_broker
    from tests.integration.kit import Behaviour, closed_event, create_topics, marks, produce

    topic = "window.events"
    settings = own_broker.settings(incarnation_check_seconds=30.0)  # a slow check, on purpose
    app = marks(tmp_path)
    order: list[str] = []
    behaviour = Behaviour()

    def handler(*args: object) -> None:
        order.append(args[3].loan_id)  # type: ignore[attr-defined]
        behaviour.handler(*args)  # type: ignore[arg-type]

    await create_topics(settings, topic, topic + ".dlq")
    await produce(settings, topic, [closed_event(f"OLD-{i}") for i in range(6)])
    runtime = Runtime(settings)
    runtime.start()
    consumer = EventConsumer(
        group="window", subscribe=[topic],
        sink=HandlerSink(app, {CaseClosed: handler}, SystemClock()),
        kafka_options=settings.consumer_options(), producer=runtime.current_producer,
        incarnation=runtime.current_incarnation, clock=SystemClock(),
        settings=ConsumerSettings(), on_other_broker=runtime.check_soon)
    runtime.spawn("consumer", consumer.run)
    try:
        await eventually(lambda: len(order) == 6, what="the old records")
        first = runtime.incarnation
        own_broker.replace_with_empty()
        await prepare_broker(settings)  # the other service, first to notice
        await create_topics(settings, topic, topic + ".dlq")
        await produce(settings, topic, [closed_event(f"NEW-{i}") for i in range(10)])
        await eventually(lambda: len(order) == 16, timeout=60, what="the new records")
    finally:
        await runtime.close()
    assert order[6:] == [f"NEW-{i}" for i in range(10)]
    assert runtime.incarnation != first
    assert app.position(f"kafka/{first}/{topic}/0") == 5  # nothing applied under the old name
    # (Tansu may have made the new topic itself, with other partitions, on the first request.)
    assert [app.position(f"kafka/{runtime.incarnation}/{topic}/{p}") for p in range(4)
            ].count(9) == 1
