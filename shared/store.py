"""What a service's store keeps beside its events: the inbox, the agenda, the listing and the
dead letters.

Each is a table of the service's own store (SQLite file, PostgreSQL database, or memory in
tests), written by the same transaction as the events of a unit of work: the eventsourcing
process recorder is extended, not worked around. `ServiceApplication` picks the class that
fits its persistence module.

- inbox: one row per consumed event id. Before a batch is handled, the ids already here are
  found in one query, so a redelivered event changes nothing.
- agenda: one row per aggregate that has something due, with its due time (indexed). Rows
  are claimed for a lease by one replica at a time and fired; a save replaces the row.
- listing: one row per aggregate that wants to be found by its owner (a lender's cases), with
  a sort key and a few facets to filter on, so a page of them is read without the log.
- dead letters: a message the consumer could not apply (or a stored event the relay could not
  map), kept with its reason until it has been sent to the dead-letter topic.
"""

from __future__ import annotations

import base64
import json
import re
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol
from uuid import UUID

from eventsourcing.persistence import IntegrityError, StoredEvent, Tracking
from eventsourcing.popo import POPOProcessRecorder
from eventsourcing.postgres import PostgresDatastore, PostgresProcessRecorder
from eventsourcing.sqlite import SQLiteCursor, SQLiteProcessRecorder
from psycopg import Cursor
from psycopg.rows import DictRow
from psycopg.sql import SQL

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def micros(moment: datetime) -> int:
    """A moment as whole microseconds since the epoch: exact, and ordered as numbers."""
    if moment.tzinfo is None:
        raise ValueError("an agenda time must be timezone-aware")
    delta = moment - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


@dataclass(frozen=True)
class AgendaEntry:
    """`aggregate_id` has something due at `due` (None: nothing any more)."""

    aggregate_id: UUID
    kind: str
    due: datetime | None


Facet = str | int | bool | None
# A facet's name goes into a JSON path: plain identifiers only, so nothing can be injected.
FACET_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


def _facet_name(name: str) -> str:
    if FACET_NAME.fullmatch(name) is None:
        raise ValueError(f"a facet name must be a plain identifier, not {name!r}")
    return name


@dataclass(frozen=True)
class Listing:
    """How an aggregate is found: under `owner`, sorted by `key` within its `kind`, with small
    `facets` to filter on and to report. Checked here, so a bad one fails before the write."""

    kind: str
    owner: str
    key: str
    facets: dict[str, Facet]

    def __post_init__(self) -> None:
        for name, value in self.facets.items():
            _facet_name(name)
            if value is not None and not isinstance(value, str | int):
                raise ValueError(f"facet {name} must be a str, int, bool or None, "
                                 f"not {type(value).__name__}")

    def encoded(self) -> str:
        return json.dumps(self.facets, sort_keys=True, separators=(",", ":"))


# (facet, JSON type, value): a filter on a facet compares its JSON type too, so True is not 1
# and "1" is not 1, in SQLite (where json_extract gives 1 for true) as in memory.
def _facet_tests(where: dict[str, str | int | bool]) -> list[tuple[str, str, str | int]]:
    tests: list[tuple[str, str, str | int]] = []
    for name, value in where.items():
        if isinstance(value, bool):
            tests.append((_facet_name(name), "true" if value else "false", int(value)))
        elif isinstance(value, int):
            tests.append((_facet_name(name), "integer", value))
        elif isinstance(value, str):
            tests.append((_facet_name(name), "text", value))
        else:
            raise ValueError(f"facet {name} can be filtered on a str, int or bool only")
    return tests


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return {int: "integer", str: "text"}.get(type(value), "other")


def _page_size(value: int) -> int:
    if value < 1:
        raise ValueError("a page holds at least one row")
    return value


@dataclass(frozen=True)
class DeadLetter:
    """A message set aside with its reason; `key` names where it came from, once."""

    key: str
    topic: str
    message_key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]


class Extras(Protocol):
    """The recorder's side tables, as the consumer, the relay and the agenda use them."""

    def seen(self, event_ids: Sequence[str]) -> set[str]: ...

    def claim_due(self, now: datetime, limit: int, owner: str, lease_until: datetime,
                  wall_now: datetime) -> list[tuple[UUID, str]]: ...

    def release(self, aggregate_ids: Sequence[UUID], owner: str) -> None: ...

    def release_owner(self, owner: str) -> int: ...

    def failed(self, aggregate_id: UUID, owner: str, retry_at: datetime,
               park_after: int) -> int: ...

    def parked(self) -> int: ...

    def next_due(self) -> datetime | None: ...

    def due_ids(self, now: datetime, limit: int) -> list[UUID]: ...

    def of_kind(self, kind: str, limit: int) -> list[UUID]: ...

    def agenda_size(self) -> int: ...

    def record_dead_letters(self, letters: Sequence[DeadLetter]) -> None: ...

    def unsent_dead_letters(self, prefix: str, limit: int) -> list[DeadLetter]: ...

    def mark_sent(self, keys: Sequence[str]) -> None: ...

    def dead_letter_count(self) -> int: ...

    def listed(self, kind: str, owner: str | None, where: dict[str, str | int | bool],
               after: tuple[str, str] | None, limit: int
               ) -> list[tuple[UUID, str, str, dict[str, Any]]]: ...

    def facets_of(self, kind: str, owner: str,
                  batch: int = 1000) -> Iterator[dict[str, Any]]: ...

    def listing_count(self, kind: str, owner: str | None) -> int: ...


