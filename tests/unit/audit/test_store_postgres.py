"""The audit store on PostgreSQL keeps the SQLite store's contract: appends exactly once with
their position, the same tree and proofs, verdicts and dead letters kept beside the log, one
writer at a time, and `verify-store` finds an insider's edit at its first bad index."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from shared.store import DeadLetter
from shared.tlog import leaf_hash
from tests import pg
from tests.unit.audit.logs import EVERY, SIZE, VKEY, grow, open_log

from services.audit.merkle import MemoryNodes, consistency_proof, inclusion_proof, nodes_for_append
from services.audit.store import (
    Committed,
    LogStore,
    NewLeaf,
    PgConnection,
    StoreReader,
    Verdicts,
    Violation,
    ViolationQuery,
)
from services.audit.verify import Report, verify_store


def leaf(i: int) -> NewLeaf:
    data = f'{{"id": "e{i}"}}'.encode()
    return NewLeaf(f"e{i}", f"LN-{i % 3}", "LoanOverdue" if i % 2 else "CaseOpened", data,
                   leaf_hash(data))


@pytest.fixture
def url(postgres: pg.Cluster, pg_database: str) -> str:
    return postgres.url(pg_database)


@pytest.fixture
def store(url: str) -> Iterator[LogStore]:
    opened = LogStore(url)
    yield opened
    opened.close()


def test_appends_are_exactly_once_and_outlive_the_process(store: LogStore, url: str) -> None:
    assert store.postgres
    assert store.append(leaf(0), ("p", 5))
    assert not store.append(leaf(1), ("p", 5))  # the same offset again
    assert not store.append(leaf(0), ("p", 6))  # the same event at a later offset
    assert store.position("p") == 6
    assert store.append_many([leaf(1), leaf(0), leaf(2)], ("q", 0)) == 2
    assert store.size == 3
    forged = NewLeaf("e1", "LN-1", "LoanOverdue", b"other", leaf_hash(b"other"))
    assert store.commit([forged], [("q", 1)]) == Committed((), ("e1",))
    store.close()
    again = LogStore(url)
    try:
        assert again.size == 3
        assert [x.event_id for x in again.leaves_of("LN-1")] == ["e1"]
        assert [x.data for x in again.leaves_of("LN-0", "CaseOpened")] == [leaf(0).data]
        assert again.leaves_of("LN-0", "LoanOverdue") == []
    finally:
        again.close()


def test_the_tree_and_its_proofs_equal_the_reference_in_memory(store: LogStore) -> None:
    memory = MemoryNodes()
    for i in range(70):
        store.append(leaf(i), ("p", i))
        memory.put(nodes_for_append(i, leaf(i).leaf_hash, memory))
    keys = [(0, i) for i in range(0, 900, 2)] + [(3, 5), (6, 0), (7, 0)]
    assert store.get_nodes(keys) == memory.get_nodes(keys)
    for size in (1, 2, 7, 33, 64, 70):
        for index in range(0, size, 5):
            assert inclusion_proof(index, size, store) == inclusion_proof(index, size, memory)
            assert consistency_proof(index + 1, size, store) == \
                consistency_proof(index + 1, size, memory)


def test_verdicts_and_violations_are_kept_as_on_sqlite(store: LogStore,
                                                       tmp_path: Path) -> None:
    lite = LogStore(tmp_path / "audit.db")
    found = (Violation("LN-1", "C2", 4, "2026-03-02T09:00:00+00:00", 1_772_442_000_000_000,
                       "a second SMS in a day", None),
             Violation("LN-1", "C1", 3, "2026-03-02T23:00:00+00:00", 1_772_492_400_000_000,
                       "at 23:00 local", "lender-a"))
    for each in (store, lite):
        each.record_verdicts([Verdicts("LN-1", 5, "cn", "cn", [{"rule": "C1"}], found,
                                       "v1", ("lender-a",))], "cn", "v1", 5)
        each.record_verdicts([Verdicts("LN-1", 4, "cn", "cn", [], (), "v1")], "cn", "v1", 3)
        each.record_verdicts([Verdicts("LN-2", 6, "cn", "cn", [], found[1:], "v1")], "cn", "v1",
                             6)
    for query in (ViolationQuery(), ViolationQuery(rule="C1"), ViolationQuery(after=1),
                  ViolationQuery(lender_id="lender-a"),
                  ViolationQuery(since_us=1_772_442_000_000_001)):
        assert store.violations(query) == lite.violations(query)
    assert store.verdicts_of("LN-1") == lite.verdicts_of("LN-1")
    assert store.judged_to("cn", "v1") == lite.judged_to("cn", "v1") == 6
    assert store.readers_of(["lender-a", "nobody"]) == ["LN-1"]
    lite.close()


def test_dead_letters_are_kept_once_and_sent_once(store: LogStore) -> None:
    letter = DeadLetter("consumer/audit/0/3", "cases.events.dlq", b"k", b"\x00\xff", (("a", b"b"),))
    store.commit([], [("p", 0)], [letter, letter])
    store.record_dead_letters([DeadLetter("consumer/audit/0/4", "t.dlq", None, None, ())])
    assert store.unsent_dead_letters("consumer/", 10)[0] == letter
    store.mark_sent([letter.key])
    assert [x.key for x in store.unsent_dead_letters("consumer/", 10)] == ["consumer/audit/0/4"]


def test_a_second_writer_waits_for_the_first_to_close(store: LogStore, url: str) -> None:
    opened: list[LogStore] = []
    second = threading.Thread(target=lambda: opened.append(LogStore(url)))
    second.start()
    second.join(1.5)
    assert second.is_alive() and not opened  # held at the advisory lock
    store.append(leaf(0), ("p", 0))
    store.close()
    second.join(30)
    assert len(opened) == 1 and opened[0].size == 1
    opened[0].close()


def terminate(url: str, connection: object) -> None:
    """What a failover or an operator's pg_terminate_backend does to one session."""
    assert isinstance(connection, PgConnection)
    pid = connection.raw.info.backend_pid
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))


