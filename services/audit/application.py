"""The audit application: every consumed event, exactly as received, appended once; signed
checkpoints over the Merkle tree; proofs pinned to a checkpoint's size; each loan's compliance
verdicts kept up to date as its leaves arrive."""

from __future__ import annotations

import base64
import contextlib
import logging
import math
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

import prometheus_client
from aiokafka.structs import ConsumerRecord
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from eventsourcing.persistence import Tracking
from opentelemetry import trace

from shared import telemetry
from shared.clock import Clock
from shared.consumer import Applied, Batch, Delivery, one
from shared.events import CloudEvent, EventData
from shared.store import DeadLetter
from shared.tlog import Checkpoint, b64encode, open_checkpoint

from services.audit import merkle
from services.audit.domain import CheckpointGuard, Signing
from services.audit.handlers import leaf_of
from services.audit.keys import LogKey, log_keys
from services.audit.policy import (
    AGENCY,
    COLLECTOR_ENTRIES,
    NOT_ABOUT_A_LOAN,
    STRATEGY,
    Unjudgeable,
    judge_loan,
    judging_version,
    named_agencies,
    named_collectors,
    named_lenders,
    named_strategies,
    still_holds,
)
from services.audit.signer import sign_note
from services.audit.store import Leaf, LogStore, Verdicts, Violation, ViolationQuery

BUNDLE_FORMAT = "dunwell-evidence/v1"

log = logging.getLogger(__name__)

CONFLICTING = prometheus_client.Counter(
    "dunwell_audit_conflicting_duplicates_total",
    "Events consumed again under a logged id but with other bytes (the first is kept)")
JUDGING_FAILED = prometheus_client.Counter(
    "dunwell_audit_judging_failures_total",
    "Batches after which the compliance verdicts could not be brought up to date")
LOAN_NOT_JUDGED = prometheus_client.Counter(
    "dunwell_audit_loans_not_judged_total",
    "Loans whose verdicts could not be judged (a rule raised on their leaves): skipped, and "
    "judged again with their next leaf")
# At most this many leaves' loans are judged after one batch: a store from before verdicts, or
# one whose default pack changed, catches up a slice at a time instead of holding up the log.
JUDGE_SLICE = 5000


class ForkedLog(RuntimeError):
    """The store's tree contradicts a checkpoint this log has already announced."""