Listings = list[tuple[UUID, Listing | None]]


def _unit_rows(kwargs: dict[str, Any]) -> tuple[list[Tracking], list[tuple[str, str]],
                                                 list[AgendaEntry], list[DeadLetter], Listings]:
    positions: list[Tracking] = list(kwargs.get("positions", ()))
    inbox: list[tuple[str, str]] = list(kwargs.get("inbox", ()))
    agenda: list[AgendaEntry] = list(kwargs.get("agenda", ()))
    letters: list[DeadLetter] = list(kwargs.get("dead_letters", ()))
    listings: Listings = list(kwargs.get("listings", ()))
    return positions, inbox, agenda, letters, listings


def _from_micros(value: int) -> datetime:
    seconds, rest = divmod(int(value), 1_000_000)
    return datetime.fromtimestamp(seconds, UTC).replace(microsecond=rest)


# An agenda entry whose firing kept failing is parked: never claimed again until its aggregate
# is saved anew.
PARKED = "parked"
NEVER = 2**62


# --- SQLite: the embedded default ---

SQLITE_TABLES = [
    ("CREATE TABLE IF NOT EXISTS dunwell_inbox ("
     "event_id TEXT PRIMARY KEY, event_type TEXT NOT NULL) WITHOUT ROWID"),
    ("CREATE TABLE IF NOT EXISTS dunwell_agenda ("
     "aggregate_id TEXT PRIMARY KEY, kind TEXT NOT NULL, due_at INTEGER NOT NULL, "
     "claimed_by TEXT, claimed_until INTEGER, failures INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID"),
    "CREATE INDEX IF NOT EXISTS dunwell_agenda_by_due ON dunwell_agenda (due_at)",
    "CREATE INDEX IF NOT EXISTS dunwell_agenda_by_kind ON dunwell_agenda (kind, due_at)",
    ("CREATE TABLE IF NOT EXISTS dunwell_dead_letters ("
     "key TEXT PRIMARY KEY, topic TEXT NOT NULL, message_key BLOB, value BLOB, "
     "headers TEXT NOT NULL, sent INTEGER NOT NULL DEFAULT 0)"),
    "CREATE INDEX IF NOT EXISTS dunwell_dead_letters_unsent ON dunwell_dead_letters (sent)",
    ("CREATE TABLE IF NOT EXISTS dunwell_listing ("
     "aggregate_id TEXT PRIMARY KEY, kind TEXT NOT NULL, owner TEXT NOT NULL, "
     "key TEXT NOT NULL, facets TEXT NOT NULL) WITHOUT ROWID"),
    "CREATE INDEX IF NOT EXISTS dunwell_listing_by_owner ON dunwell_listing (kind, owner, key)",
    "CREATE INDEX IF NOT EXISTS dunwell_listing_by_key ON dunwell_listing (kind, key)",
]


def encode_headers(headers: tuple[tuple[str, bytes], ...]) -> str:
    return json.dumps([[name, base64.b64encode(value).decode()] for name, value in headers])


def decode_headers(text: str) -> tuple[tuple[str, bytes], ...]:
    return tuple((str(name), base64.b64decode(value)) for name, value in json.loads(text))


