"""Composition root of the visit service."""

from __future__ import annotations

from fastapi import FastAPI

from shared import topics
from shared.clock import Clock
from shared.consumer import HandlerSink
from shared.relay import StoredEvents
from shared.service import Parts, assemble, serve

from services.visit.api import router
from services.visit.application import Visits
from services.visit.handlers import HANDLERS
from services.visit.relay import integration_event
from services.visit.settings import Settings


def create(settings: Settings | None = None, clock: Clock | None = None,
           connect: bool = True) -> FastAPI:
    settings = settings or Settings()
    clock = clock or settings.make_clock()
    visits = Visits(env=settings.persistence_env("visit"))
    parts = Parts(
        name="visit", settings=settings, clock=clock, store=visits,
        store_check=visits.check_store,
        sink=HandlerSink(visits, HANDLERS, clock), subscribe=[topics.CASES],
        routers=[router], outbox=StoredEvents(visits, integration_event, "/dunwell/visit"))
    return assemble(parts, connect=connect)


def main() -> None:
    settings = Settings()
    serve(create(settings), settings)


if __name__ == "__main__":
    main()
