"""Composition root of the reminder service."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from fastapi import FastAPI

from shared import topics
from shared.clock import Clock, SystemClock
from shared.consumer import HandlerSink
from shared.policy_pack import pack
from shared.runtime import Loop, Runtime
from shared.service import Parts, assemble, serve

from services.reminder.api import router
from services.reminder.application import Reminders
from services.reminder.channels import FileSmsSink, SmsGateway
from services.reminder.handlers import HANDLERS
from services.reminder.relay import integration_event
from services.reminder.settings import Settings


def dispatcher(reminders: Reminders, gateway: SmsGateway, clock: Clock,
               settings: Settings) -> Loop:
    """Sends whatever is due; the agenda is derived from the store, so restarts lose nothing."""
    retry_after = timedelta(seconds=settings.retry_after_seconds)

    async def run(stop: asyncio.Event) -> None:
        while not stop.is_set():
            now = clock.now()
            for reminder_id in reminders.due(now):
                await asyncio.to_thread(reminders.send_due, reminder_id, gateway, now,
                                        retry_after)
            try:
                await asyncio.wait_for(stop.wait(), settings.dispatch_interval_seconds)
            except asyncio.TimeoutError:
                pass

    return run


def create(settings: Settings | None = None, clock: Clock | None = None,
           connect: bool = True, gateway: SmsGateway | None = None) -> FastAPI:
    settings = settings or Settings()
    clock = clock or SystemClock()
    reminders = Reminders(pack(settings.pack), settings.verification_channel,
                          env=settings.persistence_env("reminder"))
    sms = gateway or FileSmsSink(settings.sms_sink_path())

    def start_dispatcher(runtime: Runtime) -> Loop:
        return dispatcher(reminders, sms, clock, settings)

    parts = Parts(
        name="reminder", settings=settings, clock=clock, store=reminders,
        store_check=reminders.recorder.max_notification_id,
        sink=HandlerSink(reminders, HANDLERS, clock), subscribe=[topics.CASES],
        routers=[router], relay=(reminders, integration_event),
        loops=[("dispatcher", start_dispatcher)])
    return assemble(parts, connect=connect)


def main() -> None:
    settings = Settings()
    serve(create(settings), settings)


if __name__ == "__main__":
    main()
