"""Tamper tests on a real audit store: every injected change is caught at its first bad index.

The store is the service's own SQLite file, written through `LogStore` and signed through
`AuditLog`; each case edits a copy of it with plain SQL, as an insider with the file would.
"""

from __future__ import annotations

import base64
import json
import random
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from shared.tlog import (
    Checkpoint,
    VerificationError,
    encode_vkey,
    leaf_hash,
    open_checkpoint,
    verify_bundle,
    verify_inclusion,
)
from tests.unit.audit.logs import (
    EVERY,
    NOW,
    ORIGIN,
    OTHER_SKEY,
    SIZE,
    VKEY,
    event_bytes,
    grow,
    new_leaf,
    open_log,
)

from services.audit.merkle import (
    MemoryNodes,
    MissingNodeError,
    inclusion_proof,
    nodes_for_appends,
)
from services.audit.signer import generate_signer, load_signer, public_bytes, sign_note
from services.audit.store import LogStore, StoreReader
from services.audit.verify import Report, verify_store


@pytest.fixture(scope="module")
def original(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """A 300-leaf store with a signed checkpoint every 25 leaves, and every note it issued."""
    path = tmp_path_factory.mktemp("audit") / "audit.db"
    log = open_log(path)
    notes: list[str] = []
    grow(log, 0, SIZE, notes)
    log.store.close()
    return path, notes


@pytest.fixture
def copy(original: tuple[Path, list[str]], tmp_path: Path) -> Path:
    target = tmp_path / "audit.db"
    shutil.copyfile(original[0], target)
    return target


def check(path: Path, notes: list[str] = ()) -> Report:  # type: ignore[assignment]
    reader = StoreReader(path)
    try:
        return verify_store(reader, VKEY, notes)
    finally:
        reader.close()


@pytest.fixture
def sql(copy: Path) -> Iterator[sqlite3.Connection]:
    db = sqlite3.connect(copy, isolation_level=None)
    yield db
    db.close()


def flip(value: bytes, at: int = 0) -> bytes:
    return value[:at] + bytes([value[at] ^ 0x01]) + value[at + 1:]


def flip_column(db: sqlite3.Connection, table: str, column: str, where: str,
                args: tuple[int, ...], at: int = 0) -> None:
    (value,) = db.execute(f"SELECT {column} FROM {table} WHERE {where}", args).fetchone()
    db.execute(f"UPDATE {table} SET {column}=? WHERE {where}", (flip(bytes(value), at), *args))


# --- the untouched store ----------------------------------------------------------------


def test_untouched_store_verifies_against_every_checkpoint(
        original: tuple[Path, list[str]]) -> None:
    path, notes = original
    report = check(path, notes)
    assert report.ok, report.findings
    assert report.size == SIZE
    assert report.checkpoints_verified == SIZE // EVERY == len(notes)
    assert report.latest is not None and report.latest.size == SIZE


def test_batched_appends_build_the_same_store_as_single_ones(
        original: tuple[Path, list[str]], tmp_path: Path) -> None:
    log = open_log(tmp_path / "batched.db")
    for start in range(0, SIZE, 64):
        leaves = [new_leaf(event_bytes(i)) for i in range(start, min(start + 64, SIZE))]
        assert log.store.append_many(leaves + leaves[:1], ("kafka/inc/t/0", start)) == len(leaves)
    log.sign_checkpoint(NOW)
    assert log.store.append_many([new_leaf(event_bytes(0))], ("kafka/inc/t/0", SIZE)) == 0
    report = check(tmp_path / "batched.db", original[1][-1:])  # the same root at size 300
    assert report.ok, report.findings
    assert report.checkpoints_verified == 1
    query = "SELECT level, idx, hash FROM nodes ORDER BY level, idx"
    batched, single = (sqlite3.connect(p).execute(query).fetchall()
                       for p in (tmp_path / "batched.db", original[0]))
    assert batched == single and len(single) == 2 * SIZE - bin(SIZE).count("1")


# --- one change at a time: the report names the first bad index -----------------------------


def test_a_flipped_byte_in_a_leaf_is_caught_at_its_index(copy: Path,
                                                         sql: sqlite3.Connection) -> None:
    flip_column(sql, "leaf_data", "data", "leaf_index=?", (137,), at=40)
    report = check(copy)
    assert report.first_bad_index == 137
    assert "bytes do not match" in report.ordered()[0].problem


def test_a_leaf_edited_as_text_is_caught(copy: Path, sql: sqlite3.Connection) -> None:
    """SQL's replace() turns the blob into text; the edit is still found, not a crash."""
    sql.execute("UPDATE leaf_data SET data=replace(data, 'seq', 'SEQ') WHERE leaf_index=77")
    assert check(copy).first_bad_index == 77


def test_a_flipped_leaf_hash_is_caught(copy: Path, sql: sqlite3.Connection) -> None:
    flip_column(sql, "leaves", "leaf_hash", "leaf_index=?", (5,), at=31)
    assert check(copy).first_bad_index == 5


def lowest_unprovable(path: Path, notes: list[str]) -> int:
    """Independently of the verifier: the lowest leaf whose inclusion proof, as the service
    would serve it from this store, fails against the latest signed root (SIZE if none)."""
    root = open_checkpoint(notes[-1], VKEY).root
    store = LogStore(path)
    try:
        for m in range(SIZE):
            try:
                verify_inclusion(leaf_hash(event_bytes(m)), m, SIZE,
                                 inclusion_proof(m, SIZE, store), root)
            except (VerificationError, MissingNodeError):
                return m
        return SIZE
    finally:
        store.close()


@pytest.mark.parametrize(("level", "index"), [(0, 299), (0, 64), (3, 20), (5, 8), (8, 0)])
def test_a_flipped_tree_node_is_named_by_the_first_leaf_it_makes_unprovable(
        original: tuple[Path, list[str]], copy: Path, sql: sqlite3.Connection, level: int,
        index: int) -> None:
    """Leaves 0..255 prove themselves with node (5, 8), far after them: they are named."""
    flip_column(sql, "nodes", "hash", "level=? AND idx=?", (level, index))
    report = check(copy)
    assert report.first_bad_index == min(index << level, lowest_unprovable(copy, original[1]))
    assert f"level {level}, index {index}" in report.ordered()[0].problem


@pytest.mark.parametrize(("table", "column"),
                         [("leaves", "leaf_index"), ("leaf_data", "leaf_index")])
@pytest.mark.parametrize("index", [0, 151, SIZE - 1])
def test_a_deleted_leaf_row_is_caught(copy: Path, sql: sqlite3.Connection, table: str,
                                      column: str, index: int) -> None:
    sql.execute(f"DELETE FROM {table} WHERE {column}=?", (index,))
    assert check(copy).first_bad_index == index


def test_a_deleted_node_row_is_caught(copy: Path, sql: sqlite3.Connection) -> None:
    sql.execute("DELETE FROM nodes WHERE level=2 AND idx=30")
    report = check(copy)
    assert report.first_bad_index == 120
    assert "missing" in report.ordered()[0].problem


def truncate(db: sqlite3.Connection, keep: int) -> None:
    """Drop every leaf from `keep` on, with its bytes and every node that covers it."""
    db.execute("DELETE FROM leaves WHERE leaf_index >= ?", (keep,))
    db.execute("DELETE FROM leaf_data WHERE leaf_index >= ?", (keep,))
    db.execute("DELETE FROM nodes WHERE ((idx + 1) << level) > ?", (keep,))


def test_a_truncated_log_is_caught_by_its_own_checkpoints(copy: Path,
                                                          sql: sqlite3.Connection) -> None:
    """Leaves 250..259 remain, but no checkpoint that covers them can be checked any more."""
    truncate(sql, 260)
    report = check(copy)
    assert report.first_bad_index == 250
    assert any("leaves 250..259 are covered by no checkpoint" in f.problem
               and "only 260" in f.problem for f in report.findings)


def test_a_rewrite_before_a_truncation_is_not_hidden_by_it(copy: Path,
                                                           sql: sqlite3.Connection) -> None:
    forge(sql, 30)
    truncate(sql, 40)
    assert check(copy).first_bad_index == 25


def test_a_truncation_that_also_drops_checkpoints_needs_only_one_kept_outside(
        original: tuple[Path, list[str]], copy: Path, sql: sqlite3.Connection) -> None:
    truncate(sql, 260)
    sql.execute("DELETE FROM checkpoints WHERE tree_size > 260")
    last_announced = original[1][-1:]
    report = check(copy, last_announced)
    assert report.first_bad_index == 250


def test_a_store_rolled_back_to_an_earlier_copy_is_caught(tmp_path: Path) -> None:
    """The insider restores yesterday's file. Notes announced since then give it away."""
    path = tmp_path / "audit.db"
    log = open_log(path)
    announced: list[str] = []
    grow(log, 0, 200, announced)
    log.store.close()
    shutil.copyfile(path, tmp_path / "earlier.db")
    log = open_log(path)
    grow(log, 200, SIZE, announced)
    log.store.close()
    shutil.copyfile(tmp_path / "earlier.db", path)

    assert check(path).ok  # by itself, an earlier copy is a consistent log ...
    report = check(path, announced)  # ... which the announced checkpoints contradict
    assert report.first_bad_index == 200

    # The rolled-back log goes on, with other events in the place of the lost ones.
    log = open_log(path)
    grow(log, 200, SIZE + 20, [], loan="LN-OTHER")
    log.store.close()
    report = check(path, announced)
    assert report.first_bad_index == 200
    assert any("different roots" in f.problem for f in report.findings)


def forge(db: sqlite3.Connection, index: int, nodes_too: bool = True) -> None:
    """Rewrite leaf `index` as another event: bytes, hash, labels and (by default) every node."""
    forged = event_bytes(1000 + index, loan="LN-FORGED")
    event = json.loads(forged)
    db.execute("UPDATE leaf_data SET data=? WHERE leaf_index=?", (forged, index))
    db.execute("UPDATE leaves SET leaf_hash=?, event_id=?, subject=?, event_type=? "
               "WHERE leaf_index=?", (leaf_hash(forged), event["id"], event["subject"],
                                      event["type"], index))
    if nodes_too:
        hashes = [bytes(r[0]) for r in db.execute("SELECT leaf_hash FROM leaves "
                                                  "ORDER BY leaf_index")]
        db.execute("DELETE FROM nodes")
        db.executemany("INSERT INTO nodes (level, idx, hash) VALUES (?, ?, ?)",
                       [(lv, ix, h) for (lv, ix), h in nodes_for_appends(0, hashes, MemoryNodes())])


def test_a_consistently_rewritten_leaf_is_caught_between_two_checkpoints(
        copy: Path, sql: sqlite3.Connection) -> None:
    """Bytes, hash and every node rewritten to agree: only the signed roots object."""
    forge(sql, 213)
    report = check(copy)
    assert report.first_bad_index == 200  # the last checkpoint that still matches
    assert "at or after index 200" in report.ordered()[0].problem
    assert len(report.findings) == 1  # said once, not again at every later checkpoint


def test_a_leaf_rewritten_with_its_hash_but_not_its_tree_is_named_exactly(
        copy: Path, sql: sqlite3.Connection) -> None:
    forge(sql, 213, nodes_too=False)
    report = check(copy)
    assert report.first_bad_index == 213
    assert [f.problem for f in report.findings] == [
        "tree node (level 0, index 213) differs from the hash of leaf 213"]


def test_a_flipped_leaf_does_not_hide_a_forgery_before_it(copy: Path,
                                                          sql: sqlite3.Connection) -> None:
    forge(sql, 30)
    flip_column(sql, "leaf_data", "data", "leaf_index=?", (40,), at=9)
    report = check(copy)
    assert report.first_bad_index == 25
    assert any(f.leaf_index == 40 for f in report.findings)


@pytest.mark.parametrize("edit", ["UPDATE nodes SET hash=zeroblob(32) WHERE level=8 AND idx=0",
                                  "DELETE FROM nodes WHERE level=8 AND idx=0"])
def test_a_flipped_leaf_does_not_hide_a_changed_node_above_it(copy: Path, sql: sqlite3.Connection,
                                                              edit: str) -> None:
    sql.execute(edit)
    flip_column(sql, "leaf_data", "data", "leaf_index=?", (137,), at=9)
    report = check(copy)
    assert report.first_bad_index == 0
    assert {f.leaf_index for f in report.findings} == {0, 137}


def test_a_changed_node_above_a_changed_right_child_is_named(copy: Path,
                                                             sql: sqlite3.Connection) -> None:
    flip_column(sql, "nodes", "hash", "level=0 AND idx=?", (1,))
    sql.execute("UPDATE nodes SET hash=zeroblob(32) WHERE level=1 AND idx=0")
    report = check(copy)
    assert report.first_bad_index == 0
    assert {f.problem.split(" differs")[0] for f in report.findings} == {
        "tree node (level 0, index 1)", "tree node (level 1, index 0)"}


def test_an_unusable_latest_checkpoint_leaves_the_leaves_after_the_last_good_one_unproven(
        copy: Path, sql: sqlite3.Connection) -> None:
    sql.execute("UPDATE checkpoints SET note='broken' WHERE tree_size=300")
    forge(sql, 290)
    report = check(copy)
    assert report.first_bad_index == 275
    assert any("stored checkpoint 300 is unusable" in f.problem for f in report.findings)


def test_leaf_bytes_retyped_as_text_are_named(copy: Path, sql: sqlite3.Connection) -> None:
    sql.execute("UPDATE leaf_data SET data=CAST(data AS TEXT) WHERE leaf_index=12")
    report = check(copy)
    assert [(f.leaf_index, f.problem) for f in report.findings] == [
        (12, "leaf 12: its bytes are stored as text")]


def test_odd_rows_are_findings_not_crashes(copy: Path, sql: sqlite3.Connection) -> None:
    sql.execute("UPDATE nodes SET idx='x' WHERE level=0 AND idx=5")
    deep = b"[" * 100_000
    sql.execute("UPDATE leaf_data SET data=? WHERE leaf_index=7", (deep,))
    sql.execute("UPDATE leaves SET leaf_hash=? WHERE leaf_index=7", (leaf_hash(deep),))
    sql.execute("INSERT INTO leaves (leaf_index, event_id, subject, event_type, leaf_hash) "
                "VALUES (-1, 'x', 'LN-X', 'ReminderSent', zeroblob(32))")
    sql.execute("UPDATE checkpoints SET note=CAST(x'ff00' AS BLOB) WHERE tree_size=100")
    report = check(copy)
    problems = [f.problem for f in report.ordered()]
    assert report.first_bad_index == 5
    assert "tree node (level 0, index 5) is missing" in problems
    assert "leaf 7: its bytes are not a CloudEvent" in problems
    assert "2 rows have a position that is not a non-negative integer" in problems
    assert any(p.startswith("stored checkpoint 100:") for p in problems)



def test_swapped_leaves_are_caught_at_the_first(copy: Path, sql: sqlite3.Connection) -> None:
    a, b = (bytes(sql.execute("SELECT data FROM leaf_data WHERE leaf_index=?", (i,))
                  .fetchone()[0]) for i in (90, 91))
    sql.execute("UPDATE leaf_data SET data=? WHERE leaf_index=90", (b,))
    sql.execute("UPDATE leaf_data SET data=? WHERE leaf_index=91", (a,))
    assert check(copy).first_bad_index == 90


def test_a_leaf_moved_to_another_loan_is_caught(copy: Path, sql: sqlite3.Connection) -> None:
    sql.execute("UPDATE leaves SET subject='LN-0' WHERE leaf_index=44")
    report = check(copy)
    assert report.first_bad_index == 44
    assert "columns differ" in report.ordered()[0].problem


def test_a_checkpoint_row_resigned_by_another_key_is_caught(copy: Path,
                                                            sql: sqlite3.Connection) -> None:
    other = open_log(copy, OTHER_SKEY)
    (note,) = sql.execute("SELECT note FROM checkpoints WHERE tree_size=100").fetchone()
    body = note[:note.index("\n\n") + 1]
    sql.execute("UPDATE checkpoints SET note=? WHERE tree_size=100",
                (sign_note(body, ORIGIN, other.signer),))
    other.store.close()
    report = check(copy)
    assert [f.size for f in report.findings] == [100]
    assert "signature" in report.findings[0].problem


def test_outside_notes_of_another_log_are_skipped(original: tuple[Path, list[str]],
                                                  tmp_path: Path) -> None:
    skey, _ = generate_signer("another.lender/audit")
    name, signer = load_signer(skey)
    note = sign_note(Checkpoint(name, 5, leaf_hash(b"x")).body(), name, signer)
    report = check(original[0], [note, *original[1]])
    assert report.ok and report.other_logs == 1


def test_an_outside_note_that_does_not_verify_is_reported(original: tuple[Path, list[str]],
                                                         tmp_path: Path) -> None:
    """A forged announcement on the topic is a finding; it does not stop the check."""
    path = tmp_path / "other.db"
    notes: list[str] = []
    grow(open_log(path, OTHER_SKEY), 0, 3, notes)  # same origin, another key
    report = check(original[0], notes)
    other = encode_vkey(ORIGIN, public_bytes(load_signer(OTHER_SKEY)[1])).split("+")[1]
    assert [f.problem for f in report.findings] == [
        (f"a checkpoint given for this log does not verify under its key: note carries no "
         f"signature by {ORIGIN} with a key given (key ID {VKEY.split('+')[1]}); it is "
         f"signed by {ORIGIN}+{other}")]
    assert report.checkpoints_verified == SIZE // EVERY


# --- a sweep: random changes of every kind, all caught ---------------------------------------

Tamper = Callable[[sqlite3.Connection, int], int]


def _flip_data(db: sqlite3.Connection, i: int) -> int:
    flip_column(db, "leaf_data", "data", "leaf_index=?", (i,), at=i % 50)
    return i


def _flip_hash(db: sqlite3.Connection, i: int) -> int:
    flip_column(db, "leaves", "leaf_hash", "leaf_index=?", (i,), at=i % 32)
    return i


def _flip_node(db: sqlite3.Connection, i: int) -> int:
    level = i % 6
    index = i >> level
    if ((index + 1) << level) > SIZE:
        level, index = 0, i
    flip_column(db, "nodes", "hash", "level=? AND idx=?", (level, index), at=i % 32)
    return index << level


def _delete_leaf(db: sqlite3.Connection, i: int) -> int:
    db.execute("DELETE FROM leaves WHERE leaf_index=?", (i,))
    return i


def _delete_data(db: sqlite3.Connection, i: int) -> int:
    db.execute("DELETE FROM leaf_data WHERE leaf_index=?", (i,))
    return i


def _truncate(db: sqlite3.Connection, i: int) -> int:
    """Leaves from the last checkpoint at or before i on can no longer be proven."""
    truncate(db, i)
    return i // EVERY * EVERY


def _forge_leaf(db: sqlite3.Connection, i: int) -> int:
    forge(db, i, nodes_too=False)
    return i


def _forge_leaf_and_tree(db: sqlite3.Connection, i: int) -> int:
    """Only the signatures object: the index named is the last checkpoint at or before i."""
    forge(db, i)
    return i // EVERY * EVERY


SWEEP = [(tamper, index) for seed, tamper in enumerate(
    [_flip_data, _flip_hash, _flip_node, _delete_leaf, _delete_data, _truncate, _forge_leaf,
     _forge_leaf_and_tree])
    for index in random.Random(seed).sample(range(SIZE), 10)]


def test_every_injected_change_is_caught_at_its_first_bad_index(
        original: tuple[Path, list[str]], tmp_path: Path) -> None:
    caught = []
    for n, (tamper, index) in enumerate(SWEEP):
        path = tmp_path / f"case{n}.db"
        shutil.copyfile(original[0], path)
        db = sqlite3.connect(path, isolation_level=None)
        expected = tamper(db, index)
        db.close()
        if tamper is _flip_node:
            expected = min(expected, lowest_unprovable(path, original[1]))
        report = check(path)
        caught.append((tamper.__name__, index, report.first_bad_index == expected))
    missed = [case for case in caught if not case[2]]
    assert not missed, f"{len(missed)} of {len(caught)} not caught at their index: {missed}"
    assert len(caught) == 80


# --- the bundle verifier, where a change reaches a bundle ------------------------------------


def test_a_bundle_from_a_tampered_store_fails_at_the_changed_leaf(
        copy: Path, sql: sqlite3.Connection) -> None:
    loan = json.loads(event_bytes(150))["subject"]
    assert verify_bundle(open_log(copy).evidence(loan), VKEY).size == SIZE  # type: ignore[arg-type]
    flip_column(sql, "leaf_data", "data", "leaf_index=?", (150,), at=60)
    bundle = open_log(copy).evidence(loan)
    with pytest.raises(VerificationError) as raised:
        verify_bundle(bundle, VKEY)  # type: ignore[arg-type]
    assert raised.value.leaf_index == 150
    assert base64.b64decode(bundle["leaves"][0]["leaf"])  # type: ignore[index]


def test_a_bundle_whose_proof_crosses_a_changed_node_fails(copy: Path,
                                                           sql: sqlite3.Connection) -> None:
    loan = json.loads(event_bytes(150))["subject"]  # leaves 3, 10, 17, ... of one loan
    flip_column(sql, "nodes", "hash", "level=0 AND idx=?", (151,))  # leaf 150's sibling
    with pytest.raises(VerificationError) as raised:
        verify_bundle(open_log(copy).evidence(loan), VKEY)  # type: ignore[arg-type]
    assert raised.value.leaf_index == 150


# --- the command ----------------------------------------------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dunwell.cli", "audit", "verify-store", *args],
                          capture_output=True, text=True, timeout=120)


