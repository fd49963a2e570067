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
