"""Composition root of the audit service."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from aiokafka.structs import ConsumerRecord
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from fastapi import FastAPI

from shared import topics
from shared.clock import Clock
from shared.events import CheckpointSigned, DecodeError, decode
from shared.kafka import read_to_now
from shared.runtime import Loop, Runtime
from shared.service import Parts, assemble, serve
from shared.settings import KafkaSettings
from shared.tlog import Checkpoint, VerificationError, encode_vkey

from services.audit.api import router
from services.audit.application import AuditLog, measure
from services.audit.relay import Announcements
from services.audit.settings import Settings
from services.audit.signer import load_signer
from services.audit.store import LogStore

AUDITED_TOPICS = [topics.LOANS, topics.CASES, topics.REMINDERS, topics.VISITS]


def checkpointer(audit: AuditLog, clock: Clock, interval: float,
                 newest_announced: Callable[[], Awaitable[Checkpoint | None]],
                 beat: Callable[[], None] = lambda: None) -> Loop:
    """Signs a checkpoint whenever the tree grew (the relay announces it).

    Before the first signature, the newest checkpoint already announced is read back, so that
    a store restored from an earlier copy cannot sign, or announce, against it.
    """

    async def run(stop: asyncio.Event) -> None:
        audit.expect(await newest_announced())
        while not stop.is_set():
            await asyncio.to_thread(audit.sign_checkpoint, clock.now())
            beat()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)

    return run


async def _newest_announced(settings: KafkaSettings, audit: AuditLog) -> Checkpoint | None:
    """The newest checkpoint of this log on audit.checkpoints; as the log never announces a
    size below one it announced, that is also the largest. Other logs' records, and anything
    that does not verify under this log's keys (current or retired: an announcement from
    before a key rotation still holds the store to it), are passed over."""
    def ours(record: ConsumerRecord[bytes, bytes]) -> Checkpoint | None:
        try:
            _, data = decode(record.value or b"")
            if isinstance(data, CheckpointSigned):
                return audit.open(data.note)  # by the current key or a retired one
        except (DecodeError, VerificationError):
            pass
        return None

    records = await read_to_now(settings, topics.CHECKPOINTS,
                                newest=lambda record: ours(record) is not None)
    checkpoints = [c for c in map(ours, records) if c is not None]
    return max(checkpoints, key=lambda c: c.size, default=None)


def _check_latest_is_ours(audit: AuditLog) -> None:
    """A signer switched without retiring the old key would leave every earlier checkpoint
    unverifiable under the published keys, and the announcements read back passed over."""
    latest = audit.latest()
    if latest is None:
        return
    try:
        audit.open(latest[1])
    except VerificationError as error:
        audit.store.close()
        raise SystemExit(
            f"the latest checkpoint (size {latest[0]}) does not verify under the signer's key "
            f"or AUDIT_RETIRED_VKEYS: {error}. After a key rotation, put the old vkey into "
            f"AUDIT_RETIRED_VKEYS (docs/key-rotation.md)") from None


def create(settings: Settings | None = None, clock: Clock | None = None,
           connect: bool = True) -> FastAPI:
    settings = settings or Settings()
    clock = clock or settings.make_clock()
    name, signer = load_signer(settings.signer_text())
    if name != settings.origin:
        raise SystemExit(f"the signer key is for {name!r}, not the origin {settings.origin!r}")
    try:
        retired = settings.retired_keys()
    except (OSError, ValueError) as error:
        raise SystemExit(f"AUDIT_RETIRED_VKEYS: {error}") from None
    public = signer.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    audit = AuditLog(LogStore(settings.log_store()), settings.origin, signer,
                     encode_vkey(name, public), pack=settings.pack, retired=retired)
    _check_latest_is_ours(audit)
    measure(audit, clock)

    def start_checkpointer(runtime: Runtime, beat: Callable[[], None]) -> Loop:
        return checkpointer(audit, clock, settings.checkpoint_interval_seconds,
                            lambda: _newest_announced(runtime.settings, audit), beat)

    parts = Parts(
        name="audit", settings=settings, clock=clock, store=audit, store_check=audit.check,
        sink=audit, subscribe=AUDITED_TOPICS, routers=[router], order_across_partitions=True,
        outbox=Announcements(audit), loops=[("checkpointer", start_checkpointer)])
    return assemble(parts, connect=connect)


def main() -> None:
    settings = Settings()
    serve(create(settings), settings)


if __name__ == "__main__":
    main()
