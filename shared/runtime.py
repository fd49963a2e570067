"""The Kafka side of a running service: the connection, the broker's incarnation, its loops.

The service comes up at once and connects in the background. While it runs, the broker's
incarnation is checked every few seconds: a broker that lost its data (an in-memory broker
restarted, a rebuilt cluster) has a new one, and every loop is then restarted under it, so
relays refill the new broker from the store and consumers read it from its beginning.

Each loop is supervised: an exception is logged and the loop restarted with backoff, and so is
a cancellation that did not come to the loop's own task (a Kafka client cancelling its own
futures under it); a loop that keeps failing shows in readiness and in metrics. Shutdown is
bounded: every loop is asked to stop and awaited, and whatever is still running after the
budget is cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from prometheus_client import Counter, Gauge

from shared.errors import describe
from shared.kafka import make_producer, prepare_broker, read_incarnation
from shared.settings import KafkaSettings

log = logging.getLogger(__name__)

Loop = Callable[[asyncio.Event], Awaitable[None]]

LOOP_FAILURES = Counter("dunwell_loop_failures_total", "Loop runs that ended in an error",
                        ["loop"])
LOOP_FAILING = Gauge("dunwell_loop_failing", "1 while a loop keeps failing", ["loop"])
BROKER_UP = Gauge("dunwell_broker_reachable", "1 while the broker answers the incarnation check")
INCARNATIONS = Counter("dunwell_broker_incarnations_total",
                       "Broker incarnations this process has worked with")

FAILING_AFTER = 3  # consecutive failures before readiness says so
# Of the 10 s between SIGTERM and SIGKILL: HTTP gets 2 s, the loops 4 s (then 1 s to take
# their cancellation), the producer 1.5 s.
STOP_BUDGET_SECONDS = 4.0


class Wakeup:
    """Wakes an idle loop early; `set` may be called from any thread."""

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    def bind(self) -> None:
        self._loop = asyncio.get_running_loop()

    def set(self) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._event.set)

    async def wait(self, stop: asyncio.Event, seconds: float) -> None:
        """Until woken, stopped or `seconds` have passed."""
        woken = asyncio.ensure_future(self._event.wait())
        stopped = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({woken, stopped}, timeout=max(seconds, 0.0),
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            woken.cancel()
            stopped.cancel()
        self._event.clear()


@dataclass
class LoopHealth:
    name: str
    failures: int = 0
    last_error: str | None = None

    def ok(self) -> None:
        if self.failures:
            log.info("%s is working again", self.name)
            LOOP_FAILING.labels(self.name).set(0)
        self.failures = 0

    def failed(self, error: BaseException) -> None:
        self.failures += 1
        self.last_error = describe(error)
        LOOP_FAILURES.labels(self.name).inc()
        if self.failing:
            LOOP_FAILING.labels(self.name).set(1)

    @property
    def failing(self) -> bool:
        return self.failures >= FAILING_AFTER


@dataclass
class Runtime:
    settings: KafkaSettings
    incarnation: str | None = None
    producer: AIOKafkaProducer | None = None
    broker_ok: bool = False
    broker_error: str | None = "not connected yet"
    health: dict[str, LoopHealth] = field(default_factory=dict)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _generation: asyncio.Event = field(default_factory=asyncio.Event)
    _connected: asyncio.Event = field(default_factory=asyncio.Event)
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)
    _changed_at: float = 0.0
    _watcher: asyncio.Task[None] | None = None
    _soon: Wakeup = field(default_factory=Wakeup)

    def start(self) -> None:
        """Begin connecting in the background; loops spawned now start once connected."""
        self._soon.bind()
        self._watcher = asyncio.create_task(self._watch(), name="incarnation")

    def spawn(self, name: str, loop: Loop) -> LoopHealth:
        health = self.health.setdefault(name, LoopHealth(name))
        self._tasks.append(asyncio.create_task(self._supervise(health, loop), name=name))
        return health

    def check_soon(self) -> None:
        """A loop saw records of another incarnation: check the broker now, not in a while."""
        self._soon.set()

    def beat(self, name: str) -> Callable[[], None]:
        """What loop `name` calls when it got through a round: it is working."""

        def beat() -> None:
            health = self.health.get(name)
            if health is not None:
                health.ok()

        return beat

    def current_producer(self) -> AIOKafkaProducer:
        if self.producer is None:
            raise RuntimeError("not connected to the broker")
        return self.producer

    def current_incarnation(self) -> str:
        if self.incarnation is None:
            raise RuntimeError("not connected to the broker")
        return self.incarnation

    def checks(self) -> dict[str, bool]:
        result = {"broker": self.broker_ok and self.incarnation is not None}
        result.update({f"loop:{name}": not health.failing for name, health in self.health.items()})
        return result

    async def _supervise(self, health: LoopHealth, loop: Loop) -> None:
        while not self._stopping.is_set():
            if not await self._until_connected():
                return
            generation = self._generation
            try:
                await loop(generation)
            except asyncio.CancelledError as error:
                if self._cancelled():
                    raise
                # Not this task's cancellation: a Kafka client cancelled one of its own
                # futures under the loop (aiokafka does, when a rejoin resets the group).
                # Let through, it would end the loop for good with the service still up.
                await self._failed(health, error)
            except Exception as error:  # noqa: BLE001 - logged, counted, restarted
                await self._failed(health, error)
            else:
                if not generation.is_set():  # a loop that returned by itself: run it again
                    await self._pause(0.5)

    def _cancelled(self) -> bool:
        """Whether the running task itself is being cancelled (or the runtime stopping)."""
        task = asyncio.current_task()
        return self._stopping.is_set() or (task is not None and task.cancelling() > 0)

    async def _failed(self, health: LoopHealth, error: BaseException) -> None:
        health.failed(error)
        log.error("%s failed (%s); restarting, failure %d", health.name, describe(error),
                  health.failures)
        await self._pause(min(0.5 * 2 ** min(health.failures - 1, 5), 10.0))

    async def _until_connected(self) -> bool:
        if self._connected.is_set():
            return True
        connected = asyncio.ensure_future(self._connected.wait())
        stopping = asyncio.ensure_future(self._stopping.wait())
        await asyncio.wait({connected, stopping}, return_when=asyncio.FIRST_COMPLETED)
        connected.cancel()
        stopping.cancel()
        return not self._stopping.is_set()

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _watch(self) -> None:
        """Connect, then keep checking that the broker is the incarnation we work with."""
        while not self._stopping.is_set():
            try:
                await self._check()
                self.broker_ok, self.broker_error = True, None
            except (KafkaError, OSError, TimeoutError, RuntimeError) as error:
                if self.broker_ok or self.broker_error is None:
                    log.warning("broker %s not answering: %s", self.settings.bootstrap,
                                describe(error))
                self.broker_ok, self.broker_error = False, describe(error)
            BROKER_UP.set(1 if self.broker_ok else 0)
            await self._soon.wait(self._stopping, self.settings.incarnation_check_seconds)

    async def _check(self) -> None:
        found = await read_incarnation(self.settings)
        if found is None:
            found = await asyncio.wait_for(prepare_broker(self.settings), 30)
        if self.producer is None:
            producer = make_producer(self.settings)
            try:
                await asyncio.wait_for(producer.start(), self.settings.call_timeout_seconds)
            except BaseException:
                await _quietly(producer.stop(), 1.0)
                raise
            self.producer = producer
        if found != self.incarnation:
            self._begin(found)

    def _begin(self, incarnation: str) -> None:
        """Work with a new incarnation: every loop stops and starts again under it."""
        if self.incarnation is None:
            log.info("connected to %s (incarnation %s)", self.settings.bootstrap, incarnation[:8])
        else:
            log.warning("the broker at %s lost its data (incarnation %s, was %s): refilling it "
                        "from the store", self.settings.bootstrap, incarnation[:8],
                        self.incarnation[:8])
        INCARNATIONS.inc()
        self.incarnation = incarnation
        self._changed_at = time.monotonic()
        previous, self._generation = self._generation, asyncio.Event()
        previous.set()
        self._connected.set()

    async def close(self) -> None:
        """Stop every loop within the budget, then the producer."""
        started = time.monotonic()
        log.info("stopping")
        self._stopping.set()
        self._generation.set()
        if self._watcher is not None:  # it holds nothing worth finishing
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)
        tasks = [task for task in self._tasks if not task.done()]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=STOP_BUDGET_SECONDS)
            for task in pending:
                log.warning("%s did not stop in time; cancelled", task.get_name())
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)
        if self.producer is not None:
            await _quietly(self.producer.stop(), 1.5)
        log.info("stopped in %.1f s", time.monotonic() - started)


async def _quietly(call: Awaitable[object], seconds: float) -> None:
    try:
        await asyncio.wait_for(call, seconds)
    except Exception as error:  # noqa: BLE001 - stopping: nothing more to do with it
        log.info("stopping the producer: %s", type(error).__name__)
