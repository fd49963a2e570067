"""Stored-node Merkle prover checked against a plain RFC 6962 recursion and the verifier."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from functools import cache

import pytest

from shared.tlog import EMPTY_ROOT, leaf_hash, verify_consistency, verify_inclusion

from services.audit.merkle import (
    MemoryNodes,
    MissingNodeError,
    NodeKey,
    NodeStore,
    consistency_proof,
    inclusion_proof,
    nodes_for_append,
    nodes_for_appends,
    root,
)

RFC_LEAVES = [
    bytes.fromhex(h)
    for h in [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
]
# Roots of every prefix of the RFC 6962 vector (as published with Trillian's test data).
RFC_PREFIX_ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
StoreCall = Callable[[NodeStore], object]
MAX_SIZE = 300
LEAVES = [f"event-{i}".encode() for i in range(MAX_SIZE)]


# --- independent reference: RFC 6962 section 2.1, written as literally as possible ---


def _k(n: int) -> int:
    """Largest power of two strictly less than n."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def _h(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def ref_mth(leaves: Sequence[bytes]) -> bytes:
    """MTH(D[n]) by the RFC recursion, uncached (for the small RFC vector)."""
    if not leaves:
        return _h(b"")
    if len(leaves) == 1:
        return _h(b"\x00" + leaves[0])
    k = _k(len(leaves))
    return _h(b"\x01" + ref_mth(leaves[:k]) + ref_mth(leaves[k:]))


@cache
def mth(lo: int, hi: int) -> bytes:
    """MTH(LEAVES[lo:hi]); cached so the full (m, n) grid stays fast."""
    if hi - lo == 1:
        return _h(b"\x00" + LEAVES[lo])
    k = _k(hi - lo)
    return _h(b"\x01" + mth(lo, lo + k) + mth(lo + k, hi))


def ref_path(m: int, lo: int, hi: int) -> list[bytes]:
    """PATH(m, LEAVES[lo:hi])."""
    n = hi - lo
    if n <= 1:
        return []
    k = _k(n)
    if m < k:
        return [*ref_path(m, lo, lo + k), mth(lo + k, hi)]
    return [*ref_path(m - k, lo + k, hi), mth(lo, lo + k)]


def ref_subproof(m: int, lo: int, hi: int, whole: bool) -> list[bytes]:
    """SUBPROOF(m, LEAVES[lo:hi], b)."""
    n = hi - lo
    if m == n:
        return [] if whole else [mth(lo, hi)]
    k = _k(n)
    if m <= k:
        return [*ref_subproof(m, lo, lo + k, whole), mth(lo + k, hi)]
    return [*ref_subproof(m - k, lo + k, hi, False), mth(lo, lo + k)]


# --- fixtures ---------------------------------------------------------------------------


def build_one_by_one(leaves: Sequence[bytes]) -> MemoryNodes:
    store = MemoryNodes()
    for size, data in enumerate(leaves):
        store.put(nodes_for_append(size, leaf_hash(data), store))
    return store


@pytest.fixture(scope="module")
def store() -> MemoryNodes:
    return build_one_by_one(LEAVES)


class CountingStore:
    """Wraps a store to count round trips, since each one is a database query."""

    def __init__(self, inner: MemoryNodes) -> None:
        self.inner = inner
        self.calls = 0
        self.keys = 0

    def get_nodes(self, keys: Sequence[NodeKey]) -> dict[NodeKey, bytes]:
        self.calls += 1
        self.keys += len(keys)
        return self.inner.get_nodes(keys)


# --- tests ------------------------------------------------------------------------------


def test_rfc6962_vector_root() -> None:
    store = build_one_by_one(RFC_LEAVES)
    assert root(8, store).hex() == RFC_PREFIX_ROOTS[-1]


@pytest.mark.parametrize("size", range(1, 9))
def test_rfc6962_vector_prefix_roots(size: int) -> None:
    store = build_one_by_one(RFC_LEAVES)
    assert ref_mth(RFC_LEAVES[:size]).hex() == RFC_PREFIX_ROOTS[size - 1]
    assert root(size, store).hex() == RFC_PREFIX_ROOTS[size - 1]


def test_empty_tree_root() -> None:
    assert root(0, MemoryNodes()) == EMPTY_ROOT == hashlib.sha256(b"").digest()


def test_roots_match_reference_for_every_size(store: MemoryNodes) -> None:
    for size in range(1, MAX_SIZE + 1):
        assert root(size, store) == mth(0, size), size


def test_inclusion_proofs_for_every_size_and_index(store: MemoryNodes) -> None:
    for size in range(1, MAX_SIZE + 1):
        tree_root = mth(0, size)
        for index in range(size):
            proof = inclusion_proof(index, size, store)
            assert proof == ref_path(index, 0, size), (index, size)
            verify_inclusion(leaf_hash(LEAVES[index]), index, size, proof, tree_root)


def test_consistency_proofs_for_every_pair(store: MemoryNodes) -> None:
    for second in range(1, MAX_SIZE + 1):
        second_root = mth(0, second)
        for first in range(1, second + 1):
            proof = consistency_proof(first, second, store)
            expected = ref_subproof(first, 0, second, True) if first < second else []
            assert proof == expected, (first, second)
            verify_consistency(first, second, mth(0, first), second_root, proof)


