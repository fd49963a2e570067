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
from dataclasses import dataclass, field, replace
from datetime import datetime

from shared.tlog import (
    Checkpoint,
    Keys,
    VerificationError,
    decode_vkey,
    leaf_hash,
    node_hash,
    open_checkpoint,
    open_signed_checkpoint,
    trusted_keys,
)

from services.audit import merkle
from services.audit.store import StoredLeaf, StoreReader

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Finding:
    """One problem; `leaf_index` is the first leaf it makes untrustworthy (None: no leaf)."""

    problem: str
    leaf_index: int | None = None
    size: int | None = None
    node: tuple[int, int] | None = None  # a stored tree node that is wrong or missing


@dataclass
class Report:
    size: int = 0
    checkpoints_verified: int = 0
    latest: Checkpoint | None = None
    other_logs: int = 0  # checkpoints given that belong to another log, and were skipped
    tree_signed_up_to: int = 0  # level-0 nodes below this size are the signed leaf hashes
    findings: list[Finding] = field(default_factory=list)
    # How many stored checkpoints each key signed (vkey -> count): across a key rotation,
    # the retired keys' and the current one's.
    signed_by: dict[str, int] = field(default_factory=dict)

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
    hash: bytes  # derived from the leaves' attested hashes
    claimed: bytes  # derived from the leaf hashes the stored tree holds (its level-0 nodes)
    stored: bytes  # the stored node (the derived hash where it is missing)
    differs: bool  # the stored node disagrees with `hash`


class _Derivation:
    """Builds the tree leaf by leaf, comparing each complete node with the stored one."""

    def __init__(self, reader: StoreReader, report: Report) -> None:
        self._levels = {level: _Level(reader.nodes_at(level)) for level in reader.levels()}
        self._report = report
        self.stack: list[_Subtree] = []

    def push(self, index: int, attested: bytes, node: bytes | None) -> None:
        claimed = node if node is not None else attested
        self.stack.append(_Subtree(0, index, attested, claimed, claimed, claimed != attested))
        while len(self.stack) >= 2 and self.stack[-1].level == self.stack[-2].level:
            right = self.stack.pop()
            left = self.stack.pop()
            level, position = left.level + 1, left.index // 2
            value = node_hash(left.hash, right.hash)
            claimed = (value if left.claimed == left.hash and right.claimed == right.hash
                       else node_hash(left.claimed, right.claimed))
            rows = self._levels.get(level)
            stored = rows.take(position) if rows is not None else None
            first = position << level
            if stored is None:
                self._report.findings.append(Finding(
                    f"tree node (level {level}, index {position}) is missing", first,
                    node=(level, position)))
                stored, differs = value, left.differs or right.differs
            else:
                differs = stored != value
                inherited = ((left.differs or right.differs)
                             and stored == node_hash(left.stored, right.stored))
                if differs and not inherited:
                    self._report.findings.append(Finding(
                        f"tree node (level {level}, index {position}) differs from the hash "
                        f"re-derived from leaves {first}..{first + (1 << level) - 1}", first,
                        node=(level, position)))
            self.stack.append(_Subtree(level, position, value, claimed, stored, differs))

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


def _attested_hash(leaf: StoredLeaf, report: Report) -> bytes:
    """The leaf's hash as two of its three copies attest it (bytes, leaf row, node (0, i)).

    Every copy that is missing or disagrees is a finding at the leaf's index.
    """
    i = leaf.leaf_index
    from_bytes = leaf_hash(leaf.data) if leaf.data is not None else None
    copies = [c for c in (from_bytes, leaf.leaf_hash, leaf.node) if c is not None]
    agreed = next((c for c in copies if copies.count(c) >= 2), None)
    attested = agreed or from_bytes or leaf.leaf_hash or leaf.node or b""
    if from_bytes is None:
        report.findings.append(Finding(f"leaf {i} has no bytes", i))
    elif from_bytes != attested:
        report.findings.append(Finding(f"leaf {i}: its bytes do not match its hash", i))
    elif not leaf.data_is_blob:
        report.findings.append(Finding(f"leaf {i}: its bytes are stored as text", i))
    if leaf.event_id is None:
        report.findings.append(Finding(f"leaf {i} has no leaf row", i))
    elif leaf.leaf_hash != attested:
        report.findings.append(Finding(
            f"leaf {i}: its stored leaf hash is not the hash of its bytes", i))
    if leaf.node is None:
        report.findings.append(Finding(f"tree node (level 0, index {i}) is missing", i,
                                       node=(0, i)))
    elif leaf.node != attested:
        report.findings.append(Finding(
            f"tree node (level 0, index {i}) differs from the hash of leaf {i}", i, node=(0, i)))
    if leaf.data is not None and leaf.event_id is not None and from_bytes == attested:
        _check_labels(leaf, report)
    return attested


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
        # The stored tree still holds the signed leaf hashes: where a leaf's bytes and row
        # disagree with its node, the leaf was rewritten, not the node. Named leaf by leaf.
        report.tree_signed_up_to = size
        return size
    if not any(f.leaf_index == last_good and f.size is not None for f in report.findings):
        report.findings.append(Finding(
            f"the first {size} leaves do not hash to the root signed at size {size}; they were "
            f"rewritten, with every copy of their hashes, at or after index {last_good}, the "
            f"last size that still matches", last_good, size))
    return last_good


