"""The tracked consumer: Kafka positions live in the service's store, with the work they caused.

A fetch is applied in batches (one per partition, or one across partitions merged by produce
time for a sink that asks) and each batch is one store transaction: the handlers' saves, the
inbox rows, the dead letters and the last position of each partition. A batch that fails is
split until the failing message stands alone; that message is retried with backoff a bounded
number of times and then dead-lettered with the error's type and message, so one bad message
neither stalls nor dead-letters its neighbours. Dead letters are kept in the store with the
batch and sent to `<topic>.dlq` after the commit; a crash before they are sent sends them at
the next start. The Kafka consumer is made anew for every run, and every call to the broker
has a time limit.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import heapq
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.structs import ConsumerRecord
from eventsourcing.persistence import PersistenceError, Tracking
from prometheus_client import Counter, Gauge

from shared import telemetry, topics
from shared.application import Conflict, ServiceApplication
from shared.clock import Clock
from shared.errors import describe, header, mask
from shared.events import CloudEvent, DecodeError, EventData, decode
from shared.kafka import IncarnationCheck, send_dead_letter
from shared.store import DeadLetter

log = logging.getLogger(__name__)

Record = ConsumerRecord[bytes, bytes]
CONSUMED = Counter("dunwell_consumed_total", "Messages consumed", ["topic", "outcome"])
RETRIED = Counter("dunwell_consumer_retries_total", "Handler retries of a lone message", ["topic"])
DLQ_SENT = Counter("dunwell_dead_letters_sent_total", "Dead letters sent to a DLQ topic",
                   ["topic"])
# --- observability: consumer lag ---
LAG = Gauge("dunwell_consumer_lag", "The partition's high-water mark less the next offset "
            "this consumer would apply (0: caught up)", ["group", "topic", "partition"])


class Rejected(Exception):
    """A valid event that a handler refuses to apply; it goes to the DLQ at once, unretried."""


class HandlerFailed(Exception):
    """The handler of the batch's message at `index` raised `error`."""

    def __init__(self, index: int, error: BaseException) -> None:
        super().__init__(f"message {index}: {describe(error)}")
        self.index = index
        self.error = error


def tracking_name(incarnation: str, topic: str, partition: int) -> str:
    return f"kafka/{incarnation}/{topic}/{partition}"


@dataclass(frozen=True)
class Delivery:
    """One consumed message: decoded, or marked for the dead-letter queue with its reason."""

    record: Record
    name: str  # the position's name in the store
    envelope: CloudEvent | None = None
    payload: EventData | None = None
    reason: str | None = None
    error_type: str | None = None

    @classmethod
    def of(cls, record: Record, name: str) -> Delivery:
        try:
            envelope, payload = decode(record.value)
        except DecodeError as error:
            return cls(record, name, reason=f"invalid: {mask(str(error))}",
                       error_type="DecodeError")
        if record.topic in topics.EVENT_TOPICS and type(payload).topic != record.topic:
            # Each topic has its writers (the broker's access control decides who): a type
            # that belongs elsewhere is a forgery or a mistake, and never evidence.
            return cls(record, name, reason=f"invalid: a {envelope.type} does not belong on "
                       f"{record.topic}", error_type="DecodeError")
        return cls(record, name, envelope, payload)

    @property
    def traceparent(self) -> str | None:
        """The trace the event continues: its own attribute, else the record's header."""
        if self.envelope is not None and self.envelope.traceparent is not None:
            return self.envelope.traceparent
        return telemetry.traceparent_in(self.record.headers)

    def dead(self, reason: str, error_type: str) -> Delivery:
        return replace(self, reason=reason[:1000], error_type=error_type)

    def dead_letter(self, group: str) -> DeadLetter:
        record = self.record
        origin = f"{record.topic}/{record.partition}/{record.offset}"
        kept = [(name, value) for name, value in record.headers or ()
                if not name.startswith("dunwell-dlq-")]
        headers = [*kept,
                   (topics.DLQ_REASON_HEADER, header(self.reason or "")),
                   (topics.DLQ_ERROR_TYPE_HEADER, header(self.error_type or "", 200)),
                   (topics.DLQ_GROUP_HEADER, group.encode()),
                   (topics.DLQ_ORIGIN_HEADER, origin.encode())]
        return DeadLetter(key=f"consumer/{group}/{self.name}/{record.offset}",
                          topic=topics.dlq(record.topic), message_key=record.key,
                          value=record.value, headers=tuple(headers))


