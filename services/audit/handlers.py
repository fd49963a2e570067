"""Consumed events in, leaves out: every event of every audited topic, exactly as received."""

from __future__ import annotations

from aiokafka.structs import ConsumerRecord

from shared.events import CloudEvent
from shared.tlog import leaf_hash

from services.audit.store import NewLeaf


def leaf_of(envelope: CloudEvent, record: ConsumerRecord[bytes, bytes]) -> NewLeaf:
    """The leaf is the message's bytes as consumed: what an auditor re-hashes."""
    data = bytes(record.value or b"")
    return NewLeaf(event_id=envelope.id, subject=envelope.subject, event_type=envelope.type,
                   data=data, leaf_hash=leaf_hash(data))
