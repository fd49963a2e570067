"""The audit's outbox: its signed checkpoints, announced on audit.checkpoints by the relay.

An announcement follows the store, not the signing: a checkpoint stored just before a crash is
announced after the restart (its event id is stable, so a repeat is harmless). Only the latest
checkpoint is announced, only once the newest earlier announcement has been read back, never
below it, and never from a forked store (`CheckpointGuard`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from uuid import NAMESPACE_URL, UUID, uuid5

from shared import topics
from shared.errors import describe
from shared.events import CheckpointSigned, CloudEvent, envelope, event_id_for
from shared.relay import Outgoing
from shared.store import DeadLetter
from shared.tlog import b64encode

from services.audit.application import AuditLog


class Announcements:
    """Implements the relay's Outbox over the audit store; positions are tree sizes."""

    def __init__(self, audit: AuditLog) -> None:
        self.audit = audit
        self.stream = uuid5(NAMESPACE_URL, f"https://dunwell.dev/checkpoints/{audit.origin}")

    def position(self, name: str) -> int | None:
        return self.audit.store.position(name)

    def advance(self, name: str, position: int) -> None:
        self.audit.store.set_position(name, position)

    def head(self) -> int:
        latest = self.audit.latest()
        return 0 if latest is None else latest[0]

    def after(self, position: int, limit: int) -> list[Outgoing]:
        latest = self.audit.latest()
        if latest is None or latest[0] <= position or not self.audit.guard.may_announce(latest[0]):
            return []
        size, note = latest
        try:
            return [Outgoing(size, announcement(self.audit, self.stream, size, note))]
        except Exception as error:  # noqa: BLE001 - set aside, the next checkpoint goes on
            return [Outgoing(size, failure=self._letter(size, note, error))]

    def _letter(self, size: int, note: str, error: BaseException) -> DeadLetter:
        origin = f"audit/checkpoint/{size}"
        return DeadLetter(
            key=f"relay/{origin}", topic=topics.OUTBOX_DLQ,
            message_key=self.audit.origin.encode(), value=note.encode(),
            headers=((topics.DLQ_REASON_HEADER, f"unannounceable: {describe(error)}".encode()),
                     (topics.DLQ_ERROR_TYPE_HEADER, type(error).__name__.encode()),
                     (topics.DLQ_GROUP_HEADER, b"relay/audit"),
                     (topics.DLQ_ORIGIN_HEADER, origin.encode())))

    def set_aside(self, letters: Sequence[DeadLetter]) -> None:
        self.audit.store.record_dead_letters(letters)

    def unsent_dead_letters(self, prefix: str, limit: int) -> list[DeadLetter]:
        return self.audit.store.unsent_dead_letters(prefix, limit)

    def mark_sent(self, keys: Sequence[str]) -> None:
        self.audit.store.mark_sent(keys)

    def on_change(self, listener: Callable[[], None]) -> None:
        self.audit.on_signed(listener)


def announcement(audit: AuditLog, stream: UUID, size: int, note: str) -> CloudEvent:
    checkpoint = audit.open(note)  # the latest may be from before a key rotation
    signed_at = audit.store.checkpoint_signed_at(size)
    data = CheckpointSigned(origin=checkpoint.origin, tree_size=size,
                            root_hash=b64encode(checkpoint.root), note=note, signed_at=signed_at)
    return envelope(data, event_id=event_id_for(stream, size), source="/dunwell/audit",
                    time=signed_at, causation_id=None, correlation_id=None)
