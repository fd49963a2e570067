"""Composition root of the audit service."""

from __future__ import annotations

from fastapi import FastAPI

from shared import topics
from shared.clock import Clock, SystemClock
from shared.service import Parts, assemble, serve

from services.audit.api import router
from services.audit.application import AuditLog
from services.audit.settings import Settings
from services.audit.store import LogStore

AUDITED_TOPICS = [topics.LOANS, topics.CASES, topics.REMINDERS, topics.VISITS]


def create(settings: Settings | None = None, clock: Clock | None = None,
           connect: bool = True) -> FastAPI:
    settings = settings or Settings()
    clock = clock or SystemClock()
    log = AuditLog(LogStore(settings.store_path("audit")))
    parts = Parts(
        name="audit", settings=settings, clock=clock, store=log, store_check=log.store.ping,
        sink=log, subscribe=AUDITED_TOPICS, routers=[router], order_across_partitions=True)
    return assemble(parts, connect=connect)


def main() -> None:
    settings = Settings()
    serve(create(settings), settings)


if __name__ == "__main__":
    main()
