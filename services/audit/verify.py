"""Re-derive the audit log from a store's rows and check it against every issued checkpoint.

An insider with write access to the store can change a leaf's bytes, its hash, a tree node, a
checkpoint row, or drop rows at the end. None of that can be made to agree with a checkpoint
signed earlier. A store rolled back to an earlier copy agrees with itself; only a checkpoint
kept outside it (the announcements on ``audit.checkpoints``, or notes an auditor saved)
exposes that, so those can be passed in as well.

The store holds each leaf's hash three times: computable from its bytes, in its leaf row, and
as tree node (0, i). Where two agree, that is the leaf's hash, and a third that differs is
named at its index. The tree is re-derived from those hashes and every stored node compared
with it; a node is named only where the difference starts, not at the ancestors above it.
Each checkpoint's root is compared too. A root that differs although every leaf looked
right means leaves were rewritten together with all their copies: the first bad index is
then the last size at which a signed root still matched.

One pass over the leaves and one ordered scan per tree level: memory stays O(log n).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from shared.tlog import (
    Checkpoint,
    VerificationError,
    decode_vkey,
    leaf_hash,
    node_hash,
    open_checkpoint,
)

from services.audit.store import StoredLeaf, StoreReader

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Finding:
    """One problem; `leaf_index` is the first leaf it makes untrustworthy (None: no leaf)."""

    problem: str
    leaf_index: int | None = None
    size: int | None = None


@dataclass
class Report:
    size: int = 0
    checkpoints_verified: int = 0
    latest: Checkpoint | None = None
    other_logs: int = 0  # checkpoints given that belong to another log, and were skipped
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings

    @property
    def first_bad_index(self) -> int | None:
        indices = [f.leaf_index for f in self.findings if f.leaf_index is not None]
        return min(indices) if indices else None

    def ordered(self) -> list[Finding]:
        """Findings by the first leaf they touch; those about checkpoints alone come last."""
        return sorted(self.findings, key=lambda f: (f.leaf_index is None, f.leaf_index or 0,
                                                    f.size or 0))


class _Level:
    """The stored nodes of one level, read in index order alongside the derivation."""

    def __init__(self, rows: Iterator[tuple[int, bytes]]) -> None:
        self._rows = rows
        self.head = next(rows, None)

    def take(self, index: int) -> bytes | None:
        while self.head is not None and self.head[0] < index:
            self.head = next(self._rows, None)
        if self.head is None or self.head[0] != index:
            return None
        value = self.head[1]
        self.head = next(self._rows, None)
        return value


@dataclass
class _Subtree:
    level: int
    index: int
    hash: bytes  # from the leaves' attested hashes
    claimed: bytes  # from the leaf hashes the stored tree holds (its level-0 nodes)
    differs: bool  # the stored node here disagrees with `hash`


class _Derivation:
    """Builds the tree leaf by leaf, comparing each complete node with the stored one."""

    def __init__(self, reader: StoreReader, report: Report) -> None:
        self._levels = {level: _Level(reader.nodes_at(level)) for level in reader.levels()}
        self._report = report
        self.stack: list[_Subtree] = []

    def stored(self, level: int, index: int) -> bytes | None:
        rows = self._levels.get(level)
        return rows.take(index) if rows is not None else None

    def push(self, index: int, attested: bytes, claimed: bytes) -> None:
        self.stack.append(_Subtree(0, index, attested, claimed, attested != claimed))
        while len(self.stack) >= 2 and self.stack[-1].level == self.stack[-2].level:
            right = self.stack.pop()
            left = self.stack.pop()
            level, node = left.level + 1, left.index // 2
            value = node_hash(left.hash, right.hash)
            claimed = (value if left.claimed == left.hash and right.claimed == right.hash
                       else node_hash(left.claimed, right.claimed))
            stored = self.stored(level, node)
            first = node << level
            if stored is None:
                self._report.findings.append(Finding(
                    f"tree node (level {level}, index {node}) is missing", first))
            elif stored != value and not (left.differs or right.differs):
                self._report.findings.append(Finding(
                    f"tree node (level {level}, index {node}) differs from the hash re-derived "
                    f"from leaves {first}..{first + (1 << level) - 1}", first))
            differs = left.differs or right.differs if stored is None else stored != value
            self.stack.append(_Subtree(level, node, value, claimed, differs))

    def roots(self) -> tuple[bytes, bytes]:
        """The root over every leaf pushed so far: from attested hashes, and as claimed."""
        attested, claimed = self.stack[-1].hash, self.stack[-1].claimed
        for subtree in reversed(self.stack[:-1]):
            attested = node_hash(subtree.hash, attested)
            claimed = node_hash(subtree.claimed, claimed)
        return attested, claimed

    def leftover(self) -> tuple[int, int] | None:
        """A stored node past the derived tree, as (level, index), if there is one."""
        for level, rows in sorted(self._levels.items()):
            if rows.head is not None:
                return level, rows.head[0]
        return None


def _leaf_hashes(leaf: StoredLeaf, node: bytes | None, report: Report) -> tuple[bytes, bytes]:
    """The leaf's hash as two of its three copies attest it, and as the stored tree holds it.

    Every copy that disagrees is a finding at the leaf's index.
    """
    i = leaf.leaf_index
    from_bytes = leaf_hash(leaf.data) if leaf.data is not None else None
    copies = [c for c in (from_bytes, leaf.leaf_hash, node) if c is not None]
    agreed = next((c for c in copies if copies.count(c) >= 2), None)
    attested = agreed or from_bytes or leaf.leaf_hash
    if from_bytes is None:
        report.findings.append(Finding(f"leaf {i} has no bytes", i))
    elif from_bytes != attested:
        report.findings.append(Finding(f"leaf {i}: its bytes do not match its hash", i))
    if leaf.leaf_hash != attested:
        report.findings.append(Finding(f"leaf {i}: its stored leaf hash is not the hash of its "
                                       f"bytes", i))
    if node is None:
        report.findings.append(Finding(f"tree node (level 0, index {i}) is missing", i))
    elif node != attested:
        report.findings.append(Finding(
            f"tree node (level 0, index {i}) differs from the hash of leaf {i}", i))
    if leaf.data is not None and from_bytes == attested:
        _check_labels(leaf, report)
    return attested, node if node is not None else attested


def _check_labels(leaf: StoredLeaf, report: Report) -> None:
    """The id, subject and type columns (a loan's timeline is read by them) match the bytes."""
    i = leaf.leaf_index
    try:
        event = json.loads(leaf.data or b"")
        labels = (event.get("id"), event.get("subject"), event.get("type"))
    except (ValueError, AttributeError, RecursionError):
        report.findings.append(Finding(f"leaf {i}: its bytes are not a CloudEvent", i))
        return
    if labels != (leaf.event_id, leaf.subject, leaf.event_type):
        report.findings.append(Finding(
            f"leaf {i}: its id, subject or type columns differ from its bytes", i))


def _check_root(derivation: _Derivation, checkpoints: list[Checkpoint], last_good: int,
                report: Report) -> int:
    """Compare the roots signed at this size; returns the new last size that matched.

    A mismatch is reported once per last matching size: later ones say nothing new.
    """
    size = checkpoints[0].size
    attested, claimed = derivation.roots()
    report.checkpoints_verified += sum(c.root == attested for c in checkpoints)
    if all(c.root == attested for c in checkpoints):
        report.latest = checkpoints[0]
        return size
    if all(c.root in (attested, claimed) for c in checkpoints):
        return size  # the stored tree still holds the signed leaf hashes: named leaf by leaf
    if not any(f.leaf_index == last_good and f.size is not None for f in report.findings):
        report.findings.append(Finding(
            f"the first {size} leaves do not hash to the root signed at size {size}; they were "
            f"rewritten, with every copy of their hashes, at or after index {last_good}, the "
            f"last size that still matches", last_good, size))
    return last_good


def _signed_checkpoints(reader: StoreReader, vkey: str, outside: Sequence[str],
                        report: Report) -> dict[int, list[Checkpoint]]:
    """Every checkpoint to check, by size: the store's (each re-verified) and those given.

    A size may hold two roots when the log has signed two different trees (after a rollback,
    say); both are kept, and the derived tree must match each.
    """
    signed: dict[int, list[Checkpoint]] = {}
    for size, root, note in reader.checkpoints():
        try:
            checkpoint = open_checkpoint(note, vkey)
        except VerificationError as error:
            report.findings.append(Finding(f"stored checkpoint {size}: {error}", size=size))
            continue
        if (checkpoint.size, checkpoint.root) != (size, root):
            report.findings.append(Finding(
                f"stored checkpoint {size}: its size or root column differs from its signed note",
                size=size))
        signed.setdefault(checkpoint.size, []).append(checkpoint)
    stored = set(signed)
    origin = decode_vkey(vkey)[0]
    for note in dict.fromkeys(outside):  # an announcement repeated after a restart counts once
        if note.split("\n", 1)[0] != origin:
            report.other_logs += 1  # another log's checkpoint, on a shared topic
            continue
        checkpoint = open_checkpoint(note, vkey)  # the caller's input: a bad one is an error
        known = signed.setdefault(checkpoint.size, [])
        if checkpoint.size not in stored:
            report.findings.append(Finding(
                f"checkpoint {checkpoint.size} was issued but is not in the store",
                size=checkpoint.size))
        elif all(c.root != checkpoint.root for c in known):
            report.findings.append(Finding(
                f"two checkpoints of size {checkpoint.size} signed with different roots",
                size=checkpoint.size))
        if all(c.root != checkpoint.root for c in known):
            known.append(checkpoint)
    return signed


def verify_store(reader: StoreReader, vkey: str, outside_notes: Sequence[str] = (),
                 progress: Progress | None = None) -> Report:
    """Re-derive the whole tree from `reader` and check it against every signed checkpoint.

    `outside_notes` are checkpoint notes kept apart from the store. Raises VerificationError
    when one of those does not verify under `vkey`; everything wrong with the store itself
    is a finding in the report.
    """
    report = Report()
    signed = _signed_checkpoints(reader, vkey, outside_notes, report)
    sizes = sorted(signed)
    pending = iter(sizes)
    next_size = next(pending, None)
    last_good = 0  # the largest size at which a signed root still matched
    derivation = _Derivation(reader, report)
    total = reader.leaf_rows()
    expected = 0
    gap = False
    for leaf in reader.leaves():
        if leaf.leaf_index < expected:
            report.findings.append(Finding(f"a leaf row has index {leaf.leaf_index}", 0))
            continue
        if leaf.leaf_index > expected:
            report.findings.append(Finding(
                f"leaves {expected}..{leaf.leaf_index - 1} are missing", expected))
            gap = True
            break
        attested, claimed = _leaf_hashes(leaf, derivation.stored(0, expected), report)
        derivation.push(expected, attested, claimed)
        expected += 1
        while next_size is not None and next_size <= expected:
            if next_size == expected:
                last_good = _check_root(derivation, signed[next_size], last_good, report)
            next_size = next(pending, None)
        if progress is not None and (expected % 4096 == 0 or expected == total):
            progress(expected, total)
    report.size = expected
    if next_size is not None:
        report.findings.append(Finding(
            f"checkpoints up to size {sizes[-1]} cannot be checked: "
            + (f"the leaves stop being contiguous at index {expected}" if gap else
               f"the log holds only {expected} leaves; those from index {expected} on are gone"),
            expected, sizes[-1]))
    if not gap:
        extra = derivation.leftover()
        if extra is not None:
            report.findings.append(Finding(
                f"tree node (level {extra[0]}, index {extra[1]}) lies past the log's "
                f"last leaf {expected - 1}: leaves were removed from the end", expected))
    orphan = reader.orphan_data()
    if orphan is not None:
        report.findings.append(Finding(
            f"leaf bytes at index {orphan} have no leaf row: leaves were removed", orphan))
    malformed = reader.malformed_nodes()
    if malformed:
        report.findings.append(Finding(f"{malformed} tree node rows are not (level, index, "
                                       f"hash) numbers and bytes"))
    for event_id, first, second in reader.repeated_event_ids():
        report.findings.append(Finding(
            f"leaf {second} repeats event {event_id} (first at leaf {first})", second))
    return report
