"""Prover side of the audit log: RFC 6962 roots and proofs from stored subtree nodes.

Node (level, index) is the hash of the complete, aligned subtree over leaves
[index * 2**level, (index + 1) * 2**level); level 0 holds leaf hashes. Only complete
subtrees are ever stored, so they never change once written, and every proof is
assembled from O(log n) of them fetched in one ``get_nodes`` round trip.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

from shared.tlog import EMPTY_ROOT, node_hash

NodeKey = tuple[int, int]
NodeEntry = tuple[NodeKey, bytes]


class NodeStore(Protocol):
    """Read access to stored complete-subtree hashes (a database in production)."""

    def get_nodes(self, keys: Sequence[NodeKey]) -> Mapping[NodeKey, bytes]:
        """Return the hashes of the keys that exist; missing keys are simply absent."""
        ...


class MissingNodeError(LookupError):
    """A needed node is not stored: the size is beyond the stored tree, or data is lost."""


# --- appends -------------------------------------------------------------------


def nodes_for_append(size: int, leaf_hash: bytes, store: NodeStore) -> list[NodeEntry]:
    """Nodes to store when one leaf is appended to a tree of `size` leaves."""
    _check_size(size)
    levels = _trailing_ones(size)
    keys = [(level, (size >> level) - 1) for level in range(levels)]
    found = _fetch(store, keys)
    entries: list[NodeEntry] = [((0, size), leaf_hash)]
    current = leaf_hash
    for level, key in enumerate(keys):
        current = node_hash(found[key], current)
        entries.append(((level + 1, size >> (level + 1)), current))
    return entries


def nodes_for_appends(size: int, leaf_hashes: Sequence[bytes], store: NodeStore) -> list[NodeEntry]:
    """Nodes to store for a batch append; reads only the left siblings the batch completes.

    Entries come level by level, indices ascending, so stores can append them in order.
    """
    _check_size(size)
    end = size + len(leaf_hashes)
    keys = _batch_sibling_keys(size, end)
    found = _fetch(store, keys)
    entries: list[NodeEntry] = [((0, size + i), h) for i, h in enumerate(leaf_hashes)]
    row, start, level = list(leaf_hashes), size, 0
    while (end >> (level + 1)) > (size >> (level + 1)):
        if start & 1:
            row.insert(0, found[(level, start - 1)])
            start -= 1
        row = [node_hash(row[i], row[i + 1]) for i in range(0, len(row) - 1, 2)]
        level, start = level + 1, start >> 1
        entries.extend(((level, start + i), h) for i, h in enumerate(row))
    return entries


def _batch_sibling_keys(size: int, end: int) -> list[NodeKey]:
    """List stored left siblings that new nodes of a batch append [size, end) combine with."""
    keys = []
    level = 0
    while (end >> (level + 1)) > (size >> (level + 1)):
        if (size >> level) & 1:
            keys.append((level, (size >> level) - 1))
        level += 1
    return keys


def _trailing_ones(value: int) -> int:
    """How many subtrees one append completes: the run of low one-bits in the size."""
    return (value ^ (value + 1)).bit_length() - 1


# --- roots and proofs -----------------------------------------------------------------


def root(size: int, store: NodeStore) -> bytes:
    """RFC 6962 root of the first `size` leaves (EMPTY_ROOT for 0)."""
    _check_size(size)
    if size == 0:
        return EMPTY_ROOT
    keys = _range_keys(0, size)
    return _fold(keys, _fetch(store, keys))


def inclusion_proof(index: int, size: int, store: NodeStore) -> list[bytes]:
    """RFC 6962 PATH(index, D[0:size]), leaf-side hash first."""
    _check_size(size)
    if not 0 <= index < size:
        raise ValueError(f"leaf index {index} is outside tree size {size}")
    return _assemble(_path_ranges(index, size), store)


def consistency_proof(first: int, second: int, store: NodeStore) -> list[bytes]:
    """RFC 6962 PROOF(first, D[0:second]); empty when first is 0 or equals second."""
    _check_size(first)
    _check_size(second)
    if first > second:
        raise ValueError(f"first size {first} exceeds second size {second}")
    if first == 0 or first == second:
        return []
    return _assemble(_subproof_ranges(first, second), store)


def first_proof_using(level: int, index: int, size: int) -> int | None:
    """The lowest leaf whose inclusion proof at `size` is built with stored node (level, index).

    A wrong node breaks the proofs that pass through it, often of leaves far before it: the
    whole left half of a tree proves itself with the pieces of the right half. None when no
    proof at that size uses the node.
    """
    first, end = index << level, (index + 1) << level
    if end > size:
        return None
    lo, hi = 0, size
    while hi - lo > 1:
        mid = lo + _split_point(hi - lo)
        if end <= mid:
            if (first, end) == (lo, mid):
                return mid  # the right half proves itself with the whole left half
            hi = mid
        else:
            if (level, index) in _range_keys(mid, hi):
                return lo  # the left half proves itself with the pieces of the right half
            lo = mid
    return None


def _path_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """Leaf ranges whose MTH form PATH(index), in RFC order (deepest first)."""
    ranges = []
    lo, hi = 0, size
    while hi - lo > 1:
        k = _split_point(hi - lo)
        if index < lo + k:
            ranges.append((lo + k, hi))
            hi = lo + k
        else:
            ranges.append((lo, lo + k))
            lo += k
    ranges.reverse()
    return ranges


def _subproof_ranges(first: int, second: int) -> list[tuple[int, int]]:
    """Leaf ranges whose MTH form SUBPROOF(first, D[0:second], true), deepest first."""
    ranges = []
    lo, hi, whole = 0, second, True
    while first != hi:
        k = _split_point(hi - lo)
        if first <= lo + k:
            ranges.append((lo + k, hi))
            hi = lo + k
        else:
            ranges.append((lo, lo + k))
            lo, whole = lo + k, False
    if not whole:
        ranges.append((lo, hi))
    ranges.reverse()
    return ranges


def _assemble(ranges: list[tuple[int, int]], store: NodeStore) -> list[bytes]:
    """MTH of each range from stored subtrees, fetched in a single get_nodes call."""
    per_range = [_range_keys(lo, hi) for lo, hi in ranges]
    wanted = list(dict.fromkeys(key for keys in per_range for key in keys))
    found = _fetch(store, wanted)
    return [_fold(keys, found) for keys in per_range]


def _range_keys(lo: int, hi: int) -> list[NodeKey]:
    """Complete aligned subtrees covering [lo, hi), largest first.

    Valid for the ranges RFC 6962 recursion produces: lo is aligned to the smallest
    power of two >= hi - lo, so the binary decomposition of the length is aligned.
    """
    keys = []
    offset, remaining = lo, hi - lo
    while remaining:
        level = remaining.bit_length() - 1
        keys.append((level, offset >> level))
        offset += 1 << level
        remaining -= 1 << level
    return keys


def _fold(keys: list[NodeKey], found: Mapping[NodeKey, bytes]) -> bytes:
    """Combine decreasing subtrees right to left, as MTH's left-balanced split does."""
    result = found[keys[-1]]
    for key in reversed(keys[:-1]):
        result = node_hash(found[key], result)
    return result


