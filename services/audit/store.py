"""The audit log's store: leaves in consumption order, their hashes, the tree's nodes, positions.

Leaf bytes live apart from leaf hashes, so a later erasure of one borrower's data leaves every
hash, node and proof intact. A leaf, its nodes and the Kafka position commit in one transaction.

Beside the log, and derived from it alone: each loan's compliance verdicts with the tree size
they cover and the version of the rules they were judged with, the violations they found, the
other subjects whose leaves they read (a lender's, for the strategy a visit request names), and
how far into the log verdicts have been judged (under one default pack and version of the
rules: another starts again from the first leaf). Dropping these tables loses nothing: they
are judged again from the leaves.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, cast
from urllib.parse import unquote, urlsplit

import psycopg

from shared.store import DeadLetter, decode_headers, encode_headers

from services.audit import merkle
from services.audit.compliance import RuleVerdict

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
CREATE TABLE IF NOT EXISTS verdicts (
    loan_id TEXT PRIMARY KEY,
    tree_size INTEGER NOT NULL,
    pack TEXT NOT NULL,
    default_pack TEXT NOT NULL,
    rules TEXT NOT NULL,
    rules_version TEXT NOT NULL DEFAULT ''
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS violations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    loan_id TEXT NOT NULL,
    rule TEXT NOT NULL,
    leaf_index INTEGER NOT NULL,
    time TEXT NOT NULL,
    at_us INTEGER NOT NULL,
    message TEXT NOT NULL,
    lender_id TEXT
);
CREATE INDEX IF NOT EXISTS violations_by_loan ON violations (loan_id);
CREATE INDEX IF NOT EXISTS violations_by_rule ON violations (rule, id);
CREATE INDEX IF NOT EXISTS violations_by_lender ON violations (lender_id, id);
CREATE TABLE IF NOT EXISTS verdict_reads (
    subject TEXT NOT NULL,
    loan_id TEXT NOT NULL,
    PRIMARY KEY (subject, loan_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS verdict_reads_by_loan ON verdict_reads (loan_id);
CREATE TABLE IF NOT EXISTS verdicts_judged (
    default_pack TEXT PRIMARY KEY,
    tree_size INTEGER NOT NULL,
    rules_version TEXT NOT NULL DEFAULT ''
) WITHOUT ROWID;
"""
# Columns added since the first stores: added to an older store when it is opened. Its rows get
# the empty version, which no rules have, so they are judged again.
ADDED_COLUMNS = (("verdicts", "rules_version", "TEXT NOT NULL DEFAULT ''"),
                 ("verdicts_judged", "rules_version", "TEXT NOT NULL DEFAULT ''"))

