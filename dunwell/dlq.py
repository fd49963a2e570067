"""`dunwell dlq list|show|replay`: the dead letters of every DLQ topic, and putting one back.

A letter is read where it lies, by a client that joins no group and commits nothing, from
offset 0 to the high-water mark of a fetch (not ListOffsets, which some Kafka-protocol
brokers answer wrongly). A replay puts the letter's message, or the operator's fixed version
of it, back on its original topic and partition under the same CloudEvents id: a consumer
that applied the original drops it as a duplicate, one that set it aside (and so recorded no
inbox row for it) applies it once. Every replay carries `dunwell-replayed-from` with the
letter's coordinates; a second replay of a letter of the same message is refused, and would
be dropped by the consumers' de-duplication if it got through.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import uuid5

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord

from shared import topics
from shared.events import (
    CLOUDEVENTS_CONTENT_TYPE,
    EVENT_ID_NAMESPACE,
    DecodeError,
    decode,
)
from shared.kafka import make_producer
from shared.settings import KafkaSettings

Record = ConsumerRecord[bytes, bytes]

DLQ_TOPICS = (*(topics.dlq(topic) for topic in topics.EVENT_TOPICS), topics.OUTBOX_DLQ)
REPLAYED_FROM_HEADER = "dunwell-replayed-from"
# Headers a replay writes afresh: the letter's reasons are not the replay's.
REWRITTEN = ("content-type", "ce_type", REPLAYED_FROM_HEADER)
# ASCII digits only (str.isdigit takes "²" and "٣"), within what Kafka's int32 partition and
# int64 offset hold.
_COORDINATES = re.compile(r"([^:]+):([0-9]{1,10}):([0-9]{1,19})")
_MAX_PARTITION, _MAX_OFFSET = 2**31 - 1, 2**63 - 1


class DlqError(Exception):
    """What the command says and its exit code: 2 for a request that cannot be done as
    asked (bad coordinates, no such letter, a fixed event that does not fit), 1 for a
    replay refused because it was done already."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True, order=True)
class Coordinates:
    topic: str
    partition: int
    offset: int

    def __str__(self) -> str:
        return f"{self.topic}:{self.partition}:{self.offset}"

    @classmethod
    def parse(cls, text: str) -> Coordinates:
        """TOPIC:PARTITION:OFFSET of a record on a dead-letter topic."""
        found = _COORDINATES.fullmatch(text)
        if found is None or int(found[2]) > _MAX_PARTITION or int(found[3]) > _MAX_OFFSET:
            raise DlqError(f"{text[:200]!r} is not TOPIC:PARTITION:OFFSET (e.g. "
                           f"{topics.dlq(topics.LOANS)}:0:12)")
        topic = found[1]
        if topic not in DLQ_TOPICS and not topic.endswith(".dlq"):
            raise DlqError(f"{topic[:200]} is not a dead-letter topic (one of "
                           f"{', '.join(DLQ_TOPICS)})")
        return cls(topic, int(found[2]), int(found[3]))

    @classmethod
    def of_origin(cls, text: str) -> Coordinates | None:
        """The `dunwell-dlq-origin` of a consumer's letter, `<topic>/<partition>/<offset>`;
        None for a relay's (`<service>/<notification id>`, `event/<id>`)."""
        topic, partition, offset = ([""] * 3 + text.rsplit("/", 2))[-3:]
        if topic and partition.isdigit() and offset.isdigit():
            return cls(topic, int(partition), int(offset))
        return None


def _text(value: bytes | None) -> str:
    return (value or b"").decode("utf-8", "replace")


def _raw_json(value: bytes | None) -> dict[str, Any] | None:
    try:
        found = json.loads(value or b"")
    except (ValueError, RecursionError):
        return None
    return found if isinstance(found, dict) else None


