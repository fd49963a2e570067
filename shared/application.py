"""The base of every event-sourced service application: exactly-once effect for Kafka messages.

A consumed message is handled inside a unit of work: whatever the handler saves, an `Inbox`
aggregate named after the message's CloudEvents id, and the Kafka position (a `Tracking`
record) are written in ONE transaction. A redelivery at the same offset fails on the tracking
row; the same event at a new offset (a relay retry, a refilled broker) fails on the Inbox
aggregate. Either way nothing changes but the position.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.application import Application, ProcessingEvent
from eventsourcing.domain import Aggregate, event
from eventsourcing.persistence import IntegrityError, ProcessRecorder, Tracking

log = logging.getLogger(__name__)

INBOX_NAMESPACE = uuid5(NAMESPACE_URL, "https://dunwell.dev/inbox")


class Inbox(Aggregate):
    """One per consumed event id: its uniqueness makes a second delivery a no-op."""

    @event("Received")
    def __init__(self, event_id: str, event_type: str, position: str) -> None:
        self.event_id = event_id
        self.event_type = event_type
        self.position = position

    @staticmethod
    def create_id(event_id: str) -> UUID:
        return uuid5(INBOX_NAMESPACE, event_id)


class Conflict(Exception):
    """Another writer changed an aggregate meanwhile; the message should be tried again."""


class ServiceApplication(Application[UUID]):
    """An Application whose saves inside `consume()` commit with the Kafka position."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        super().__init__(env)
        self.recorder: ProcessRecorder
        self.write_lock = threading.RLock()
        self._unit: ContextVar[ProcessingEvent[UUID] | None] = ContextVar(
            f"{self.name}-unit", default=None)

    def construct_recorder(self) -> ProcessRecorder:
        return self.factory.process_recorder()

    def save(self, *objs: Any, **kwargs: Any) -> Any:
        unit = self._unit.get()
        if unit is None:
            with self.write_lock:
                return super().save(*objs, **kwargs)
        unit.collect_events(*objs, **kwargs)
        return []

    def load(self, aggregate_id: UUID) -> Any:
        """An aggregate as this unit of work sees it: with its uncommitted changes, if any."""
        unit = self._unit.get()
        if unit is not None and aggregate_id in unit.aggregates:
            return unit.aggregates[aggregate_id]
        return self.repository.get(aggregate_id)

    def exists(self, aggregate_id: UUID) -> bool:
        unit = self._unit.get()
        if unit is not None and aggregate_id in unit.aggregates:
            return True
        return aggregate_id in self.repository

    def consume(self, tracking: Tracking, event_id: str, event_type: str,
                handle: Callable[[], None]) -> bool:
        """Run `handle` as one unit of work with the message's position; False if a duplicate."""
        with self.write_lock:
            unit: ProcessingEvent[UUID] = ProcessingEvent(tracking=tracking)
            unit.collect_events(Inbox(event_id=event_id, event_type=event_type,
                                      position=f"{tracking.application_name}@"
                                               f"{tracking.notification_id}"))
            token = self._unit.set(unit)
            try:
                handle()
            finally:
                self._unit.reset(token)
            try:
                recordings = self._record(unit)
            except IntegrityError as error:
                if Inbox.create_id(event_id) in self.repository or self._seen(tracking):
                    self.skip(tracking)
                    return False
                raise Conflict(str(error)) from error
            self._notify(recordings)
            return True

    def _seen(self, tracking: Tracking) -> bool:
        last = self.recorder.max_tracking_id(tracking.application_name)
        return last is not None and last >= tracking.notification_id

    def skip(self, tracking: Tracking) -> None:
        """Record a position alone (a duplicate, or a message sent to the dead-letter queue)."""
        try:
            self.recorder.insert_tracking(tracking)
        except IntegrityError:
            pass  # already at or past this position

    def position(self, name: str) -> int | None:
        return self.recorder.max_tracking_id(name)