# The same tables on PostgreSQL: integers are BIGINT (microseconds and leaf indexes outgrow 32
# bits), bytes are BYTEA, and the rows SQLite orders by rowid carry a sequence.
PG_SCHEMA = [
    ("CREATE TABLE IF NOT EXISTS leaves (leaf_index BIGINT PRIMARY KEY, "
    "event_id TEXT NOT NULL UNIQUE, subject TEXT NOT NULL, event_type TEXT NOT NULL, "
    "leaf_hash BYTEA NOT NULL)"),
    "CREATE INDEX IF NOT EXISTS leaves_by_subject ON leaves (subject, leaf_index)",
    "CREATE TABLE IF NOT EXISTS leaf_data (leaf_index BIGINT PRIMARY KEY, data BYTEA NOT NULL)",
    ("CREATE TABLE IF NOT EXISTS nodes (level BIGINT NOT NULL, idx BIGINT NOT NULL, "
    "hash BYTEA NOT NULL, PRIMARY KEY (level, idx))"),
    ("CREATE TABLE IF NOT EXISTS checkpoints (tree_size BIGINT PRIMARY KEY, root BYTEA NOT NULL, "
    "note TEXT NOT NULL, signed_at TEXT NOT NULL)"),
    "CREATE TABLE IF NOT EXISTS positions (name TEXT PRIMARY KEY, position BIGINT NOT NULL)",
    ("CREATE TABLE IF NOT EXISTS dead_letters (seq BIGSERIAL, key TEXT PRIMARY KEY, "
    "topic TEXT NOT NULL, message_key BYTEA, value BYTEA, headers TEXT NOT NULL, "
    "sent INTEGER NOT NULL DEFAULT 0)"),
    ("CREATE TABLE IF NOT EXISTS verdicts (loan_id TEXT PRIMARY KEY, tree_size BIGINT NOT NULL, "
    "pack TEXT NOT NULL, default_pack TEXT NOT NULL, rules TEXT NOT NULL, "
    "rules_version TEXT NOT NULL DEFAULT '')"),
    ("CREATE TABLE IF NOT EXISTS violations (id BIGSERIAL PRIMARY KEY, loan_id TEXT NOT NULL, "
    "rule TEXT NOT NULL, leaf_index BIGINT NOT NULL, time TEXT NOT NULL, at_us BIGINT NOT NULL, "
    "message TEXT NOT NULL, lender_id TEXT)"),
    "CREATE INDEX IF NOT EXISTS violations_by_loan ON violations (loan_id)",
    "CREATE INDEX IF NOT EXISTS violations_by_rule ON violations (rule, id)",
    "CREATE INDEX IF NOT EXISTS violations_by_lender ON violations (lender_id, id)",
    ("CREATE TABLE IF NOT EXISTS verdict_reads (subject TEXT NOT NULL, loan_id TEXT NOT NULL, "
    "PRIMARY KEY (subject, loan_id))"),
    "CREATE INDEX IF NOT EXISTS verdict_reads_by_loan ON verdict_reads (loan_id)",
    ("CREATE TABLE IF NOT EXISTS verdicts_judged (default_pack TEXT PRIMARY KEY, "
    "tree_size BIGINT NOT NULL, rules_version TEXT NOT NULL DEFAULT '')"),
]
# One PostgreSQL database holds one audit log, appended by one writer: a second writer waits
# on this lock at start rather than interleaving leaf indexes.
PG_WRITER_LOCK = 0x64756E77656C6C  # "dunwell"


def is_database_url(where: object) -> bool:
    return isinstance(where, str) and where.startswith(("postgresql://", "postgres://"))


def connect(url: str, **options: Any) -> psycopg.Connection[Any]:
    """psycopg.connect, but a failure never repeats the URL's password: psycopg quotes a token
    it cannot parse (a bad percent-escape in the password, say), and the message is logged."""
    try:
        return psycopg.connect(url, **options)
    except psycopg.Error as error:
        message = str(error)
        try:
            password = urlsplit(url).password
        except ValueError:
            password = None
        if password:
            for form in {password, unquote(password)}:
                message = message.replace(form, "***")
        if message == str(error):
            raise
        raise type(error)(message) from None


class Connection(Protocol):
    """What the store asks of a connection: sqlite3's, or psycopg's behind `PgConnection`."""

    def execute(self, sql: str, parameters: Sequence[Any] = ..., /) -> Any: ...

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> Any: ...

    def close(self) -> None: ...


class PgConnection:
    """A psycopg connection that takes the store's SQL as written for sqlite3 ('?' marks).

    One whose session was lost (a restarted server, a terminated backend) fails the statement
    under way; the next one opens a new session, unless it is the writer's, which `LogStore`
    opens again itself (its lock went with the session).
    """

    def __init__(self, url: str, *, writer: bool = False) -> None:
        self.url, self.writer = url, writer
        self.raw = connect(url, autocommit=True)
        self._reopening = threading.Lock()  # API threads share the readers' connection

    @property
    def lost(self) -> bool:
        return self.raw.broken or self.raw.closed

    def reopen(self) -> None:
        self.raw.close()
        self.raw = connect(self.url, autocommit=True)

    def execute(self, sql: str, parameters: Sequence[Any] = ()) -> psycopg.Cursor[Any]:
        if self.lost and not self.writer:
            with self._reopening:
                if self.lost:
                    self.reopen()
        return self.raw.execute(sql.replace("?", "%s"), parameters)

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]]) -> None:
        rows = list(parameters)
        if rows:
            with self.raw.cursor() as cursor:
                cursor.executemany(sql.replace("?", "%s"), rows)

    def close(self) -> None:
        self.raw.close()