def _name_broken_proofs(report: Report, size: int) -> None:
    """A wrong node is named by the lowest leaf whose proof (at the latest size checked) it
    breaks, which may lie well before the leaves under it."""
    for n, finding in enumerate(report.findings):
        if finding.node is None or (finding.node[0] == 0
                                    and finding.node[1] < report.tree_signed_up_to):
            continue
        user = merkle.first_proof_using(*finding.node, size)
        if user is not None and user < (finding.leaf_index or 0):
            report.findings[n] = replace(
                finding, leaf_index=user,
                problem=f"{finding.problem}; the proof of leaf {user} at size {size} uses it")


def _is_time(value: object) -> bool:
    try:
        datetime.fromisoformat(str(value))
    except ValueError:
        return False
    return True


def _signed_checkpoints(reader: StoreReader, keys: Keys, outside: Sequence[str],
                        report: Report) -> tuple[dict[int, list[Checkpoint]], list[int]]:
    """Every checkpoint to check, by size: the store's (each re-verified) and those given;
    and the sizes of stored checkpoints that could not be used.

    A size may hold two roots when the log has signed two different trees (after a rollback,
    say); both are kept, and the derived tree must match each.
    """
    signed: dict[int, list[Checkpoint]] = {}
    unusable: list[int] = []

    def keep(checkpoint: Checkpoint) -> None:
        known = signed.setdefault(checkpoint.size, [])
        if all(c.root != checkpoint.root for c in known):
            known.append(checkpoint)

    for column, root, note, signed_at in reader.checkpoints():
        size = column if isinstance(column, int) and column >= 0 else None
        try:
            checkpoint, signers = open_signed_checkpoint(note, keys)
        except VerificationError as error:
            report.findings.append(Finding(f"stored checkpoint {column!r}: {error}", size=size))
            if size is not None:
                unusable.append(size)
            continue
        for signer in signers:
            report.signed_by[signer.vkey] = report.signed_by.get(signer.vkey, 0) + 1
        if (checkpoint.size, checkpoint.root) != (column, root):
            report.findings.append(Finding(
                f"stored checkpoint {column!r}: its size or root column differs from its signed "
                f"note (of size {checkpoint.size})", size=checkpoint.size))
            unusable.append(checkpoint.size if size is None else max(size, checkpoint.size))
        elif not _is_time(signed_at):
            report.findings.append(Finding(
                f"stored checkpoint {column!r}: its signed_at is not a time", size=size))
        keep(checkpoint)
    stored = {size: list(checkpoints) for size, checkpoints in signed.items()}
    origins = {decode_vkey(key.vkey)[0] for key in trusted_keys(keys)}
    for note in dict.fromkeys(outside):  # an announcement repeated after a restart counts once
        if note.split("\n", 1)[0] not in origins:
            report.other_logs += 1  # another log's checkpoint, on a shared topic
            continue
        try:
            checkpoint = open_checkpoint(note, keys)
        except VerificationError as error:
            report.findings.append(Finding(f"a checkpoint given for this log does not verify "
                                           f"under its key: {error}"))
            continue
        if checkpoint.size not in stored:
            report.findings.append(Finding(
                f"checkpoint {checkpoint.size} was issued but is not in the store",
                size=checkpoint.size))
        elif all(c.root != checkpoint.root for c in stored[checkpoint.size]):
            report.findings.append(Finding(
                f"two checkpoints of size {checkpoint.size} signed with different roots",
                size=checkpoint.size))
        keep(checkpoint)
    return signed, unusable


def verify_store(reader: StoreReader, vkey: Keys, outside_notes: Sequence[str] = (),
                 progress: Progress | None = None) -> Report:
    """Re-derive the whole tree from `reader` and check it against every signed checkpoint.

    `vkey` is the log's key, or after a key rotation its keys (the retired ones and the
    current one): every stored checkpoint must verify under one of them. `outside_notes` are
    checkpoint notes kept apart from the store. Raises VerificationError only when a key is
    not a verifier key; everything else is a finding in the report.
    """
    keys = trusted_keys(vkey)
    report = Report()
    signed, unusable = _signed_checkpoints(reader, keys, outside_notes, report)
    sizes = sorted(signed)
    pending = iter(sizes)
    next_size = next(pending, None)
    last_good = 0  # the largest size at which a signed root still matched
    derivation = _Derivation(reader, report)
    total = reader.leaf_rows()
    expected = 0
    gap = False
    for leaf in reader.leaves():
        if leaf.leaf_index > expected:
            report.findings.append(Finding(
                f"leaves {expected}..{leaf.leaf_index - 1} are missing (no row, bytes or node)",
                expected))
            gap = True
            break
        derivation.push(expected, _attested_hash(leaf, report), leaf.node)
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
            f"leaves {last_good}..{expected - 1} are covered by no checkpoint that can still be "
            f"checked: checkpoints up to size {sizes[-1]} need leaves that are "
            + ("not contiguous" if gap else f"gone (the log holds only {expected})"),
            last_good, sizes[-1]))
    elif any(size > last_good for size in unusable):
        report.findings.append(Finding(
            f"leaves from {last_good} on are covered by no checkpoint that can still be checked: "
            f"the stored checkpoint {max(unusable)} is unusable", last_good, max(unusable)))
    if not gap:
        extra = derivation.leftover()
        if extra is not None:
            report.findings.append(Finding(
                f"tree node (level {extra[0]}, index {extra[1]}) lies past the log's "
                f"last leaf {expected - 1}: leaves were removed from the end", expected))
    malformed = reader.malformed_rows()
    if malformed:
        report.findings.append(Finding(f"{malformed} rows have a position that is not a "
                                       f"non-negative integer"))
    _name_broken_proofs(report, max((n for n in sizes if n <= expected), default=expected))
    for event_id, first, second in reader.repeated_event_ids():
        report.findings.append(Finding(
            f"leaf {second} repeats event {event_id} (first at leaf {first})", second))
    return report
