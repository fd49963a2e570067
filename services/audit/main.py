"""Composition root of the audit service."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from uuid import NAMESPACE_URL, UUID, uuid5

from aiokafka.structs import ConsumerRecord
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from fastapi import FastAPI

from shared import topics
from shared.clock import Clock, SystemClock
from shared.events import (CheckpointSigned, CloudEvent, DecodeError, decode, envelope,
                           event_id_for)
from shared.kafka import read_to_now
from shared.runtime import Loop, Runtime
from shared.service import Parts, assemble, serve
from shared.settings import KafkaSettings
from shared.tlog import (Checkpoint, VerificationError, b64encode, encode_vkey, load_signer,
                         open_checkpoint)

from services.audit.api import router
from services.audit.application import AuditLog
from services.audit.settings import Settings
from services.audit.store import LogStore

AUDITED_TOPICS = [topics.LOANS, topics.CASES, topics.REMINDERS, topics.VISITS]


def checkpointer(audit: AuditLog, clock: Clock, interval: float, runtime: Runtime,
                 newest_announced: Callable[[], Awaitable[Checkpoint | None]]) -> Loop:
    """Signs a checkpoint whenever the tree grew, and announces the latest stored one.

    The announcement follows the store, not the signing: a checkpoint stored just before a
    crash is announced after the restart (its event id is stable, so a repeat is harmless).
    Before the first signature, the newest checkpoint already announced is read back, so that
    a store restored from an earlier copy cannot sign against it (`AuditLog.expect`).
    """
    stream = uuid5(NAMESPACE_URL, f"https://dunwell.dev/checkpoints/{audit.origin}")

    async def run(stop: asyncio.Event) -> None:
        newest = await newest_announced()
        announced = 0
        if newest is not None:
            audit.expect(newest)
            announced = newest.size
        while not stop.is_set():
            await asyncio.to_thread(audit.sign_checkpoint, clock.now())
            latest = await asyncio.to_thread(audit.latest)
            # Never a size below one already announced: the newest announcement stays the
            # largest, which is what the next start reads back.
            if audit.forked is None and latest is not None and latest[0] > announced:
                event = _announcement(audit, stream, *latest)
                await runtime.producer.send_and_wait(topics.CHECKPOINTS, event.encode(),
                                                     key=audit.origin.encode())
                announced = latest[0]
            try:
                await asyncio.wait_for(stop.wait(), interval)
            except asyncio.TimeoutError:
                pass

    return run


async def _newest_announced(settings: KafkaSettings, audit: AuditLog) -> Checkpoint | None:
    """The newest checkpoint of this log on audit.checkpoints; as the log never announces a
    size below one it announced, that is also the largest. Other logs' records, and anything
    that does not verify under this log's key, are passed over."""
    def ours(record: ConsumerRecord[bytes, bytes]) -> Checkpoint | None:
        try:
            _, data = decode(record.value or b"")
            if isinstance(data, CheckpointSigned):
                return open_checkpoint(data.note, audit.vkey)
        except (DecodeError, VerificationError):
            pass
        return None

    records = await read_to_now(settings, topics.CHECKPOINTS,
                                newest=lambda record: ours(record) is not None)
    checkpoints = [c for c in map(ours, records) if c is not None]
    return max(checkpoints, key=lambda c: c.size, default=None)


def _announcement(audit: AuditLog, stream: UUID, size: int, note: str) -> CloudEvent:
    checkpoint = open_checkpoint(note, audit.vkey)
    signed_at = audit.store.checkpoint_signed_at(size)
    data = CheckpointSigned(origin=checkpoint.origin, tree_size=size,
                            root_hash=b64encode(checkpoint.root), note=note, signed_at=signed_at)
    return envelope(data, event_id=event_id_for(stream, size), source="/dunwell/audit",
                    time=signed_at, causation_id=None, correlation_id=None)


def create(settings: Settings | None = None, clock: Clock | None = None,
           connect: bool = True) -> FastAPI:
    settings = settings or Settings()
    clock = clock or SystemClock()
    name, signer = load_signer(settings.signer_text())
    if name != settings.origin:
        raise SystemExit(f"the signer key is for {name!r}, not the origin {settings.origin!r}")
    public = signer.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    audit = AuditLog(LogStore(settings.store_path("audit")), settings.origin, signer,
                     encode_vkey(name, public))

    def start_checkpointer(runtime: Runtime) -> Loop:
        return checkpointer(audit, clock, settings.checkpoint_interval_seconds, runtime,
                            lambda: _newest_announced(runtime.settings, audit))

    parts = Parts(
        name="audit", settings=settings, clock=clock, store=audit, store_check=audit.check,
        sink=audit, subscribe=AUDITED_TOPICS, routers=[router], order_across_partitions=True,
        loops=[("checkpointer", start_checkpointer)])
    return assemble(parts, connect=connect)


def main() -> None:
    settings = Settings()
    serve(create(settings), settings)


if __name__ == "__main__":
    main()
