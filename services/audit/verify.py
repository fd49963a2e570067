"""Re-derive the audit log from a store's rows and check it against every issued checkpoint.

An insider with write access to the store can change a leaf's bytes, its hash, a tree node, a
checkpoint row, or drop rows at the end. None of that can be made to agree with a checkpoint
signed earlier, so the check recomputes every leaf hash from the leaf's bytes, every node from
those hashes, every root at a checkpoint's size, and compares each with what the store holds
and what the checkpoints sign. A store rolled back to an earlier copy agrees with itself; only
a checkpoint kept outside it (the announcements on ``audit.checkpoints``, or notes an auditor
saved) exposes that, so those can be passed in as well.

One pass over the leaves and one ordered scan per tree level: memory stays O(log n).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from shared.tlog import Checkpoint, VerificationError, leaf_hash, node_hash, open_checkpoint

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
    hash: bytes
    taint: int | None  # first leaf below whose bytes disagree with the store, if any


class _Derivation:
    """Builds the tree leaf by leaf from recomputed hashes, comparing each complete node."""

    def __init__(self, reader: StoreReader, report: Report) -> None:
        self._levels = {level: _Level(reader.nodes_at(level)) for level in reader.levels()}
        self._report = report
        self.stack: list[_Subtree] = []

    def push(self, index: int, hashed: bytes, taint: int | None) -> None:
        self._compare(_Subtree(0, index, hashed, taint))
        while len(self.stack) >= 2 and self.stack[-1].level == self.stack[-2].level:
            right = self.stack.pop()
            left = self.stack.pop()
            taints = [t for t in (left.taint, right.taint) if t is not None]
            self._compare(_Subtree(left.level + 1, left.index // 2,
                                   node_hash(left.hash, right.hash),
                                   min(taints) if taints else None))

    def _compare(self, node: _Subtree) -> None:
        self.stack.append(node)
        level = self._levels.get(node.level)
        stored = level.take(node.index) if level is not None else None
        first = node.index << node.level
        if node.taint is not None:
            return  # the leaf below is already reported; its ancestors differ as a consequence
        if stored is None:
            self._report.findings.append(Finding(
                f"tree node (level {node.level}, index {node.index}) is missing", first))
        elif stored != node.hash:
            self._report.findings.append(Finding(
                f"tree node (level {node.level}, index {node.index}) differs from the hash "
                f"re-derived from leaves {first}..{first + (1 << node.level) - 1}", first))

    def root(self) -> tuple[bytes, int | None]:
        """The root over every leaf pushed so far, and the first tainted leaf under it."""
        result = self.stack[-1].hash
        for subtree in reversed(self.stack[:-1]):
            result = node_hash(subtree.hash, result)
        taints = [s.taint for s in self.stack if s.taint is not None]
        return result, (min(taints) if taints else None)

    def leftover(self) -> tuple[int, int] | None:
        """A stored node past the derived tree, as (level, index), if there is one."""
        for level, rows in sorted(self._levels.items()):
            if rows.head is not None:
                return level, rows.head[0]
        return None


def _check_leaf(leaf: StoredLeaf, report: Report) -> tuple[bytes, int | None]:
    """The leaf's hash recomputed from its bytes, and its index if anything about it is off."""
    i = leaf.leaf_index
    if leaf.data is None:
        report.findings.append(Finding(f"leaf {i} has no bytes", i))
        return leaf.leaf_hash, i
    hashed = leaf_hash(leaf.data)
    if hashed != leaf.leaf_hash:
        report.findings.append(Finding(f"leaf {i}: its bytes do not match its stored hash", i))
        return hashed, i
    try:
        event = json.loads(leaf.data)
        labels = (event.get("id"), event.get("subject"), event.get("type"))
    except (ValueError, AttributeError):
        report.findings.append(Finding(f"leaf {i}: its bytes are not a CloudEvent", i))
        return hashed, i
    if labels != (leaf.event_id, leaf.subject, leaf.event_type):
        report.findings.append(Finding(
            f"leaf {i}: its id, subject or type columns differ from its bytes", i))
    return hashed, None


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
    for note in dict.fromkeys(outside):  # an announcement repeated after a restart counts once
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
    last_good = 0
    derivation = _Derivation(reader, report)
    total = reader.leaf_rows()
    expected = 0
    stopped_at: int | None = None
    for leaf in reader.leaves():
        if leaf.leaf_index != expected:
            report.findings.append(Finding(
                f"leaves {expected}..{leaf.leaf_index - 1} are missing", expected))
            stopped_at = expected
            break
        hashed, taint = _check_leaf(leaf, report)
        derivation.push(leaf.leaf_index, hashed, taint)
        expected += 1
        while next_size is not None and next_size <= expected:
            if next_size == expected:
                root, taint = derivation.root()
                matching = [c for c in signed[next_size] if c.root == root]
                report.checkpoints_verified += len(matching)
                if len(matching) == len(signed[next_size]):
                    last_good = next_size
                    report.latest = matching[0]
                elif taint is None:
                    report.findings.append(Finding(
                        f"the first {next_size} leaves do not hash to the root signed at size "
                        f"{next_size}; they were rewritten at or after index {last_good}, the "
                        f"last size that still matches", last_good, next_size))
            next_size = next(pending, None)
        if progress is not None and (expected % 4096 == 0 or expected == total):
            progress(expected, total)
    report.size = expected
    if next_size is not None:
        report.findings.append(Finding(
            f"checkpoint {sizes[-1]} was signed over {sizes[-1]} leaves, but the log holds "
            f"only {expected}: leaves from index {expected} on are gone", expected,
            sizes[-1]))
    if stopped_at is None:
        extra = derivation.leftover()
        if extra is not None:
            report.findings.append(Finding(
                f"tree node (level {extra[0]}, index {extra[1]}) lies past the log's "
                f"last leaf {expected - 1}: leaves were removed from the end", expected))
        orphan = reader.orphan_data()
        if orphan is not None:
            report.findings.append(Finding(
                f"leaf bytes at index {orphan} have no leaf: leaves were removed", orphan))
    for event_id, first, second in reader.repeated_event_ids():
        report.findings.append(Finding(
            f"leaf {second} repeats event {event_id} (first at leaf {first})", second))
    return report
