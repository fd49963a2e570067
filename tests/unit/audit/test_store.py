"""The audit store's own contract: node reads are index searches, appends are exactly once."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from shared.tlog import leaf_hash

from services.audit.merkle import (
    MemoryNodes,
    consistency_proof,
    inclusion_proof,
    nodes_for_append,
    nodes_for_appends,
    root,
)
from services.audit.store import Committed, LogStore, NewLeaf, nodes_query


def leaf(i: int) -> NewLeaf:
    data = f'{{"id": "e{i}"}}'.encode()
    return NewLeaf(f"e{i}", "LN-1", "LoanOverdue", data, leaf_hash(data))


def test_node_reads_search_the_primary_key_and_never_scan(tmp_path: Path) -> None:
    store = LogStore(tmp_path / "audit.db")
    store.close()
    db = sqlite3.connect(tmp_path / "audit.db")
    plan = [row[3] for row in db.execute("EXPLAIN QUERY PLAN " + nodes_query(3),
                                         [0, 1, 1, 0, 2, 0])]
    assert any("SEARCH n USING PRIMARY KEY (level=? AND idx=?)" in step for step in plan), plan
    assert not any(step.startswith("SCAN n") for step in plan), plan


def test_get_nodes_returns_only_stored_keys_across_chunks(tmp_path: Path) -> None:
    store = LogStore(tmp_path / "audit.db")
    assert store.append_many([leaf(i) for i in range(1000)], ("p", 0)) == 1000
    keys = [(0, i) for i in range(0, 1200, 2)] + [(3, 5), (9, 1), (10, 0)]
    found = store.get_nodes(keys)
    assert set(found) == {key for key in keys if (key[1] + 1) << key[0] <= 1000}
    assert found[(0, 4)] == leaf(4).leaf_hash


def test_positions_and_event_ids_make_appends_exactly_once(tmp_path: Path) -> None:
    store = LogStore(tmp_path / "audit.db")
    assert store.append(leaf(0), ("p", 5))
    assert not store.append(leaf(1), ("p", 5))  # the same offset again
    assert not store.append(leaf(0), ("p", 6))  # the same event at a later offset
    assert store.position("p") == 6
    assert store.append_many([leaf(1), leaf(0), leaf(2)], ("q", 0)) == 2
    assert store.append_many([leaf(3)], ("q", 0)) == 0
    assert store.size == 3
    store.close()
    assert LogStore(tmp_path / "audit.db").size == 3


def test_proofs_from_the_sqlite_store_equal_those_from_memory(tmp_path: Path) -> None:
    """The prover over the service's store answers exactly as over the reference in memory."""
    store = LogStore(tmp_path / "audit.db")
    memory = MemoryNodes()
    for i in range(300):
        store.append(leaf(i), ("p", i))
        memory.put(nodes_for_append(i, leaf(i).leaf_hash, memory))
    for size in range(1, 301):
        assert root(size, store) == root(size, memory)
        for index in range(size):
            assert inclusion_proof(index, size, store) == inclusion_proof(index, size, memory)
            assert consistency_proof(index + 1, size, store) == \
                consistency_proof(index + 1, size, memory)


def test_upper_nodes_kept_in_memory_answer_as_the_store_while_the_tree_grows(
        tmp_path: Path) -> None:
    """Nodes from level 8 up are kept once read: proofs asked between batch appends, so they
    are kept while the tree is still growing, answer as the reference does at every size, and
    as a store that kept nothing."""
    store = LogStore(tmp_path / "audit.db")
    memory = MemoryNodes()
    size = 0
    for batch in (1, 255, 3, 509, 1024, 300, 70):
        leaves = [leaf(size + i) for i in range(batch)]
        assert store.append_many(leaves, ("p", size)) == batch
        memory.put(nodes_for_appends(size, [x.leaf_hash for x in leaves], memory))
        size += batch
        for probe in range(1, size + 1, 97):
            assert root(probe, store) == root(probe, memory)
            for index in range(0, probe, 131):
                assert inclusion_proof(index, probe, store) == \
                    inclusion_proof(index, probe, memory)
                assert consistency_proof(index + 1, probe, store) == \
                    consistency_proof(index + 1, probe, memory)
    store.close()
    fresh = LogStore(tmp_path / "audit.db")  # nothing kept yet: every node from the file
    assert [inclusion_proof(i, size, fresh) for i in range(0, size, 211)] == \
        [inclusion_proof(i, size, memory) for i in range(0, size, 211)]


def test_an_id_seen_again_with_other_bytes_is_named_and_not_appended(tmp_path: Path) -> None:
    store = LogStore(tmp_path / "audit.db")
    first = leaf(0)
    forged = NewLeaf(first.event_id, first.subject, first.event_type, b"other bytes",
                     leaf_hash(b"other bytes"))
    assert store.commit([first], [("p", 0)]).appended == (first.event_id,)
    again = store.commit([first, forged], [("p", 1)])
    assert again == Committed((), (first.event_id,))  # the exact repeat is not named
    assert store.size == 1
    store.close()


def test_a_store_from_before_rules_versions_has_its_verdicts_judged_again(
        tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    old = sqlite3.connect(path)
    old.executescript("""
        CREATE TABLE verdicts (loan_id TEXT PRIMARY KEY, tree_size INTEGER NOT NULL,
            pack TEXT NOT NULL, default_pack TEXT NOT NULL, rules TEXT NOT NULL) WITHOUT ROWID;
        CREATE TABLE verdicts_judged (default_pack TEXT PRIMARY KEY,
            tree_size INTEGER NOT NULL) WITHOUT ROWID;
        INSERT INTO verdicts VALUES ('LN-1', 3, 'cn', 'cn', '[]');
        INSERT INTO verdicts_judged VALUES ('cn', 3);
    """)
    old.commit()
    old.close()
    store = LogStore(path)
    stored = store.verdicts_of("LN-1")
    assert stored is not None and stored.rules_version == ""  # no rules have it: stale
    assert store.judged_to("cn", "") == 3 and store.judged_to("cn", "cn-2026.1/abc") == 0
    store.record_verdicts([], "cn", "cn-2026.1/abc", 2)
    assert store.judged_to("cn", "cn-2026.1/abc") == 2 and store.judged_to("cn", "") == 0
    store.close()