@dataclass(frozen=True)
class Letter:
    """One record of a dead-letter topic."""

    at: Coordinates
    timestamp: datetime
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]

    @classmethod
    def of(cls, record: Record) -> Letter:
        return cls(Coordinates(record.topic, record.partition, record.offset),
                   datetime.fromtimestamp(record.timestamp / 1000, UTC), record.key,
                   record.value, tuple((name, bytes(v or b"")) for name, v in record.headers))

    def header(self, name: str) -> str:
        return _text(dict(self.headers).get(name))

    @property
    def from_relay(self) -> bool:
        return self.at.topic == topics.OUTBOX_DLQ

    @property
    def origin(self) -> Coordinates | None:
        return None if self.from_relay else Coordinates.of_origin(
            self.header(topics.DLQ_ORIGIN_HEADER))

    @property
    def event_id(self) -> str | None:
        """The CloudEvents id the message carried, when it can be read at all."""
        if self.from_relay:
            origin = self.header(topics.DLQ_ORIGIN_HEADER)
            return origin.removeprefix("event/") if origin.startswith("event/") else None
        found = (_raw_json(self.value) or {}).get("id")
        return found if isinstance(found, str) and 0 < len(found) <= 128 else None

    @property
    def event_type(self) -> str | None:
        found = None if self.from_relay else (_raw_json(self.value) or {}).get("type")
        if isinstance(found, str):
            return found[:64]
        return self.header("ce_type") or None

    def summary(self) -> dict[str, Any]:
        """What `list` shows: where, why and when; never the message's data."""
        return {"letter": str(self.at), "origin": self.header(topics.DLQ_ORIGIN_HEADER),
                "group": self.header(topics.DLQ_GROUP_HEADER), "event_id": self.event_id,
                "event_type": self.event_type,
                "error_type": self.header(topics.DLQ_ERROR_TYPE_HEADER),
                "reason": self.header(topics.DLQ_REASON_HEADER),
                "value_omitted": self.header(topics.DLQ_VALUE_OMITTED_HEADER) or None,
                "at": self.timestamp.isoformat(timespec="milliseconds")}

    def detail(self) -> dict[str, Any]:
        """What `show` shows: the summary, every header and the message itself."""
        return {**self.summary(), "key": _text(self.key) if self.key is not None else None,
                "headers": [[name, _text(value)] for name, value in self.headers],
                "value": _raw_json(self.value) or (_text(self.value) if self.value else None)}


# --- reading ---

async def _read(settings: KafkaSettings, names: Sequence[str],
                partitions: Sequence[int] | None = None, start: int = 0,
                skip_missing: bool = False) -> list[Record]:
    """The records of the topics `names` (all partitions, or those named) from `start` up to
    the high-water mark each had when first fetched, by one client. LookupError: no such
    topic or partition (unless `skip_missing`, for a topic)."""
    consumer = AIOKafkaConsumer(enable_auto_commit=False, auto_offset_reset="earliest",
                                fetch_max_wait_ms=100, **settings.client_options())
    try:
        await consumer.start()
        wanted: list[TopicPartition] = []
        for topic in names:
            known = consumer.partitions_for_topic(topic) or set()
            if not known and skip_missing:
                continue
            if not known:
                raise LookupError(f"topic {topic} does not exist")
            chosen = [TopicPartition(topic, p) for p in sorted(known)
                      if partitions is None or p in partitions]
            if not chosen:
                named = ", ".join(map(str, partitions or ()))
                raise LookupError(f"topic {topic} has no partition {named}")
            wanted.extend(chosen)
        if not wanted:
            return []
        consumer.assign(wanted)
        return await _records(consumer, wanted, start)
    finally:
        await _stop(consumer)


async def _records(consumer: AIOKafkaConsumer, wanted: Sequence[TopicPartition],
                   start: int) -> list[Record]:
    """Fetch all partitions at once until each has told its high-water mark, then read on
    partition by partition up to it."""
    for tp in wanted:
        consumer.seek(tp, start)
    fetched: dict[TopicPartition, list[Record]] = {tp: [] for tp in wanted}
    ends: dict[TopicPartition, int] = {}
    while len(ends) < len(wanted):
        for tp, batch in (await consumer.getmany(*wanted, timeout_ms=200)).items():
            fetched[tp].extend(batch)
        ends.update((tp, mark) for tp in wanted
                    if tp not in ends and (mark := consumer.highwater(tp)) is not None)
    found: list[Record] = []
    for tp in wanted:
        records, end = fetched[tp], ends[tp]
        while not (records and records[-1].offset >= end - 1) \
                and await consumer.position(tp) < end:
            records.extend((await consumer.getmany(tp, timeout_ms=300)).get(tp, []))
        found.extend(r for r in records if start <= r.offset < end)
    return found