def test_consistency_from_empty_tree(store: MemoryNodes) -> None:
    assert consistency_proof(0, 17, store) == []
    verify_consistency(0, 17, EMPTY_ROOT, mth(0, 17), [])


@pytest.mark.parametrize("batch", [1, 2, 3, 7, 64, 100])
def test_batch_append_equals_one_by_one(store: MemoryNodes, batch: int) -> None:
    batched = MemoryNodes()
    for start in range(0, MAX_SIZE, batch):
        chunk = [leaf_hash(d) for d in LEAVES[start : start + batch]]
        batched.put(nodes_for_appends(start, chunk, batched))
    keys = [(level, i) for level in range(10) for i in range(MAX_SIZE >> level)]
    assert batched.get_nodes(keys) == store.get_nodes(keys)
    assert batched.size == MAX_SIZE


def test_batch_append_reads_only_needed_siblings(store: MemoryNodes) -> None:
    partial = build_one_by_one(LEAVES[:7])
    counting = CountingStore(partial)
    entries = nodes_for_appends(7, [leaf_hash(d) for d in LEAVES[7:13]], counting)
    assert counting.calls == 1 and counting.keys == 3  # (0,6), (1,2), (2,0)
    partial.put(entries)
    assert root(13, partial) == mth(0, 13)


def test_empty_batch_is_a_no_op() -> None:
    assert nodes_for_appends(5, [], build_one_by_one(LEAVES[:5])) == []


@pytest.mark.parametrize(
    "call",
    [
        lambda s: inclusion_proof(260, 261, s),
        lambda s: consistency_proof(5, 261, s),
        lambda s: root(261, s),
    ],
)
def test_each_proof_is_one_round_trip(store: MemoryNodes, call: StoreCall) -> None:
    counting = CountingStore(store)
    call(counting)
    assert counting.calls == 1
    assert counting.keys <= 2 * 9  # O(log n) nodes, never a scan


def test_proofs_pinned_to_old_size_survive_growth() -> None:
    grown = build_one_by_one(LEAVES[:40])
    before = inclusion_proof(3, 21, grown)
    grown.put(nodes_for_appends(40, [leaf_hash(d) for d in LEAVES[40:200]], grown))
    assert inclusion_proof(3, 21, grown) == before == ref_path(3, 0, 21)
    assert consistency_proof(21, 40, grown) == ref_subproof(21, 0, 40, True)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda s: inclusion_proof(5, 5, s), "outside"),
        (lambda s: inclusion_proof(-1, 5, s), "outside"),
        (lambda s: inclusion_proof(0, 0, s), "outside"),
        (lambda s: consistency_proof(6, 5, s), "exceeds"),
        (lambda s: consistency_proof(-1, 5, s), "negative"),
        (lambda s: root(-1, s), "negative"),
    ],
)
def test_out_of_range_arguments(store: MemoryNodes, call: StoreCall, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call(store)


def test_size_beyond_stored_tree_is_missing_nodes() -> None:
    small = build_one_by_one(LEAVES[:10])
    with pytest.raises(MissingNodeError):
        inclusion_proof(0, 11, small)
    with pytest.raises(MissingNodeError):
        root(12, small)


def test_memory_nodes_refuse_gaps_and_rewrites() -> None:
    nodes = MemoryNodes()
    nodes.put([((0, 0), b"a" * 32)])
    nodes.put([((0, 0), b"a" * 32)])  # identical rewrite is idempotent
    with pytest.raises(ValueError, match="immutable"):
        nodes.put([((0, 0), b"b" * 32)])
    with pytest.raises(ValueError, match="gap"):
        nodes.put([((0, 2), b"c" * 32)])


def test_roots_match_pymerkle() -> None:
    import pymerkle
    tree = pymerkle.InmemoryTree(algorithm="sha256")
    ours = MemoryNodes()
    for size, data in enumerate(RFC_LEAVES + LEAVES[:120]):
        tree.append_entry(data)
        ours.put(nodes_for_append(size, leaf_hash(data), ours))
        assert root(size + 1, ours) == tree.get_root(size + 1), size + 1


def test_first_proof_using_matches_the_proofs_actually_built() -> None:
    """For every size up to 70 and every stored node: the lowest leaf whose proof reads it."""
    from services.audit.merkle import first_proof_using

    for size in range(1, 71):
        reads: dict[NodeKey, int] = {}
        for m in range(size):
            recorder = KeyRecorder()
            inclusion_proof(m, size, recorder)
            for key in recorder.keys:
                reads.setdefault(key, m)
        for level in range(size.bit_length()):
            for index in range(size >> level):
                assert first_proof_using(level, index, size) == reads.get((level, index)), \
                    (size, level, index)


class KeyRecorder:
    """A NodeStore that answers every key with a dummy hash and remembers what was read."""

    def __init__(self) -> None:
        self.keys: list[NodeKey] = []

    def get_nodes(self, keys: Sequence[NodeKey]) -> dict[NodeKey, bytes]:
        self.keys.extend(keys)
        return dict.fromkeys(keys, b"\x00" * 32)