@dataclass
class Batch:
    """Deliveries applied in one transaction; `group` names the consumer in dead letters."""

    deliveries: Sequence[Delivery]
    group: str
    now: datetime

    def positions(self, stored: Mapping[str, int | None]) -> list[Tracking]:
        """The last offset of each partition, where it moves the stored position on."""
        last: dict[str, int] = {}
        for delivery in self.deliveries:
            last[delivery.name] = max(last.get(delivery.name, -1), delivery.record.offset)
        return [Tracking(name, offset) for name, offset in last.items()
                if stored.get(name) is None or offset > (stored[name] or 0)]

    def names(self) -> list[str]:
        return list(dict.fromkeys(delivery.name for delivery in self.deliveries))

    @staticmethod
    def applied(delivery: Delivery, stored: Mapping[str, int | None]) -> bool:
        """Whether the store's position is already at or past this message."""
        position = stored.get(delivery.name)
        return position is not None and delivery.record.offset <= position


@dataclass(frozen=True)
class Applied:
    """What a batch's commit held: the events handled on each topic, the dead letters."""

    by_topic: Mapping[str, int] = field(default_factory=dict)
    dead_letters: Sequence[DeadLetter] = ()

    @property
    def handled(self) -> int:
        return sum(self.by_topic.values())


class Sink(Protocol):
    """Where consumed batches go: a service application, or the audit log."""

    def position(self, name: str) -> int | None: ...

    def apply(self, batch: Batch) -> Applied: ...

    def unsent_dead_letters(self, prefix: str, limit: int) -> list[DeadLetter]: ...

    def mark_sent(self, keys: Sequence[str]) -> None: ...


Handler = Callable[[Any, Any, CloudEvent, Any, datetime], None]


@dataclass
class HandlerSink:
    """Dispatches typed events to a service's handlers, a batch in one unit of work."""

    app: ServiceApplication
    handlers: Mapping[type[EventData], Handler]
    clock: Clock

    def position(self, name: str) -> int | None:
        return self.app.position(name)

    def apply(self, batch: Batch) -> Applied:
        """Handle the batch's fresh events in one unit of work.

        Raises HandlerFailed (with the message's index) when a handler raises, Conflict when
        another writer got there first, PersistenceError when the store itself fails.
        """
        stored = {name: self.app.position(name) for name in batch.names()}
        fresh = [d for d in batch.deliveries
                 if d.envelope is not None and d.reason is None and not batch.applied(d, stored)]
        seen = self.app.seen([d.envelope.id for d in fresh if d.envelope is not None])
        unit = self.app.unit()
        handled: collections.Counter[str] = collections.Counter()
        for index, delivery in enumerate(batch.deliveries):
            if batch.applied(delivery, stored):
                continue
            if delivery.reason is not None:
                unit.dead_letters.append(delivery.dead_letter(batch.group))
                continue
            assert delivery.envelope is not None and delivery.payload is not None
            if delivery.envelope.id in seen:
                continue
            seen.add(delivery.envelope.id)
            handler = self.handlers.get(type(delivery.payload))
            if handler is None:
                continue
            unit.inbox.append((delivery.envelope.id, delivery.envelope.type))
            try:
                with handled_in_trace(delivery):
                    handler(self.app, unit, delivery.envelope, delivery.payload, batch.now)
            except (PersistenceError, Conflict):
                raise
            except Exception as error:  # isolated and dead-lettered by the loop
                raise HandlerFailed(index, error) from error
            handled[delivery.record.topic] += 1
        unit.positions = batch.positions(stored)
        if unit.positions or unit.dead_letters:
            self.app.commit(unit)
        return Applied(dict(handled), unit.dead_letters)

    def process(self, tracking: Tracking, record: Record, envelope: CloudEvent,
                payload: EventData) -> bool:
        """One message as a batch of one: True when its event was handled. A handler's own
        error is raised as it is."""
        try:
            return self.apply(one(tracking, record, envelope, payload,
                                  self.clock.now())).handled > 0
        except HandlerFailed as failed:
            raise failed.error from None

    def unsent_dead_letters(self, prefix: str, limit: int) -> list[DeadLetter]:
        return self.app.extras.unsent_dead_letters(prefix, limit)

    def mark_sent(self, keys: Sequence[str]) -> None:
        self.app.extras.mark_sent(keys)