def test_a_writer_whose_session_is_lost_takes_the_lock_again_and_appends_once(
        store: LogStore, url: str) -> None:
    """The lost session took the writer's lock with it: the writer does not go on without it,
    and neither stalls for good nor logs the failed batch's leaves twice."""
    store.commit([leaf(0), leaf(1)], [("p", 1)])
    terminate(url, store._writer)  # the session under test
    with pytest.raises(psycopg.OperationalError):
        store.commit([leaf(2), leaf(3)], [("p", 3)])
    # Meanwhile a second writer may start: it gets the free lock, and the first waits for it.
    second = LogStore(url)
    retried: list[Committed] = []
    first = threading.Thread(target=lambda: retried.append(
        store.commit([leaf(2), leaf(3)], [("p", 3)])))
    first.start()
    first.join(1.5)
    assert first.is_alive() and not retried  # held at the advisory lock, not interleaving
    second.commit([leaf(2), leaf(4)], [("q", 0)])
    second.close()
    first.join(30)
    assert retried == [Committed(("e3",))]  # e2 is logged already, by the second writer
    assert store.size == 5 and store.position("p") == 3
    terminate(url, store._db)  # the readers' session
    with pytest.raises(psycopg.OperationalError):
        store.position("p")
    assert store.position("p") == 3  # the next read opens a session of its own
    reader = StoreReader(url)
    try:
        assert [stored.event_id for stored in reader.leaves()] == ["e0", "e1", "e2", "e4", "e3"]
    finally:
        reader.close()


@pytest.fixture
def grown(url: str) -> list[str]:
    log = open_log(url)
    notes: list[str] = []
    grow(log, 0, SIZE, notes)
    log.store.close()
    return notes


def check(url: str, notes: list[str] = ()) -> Report:  # type: ignore[assignment]
    reader = StoreReader(url)
    try:
        return verify_store(reader, VKEY, notes)
    finally:
        reader.close()