async def _stop(consumer: AIOKafkaConsumer) -> None:
    """Stop a reading client, in a few seconds at most. One stopped before it was assigned
    anything lets a cancelled task of its own out (aiokafka 0.14): not ours to pass on."""
    try:
        await asyncio.wait_for(consumer.stop(), 5.0)
    except TimeoutError:
        pass  # a broker that will not answer cannot keep the command
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise


async def _bounded(call: Any, what: str, seconds: float) -> Any:
    try:
        async with asyncio.timeout(seconds):
            return await call
    except TimeoutError:
        raise DlqError(f"{what}: no answer from the broker in {seconds:.0f} s") from None


async def read_letters(settings: KafkaSettings, topic: str | None,
                       seconds: float) -> list[Letter]:
    """Every letter of `topic`, or of every DLQ topic that exists, oldest first."""
    try:
        records = await _bounded(_read(settings, [topic] if topic else DLQ_TOPICS,
                                       skip_missing=topic is None),
                                 f"reading {topic or 'the DLQ topics'}", seconds)
    except LookupError as error:
        raise DlqError(str(error)) from None
    return sorted((Letter.of(record) for record in records),
                  key=lambda letter: (letter.timestamp, letter.at))


async def letter_at(settings: KafkaSettings, at: Coordinates, seconds: float) -> Letter:
    try:
        records = await _bounded(_read(settings, [at.topic], [at.partition], at.offset),
                                 f"reading {at.topic}", seconds)
    except LookupError as error:
        raise DlqError(str(error)) from None
    for record in records:
        if record.offset == at.offset:
            return Letter.of(record)
    raise DlqError(f"no dead letter at {at}")


async def find(settings: KafkaSettings, target: str, seconds: float) -> list[Letter]:
    """The letter at TOPIC:PARTITION:OFFSET, or every letter of the event with this id."""
    if ":" in target:
        return [await letter_at(settings, Coordinates.parse(target), seconds)]
    found = [letter for letter in await read_letters(settings, None, seconds)
             if letter.event_id == target]
    if not found:
        raise DlqError(f"no dead letter of an event with id {target[:128]!r} (give "
                       "TOPIC:PARTITION:OFFSET, as `dunwell dlq list` shows)")
    return found


# --- replaying ---

def replay_id(letter: Letter) -> str:
    """The CloudEvents id a replay of `letter` must carry.

    The original's, whenever it can be read: every consumer that applied the original has it
    in its inbox and drops the replay, every consumer that set it aside has not and applies
    it. A message whose id cannot be read was set aside by every consumer and applied by
    none, so any id would do once; one derived from its place on the topic makes a second
    replay (of this letter or of another group's letter of the same message) a duplicate.
    """
    if letter.event_id is not None:
        return letter.event_id
    return str(uuid5(EVENT_ID_NAMESPACE, f"replay/{letter.header(topics.DLQ_ORIGIN_HEADER)}"))


@dataclass(frozen=True)
class Replay:
    """The record a replay sends."""

    letter: Letter
    to: Coordinates  # topic and partition; the offset is the original's
    event_id: str
    event_type: str
    value: bytes
    headers: tuple[tuple[str, bytes], ...]


