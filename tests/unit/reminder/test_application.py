"""The reminder application: plan on CaseOpened, send inside hours (C1), nothing after payment
(C4), and a crash mid-send resends under the same idempotency key, never a second message."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from uuid import UUID
from zoneinfo import ZoneInfo

import pytest
from eventsourcing.persistence import Tracking

from shared.clock import ManualClock
from shared.consumer import HandlerSink
from shared.events import Borrower, CaseClosed, CaseOpened, CloudEvent, envelope
from shared.policy_pack import CN
from tests.service.records import consumer_record

from services.reminder.application import Reminders
from services.reminder.channels import FileSmsSink, OutboundMessage
from services.reminder.domain import Reminder, render
from services.reminder.handlers import HANDLERS

ZONE = "Asia/Shanghai"
DAY = date(2026, 10, 14)
RETRY = timedelta(minutes=5)
IN_MEMORY = {"PERSISTENCE_MODULE": "eventsourcing.popo"}
CASES = "kafka/inc/cases.events/0"


def local(hhmm: str, day: date = DAY) -> datetime:
    return datetime.combine(day, time.fromisoformat(hhmm), tzinfo=ZoneInfo(ZONE)).astimezone(UTC)


def case_opened(now: datetime, event_id: str = "ev-opened-1") -> CloudEvent:
    data = CaseOpened(
        loan_id="L-1", lender_id="lender-1",
        borrower=Borrower(borrower_id="B-1", name="Wang Fang", phone="+8613800000000",
                          timezone=ZONE),
        amount_overdue=Decimal("1200.50"), currency="CNY", due_date=date(2026, 10, 1),
        days_past_due=13, repayment_channel="transfer to account 6222-0000-1111",
        stage="soft_reminders", opened_at=now)
    return envelope(data, event_id=event_id, source="/dunwell/escalation", time=now,
                    causation_id="ev-overdue-1", correlation_id="ev-overdue-1")


def case_closed(now: datetime, event_id: str = "ev-closed-1") -> CloudEvent:
    data = CaseClosed(loan_id="L-1", reason="paid", closed_at=now)
    return envelope(data, event_id=event_id, source="/dunwell/escalation", time=now,
                    causation_id="ev-payment-1", correlation_id="ev-overdue-1")


def deliver(app: Reminders, event: CloudEvent, offset: int, now: datetime) -> bool:
    """What the tracked consumer does with one message from cases.events: a batch of one."""
    sink = HandlerSink(app, HANDLERS, ManualClock(now))
    record = consumer_record(event, "cases.events", offset)
    return sink.process(Tracking(CASES, offset), record, event, event.payload())


def reminder_for(event: CloudEvent) -> UUID:
    return Reminder.create_id(f"{event.id}/sms/first")


def remind_at_eleven(app: Reminders, gateway: Gateway) -> tuple[ManualClock, CloudEvent]:
    """A case opened at 11:00 local, its first reminder sent at once."""
    clock = ManualClock(local("11:00"))
    opened = case_opened(clock.now())
    deliver(app, opened, 1, clock.now())
    app.send_due(reminder_for(opened), gateway, clock.now(), RETRY)
    return clock, opened


def sink_lines(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@dataclass
class Gateway:
    """The file sink, with a record of the idempotency keys it was asked to send under."""

    sink: FileSmsSink
    keys: list[str] = field(default_factory=list)

    def send(self, message: OutboundMessage) -> str:
        self.keys.append(message.idempotency_key)
        return self.sink.send(message)


@pytest.fixture
def sink_path(tmp_path: Path) -> Path:
    return tmp_path / "sms-gateway.jsonl"


@pytest.fixture
def gateway(sink_path: Path) -> Gateway:
    return Gateway(FileSmsSink(sink_path))


@pytest.fixture
def app() -> Iterator[Reminders]:
    reminders = Reminders(CN, "the official hotline 95555", env=IN_MEMORY)
    yield reminders
    reminders.close()


def test_a_case_opened_inside_hours_is_reminded_at_once(app: Reminders, gateway: Gateway,
                                                        sink_path: Path) -> None:
    clock = ManualClock(local("11:00"))
    opened = case_opened(clock.now())
    assert deliver(app, opened, 1, clock.now()) is True
    reminder_id = reminder_for(opened)
    assert app.due(clock.now()) == [reminder_id]

    app.send_due(reminder_id, gateway, clock.now(), RETRY)

    lines = sink_lines(sink_path)
    assert [line["idempotency_key"] for line in lines] == [str(reminder_id)]
    assert lines[0]["to"] == "+8613800000000"
    reminder: Reminder = app.repository.get(reminder_id)
    assert (reminder.status, reminder.sent_at, reminder.blocks) == ("sent", clock.now(), [])
    assert app.due(clock.now()) == []


def test_the_message_carries_the_required_content(app: Reminders, gateway: Gateway,
                                                  sink_path: Path) -> None:
    remind_at_eleven(app, gateway)
    text = sink_lines(sink_path)[0]["text"]
    for item in ("1200.50 CNY", "2026-10-21", "transfer to account 6222-0000-1111",
                 "the official hotline 95555"):
        assert item in text


def test_a_case_opened_at_night_is_deferred_by_c1_to_0800(app: Reminders, gateway: Gateway,
                                                          sink_path: Path) -> None:
    clock = ManualClock(local("23:00"))
    opened = case_opened(clock.now())
    deliver(app, opened, 1, clock.now())
    reminder_id = reminder_for(opened)
    reminder: Reminder = app.repository.get(reminder_id)
    next_morning = local("08:00", DAY + timedelta(days=1))
    assert reminder.status == "pending"
    assert [(b["rule"], b["deferred_until"]) for b in reminder.blocks] == [("C1", next_morning)]
    assert app.due(clock.now()) == []

    clock.set(next_morning - timedelta(minutes=1))
    assert app.due(clock.now()) == []

    clock.set(next_morning)
    assert app.due(clock.now()) == [reminder_id]
    app.send_due(reminder_id, gateway, clock.now(), RETRY)
    assert [line["idempotency_key"] for line in sink_lines(sink_path)] == [str(reminder_id)]
    assert app.repository.get(reminder_id).status == "sent"


def test_sending_outside_hours_defers_again_instead_of_sending(app: Reminders, gateway: Gateway,
                                                               sink_path: Path) -> None:
    clock = ManualClock(local("21:59"))
    opened = case_opened(clock.now())
    deliver(app, opened, 1, clock.now())
    clock.set(local("22:00"))  # the dispatcher picks it up a minute late

    app.send_due(reminder_for(opened), gateway, clock.now(), RETRY)

    assert sink_lines(sink_path) == []
    reminder: Reminder = app.repository.get(reminder_for(opened))
    assert [b["rule"] for b in reminder.blocks] == ["C1"]
    assert reminder.due_at == local("08:00", DAY + timedelta(days=1))


def test_closing_the_case_cancels_the_pending_reminder_by_c4(app: Reminders, gateway: Gateway,
                                                             sink_path: Path) -> None:
    clock = ManualClock(local("23:00"))
    opened = case_opened(clock.now())
    deliver(app, opened, 1, clock.now())
    clock.advance(timedelta(minutes=20))
    assert deliver(app, case_closed(clock.now()), 2, clock.now()) is True

    reminder_id = reminder_for(opened)
    reminder: Reminder = app.repository.get(reminder_id)
    assert reminder.status == "cancelled"
    assert reminder.cancelled is not None and reminder.cancelled["rule"] == "C4"

    clock.set(local("08:00", DAY + timedelta(days=1)))
    assert app.due(clock.now()) == []
    app.send_due(reminder_id, gateway, clock.now(), RETRY)
    assert sink_lines(sink_path) == []
    assert gateway.keys == []


def test_a_reminder_already_sent_is_not_touched_by_closing(app: Reminders, gateway: Gateway,
                                                           sink_path: Path) -> None:
    clock, opened = remind_at_eleven(app, gateway)
    deliver(app, case_closed(clock.now()), 2, clock.now())
    reminder: Reminder = app.repository.get(reminder_for(opened))
    assert (reminder.status, reminder.cancelled) == ("sent", None)
    assert len(sink_lines(sink_path)) == 1


def test_a_redelivered_case_opened_plans_nothing_more(app: Reminders) -> None:
    clock = ManualClock(local("11:00"))
    opened = case_opened(clock.now())
    assert deliver(app, opened, 1, clock.now()) is True
    assert deliver(app, opened, 1, clock.now()) is False
    assert deliver(app, opened, 7, clock.now()) is False
    plan = app.reminders_of("L-1")
    assert plan is not None and [r.id for r in plan] == [reminder_for(opened)]
    assert app.position(CASES) == 7


@pytest.mark.parametrize("reached_gateway", [False, True],
                         ids=["crash-before-handover", "crash-after-handover"])
def test_a_crash_mid_send_resends_under_the_same_key_once(tmp_path: Path, sink_path: Path,
                                                          reached_gateway: bool) -> None:
    store = {"PERSISTENCE_MODULE": "eventsourcing.sqlite",
             "SQLITE_DBNAME": str(tmp_path / "reminder.db")}
    clock = ManualClock(local("11:00"))
    before = Reminders(CN, "the official hotline 95555", env=store)
    opened = case_opened(clock.now())
    deliver(before, opened, 1, clock.now())
    reminder_id = reminder_for(opened)
    reminder: Reminder = before.repository.get(reminder_id)
    reminder.start_sending(clock.now())
    before.save(reminder)
    if reached_gateway:
        FileSmsSink(sink_path).send(OutboundMessage(
            str(reminder_id), reminder.recipient,
            render(reminder.template_id, reminder.template_version, reminder.content)))
    before.close()  # the process dies here: the send is recorded as started, never as sent

    after = Reminders(CN, "the official hotline 95555", env=store)
    gateway = Gateway(FileSmsSink(sink_path))
    assert after.due(clock.now()) == [reminder_id]
    after.send_due(reminder_id, gateway, clock.now(), RETRY)

    assert gateway.keys == [str(reminder_id)]
    assert [line["idempotency_key"] for line in sink_lines(sink_path)] == [str(reminder_id)]
    resent: Reminder = after.repository.get(reminder_id)
    assert (resent.status, resent.attempts) == ("sent", 2)
    assert after.due(clock.now()) == []
    after.close()


def test_a_payment_during_the_hand_over_leaves_the_send_on_record(app: Reminders,
                                                                   gateway: Gateway,
                                                                   sink_path: Path) -> None:
    """The provider has the message once the hand-over began: the record must say it was sent,
    not that it was cancelled."""
    clock = ManualClock(local("11:00"))
    opened = case_opened(clock.now())
    deliver(app, opened, 1, clock.now())
    reminder_id = reminder_for(opened)

    class PaidMeanwhile:
        def send(self, message: OutboundMessage) -> str:
            deliver(app, case_closed(clock.now()), 2, clock.now())  # while the provider works
            return gateway.send(message)

    app.send_due(reminder_id, PaidMeanwhile(), clock.now(), RETRY)  # type: ignore[arg-type]
    reminder: Reminder = app.repository.get(reminder_id)
    assert (reminder.status, reminder.cancelled) == ("sent", None)
    assert len(sink_lines(sink_path)) == 1
    assert app.due(clock.now()) == []


def test_a_send_cut_short_on_a_case_since_paid_is_abandoned_and_says_so(
        tmp_path: Path, sink_path: Path) -> None:
    store = {"PERSISTENCE_MODULE": "eventsourcing.sqlite",
             "SQLITE_DBNAME": str(tmp_path / "reminder.db")}
    clock = ManualClock(local("11:00"))
    app = Reminders(CN, "the official hotline 95555", env=store)
    opened = case_opened(clock.now())
    deliver(app, opened, 1, clock.now())
    reminder: Reminder = app.repository.get(reminder_for(opened))
    reminder.start_sending(clock.now())
    app.save(reminder)  # and the process dies here
    deliver(app, case_closed(clock.now()), 2, clock.now())
    assert app.repository.get(reminder.id).status == "sending"  # not cancelled under the send

    gateway = Gateway(FileSmsSink(sink_path))
    app.send_due(reminder.id, gateway, clock.now(), RETRY)
    abandoned: Reminder = app.repository.get(reminder.id)
    assert abandoned.status == "cancelled" and gateway.keys == []
    assert abandoned.cancelled is not None and abandoned.cancelled["rule"] == "C4"
    assert "the provider may have it" in abandoned.cancelled["reason"]
    app.close()