# A proof or an append reads one node a level. Those of the levels from CACHED_LEVEL up (one
# for every 256 leaves and fewer: 78 000 at 10 M leaves, about 20 MB) are kept in memory once
# read, at most CACHED_NODES of them, so a proof at 10 M leaves searches the store for its 8
# lowest nodes, not 24. A node is stored only once its subtree is complete, and this store
# reads only committed ones, so a kept node is never stale.
CACHED_LEVEL = 8
CACHED_NODES = 100_000


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


@dataclass(frozen=True)
class Violation:
    """One finding of a failed rule, placed at its leaf's event time."""

    loan_id: str
    rule: str
    leaf_index: int
    time: str
    at_us: int  # the time in microseconds since the epoch, for `since`
    message: str
    lender_id: str | None


@dataclass(frozen=True)
class Verdicts:
    """A loan's verdicts over its leaves with index below `tree_size`, and what they found."""

    loan_id: str
    tree_size: int
    pack: str
    default_pack: str  # the installation's pack they were judged under
    rules: list[RuleVerdict]
    violations: tuple[Violation, ...] = ()
    rules_version: str = ""  # compliance.rules_version(pack) when they were judged
    # Other subjects whose leaves they read (the lenders of the strategies its visit requests
    # name): a new leaf of one of them may change these verdicts.
    reads: tuple[str, ...] = ()


@dataclass(frozen=True)
class ViolationQuery:
    after: int = 0  # the id of the last violation already seen
    limit: int = 100
    since_us: int | None = None
    rule: str | None = None
    lender_id: str | None = None