# --- observability: what a handler logs and saves belongs to its event and its trace ---


@contextlib.contextmanager
def handled_in_trace(delivery: Delivery, span_name: str = "handle") -> Iterator[None]:
    """Log lines inside name the event and its correlation; the span inside continues the
    event's trace, so what the handler saves is published in it too."""
    envelope = delivery.envelope
    assert envelope is not None
    with telemetry.handling(envelope.id, envelope.correlationid), telemetry.continued(
            f"{span_name} {envelope.type}", delivery.traceparent,
            attributes={"messaging.destination.name": delivery.record.topic,
                        "cloudevents.event_id": envelope.id,
                        "cloudevents.event_type": envelope.type}):
        yield
        log.debug("%s %s from %s/%d@%d", span_name, envelope.type, delivery.record.topic,
                  delivery.record.partition, delivery.record.offset)


def one(tracking: Tracking, record: Record, envelope: CloudEvent, payload: EventData,
        now: datetime, group: str = "direct") -> Batch:
    """A batch of a single, already decoded message at the tracking's position."""
    delivery = Delivery(record, tracking.application_name, envelope, payload)
    return Batch([delivery], group, now)


@dataclass
class ConsumerSettings:
    """How hard the loop tries before it sets a message aside, and how long it waits."""

    attempts: int = 3
    backoff_seconds: float = 0.2
    call_timeout_seconds: float = 5.0
    join_timeout_seconds: float = 60.0
    max_records: int = 500


class _Stopping(Exception):
    """The run is asked to stop while a message waits for its next attempt."""


