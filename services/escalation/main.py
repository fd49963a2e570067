"""Composition root of the escalation service."""

from __future__ import annotations

import re
import socket
from collections.abc import Callable
from datetime import timedelta

from fastapi import FastAPI

from shared import topics
from shared.agenda import Agenda
from shared.clock import Clock
from shared.consumer import HandlerSink
from shared.policy_pack import pack
from shared.relay import StoredEvents
from shared.runtime import Loop, Runtime
from shared.service import Parts, assemble, serve

from services.escalation.api import BATCH_ROUTE, MAX_BATCH_BODY_BYTES, router
from services.escalation.application import Cases
from services.escalation.handlers import HANDLERS
from services.escalation.relay import integration_event
from services.escalation.settings import Settings


def create(settings: Settings | None = None, clock: Clock | None = None,
           connect: bool = True) -> FastAPI:
    settings = settings or Settings()
    clock = clock or settings.make_clock()
    cases = Cases(pack(settings.pack), env=settings.persistence_env("escalation"))

    def agenda(runtime: Runtime, beat: Callable[[], None]) -> Loop:
        owner = settings.replica_id or f"{socket.gethostname()}:{settings.port}"
        return Agenda(app=cases, fire=cases.fire, fire_many=cases.fire_many, clock=clock,
                      owner=owner,
                      lease=timedelta(seconds=settings.agenda_lease_seconds),
                      batch=settings.agenda_batch, on_progress=beat).run

    parts = Parts(
        name="escalation", settings=settings, clock=clock, store=cases,
        store_check=cases.check_store,
        sink=HandlerSink(cases, HANDLERS, clock),
        subscribe=[topics.LOANS, topics.REMINDERS, topics.VISITS],
        routers=[router], outbox=StoredEvents(cases, integration_event, "/dunwell/escalation"),
        loops=[("agenda", agenda)],
        body_limits={re.escape(f"/v1{BATCH_ROUTE}"): MAX_BATCH_BODY_BYTES})
    return assemble(parts, connect=connect)


def main() -> None:
    settings = Settings()
    serve(create(settings), settings)


if __name__ == "__main__":
    main()