class LogStore:
    """SQLite in the embedded default (one file), or a PostgreSQL database given by its URL;
    a single writer appends, in commit order.

    On PostgreSQL the writer has a connection of its own, and reads go over another: a read
    never sees a batch half written. The writer holds an advisory lock for its lifetime.
    """

    def __init__(self, where: Path | str) -> None:
        self.postgres = is_database_url(where)
        self._lock = threading.RLock()
        # Upper tree nodes, as read: a stored node is a complete subtree and never changes.
        self._upper: dict[tuple[int, int], bytes] = {}
        self._db: Connection
        self._writer: Connection
        if self.postgres:
            self._open_postgres(str(where))
        else:
            path = Path(where)
            path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.executescript(SCHEMA)
            for table, column, kind in ADDED_COLUMNS:
                if column not in {row[1] for row in db.execute(f"PRAGMA table_info({table})")}:
                    db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
            self._db = self._writer = db
        self._size = int(self._db.execute("SELECT COUNT(*) FROM leaves").fetchone()[0])

    def _open_postgres(self, url: str) -> None:
        writer = PgConnection(url, writer=True)
        try:
            writer.execute("SELECT pg_advisory_lock(?)", (PG_WRITER_LOCK,))
            with writer.raw.transaction():
                for statement in PG_SCHEMA:
                    writer.execute(statement)
            self._db = PgConnection(url)
        except BaseException:
            writer.close()
            raise
        self._writer = writer

    @contextmanager
    def _transaction(self) -> Iterator[Connection]:
        with self._lock:
            if isinstance(self._writer, PgConnection):
                if self._writer.lost:
                    self._take_over_again(self._writer)
                with self._writer.raw.transaction():
                    yield self._writer
                return
            self._writer.execute("BEGIN IMMEDIATE")
            try:
                yield self._writer
            except BaseException:
                self._writer.execute("ROLLBACK")
                raise
            self._writer.execute("COMMIT")

    def _take_over_again(self, writer: PgConnection) -> None:
        """The writer's session was lost, and its lock with it: another writer may have taken
        the lock and appended since. Wait for the lock again in a new session, then count the
        leaves afresh (a commit whose answer was lost may have been made): the batch that
        failed is consumed again from the stored positions, never appended twice."""
        writer.reopen()
        writer.execute("SELECT pg_advisory_lock(?)", (PG_WRITER_LOCK,))
        counted = writer.execute("SELECT COUNT(*) FROM leaves").fetchone()
        assert counted is not None
        self._size = int(counted[0])

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

    def checkpoint_from(self, size: int) -> tuple[int, str] | None:
        """The first checkpoint of at least `size` leaves (size, note); None past the latest."""
        row = self._db.execute("SELECT tree_size, note FROM checkpoints WHERE tree_size >= ? "
                               "ORDER BY tree_size LIMIT 1", (size,)).fetchone()
        return None if row is None else (int(row[0]), str(row[1]))

    def checkpoint_before(self, size: int) -> tuple[int, str] | None:
        """The last checkpoint of fewer than `size` leaves (size, note); None before the first."""
        row = self._db.execute("SELECT tree_size, note FROM checkpoints WHERE tree_size < ? "
                               "ORDER BY tree_size DESC LIMIT 1", (size,)).fetchone()
        return None if row is None else (int(row[0]), str(row[1]))

    def get_nodes(self, keys: Sequence[tuple[int, int]]) -> Mapping[tuple[int, int], bytes]:
        """The stored nodes among `keys`, in one query (an append or a proof asks once)."""
        if not keys:
            return {}
        found: dict[tuple[int, int], bytes] = {}
        wanted = []
        for key in dict.fromkeys(keys):
            cached = self._upper.get(key)
            if cached is None:
                wanted.append(key)
            else:
                found[key] = cached
        for start in range(0, len(wanted), 400):  # well under SQLite's bound-variable limit
            chunk = wanted[start:start + 400]
            if self.postgres:
                rows = self._db.execute(
                    "SELECT n.level, n.idx, n.hash FROM unnest(?::bigint[], ?::bigint[]) "
                    "AS k(level, idx) JOIN nodes n ON n.level = k.level AND n.idx = k.idx",
                    ([key[0] for key in chunk], [key[1] for key in chunk])).fetchall()
            else:
                rows = self._db.execute(nodes_query(len(chunk)),
                                        [value for key in chunk for value in key]).fetchall()
            for level, idx, value in rows:
                key = (int(level), int(idx))
                found[key] = bytes(value)
                if key[0] >= CACHED_LEVEL and len(self._upper) < CACHED_NODES:
                    self._upper[key] = found[key]
        return found

    def leaves_of(self, subject: str, event_type: str | None = None) -> list[Leaf]:
        """The subject's leaves in log order (only those of `event_type`, if given). Under the
        writer's lock: on this one connection a read in the middle of another thread's batch
        would see its leaves without their bytes."""
        query = ("SELECT l.leaf_index, l.event_id, l.event_type, d.data FROM leaves l "
                 "LEFT JOIN leaf_data d ON d.leaf_index = l.leaf_index WHERE l.subject=?")
        params = [subject]
        if event_type is not None:
            query += " AND l.event_type=?"
            params.append(event_type)
        with self._lock:
            rows = self._db.execute(query + " ORDER BY l.leaf_index", params).fetchall()
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
    def _insert_dead_letters(db: Connection, letters: Sequence[DeadLetter]) -> None:
        db.executemany("INSERT INTO dead_letters (key, topic, message_key, value, headers) "
                       "VALUES (?, ?, ?, ?, ?) ON CONFLICT (key) DO NOTHING",
                       [(letter.key, letter.topic, letter.message_key, letter.value,
                         encode_headers(letter.headers)) for letter in letters])

    def record_dead_letters(self, letters: Sequence[DeadLetter]) -> None:
        with self._transaction() as db:
            self._insert_dead_letters(db, letters)

    def unsent_dead_letters(self, prefix: str, limit: int) -> list[DeadLetter]:
        order = "seq" if self.postgres else "rowid"
        rows = self._db.execute("SELECT key, topic, message_key, value, headers FROM dead_letters"
                                f" WHERE sent=0 AND substr(key, 1, ?)=? ORDER BY {order} LIMIT ?",
                                (len(prefix), prefix, limit)).fetchall()
        return [DeadLetter(r[0], r[1], _blob(r[2]), _blob(r[3]), decode_headers(r[4]))
                for r in rows]

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

    # --- compliance verdicts: derived from the leaves, kept beside them ---

    def judged_to(self, default_pack: str, rules_version: str) -> int:
        """Verdicts under `default_pack` and this version of the rules are judged for every
        loan with a leaf below this (0 when the store was judged under others)."""
        row = self._db.execute("SELECT tree_size FROM verdicts_judged WHERE default_pack=? AND "
                               "rules_version=?", (default_pack, rules_version)).fetchone()
        return 0 if row is None else int(row[0])

    def subjects_between(self, start: int, end: int, skip_types: Sequence[str]) -> list[str]:
        """The subjects of leaves start..end-1, but for leaves of `skip_types`: a range of the
        primary key, so bounded by the leaves asked for, never the log."""
        marks = ",".join("?" * len(skip_types)) or "''"
        rows = self._db.execute(
            f"SELECT DISTINCT subject FROM leaves WHERE leaf_index >= ? AND leaf_index < ? "
            f"AND event_type NOT IN ({marks})", (start, end, *skip_types)).fetchall()
        return sorted(str(row[0]) for row in rows)

    def subjects_of_types_between(self, start: int, end: int,
                                  event_types: Sequence[str]) -> list[str]:
        """The subjects of the leaves of `event_types` among leaves start..end-1."""
        marks = ",".join("?" * len(event_types)) or "''"
        rows = self._db.execute(
            f"SELECT DISTINCT subject FROM leaves WHERE leaf_index >= ? AND leaf_index < ? "
            f"AND event_type IN ({marks})", (start, end, *event_types)).fetchall()
        return sorted(str(row[0]) for row in rows)

    def readers_of(self, subjects: Sequence[str]) -> list[str]:
        """The loans whose stored verdicts read leaves of any of `subjects`."""
        found: set[str] = set()
        for start in range(0, len(subjects), 500):
            chunk = list(subjects[start:start + 500])
            found.update(str(row[0]) for row in self._db.execute(
                "SELECT loan_id FROM verdict_reads WHERE subject IN ("
                + ",".join("?" * len(chunk)) + ")", chunk))
        return sorted(found)

    def verdicts_of(self, loan_id: str) -> Verdicts | None:
        row = self._db.execute("SELECT tree_size, pack, default_pack, rules, rules_version "
                               "FROM verdicts WHERE loan_id=?", (loan_id,)).fetchone()
        if row is None:
            return None
        return Verdicts(loan_id, int(row[0]), str(row[1]), str(row[2]),
                        cast(list[RuleVerdict], json.loads(row[3])), rules_version=str(row[4]))

    def record_verdicts(self, judged: Sequence[Verdicts], default_pack: str,
                        rules_version: str, judged_to: int) -> None:
        """Each loan's verdicts and violations, and how far the log is judged, at once.

        Verdicts judged alike (same default pack, same rules) never go back to a smaller tree;
        a violation found again keeps its id, so a reader paging by id never sees one twice,
        and one no longer found (under other rules, another default pack) is removed. How far
        the log is judged is kept for one default pack and version of the rules only: after a
        change of either, the log is judged again from its first leaf.
        """
        with self._transaction() as db:
            for verdicts in judged:
                row = db.execute("SELECT tree_size, default_pack, rules_version FROM verdicts "
                                 "WHERE loan_id=?", (verdicts.loan_id,)).fetchone()
                if row is not None and (row[1], row[2]) == (verdicts.default_pack,
                                                            verdicts.rules_version) \
                        and row[0] > verdicts.tree_size:
                    continue
                db.execute("INSERT INTO verdicts (loan_id, tree_size, pack, default_pack, rules,"
                           " rules_version) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(loan_id) DO "
                           "UPDATE SET tree_size=excluded.tree_size, pack=excluded.pack, "
                           "default_pack=excluded.default_pack, rules=excluded.rules, "
                           "rules_version=excluded.rules_version",
                           (verdicts.loan_id, verdicts.tree_size, verdicts.pack,
                            verdicts.default_pack, json.dumps(verdicts.rules),
                            verdicts.rules_version))
                self._replace_violations(db, verdicts.loan_id, verdicts.violations)
                db.execute("DELETE FROM verdict_reads WHERE loan_id=?", (verdicts.loan_id,))
                db.executemany("INSERT INTO verdict_reads (subject, loan_id) VALUES (?, ?) "
                               "ON CONFLICT DO NOTHING",
                               [(subject, verdicts.loan_id) for subject in verdicts.reads])
            db.execute("DELETE FROM verdicts_judged WHERE default_pack != ? OR rules_version != ?",
                       (default_pack, rules_version))
            db.execute("INSERT INTO verdicts_judged (default_pack, tree_size, rules_version) "
                       "VALUES (?, ?, ?) ON CONFLICT(default_pack) DO UPDATE SET tree_size=CASE "
                       "WHEN excluded.tree_size > verdicts_judged.tree_size THEN "
                       "excluded.tree_size ELSE verdicts_judged.tree_size END",
                       (default_pack, judged_to, rules_version))

    @staticmethod
    def _replace_violations(db: Connection, loan_id: str,
                            found: Sequence[Violation]) -> None:
        """The loan's violations become `found`: each one kept keeps its id but takes the
        lender as now known (a violation found before the loan's LoanOverdue gets its lender
        once that is logged)."""
        kept = {(str(r[1]), int(r[2]), str(r[3])): int(r[0]) for r in db.execute(
            "SELECT id, rule, leaf_index, message FROM violations WHERE loan_id=?", (loan_id,))}
        wanted = {(v.rule, v.leaf_index, v.message): v for v in found}
        db.executemany("DELETE FROM violations WHERE id=?",
                       [(row_id,) for key, row_id in kept.items() if key not in wanted])
        db.executemany("UPDATE violations SET lender_id=? WHERE id=? "
                       "AND lender_id IS DISTINCT FROM ?",
                       [(wanted[key].lender_id, row_id, wanted[key].lender_id)
                        for key, row_id in kept.items() if key in wanted])
        db.executemany(
            "INSERT INTO violations (loan_id, rule, leaf_index, time, at_us, message, lender_id)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(v.loan_id, v.rule, v.leaf_index, v.time, v.at_us, v.message, v.lender_id)
             for key, v in sorted(wanted.items(), key=lambda item: (item[0][1], item[0][0]))
             if key not in kept])

    def violations(self, query: ViolationQuery) -> list[tuple[int, Violation]]:
        """Violations after the id `query.after`, in id order (the order they were found)."""
        where: list[str] = ["id > ?"]
        params: list[int | str] = [query.after]
        for clause, value in (("at_us >= ?", query.since_us), ("rule = ?", query.rule),
                              ("lender_id = ?", query.lender_id)):
            if value is not None:
                where.append(clause)
                params.append(value)
        rows = self._db.execute(
            "SELECT id, loan_id, rule, leaf_index, time, at_us, message, lender_id FROM "
            f"violations WHERE {' AND '.join(where)} ORDER BY id LIMIT ?",
            (*params, query.limit)).fetchall()
        return [(int(r[0]), Violation(r[1], r[2], int(r[3]), r[4], int(r[5]), r[6], r[7]))
                for r in rows]

    def ping(self) -> int:
        return int(self._db.execute("SELECT 1").fetchone()[0])

    def close(self) -> None:
        self._db.close()
        if self._writer is not self._db:
            self._writer.close()  # and with its session, the writer's lock


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
    reads as of one moment. The file is opened read-only (on PostgreSQL, a read-only
    repeatable-read transaction): verifying never changes it. Rows are read as they are,
    whatever types an edit left in them (PostgreSQL's columns keep their types; SQLite's don't).
    """

    def __init__(self, where: Path | str) -> None:
        self._pg: psycopg.Connection[Any] | None = None
        self._scans = 0
        if is_database_url(where):
            self._pg = connect(str(where))
            self._pg.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            self._pg.read_only = True
            self._index, self._not_index, self._data_type = "{0} >= 0", "{0} < 0", "'blob'"
            self._pg.execute("SELECT COUNT(*) FROM leaves").fetchone()  # pins the snapshot
            return
        path = Path(where)
        self._index, self._not_index, self._data_type = _INDEX, _NOT_INDEX, "typeof(data)"
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

    def _execute(self, query: str, params: Sequence[Any] = ()) -> Any:
        if self._pg is not None:
            return self._pg.execute(query.replace("?", "%s"), params)
        return self._db.execute(query, params)

    def leaf_rows(self) -> int:
        return int(self._execute("SELECT COUNT(*) FROM leaves").fetchone()[0])

    def leaves(self) -> Iterator[StoredLeaf]:
        """Every leaf index found in any of the leaf row, the leaf bytes or node (0, i).

        Three scans in primary-key order, merged here: nothing is sorted or buffered.
        """
        rows = self._scan(f"SELECT leaf_index, event_id, subject, event_type, leaf_hash "
                          f"FROM leaves WHERE {self._index.format('leaf_index')} "
                          "ORDER BY leaf_index")
        data = self._scan(f"SELECT leaf_index, data, {self._data_type} FROM leaf_data "
                          f"WHERE {self._index.format('leaf_index')} ORDER BY leaf_index")
        nodes = self._scan(f"SELECT idx, hash FROM nodes WHERE level=0 AND "
                           f"{self._index.format('idx')} ORDER BY idx")
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
        return ((int(first), *rest) for first, *rest in self._stream(query))

    def _stream(self, query: str, params: Sequence[Any] = ()) -> Iterator[Any]:
        """A long scan's rows as the server sends them (PostgreSQL: a server-side cursor, so a
        big log is never held whole); in SQLite a cursor is already that."""
        if self._pg is None:
            yield from self._db.execute(query, params)
            return
        self._scans += 1
        with self._pg.cursor(name=f"scan{self._scans}") as cursor:
            cursor.itersize = 2000
            cursor.execute(query.replace("?", "%s"), params)
            yield from cursor

    def malformed_rows(self) -> int:
        """Rows whose position is not a non-negative integer: edits, never appends."""
        counts = [
            f"SELECT COUNT(*) FROM leaves WHERE {self._not_index.format('leaf_index')}",
            f"SELECT COUNT(*) FROM leaf_data WHERE {self._not_index.format('leaf_index')}",
            (f"SELECT COUNT(*) FROM nodes WHERE {self._not_index.format('level')} "
             f"OR {self._not_index.format('idx')}"),
            f"SELECT COUNT(*) FROM checkpoints WHERE {self._not_index.format('tree_size')}",
        ]
        return sum(int(self._execute(query).fetchone()[0]) for query in counts)

    def levels(self) -> list[int]:
        """Levels above the leaves that hold nodes."""
        return [int(r[0]) for r in self._execute(
            f"SELECT DISTINCT level FROM nodes WHERE {self._index.format('level')} "
            "AND level > 0 ORDER BY level")]

    def nodes_at(self, level: int) -> Iterator[tuple[int, bytes]]:
        cursor = self._stream(f"SELECT idx, hash FROM nodes WHERE level=? AND "
                              f"{self._index.format('idx')} ORDER BY idx", (level,))
        return ((int(idx), _blob(value) or b"") for idx, value in cursor)

    def checkpoints(self) -> list[tuple[object, bytes, str, object]]:
        """Every checkpoint row as (size column, root, note, signed_at), whatever the types:
        a row whose size was edited is still a signed note, and is checked as one."""
        rows = self._execute("SELECT tree_size, root, note, signed_at FROM checkpoints "
                             "ORDER BY tree_size").fetchall()
        return [(size, _blob(root) or b"", (_blob(note) or b"").decode("utf-8", "replace"),
                 signed_at) for size, root, note, signed_at in rows]

    def repeated_event_ids(self) -> list[tuple[str, int, int]]:
        """Event ids logged more than once: (id, first index, second index)."""
        repeated = []
        where = self._index.format("leaf_index")
        for event_id, first in self._execute(
                f"SELECT event_id, MIN(leaf_index) FROM leaves WHERE {where} GROUP BY event_id "
                "HAVING COUNT(*) > 1").fetchall():
            second = self._execute(f"SELECT MIN(leaf_index) FROM leaves WHERE event_id=? "
                                   f"AND leaf_index > ? AND {where}",
                                   (event_id, first)).fetchone()[0]
            repeated.append((str(event_id), int(first), int(second)))
        return sorted(repeated, key=lambda item: item[2])

    def close(self) -> None:
        if self._pg is not None:
            self._pg.close()
        else:
            self._db.close()


def _blob(value: object) -> bytes | None:
    """A column read as the bytes it holds, whatever type an edit may have left in it."""
    if value is None or isinstance(value, bytes):
        return value
    if isinstance(value, memoryview):
        return value.tobytes()
    return str(value).encode()
