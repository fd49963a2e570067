"""The outbox relay: follows a service's notification log and publishes integration events.

The store is the outbox. The relay publishes a batch, waits for acks="all", then records the
last notification id it published, under the broker's incarnation: a broker that lost its
topics gets everything again from the start, and consumers de-duplicate on the event id.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer
from eventsourcing.persistence import Tracking
from prometheus_client import Counter, Gauge

from shared.application import ServiceApplication
from shared.events import EventData, envelope, event_id_for

log = logging.getLogger(__name__)

PUBLISHED = Counter("dunwell_relay_published_total", "Integration events published", ["topic"])
POSITION = Gauge("dunwell_relay_position", "Last notification id published")


@dataclass(frozen=True)
class Publication:
    """What a stored domain event becomes on Kafka: its data and the chain of cause."""

    data: EventData
    causation_id: str | None
    correlation_id: str | None


Mapping = Callable[[Any], Publication | None]


class OutboxRelay:
    def __init__(self, *, app: ServiceApplication, mapping: Mapping, producer: AIOKafkaProducer,
                 source: str, incarnation: str, idle_seconds: float = 0.05,
                 batch_size: int = 500) -> None:
        self.app = app
        self.mapping = mapping
        self.producer = producer
        self.source = source
        self.name = f"relay/{incarnation}"
        self.idle_seconds = idle_seconds
        self.batch_size = batch_size

    async def run(self, stop: asyncio.Event) -> None:
        position = await asyncio.to_thread(self.app.position, self.name) or 0
        while not stop.is_set():
            published = await self.publish_after(position)
            if published == position:
                try:
                    await asyncio.wait_for(stop.wait(), self.idle_seconds)
                except asyncio.TimeoutError:
                    pass
            position = published

    async def publish_after(self, position: int) -> int:
        notifications = await asyncio.to_thread(
            self.app.recorder.select_notifications, position + 1, self.batch_size)
        if not notifications:
            return position
        pending = []
        for notification in notifications:
            domain_event = self.app.mapper.to_domain_event(notification)
            publication = self.mapping(domain_event)
            if publication is None:
                continue
            cloud_event = envelope(
                publication.data,
                event_id=event_id_for(notification.originator_id, notification.originator_version),
                source=self.source, time=domain_event.timestamp,
                causation_id=publication.causation_id, correlation_id=publication.correlation_id,
            )
            topic = publication.data.topic
            pending.append(await self.producer.send(topic, cloud_event.encode(),
                                                    key=cloud_event.subject.encode(),
                                                    headers=_headers(cloud_event)))
            PUBLISHED.labels(topic).inc()
        await asyncio.gather(*pending)
        last = notifications[-1].id
        await asyncio.to_thread(self.app.skip, Tracking(self.name, last))
        POSITION.set(last)
        return last


def _headers(cloud_event: Any) -> list[tuple[str, bytes]]:
    return [("content-type", b"application/cloudevents+json"),
            ("ce_type", cloud_event.type.encode())]
