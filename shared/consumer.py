"""The tracked consumer: Kafka positions live in the service's store, with the work they caused.

The poll loop decodes and validates every message; a message that is not a contract event,
or that its handler rejects, goes to `<topic>.dlq` with the reason and the loop goes on. The
work and the position commit together in the store; the Kafka offset is committed afterwards
(for operators' lag views only: on start, positions come from the store).
"""

from __future__ import annotations

import asyncio
import heapq
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.structs import ConsumerRecord
from eventsourcing.persistence import Tracking
from prometheus_client import Counter

from shared import topics
from shared.application import Conflict, ServiceApplication
from shared.clock import Clock
from shared.events import CloudEvent, DecodeError, EventData, decode
from shared.settings import KafkaSettings

log = logging.getLogger(__name__)

CONSUMED = Counter("dunwell_consumed_total", "Messages consumed", ["topic", "outcome"])


class Rejected(Exception):
    """A valid event that a handler cannot apply; it goes to the DLQ with this reason."""


class Sink(Protocol):
    def position(self, name: str) -> int | None: ...

    def process(self, tracking: Tracking, record: ConsumerRecord[bytes, bytes],
                envelope: CloudEvent, payload: EventData) -> bool: ...

    def skip(self, tracking: Tracking) -> None: ...


Handler = Callable[[Any, CloudEvent, Any, datetime], None]


@dataclass
class HandlerSink:
    """Dispatches typed events to a service's handlers inside the application's unit of work."""

    app: ServiceApplication
    handlers: Mapping[type[EventData], Handler]
    clock: Clock

    def position(self, name: str) -> int | None:
        return self.app.position(name)

    def process(self, tracking: Tracking, record: ConsumerRecord[bytes, bytes],
                envelope: CloudEvent, payload: EventData) -> bool:
        handler = self.handlers.get(type(payload))
        if handler is None:
            self.app.skip(tracking)
            return False
        now = self.clock.now()
        return self.app.consume(tracking, envelope.id, envelope.type,
                                lambda: handler(self.app, envelope, payload, now))

    def skip(self, tracking: Tracking) -> None:
        self.app.skip(tracking)


def tracking_name(incarnation: str, topic: str, partition: int) -> str:
    return f"kafka/{incarnation}/{topic}/{partition}"


class _SeekFromStore(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, consumer: EventConsumer) -> None:
        self.owner = consumer

    async def on_partitions_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        return None

    async def on_partitions_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        for tp in assigned:
            last = await asyncio.to_thread(self.owner.sink.position, self.owner.name_for(tp))
            self.owner.kafka.seek(tp, 0 if last is None else last + 1)


class EventConsumer:
    def __init__(self, *, settings: KafkaSettings, group: str, subscribe: Sequence[str],
                 sink: Sink, incarnation: str, producer: AIOKafkaProducer,
                 order_across_partitions: bool = False) -> None:
        self.settings = settings
        self.group = group
        self.topics = list(subscribe)
        self.sink = sink
        self.incarnation = incarnation
        self.producer = producer
        self.order_across_partitions = order_across_partitions
        self.kafka = AIOKafkaConsumer(
            bootstrap_servers=settings.bootstrap, group_id=group, enable_auto_commit=False,
            auto_offset_reset="earliest", session_timeout_ms=settings.session_timeout_ms,
            heartbeat_interval_ms=settings.heartbeat_interval_ms,
            fetch_max_bytes=4 * settings.max_request_bytes,
            max_partition_fetch_bytes=settings.max_request_bytes, fetch_max_wait_ms=100,
        )

    def name_for(self, tp: TopicPartition) -> str:
        return tracking_name(self.incarnation, tp.topic, tp.partition)

    def ready(self) -> bool:
        return bool(self.kafka.assignment())

    async def run(self, stop: asyncio.Event) -> None:
        self.kafka.subscribe(self.topics, listener=_SeekFromStore(self))
        await self.kafka.start()
        try:
            while not stop.is_set():
                batch = await self.kafka.getmany(timeout_ms=200, max_records=500)
                if not batch:
                    continue
                for record in self._ordered(batch):
                    await self._handle(record)
                await self._commit(batch)
        finally:
            await self.kafka.stop()

    def _ordered(self, batch: Mapping[TopicPartition, list[ConsumerRecord[bytes, bytes]]]
                 ) -> list[ConsumerRecord[bytes, bytes]]:
        """Per partition in offset order; across partitions by produce time when asked."""
        if not self.order_across_partitions:
            return [record for records in batch.values() for record in records]
        return list(heapq.merge(*batch.values(), key=lambda r: r.timestamp))

    async def _handle(self, record: ConsumerRecord[bytes, bytes]) -> None:
        tracking = Tracking(tracking_name(self.incarnation, record.topic, record.partition),
                            record.offset)
        try:
            envelope, payload = decode(record.value)
        except DecodeError as error:
            await self._dead_letter(record, tracking, f"invalid: {error}")
            return
        attempt = 0
        while True:
            try:
                fresh = await asyncio.to_thread(self.sink.process, tracking, record,
                                                envelope, payload)
                CONSUMED.labels(record.topic, "processed" if fresh else "duplicate").inc()
                return
            except Rejected as error:
                await self._dead_letter(record, tracking, f"rejected: {error}")
                return
            except Conflict:
                attempt += 1
                log.warning("conflict on %s@%s, retry %d", record.topic, record.offset, attempt)
                await asyncio.sleep(min(0.05 * attempt, 1.0))

    async def _dead_letter(self, record: ConsumerRecord[bytes, bytes], tracking: Tracking,
                           reason: str) -> None:
        log.warning("dead-lettering %s/%s@%s: %s", record.topic, record.partition,
                    record.offset, reason[:200])
        headers = [
            (topics.DLQ_REASON_HEADER, reason.encode()[:1000]),
            (topics.DLQ_GROUP_HEADER, self.group.encode()),
            ("dunwell-dlq-origin", f"{record.topic}/{record.partition}/{record.offset}".encode()),
        ]
        await self.producer.send_and_wait(topics.dlq(record.topic), record.value,
                                          key=record.key, headers=headers)
        await asyncio.to_thread(self.sink.skip, tracking)
        CONSUMED.labels(record.topic, "dead_lettered").inc()

    async def _commit(self, batch: Mapping[TopicPartition, list[ConsumerRecord[bytes, bytes]]]
                      ) -> None:
        offsets = {tp: records[-1].offset + 1 for tp, records in batch.items() if records}
        try:
            await self.kafka.commit(offsets)
        except Exception as error:  # noqa: BLE001 - informational only; the store holds positions
            log.info("kafka offset commit skipped: %s", type(error).__name__)