class AuditLog:
    """The consumer's sink for every audited topic: a batch of events and every partition's
    position commit together; checkpoints are signed over the tree as it grows."""

    def __init__(self, store: LogStore, origin: str, signer: Ed25519PrivateKey,
                 vkey: str, pack: str = "cn", retired: Sequence[str] = ()) -> None:
        self.store = store
        self.origin = origin
        self.signer = signer
        self.vkey = vkey  # the current signer's
        self.retired = [key for key in retired if key != vkey]  # oldest first
        self._keys: list[LogKey] | None = None
        self.pack = pack  # the installation's pack, for loans that name no jurisdiction
        self.guard = CheckpointGuard()
        self._behind_logged = False
        self._fork_logged = False
        self._signed_listeners: list[Callable[[], None]] = []
        self._signed_at: datetime | None = None

    @property
    def forked(self) -> str | None:
        return self.guard.forked

    def expect(self, announced: Checkpoint | None) -> None:
        """The newest checkpoint already announced outside the store (audit.checkpoints);
        None when nothing was. See `CheckpointGuard`."""
        self.guard.expect(announced)
        self._behind_logged = False

    def check(self) -> int:
        """Readiness: the store answers and the log agrees with what it announced."""
        if self.forked is not None:
            raise ForkedLog(self.forked)
        return self.store.ping()

    # --- the consumer's sink ---

    def position(self, name: str) -> int | None:
        return self.store.position(name)

    def apply(self, batch: Batch) -> Applied:
        """Every fresh event of the batch becomes a leaf, exactly as consumed."""
        stored = {name: self.store.position(name) for name in batch.names()}
        leaves, letters, topic_of = [], [], {}
        for delivery in batch.deliveries:
            if batch.applied(delivery, stored):
                continue
            if delivery.reason is not None or delivery.envelope is None:
                letters.append(delivery.dead_letter(batch.group))
                continue
            leaves.append(leaf_of(delivery.envelope, delivery.record))
            topic_of[delivery.envelope.id] = delivery.record.topic
        positions = [(t.application_name, t.notification_id) for t in batch.positions(stored)]
        if not positions and not letters:
            return Applied({})
        fresh = [d for d in batch.deliveries if d.envelope is not None
                 and d.envelope.id in topic_of and not batch.applied(d, stored)]
        with appending(fresh) as spans:
            committed = self.store.commit(leaves, positions, letters)
            spans.appended(committed.appended)
        for event_id in committed.conflicting:
            CONFLICTING.inc()
            log.warning("event %s was logged before with other bytes; the first is kept",
                        event_id)
        self._judge_after_batch()
        return Applied(dict(Counter(topic_of[event_id] for event_id in committed.appended)),
                       letters)

    def process(self, tracking: Tracking, record: ConsumerRecord[bytes, bytes],
                envelope: CloudEvent, payload: EventData) -> bool:
        """One message as a batch of one: True when it became a leaf."""
        return self.apply(one(tracking, record, envelope, payload, envelope.time)).handled > 0

    def unsent_dead_letters(self, prefix: str, limit: int) -> list[DeadLetter]:
        return self.store.unsent_dead_letters(prefix, limit)

    def mark_sent(self, keys: Sequence[str]) -> None:
        self.store.mark_sent(keys)

    # --- compliance verdicts ---

    def _judge_after_batch(self) -> None:
        """The log goes on even if judging fails: the leaves are committed, and the verdicts
        catch up after the next batch (what is judged is marked only once stored)."""
        try:
            self.judge_pending()
        except Exception:  # a fault in a rule must never stop the log
            JUDGING_FAILED.inc()
            log.exception("compliance verdicts could not be brought up to date")

    def judge_pending(self) -> int:
        """Judge again each loan with a leaf that its stored verdicts do not cover yet; returns
        how many loans were judged.

        Judging per loan is enough: every rule reads one loan's leaves and nothing else (the
        leaf's subject is its loan), so a new leaf can change its own loan's verdicts and no
        other's. C6 and C10 read more: the StrategyPublished leaves the loan's visit requests
        name (subject: the lender), and the registry leaves of the collectors its visits name
        and of their agencies (subject: the collector, the agency). So a new leaf of one of
        those judges again the loans whose stored verdicts read that subject's leaves (the
        store keeps which). The cost
        is the touched loans' leaves, found by the store's index of leaves by subject, never a
        scan of the log. After an upgrade of the rules or a change of AUDIT_PACK the log is
        judged again from its first leaf, a slice a batch; a loan whose stored verdicts already
        cover its leaves under these rules is not judged twice.

        Each loan is judged on its own: one whose leaves a rule cannot read is logged (by leaf
        index, never its data), counted and skipped, and the others go on.
        """
        judged_as = judging_version(self.pack)
        start, size = self.store.judged_to(self.pack, judged_as), self.store.size
        if start >= size:
            return 0
        end = min(size, start + JUDGE_SLICE)
        judged = []
        loans = set(self.store.subjects_between(start, end, sorted(NOT_ABOUT_A_LOAN)))
        read = self.store.subjects_of_types_between(start, end, sorted(NOT_ABOUT_A_LOAN))
        if read:
            loans.update(self.store.readers_of(read))
        for loan in sorted(loans):
            leaves = self.judged_leaves(loan)
            stored = self.store.verdicts_of(loan)
            if stored is not None and still_holds(stored, size, self.pack,
                                                  [leaf.leaf_index for leaf in leaves]):
                continue
            verdicts = self._judged(loan, leaves, size)
            if verdicts is not None:
                judged.append(verdicts)
        self.store.record_verdicts(judged, self.pack, judged_as, end)
        return len(judged)

    def _judged(self, loan_id: str, leaves: Sequence[Leaf], size: int) -> Verdicts | None:
        """One loan's verdicts; None, logged and counted, when they cannot be judged."""
        try:
            return judge_loan(loan_id, leaves, size, self.pack)
        except Unjudgeable as failure:
            LOAN_NOT_JUDGED.inc()
            log.warning("a loan's verdicts could not be judged: %s raised %s at leaf %s; they "
                        "stay as they were until its next leaf", failure.rule,
                        type(failure.cause).__name__, failure.leaf_index)
        except Exception as error:  # noqa: BLE001 - one loan must never stop the others
            LOAN_NOT_JUDGED.inc()
            log.warning("a loan's verdicts could not be judged (%s, from its leaves up to %d); "
                        "they stay as they were until its next leaf", type(error).__name__,
                        leaves[-1].leaf_index if leaves else -1)
        return None

    def verdicts_at(self, loan_id: str, size: int) -> Verdicts | None:
        """The loan's verdicts over its leaves below `size`; None when it has none there.

        The stored verdicts answer when the loan has the same leaves below both sizes and they
        were judged under the same default pack and rules; else the loan is judged over that
        prefix, which costs one loan's leaves. A rule that raises on these leaves answers
        `not_evaluated` with a finding "could not be judged", never `pass`; the others are
        judged all the same.
        """
        own, *read = self.judging_leaves(loan_id)
        if not any(leaf.leaf_index < size for leaf in own):
            return None
        leaves = _in_log_order(own, *read)
        stored = self.store.verdicts_of(loan_id)
        if stored is not None and still_holds(stored, size, self.pack,
                                              [leaf.leaf_index for leaf in leaves]):
            return replace(stored, tree_size=size)
        return judge_loan(loan_id, leaves, size, self.pack, strict=False)

    def compliance(self, loan_id: str) -> Verdicts | None:
        """The loan's verdicts pinned to the latest signed checkpoint."""
        latest = self.latest()
        return None if latest is None else self.verdicts_at(loan_id, latest[0])

    def violations(self, query: ViolationQuery) -> tuple[list[Violation], int | None]:
        """A page of violations and the id to go on after, None at the end."""
        rows = self.store.violations(replace(query, limit=query.limit + 1))
        more = len(rows) > query.limit
        page = rows[:query.limit]
        return [violation for _, violation in page], page[-1][0] if more else None

    # --- checkpoints ---

    def timeline(self, loan_id: str) -> list[Leaf]:
        return self.store.leaves_of(loan_id)

    def judging_leaves(self, loan_id: str, below: int | None = None
                       ) -> tuple[list[Leaf], list[Leaf], list[Leaf]]:
        """The loan's leaves; the StrategyPublished leaves its visit requests name (the
        lenders' leaves, not the loan's); and the registry's: the CollectorRegistered and
        CollectorRevoked leaves of the collectors its visits name and the AgencyRegistered
        leaves of their agencies. All below `below` if given."""
        def kept(leaves: Sequence[Leaf], kinds: Sequence[str] | None = None) -> list[Leaf]:
            return [leaf for leaf in leaves if (kinds is None or leaf.event_type in kinds)
                    and (below is None or leaf.leaf_index < below)]

        own = kept(self.timeline(loan_id))
        candidates = [leaf for lender in named_lenders(own)
                      for leaf in kept(self.store.leaves_of(lender, STRATEGY), [STRATEGY])]
        collectors = [leaf for collector in named_collectors(own)
                      for leaf in kept(self.store.leaves_of(collector), COLLECTOR_ENTRIES)]
        agencies = [leaf for agency in named_agencies(collectors)
                    for leaf in kept(self.store.leaves_of(agency, AGENCY), [AGENCY])]
        mine = {leaf.leaf_index for leaf in own}
        registry = [leaf for leaf in _in_log_order(collectors, agencies)
                    if leaf.leaf_index not in mine]
        return own, named_strategies(own, candidates), registry

    def judged_leaves(self, loan_id: str) -> list[Leaf]:
        """What the loan's verdicts are judged over: its leaves and those they name."""
        return _in_log_order(*self.judging_leaves(loan_id))

    def on_signed(self, listener: Callable[[], None]) -> None:
        self._signed_listeners.append(listener)

    def sign_checkpoint(self, now: datetime) -> Checkpoint | None:
        """A new checkpoint when the tree grew since the last one; None otherwise.

        One signer, a root computed from append-only nodes, and sizes that only grow: two
        checkpoints of this log can never be inconsistent.
        """
        size = self.store.size
        verdict = self.guard.signing(size, lambda at: merkle.root(at, self.store))
        if verdict is not Signing.ALLOWED:
            self._tell(verdict, size)
            return None
        latest = self.store.latest_checkpoint()
        if size == 0 or (latest is not None and latest[0] >= size):
            return None
        checkpoint = Checkpoint(self.origin, size, merkle.root(size, self.store))
        note = sign_note(checkpoint.body(), self.origin, self.signer)
        self.store.record_checkpoint(size, checkpoint.root, note, now.isoformat())
        self._signed_at = now
        for listener in self._signed_listeners:
            listener()
        return checkpoint

    def _tell(self, verdict: Signing, size: int) -> None:
        if verdict is Signing.FORKED:
            if not self._fork_logged:
                log.critical("%s", self.forked)
                self._fork_logged = True
        elif not self._behind_logged and self.guard.expected is not None:
            log.warning("the log holds %d leaves, behind the announced checkpoint of size %d: "
                        "nothing is signed until it has re-consumed past it", size,
                        self.guard.expected.size)
            self._behind_logged = True

    def latest(self) -> tuple[int, str] | None:
        return self.store.latest_checkpoint()

    # --- keys ---

    def trusted(self) -> list[str]:
        """Every key whose checkpoints this log stands by: the retired ones and the current."""
        return [*self.retired, self.vkey]

    def open(self, note: str) -> Checkpoint:
        """A checkpoint note of this log, verified by any of its keys (one stored or announced
        before a key rotation is signed by a retired key)."""
        return open_checkpoint(note, self.trusted())

    def published_keys(self) -> list[LogKey]:
        """The published keys with the runs of checkpoints they signed. Kept once the current
        key has signed: no retired key signs again, and the current key's run stays open."""
        keys = self._keys
        if keys is None or keys[-1].from_size is None:
            keys = self._keys = log_keys(self.store, self.vkey, self.retired)
        return keys

    def last_signed_at(self) -> datetime | None:
        """When the latest checkpoint was signed (read from the store once, then kept)."""
        if self._signed_at is None:
            latest = self.store.latest_checkpoint()
            if latest is not None:
                self._signed_at = self.store.checkpoint_signed_at(latest[0])
        return self._signed_at

    def inclusion(self, leaf_index: int, tree_size: int) -> list[str]:
        return [b64encode(h) for h in merkle.inclusion_proof(leaf_index, tree_size, self.store)]

    def consistency(self, first: int, second: int) -> list[str]:
        return [b64encode(h) for h in merkle.consistency_proof(first, second, self.store)]

    def evidence(self, loan_id: str) -> dict[str, Any] | None:
        """The loan's leaves, each with an inclusion proof against one signed checkpoint, the
        StrategyPublished leaves its visit requests name (`strategies`, proven alike), the
        registry leaves of its visits' collectors and their agencies (`registry`, alike), and
        the verdicts judged over exactly those leaves (which `dunwell verify` re-derives)."""
        latest = self.latest()
        if latest is None:
            return None
        size, note = latest
        leaves, strategies, registry = self.judging_leaves(loan_id, below=size)
        verdicts = self.verdicts_at(loan_id, size)
        if not leaves or verdicts is None:
            return None
        return {
            "format": BUNDLE_FORMAT, "loan_id": loan_id, "checkpoint": note,
            "leaves": [self._proven(leaf, size) for leaf in leaves],
            "strategies": [self._proven(leaf, size) for leaf in strategies],
            "registry": [self._proven(leaf, size) for leaf in registry],
            "pack": verdicts.pack, "verdicts": verdicts.rules,
        }

    def _proven(self, leaf: Leaf, size: int) -> dict[str, Any]:
        return {"leaf_index": leaf.leaf_index, "leaf": base64.b64encode(leaf.data or b"").decode(),
                "inclusion_proof": self.inclusion(leaf.leaf_index, size)}


