"""A real audit log on a SQLite file (or a PostgreSQL database, by its URL), for the audit unit
tests."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from uuid import NAMESPACE_URL, uuid5

from shared.tlog import leaf_hash

from services.audit.application import AuditLog
from services.audit.signer import generate_signer, load_signer
from services.audit.store import LogStore, NewLeaf

ORIGIN = "dunwell.test/audit"
SKEY, VKEY = generate_signer(ORIGIN)
OTHER_SKEY, _ = generate_signer(ORIGIN)
SIZE = 300
EVERY = 25  # a checkpoint every 25 leaves, as a busy log gets one a second
NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


def event_bytes(i: int, loan: str | None = None) -> bytes:
    return json.dumps({
        "specversion": "1.0", "id": str(uuid5(NAMESPACE_URL, f"event/{i}")),
        "source": "/dunwell/test", "type": ["LoanOverdue", "CaseOpened", "ReminderSent"][i % 3],
        "subject": loan or f"LN-{i % 7}", "time": NOW.isoformat(), "data": {"seq": i},
    }).encode()


def new_leaf(data: bytes) -> NewLeaf:
    event = json.loads(data)
    return NewLeaf(event["id"], event["subject"], event["type"], data, leaf_hash(data))


def open_log(path: Path | str, skey: str = SKEY) -> AuditLog:
    _name, signer = load_signer(skey)
    return AuditLog(LogStore(path), ORIGIN, signer, VKEY)


def grow(log: AuditLog, start: int, end: int, notes: list[str], loan: str | None = None) -> None:
    """Append leaves start..end-1 one event at a time, signing every EVERY leaves and at end."""
    for i in range(start, end):
        log.store.append(new_leaf(event_bytes(i, loan)), ("kafka/inc/t/0", i))
        if ((i + 1) % EVERY == 0 or i + 1 == end) and log.sign_checkpoint(NOW) is not None:
            notes.append(log.store.latest_checkpoint()[1])  # type: ignore[index]