def plan(letter: Letter, fixed: bytes | None, max_bytes: int = 2 * 1024 * 1024) -> Replay:
    """The replay of `letter`, or of `fixed` in its place, checked as its consumers will
    check it (and no bigger than the broker takes, `max_bytes`); DlqError says why it cannot
    be put back."""
    origin = letter.origin
    if letter.from_relay or origin is None:
        raise DlqError(f"{letter.at} was set aside by a relay, not by a consumer: it never "
                       "reached a topic, so there is nothing to put back; fix the service's "
                       "mapping (see docs/dlq.md)")
    if origin.topic != letter.at.topic.removesuffix(".dlq"):
        raise DlqError(f"{letter.at} names {origin.topic} as its origin, not the topic of its "
                       "dead-letter topic: not put back")
    value = fixed if fixed is not None else letter.value
    if value is None:
        omitted = letter.header(topics.DLQ_VALUE_OMITTED_HEADER)
        raise DlqError(f"{letter.at} holds no value ({omitted}); give the message with "
                       "--fixed FILE")
    where = "the fixed event" if fixed is not None else f"the message of {letter.at}"
    if len(value) > max_bytes:
        raise DlqError(f"{where} is larger than a message the broker takes ({max_bytes} bytes)")
    try:
        envelope, payload = decode(value)
    except DecodeError as error:
        hint = "" if fixed is not None else "; fix it and give it with --fixed FILE"
        raise DlqError(f"{where} is not a contract event: {error}{hint}") from None
    if origin.topic in topics.EVENT_TOPICS and type(payload).topic != origin.topic:
        raise DlqError(f"{where} is a {envelope.type}, which does not belong on {origin.topic}")
    original = _raw_json(letter.value) or {}
    claimed = original.get("type")
    if fixed is not None and isinstance(claimed, str) and claimed != envelope.type:
        raise DlqError(f"the fixed event is a {envelope.type}, the letter's a {claimed[:64]}: "
                       "a fix corrects the event's fields, not what happened")
    concerned = original.get("subject")
    if fixed is not None and isinstance(concerned, str) and concerned != envelope.subject:
        raise DlqError("the fixed event's subject (its loan or collector) is not the letter's: "
                       "a fix corrects the event's fields, not whom it concerns; the other "
                       "one's events come from its own source")
    expected = replay_id(letter)
    if envelope.id != expected:
        raise DlqError(
            f"{where} has id {envelope.id!r}, not {expected!r}: consumers de-duplicate on the "
            "id, so under a new one a service that applied the original would apply it again. "
            f'Keep "id": "{expected}".')
    kept = tuple((name, v) for name, v in letter.headers
                 if not name.startswith("dunwell-dlq-") and name not in REWRITTEN)
    headers = (*kept, ("content-type", CLOUDEVENTS_CONTENT_TYPE.encode()),
               ("ce_type", envelope.type.encode()), (REPLAYED_FROM_HEADER, str(letter.at).encode()))
    # A fixed event goes in its compact form; the original goes byte for byte, as the audit
    # log may have hashed it.
    sent = envelope.encode() if fixed is not None else value
    return Replay(letter, Coordinates(origin.topic, origin.partition, origin.offset),
                  envelope.id, envelope.type, sent, headers)


async def earlier_replay(settings: KafkaSettings, replay: Replay,
                         seconds: float) -> Letter | None:
    """A replay already on the original partition, after the original, of this letter or
    of the same event (another group's letter of the same message). A partition that ends
    before the original's offset (the topic was made anew) is read whole."""
    origin, what = replay.to, f"reading {replay.to.topic}"
    try:
        records = await _bounded(_read(settings, [origin.topic], [origin.partition],
                                       origin.offset), what, seconds)
        if not records:
            records = await _bounded(_read(settings, [origin.topic], [origin.partition]), what,
                                     seconds)
    except LookupError as error:
        raise DlqError(f"{error}: the letter's original partition is gone, so it is not put "
                       "back (a topic made anew is for its operator to refill)") from None
    for record in records:
        found = Letter.of(record)
        marker = found.header(REPLAYED_FROM_HEADER)
        if marker and (marker == str(replay.letter.at)
                       or (_raw_json(found.value) or {}).get("id") == replay.event_id):
            return found
    return None


async def send(settings: KafkaSettings, replay: Replay, seconds: float) -> Coordinates:
    """Put the replay on its topic (acks=all); where it landed."""
    producer = make_producer(settings)
    try:
        async def sent() -> Any:
            await producer.start()
            return await producer.send_and_wait(replay.to.topic, replay.value,
                                                key=replay.letter.key,
                                                partition=replay.to.partition,
                                                headers=list(replay.headers))
        metadata = await _bounded(sent(), f"writing to {replay.to.topic}", seconds)
    finally:
        await producer.stop()
    return Coordinates(replay.to.topic, metadata.partition, metadata.offset)


def parse_since(text: str, now: datetime) -> datetime:
    """An RFC 3339 time with an offset, or a duration back from now (90m, 2h, 3d)."""
    from shared.clock import parse_duration

    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        try:
            return now - parse_duration(text)
        except (ValueError, OverflowError):
            raise DlqError(f"--since {text[:40]!r}: give a time such as "
                           "2026-12-01T08:00:00Z or a duration such as 90m, 2h, 3d") from None
    if moment.tzinfo is None:
        raise DlqError(f"--since {text[:40]!r}: the time needs an offset (Z, +08:00)")
    return moment