# --- observability: each append is a span of its event's trace; the checkpoint's age ---

CHECKPOINT_AGE = prometheus_client.Gauge(
    "dunwell_audit_checkpoint_age_seconds",
    "Seconds since the latest signed checkpoint was signed (NaN before the first)")
TREE_SIZE = prometheus_client.Gauge("dunwell_audit_tree_size", "Leaves in the audit log")
SIGNED_SIZE = prometheus_client.Gauge("dunwell_audit_checkpoint_size",
                                      "The tree size the latest signed checkpoint covers")


class _Appends:
    """The spans of one commit's events, told which of them the commit appended."""

    def __init__(self, deliveries: Sequence[Delivery]) -> None:
        self.deliveries = deliveries
        self.spans = [telemetry.tracer().start_span(
            "audit append", context=telemetry.context_of(d.traceparent),
            kind=trace.SpanKind.CONSUMER,
            attributes={"messaging.destination.name": d.record.topic,
                        "cloudevents.event_id": d.envelope.id if d.envelope else "",
                        "cloudevents.event_type": d.envelope.type if d.envelope else ""})
            for d in deliveries]

    def appended(self, event_ids: Sequence[str]) -> None:
        kept = set(event_ids)
        for delivery, span in zip(self.deliveries, self.spans, strict=True):
            envelope = delivery.envelope
            assert envelope is not None
            span.set_attribute("dunwell.audit.appended", envelope.id in kept)
            if envelope.id in kept:
                with trace.use_span(span), telemetry.handling(envelope.id,
                                                              envelope.correlationid):
                    log.debug("appended %s from %s/%d@%d", envelope.type, delivery.record.topic,
                              delivery.record.partition, delivery.record.offset)


@contextlib.contextmanager
def appending(deliveries: Sequence[Delivery]) -> Iterator[_Appends]:
    spans = _Appends(deliveries)
    try:
        yield spans
    except BaseException as error:
        for span in spans.spans:
            span.record_exception(error)
            span.set_status(trace.StatusCode.ERROR, type(error).__name__)
        raise
    finally:
        for span in spans.spans:
            span.end()


def measure(audit: AuditLog, clock: Clock) -> None:
    """Scrapes read the log's size and its latest checkpoint's age on the service's clock."""
    TREE_SIZE.set_function(lambda: audit.store.size)
    SIGNED_SIZE.set_function(lambda: (audit.latest() or (0, ""))[0])

    def age() -> float:
        signed_at = audit.last_signed_at()
        if signed_at is None:
            return math.nan
        return max(0.0, (clock.now() - signed_at).total_seconds())

    CHECKPOINT_AGE.set_function(age)


def _in_log_order(*parts: Sequence[Leaf]) -> list[Leaf]:
    return sorted((leaf for part in parts for leaf in part), key=lambda leaf: leaf.leaf_index)
