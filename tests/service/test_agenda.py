"""The durable agenda over a real SQLite store: nothing is replayed at start, what is due
fires once when the clock passes it, and two replicas on one store never send the same
reminder twice."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from shared.agenda import Agenda
from shared.clock import ManualClock
from shared.consumer import HandlerSink
from shared.policy_pack import CN
from tests.helpers import case_opened
from tests.service.records import consumer_record, tracking_of

from services.reminder.application import Reminders
from services.reminder.channels import FileSmsSink, OutboundMessage
from services.reminder.domain import ContactPlan, Reminder
from services.reminder.handlers import HANDLERS

NOON_SHANGHAI = datetime(2026, 10, 14, 4, 0, tzinfo=UTC)
NIGHT_SHANGHAI = datetime(2026, 10, 14, 15, 0, tzinfo=UTC)  # 23:00


def store(path: Path) -> dict[str, str]:
    return {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(path)}


def reminders(path: Path) -> Reminders:
    return Reminders(CN, "the official hotline 95555", env=store(path))


def open_cases(app: Reminders, count: int, now: datetime, prefix: str = "L") -> list[UUID]:
    """`count` cases opened through the consumer's sink, their plans' first steps taken;
    returns the first reminders' ids (the SMS of day 0)."""
    sink = HandlerSink(app, HANDLERS, ManualClock(now))
    ids = []
    for i in range(count):
        event = case_opened(f"{prefix}-{i}", f"ev-{prefix}-{i}", now)
        record = consumer_record(event, "cases.events", i)
        sink.process(tracking_of(record), record, event, event.payload())
        app.take_step(ContactPlan.create_id(f"{prefix}-{i}"), now)
        ids.append(Reminder.create_id(f"{event.id}/0/sms"))
    return ids


def all_sent(app: Reminders, ids: list[UUID]) -> bool:
    return {app.repository.get(rid).status for rid in ids} == {"sent"}


class CountingSink(FileSmsSink):
    """The file sink, counting every hand-over per idempotency key."""

    def __init__(self, path: Path, handed: Counter[str]) -> None:
        super().__init__(path)
        self.handed = handed

    def send(self, message: OutboundMessage) -> str:
        self.handed[message.idempotency_key] += 1
        return super().send(message)


def agenda(app: Reminders, gateway: FileSmsSink, clock: ManualClock, owner: str) -> Agenda:
    def fire(aggregate_id: UUID, kind: str, now: datetime) -> None:
        app.fire(aggregate_id, kind, {"sms": gateway}, now, timedelta(minutes=1))

    return Agenda(app=app, fire=fire, clock=clock, owner=owner, idle_seconds=0.05, batch=20)


async def run_until(
        loops: list[Agenda], done: Any,
        timeout: float = 60.0,  # noqa: ASYNC109 - an assertion, then the loops stop cleanly
) -> None:
    stop = asyncio.Event()
    tasks = [asyncio.ensure_future(loop.run(stop)) for loop in loops]
    try:
        deadline = asyncio.get_running_loop().time() + timeout
        while not await asyncio.to_thread(done):
            assert asyncio.get_running_loop().time() < deadline, "the agenda did not finish"
            for task in tasks:
                if task.done():
                    task.result()
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.gather(*tasks)


