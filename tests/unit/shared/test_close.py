"""A Kafka consumer's stop is waited for a bounded time and never cut short: cancelled
half-way, a consumer may go on heartbeating, a group member that holds partitions and never
fetches them (the broker-loss stall)."""

from __future__ import annotations

import asyncio

from shared.consumer import close_in_time


class SlowToStop:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.stopped = False
        self.cancelled = False

    async def stop(self) -> None:
        try:
            await asyncio.sleep(self.seconds)
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        self.stopped = True


def test_a_slow_stop_is_left_to_finish_in_the_background() -> None:
    async def scenario() -> SlowToStop:
        client = SlowToStop(0.3)
        await close_in_time(client, 0.05)  # returns at the bound...
        assert not client.stopped
        await asyncio.sleep(0.5)  # ...and the stop goes on to the end
        return client

    client = asyncio.run(scenario())
    assert client.stopped and not client.cancelled


def test_a_quick_stop_is_waited_for() -> None:
    async def scenario() -> SlowToStop:
        client = SlowToStop(0.01)
        await close_in_time(client, 1.0)
        return client

    assert asyncio.run(scenario()).stopped


def test_a_cancelled_run_does_not_cancel_the_stop() -> None:
    async def scenario() -> SlowToStop:
        client = SlowToStop(0.2)
        waiting = asyncio.ensure_future(close_in_time(client, 5.0))
        await asyncio.sleep(0.02)
        waiting.cancel()  # the service stopping: its loop is cancelled
        await asyncio.gather(waiting, return_exceptions=True)
        await asyncio.sleep(0.3)
        return client

    client = asyncio.run(scenario())
    assert client.stopped and not client.cancelled
