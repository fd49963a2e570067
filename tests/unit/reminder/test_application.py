"""The reminder application as the contact engine: the cadence (SMS, e-mail, push, then a call
task a day), every step under C1/C3/C4/C5, the pre-dial gate (C1, C2, C3, C4, C13), call
outcomes, receipts, and a crash mid-send that resends under the same key, never twice."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

import pytest
from eventsourcing.persistence import Tracking

from shared.clock import ManualClock
from shared.consumer import HandlerSink
from shared.events import (
    Borrower,
    CaseClosed,
    CaseOpened,
    CaseUpdated,
    Channel,
    CloudEvent,
    Contact,
    ContactHeld,
    ContactResumed,
    EventData,
    Jurisdiction,
    envelope,
)
from shared.policy_pack import CN
from tests.service.records import consumer_record

from services.reminder.application import (
    Attempt,
    KeyReused,
    NotFound,
    Permit,
    Reminders,
    RuleRefused,
)
from services.reminder.channels import ChannelRefused, OutboundMessage
from services.reminder.domain import CallTask, ContactPlan, Reminder
from services.reminder.relay import integration_event

SHANGHAI = "Asia/Shanghai"
DAY = date(2026, 10, 14)
RETRY = timedelta(minutes=5)
IN_MEMORY = {"PERSISTENCE_MODULE": "eventsourcing.popo"}
CASES = "kafka/inc/cases.events/0"
PHONE = "+8613800000000"
CONTACT_PHONE = "+8613900000000"


def local(hhmm: str, day: date = DAY, zone: str = SHANGHAI) -> datetime:
    return datetime.combine(day, time.fromisoformat(hhmm), tzinfo=ZoneInfo(zone)).astimezone(UTC)


def event_of(data: EventData, now: datetime, event_id: str) -> CloudEvent:
    return envelope(data, event_id=event_id, source="/dunwell/escalation", time=now,
                    causation_id="ev-overdue-1", correlation_id="ev-overdue-1")


def case_opened(now: datetime, *, email: str | None = "wang@example.com",
                zone: str = SHANGHAI, jurisdiction: str | None = None,
                contacts: bool = False, loan_id: str = "L-1") -> CloudEvent:
    data = CaseOpened(
        loan_id=loan_id, lender_id="lender-1",
        borrower=Borrower(borrower_id="B-1", name="Wang Fang", phone=PHONE, email=email,
                          timezone=zone),
        amount_overdue=Decimal("1200.50"), currency="CNY", due_date=date(2026, 10, 1),
        days_past_due=13, repayment_channel="transfer to account 6222-0000-1111",
        contacts=[Contact(contact_id="K-1", name="Li Lei", phone=CONTACT_PHONE,
                          relation="sibling")] if contacts else None,
        jurisdiction=Jurisdiction(jurisdiction) if jurisdiction else None,
        stage="soft_reminders", opened_at=now)
    return event_of(data, now, f"ev-opened-{loan_id}")


@dataclass
class Outbox:
    """The channels, recorded: what the application handed to each provider, by key."""

    sent: list[OutboundMessage] = field(default_factory=list)
    refuse: bool = False

    def send(self, message: OutboundMessage) -> str:
        if self.refuse:
            raise ChannelRefused("the provider answered 400: not a mobile number")
        earlier = [m for m in self.sent if m.idempotency_key == message.idempotency_key]
        if not earlier:
            self.sent.append(message)
        return f"p-{message.idempotency_key[:8]}"

    def channels(self) -> list[str]:
        return [m.channel for m in self.sent]


@dataclass
class Engine:
    """The application, a clock, and the agenda fired by hand at each moment."""

    app: Reminders
    clock: ManualClock
    outbox: Outbox = field(default_factory=Outbox)
    offset: int = 0

    def deliver(self, event: CloudEvent) -> bool:
        self.offset += 1
        sink = HandlerSink(self.app, _handlers(), self.clock)
        record = consumer_record(event, "cases.events", self.offset)
        return sink.process(Tracking(CASES, self.offset), record, event, event.payload())

    def run(self) -> None:
        """Fire what is due now, again and again, until nothing more is (as the agenda does)."""
        gateways = {"sms": self.outbox, "email": self.outbox, "push": self.outbox}
        for _ in range(50):
            claimed = self.app.extras.claim_due(self.clock.now(), 100, "test",
                                                datetime.now(UTC) + timedelta(minutes=1),
                                                datetime.now(UTC))
            if not claimed:
                return
            for aggregate_id, kind in claimed:
                self.app.fire(aggregate_id, kind, gateways, self.clock.now(), RETRY)
            self.app.extras.release([i for i, _ in claimed], "test")
        raise AssertionError("the agenda never settled")

    def at(self, moment: datetime) -> None:
        self.clock.set(moment)
        self.run()

    def plan(self, loan_id: str = "L-1") -> ContactPlan:
        return self.app.repository.get(ContactPlan.create_id(loan_id))  # type: ignore[no-any-return]

    def reminders(self) -> list[Reminder]:
        return self.app.reminders_of("L-1") or []

    def tasks(self) -> list[CallTask]:
        return self.app.tasks_of("L-1") or []


def _handlers() -> Any:
    from services.reminder.handlers import HANDLERS

    return HANDLERS


@pytest.fixture
def app() -> Iterator[Reminders]:
    reminders = Reminders(CN, "the official hotline 95555", env=IN_MEMORY)
    yield reminders
    reminders.close()


def open_case(app: Reminders, at: datetime, **options: Any) -> Engine:
    engine = Engine(app, ManualClock(at))
    engine.deliver(case_opened(at, **options))
    engine.run()
    return engine


# --- the cadence ---


def test_a_daytime_borrower_gets_sms_email_push_then_a_call_task_a_day(app: Reminders) -> None:
    opened_at = local("10:00")
    engine = open_case(app, opened_at)
    assert engine.outbox.channels() == ["sms"]
    engine.at(opened_at + timedelta(days=1, hours=23))
    assert engine.outbox.channels() == ["sms"]
    engine.at(opened_at + timedelta(days=2))
    assert engine.outbox.channels() == ["sms", "email"]
    mail = engine.outbox.sent[1]
    assert mail.to == "wang@example.com" and mail.subject and "L-1" in mail.subject
    engine.at(opened_at + timedelta(days=4))
    assert engine.outbox.channels() == ["sms", "email", "push"]
    assert engine.outbox.sent[2].to == "B-1"
    assert engine.tasks() == []
    engine.at(opened_at + timedelta(days=6))
    (task,) = engine.tasks()
    assert task.status == "issued" and task.phone_kind == "borrower"
    assert task.due_from == opened_at + timedelta(days=6)
    assert task.due_until == local("22:00", DAY + timedelta(days=6))
    engine.at(opened_at + timedelta(days=7))
    assert [t.status for t in engine.tasks()] == ["expired", "issued"]
    sent = [r for r in engine.reminders() if r.status == "sent"]
    assert [(r.template_id, r.template_version) for r in sent] == [
        ("sms.reminder", 1), ("email.reminder", 1), ("push.reminder", 1)]


def test_each_message_carries_the_required_content_in_the_borrowers_language(
        app: Reminders) -> None:
    engine = open_case(app, local("10:00"))
    text = engine.outbox.sent[0].text
    for item in ("1200.50", "CNY", "2026-10-21", "6222-0000-1111", "95555"):
        assert item in text
    assert "逾期" in text  # zh-CN, the default


def test_a_borrower_without_e_mail_skips_that_step_and_keeps_the_cadence(
        app: Reminders) -> None:
    opened_at = local("10:00")
    engine = open_case(app, opened_at, email=None)
    engine.at(opened_at + timedelta(days=2))
    assert engine.outbox.channels() == ["sms"]
    engine.at(opened_at + timedelta(days=4))
    assert engine.outbox.channels() == ["sms", "push"]


def test_a_2300_borrowers_steps_are_deferred_to_0800_local_each_by_c1(app: Reminders) -> None:
    opened_at = local("23:00")
    engine = open_case(app, opened_at)
    assert engine.outbox.channels() == []
    (sms,) = engine.reminders()
    assert sms.blocks[0]["rule"] == "C1"
    assert sms.blocks[0]["deferred_until"] == local("08:00", DAY + timedelta(days=1))
    engine.at(local("07:59", DAY + timedelta(days=1)))
    assert engine.outbox.channels() == []
    engine.at(local("08:00", DAY + timedelta(days=1)))
    assert engine.outbox.channels() == ["sms"]
    engine.at(opened_at + timedelta(days=2))
    email = engine.reminders()[1]
    assert email.channel == "email" and email.status == "pending"
    assert [b["rule"] for b in email.blocks] == ["C1"]
    engine.at(local("08:00", DAY + timedelta(days=3)))
    assert engine.outbox.channels() == ["sms", "email"]
    engine.at(opened_at + timedelta(days=4))
    engine.at(local("08:00", DAY + timedelta(days=5)))
    assert engine.outbox.channels() == ["sms", "email", "push"]
    engine.at(opened_at + timedelta(days=6))
    (task,) = engine.tasks()
    assert task.status == "pending" and task.blocks[0]["rule"] == "C1"
    engine.at(local("08:00", DAY + timedelta(days=7)))
    assert engine.tasks()[0].status == "issued"


def test_a_us_loan_keeps_us_hours_wherever_the_installation_is(app: Reminders) -> None:
    engine = open_case(app, local("21:30", zone="America/New_York"),
                       zone="America/New_York", jurisdiction="us")
    (sms,) = engine.reminders()
    assert sms.status == "pending" and sms.blocks[0]["rule"] == "C1"
    assert "(us)" in sms.blocks[0]["reason"]


def test_a_redelivered_case_opened_plans_nothing_more(app: Reminders) -> None:
    engine = open_case(app, local("11:00"))
    opened = case_opened(local("11:00"))
    engine.offset = 0
    assert engine.deliver(opened) is False
    engine.run()
    assert len(engine.reminders()) == 1 and engine.outbox.channels() == ["sms"]


# --- C4, C3 ---


def test_closing_the_case_cancels_every_pending_step_by_c4(app: Reminders) -> None:
    engine = open_case(app, local("23:00"))
    engine.deliver(event_of(CaseClosed(loan_id="L-1", reason="paid", closed_at=local("23:10")),
                            local("23:10"), "ev-closed"))
    (sms,) = engine.reminders()
    assert sms.status == "cancelled" and sms.cancelled and sms.cancelled["rule"] == "C4"
    engine.at(local("10:00", DAY + timedelta(days=8)))
    assert engine.outbox.channels() == [] and engine.tasks() == []


def held(channels: list[Channel] | None, hold_id: str, permanent: bool,
         now: datetime) -> CloudEvent:
    return event_of(ContactHeld(loan_id="L-1", rule="C3", reason="asked", channels=channels,
                                at=now, hold_id=hold_id, permanent=permanent),
                    now, f"ev-held-{hold_id}")


def test_cease_for_sms_cancels_the_pending_sms_while_e_mail_goes_on(app: Reminders) -> None:
    opened_at = local("23:00")
    engine = open_case(app, opened_at)  # the SMS waits for 08:00
    engine.deliver(held([Channel.SMS], "cease:1", True, local("23:30")))
    (sms,) = engine.reminders()
    assert sms.status == "cancelled" and sms.cancelled and sms.cancelled["rule"] == "C3"
    engine.at(local("09:00", DAY + timedelta(days=3)))
    assert engine.outbox.channels() == ["email"]


def test_a_dispute_holds_everything_and_its_resolution_resumes_it(app: Reminders) -> None:
    opened_at = local("23:00")
    engine = open_case(app, opened_at)
    engine.deliver(held(None, "dispute:D-1", False, local("23:30")))
    engine.at(local("09:00", DAY + timedelta(days=3)))
    assert engine.outbox.channels() == []
    (sms,) = engine.reminders()
    assert sms.held_by == "dispute:D-1" and sms.blocks[-1]["rule"] == "C3"
    resumed_at = local("10:00", DAY + timedelta(days=3))
    engine.clock.set(resumed_at)
    engine.deliver(event_of(ContactResumed(loan_id="L-1", rule="C3", reason="resolved",
                                           at=resumed_at, hold_id="dispute:D-1"),
                            resumed_at, "ev-resumed"))
    engine.run()
    assert engine.outbox.channels() == ["sms", "email"]  # in order, the e-mail overdue


def test_a_ceased_call_channel_cancels_the_call_task(app: Reminders) -> None:
    opened_at = local("10:00")
    engine = open_case(app, opened_at)
    engine.at(opened_at + timedelta(days=6))
    engine.deliver(held([Channel.CALL], "cease:2", True, engine.clock.now()))
    assert [t.status for t in engine.tasks()] == ["cancelled"]
    assert app.open_call_tasks(engine.clock.now()) == []


# --- the channel's answers ---


def test_a_provider_that_refuses_the_message_fails_it_for_good(app: Reminders) -> None:
    engine = Engine(app, ManualClock(local("10:00")))
    engine.outbox.refuse = True
    engine.deliver(case_opened(local("10:00")))
    engine.run()
    (sms,) = engine.reminders()
    assert sms.status == "cancelled" and sms.cancelled and "400" in sms.cancelled["reason"]
    assert engine.plan().current is None  # the cadence goes on


def test_receipts_record_delivery_once(app: Reminders) -> None:
    engine = open_case(app, local("10:00"))
    (sms,) = engine.reminders()
    app.receipt("sms", sms.id, True, local("10:01"), None)
    app.receipt("sms", sms.id, True, local("10:02"), None)
    assert app.repository.get(sms.id).delivery == "delivered"
    with pytest.raises(NotFound):
        app.receipt("email", sms.id, True, local("10:01"), None)
    with pytest.raises(NotFound):
        app.receipt("sms", UUID(int=7), True, local("10:01"), None)


# --- the pre-dial gate ---


def call_day(app: Reminders, **options: Any) -> tuple[Engine, CallTask]:
    opened_at = local("09:00")
    engine = open_case(app, opened_at, **options)
    engine.at(opened_at + timedelta(days=6))
    return engine, engine.tasks()[0]


def dial(engine: Engine, task: CallTask, outcome: str, phone: str = PHONE,
         minutes: int = 5) -> Permit:
    permit = engine.app.permit_dial("L-1", task.id, phone, "C-7", engine.clock.now())
    engine.app.record_attempt(Attempt("L-1", "call", phone, outcome, engine.clock.now(),
                                      permit.permit_id), "C-7", engine.clock.now())
    engine.clock.advance(timedelta(minutes=minutes))
    return permit


def refusal(engine: Engine, task: CallTask, phone: str = PHONE) -> RuleRefused:
    with pytest.raises(RuleRefused) as refused:
        engine.app.permit_dial("L-1", task.id, phone, "C-7", engine.clock.now())
    return refused.value


def test_cn_the_fourth_answered_call_of_the_day_is_refused_by_c2(app: Reminders) -> None:
    engine, task = call_day(app)
    for _ in range(3):
        dial(engine, task, "answered")
    refused = refusal(engine, task)
    assert refused.decision.rule == "C2"
    until = refused.as_error()["details"]["deferred_until"]
    assert datetime.fromisoformat(until) == local("08:00", DAY + timedelta(days=7))


def test_cn_the_seventh_unanswered_dial_of_a_number_is_refused_by_c2(app: Reminders) -> None:
    engine, task = call_day(app)
    for _ in range(6):
        dial(engine, task, "no_answer")
    assert refusal(engine, task).decision.rule == "C2"


def test_an_unused_permit_counts_until_it_expires(app: Reminders) -> None:
    engine, task = call_day(app)
    for _ in range(3):
        app.permit_dial("L-1", task.id, PHONE, "C-7", engine.clock.now())
    assert refusal(engine, task).decision.rule == "C2"
    engine.clock.advance(timedelta(minutes=11))
    app.permit_dial("L-1", task.id, PHONE, "C-7", engine.clock.now())


def test_us_an_attempt_within_seven_days_of_a_conversation_is_refused(app: Reminders) -> None:
    opened_at = local("09:00", zone="America/New_York")
    engine = open_case(app, opened_at, zone="America/New_York", jurisdiction="us")
    engine.at(opened_at + timedelta(days=6))
    task = engine.tasks()[0]
    dial(engine, task, "answered")
    engine.at(opened_at + timedelta(days=7))
    assert refusal(engine, engine.tasks()[-1]).decision.rule == "C2"


def test_us_the_eighth_attempt_in_seven_days_is_refused(app: Reminders) -> None:
    opened_at = local("09:00", zone="America/New_York")
    engine = open_case(app, opened_at, zone="America/New_York", jurisdiction="us")
    for day in range(6, 13):  # one a day, days 6 to 12: seven in seven days
        engine.at(opened_at + timedelta(days=day))
        dial(engine, engine.tasks()[-1], "no_answer")
    engine.clock.advance(timedelta(hours=2))
    refused = refusal(engine, engine.tasks()[-1])
    assert refused.decision.rule == "C2" and "7 days" in (refused.decision.reason or "")


def test_the_gate_refuses_outside_hours_by_c1_and_after_payment_by_c4(app: Reminders) -> None:
    engine, task = call_day(app)
    engine.clock.set(local("22:30", DAY + timedelta(days=6)))
    assert refusal(engine, task).decision.rule == "C1"
    engine.deliver(event_of(CaseClosed(loan_id="L-1", reason="paid", closed_at=local("23:00")),
                            local("23:00"), "ev-closed"))
    engine.clock.set(local("10:00", DAY + timedelta(days=7)))
    assert refusal(engine, task).decision.rule == "C4"


def test_another_persons_number_is_refused_by_c13(app: Reminders) -> None:
    engine, task = call_day(app, contacts=True)
    assert refusal(engine, task, "+8613700000000").decision.rule == "C13"
    assert refusal(engine, task, CONTACT_PHONE).decision.rule == "C13"


def test_a_contact_person_only_after_three_failed_calls_and_only_to_reestablish(
        app: Reminders) -> None:
    engine, task = call_day(app, contacts=True)
    for _ in range(2):
        dial(engine, task, "no_answer")
    assert [t.phone_kind for t in engine.tasks()] == ["borrower"]
    dial(engine, task, "wrong_number")
    engine.run()
    contact_task = engine.tasks()[-1]
    assert (contact_task.phone_kind, contact_task.contact_id) == ("contact", "K-1")
    assert (contact_task.template_id, contact_task.template_version) == (
        "contact.reestablish", 1)
    assert refusal(engine, contact_task, PHONE).decision.rule == "C13"
    permit = app.permit_dial("L-1", contact_task.id, CONTACT_PHONE, "C-7", engine.clock.now())
    assert permit.expires_at == engine.clock.now() + timedelta(minutes=10)


def test_a_dial_without_a_permit_is_recorded_as_the_fact_it_is(app: Reminders) -> None:
    engine, _task = call_day(app)
    attempt_id, recognised = app.record_attempt(
        Attempt("L-1", "call", PHONE, "no_answer", engine.clock.now(), UUID(int=3)), "C-7",
        engine.clock.now())
    assert recognised is False
    assert attempt_id in engine.plan().attempt_ids
    again = app.record_attempt(Attempt("L-1", "call", PHONE, "answered", engine.clock.now()),
                               "C-7", engine.clock.now(), key="k-1")
    assert app.record_attempt(Attempt("L-1", "call", PHONE, "answered", engine.clock.now()),
                              "C-7", engine.clock.now(), key="k-1")[0] == again[0]
    assert len(engine.plan().attempt_ids) == 2
    with pytest.raises(NotFound):
        app.record_attempt(Attempt("L-404", "call", PHONE, "answered", engine.clock.now()),
                           "C-7", engine.clock.now())


# --- a crash mid-send ---


def sink_lines(path: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.parametrize("reached_gateway", [False, True],
                         ids=["crash-before-handover", "crash-after-handover"])
def test_a_crash_mid_send_resends_under_the_same_key_once(tmp_path: Path,
                                                          reached_gateway: bool) -> None:
    store = {"PERSISTENCE_MODULE": "eventsourcing.sqlite",
             "SQLITE_DBNAME": str(tmp_path / "reminder.db")}
    before = Reminders(CN, "the official hotline 95555", env=store)
    engine = Engine(before, ManualClock(local("11:00")))
    engine.deliver(case_opened(local("11:00")))
    plan_id = ContactPlan.create_id("L-1")
    before.take_step(plan_id, engine.clock.now())
    (reminder,) = engine.reminders()
    reminder.start_sending(engine.clock.now())
    before.save(reminder)
    if reached_gateway:
        engine.outbox.send(OutboundMessage(str(reminder.id), "sms", PHONE, "text"))
    before.close()  # the process dies here: the send is recorded as started, never as sent

    after = Reminders(CN, "the official hotline 95555", env=store)
    resumed = Engine(after, engine.clock, engine.outbox)
    assert after.due(engine.clock.now()) == [reminder.id]
    resumed.run()
    assert [m.idempotency_key for m in engine.outbox.sent] == [str(reminder.id)]
    resent: Reminder = after.repository.get(reminder.id)
    assert (resent.status, resent.attempts) == ("sent", 2)
    assert resumed.plan().current is None
    after.close()


def test_a_payment_during_the_hand_over_leaves_the_send_on_record(app: Reminders) -> None:
    """The provider has the message once the hand-over began: the record must say it was sent,
    not that it was cancelled."""
    engine = Engine(app, ManualClock(local("11:00")))
    engine.deliver(case_opened(local("11:00")))
    app.take_step(ContactPlan.create_id("L-1"), engine.clock.now())
    (reminder,) = engine.reminders()

    class PaidMeanwhile:
        def send(self, message: OutboundMessage) -> str:
            engine.deliver(event_of(CaseClosed(loan_id="L-1", reason="paid",
                                               closed_at=local("11:00")), local("11:00"),
                                    "ev-closed"))
            return engine.outbox.send(message)

    app.send_due(reminder.id, {"sms": PaidMeanwhile()}, engine.clock.now(), RETRY)
    sent: Reminder = app.repository.get(reminder.id)
    assert (sent.status, sent.cancelled) == ("sent", None)
    assert len(engine.outbox.sent) == 1


def test_a_send_cut_short_on_a_case_since_paid_is_abandoned_and_says_so(
        app: Reminders) -> None:
    engine = Engine(app, ManualClock(local("11:00")))
    engine.deliver(case_opened(local("11:00")))
    app.take_step(ContactPlan.create_id("L-1"), engine.clock.now())
    (reminder,) = engine.reminders()
    reminder.start_sending(engine.clock.now())
    app.save(reminder)  # and the process dies here
    engine.deliver(event_of(CaseClosed(loan_id="L-1", reason="paid", closed_at=local("11:00")),
                            local("11:00"), "ev-closed"))
    assert app.repository.get(reminder.id).status == "sending"  # not cancelled under the send
    engine.run()
    abandoned: Reminder = app.repository.get(reminder.id)
    assert abandoned.status == "cancelled" and engine.outbox.sent == []
    assert abandoned.cancelled is not None and abandoned.cancelled["rule"] == "C4"
    assert "the provider may have it" in abandoned.cancelled["reason"]


# --- what review found: a permit is one dial, made while it is valid, by its collector ---


def test_a_permit_is_honoured_once_by_its_collector_while_it_is_valid(app: Reminders) -> None:
    engine, task = call_day(app)
    now = engine.clock.now()
    permit = app.permit_dial("L-1", task.id, PHONE, "C-7", now)

    def recorded(collector: str, at: datetime) -> bool:
        return app.record_attempt(Attempt("L-1", "call", PHONE, "no_answer", at,
                                          permit.permit_id), collector, at)[1]

    assert recorded("C-8", now) is False  # another collector's
    assert recorded("C-7", now - timedelta(hours=1)) is False  # before it was given
    assert recorded("C-7", now + timedelta(minutes=1)) is True
    assert recorded("C-7", now + timedelta(minutes=2)) is False  # used already
    late = app.permit_dial("L-1", task.id, PHONE, "C-7", now)
    assert recorded_at(app, late, now + timedelta(minutes=11)) is False  # expired


def recorded_at(app: Reminders, permit: Permit, at: datetime) -> bool:
    return app.record_attempt(Attempt("L-1", "call", PHONE, "no_answer", at, permit.permit_id),
                              "C-7", at)[1]


def test_a_permit_ends_with_the_borrowers_hours(app: Reminders) -> None:
    engine, task = call_day(app)
    engine.clock.set(local("21:55", DAY + timedelta(days=6)))
    permit = app.permit_dial("L-1", task.id, PHONE, "C-7", engine.clock.now())
    assert permit.expires_at == local("22:00", DAY + timedelta(days=6))


def test_calls_reported_as_earlier_without_a_permit_count_from_when_they_were_reported(
        app: Reminders) -> None:
    engine, task = call_day(app)
    yesterday = engine.clock.now() - timedelta(days=1)
    for _ in range(3):
        app.record_attempt(Attempt("L-1", "call", PHONE, "answered", yesterday), "C-7",
                           engine.clock.now())
    assert refusal(engine, task).decision.rule == "C2"


def test_made_up_failures_do_not_unlock_a_contact_person(app: Reminders) -> None:
    engine, _ = call_day(app, contacts=True)
    for _ in range(3):
        app.record_attempt(Attempt("L-1", "call", PHONE, "no_answer", engine.clock.now()),
                           "C-7", engine.clock.now())
    engine.run()
    assert [t.phone_kind for t in engine.tasks()] == ["borrower"]
    assert engine.plan().failed_streak == 0


def test_a_permit_given_before_a_cease_is_not_honoured_after_it(app: Reminders) -> None:
    engine, task = call_day(app)
    permit = app.permit_dial("L-1", task.id, PHONE, "C-7", engine.clock.now())
    engine.deliver(held([Channel.CALL], "cease:3", True, engine.clock.now()))
    assert recorded_at(app, permit, engine.clock.now()) is False


def test_a_repeated_key_answers_the_same_and_another_request_under_it_is_refused(
        app: Reminders) -> None:
    engine, task = call_day(app, contacts=True)
    now = engine.clock.now()
    first = app.permit_dial("L-1", task.id, PHONE, "C-7", now, key="k")
    assert app.permit_dial("L-1", task.id, PHONE, "C-7", now, key="k") == first
    with pytest.raises(KeyReused):
        app.permit_dial("L-1", task.id, "+8613700000000", "C-7", now, key="k")
    attempt = Attempt("L-1", "call", PHONE, "no_answer", now, first.permit_id)
    recorded = app.record_attempt(attempt, "C-7", now, key="a")
    assert app.record_attempt(attempt, "C-7", now, key="a") == recorded
    with pytest.raises(KeyReused):
        app.record_attempt(Attempt("L-1", "call", PHONE, "answered", now), "C-7", now,
                           key="a")
    engine.deliver(held([Channel.CALL], "cease:4", True, now))
    with pytest.raises(RuleRefused):  # a replay does not outlive the cease
        app.permit_dial("L-1", task.id, PHONE, "C-7", now, key="k")


def test_a_resolution_dated_later_keeps_the_hold_until_then(app: Reminders) -> None:
    engine = open_case(app, local("23:00"))
    engine.deliver(held(None, "dispute:D-1", False, local("23:30")))
    resolved_at = local("12:00", DAY + timedelta(days=1))
    engine.clock.set(local("09:00", DAY + timedelta(days=1)))
    engine.deliver(event_of(ContactResumed(loan_id="L-1", rule="C3", reason="resolved",
                                           at=resolved_at, hold_id="dispute:D-1"),
                            engine.clock.now(), "ev-resumed"))
    engine.run()
    assert engine.outbox.channels() == []
    engine.at(resolved_at)
    assert engine.outbox.channels() == ["sms"]


def test_a_send_cut_short_under_a_dispute_waits_off_the_agenda(app: Reminders) -> None:
    engine = Engine(app, ManualClock(local("11:00")))
    engine.deliver(case_opened(local("11:00")))
    app.take_step(ContactPlan.create_id("L-1"), engine.clock.now())
    (reminder,) = engine.reminders()
    reminder.start_sending(engine.clock.now())
    app.save(reminder)  # and the process dies here
    engine.deliver(held(None, "dispute:D-2", False, engine.clock.now()))
    engine.run()
    assert app.due(engine.clock.now() + timedelta(days=30)) == []
    assert app.repository.get(reminder.id).held_by == "dispute:D-2"


def test_a_held_message_states_a_deadline_from_the_day_it_goes(app: Reminders) -> None:
    engine = open_case(app, local("23:00"))
    engine.deliver(held(None, "dispute:D-3", False, local("23:30")))
    resumed_at = local("10:00", DAY + timedelta(days=10))
    engine.clock.set(resumed_at)
    engine.deliver(event_of(ContactResumed(loan_id="L-1", rule="C3", reason="resolved",
                                           at=resumed_at, hold_id="dispute:D-3"),
                            resumed_at, "ev-resumed-3"))
    engine.run()
    assert (DAY + timedelta(days=17)).isoformat() in engine.outbox.sent[0].text


def test_a_ceased_call_channel_plans_no_call_tasks(app: Reminders) -> None:
    opened_at = local("10:00")
    engine = open_case(app, opened_at)
    engine.deliver(held([Channel.CALL], "cease:5", True, opened_at))
    for day in range(1, 12):
        engine.at(opened_at + timedelta(days=day))
    assert engine.tasks() == []


def test_a_receipts_reason_is_masked_before_it_is_logged(app: Reminders) -> None:
    engine = open_case(app, local("10:00"))
    (sms,) = engine.reminders()
    app.receipt("sms", sms.id, False, local("10:01"), "rejected for +8613800000000 wang@x.cn")
    published = [integration_event(app.mapper.to_domain_event(n))
                 for n in app.recorder.select_notifications(1, 100)]
    (failed,) = [p.data for p in published
                 if p is not None and type(p.data).__name__ == "ReminderFailed"]
    reason = getattr(failed, "reason", "")
    assert "rejected for" in reason
    assert "13800000000" not in reason and "wang@x.cn" not in reason


def test_a_waiting_message_states_the_amount_overdue_now_not_at_the_opening(
        app: Reminders) -> None:
    engine = open_case(app, local("23:00"))  # the SMS waits for 08:00
    opened = case_opened(local("23:00"))
    terms = {k: v for k, v in opened.data.items() if k not in ("stage", "opened_at")}
    updated = CaseUpdated.model_validate({**terms, "amount_overdue": "100.00", "reason": "paid"})
    engine.deliver(event_of(updated, local("23:30"), "ev-updated"))
    engine.at(local("08:00", DAY + timedelta(days=1)))
    (sms,) = engine.outbox.sent
    assert "100.00" in sms.text and "1200.50" not in sms.text
    engine.at(local("10:00", DAY + timedelta(days=3)))
    assert "100.00" in engine.outbox.sent[1].text  # and the steps after it
