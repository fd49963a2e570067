"""Assembles a service process: HTTP app, store, tracked consumer, outbox relay, its loops."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from fastapi import APIRouter, FastAPI

from shared.application import ServiceApplication
from shared.auth import load_or_create_secret
from shared.clock import Clock
from shared.consumer import EventConsumer, Sink
from shared.http import create_app
from shared.relay import Mapping, OutboxRelay
from shared.runtime import Loop, Runtime
from shared.settings import ServiceSettings


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
    relay: tuple[ServiceApplication, Mapping] | None = None
    loops: Sequence[tuple[str, Callable[[Runtime], Loop]]] = field(default_factory=tuple)
    order_across_partitions: bool = False


def assemble(parts: Parts, *, connect: bool = True) -> FastAPI:
    """The FastAPI app; with `connect` its lifespan starts and stops the Kafka side."""
    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not connect:
            yield
            return
        runtime = await Runtime.start(parts.settings.kafka)
        consumer = EventConsumer(
            settings=parts.settings.kafka, group=f"dunwell-{parts.name}",
            subscribe=parts.subscribe, sink=parts.sink, incarnation=runtime.incarnation,
            producer=runtime.producer, order_across_partitions=parts.order_across_partitions)
        runtime.spawn("consumer", consumer.run)
        if parts.relay is not None:
            application, mapping = parts.relay
            relay = OutboxRelay(app=application, mapping=mapping, producer=runtime.producer,
                                source=f"/dunwell/{parts.name}", incarnation=runtime.incarnation,
                                idle_seconds=parts.settings.relay_idle_seconds)
            runtime.spawn("relay", relay.run)
        for loop_name, make_loop in parts.loops:
            runtime.spawn(loop_name, make_loop(runtime))
        state.update(runtime=runtime, consumer=consumer)
        try:
            yield
        finally:
            await runtime.close()

    def checks() -> dict[str, bool]:
        parts.store_check()
        result = {"store": True}
        if connect:
            consumer = state.get("consumer")
            result["broker"] = consumer is not None and consumer.ready()
        return result

    secret = parts.settings.auth.secret or load_or_create_secret(parts.settings.secret_file())
    app = create_app(title=f"dunwell {parts.name}", routers=parts.routers, checks=checks,
                     lifespan=lifespan, jwt_secret=secret)
    app.state.service = parts.store
    app.state.clock = parts.clock
    app.state.settings = parts.settings
    return app


def serve(app: FastAPI, settings: ServiceSettings) -> None:
    """Run one service process; logs carry ids, never personal data."""
    logging.basicConfig(level=os.environ.get("DUNWELL_LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning",
                access_log=False, timeout_graceful_shutdown=10)
