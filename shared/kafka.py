"""Kafka plumbing on aiokafka: topics, the broker's incarnation, the producer.

Nothing here depends on the broker being Tansu: it is plain Kafka protocol. Producers use
acks="all" without idempotence; consumers de-duplicate on the CloudEvents id instead.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, MessageSizeTooLargeError
from aiokafka.structs import ConsumerRecord

from shared import topics
from shared.errors import describe
from shared.settings import KafkaSettings
from shared.store import DeadLetter

log = logging.getLogger(__name__)

TOPIC_EXISTS = 36
# Announced checkpoints are what shows a rolled-back audit store; the incarnation's first
# record is what names the broker. Both are small, and kept: were the first record deleted by
# retention, every service would take the broker for a new one and refill it.
KEPT_FOREVER = {"retention.ms": "-1"}
INCARNATION_SECONDS = 30.0  # to read or settle the broker's incarnation when preparing it


async def ensure_topics(settings: KafkaSettings, attempts: int = 30) -> None:
    """Create every contract topic and its DLQ if missing; never rely on auto-creation."""
    common = settings.topic_configs()
    wanted = [NewTopic(name, 1 if name == topics.INCARNATION or name.endswith(".dlq")
                       else settings.partitions, settings.replication_factor,
                       topic_configs={**common, **(KEPT_FOREVER if name in (
                                          topics.CHECKPOINTS, topics.INCARNATION)
                                          else {})} or None)
              for name in topics.all_topics()]
    limit = settings.call_timeout_seconds
    for attempt in range(attempts):
        admin = AIOKafkaAdminClient(**settings.client_options())
        try:
            await asyncio.wait_for(admin.start(), limit)
            existing = set(await asyncio.wait_for(admin.list_topics(), limit))
            missing = [t for t in wanted if t.name not in existing]
            if missing:
                response = await asyncio.wait_for(admin.create_topics(missing), limit)
                for name, code, *_ in getattr(response, "topic_errors", []):
                    if code not in (0, TOPIC_EXISTS):
                        raise RuntimeError(f"could not create topic {name}: error {code}")
            return
        except (OSError, TimeoutError, ConnectionError, KafkaError) as error:
            if attempt == attempts - 1:
                raise
            log.info("broker not ready (%s); retrying", type(error).__name__)
            await asyncio.sleep(0.5)
        finally:
            await _closed(admin.close(), limit)


async def read_incarnation(settings: KafkaSettings) -> str | None:
    """The broker's incarnation id, or None when its topic is missing or still empty.

    Raises (KafkaError, OSError, TimeoutError) when the broker cannot be asked in time.
    """
    partition = TopicPartition(topics.INCARNATION, 0)
    consumer = AIOKafkaConsumer(enable_auto_commit=False, auto_offset_reset="earliest",
                                **settings.client_options())
    try:
        async with asyncio.timeout(2 * settings.call_timeout_seconds):
            await consumer.start()
            if not consumer.partitions_for_topic(topics.INCARNATION):
                return None
            consumer.assign([partition])
            consumer.seek(partition, 0)
            while True:
                batch = await consumer.getmany(partition, timeout_ms=500, max_records=1)
                for record in batch.get(partition, []):
                    return bytes(record.value or b"").decode()
                if consumer.highwater(partition) == 0:
                    return None
    finally:
        await _closed(consumer.stop(), settings.call_timeout_seconds)


class IncarnationCheck:
    """Confirms, after each fetch, that the records came from the broker incarnation a run
    works with: a broker replaced by an empty one between two fetches would otherwise be read
    from the old positions (records skipped as applied, later ones applied too early).

    One long-lived client, assigned to the incarnation partition (no group): a check is a
    seek to offset 0 and one small fetch.
    """

    def __init__(self, options: Mapping[str, Any], attempts: int = 4) -> None:
        self.partition = TopicPartition(topics.INCARNATION, 0)
        self.options = options
        self.attempts = attempts
        self._consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        consumer = AIOKafkaConsumer(enable_auto_commit=False, auto_offset_reset="earliest",
                                    **self.options)
        await consumer.start()
        consumer.assign([self.partition])
        self._consumer = consumer

    async def confirms(self, expected: str) -> bool:
        """True if the broker still names `expected`; False if it names another. Raises
        TimeoutError when it cannot tell (the topic is gone, the broker does not answer)."""
        consumer = self._consumer
        if consumer is None:
            raise RuntimeError("the incarnation check was not started")
        for _ in range(self.attempts):
            consumer.seek(self.partition, 0)
            batch = await consumer.getmany(self.partition, timeout_ms=250, max_records=1)
            for record in batch.get(self.partition, []):
                return bytes(record.value or b"").decode() == expected
        raise TimeoutError("the broker's incarnation could not be read")

    async def stop(self) -> None:
        if self._consumer is not None:
            await _closed(self._consumer.stop(), 2.0)
            self._consumer = None


async def broker_incarnation(settings: KafkaSettings) -> str:
    """The id in the first record of the incarnation topic, written by whoever comes first.

    A broker that lost its data (Tansu's memory store, a rebuilt cluster) has an empty topic,
    so it gets a new id, and positions kept under the old one no longer apply. This tries
    until it has one: the caller bounds it (`asyncio.timeout`).
    """
    while True:
        try:
            found = await read_incarnation(settings)
        except (KafkaError, OSError, TimeoutError) as error:
            log.info("incarnation not readable yet (%s)", type(error).__name__)
            found = None
        if found is not None:
            return found
        await _write_incarnation(settings)


async def new_incarnation(settings: KafkaSettings) -> tuple[str, str]:
    """Give the broker a new incarnation; return the old id and the new one.

    For a cluster restored from a backup: it holds fewer records than the services have read
    and published, so the positions they keep no longer describe it. Deleting the incarnation
    topic and writing a new first record makes every service see a new broker within a few
    seconds and refill it (each relay publishes its whole store again; each consumer reads
    from the beginning and de-duplicates on event ids). The caller bounds it in time.
    """
    old = await read_incarnation(settings)
    admin = AIOKafkaAdminClient(**settings.client_options())
    try:
        await admin.start()
        if topics.INCARNATION in await admin.list_topics():
            await admin.delete_topics([topics.INCARNATION])
        while topics.INCARNATION in await admin.list_topics():  # noqa: ASYNC110
            await asyncio.sleep(0.5)  # deletion is asynchronous: nothing to wait on
    finally:
        await _closed(admin.close(), settings.call_timeout_seconds)
    while True:
        try:
            new = await prepare_broker(settings)
        except (KafkaError, RuntimeError) as error:  # the topic's deletion not yet done
            log.info("incarnation topic not ready again yet (%s)", describe(error))
            await asyncio.sleep(0.5)
            continue
        if new != old:
            return old or "", new
        await asyncio.sleep(0.5)


async def _write_incarnation(settings: KafkaSettings) -> None:
    producer = make_producer(settings)
    try:
        async with asyncio.timeout(2 * settings.call_timeout_seconds):
            await producer.start()
            await producer.send_and_wait(topics.INCARNATION, uuid.uuid4().hex.encode(),
                                         partition=0)
    finally:
        await _closed(producer.stop(), settings.call_timeout_seconds)


async def _closed(call: Awaitable[object], seconds: float) -> None:
    """Close a client within `seconds`; a broker that will not answer cannot keep us."""
    try:
        await asyncio.wait_for(call, seconds)
    except Exception as error:  # noqa: BLE001 - closing: nothing more to do with it
        log.debug("closing a Kafka client: %s", type(error).__name__)


Record = ConsumerRecord[bytes, bytes]


def without_value(letter: DeadLetter) -> DeadLetter:
    """A dead letter too large for the broker, sent without its value: the headers still say
    why and where the original is (its topic, partition and offset; the service's store)."""
    size = len(letter.value or b"")
    note = f"{size} bytes, too large to copy here; read it at the origin".encode()
    return replace(letter, value=None,
                   headers=(*letter.headers, (topics.DLQ_VALUE_OMITTED_HEADER, note)))


async def send_dead_letter(producer: AIOKafkaProducer, letter: DeadLetter) -> None:
    """Send one dead letter (the caller bounds the time); one too large for the producer goes
    without its value, so a message too big to apply is never too big to set aside."""
    try:
        await producer.send_and_wait(letter.topic, letter.value, key=letter.message_key,
                                     headers=list(letter.headers))
    except MessageSizeTooLargeError:
        smaller = without_value(letter)
        await producer.send_and_wait(smaller.topic, smaller.value, key=smaller.message_key,
                                     headers=list(smaller.headers))


async def read_to_now(
        settings: KafkaSettings, topic: str, newest: Callable[[Record], bool] | None = None,
        timeout: float = 10.0,  # noqa: ASYNC109 - the error names the topic; see below
) -> list[Record]:
    """Every record of `topic` up to the high-water mark seen when called, partition by
    partition. Given `newest`, only the newest record of each partition that it accepts,
    searched back from the high-water mark in growing windows.

    The high-water mark comes from a fetch response, not from ListOffsets, which some
    Kafka-protocol brokers answer wrongly. A caller that needs the answer must not guess, so
    this raises: TimeoutError when the broker is too slow, KafkaError when it cannot be
    reached, LookupError when the topic does not exist. The bound is taken here rather than
    by the caller so that the error names the topic and the client is closed outside it.
    """
    consumer = AIOKafkaConsumer(enable_auto_commit=False, auto_offset_reset="earliest",
                                **settings.client_options())
    try:
        async with asyncio.timeout(timeout):
            return await _read(consumer, topic, newest)
    except TimeoutError:
        raise TimeoutError(f"reading {topic}: not done in {timeout:.0f} s") from None
    finally:
        await _closed(consumer.stop(), settings.call_timeout_seconds)


async def _read(consumer: AIOKafkaConsumer, topic: str,
                newest: Callable[[Record], bool] | None) -> list[Record]:
    """The work of read_to_now, under its timeout."""
    await consumer.start()  # loads all metadata
    partitions = [TopicPartition(topic, p)
                  for p in sorted(consumer.partitions_for_topic(topic) or ())]
    if not partitions:
        raise LookupError(f"topic {topic} does not exist")
    consumer.assign(partitions)
    for tp in partitions:
        consumer.seek(tp, 0)
    highs: dict[TopicPartition, int] = {}
    while len(highs) < len(partitions):
        await consumer.getmany(*partitions, timeout_ms=200, max_records=1)
        highs.update((tp, mark) for tp in partitions
                     if (mark := consumer.highwater(tp)) is not None)
    found: list[Record] = []
    for tp, mark in highs.items():
        if newest is None:
            found.extend(await _read_range(consumer, tp, 0, mark))
            continue
        end, window = mark, 16
        while end > 0:
            start = max(0, end - window)
            accepted = [r for r in await _read_range(consumer, tp, start, end)
                        if newest(r)]
            if accepted:
                found.append(accepted[-1])
                break
            end, window = start, window * 4
    return found


async def _read_range(consumer: AIOKafkaConsumer, tp: TopicPartition, start: int,
                      end: int) -> list[Record]:
    """The records of one partition at offsets start..end-1; fewer where retention removed
    some (the consumer then resets to the earliest offset the broker still has)."""
    consumer.seek(tp, start)
    records: list[Record] = []
    while True:
        batch = (await consumer.getmany(tp, timeout_ms=500)).get(tp, [])
        records.extend(r for r in batch if start <= r.offset < end)
        if batch and batch[-1].offset >= end - 1:
            return records
        if not batch and await consumer.position(tp) >= end:
            return records


def make_producer(settings: KafkaSettings) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        **settings.client_options(),
        acks="all",
        enable_idempotence=False,
        linger_ms=5,
        max_request_size=settings.max_request_bytes,
    )


async def prepare_broker(settings: KafkaSettings) -> str:
    """Topics first, then the incarnation: what a service does before it consumes or relays."""
    await ensure_topics(settings)
    async with asyncio.timeout(INCARNATION_SECONDS):
        return await broker_incarnation(settings)
