"""The recorders' side tables behave alike in memory, SQLite and PostgreSQL: the inbox refuses
an event id twice, positions only move forward, the agenda is claimed by one replica at a time
and parks what keeps failing, dead letters are kept once and sent once."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import NAMESPACE_URL, UUID, uuid5

import pytest
from eventsourcing.domain import Aggregate, event
from eventsourcing.persistence import Tracking

from shared.application import Conflict, ServiceApplication
from shared.store import DeadLetter

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


class Task(Aggregate):
    @event("Opened")
    def __init__(self, name: str, due: datetime | None) -> None:
        self.name = name
        self.due = due

    @staticmethod
    def create_id(name: str) -> UUID:
        return uuid5(NAMESPACE_URL, f"test-recorders/{name}")

    @event("Moved")
    def move(self, due: datetime | None) -> None:
        self.due = due

    def next_due(self) -> datetime | None:
        return self.due


def env_for(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    if kind == "sqlite":
        return {"PERSISTENCE_MODULE": "eventsourcing.sqlite",
                "SQLITE_DBNAME": str(tmp_path / "recorders.db")}
    if kind == "postgres":
        cluster = request.getfixturevalue("postgres")
        return dict(cluster.env(request.getfixturevalue("pg_database")))
    return {"PERSISTENCE_MODULE": "eventsourcing.popo"}


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ServiceApplication]:
    service = ServiceApplication(env=env_for(request.param, request, tmp_path))
    yield service
    service.close()


def save_with(app: ServiceApplication, *tasks: Task, inbox: list[tuple[str, str]] | None = None,
              positions: list[Tracking] | None = None,
              letters: list[DeadLetter] | None = None) -> None:
    unit = app.unit()
    unit.save(*tasks)
    unit.inbox.extend(inbox or [])
    unit.positions.extend(positions or [])
    unit.dead_letters.extend(letters or [])
    app.commit(unit)


def test_an_event_id_is_taken_once_with_its_unit(app: ServiceApplication) -> None:
    save_with(app, Task("a", None), inbox=[("e-1", "LoanOverdue"), ("e-2", "LoanOverdue")])
    assert app.seen(["e-1", "e-2", "e-3"]) == {"e-1", "e-2"}
    with pytest.raises(Conflict):
        save_with(app, Task("b", None), inbox=[("e-2", "LoanOverdue"), ("e-3", "LoanOverdue")])
    # Nothing of the refused unit was written: neither its aggregate nor its other inbox row.
    assert app.seen(["e-3"]) == set()
    assert not app.exists(Task.create_id("b"))


def test_positions_move_forward_with_the_work_only(app: ServiceApplication) -> None:
    save_with(app, Task("a", None), positions=[Tracking("cases.events/0", 5),
                                                Tracking("cases.events/1", 2)])
    assert app.position("cases.events/0") == 5
    assert app.position("cases.events/1") == 2
    assert app.skip(Tracking("cases.events/0", 6))
    assert not app.skip(Tracking("cases.events/0", 6))
    with pytest.raises(Conflict):
        save_with(app, Task("b", None), positions=[Tracking("cases.events/1", 2)])
    assert not app.exists(Task.create_id("b"))
    assert app.position("cases.events/0") == 6


def test_the_agenda_is_claimed_released_and_parked(app: ServiceApplication) -> None:
    soon, later = Task("soon", T0), Task("later", T0 + timedelta(hours=1))
    save_with(app, later, soon, Task("never", None))
    extras = app.extras
    assert extras.agenda_size() == 2
    assert extras.next_due() == T0
    assert extras.due_ids(T0, 10) == [soon.id]
    assert extras.of_kind("Task", 10) == [soon.id, later.id]
    lease = T0 + timedelta(minutes=1)
    claimed = extras.claim_due(T0 + timedelta(hours=2), 10, "replica-1", lease, T0)
    assert claimed == [(soon.id, "Task"), (later.id, "Task")]
    # Claimed rows are not claimed again by another replica until the lease runs out.
    assert extras.claim_due(T0 + timedelta(hours=2), 10, "replica-2", lease, T0) == []
    assert extras.claim_due(T0 + timedelta(hours=2), 10, "replica-2", lease,
                            lease + timedelta(seconds=1)) == claimed
    extras.release([soon.id], "replica-1")  # not the holder any more: nothing changes
    assert extras.claim_due(T0 + timedelta(hours=2), 10, "replica-1", lease, T0) == []
    assert extras.release_owner("replica-2") == 2
    assert extras.failed(soon.id, "replica-2", lease, park_after=2) == 0  # not held
    extras.claim_due(T0, 10, "replica-1", lease, T0)
    assert extras.failed(soon.id, "replica-1", T0, park_after=2) == 1
    assert extras.claim_due(T0, 10, "replica-1", lease, T0 + timedelta(seconds=1)) == [
        (soon.id, "Task")]
    assert extras.failed(soon.id, "replica-1", T0, park_after=2) == 2
    assert extras.parked() == 1
    assert extras.claim_due(T0 + timedelta(days=999), 10, "replica-1", lease,
                            T0 + timedelta(days=999)) == [(later.id, "Task")]
    # A save takes a parked entry up again; a save with nothing due removes the row.
    soon.move(T0 + timedelta(minutes=5))
    later.move(None)
    save_with(app, soon, later)
    assert extras.parked() == 0
    assert extras.agenda_size() == 1
    assert extras.next_due() == T0 + timedelta(minutes=5)


def test_dead_letters_are_kept_once_and_sent_once(app: ServiceApplication) -> None:
    letter = DeadLetter("consumer/cases.events/0/7", "cases.events.dlq", b"L-1", b"\x00{bad",
                        (("dunwell-dlq-reason", b"not JSON"), ("x", b"\xff")))
    save_with(app, Task("a", None), letters=[letter])
    app.extras.record_dead_letters([letter, DeadLetter("relay/x", "dunwell.outbox.dlq", None,
                                                       None, ())])
    assert app.extras.dead_letter_count() == 2
    assert app.extras.unsent_dead_letters("consumer/", 10) == [letter]
    app.extras.mark_sent([letter.key])
    assert app.extras.unsent_dead_letters("consumer/", 10) == []
    assert [d.key for d in app.extras.unsent_dead_letters("", 10)] == ["relay/x"]


def test_two_replicas_never_claim_one_entry_twice(request: pytest.FixtureRequest,
                                                  tmp_path: Path) -> None:
    """Two applications on one PostgreSQL database claim at once, from threads."""
    env = env_for("postgres", request, tmp_path)
    first, second = ServiceApplication(env=env), ServiceApplication(env=env)
    try:
        tasks = [Task(f"t{i}", T0 + timedelta(seconds=i)) for i in range(200)]
        save_with(first, *tasks)
        got: dict[str, list[UUID]] = {"a": [], "b": []}

        def claim(app: ServiceApplication, name: str) -> None:
            while True:
                rows = app.extras.claim_due(T0 + timedelta(hours=1), 7, name,
                                            T0 + timedelta(hours=2), T0)
                if not rows:
                    return
                got[name].extend(aggregate_id for aggregate_id, _ in rows)

        threads = [threading.Thread(target=claim, args=(first, "a")),
                   threading.Thread(target=claim, args=(second, "b"))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert sorted(got["a"] + got["b"]) == sorted(task.id for task in tasks)
        assert not set(got["a"]) & set(got["b"])
    finally:
        first.close()
        second.close()