class SQLiteServiceRecorder(SQLiteProcessRecorder):
    """The SQLite process recorder with the inbox, the agenda, the listing and the dead
    letters."""

    def construct_create_table_statements(self) -> list[str]:
        return super().construct_create_table_statements() + SQLITE_TABLES

    def _insert_events(self, c: SQLiteCursor, stored_events: Sequence[StoredEvent],
                       **kwargs: Any) -> Sequence[int] | None:
        returning = super()._insert_events(c, stored_events, **kwargs)
        positions, inbox, agenda, letters, listings = _unit_rows(kwargs)
        for tracking in positions:
            self._insert_tracking(c, tracking)
        if inbox:
            c.executemany("INSERT INTO dunwell_inbox (event_id, event_type) VALUES (?, ?)",
                          inbox)
        for entry in agenda:
            if entry.due is None:
                c.execute("DELETE FROM dunwell_agenda WHERE aggregate_id=?",
                          (entry.aggregate_id.hex,))
            else:
                # A claim survives the save (the replica that holds it is still firing); a
                # parked entry is taken up again, since the aggregate moved on.
                c.execute("INSERT INTO dunwell_agenda (aggregate_id, kind, due_at) "
                          "VALUES (?, ?, ?) ON CONFLICT (aggregate_id) DO UPDATE SET "
                          "kind=excluded.kind, due_at=excluded.due_at, failures=0, "
                          "claimed_until=CASE WHEN claimed_by=? THEN NULL ELSE claimed_until END,"
                          " claimed_by=CASE WHEN claimed_by=? THEN NULL ELSE claimed_by END",
                          (entry.aggregate_id.hex, entry.kind, micros(entry.due), PARKED,
                           PARKED))
        for aggregate_id, listing in listings:
            if listing is None:
                c.execute("DELETE FROM dunwell_listing WHERE aggregate_id=?", (aggregate_id.hex,))
            else:
                c.execute("INSERT INTO dunwell_listing (aggregate_id, kind, owner, key, facets) "
                          "VALUES (?, ?, ?, ?, ?) ON CONFLICT (aggregate_id) DO UPDATE SET "
                          "kind=excluded.kind, owner=excluded.owner, key=excluded.key, "
                          "facets=excluded.facets",
                          (aggregate_id.hex, listing.kind, listing.owner, listing.key,
                           listing.encoded()))
        self._insert_dead_letters(c, letters)
        return returning

    def _insert_dead_letters(self, c: SQLiteCursor, letters: Sequence[DeadLetter]) -> None:
        c.executemany("INSERT INTO dunwell_dead_letters (key, topic, message_key, value, headers)"
                      " VALUES (?, ?, ?, ?, ?) ON CONFLICT (key) DO NOTHING",
                      [(letter.key, letter.topic, letter.message_key, letter.value,
                        encode_headers(letter.headers)) for letter in letters])

    def seen(self, event_ids: Sequence[str]) -> set[str]:
        found: set[str] = set()
        with self.datastore.transaction(commit=False) as c:
            for start in range(0, len(event_ids), 500):
                chunk = list(event_ids[start:start + 500])
                c.execute("SELECT event_id FROM dunwell_inbox WHERE event_id IN ("
                          + ",".join("?" * len(chunk)) + ")", chunk)
                found.update(row[0] for row in c.fetchall())
        return found

    def claim_due(self, now: datetime, limit: int, owner: str, lease_until: datetime,
                  wall_now: datetime) -> list[tuple[UUID, str]]:
        with self.datastore.transaction(commit=False) as c:
            # A read first: an idle agenda costs no write transaction.
            c.execute("SELECT 1 FROM dunwell_agenda WHERE due_at <= ? AND "
                      "(claimed_until IS NULL OR claimed_until < ?) LIMIT 1",
                      (micros(now), micros(wall_now)))
            if c.fetchone() is None:
                return []
        with self.datastore.transaction(commit=True) as c:
            c.execute("UPDATE dunwell_agenda SET claimed_by=?, claimed_until=? "
                      "WHERE aggregate_id IN (SELECT aggregate_id FROM dunwell_agenda "
                      "WHERE due_at <= ? AND (claimed_until IS NULL OR claimed_until < ?) "
                      "ORDER BY due_at LIMIT ?) RETURNING aggregate_id, kind, due_at",
                      (owner, micros(lease_until), micros(now), micros(wall_now), limit))
            rows = sorted(c.fetchall(), key=lambda row: row[2])
        return [(UUID(row[0]), str(row[1])) for row in rows]

    def release(self, aggregate_ids: Sequence[UUID], owner: str) -> None:
        if not aggregate_ids:
            return
        with self.datastore.transaction(commit=True) as c:
            c.executemany("UPDATE dunwell_agenda SET claimed_by=NULL, claimed_until=NULL "
                          "WHERE aggregate_id=? AND claimed_by=?",
                          [(aggregate_id.hex, owner) for aggregate_id in aggregate_ids])

    def failed(self, aggregate_id: UUID, owner: str, retry_at: datetime, park_after: int) -> int:
        with self.datastore.transaction(commit=True) as c:
            c.execute("UPDATE dunwell_agenda SET failures=failures+1, claimed_until=? "
                      "WHERE aggregate_id=? AND claimed_by=? RETURNING failures",
                      (micros(retry_at), aggregate_id.hex, owner))
            row = c.fetchone()
            failures = 0 if row is None else int(row[0])
            if failures >= park_after:
                c.execute("UPDATE dunwell_agenda SET claimed_by=?, claimed_until=? "
                          "WHERE aggregate_id=?", (PARKED, NEVER, aggregate_id.hex))
        return failures

    def parked(self) -> int:
        with self.datastore.transaction(commit=False) as c:
            c.execute("SELECT COUNT(*) FROM dunwell_agenda WHERE claimed_by=?", (PARKED,))
            return int(c.fetchone()[0])

    def release_owner(self, owner: str) -> int:
        with self.datastore.transaction(commit=True) as c:
            c.execute("UPDATE dunwell_agenda SET claimed_by=NULL, claimed_until=NULL "
                      "WHERE claimed_by=? RETURNING aggregate_id", (owner,))
            return len(c.fetchall())

    def next_due(self) -> datetime | None:
        with self.datastore.transaction(commit=False) as c:
            c.execute("SELECT MIN(due_at) FROM dunwell_agenda")
            value = c.fetchone()[0]
        return None if value is None else _from_micros(value)

    def due_ids(self, now: datetime, limit: int) -> list[UUID]:
        with self.datastore.transaction(commit=False) as c:
            c.execute("SELECT aggregate_id FROM dunwell_agenda WHERE due_at <= ? "
                      "ORDER BY due_at LIMIT ?", (micros(now), limit))
            return [UUID(row[0]) for row in c.fetchall()]

    def of_kind(self, kind: str, limit: int) -> list[UUID]:
        """Aggregates of one kind on the agenda, soonest due first (e.g. the open call tasks)."""
        with self.datastore.transaction(commit=False) as c:
            c.execute("SELECT aggregate_id FROM dunwell_agenda WHERE kind=? "
                      "ORDER BY due_at LIMIT ?", (kind, limit))
            return [UUID(row[0]) for row in c.fetchall()]

    def agenda_size(self) -> int:
        with self.datastore.transaction(commit=False) as c:
            c.execute("SELECT COUNT(*) FROM dunwell_agenda")
            return int(c.fetchone()[0])

    def record_dead_letters(self, letters: Sequence[DeadLetter]) -> None:
        with self.datastore.transaction(commit=True) as c:
            self._insert_dead_letters(c, letters)

    def unsent_dead_letters(self, prefix: str, limit: int) -> list[DeadLetter]:
        with self.datastore.transaction(commit=False) as c:
            c.execute("SELECT key, topic, message_key, value, headers FROM dunwell_dead_letters"
                      " WHERE sent=0 AND substr(key, 1, ?)=? ORDER BY rowid LIMIT ?",
                      (len(prefix), prefix, limit))
            return [DeadLetter(row[0], row[1], row[2], row[3], decode_headers(row[4]))
                    for row in c.fetchall()]

    def mark_sent(self, keys: Sequence[str]) -> None:
        with self.datastore.transaction(commit=True) as c:
            c.executemany("UPDATE dunwell_dead_letters SET sent=1 WHERE key=?",
                          [(key,) for key in keys])

    def dead_letter_count(self) -> int:
        with self.datastore.transaction(commit=False) as c:
            c.execute("SELECT COUNT(*) FROM dunwell_dead_letters")
            return int(c.fetchone()[0])

    def listed(self, kind: str, owner: str | None, where: dict[str, str | int | bool],
               after: tuple[str, str] | None, limit: int
               ) -> list[tuple[UUID, str, str, dict[str, Any]]]:
        """A page of one kind's rows, for one owner or all; `after` is the last row's
        (owner, key), so a page costs an index range, not an offset."""
        sql = "SELECT aggregate_id, owner, key, facets FROM dunwell_listing WHERE kind=?"
        params: list[Any] = [kind]
        if owner is not None:
            sql += " AND owner=?"
            params.append(owner)
        if after is not None and owner is not None:
            sql += " AND key > ?"
            params.append(after[1])
        elif after is not None:
            sql += " AND (owner, key) > (?, ?)"
            params.extend(after)
        for name, json_type, value in _facet_tests(where):
            sql += " AND json_type(facets, ?) = ? AND json_extract(facets, ?) = ?"
            params.extend((f"$.{name}", json_type, f"$.{name}", value))
        sql += " ORDER BY key, aggregate_id" if owner is not None else \
            " ORDER BY owner, key, aggregate_id"
        with self.datastore.transaction(commit=False) as c:
            c.execute(sql + " LIMIT ?", [*params, _page_size(limit)])
            return [(UUID(row[0]), str(row[1]), str(row[2]), json.loads(row[3]))
                    for row in c.fetchall()]

    def facets_of(self, kind: str, owner: str, batch: int = 1000) -> Iterator[dict[str, Any]]:
        """Every row's facets for one owner, read a batch per transaction (a report over a
        big lender holds neither all its rows nor the database)."""
        last: tuple[str, str] | None = None
        while True:
            with self.datastore.transaction(commit=False) as c:
                if last is None:
                    c.execute("SELECT key, aggregate_id, facets FROM dunwell_listing "
                              "WHERE kind=? AND owner=? ORDER BY key, aggregate_id LIMIT ?",
                              (kind, owner, _page_size(batch)))
                else:
                    c.execute("SELECT key, aggregate_id, facets FROM dunwell_listing "
                              "WHERE kind=? AND owner=? AND (key, aggregate_id) > (?, ?) "
                              "ORDER BY key, aggregate_id LIMIT ?",
                              (kind, owner, *last, batch))
                rows = c.fetchall()
            for row in rows:
                yield json.loads(row[2])
            if len(rows) < batch:
                return
            last = (rows[-1][0], rows[-1][1])

    def listing_count(self, kind: str, owner: str | None) -> int:
        with self.datastore.transaction(commit=False) as c:
            if owner is None:
                c.execute("SELECT COUNT(*) FROM dunwell_listing WHERE kind=?", (kind,))
            else:
                c.execute("SELECT COUNT(*) FROM dunwell_listing WHERE kind=? AND owner=?",
                          (kind, owner))
            return int(c.fetchone()[0])


