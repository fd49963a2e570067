"""Assembles a service process: HTTP app, store, tracked consumer, outbox relay, its loops."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from fastapi import APIRouter, FastAPI

from shared import telemetry
from shared.auth import accepted_tokens
from shared.clock import Clock
from shared.consumer import EventConsumer, Sink
from shared.errors import describe
from shared.http import create_app
from shared.relay import Outbox, OutboxRelay
from shared.runtime import Loop, Runtime
from shared.settings import ServiceSettings

log = logging.getLogger(__name__)


@dataclass
class Parts:
    """Everything that differs between services; `main.py` of each fills it in."""

    name: str
    settings: ServiceSettings
    clock: Clock
    store: Any
    store_check: Callable[[], object]
    sink: Sink
    subscribe: Sequence[str]
    routers: Sequence[APIRouter]
    outbox: Outbox | None = None
    loops: Sequence[tuple[str, Callable[[Runtime, Callable[[], None]], Loop]]] = \
        field(default_factory=tuple)
    order_across_partitions: bool = False
    streamed: Sequence[str] = ()  # paths (regular expressions) whose bodies are streamed
    # paths (regular expressions) that take a larger body than the default: a batch
    body_limits: Mapping[str, int] = field(default_factory=dict)


def assemble(parts: Parts, *, connect: bool = True) -> FastAPI:
    """The FastAPI app; with `connect` its lifespan starts and stops the Kafka side."""
    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not connect:
            yield
            return
        kafka = parts.settings.kafka
        runtime = Runtime(kafka)
        runtime.start()
        consumer = EventConsumer(
            group=f"dunwell-{parts.name}", subscribe=parts.subscribe, sink=parts.sink,
            kafka_options=kafka.consumer_options(), producer=runtime.current_producer,
            incarnation=runtime.current_incarnation, clock=parts.clock,
            on_progress=runtime.beat("consumer"), on_other_broker=runtime.check_soon,
            order_across_partitions=parts.order_across_partitions)
        runtime.spawn("consumer", consumer.run)
        relay = None
        if parts.outbox is not None:
            relay = OutboxRelay(outbox=parts.outbox, producer=runtime.current_producer,
                                incarnation=runtime.current_incarnation,
                                idle_seconds=parts.settings.relay_idle_seconds,
                                call_timeout_seconds=kafka.call_timeout_seconds,
                                on_progress=runtime.beat("relay"))
            runtime.spawn("relay", relay.run)
        for loop_name, make_loop in parts.loops:
            runtime.spawn(loop_name, make_loop(runtime, runtime.beat(loop_name)))
        state.update(runtime=runtime, consumer=consumer, relay=relay)
        try:
            yield
        finally:
            await runtime.close()

    def checks() -> dict[str, bool]:
        """Each check by name; one that raises is false, the others are still reported."""
        try:
            parts.store_check()
            result = {"store": True}
        except Exception as error:  # noqa: BLE001 - a store that cannot answer is not ready
            log.warning("readiness: the store check failed: %s", describe(error))
            result = {"store": False}
        runtime: Runtime | None = state.get("runtime")
        if connect:
            result.update(runtime.checks() if runtime else {"broker": False})
            consumer: EventConsumer | None = state.get("consumer")
            result["consumer"] = consumer is not None and consumer.ready()
            relay: OutboxRelay | None = state.get("relay")
            if relay is not None:
                result["relay"] = not relay.refilling()
        return result

    tokens = accepted_tokens(parts.settings.auth, parts.settings.secret_file())
    app = create_app(title=f"dunwell {parts.name}", routers=parts.routers, checks=checks,
                     lifespan=lifespan, tokens=tokens, streamed=parts.streamed,
                     body_limits=parts.body_limits)
    app.state.service = parts.store
    app.state.clock = parts.clock
    app.state.settings = parts.settings
    app.state.service_name = parts.name
    return app


class OncePer(logging.Filter):
    """Lets a message of the `prefix` loggers through once per `seconds` for each template."""

    def __init__(self, prefix: str, seconds: float) -> None:
        super().__init__()
        self.prefix = prefix
        self.seconds = seconds
        self._last: dict[tuple[str, object], float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(self.prefix):
            return True
        key = (record.name, record.msg)
        now = time.monotonic()
        if now - self._last.get(key, -self.seconds) < self.seconds:
            return False
        self._last[key] = now
        return True


def dump_tasks() -> None:
    """Log where every asyncio task of the process is waiting (`kill -USR1 <pid>`): for an
    operator whose service says it is not ready and does not say why. Frames only, no data."""
    for task in asyncio.all_tasks():
        where = " -> ".join(f"{f.f_code.co_filename.rsplit('/', 2)[-1]}:{f.f_lineno}"
                            f" {f.f_code.co_name}" for f in _awaiting(task.get_coro()))
        log.warning("task %s: %s", task.get_name(), where or "(not started)")


def _awaiting(coro: Any) -> list[Any]:
    """The frames of a coroutine and of what it awaits, outermost first (a task's own stack
    holds only the outermost)."""
    frames: list[Any] = []
    while coro is not None and len(frames) < 24:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is not None:
            frames.append(frame)
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return frames


def serve(app: FastAPI, settings: ServiceSettings) -> None:
    """Run one service process; logs carry ids, never personal data (shared/telemetry.py
    says how they are written, and how traces are exported)."""
    telemetry.configure(app.state.service_name)
    # aiokafka tells every join and subscription at INFO (the incarnation check alone would
    # write a line every two seconds), and every failed connection while a broker is away.
    logging.getLogger("aiokafka").setLevel(os.environ.get("DUNWELL_KAFKA_LOG_LEVEL", "WARNING"))
    # One line per request to a channel provider is noise; its failures are logged by us.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    for handler in logging.getLogger().handlers:
        handler.addFilter(OncePer("aiokafka", 10.0))
    # Open connections get 2 s to finish; the loops then have their own bounded stop, so
    # SIGTERM ends the process well within 10 s whatever the broker does.
    # uvicorn's own loggers write through ours (log_config=None), in the same format.
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level="warning",
                            access_log=False, timeout_graceful_shutdown=2, log_config=None)
    server = uvicorn.Server(config)

    async def run() -> None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, dump_tasks)
        await server.serve()

    asyncio.run(run())