def test_command_passes_an_untouched_store(original: tuple[Path, list[str]],
                                           tmp_path: Path) -> None:
    key = tmp_path / "audit.vkey"
    key.write_text(VKEY + "\n")
    result = run_cli("--store", str(original[0]), "--key", str(key))
    assert result.returncode == 0, result.stderr
    assert f"OK: {SIZE} leaves re-derived; {SIZE // EVERY} checkpoints verified" in result.stdout


def test_command_fails_naming_the_first_bad_index(copy: Path, sql: sqlite3.Connection) -> None:
    flip_column(sql, "leaf_data", "data", "leaf_index=?", (222,), at=10)
    sql.execute("DELETE FROM nodes WHERE level=1 AND idx=140")
    result = run_cli("--store", str(copy), "--key", VKEY)
    assert result.returncode == 1
    assert "FAILED: 2 problems; first bad leaf index 222" in result.stderr


def test_command_reads_announcements_to_catch_a_rollback(
        original: tuple[Path, list[str]], copy: Path, sql: sqlite3.Connection,
        tmp_path: Path) -> None:
    truncate(sql, 175)
    sql.execute("DELETE FROM checkpoints WHERE tree_size > 175")
    announced = tmp_path / "announced.jsonl"
    announced.write_text("".join(json.dumps({"type": "CheckpointSigned", "data": {"note": n}})
                                 + "\n" for n in original[1]))
    assert run_cli("--store", str(copy), "--key", VKEY).returncode == 0
    result = run_cli("--store", str(copy), "--key", VKEY, "--checkpoints", str(announced))
    assert result.returncode == 1
    assert "first bad leaf index 175" in result.stderr