# --- memory: fast tests ---


class MemoryServiceRecorder(POPOProcessRecorder):
    """The in-memory process recorder with the same side tables, under the same lock."""

    def __init__(self) -> None:
        super().__init__()
        self._inbox: dict[str, str] = {}
        # id -> [kind, due micros, owner, until, failures]
        self._agenda: dict[UUID, list[Any]] = {}
        self._letters: dict[str, tuple[DeadLetter, bool]] = {}
        # id -> (kind, owner, key, facets as JSON: what SQLite would give back)
        self._listing: dict[UUID, tuple[str, str, str, str]] = {}
        self._lock: threading.RLock = self._database_lock

    def _assert_uniqueness(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> None:
        super()._assert_uniqueness(stored_events, **kwargs)
        positions, inbox, _, _, _ = _unit_rows(kwargs)
        for tracking in positions:
            self._assert_tracking_uniqueness(tracking)
        ids = [event_id for event_id, _ in inbox]
        if len(set(ids)) < len(ids) or any(event_id in self._inbox for event_id in ids):
            raise IntegrityError("an event id is already in the inbox")

    def _update_table(self, stored_events: Sequence[StoredEvent],
                      **kwargs: Any) -> Sequence[int] | None:
        ids = super()._update_table(stored_events, **kwargs)
        positions, inbox, agenda, letters, listings = _unit_rows(kwargs)
        for tracking in positions:
            self._insert_tracking(tracking)
        self._inbox.update(inbox)
        for entry in agenda:
            if entry.due is None:
                self._agenda.pop(entry.aggregate_id, None)
            else:
                held = self._agenda.get(entry.aggregate_id, [None, None, None, None, 0])
                claim = [None, None] if held[2] == PARKED else held[2:4]
                self._agenda[entry.aggregate_id] = [entry.kind, micros(entry.due), *claim, 0]
        for aggregate_id, listing in listings:
            if listing is None:
                self._listing.pop(aggregate_id, None)
            else:
                self._listing[aggregate_id] = (listing.kind, listing.owner, listing.key,
                                               listing.encoded())
        for letter in letters:
            self._letters.setdefault(letter.key, (letter, False))
        return ids

    def seen(self, event_ids: Sequence[str]) -> set[str]:
        with self._lock:
            return {event_id for event_id in event_ids if event_id in self._inbox}

    def claim_due(self, now: datetime, limit: int, owner: str, lease_until: datetime,
                  wall_now: datetime) -> list[tuple[UUID, str]]:
        with self._lock:
            free = sorted((row[1], aggregate_id) for aggregate_id, row in self._agenda.items()
                          if row[1] <= micros(now)
                          and (row[3] is None or row[3] < micros(wall_now)))[:limit]
            for _, aggregate_id in free:
                self._agenda[aggregate_id][2:4] = [owner, micros(lease_until)]
            return [(aggregate_id, str(self._agenda[aggregate_id][0])) for _, aggregate_id in free]

    def release(self, aggregate_ids: Sequence[UUID], owner: str) -> None:
        with self._lock:
            for aggregate_id in aggregate_ids:
                row = self._agenda.get(aggregate_id)
                if row is not None and row[2] == owner:
                    row[2:4] = [None, None]

    def failed(self, aggregate_id: UUID, owner: str, retry_at: datetime, park_after: int) -> int:
        with self._lock:
            row = self._agenda.get(aggregate_id)
            if row is None or row[2] != owner:
                return 0
            row[4] += 1
            row[3] = micros(retry_at)
            if row[4] >= park_after:
                row[2:4] = [PARKED, NEVER]
            return int(row[4])

    def parked(self) -> int:
        with self._lock:
            return sum(1 for row in self._agenda.values() if row[2] == PARKED)

    def release_owner(self, owner: str) -> int:
        with self._lock:
            held = [aggregate_id for aggregate_id, row in self._agenda.items() if row[2] == owner]
        self.release(held, owner)
        return len(held)

    def next_due(self) -> datetime | None:
        with self._lock:
            dues = [row[1] for row in self._agenda.values()]
        return _from_micros(min(dues)) if dues else None

    def due_ids(self, now: datetime, limit: int) -> list[UUID]:
        with self._lock:
            due = sorted((row[1], aggregate_id) for aggregate_id, row in self._agenda.items()
                         if row[1] <= micros(now))
        return [aggregate_id for _, aggregate_id in due[:limit]]

    def of_kind(self, kind: str, limit: int) -> list[UUID]:
        with self._lock:
            rows = sorted((row[1], aggregate_id) for aggregate_id, row in self._agenda.items()
                          if row[0] == kind)
        return [aggregate_id for _, aggregate_id in rows[:limit]]

    def agenda_size(self) -> int:
        with self._lock:
            return len(self._agenda)

    def record_dead_letters(self, letters: Sequence[DeadLetter]) -> None:
        with self._lock:
            for letter in letters:
                self._letters.setdefault(letter.key, (letter, False))

    def unsent_dead_letters(self, prefix: str, limit: int) -> list[DeadLetter]:
        with self._lock:
            return [letter for letter, sent in self._letters.values()
                    if not sent and letter.key.startswith(prefix)][:limit]

    def mark_sent(self, keys: Sequence[str]) -> None:
        with self._lock:
            for key in keys:
                if key in self._letters:
                    self._letters[key] = (self._letters[key][0], True)

    def dead_letter_count(self) -> int:
        with self._lock:
            return len(self._letters)

    def listed(self, kind: str, owner: str | None, where: dict[str, str | int | bool],
               after: tuple[str, str] | None, limit: int
               ) -> list[tuple[UUID, str, str, dict[str, Any]]]:
        tests = _facet_tests(where)
        limit = _page_size(limit)
        with self._lock:
            rows = [(row_owner, key, aggregate_id.hex, facets)
                    for aggregate_id, (row_kind, row_owner, key, facets) in self._listing.items()
                    if row_kind == kind and (owner is None or row_owner == owner)]
        if owner is not None:
            rows.sort(key=lambda row: (row[1], row[2]))
            if after is not None:
                rows = [row for row in rows if row[1] > after[1]]
        else:
            rows.sort()
            if after is not None:
                rows = [row for row in rows if (row[0], row[1]) > after]
        page: list[tuple[UUID, str, str, dict[str, Any]]] = []
        for row_owner, key, hex_id, encoded in rows:
            facets = json.loads(encoded)
            if all(name in facets and _json_type(facets[name]) == json_type
                   and facets[name] == value for name, json_type, value in tests):
                page.append((UUID(hex_id), row_owner, key, facets))
                if len(page) == limit:
                    break
        return page

    def facets_of(self, kind: str, owner: str, batch: int = 1000) -> Iterator[dict[str, Any]]:
        last: tuple[str, str] | None = None
        while True:
            with self._lock:
                rows = sorted((key, aggregate_id.hex, facets) for aggregate_id, (row_kind,
                              row_owner, key, facets) in self._listing.items()
                              if row_kind == kind and row_owner == owner
                              and (last is None or (key, aggregate_id.hex) > last))
            rows = rows[:_page_size(batch)]
            for _, _, encoded in rows:
                yield json.loads(encoded)
            if len(rows) < batch:
                return
            last = (rows[-1][0], rows[-1][1])

    def listing_count(self, kind: str, owner: str | None) -> int:
        with self._lock:
            return sum(1 for row_kind, row_owner, _, _ in self._listing.values()
                       if row_kind == kind and (owner is None or row_owner == owner))


# --- PostgreSQL: production ---


class PostgresServiceRecorder(PostgresProcessRecorder):
    """The PostgreSQL process recorder with the same side tables, written by the same
    transaction as the events. The tables are named after the application's events table, so
    services that share a database (a small installation) keep theirs apart. Text that is
    sorted or compared is COLLATE "C": pages come in the order SQLite and memory give."""

    def __init__(self, datastore: PostgresDatastore, *, events_table_name: str = "stored_events",
                 tracking_table_name: str = "notification_tracking") -> None:
        super().__init__(datastore, events_table_name=events_table_name,
                         tracking_table_name=tracking_table_name)
        prefix = events_table_name.removesuffix("_events")
        self.tables = {name: f"{prefix}_{name}" for name in
                       ("inbox", "agenda", "dead_letters", "listing")}
        for table in self.tables.values():
            self.check_identifier_length(table + "_by_owner")
        self.sql_create_statements.extend(SQL(text).format() for text in self._ddl())

    def _t(self, name: str) -> str:
        """A side table's qualified name, quoted (the names are ours: no input reaches them)."""
        return f'"{self.datastore.schema}"."{self.tables[name]}"'

    def _ddl(self) -> list[str]:
        inbox, agenda = self._t("inbox"), self._t("agenda")
        letters, listing = self._t("dead_letters"), self._t("listing")
        name = self.tables
        return [
            (f"CREATE TABLE IF NOT EXISTS {inbox} (event_id TEXT PRIMARY KEY, "
            "event_type TEXT NOT NULL)"),
            (f"CREATE TABLE IF NOT EXISTS {agenda} (aggregate_id TEXT PRIMARY KEY, "
            "kind TEXT NOT NULL, due_at BIGINT NOT NULL, claimed_by TEXT, claimed_until BIGINT, "
            "failures INTEGER NOT NULL DEFAULT 0)"),
            f'CREATE INDEX IF NOT EXISTS "{name["agenda"]}_by_due" ON {agenda} (due_at)',
            f'CREATE INDEX IF NOT EXISTS "{name["agenda"]}_by_kind" ON {agenda} (kind, due_at)',
            (f"CREATE TABLE IF NOT EXISTS {letters} (seq BIGSERIAL, key TEXT PRIMARY KEY, "
            "topic TEXT NOT NULL, message_key BYTEA, value BYTEA, headers TEXT NOT NULL, "
            "sent BOOLEAN NOT NULL DEFAULT FALSE)"),
            (f'CREATE INDEX IF NOT EXISTS "{name["dead_letters"]}_unsent" ON {letters} '
            "(sent, seq)"),
            (f'CREATE TABLE IF NOT EXISTS {listing} (aggregate_id TEXT COLLATE "C" PRIMARY KEY, '
            'kind TEXT NOT NULL, owner TEXT COLLATE "C" NOT NULL, key TEXT COLLATE "C" NOT NULL, '
            "facets JSONB NOT NULL)"),
            (f'CREATE INDEX IF NOT EXISTS "{name["listing"]}_by_owner" ON {listing} '
            "(kind, owner, key)"),
            f'CREATE INDEX IF NOT EXISTS "{name["listing"]}_by_key" ON {listing} (kind, key)',
        ]

    def _insert_events(self, curs: Cursor[DictRow], stored_events: Sequence[StoredEvent],
                       **kwargs: Any) -> None:
        super()._insert_events(curs, stored_events, **kwargs)
        positions, inbox, agenda, letters, listings = _unit_rows(kwargs)
        for tracking in positions:
            self._insert_tracking(curs, tracking)
        if inbox:
            curs.executemany(f"INSERT INTO {self._t('inbox')} (event_id, event_type) "
                             "VALUES (%s, %s)", inbox)
        table = self._t("agenda")
        for entry in agenda:
            if entry.due is None:
                curs.execute(f"DELETE FROM {table} WHERE aggregate_id=%s",
                             (entry.aggregate_id.hex,))
            else:
                curs.execute(f"INSERT INTO {table} AS a (aggregate_id, kind, due_at) "
                             "VALUES (%s, %s, %s) ON CONFLICT (aggregate_id) DO UPDATE SET "
                             "kind=excluded.kind, due_at=excluded.due_at, failures=0, "
                             "claimed_until=CASE WHEN a.claimed_by=%s THEN NULL "
                             "ELSE a.claimed_until END, "
                             "claimed_by=CASE WHEN a.claimed_by=%s THEN NULL ELSE a.claimed_by END",
                             (entry.aggregate_id.hex, entry.kind, micros(entry.due), PARKED,
                              PARKED))
        table = self._t("listing")
        for aggregate_id, listing in listings:
            if listing is None:
                curs.execute(f"DELETE FROM {table} WHERE aggregate_id=%s", (aggregate_id.hex,))
            else:
                curs.execute(f"INSERT INTO {table} (aggregate_id, kind, owner, key, facets) "
                             "VALUES (%s, %s, %s, %s, %s::jsonb) ON CONFLICT (aggregate_id) DO "
                             "UPDATE SET kind=excluded.kind, owner=excluded.owner, "
                             "key=excluded.key, facets=excluded.facets",
                             (aggregate_id.hex, listing.kind, listing.owner, listing.key,
                              listing.encoded()))
        self._insert_dead_letters(curs, letters)

    def _insert_dead_letters(self, curs: Cursor[DictRow], letters: Sequence[DeadLetter]) -> None:
        if letters:
            curs.executemany(f"INSERT INTO {self._t('dead_letters')} (key, topic, message_key, "
                             "value, headers) VALUES (%s, %s, %s, %s, %s) "
                             "ON CONFLICT (key) DO NOTHING",
                             [(letter.key, letter.topic, letter.message_key, letter.value,
                               encode_headers(letter.headers)) for letter in letters])

    def _rows(self, query: str, params: Sequence[Any] = ()) -> list[Any]:
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(query, params)
            return list(curs.fetchall())

    def _write(self, query: str, params: Sequence[Any] = ()) -> list[Any]:
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(query, params)
            return list(curs.fetchall()) if curs.description is not None else []

    def seen(self, event_ids: Sequence[str]) -> set[str]:
        if not event_ids:
            return set()
        rows = self._rows(f"SELECT event_id FROM {self._t('inbox')} WHERE event_id = ANY(%s)",
                          (list(event_ids),))
        return {row["event_id"] for row in rows}

    def claim_due(self, now: datetime, limit: int, owner: str, lease_until: datetime,
                  wall_now: datetime) -> list[tuple[UUID, str]]:
        table = self._t("agenda")
        free = "due_at <= %s AND (claimed_until IS NULL OR claimed_until < %s)"
        if not self._rows(f"SELECT 1 FROM {table} WHERE {free} LIMIT 1",
                          (micros(now), micros(wall_now))):
            return []
        # Replicas claim at once: a row another is claiming is skipped, never claimed twice.
        rows = self._write(f"UPDATE {table} SET claimed_by=%s, claimed_until=%s "
                           f"WHERE aggregate_id IN (SELECT aggregate_id FROM {table} "
                           f"WHERE {free} ORDER BY due_at LIMIT %s FOR UPDATE SKIP LOCKED) "
                           "RETURNING aggregate_id, kind, due_at",
                           (owner, micros(lease_until), micros(now), micros(wall_now), limit))
        rows.sort(key=lambda row: row["due_at"])
        return [(UUID(row["aggregate_id"]), str(row["kind"])) for row in rows]

    def release(self, aggregate_ids: Sequence[UUID], owner: str) -> None:
        if aggregate_ids:
            self._write(f"UPDATE {self._t('agenda')} SET claimed_by=NULL, claimed_until=NULL "
                        "WHERE aggregate_id = ANY(%s) AND claimed_by=%s",
                        ([aggregate_id.hex for aggregate_id in aggregate_ids], owner))

    def failed(self, aggregate_id: UUID, owner: str, retry_at: datetime, park_after: int) -> int:
        table = self._t("agenda")
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(f"UPDATE {table} SET failures=failures+1, claimed_until=%s "
                         "WHERE aggregate_id=%s AND claimed_by=%s RETURNING failures",
                         (micros(retry_at), aggregate_id.hex, owner))
            row = curs.fetchone()
            failures = 0 if row is None else int(row["failures"])
            if failures >= park_after:
                curs.execute(f"UPDATE {table} SET claimed_by=%s, claimed_until=%s "
                             "WHERE aggregate_id=%s", (PARKED, NEVER, aggregate_id.hex))
        return failures

    def parked(self) -> int:
        return int(self._rows(f"SELECT COUNT(*) AS n FROM {self._t('agenda')} "
                              "WHERE claimed_by=%s", (PARKED,))[0]["n"])

    def release_owner(self, owner: str) -> int:
        return len(self._write(f"UPDATE {self._t('agenda')} SET claimed_by=NULL, "
                               "claimed_until=NULL WHERE claimed_by=%s RETURNING aggregate_id",
                               (owner,)))

    def next_due(self) -> datetime | None:
        value = self._rows(f"SELECT MIN(due_at) AS due FROM {self._t('agenda')}")[0]["due"]
        return None if value is None else _from_micros(value)

    def due_ids(self, now: datetime, limit: int) -> list[UUID]:
        rows = self._rows(f"SELECT aggregate_id FROM {self._t('agenda')} WHERE due_at <= %s "
                          "ORDER BY due_at LIMIT %s", (micros(now), limit))
        return [UUID(row["aggregate_id"]) for row in rows]

    def of_kind(self, kind: str, limit: int) -> list[UUID]:
        rows = self._rows(f"SELECT aggregate_id FROM {self._t('agenda')} WHERE kind=%s "
                          "ORDER BY due_at LIMIT %s", (kind, limit))
        return [UUID(row["aggregate_id"]) for row in rows]

    def agenda_size(self) -> int:
        return int(self._rows(f"SELECT COUNT(*) AS n FROM {self._t('agenda')}")[0]["n"])

    def record_dead_letters(self, letters: Sequence[DeadLetter]) -> None:
        with self.datastore.transaction(commit=True) as curs:
            self._insert_dead_letters(curs, letters)

    def unsent_dead_letters(self, prefix: str, limit: int) -> list[DeadLetter]:
        rows = self._rows(f"SELECT key, topic, message_key, value, headers FROM "
                          f"{self._t('dead_letters')} WHERE NOT sent AND left(key, %s) = %s "
                          "ORDER BY seq LIMIT %s", (len(prefix), prefix, limit))
        return [DeadLetter(row["key"], row["topic"], _bytes(row["message_key"]),
                           _bytes(row["value"]), decode_headers(row["headers"])) for row in rows]

    def mark_sent(self, keys: Sequence[str]) -> None:
        if keys:
            self._write(f"UPDATE {self._t('dead_letters')} SET sent=TRUE WHERE key = ANY(%s)",
                        (list(keys),))

    def dead_letter_count(self) -> int:
        return int(self._rows(f"SELECT COUNT(*) AS n FROM {self._t('dead_letters')}")[0]["n"])

    def listed(self, kind: str, owner: str | None, where: dict[str, str | int | bool],
               after: tuple[str, str] | None, limit: int
               ) -> list[tuple[UUID, str, str, dict[str, Any]]]:
        sql = f"SELECT aggregate_id, owner, key, facets FROM {self._t('listing')} WHERE kind=%s"
        params: list[Any] = [kind]
        if owner is not None:
            sql += " AND owner=%s"
            params.append(owner)
        if after is not None and owner is not None:
            sql += " AND key > %s"
            params.append(after[1])
        elif after is not None:
            sql += " AND (owner, key) > (%s, %s)"
            params.extend(after)
        # jsonb equality compares the JSON type too: true is not 1, "1" is not 1.
        for name, value in where.items():
            _facet_tests({name: value})
            sql += " AND facets -> %s = %s::jsonb"
            params.extend((name, json.dumps(value)))
        sql += " ORDER BY key, aggregate_id" if owner is not None else \
            " ORDER BY owner, key, aggregate_id"
        rows = self._rows(sql + " LIMIT %s", [*params, _page_size(limit)])
        return [(UUID(row["aggregate_id"]), str(row["owner"]), str(row["key"]), row["facets"])
                for row in rows]

    def facets_of(self, kind: str, owner: str, batch: int = 1000) -> Iterator[dict[str, Any]]:
        table = self._t("listing")
        last: tuple[str, str] | None = None
        while True:
            if last is None:
                rows = self._rows(f"SELECT key, aggregate_id, facets FROM {table} "
                                  "WHERE kind=%s AND owner=%s ORDER BY key, aggregate_id "
                                  "LIMIT %s", (kind, owner, _page_size(batch)))
            else:
                rows = self._rows(f"SELECT key, aggregate_id, facets FROM {table} "
                                  "WHERE kind=%s AND owner=%s AND (key, aggregate_id) > (%s, %s)"
                                  " ORDER BY key, aggregate_id LIMIT %s",
                                  (kind, owner, *last, batch))
            for row in rows:
                yield row["facets"]
            if len(rows) < batch:
                return
            last = (rows[-1]["key"], rows[-1]["aggregate_id"])

    def listing_count(self, kind: str, owner: str | None) -> int:
        table = self._t("listing")
        if owner is None:
            rows = self._rows(f"SELECT COUNT(*) AS n FROM {table} WHERE kind=%s", (kind,))
        else:
            rows = self._rows(f"SELECT COUNT(*) AS n FROM {table} WHERE kind=%s AND owner=%s",
                              (kind, owner))
        return int(rows[0]["n"])


def _bytes(value: bytes | memoryview | None) -> bytes | None:
    return None if value is None else bytes(value)
