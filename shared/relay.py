"""The outbox relay: follows what a service stored and publishes it as integration events.

The store is the outbox. The relay publishes a batch, waits for acks="all", then records the
last position it published under the broker's incarnation: a broker that lost its topics
gets everything again from the start, and consumers de-duplicate on the event id. An entry
the service cannot turn into a contract event (its mapping raised) is set aside on
`dunwell.outbox.dlq` with the reason, and the outbox goes on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.errors import MessageSizeTooLargeError
from eventsourcing.domain import Aggregate, AggregateEvent, DomainEvent
from eventsourcing.persistence import Tracking
from prometheus_client import Counter, Gauge

from shared import telemetry, topics
from shared.application import ServiceApplication
from shared.errors import describe, header
from shared.events import (
    CLOUDEVENTS_CONTENT_TYPE,
    EVENT_TYPES,
    CloudEvent,
    EventData,
    envelope,
    event_id_for,
)
from shared.kafka import send_dead_letter
from shared.runtime import Wakeup
from shared.store import DeadLetter

log = logging.getLogger(__name__)

PUBLISHED = Counter("dunwell_relay_published_total", "Integration events published", ["topic"])
SET_ASIDE = Counter("dunwell_relay_dead_lettered_total",
                    "Stored events the relay could not map, set aside on the outbox DLQ")
POSITION = Gauge("dunwell_relay_position", "Last outbox position published")


@dataclass(frozen=True)
class Publication:
    """What a stored domain event becomes on Kafka: its data and the chain of cause."""

    data: EventData
    causation_id: str | None
    correlation_id: str | None


Mapping = Callable[[Any], Publication | None]


def is_event(event: object, aggregate: type[Aggregate], *names: str) -> bool:
    """Whether `event` is one of the events `@event` defined on `aggregate` under `names`.

    The decorator makes `Reminder.Scheduled` and its kin when the class is built, out of
    mypy's sight, so a relay names them here instead of as attributes.
    """
    return isinstance(event, tuple(event_class(aggregate, name) for name in names))


@cache
def event_class(aggregate: type[Aggregate], name: str) -> type[AggregateEvent]:
    """The event class `aggregate` defines as `name`; a name it lacks is an error, never a
    quiet mismatch that would leave its events off Kafka."""
    found = getattr(aggregate, name, None)
    if isinstance(found, type) and issubclass(found, AggregateEvent):
        return found
    raise TypeError(f"{aggregate.__qualname__} defines no event class {name!r}")


@dataclass(frozen=True)
class Outgoing:
    """One outbox entry: the event to publish, nothing (not for Kafka), or why it failed."""

    position: int
    event: CloudEvent | None = None
    failure: DeadLetter | None = None


class Outbox(Protocol):
    """What a relay follows: entries in position order, and the relay's own position."""

    def position(self, name: str) -> int | None: ...

    def advance(self, name: str, position: int) -> None: ...

    def head(self) -> int: ...

    def after(self, position: int, limit: int) -> list[Outgoing]: ...

    def set_aside(self, letters: Sequence[DeadLetter]) -> None: ...

    def unsent_dead_letters(self, prefix: str, limit: int) -> list[DeadLetter]: ...

    def mark_sent(self, keys: Sequence[str]) -> None: ...

    def on_change(self, listener: Callable[[], None]) -> None: ...


class StoredEvents:
    """A service application's notification log as an outbox, through its relay mapping."""

    def __init__(self, app: ServiceApplication, mapping: Mapping, source: str) -> None:
        self.app = app
        self.mapping = mapping
        self.source = source

    def position(self, name: str) -> int | None:
        return self.app.position(name)

    def advance(self, name: str, position: int) -> None:
        self.app.skip(Tracking(name, position))

    def head(self) -> int:
        return self.app.recorder.max_notification_id() or 0

    def after(self, position: int, limit: int) -> list[Outgoing]:
        found = []
        for notification in self.app.recorder.select_notifications(position + 1, limit):
            try:
                found.append(Outgoing(notification.id, self._event(notification)))
            except Exception as error:  # noqa: BLE001 - set aside, the outbox goes on
                found.append(Outgoing(notification.id, failure=self._letter(notification, error)))
        return found

    def _event(self, notification: Any) -> CloudEvent | None:
        domain_event, traceparent = _traced(self.app.mapper, notification)
        publication = self.mapping(domain_event)
        if publication is None:
            return None
        if not isinstance(domain_event, DomainEvent):
            raise TypeError(f"{type(domain_event).__name__} is not a timestamped domain event")
        return envelope(
            publication.data,
            event_id=event_id_for(notification.originator_id, notification.originator_version),
            source=self.source, time=domain_event.timestamp,
            causation_id=publication.causation_id, correlation_id=publication.correlation_id,
            traceparent=traceparent)

    def _letter(self, notification: Any, error: BaseException) -> DeadLetter:
        origin = f"{self.app.name}/{notification.id}"
        headers = ((topics.DLQ_REASON_HEADER, header(f"unmappable: {describe(error)}")),
                   (topics.DLQ_ERROR_TYPE_HEADER, type(error).__name__.encode()),
                   (topics.DLQ_GROUP_HEADER, f"relay/{self.app.name}".encode()),
                   (topics.DLQ_ORIGIN_HEADER, origin.encode()),
                   ("dunwell-stored-topic", str(notification.topic).encode()[:500]))
        return DeadLetter(key=f"relay/{origin}", topic=topics.OUTBOX_DLQ,
                          message_key=str(notification.originator_id).encode(),
                          value=bytes(notification.state), headers=headers)

    def set_aside(self, letters: Sequence[DeadLetter]) -> None:
        self.app.extras.record_dead_letters(letters)

    def unsent_dead_letters(self, prefix: str, limit: int) -> list[DeadLetter]:
        return self.app.extras.unsent_dead_letters(prefix, limit)

    def mark_sent(self, keys: Sequence[str]) -> None:
        self.app.extras.mark_sent(keys)

    def on_change(self, listener: Callable[[], None]) -> None:
        self.app.on_commit(listener)