def test_a_restarted_service_reads_no_log_to_know_what_is_due(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    first = reminders(tmp_path / "reminder.db")
    ids = open_cases(first, 50, NIGHT_SHANGHAI)
    for reminder_id in ids:  # fired at 23:00: each deferred by C1 to 08:00
        first.send_due(reminder_id, {}, NIGHT_SHANGHAI, timedelta(minutes=1))
    first.close()

    def no_replay(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the notification log was read at start")

    monkeypatch.setattr("eventsourcing.sqlite.SQLiteApplicationRecorder.select_notifications",
                        no_replay)
    restarted = reminders(tmp_path / "reminder.db")
    assert restarted.due(NIGHT_SHANGHAI) == []
    eight = datetime(2026, 10, 15, 0, 0, tzinfo=UTC)
    assert sorted(restarted.due(eight)) == sorted(ids)
    assert restarted.extras.agenda_size() == 50
    restarted.close()


async def test_what_is_due_fires_once_when_the_clock_passes_it(tmp_path: Path) -> None:
    app = reminders(tmp_path / "reminder.db")
    ids = open_cases(app, 5, NIGHT_SHANGHAI)
    clock = ManualClock(NIGHT_SHANGHAI)
    handed: Counter[str] = Counter()
    loop = agenda(app, CountingSink(tmp_path / "sms.jsonl", handed), clock, "replica-a")
    await run_until([loop], lambda: True, timeout=5)
    assert handed == Counter()  # not yet: 23:00 in Shanghai

    clock.set(datetime(2026, 10, 15, 0, 0, tzinfo=UTC))  # 08:00
    await run_until([loop], lambda: all_sent(app, ids))
    await run_until([loop], lambda: True, timeout=1)  # and nothing more is sent
    assert app.extras.agenda_size() == 5  # each plan's next step (the e-mail of day 2)
    assert handed == Counter({str(reminder_id): 1 for reminder_id in ids})
    assert {app.repository.get(rid).status for rid in ids} == {"sent"}


async def test_two_replicas_on_one_store_never_send_the_same_reminder_twice(
        tmp_path: Path) -> None:
    path = tmp_path / "reminder.db"
    one, two = reminders(path), reminders(path)
    ids = open_cases(one, 300, NOON_SHANGHAI)
    clock = ManualClock(NOON_SHANGHAI)
    handed: Counter[str] = Counter()
    sink = tmp_path / "sms.jsonl"
    loops = [agenda(one, CountingSink(sink, handed), clock, "replica-a"),
             agenda(two, CountingSink(sink, handed), clock, "replica-b")]
    await run_until(loops, lambda: all_sent(one, ids))

    assert handed == Counter({str(reminder_id): 1 for reminder_id in ids})
    lines = sink.read_text().splitlines()
    assert len(lines) == 300
    assert {one.repository.get(rid).status for rid in ids} == {"sent"}
    one.close()
    two.close()


@pytest.mark.parametrize("persistence", ["sqlite", "memory"])
async def test_a_firing_that_keeps_failing_is_parked_until_its_aggregate_moves_on(
        tmp_path: Path, persistence: str) -> None:
    app = (reminders(tmp_path / "reminder.db") if persistence == "sqlite" else
           Reminders(CN, "the official hotline", env={"PERSISTENCE_MODULE": "eventsourcing.popo"}))
    [broken, fine] = open_cases(app, 2, NOON_SHANGHAI)
    calls: Counter[UUID] = Counter()
    handed: Counter[str] = Counter()
    gateway = CountingSink(tmp_path / "sms.jsonl", handed)

    def fire(aggregate_id: UUID, kind: str, now: datetime) -> None:
        calls[aggregate_id] += 1
        if aggregate_id == broken:
            raise KeyError("a template this version does not know")
        app.fire(aggregate_id, kind, {"sms": gateway}, now, timedelta(minutes=1))

    loop = Agenda(app=app, fire=fire, clock=ManualClock(NOON_SHANGHAI), owner="replica-a",
                  idle_seconds=0.05, attempts=3, pause=timedelta(milliseconds=50))
    await run_until([loop], lambda: app.extras.parked() == 1 and handed[str(fine)] == 1)
    await run_until([loop], lambda: True, timeout=1)  # and it stays parked
    assert calls[broken] == 3 and calls[fine] == 1

    reminder = app.repository.get(broken)  # the aggregate moves on: taken up again
    reminder.defer("C1", "tried later", NOON_SHANGHAI)
    app.save(reminder)
    assert app.extras.parked() == 0


async def test_each_firing_reads_the_clock_itself(tmp_path: Path) -> None:
    """A batch of slow sends is not judged at the time the batch was claimed: a send handed
    over at 22:03 must not be checked, nor recorded, as 21:58."""
    app = reminders(tmp_path / "reminder.db")
    open_cases(app, 3, NOON_SHANGHAI)
    clock = ManualClock(NOON_SHANGHAI)
    seen: list[datetime] = []

    def slow_fire(aggregate_id: UUID, kind: str, now: datetime) -> None:
        seen.append(now)
        clock.advance(timedelta(minutes=2))  # the provider took its time

    loop = Agenda(app=app, fire=slow_fire, clock=clock, owner="replica-a", idle_seconds=0.05,
                  concurrency=1)  # one at a time: each turn reads the clock when it comes
    await run_until([loop], lambda: len(seen) >= 3)
    assert seen[:3] == [NOON_SHANGHAI + timedelta(minutes=2 * i) for i in range(3)]
    app.close()