@dataclass
class EventConsumer:
    group: str
    subscribe: Sequence[str]
    sink: Sink
    kafka_options: Mapping[str, Any]
    producer: Callable[[], AIOKafkaProducer]
    incarnation: Callable[[], str]
    clock: Clock
    on_progress: Callable[[], None] = lambda: None
    on_other_broker: Callable[[], None] = lambda: None
    order_across_partitions: bool = False
    settings: ConsumerSettings = field(default_factory=ConsumerSettings)
    _kafka: AIOKafkaConsumer | None = None
    _last_round: float = 0.0
    # --- observability: the next offset to apply, per partition, for the lag gauge ---
    _next: dict[TopicPartition, int] = field(default_factory=dict)

    def ready(self) -> bool:
        """In the group and going round: a replica with no partitions (more replicas than
        partitions) is ready too, as a standby."""
        return self._kafka is not None and time.monotonic() - self._last_round < 10.0

    async def run(self, stop: asyncio.Event) -> None:
        """One run: a new Kafka consumer, positions from the store, until `stop`."""
        incarnation = self.incarnation()
        kafka = AIOKafkaConsumer(group_id=self.group, enable_auto_commit=False,
                                 auto_offset_reset="earliest", **self.kafka_options)
        kafka.subscribe(list(self.subscribe), listener=_SeekFromStore(self, kafka, incarnation))
        check = IncarnationCheck(self.kafka_options)
        try:
            await self._bounded(check.start())
            # start() waits for the group to assign partitions, which takes a session
            # timeout or more after a member left uncleanly: limited, and stoppable.
            await _unless_stopped(kafka.start(), stop, self.settings.join_timeout_seconds)
            self._kafka = kafka
            await self._send_dead_letters(await asyncio.to_thread(
                self.sink.unsent_dead_letters, f"consumer/{self.group}/", 500))
            while not stop.is_set():
                fetched = await self._bounded(
                    kafka.getmany(timeout_ms=200, max_records=self.settings.max_records))
                if fetched and not await self._bounded(check.confirms(incarnation)):
                    log.warning("these records come from a broker incarnation other than %s: "
                                "not applied; the run starts again under the new one",
                                incarnation[:8])
                    self.on_other_broker()
                    return
                for deliveries in self._batches(fetched, incarnation):
                    await self._settle(deliveries, stop)
                self._measure_lag(kafka, fetched)
                self.on_progress()
                self._last_round = time.monotonic()
                if fetched:
                    await self._commit_offsets(kafka, fetched)
        except _Stopping:
            pass
        finally:
            self._kafka = None
            try:
                # The group member first, whatever happens next: one never stopped goes on
                # heartbeating and holds partitions nobody reads. Leaving the group politely
                # is worth 2 s at most: a stop has 4 s for every loop.
                await close_in_time(kafka, min(self.settings.call_timeout_seconds, 2.0))
            finally:
                # With the broker gone, aiokafka may cancel a future this stop awaits.
                await check.stop()

    def _batches(self, fetched: Mapping[TopicPartition, list[Record]],
                 incarnation: str) -> list[list[Delivery]]:
        def delivered(records: list[Record]) -> list[Delivery]:
            return [Delivery.of(r, tracking_name(incarnation, r.topic, r.partition))
                    for r in records]

        if self.order_across_partitions:
            merged = heapq.merge(*fetched.values(), key=lambda r: r.timestamp)
            return [delivered(list(merged))]
        return [delivered(records) for records in fetched.values() if records]

    async def _settle(self, deliveries: list[Delivery], stop: asyncio.Event) -> None:
        """Apply `deliveries`; on failure split them until the bad one stands alone."""
        if not deliveries:
            return
        try:
            await self._apply(deliveries)
            return
        except HandlerFailed as failed:
            index, error = failed.index, failed.error
        except Conflict as conflict:
            if len(deliveries) > 1:
                middle = len(deliveries) // 2
                await self._settle(deliveries[:middle], stop)
                await self._settle(deliveries[middle:], stop)
                return
            index, error = 0, conflict
        await self._settle(deliveries[:index], stop)
        await self._alone(deliveries[index], error, stop)
        await self._settle(deliveries[index + 1:], stop)

    async def _alone(self, delivery: Delivery, error: BaseException,
                     stop: asyncio.Event) -> None:
        """A lone message that failed: retried with backoff unless refused, then set aside."""
        topic = delivery.record.topic
        attempt = 1
        while not isinstance(error, Rejected) and attempt < self.settings.attempts:
            RETRIED.labels(topic).inc()
            log.warning("%s/%s@%s failed (%s); attempt %d of %d", topic,
                        delivery.record.partition, delivery.record.offset, describe(error),
                        attempt + 1, self.settings.attempts)
            if await _stopped(stop, self.settings.backoff_seconds * 2 ** (attempt - 1)):
                raise _Stopping
            attempt += 1
            try:
                await self._apply([delivery])
                return
            except HandlerFailed as failed:
                error = failed.error
            except Conflict as conflict:
                error = conflict
        verb = "rejected" if isinstance(error, Rejected) else f"failed {attempt} times"
        await self._apply([delivery.dead(f"{verb}: {describe(error)}", type(error).__name__)])

    async def _apply(self, deliveries: list[Delivery]) -> None:
        batch = Batch(deliveries, self.group, self.clock.now())
        applied = await asyncio.to_thread(self.sink.apply, batch)
        skipped = collections.Counter(delivery.record.topic for delivery in deliveries)
        for letter in applied.dead_letters:
            reason = dict(letter.headers).get(topics.DLQ_REASON_HEADER, b"")
            log.warning("dead-lettering %s: %s", letter.key, reason.decode("utf-8", "replace"))
            origin = letter.topic.removesuffix(".dlq")
            CONSUMED.labels(origin, "dead_lettered").inc()
            skipped[origin] -= 1
        for topic, handled in applied.by_topic.items():
            CONSUMED.labels(topic, "processed").inc(handled)
            skipped[topic] -= handled
        for topic, count in skipped.items():
            if count > 0:
                CONSUMED.labels(topic, "skipped").inc(count)
        await self._send_dead_letters(applied.dead_letters)

    async def _send_dead_letters(self, letters: Sequence[DeadLetter]) -> None:
        """After the commit: a letter not sent now is sent at the next start."""
        if not letters:
            return
        producer = self.producer()
        for letter in letters:
            await self._bounded(send_dead_letter(producer, letter))
            DLQ_SENT.labels(letter.topic).inc()
        await asyncio.to_thread(self.sink.mark_sent, [letter.key for letter in letters])

    # --- observability: consumer lag ---

    def _measure_lag(self, kafka: AIOKafkaConsumer,
                     fetched: Mapping[TopicPartition, list[Record]]) -> None:
        """After a fetch is applied: each assigned partition's high-water mark (as the last
        fetch answered it) less the next offset to apply."""
        for tp, records in fetched.items():
            if records:
                self._next[tp] = records[-1].offset + 1
        for tp in kafka.assignment():
            highwater, applied = kafka.highwater(tp), self._next.get(tp)
            if highwater is not None and applied is not None:
                LAG.labels(self.group, tp.topic, str(tp.partition)).set(
                    max(0, highwater - applied))

    def assigned(self, tp: TopicPartition, next_offset: int) -> None:
        self._next[tp] = next_offset

    def revoked(self, tp: TopicPartition) -> None:
        """A partition another member now reads: its lag is that member's to say."""
        self._next.pop(tp, None)
        with contextlib.suppress(KeyError):
            LAG.remove(self.group, tp.topic, str(tp.partition))

    # --- end of consumer lag ---

    async def _commit_offsets(self, kafka: AIOKafkaConsumer,
                              fetched: Mapping[TopicPartition, list[Record]]) -> None:
        """For operators' lag views only: on start, positions come from the store."""
        offsets = {tp: records[-1].offset + 1 for tp, records in fetched.items() if records}
        try:
            await asyncio.wait_for(kafka.commit(offsets), self.settings.call_timeout_seconds)
        except Exception as error:  # noqa: BLE001 - informational; the store holds positions
            log.info("kafka offset commit skipped: %s", type(error).__name__)

    async def _bounded(self, call: Any) -> Any:
        return await asyncio.wait_for(call, self.settings.call_timeout_seconds)


