"""`kill -USR1` logs where each task waits: through every coroutine it awaits, so a Kafka
client's background routine shows by name, not only the task's outermost frame."""

from __future__ import annotations

import asyncio
import logging

import pytest

from shared.service import dump_tasks


async def _inner_wait(release: asyncio.Event) -> None:
    await release.wait()


async def _outer_wait(release: asyncio.Event) -> None:
    await _inner_wait(release)


def test_each_task_is_told_with_the_coroutines_it_awaits(
        caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        release = asyncio.Event()
        task = asyncio.create_task(_outer_wait(release), name="the-waiter")
        await asyncio.sleep(0)
        with caplog.at_level(logging.WARNING, logger="shared.service"):
            dump_tasks()
        release.set()
        await task

    asyncio.run(main())
    [line] = [r.getMessage() for r in caplog.records if "the-waiter" in r.getMessage()]
    assert line.index("_outer_wait") < line.index("_inner_wait") < line.index("locks.py")
    assert "test_dump_tasks.py" in line