def too_large(event: CloudEvent, size: int) -> DeadLetter:
    """An event bigger than the broker takes: set aside by its id (its bytes stay in the
    store), and the outbox goes on."""
    return DeadLetter(
        key=f"relay/too-large/{event.id}", topic=topics.OUTBOX_DLQ,
        message_key=event.subject.encode(), value=None,
        headers=((topics.DLQ_REASON_HEADER, f"too large to publish: {size} bytes".encode()),
                 (topics.DLQ_ERROR_TYPE_HEADER, b"MessageSizeTooLargeError"),
                 (topics.DLQ_GROUP_HEADER, event.source.encode()[:256]),
                 (topics.DLQ_ORIGIN_HEADER, f"event/{event.id}".encode()),
                 ("ce_type", event.type.encode())))


def headers_of(event: CloudEvent) -> list[tuple[str, bytes]]:
    """Structured-mode CloudEvents: the content type says so; the type helps routing; the
    trace context, where the event has one, lets tools follow the trace without parsing."""
    headers = [("content-type", CLOUDEVENTS_CONTENT_TYPE.encode()),
               ("ce_type", event.type.encode())]
    if event.traceparent is not None:
        headers.append((telemetry.TRACEPARENT, event.traceparent.encode()))
    return headers


def _traced(mapper: Any, notification: Any) -> tuple[Any, str | None]:
    """The stored domain event, and the trace it was stored in (see telemetry.TracedMapper)."""
    if isinstance(mapper, telemetry.TracedMapper):
        return mapper.traced(notification)
    return mapper.to_domain_event(notification), None


class OutboxRelay:
    def __init__(self, *, outbox: Outbox, producer: Callable[[], AIOKafkaProducer],
                 incarnation: Callable[[], str], idle_seconds: float = 1.0,
                 batch_size: int = 500, call_timeout_seconds: float = 5.0,
                 on_progress: Callable[[], None] = lambda: None) -> None:
        self.outbox = outbox
        self.producer = producer
        self.incarnation = incarnation
        self.wake = Wakeup()
        outbox.on_change(self.wake.set)
        self.idle_seconds = idle_seconds
        self.batch_size = batch_size
        self.call_timeout_seconds = call_timeout_seconds
        self.on_progress = on_progress
        self.refill_until = 0
        self.position = 0

    def refilling(self) -> bool:
        """Still publishing what was stored before this run began (after a restart, or for a
        new broker incarnation: everything)."""
        return self.position < self.refill_until

    async def run(self, stop: asyncio.Event) -> None:
        self.wake.bind()
        name = f"relay/{self.incarnation()}"
        stored = await asyncio.to_thread(self.outbox.position, name)
        self.position = stored or 0
        # What was stored before this run began is a backlog (all of it, for a new broker
        # incarnation): readiness says so until it is published.
        self.refill_until = await asyncio.to_thread(self.outbox.head)
        await self._send_letters(await asyncio.to_thread(
            self.outbox.unsent_dead_letters, "relay/", 500))
        while not stop.is_set():
            published = await self.publish_after(self.position, name)
            self.on_progress()
            if published == self.position:
                await self.wake.wait(stop, self.idle_seconds)
            self.position = published
            POSITION.set(published)

    async def publish_after(self, position: int, name: str) -> int:
        entries = await asyncio.to_thread(self.outbox.after, position, self.batch_size)
        if not entries:
            return position
        letters = [entry.failure for entry in entries if entry.failure is not None]
        producer = self.producer()
        pending = []
        for entry in entries:
            if entry.event is None:
                continue
            event = entry.event
            topic = EVENT_TYPES[event.type].topic
            value = event.encode()
            try:
                pending.append(await asyncio.wait_for(
                    producer.send(topic, value, key=event.subject.encode(),
                                  headers=headers_of(event)), self.call_timeout_seconds))
            except MessageSizeTooLargeError:
                letters.append(too_large(event, len(value)))
                continue
            PUBLISHED.labels(topic).inc()
        if pending:
            await asyncio.wait_for(asyncio.gather(*pending), self.call_timeout_seconds)
        if letters:
            await asyncio.to_thread(self.outbox.set_aside, letters)
            await self._send_letters(letters)
        last = entries[-1].position
        await asyncio.to_thread(self.outbox.advance, name, last)
        return last

    async def _send_letters(self, letters: Sequence[DeadLetter]) -> None:
        if not letters:
            return
        producer = self.producer()
        for letter in letters:
            reason = dict(letter.headers).get(topics.DLQ_REASON_HEADER, b"")
            log.warning("relay set aside %s: %s", letter.key, reason.decode("utf-8", "replace"))
            await asyncio.wait_for(send_dead_letter(producer, letter), self.call_timeout_seconds)
            SET_ASIDE.inc()
        await asyncio.to_thread(self.outbox.mark_sent, [letter.key for letter in letters])

