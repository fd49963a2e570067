"""The Kafka side of a running service: producer, broker incarnation, background loops.

Loops are restarted after a failure (a broker hiccup must not kill the service silently) and
are all awaited on shutdown; nothing is cancelled without being waited for.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiokafka import AIOKafkaProducer

from shared.kafka import make_producer, prepare_broker
from shared.settings import KafkaSettings

log = logging.getLogger(__name__)

Loop = Callable[[asyncio.Event], Awaitable[None]]


class Runtime:
    def __init__(self, settings: KafkaSettings, producer: AIOKafkaProducer,
                 incarnation: str) -> None:
        self.settings = settings
        self.producer = producer
        self.incarnation = incarnation
        self.stop = asyncio.Event()
        self.failures = 0
        self._tasks: list[asyncio.Task[None]] = []

    @classmethod
    async def start(cls, settings: KafkaSettings) -> Runtime:
        incarnation = await prepare_broker(settings)
        producer = make_producer(settings)
        await producer.start()
        log.info("connected to %s (incarnation %s)", settings.bootstrap, incarnation[:8])
        return cls(settings, producer, incarnation)

    def spawn(self, name: str, loop: Loop) -> None:
        self._tasks.append(asyncio.create_task(self._supervise(name, loop), name=name))

    async def _supervise(self, name: str, loop: Loop) -> None:
        while not self.stop.is_set():
            try:
                await loop(self.stop)
            except Exception:  # noqa: BLE001 - logged and restarted; readiness shows it
                self.failures += 1
                log.exception("%s failed; restarting in 1 s", name)
                try:
                    await asyncio.wait_for(self.stop.wait(), 1.0)
                except asyncio.TimeoutError:
                    pass

    async def close(self) -> None:
        self.stop.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.producer.stop()
