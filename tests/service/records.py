"""Kafka records as the tracked consumer hands them to a service's sink."""

from __future__ import annotations

from aiokafka.structs import ConsumerRecord
from eventsourcing.persistence import Tracking

from shared.consumer import tracking_name
from shared.events import CloudEvent

INCARNATION = "inc"


def consumer_record(event: CloudEvent, topic: str, offset: int,
                    partition: int = 0) -> ConsumerRecord[bytes, bytes]:
    key = event.subject.encode()
    value = event.encode()
    return ConsumerRecord(topic=topic, partition=partition, offset=offset,
                          timestamp=int(event.time.timestamp() * 1000), timestamp_type=0,
                          key=key, value=value, checksum=None, serialized_key_size=len(key),
                          serialized_value_size=len(value),
                          headers=[("content-type", b"application/cloudevents+json")])


def position_name(topic: str, partition: int = 0) -> str:
    return tracking_name(INCARNATION, topic, partition)


def tracking_of(record: ConsumerRecord[bytes, bytes]) -> Tracking:
    """The position the consumer records with the work, as `EventConsumer` names it."""
    return Tracking(position_name(record.topic, record.partition), record.offset)