def test_verify_store_passes_on_an_untouched_store_and_equals_sqlite(
        url: str, grown: list[str], tmp_path: Path) -> None:
    report = check(url, grown)
    assert report.ok, report.findings
    assert report.size == SIZE and report.checkpoints_verified == SIZE // EVERY
    lite = open_log(tmp_path / "audit.db")
    grow(lite, 0, SIZE, [])
    lite.store.close()
    query = "SELECT level, idx, hash FROM nodes ORDER BY level, idx"
    with psycopg.connect(url) as conn:
        on_pg = [(level, idx, bytes(value)) for level, idx, value in conn.execute(query)]
    assert on_pg == sqlite3.connect(tmp_path / "audit.db").execute(query).fetchall()


@pytest.mark.parametrize(("edit", "index", "says"), [
    (("UPDATE leaf_data SET data = overlay(data placing '\\x00'::bytea from 41) "
     "WHERE leaf_index = 137"), 137, "bytes do not match"),
    (("UPDATE leaves SET leaf_hash = overlay(leaf_hash placing '\\xff'::bytea from 1) "
     "WHERE leaf_index = 42"), 42, ""),
    ("DELETE FROM leaf_data WHERE leaf_index = 250", 250, ""),
])
def test_an_insiders_edit_is_caught_at_its_first_bad_index(url: str, grown: list[str],
                                                          edit: str, index: int,
                                                          says: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(edit)
    report = check(url)
    assert not report.ok
    assert report.first_bad_index == index
    assert says in report.ordered()[0].problem


def test_the_verify_store_command_reads_a_postgresql_url(url: str, grown: list[str],
                                                         tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from dunwell.cli import app
    key = tmp_path / "audit.vkey"
    key.write_text(VKEY + "\n")
    passed = CliRunner().invoke(app, ["audit", "verify-store", "--key", str(key),
                                      "--store", url])
    assert passed.exit_code == 0, passed.output
    assert f"OK: {SIZE} leaves re-derived; {SIZE // EVERY} checkpoints verified" in passed.output
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DELETE FROM nodes WHERE level = 0 AND idx = 77")
    failed = CliRunner().invoke(app, ["audit", "verify-store", "--key", str(key),
                                      "--store", url])
    assert failed.exit_code == 1
    # Node 77 is gone: leaf 76 is the first whose proof needs it.
    assert "first bad leaf index 76" in failed.output
    assert "tree node (level 0, index 77) is missing" in failed.output
    missing = CliRunner().invoke(app, ["audit", "verify-store", "--key", str(key), "--store",
                                       url.rsplit("/", 1)[0] + "/no_such_database"])
    assert missing.exit_code == 1 and "cannot be read" in missing.output


SECRET = "S3cr3t-pw"


def test_a_database_url_that_is_refused_is_never_repeated_with_its_password(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each refusal goes to a log: the URL's password never goes with it."""
    from pydantic import ValidationError
    from typer.testing import CliRunner

    from dunwell.cli import app

    from services.audit.settings import Settings
    # psycopg quotes the token it cannot parse; here that token is the password.
    bad_escape = f"postgresql://dunwell:{SECRET}%zz@127.0.0.1:1/audit"
    for opening in (LogStore, StoreReader):
        with pytest.raises(psycopg.ProgrammingError) as refused:
            opening(bad_escape)
        assert SECRET not in str(refused.value) and "percent-encoded" in str(refused.value)
        assert refused.value.__cause__ is None and refused.value.__suppress_context__
    monkeypatch.setenv("AUDIT_DATABASE_URL", f"mysql://dunwell:{SECRET}@db/audit")
    with pytest.raises(ValidationError) as invalid:
        Settings()
    assert "must be a postgresql:// URL" in str(invalid.value)
    assert SECRET not in str(invalid.value)
    key = tmp_path / "audit.vkey"
    key.write_text(VKEY + "\n")
    other = CliRunner().invoke(app, ["audit", "verify-store", "--key", str(key),
                                     "--store", f"postgresq://dunwell:{SECRET}@db/audit"])
    assert other.exit_code == 2
    assert "postgresql:// URL" in other.output and SECRET not in other.output
