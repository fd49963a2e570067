"""The audit application: every consumed event, exactly as received, appended once."""

from __future__ import annotations

from eventsourcing.persistence import Tracking

from aiokafka.structs import ConsumerRecord

from shared.events import CloudEvent, EventData
from shared.tlog import leaf_hash

from services.audit.store import Leaf, LogStore, NewLeaf


class AuditLog:
    """Implements the tracked consumer's Sink: the append and the position share a transaction."""

    def __init__(self, store: LogStore) -> None:
        self.store = store

    def position(self, name: str) -> int | None:
        return self.store.position(name)

    def process(self, tracking: Tracking, record: ConsumerRecord[bytes, bytes],
                envelope: CloudEvent, payload: EventData) -> bool:
        data = bytes(record.value or b"")
        leaf = NewLeaf(event_id=envelope.id, subject=envelope.subject,
                       event_type=envelope.type, data=data, leaf_hash=leaf_hash(data))
        return self.store.append(leaf, (tracking.application_name, tracking.notification_id))

    def skip(self, tracking: Tracking) -> None:
        self.store.append(None, (tracking.application_name, tracking.notification_id))

    def timeline(self, loan_id: str) -> list[Leaf]:
        return self.store.leaves_of(loan_id)