def _split_point(n: int) -> int:
    """Largest power of two strictly less than n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def _fetch(store: NodeStore, keys: list[NodeKey]) -> Mapping[NodeKey, bytes]:
    """One round trip to the store; any missing node is an error, never a guess."""
    if not keys:
        return {}
    found = store.get_nodes(keys)
    missing = [key for key in keys if key not in found]
    if missing:
        raise MissingNodeError(f"{len(missing)} tree nodes not stored, first {missing[0]}")
    return found


def _check_size(size: int) -> None:
    """Sizes are non-negative leaf counts."""
    if size < 0:
        raise ValueError(f"tree size {size} is negative")


# --- in-memory store ------------------------------------------------------------


class MemoryNodes:
    """Dict-free in-memory NodeStore: one list of hashes per level, append-only."""

    __slots__ = ("_levels",)

    def __init__(self) -> None:
        """Start empty; levels grow as complete subtrees are put."""
        self._levels: list[list[bytes]] = []

    def put(self, entries: Iterable[NodeEntry]) -> None:
        """Store entries in index order per level; rewriting a node differently fails."""
        levels = self._levels
        for (level, index), value in entries:
            while len(levels) <= level:
                levels.append([])
            row = levels[level]
            if index == len(row):
                row.append(value)
            elif index > len(row) or index < 0:
                raise ValueError(f"node ({level}, {index}) leaves a gap")
            elif row[index] != value:
                raise ValueError(f"node ({level}, {index}) is immutable")

    def get_nodes(self, keys: Sequence[NodeKey]) -> dict[NodeKey, bytes]:
        """Return the stored subset of `keys`."""
        levels = self._levels
        found = {}
        for level, index in keys:
            if level < len(levels) and 0 <= index < len(levels[level]):
                found[(level, index)] = levels[level][index]
        return found

    @property
    def size(self) -> int:
        """Number of leaves stored."""
        return len(self._levels[0]) if self._levels else 0
