"""What the integration tests share: a broker they control, a small application, readers."""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from eventsourcing.domain import Aggregate, event

from dunwell import devstack
from shared import topics
from shared.application import ServiceApplication, Unit
from shared.events import CaseClosed, CloudEvent, envelope
from shared.kafka import make_producer, prepare_broker, read_to_now
from shared.settings import KafkaSettings

NOW = datetime(2026, 12, 1, 3, 0, tzinfo=UTC)


@dataclass
class Broker:
    """Tansu on a loopback port; it can be killed and replaced by an empty one on that port."""

    port: int
    logs: Path
    process: devstack.Process
    incarnation: str = ""  # as read when it was prepared

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def settings(self, **changes: Any) -> KafkaSettings:
        return KafkaSettings(bootstrap=self.bootstrap, partitions=2, **changes)

    def replace_with_empty(self) -> None:
        """kill -9, then a new broker with no data on the same port."""
        self.process.kill()
        self.process = devstack.start_broker(self.port, self.logs)

    def freeze(self) -> None:
        self.process.popen.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self.process.popen.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        self.thaw()
        self.process.stop()


def start_broker(logs: Path) -> Broker:
    port = devstack.free_port()
    broker = Broker(port, logs, devstack.start_broker(port, logs))
    broker.incarnation = asyncio.run(prepare_broker(broker.settings()))
    return broker


async def create_topics(settings: KafkaSettings, *names: str, partitions: int = 1) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1) for name in names])
    finally:
        await admin.close()


def fresh_topic() -> str:
    return f"it.{uuid.uuid4().hex[:10]}"


def closed_event(loan_id: str, event_id: str | None = None) -> CloudEvent:
    """A small contract event (its loan id says how the test handler treats it)."""
    return envelope(CaseClosed(loan_id=loan_id, reason="paid", closed_at=NOW),
                    event_id=event_id or str(uuid.uuid4()), source="/test", time=NOW,
                    causation_id=None, correlation_id=None)


async def produce(settings: KafkaSettings, topic: str, events: list[CloudEvent | bytes],
                  key: bytes = b"same-partition") -> None:
    producer = make_producer(settings)
    await producer.start()
    try:
        for item in events:
            value = item if isinstance(item, bytes) else item.encode()
            await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


async def records(settings: KafkaSettings, topic: str) -> list[Any]:
    return await read_to_now(settings, topic)


async def started_producer(settings: KafkaSettings) -> AIOKafkaProducer:
    producer = make_producer(settings)
    await producer.start()
    return producer


MARK_NAMESPACE = uuid5(NAMESPACE_URL, "https://dunwell.dev/tests/marks")


class Mark(Aggregate):
    """One per handled loan id: a second handling could not create it again."""

    @event("Marked")
    def __init__(self, loan_id: str) -> None:
        self.loan_id = loan_id

    @staticmethod
    def create_id(loan_id: str) -> UUID:
        return uuid5(MARK_NAMESPACE, loan_id)


class Marks(ServiceApplication):
    name = "marks"

    def marked(self, loan_id: str) -> bool:
        return Mark.create_id(loan_id) in self.repository


@dataclass
class Behaviour:
    """What the test handler does for a loan id, and how often it was called for each."""

    calls: dict[str, int] = field(default_factory=dict)
    fail: dict[str, Callable[[int], BaseException | None]] = field(default_factory=dict)

    def handler(self, app: Marks, unit: Unit, cloud_event: CloudEvent, data: CaseClosed,
                now: datetime) -> None:
        count = self.calls[data.loan_id] = self.calls.get(data.loan_id, 0) + 1
        decide = self.fail.get(data.loan_id)
        error = decide(count) if decide else None
        if error is not None:
            raise error
        unit.save(Mark(loan_id=data.loan_id))


def marks(tmp_path: Path) -> Marks:
    return Marks(env={"PERSISTENCE_MODULE": "eventsourcing.sqlite",
                      "SQLITE_DBNAME": str(tmp_path / "marks.db")})


async def eventually(
        probe: Callable[[], Any],
        timeout: float = 30.0,  # noqa: ASYNC109 - fails as an assertion that names `what`
        what: str = "it") -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = probe()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(0.1)


DLQ = topics.dlq
