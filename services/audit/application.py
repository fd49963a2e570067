"""The audit application: every consumed event, exactly as received, appended once; signed
checkpoints over the Merkle tree; proofs pinned to a checkpoint's size."""

from __future__ import annotations

import base64
import logging
from datetime import datetime
from typing import Any

from aiokafka.structs import ConsumerRecord
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from eventsourcing.persistence import Tracking

from shared.events import CloudEvent, EventData
from shared.tlog import Checkpoint, b64encode, leaf_hash, sign_note

from services.audit import merkle
from services.audit.store import Leaf, LogStore, NewLeaf

BUNDLE_FORMAT = "dunwell-evidence/v1"

log = logging.getLogger(__name__)


class ForkedLog(RuntimeError):
    """The store's tree contradicts a checkpoint this log has already announced."""


class AuditLog:
    """Implements the tracked consumer's Sink: the append and the position share a transaction."""

    def __init__(self, store: LogStore, origin: str, signer: Ed25519PrivateKey,
                 vkey: str) -> None:
        self.store = store
        self.origin = origin
        self.signer = signer
        self.vkey = vkey
        self._announced: Checkpoint | None = None
        self._behind_logged = False
        self.forked: str | None = None

    def expect(self, announced: Checkpoint) -> None:
        """The newest checkpoint already announced outside the store (on audit.checkpoints).

        A store restored from an earlier copy is behind it: nothing is signed until the log
        has re-consumed past that size and hashes to the announced root there. A log that
        hashes to another root is forked, and signs nothing more. Of two expectations the
        larger holds.
        """
        if self._announced is None or announced.size >= self._announced.size:
            self._announced = announced
            self._behind_logged = False

    def check(self) -> int:
        """Readiness: the store answers and the log agrees with what it announced."""
        if self.forked is not None:
            raise ForkedLog(self.forked)
        return self.store.ping()

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

    def sign_checkpoint(self, now: datetime) -> Checkpoint | None:
        """A new checkpoint when the tree grew since the last one; None otherwise.

        One signer, a root computed from append-only nodes, and sizes that only grow: two
        checkpoints of this log can never be inconsistent.
        """
        size = self.store.size
        if self.forked is not None or not self._extends_announced(size):
            return None
        latest = self.store.latest_checkpoint()
        if size == 0 or (latest is not None and latest[0] >= size):
            return None
        checkpoint = Checkpoint(self.origin, size, merkle.root(size, self.store))
        note = sign_note(checkpoint.body(), self.origin, self.signer)
        self.store.record_checkpoint(size, checkpoint.root, note, now.isoformat())
        return checkpoint

    def _extends_announced(self, size: int) -> bool:
        announced = self._announced
        if announced is None:
            return True
        if size < announced.size:  # restored from an earlier copy: catching up, or stuck
            if not self._behind_logged:
                log.warning("the log holds %d leaves, behind the announced checkpoint of size "
                            "%d: nothing is signed until it has re-consumed past it", size,
                            announced.size)
                self._behind_logged = True
            return False
        if merkle.root(announced.size, self.store) != announced.root:
            self.forked = (f"the log's first {announced.size} leaves do not hash to the root "
                           f"announced at that size: the store was rolled back or rewritten "
                           f"(run `dunwell audit verify-store`); no checkpoint will be signed")
            log.critical("%s", self.forked)
            return False
        self._announced = None  # checked once; every later checkpoint extends it
        return True

    def latest(self) -> tuple[int, str] | None:
        return self.store.latest_checkpoint()

    def inclusion(self, leaf_index: int, tree_size: int) -> list[str]:
        return [b64encode(h) for h in merkle.inclusion_proof(leaf_index, tree_size, self.store)]

    def consistency(self, first: int, second: int) -> list[str]:
        return [b64encode(h) for h in merkle.consistency_proof(first, second, self.store)]

    def evidence(self, loan_id: str) -> dict[str, Any] | None:
        """The loan's leaves, each with an inclusion proof against one signed checkpoint."""
        latest = self.latest()
        if latest is None:
            return None
        size, note = latest
        leaves = [leaf for leaf in self.timeline(loan_id) if leaf.leaf_index < size]
        if not leaves:
            return None
        return {
            "format": BUNDLE_FORMAT, "loan_id": loan_id, "checkpoint": note,
            "leaves": [{"leaf_index": leaf.leaf_index,
                        "leaf": base64.b64encode(leaf.data or b"").decode(),
                        "inclusion_proof": self.inclusion(leaf.leaf_index, size)}
                       for leaf in leaves],
        }