def test_command_on_a_cut_file_fails(copy: Path, tmp_path: Path) -> None:
    data = copy.read_bytes()
    copy.write_bytes(data[:len(data) // 2])
    result = run_cli("--store", str(copy), "--key", VKEY)
    assert result.returncode == 1
    assert "FAILED" in result.stderr


def test_commands_refuse_a_key_that_is_not_a_verifier_key(original: tuple[Path, list[str]],
                                                            tmp_path: Path) -> None:
    store = run_cli("--store", str(original[0]), "--key", "not-a-key")
    assert store.returncode == 2 and "--key: verifier key is malformed" in store.stderr
    (tmp_path / "bundle.json").write_text("{}")
    bundle = subprocess.run([sys.executable, "-m", "dunwell.cli", "verify",
                             str(tmp_path / "bundle.json"), "--key", "not-a-key"],
                            capture_output=True, text=True, timeout=60)
    assert bundle.returncode == 2 and "--key: verifier key is malformed" in bundle.stderr


def test_command_without_a_store_is_a_usage_error(tmp_path: Path) -> None:
    result = run_cli("--store", str(tmp_path / "none.db"), "--key", VKEY)
    assert result.returncode == 2
    assert "no audit store" in result.stderr


def test_the_verifier_runs_from_its_one_file_with_only_cryptography(
        original: tuple[Path, list[str]], tmp_path: Path) -> None:
    """What an auditor is handed: tlog.py alone; the project and its other packages are
    made unimportable in the verifying process."""
    shutil.copyfile(Path(__file__).parents[3] / "shared" / "tlog.py", tmp_path / "tlog.py")
    bundle = open_log(original[0]).evidence(json.loads(event_bytes(150))["subject"])
    (tmp_path / "bundle.json").write_text(json.dumps(bundle))
    tampered = json.loads(json.dumps(bundle))
    raw = bytearray(base64.b64decode(tampered["leaves"][2]["leaf"]))
    raw[5] ^= 0x20
    tampered["leaves"][2]["leaf"] = base64.b64encode(bytes(raw)).decode()
    (tmp_path / "tampered.json").write_text(json.dumps(tampered))
    blocked = ["shared", "services", "fastapi", "pydantic", "aiokafka", "eventsourcing",
               "httpx", "typer", "rich", "jwt", "uvicorn", "starlette"]

    def run(name: str) -> subprocess.CompletedProcess[str]:
        code = ("import runpy, sys\n"
                f"for name in {blocked!r}: sys.modules[name] = None\n"
                f"sys.argv = ['tlog.py', {name!r}, '--key', {VKEY!r}]\n"
                "runpy.run_path('tlog.py', run_name='__main__')\n")
        return subprocess.run([sys.executable, "-I", "-c", code], cwd=tmp_path,
                              capture_output=True, text=True, timeout=60)

    good, bad = run("bundle.json"), run("tampered.json")
    assert good.returncode == 0, good.stderr
    assert f"OK: {ORIGIN} size {SIZE} verified" in good.stdout
    assert bad.returncode == 1
    assert f"first failing leaf index {tampered['leaves'][2]['leaf_index']}" in bad.stderr


def test_keygen_makes_a_signer_whose_checkpoints_verify_and_never_overwrites_it(
        tmp_path: Path) -> None:
    command = [sys.executable, "-m", "dunwell.cli", "audit", "keygen", "--origin",
               "audit.lender.example/dunwell", "--out", str(tmp_path / "prod")]
    made = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    skey = (tmp_path / "prod.skey").read_text().strip()
    vkey = (tmp_path / "prod.vkey").read_text().strip()
    assert (tmp_path / "prod.skey").stat().st_mode & 0o777 == 0o600
    name, signer = load_signer(skey)
    note = sign_note(Checkpoint(name, 3, leaf_hash(b"x")).body(), name, signer)
    assert open_checkpoint(note, vkey).size == 3
    again = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert again.returncode == 2 and "not overwriting" in again.stderr
    assert (tmp_path / "prod.skey").read_text().strip() == skey
