"""The audit log's store: leaves in consumption order, their hashes, the tree's nodes, positions.

Leaf bytes live apart from leaf hashes, so a later erasure of one borrower's data leaves every
hash, node and proof intact. A leaf, its nodes and the Kafka position commit in one transaction.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from shared.store import DeadLetter, decode_headers, encode_headers

from services.audit import merkle

SCHEMA = """
CREATE TABLE IF NOT EXISTS leaves (
    leaf_index INTEGER PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    subject TEXT NOT NULL,
    event_type TEXT NOT NULL,
    leaf_hash BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS leaves_by_subject ON leaves (subject, leaf_index);
CREATE TABLE IF NOT EXISTS leaf_data (
    leaf_index INTEGER PRIMARY KEY,
    data BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS nodes (
    level INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    hash BLOB NOT NULL,
    PRIMARY KEY (level, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS checkpoints (
    tree_size INTEGER PRIMARY KEY,
    root BLOB NOT NULL,
    note TEXT NOT NULL,
    signed_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS positions (
    name TEXT PRIMARY KEY,
    position INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dead_letters (
    key TEXT PRIMARY KEY,
    topic TEXT NOT NULL,
    message_key BLOB,
    value BLOB,
    headers TEXT NOT NULL,
    sent INTEGER NOT NULL DEFAULT 0
);
"""


def nodes_query(count: int) -> str:
    """SELECT `count` nodes by key in one statement, each found by a primary-key search.

    The keys drive the join. (`(level, idx) IN (VALUES ...)` reads the same rows, but SQLite
    answers it by scanning the whole table: O(n) per append and per proof.)
    """
    return ("WITH k(level, idx) AS (VALUES " + ",".join("(?, ?)" for _ in range(count)) + ") "
            "SELECT n.level, n.idx, n.hash FROM k CROSS JOIN nodes n "
            "ON n.level = k.level AND n.idx = k.idx")


@dataclass(frozen=True)
class Leaf:
    leaf_index: int
    event_id: str
    event_type: str
    data: bytes | None


@dataclass(frozen=True)
class Committed:
    """What a commit appended (event ids, in order), and the repeats whose bytes differ."""

    appended: tuple[str, ...]
    conflicting: tuple[str, ...] = ()


@dataclass(frozen=True)
class NewLeaf:
    event_id: str
    subject: str
    event_type: str
    data: bytes
    leaf_hash: bytes


class LogStore:
    """SQLite in the embedded default (one file); a single writer appends, in commit order."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)
        self._lock = threading.RLock()
        self._size = int(self._db.execute("SELECT COUNT(*) FROM leaves").fetchone()[0])

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    @property
    def size(self) -> int:
        return self._size

    def position(self, name: str) -> int | None:
        row = self._db.execute("SELECT position FROM positions WHERE name=?", (name,)).fetchone()
        return None if row is None else int(row[0])

    def append(self, leaf: NewLeaf | None, position: tuple[str, int]) -> bool:
        """Append a leaf (unless its event id is already logged) and move the position.

        False when nothing was appended: a redelivered offset or an event already in the log.
        """
        return self.append_many([] if leaf is None else [leaf], position) > 0

    def record_checkpoint(self, size: int, root: bytes, note: str, signed_at: str) -> None:
        """Checkpoints only grow: a size at or below the latest is refused by the key."""
        with self._transaction() as db:
            latest = db.execute("SELECT MAX(tree_size) FROM checkpoints").fetchone()[0]
            if latest is not None and size <= latest:
                raise ValueError(f"checkpoint {size} is not past the latest ({latest})")
            db.execute("INSERT INTO checkpoints (tree_size, root, note, signed_at) "
                       "VALUES (?, ?, ?, ?)", (size, root, note, signed_at))

    def latest_checkpoint(self) -> tuple[int, str] | None:
        row = self._db.execute("SELECT tree_size, note FROM checkpoints "
                               "ORDER BY tree_size DESC LIMIT 1").fetchone()
        return None if row is None else (int(row[0]), str(row[1]))

    def checkpoint_signed_at(self, size: int) -> datetime:
        row = self._db.execute("SELECT signed_at FROM checkpoints WHERE tree_size=?",
                               (size,)).fetchone()
        return datetime.fromisoformat(row[0])

    def checkpoint_note(self, size: int) -> str | None:
        row = self._db.execute("SELECT note FROM checkpoints WHERE tree_size=?",
                               (size,)).fetchone()
        return None if row is None else str(row[0])

    def get_nodes(self, keys: Sequence[tuple[int, int]]) -> Mapping[tuple[int, int], bytes]:
        """The stored nodes among `keys`, in one query (an append or a proof asks once)."""
        if not keys:
            return {}
        wanted = list(dict.fromkeys(keys))
        found: dict[tuple[int, int], bytes] = {}
        for start in range(0, len(wanted), 400):  # well under SQLite's bound-variable limit
            chunk = wanted[start:start + 400]
            rows = self._db.execute(nodes_query(len(chunk)),
                                    [value for key in chunk for value in key]).fetchall()
            found.update({(int(level), int(idx)): bytes(value) for level, idx, value in rows})
        return found

    def leaves_of(self, subject: str) -> list[Leaf]:
        rows = self._db.execute(
            "SELECT l.leaf_index, l.event_id, l.event_type, d.data FROM leaves l "
            "LEFT JOIN leaf_data d ON d.leaf_index = l.leaf_index "
            "WHERE l.subject=? ORDER BY l.leaf_index", (subject,)).fetchall()
        return [Leaf(r[0], r[1], r[2], _blob(r[3])) for r in rows]

    def append_many(self, leaves: Sequence[NewLeaf], position: tuple[str, int]) -> int:
        """Append several leaves and move one position in one transaction; returns how many.

        Nothing happens when the position is already at or past this one. Leaves whose event
        id is already logged (or repeated within the batch) are skipped.
        """
        name, offset = position
        last = self.position(name)
        if last is not None and last >= offset:
            return 0
        return len(self.commit(leaves, [position]).appended)

    def commit(self, leaves: Sequence[NewLeaf], positions: Sequence[tuple[str, int]],
               dead_letters: Sequence[DeadLetter] = ()) -> Committed:
        """One consumed batch in one transaction: its new leaves, every partition's position
        and the dead letters. A leaf whose event id is logged already is not appended again;
        if its bytes differ from the logged ones, it is named in `conflicting`."""
        with self._transaction() as db:
            db.executemany("INSERT INTO positions (name, position) VALUES (?, ?) "
                           "ON CONFLICT(name) DO UPDATE SET position=excluded.position",
                           list(positions))
            self._insert_dead_letters(db, dead_letters)
            seen = self._logged([leaf.event_id for leaf in leaves])
            fresh, conflicting = [], []
            for leaf in leaves:
                if leaf.event_id not in seen:
                    seen[leaf.event_id] = leaf.leaf_hash
                    fresh.append(leaf)
                elif seen[leaf.event_id] != leaf.leaf_hash:
                    conflicting.append(leaf.event_id)
            if not fresh:
                return Committed((), tuple(conflicting))
            start = self._size
            db.executemany(
                "INSERT INTO leaves (leaf_index, event_id, subject, event_type, leaf_hash)"
                " VALUES (?, ?, ?, ?, ?)",
                [(start + i, leaf.event_id, leaf.subject, leaf.event_type, leaf.leaf_hash)
                 for i, leaf in enumerate(fresh)])
            db.executemany("INSERT INTO leaf_data (leaf_index, data) VALUES (?, ?)",
                           [(start + i, leaf.data) for i, leaf in enumerate(fresh)])
            entries = merkle.nodes_for_appends(start, [leaf.leaf_hash for leaf in fresh], self)
            db.executemany("INSERT INTO nodes (level, idx, hash) VALUES (?, ?, ?)",
                           [(level, idx, value) for (level, idx), value in entries])
        self._size = start + len(fresh)
        return Committed(tuple(leaf.event_id for leaf in fresh), tuple(conflicting))

    def set_position(self, name: str, position: int) -> None:
        with self._transaction() as db:
            db.execute("INSERT INTO positions (name, position) VALUES (?, ?) ON CONFLICT(name) "
                       "DO UPDATE SET position=excluded.position", (name, position))

    # --- dead letters: kept with the batch, sent after the commit ---

    @staticmethod
    def _insert_dead_letters(db: sqlite3.Connection, letters: Sequence[DeadLetter]) -> None:
        db.executemany("INSERT INTO dead_letters (key, topic, message_key, value, headers) "
                       "VALUES (?, ?, ?, ?, ?) ON CONFLICT (key) DO NOTHING",
                       [(letter.key, letter.topic, letter.message_key, letter.value,
                         encode_headers(letter.headers)) for letter in letters])

    def record_dead_letters(self, letters: Sequence[DeadLetter]) -> None:
        with self._transaction() as db:
            self._insert_dead_letters(db, letters)

    def unsent_dead_letters(self, prefix: str, limit: int) -> list[DeadLetter]:
        rows = self._db.execute("SELECT key, topic, message_key, value, headers FROM dead_letters"
                                " WHERE sent=0 AND substr(key, 1, ?)=? ORDER BY rowid LIMIT ?",
                                (len(prefix), prefix, limit)).fetchall()
        return [DeadLetter(r[0], r[1], r[2], r[3], decode_headers(r[4])) for r in rows]

    def mark_sent(self, keys: Sequence[str]) -> None:
        with self._transaction() as db:
            db.executemany("UPDATE dead_letters SET sent=1 WHERE key=?", [(k,) for k in keys])

    def _logged(self, event_ids: Sequence[str]) -> dict[str, bytes]:
        """Those of `event_ids` already in the log, with their leaf hashes."""
        found: dict[str, bytes] = {}
        for start in range(0, len(event_ids), 500):
            chunk = event_ids[start:start + 500]
            found.update((row[0], bytes(row[1])) for row in self._db.execute(
                "SELECT event_id, leaf_hash FROM leaves WHERE event_id IN ("
                + ",".join("?" * len(chunk)) + ")", chunk))
        return found

    def ping(self) -> int:
        return int(self._db.execute("SELECT 1").fetchone()[0])

    def close(self) -> None:
        self._db.close()


@dataclass(frozen=True)
class StoredLeaf:
    """Everything the store holds for one leaf index; any part may be missing after an edit."""

    leaf_index: int
    event_id: str | None  # None: no leaf row
    subject: str | None
    event_type: str | None
    leaf_hash: bytes | None
    data: bytes | None  # None: no leaf bytes
    data_is_blob: bool
    node: bytes | None  # tree node (0, leaf_index)


# Integer, non-negative positions only: anything else is an edit, counted apart.
_INDEX = "typeof({0})='integer' AND {0} >= 0"
_NOT_INDEX = "typeof({0})!='integer' OR {0} < 0"


class StoreReader:
    """A read-only snapshot of a log store, for re-deriving it from its rows.

    One read transaction spans every query, so a store the service is still appending to
    reads as of one moment. The file is opened read-only: verifying never changes it. Rows are
    read as they are, whatever types an edit left in them.
    """

    def __init__(self, path: Path) -> None:
        if not path.is_file():
            raise FileNotFoundError(f"no audit store at {path}")
        self._db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True,
                                   isolation_level=None, check_same_thread=False)
        # Edited text may not be UTF-8; it must then fail a check, not the reading.
        self._db.text_factory = lambda raw: raw.decode("utf-8", "replace")
        try:
            self._db.execute("BEGIN")
            self._db.execute("SELECT COUNT(*) FROM leaves").fetchone()  # pins the snapshot
        except sqlite3.DatabaseError:
            self._db.close()
            raise

    def leaf_rows(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM leaves").fetchone()[0])

    def leaves(self) -> Iterator[StoredLeaf]:
        """Every leaf index found in any of the leaf row, the leaf bytes or node (0, i).

        Three scans in primary-key order, merged here: nothing is sorted or buffered.
        """
        rows = self._scan(f"SELECT leaf_index, event_id, subject, event_type, leaf_hash "
                          f"FROM leaves WHERE {_INDEX.format('leaf_index')} ORDER BY leaf_index")
        data = self._scan(f"SELECT leaf_index, data, typeof(data) FROM leaf_data "
                          f"WHERE {_INDEX.format('leaf_index')} ORDER BY leaf_index")
        nodes = self._scan(f"SELECT idx, hash FROM nodes WHERE level=0 AND "
                           f"{_INDEX.format('idx')} ORDER BY idx")
        row, datum, node = next(rows, None), next(data, None), next(nodes, None)
        while row is not None or datum is not None or node is not None:
            index = min(head[0] for head in (row, datum, node) if head is not None)
            here_row = row if row is not None and row[0] == index else None
            here_data = datum if datum is not None and datum[0] == index else None
            here_node = node if node is not None and node[0] == index else None
            event_id, subject, event_type, leaf_hash = (
                (str(here_row[1]), str(here_row[2]), str(here_row[3]), _blob(here_row[4]))
                if here_row is not None else (None, None, None, None))
            yield StoredLeaf(
                index, event_id, subject, event_type, leaf_hash,
                data=_blob(here_data[1]) if here_data is not None else None,
                data_is_blob=here_data is None or here_data[2] == "blob",
                node=_blob(here_node[1]) if here_node is not None else None)
            if here_row is not None:
                row = next(rows, None)
            if here_data is not None:
                datum = next(data, None)
            if here_node is not None:
                node = next(nodes, None)

    def _scan(self, query: str) -> Iterator[tuple[Any, ...]]:
        return ((int(first), *rest) for first, *rest in self._db.execute(query))

    def malformed_rows(self) -> int:
        """Rows whose position is not a non-negative integer: edits, never appends."""
        counts = [
            f"SELECT COUNT(*) FROM leaves WHERE {_NOT_INDEX.format('leaf_index')}",
            f"SELECT COUNT(*) FROM leaf_data WHERE {_NOT_INDEX.format('leaf_index')}",
            (f"SELECT COUNT(*) FROM nodes WHERE {_NOT_INDEX.format('level')} "
             f"OR {_NOT_INDEX.format('idx')}"),
            f"SELECT COUNT(*) FROM checkpoints WHERE {_NOT_INDEX.format('tree_size')}",
        ]
        return sum(int(self._db.execute(query).fetchone()[0]) for query in counts)

    def levels(self) -> list[int]:
        """Levels above the leaves that hold nodes."""
        return [int(r[0]) for r in self._db.execute(
            f"SELECT DISTINCT level FROM nodes WHERE {_INDEX.format('level')} AND level > 0 "
            "ORDER BY level")]

    def nodes_at(self, level: int) -> Iterator[tuple[int, bytes]]:
        cursor = self._db.execute(f"SELECT idx, hash FROM nodes WHERE level=? AND "
                                  f"{_INDEX.format('idx')} ORDER BY idx", (level,))
        return ((int(idx), _blob(value) or b"") for idx, value in cursor)

    def checkpoints(self) -> list[tuple[object, bytes, str, object]]:
        """Every checkpoint row as (size column, root, note, signed_at), whatever the types:
        a row whose size was edited is still a signed note, and is checked as one."""
        rows = self._db.execute("SELECT tree_size, root, note, signed_at FROM checkpoints "
                                "ORDER BY tree_size").fetchall()
        return [(size, _blob(root) or b"", (_blob(note) or b"").decode("utf-8", "replace"),
                 signed_at) for size, root, note, signed_at in rows]

    def repeated_event_ids(self) -> list[tuple[str, int, int]]:
        """Event ids logged more than once: (id, first index, second index)."""
        repeated = []
        where = _INDEX.format("leaf_index")
        for event_id, first in self._db.execute(
                f"SELECT event_id, MIN(leaf_index) FROM leaves WHERE {where} GROUP BY event_id "
                "HAVING COUNT(*) > 1").fetchall():
            second = self._db.execute(f"SELECT MIN(leaf_index) FROM leaves WHERE event_id=? "
                                      f"AND leaf_index > ? AND {where}",
                                      (event_id, first)).fetchone()[0]
            repeated.append((str(event_id), int(first), int(second)))
        return sorted(repeated, key=lambda item: item[2])

    def close(self) -> None:
        self._db.close()


def _blob(value: object) -> bytes | None:
    """A column read as the bytes it holds, whatever type an edit may have left in it."""
    if value is None or isinstance(value, bytes):
        return value
    return str(value).encode()
