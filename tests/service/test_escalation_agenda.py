"""Escalation's daily evaluation on the real agenda over SQLite: a claim is evaluated in one
commit, two replicas on one store escalate each case once, and a claim whose unit cannot be
committed is fired case by case."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID

from shared.agenda import Agenda
from shared.clock import ManualClock
from shared.consumer import HandlerSink
from shared.events import LoanOverdue, StrategyDocument, envelope
from shared.policy_pack import CN
from tests.helpers import loan_body
from tests.service.records import consumer_record, tracking_of

from services.escalation.application import Cases
from services.escalation.handlers import HANDLERS
from services.escalation.policy import DEFAULT_DOCUMENT

OPENED = datetime(2026, 12, 25, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai
NEXT_DAY = datetime(2026, 12, 25, 16, 1, tzinfo=UTC)  # 00:01 in Shanghai the day after


def cases_on(path: Path) -> Cases:
    return Cases(CN, env={"PERSISTENCE_MODULE": "eventsourcing.sqlite",
                          "SQLITE_DBNAME": str(path)})


def with_calls_stage() -> StrategyDocument:
    """The default, with a calls stage from DPD 31: every case below moves there at midnight."""
    body = DEFAULT_DOCUMENT.model_dump(mode="json")
    body["stages"].insert(1, {"name": "calls", "entry": {"min_dpd": 31},
                              "cadence": {"repeat": {"channel": "call", "from_day": 0}}})
    return StrategyDocument.model_validate(body)


def open_cases(app: Cases, count: int) -> list[str]:
    app.publish_strategy("lender-1", with_calls_stage(), OPENED)
    sink = HandlerSink(app, HANDLERS, ManualClock(OPENED))
    loans = []
    for i in range(count):
        body = loan_body(f"L-{i}", dpd=30, amount="800.00")
        body["due_date"] = "2026-11-25"  # DPD 30 on 2026-12-25 in Shanghai
        event = envelope(LoanOverdue.model_validate(body), event_id=str(uuid.uuid4()),
                         source="/test", time=OPENED, causation_id=None, correlation_id=None)
        record = consumer_record(event, "loans.events", i)
        sink.process(tracking_of(record), record, event, event.payload())
        loans.append(f"L-{i}")
    return loans


def escalations(app: Cases) -> Counter[str]:
    found: Counter[str] = Counter()
    for notification in app.recorder.select_notifications(1, 1_000_000):
        event = app.mapper.to_domain_event(notification)
        if type(event).__qualname__.endswith("Escalated"):
            found[event.loan_id] += 1
    return found


async def run_until_done(agendas: list[Agenda], app: Cases, now: datetime) -> None:
    stop = asyncio.Event()
    loops = [asyncio.create_task(agenda.run(stop)) for agenda in agendas]
    for _ in range(400):
        await asyncio.sleep(0.05)
        if not app.extras.due_ids(now, 1):
            break
    stop.set()
    await asyncio.gather(*loops)


def test_two_replicas_evaluating_together_escalate_each_case_once(tmp_path: Path) -> None:
    path = tmp_path / "escalation.db"
    first, second = cases_on(path), cases_on(path)
    loans = open_cases(first, 300)
    clock = ManualClock(NEXT_DAY)
    agendas = [Agenda(app=app, fire=app.fire, fire_many=app.fire_many, clock=clock,
                      owner=owner, idle_seconds=0.05, batch=40)
               for app, owner in ((first, "replica-a"), (second, "replica-b"))]
    asyncio.run(run_until_done(agendas, first, NEXT_DAY))
    counted = escalations(first)
    assert set(counted) == set(loans)
    assert set(counted.values()) == {1}
    assert first.extras.due_ids(NEXT_DAY, 1) == []
    # Each case is next due at the following midnight in Shanghai.
    assert first.extras.next_due() == NEXT_DAY + timedelta(days=1) - timedelta(minutes=1)


def test_a_claim_whose_unit_fails_is_fired_case_by_case(tmp_path: Path) -> None:
    app = cases_on(tmp_path / "escalation.db")
    loans = open_cases(app, 30)
    together: list[int] = []

    def failing_many(ids: list[UUID], kind: str, now: datetime) -> None:
        together.append(len(ids))
        raise RuntimeError("one case of the claim cannot be evaluated")

    agenda = Agenda(app=app, fire=app.fire, fire_many=failing_many,
                    clock=ManualClock(NEXT_DAY), owner="replica-a", idle_seconds=0.05,
                    batch=50)
    asyncio.run(run_until_done([agenda], app, NEXT_DAY))
    assert together and together[0] == 30
    assert escalations(app) == Counter(dict.fromkeys(loans, 1))
