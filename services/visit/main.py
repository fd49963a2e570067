"""Composition root of the visit service."""

from __future__ import annotations

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

from services.visit.api import RateLimit, router
from services.visit.application import Visits
from services.visit.handlers import HANDLERS
from services.visit.recordings import RecordingStore
from services.visit.relay import publisher
from services.visit.settings import Settings

RECORDING_PATH = r"/v1/visits/[^/]+/recording"


def create(settings: Settings | None = None, clock: Clock | None = None,
           connect: bool = True) -> FastAPI:
    settings = settings or Settings()
    clock = clock or settings.make_clock()
    visits = Visits(pack(settings.pack), env=settings.persistence_env("visit"))

    def at_version(aggregate_id: object, version: int) -> object:
        return visits.repository.get(aggregate_id, version=version)  # type: ignore[arg-type]

    def agenda(runtime: Runtime, beat: Callable[[], None]) -> Loop:
        owner = settings.replica_id or f"{socket.gethostname()}:{settings.port}"
        return Agenda(app=visits, fire=visits.fire, clock=clock, owner=owner,
                      lease=timedelta(seconds=settings.agenda_lease_seconds),
                      batch=settings.agenda_batch, on_progress=beat).run

    parts = Parts(
        name="visit", settings=settings, clock=clock, store=visits,
        store_check=visits.check_store,
        sink=HandlerSink(visits, HANDLERS, clock),
        subscribe=[topics.CASES, topics.REMINDERS],
        routers=[router], outbox=StoredEvents(visits, publisher(at_version), "/dunwell/visit"),
        streamed=[RECORDING_PATH], loops=[("agenda", agenda)])
    app = assemble(parts, connect=connect)
    app.state.recordings = RecordingStore(settings.recordings_path(),
                                          settings.max_recording_bytes)
    app.state.verify_limit = RateLimit(settings.verify_per_second)
    return app


def main() -> None:
    settings = Settings()
    serve(create(settings), settings)


if __name__ == "__main__":
    main()
