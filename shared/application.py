"""The base of every event-sourced service application, and its unit of work.

A `Unit` is what one store transaction will hold: the aggregates a handler or a command
saved, the inbox rows of the events consumed, the agenda entries and listing rows of the
saved aggregates, dead letters, and the Kafka positions. It is passed explicitly: a handler
gets it as an argument, a command makes its own (`save`). `commit` writes it all or nothing;
a conflict with another writer raises `Conflict` and the caller tries again from scratch.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Protocol, runtime_checkable
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.persistence import (
    DataError,
    IntegrityError,
    Mapper,
    PersistenceError,
    ProcessRecorder,
    Recording,
    Tracking,
)
from eventsourcing.popo import POPOFactory
from eventsourcing.postgres import PostgresFactory
from eventsourcing.sqlite import SQLiteFactory

from shared import telemetry
from shared.errors import describe
from shared.store import (
    AgendaEntry,
    DeadLetter,
    Extras,
    Listing,
    MemoryServiceRecorder,
    PostgresServiceRecorder,
    SQLiteServiceRecorder,
)

log = logging.getLogger(__name__)


# The stored events that record a conduct rule's refusal (each names its rule): a reminder
# or a call task blocked, held back or barred, a visit's act blocked.
REFUSAL_EVENTS = frozenset({"Blocked", "HeldBack", "Barred"})


class Conflict(Exception):
    """Another writer changed the store meanwhile; the work should be tried again."""


@runtime_checkable
class HasAgenda(Protocol):
    """An aggregate with something due later: the agenda keeps one row for it."""

    def next_due(self) -> datetime | None: ...


@runtime_checkable
class HasListing(Protocol):
    """An aggregate found by its owner (a lender's cases): the listing keeps one row for it."""

    def listing(self) -> Listing | None: ...


class Unit:
    """One transaction's worth of changes. Reads see what this unit has already changed."""

    def __init__(self, app: ServiceApplication) -> None:
        self._app = app
        self._aggregates: dict[UUID, Any] = {}
        self._saved: dict[UUID, Any] = {}
        self.inbox: list[tuple[str, str]] = []
        self.dead_letters: list[DeadLetter] = []
        self.positions: list[Tracking] = []
        # The trace each pending event was made in, by id(event) (the event is kept too, so
        # that its id is not reused): the relay publishes the event later, in that trace.
        self.traces: dict[int, tuple[Any, str]] = {}

    def get(self, aggregate_id: UUID) -> Any:
        """The aggregate as this unit sees it (raises KeyError if there is none)."""
        if aggregate_id not in self._aggregates:
            try:
                self._aggregates[aggregate_id] = self._app.repository.get(aggregate_id)
            except AggregateNotFoundError as error:
                raise KeyError(aggregate_id) from error
        return self._aggregates[aggregate_id]

    def find(self, aggregate_id: UUID) -> Any | None:
        """The aggregate, or None when it does not exist."""
        if self.exists(aggregate_id):
            return self.get(aggregate_id)
        return None

    def exists(self, aggregate_id: UUID) -> bool:
        return aggregate_id in self._aggregates or aggregate_id in self._app.repository

    def save(self, *aggregates: Any) -> None:
        traceparent = telemetry.traceparent_now()
        for aggregate in aggregates:
            self._aggregates[aggregate.id] = aggregate
            self._saved[aggregate.id] = aggregate
            if traceparent is not None:
                for pending in aggregate.pending_events:
                    self.traces.setdefault(id(pending), (pending, traceparent))

    def changed(self) -> bool:
        """Whether committing would write anything."""
        return bool(self._saved or self.inbox or self.dead_letters or self.positions)

    def agenda(self) -> list[AgendaEntry]:
        return [AgendaEntry(aggregate_id, type(aggregate).__name__, aggregate.next_due())
                for aggregate_id, aggregate in self._saved.items()
                if isinstance(aggregate, HasAgenda)]

    def listings(self) -> list[tuple[UUID, Listing | None]]:
        return [(aggregate_id, aggregate.listing())
                for aggregate_id, aggregate in self._saved.items()
                if isinstance(aggregate, HasListing)]

    def pending_events(self) -> list[Any]:
        events: list[Any] = []
        for aggregate in self._saved.values():
            events.extend(aggregate.collect_events())
        return events


class ServiceApplication(Application[UUID]):
    """An eventsourcing Application whose store also holds the inbox, agenda, listing and dead
    letters."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        super().__init__(env)
        self.recorder: ProcessRecorder
        self.extras: Extras = self.recorder
        self._agenda_listeners: list[Callable[[], None]] = []
        self._commit_listeners: list[Callable[[], None]] = []
        self._listeners_lock = threading.Lock()
        self.write_error: str | None = None

    @property
    def service(self) -> str:
        """The service's name as metrics label it: `reminder` for services.reminder."""
        parts = type(self).__module__.split(".")
        return parts[1] if len(parts) > 2 and parts[0] == "services" else self.name.lower()

    def construct_mapper(self) -> Mapper[UUID]:
        return self.factory.mapper(transcoder=self.construct_transcoder(),
                                   mapper_class=telemetry.TracedMapper)

    def construct_recorder(self) -> ProcessRecorder:
        factory = self.factory
        if isinstance(factory, POPOFactory):
            return MemoryServiceRecorder()
        if isinstance(factory, SQLiteFactory):
            recorder = SQLiteServiceRecorder(factory.datastore)
            if factory.env_create_table():
                recorder.create_table()
            return recorder
        if isinstance(factory, PostgresFactory):
            prefix = self.name.lower()
            pg_recorder = PostgresServiceRecorder(factory.datastore,
                                                  events_table_name=f"{prefix}_events",
                                                  tracking_table_name=f"{prefix}_tracking")
            if factory.env_create_table():
                pg_recorder.create_table()
            return pg_recorder
        raise RuntimeError(f"no dunwell recorder for {type(factory).__name__}")

    # --- units of work ---

    def unit(self) -> Unit:
        return Unit(self)

    def commit(self, unit: Unit) -> list[Recording[UUID]]:
        """Write the unit in one transaction; `Conflict` if another writer got there first."""
        agenda = unit.agenda()
        listings = unit.listings()
        events = unit.pending_events()
        traces = {key: traceparent for key, (_, traceparent) in unit.traces.items()}
        try:
            with telemetry.stamping(traces):
                recordings = self.events.put(events, positions=unit.positions,
                                             inbox=unit.inbox, agenda=agenda,
                                             listings=listings,
                                             dead_letters=unit.dead_letters)
        except IntegrityError as error:
            raise Conflict(str(error)[:300]) from error
        except DataError:
            raise  # a value the store refuses (the caller's error): the store itself is well
        except PersistenceError as error:
            self.write_error = describe(error)  # readiness says so until a write succeeds
            raise
        self.write_error = None
        self._count_refusals(events)
        if agenda:
            self._tell(self._agenda_listeners)
        if recordings:
            self._tell(self._commit_listeners)
        return recordings

    def _count_refusals(self, events: Sequence[Any]) -> None:
        """Each committed refusal once (a unit tried again after a conflict is counted when it
        commits, not each time it was tried)."""
        for committed in events:
            rule = getattr(committed, "rule", None)
            if type(committed).__name__ in REFUSAL_EVENTS and isinstance(rule, str):
                telemetry.REFUSALS.labels(self.service, rule).inc()

    def save(self, *objs: Any, **kwargs: Any) -> Any:
        """A command's save: a unit of its own, committed at once."""
        unit = self.unit()
        unit.save(*(obj for obj in objs if obj is not None))
        return self.commit(unit)

    def load(self, aggregate_id: UUID) -> Any:
        return self.repository.get(aggregate_id)

    def exists(self, aggregate_id: UUID) -> bool:
        return aggregate_id in self.repository

    # --- positions and the agenda ---

    def check_store(self) -> int:
        """Readiness: the store answers, and takes writes again if the last one failed."""
        if self.write_error is not None:
            self.recorder.insert_tracking(Tracking("readiness-probe", time.time_ns()))
            self.write_error = None
        return self.recorder.max_notification_id() or 0

    def position(self, name: str) -> int | None:
        return self.recorder.max_tracking_id(name)

    def skip(self, tracking: Tracking) -> bool:
        """Record a position alone; False when the store is already at or past it."""
        try:
            self.recorder.insert_tracking(tracking)
        except IntegrityError:
            return False
        return True

    def on_agenda_change(self, listener: Callable[[], None]) -> None:
        """Called (from the committing thread) after a commit that changed the agenda."""
        with self._listeners_lock:
            self._agenda_listeners.append(listener)

    def on_commit(self, listener: Callable[[], None]) -> None:
        """Called (from the committing thread) after a commit that recorded events."""
        with self._listeners_lock:
            self._commit_listeners.append(listener)

    def _tell(self, listeners: list[Callable[[], None]]) -> None:
        with self._listeners_lock:
            called = list(listeners)
        for listener in called:
            listener()

    def due(self, now: datetime, limit: int = 1000) -> list[UUID]:
        """Aggregates with something due at `now` (claimed or not), soonest first."""
        return self.extras.due_ids(now, limit)

    def seen(self, event_ids: Sequence[str]) -> set[str]:
        return self.extras.seen(event_ids)