class _SeekFromStore(ConsumerRebalanceListener):
    def __init__(self, owner: EventConsumer, kafka: AIOKafkaConsumer, incarnation: str) -> None:
        self.owner = owner
        self.kafka = kafka
        self.incarnation = incarnation

    async def on_partitions_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        for tp in revoked:
            self.owner.revoked(tp)

    async def on_partitions_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        for tp in assigned:
            name = tracking_name(self.incarnation, tp.topic, tp.partition)
            last = await asyncio.to_thread(self.owner.sink.position, name)
            self.kafka.seek(tp, 0 if last is None else last + 1)
            self.owner.assigned(tp, 0 if last is None else last + 1)


async def _unless_stopped(call: Any, stop: asyncio.Event, seconds: float) -> None:
    """Await `call` for at most `seconds`; raise _Stopping if `stop` comes first."""
    work = asyncio.ensure_future(call)
    stopped = asyncio.ensure_future(stop.wait())
    try:
        done, _ = await asyncio.wait({work, stopped}, timeout=seconds,
                                     return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
    if work in done:
        work.result()
        return
    work.cancel()
    await asyncio.gather(work, return_exceptions=True)
    if stop.is_set():
        raise _Stopping
    raise TimeoutError(f"not done in {seconds:.0f} s")


async def _stopped(stop: asyncio.Event, seconds: float) -> bool:
    """Wait `seconds` unless `stop` comes first; True if it did."""
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        return False
    return True


# Kafka clients still stopping after their run ended (a reference, so none is collected).
_CLOSING: set[asyncio.Future[Any]] = set()


async def close_in_time(kafka: Any, seconds: float) -> None:
    """Stop a Kafka consumer, waiting `seconds` at most; a stop that takes longer goes on in
    the background and is never cut short. Cancelled half-way, a consumer may keep its
    heartbeat going: a member of the group that holds partitions and never fetches them, so
    the consumer that replaces it waits for them forever."""
    closing = asyncio.ensure_future(kafka.stop())
    _CLOSING.add(closing)
    closing.add_done_callback(_CLOSING.discard)
    try:
        await asyncio.wait_for(asyncio.shield(closing), seconds)
    except Exception as error:  # noqa: BLE001 - stopping: nothing more to do with it
        log.info("stopping the Kafka client: %s; it goes on stopping in the background",
                 type(error).__name__)

