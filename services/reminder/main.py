"""Composition root of the reminder service."""

from __future__ import annotations

import socket
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from uuid import UUID

from fastapi import FastAPI

from shared import topics
from shared.agenda import Agenda
from shared.clock import Clock
from shared.consumer import HandlerSink
from shared.policy_pack import pack
from shared.relay import StoredEvents
from shared.runtime import Loop, Runtime
from shared.service import Parts, assemble, serve

from services.reminder.api import router
from services.reminder.application import Reminders
from services.reminder.channels import Gateway, build_gateways
from services.reminder.handlers import HANDLERS
from services.reminder.relay import integration_event
from services.reminder.settings import Settings


def create(settings: Settings | None = None, clock: Clock | None = None,
           connect: bool = True, gateways: Mapping[str, Gateway] | None = None) -> FastAPI:
    settings = settings or Settings()
    clock = clock or settings.make_clock()
    reminders = Reminders(pack(settings.pack), settings.verification_channel,
                          env=settings.persistence_env("reminder"),
                          verify_url=settings.verify_url)
    channels = gateways if gateways is not None else build_gateways(settings)
    retry_after = timedelta(seconds=settings.retry_after_seconds)

    senders = ThreadPoolExecutor(settings.send_concurrency, thread_name_prefix="send")

    def fire(aggregate_id: UUID, kind: str, now: datetime) -> None:
        reminders.fire(aggregate_id, kind, channels, now, retry_after, senders)

    def fire_many(aggregate_ids: list[UUID], kind: str, now: datetime) -> None:
        reminders.fire_many(aggregate_ids, kind, channels, now, retry_after, senders)

    def agenda(runtime: Runtime, beat: Callable[[], None]) -> Loop:
        owner = settings.replica_id or f"{socket.gethostname()}:{settings.port}"
        return Agenda(app=reminders, fire=fire, fire_many=fire_many, clock=clock, owner=owner,
                      lease=timedelta(seconds=settings.agenda_lease_seconds),
                      batch=settings.agenda_batch, on_progress=beat).run

    parts = Parts(
        name="reminder", settings=settings, clock=clock, store=reminders,
        store_check=reminders.check_store,
        sink=HandlerSink(reminders, HANDLERS, clock), subscribe=[topics.CASES, topics.VISITS],
        routers=[router], outbox=StoredEvents(reminders, integration_event, "/dunwell/reminder"),
        loops=[("agenda", agenda)])
    return assemble(parts, connect=connect)


def main() -> None:
    settings = Settings()
    serve(create(settings), settings)


if __name__ == "__main__":
    main()
