"""Exactly-once effect: a message redelivered at the same offset, or the same event at a new
offset, changes nothing but the consumer's position, in every service that consumes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
from fastapi import FastAPI

from shared import topics
from shared.application import ServiceApplication
from shared.clock import ManualClock
from shared.consumer import HandlerSink
from shared.events import (
    Borrower,
    CaseOpened,
    CloudEvent,
    LoanOverdue,
    PaymentReceived,
    ReminderScheduled,
    envelope,
)
from shared.tlog import leaf_hash
from tests.helpers import loan_body
from tests.service.records import consumer_record, position_name, tracking_of

from services.audit.application import AuditLog
from services.audit.signer import generate_signer, load_signer
from services.audit.store import LogStore
from services.escalation.application import Cases
from services.escalation.domain import CollectionCase
from services.escalation.handlers import HANDLERS as ESCALATION_HANDLERS
from services.reminder.application import Reminders
from services.reminder.domain import ContactPlan, Reminder
from services.reminder.handlers import HANDLERS as REMINDER_HANDLERS
from services.reminder.relay import integration_event as reminder_publication

FIRST, AGAIN, LATER = 5, 5, 9


def audit_log(path: Path) -> AuditLog:
    name, signer = load_signer(generate_signer("test.local/audit")[0])
    return AuditLog(LogStore(path), name, signer, vkey="")


def overdue_event(clock: ManualClock, event_id: str = "ev-overdue-1",
                  dpd: int = 35) -> CloudEvent:
    return envelope(LoanOverdue.model_validate(loan_body("L-1", dpd=dpd)), event_id=event_id,
                    source="/lender-1/core", time=clock.now(), causation_id=None,
                    correlation_id=None)


def case_opened_event(clock: ManualClock, event_id: str = "ev-opened-1") -> CloudEvent:
    data = CaseOpened(
        loan_id="L-1", lender_id="lender-1",
        borrower=Borrower(borrower_id="B-1", name="Wang Fang", phone="+8613800000000",
                          timezone="Asia/Shanghai"),
        amount_overdue=Decimal("1200.50"), currency="CNY", due_date=date(2026, 10, 1),
        days_past_due=13, repayment_channel="transfer to account 6222-0000-1111",
        stage="soft_reminders", opened_at=clock.now())
    return envelope(data, event_id=event_id, source="/dunwell/escalation", time=clock.now(),
                    causation_id="ev-overdue-1", correlation_id="ev-overdue-1")


def deliver(sink: HandlerSink | AuditLog, event: CloudEvent, topic: str, offset: int) -> bool:
    record = consumer_record(event, topic, offset)
    return sink.process(tracking_of(record), record, event, event.payload())


def stored(app: ServiceApplication) -> int:
    return app.recorder.max_notification_id() or 0


def position(sink: HandlerSink | AuditLog, topic: str) -> int | None:
    return sink.position(position_name(topic))


@pytest.fixture
def service(build: Callable[[str], FastAPI]) -> Callable[[str], ServiceApplication]:
    """The application a service's composition root builds, over SQLite under tmp_path."""

    def application(name: str) -> ServiceApplication:
        store: ServiceApplication = build(name).state.service
        return store

    return application


# --- (a) escalation ---

@pytest.fixture
def cases(service: Callable[[str], ServiceApplication]) -> Cases:
    app = service("escalation")
    assert isinstance(app, Cases)
    return app


@pytest.fixture
def escalation_sink(cases: Cases, clock: ManualClock) -> HandlerSink:
    return HandlerSink(cases, ESCALATION_HANDLERS, clock)


def test_escalation_opens_one_case_for_a_first_delivery(escalation_sink: HandlerSink,
                                                        cases: Cases,
                                                        clock: ManualClock) -> None:
    assert deliver(escalation_sink, overdue_event(clock), topics.LOANS, FIRST) is True
    case = cases.case("L-1")
    assert case is not None and case.status == "open"
    assert case.correlation_id == "ev-overdue-1"
    assert position(escalation_sink, topics.LOANS) == FIRST


def test_escalation_ignores_a_redelivery_at_the_same_offset(escalation_sink: HandlerSink,
                                                            cases: Cases,
                                                            clock: ManualClock) -> None:
    deliver(escalation_sink, overdue_event(clock), topics.LOANS, FIRST)
    stored_before = stored(cases)

    assert deliver(escalation_sink, overdue_event(clock), topics.LOANS, AGAIN) is False

    assert stored(cases) == stored_before
    assert position(escalation_sink, topics.LOANS) == FIRST
    assert cases.repository.get(CollectionCase.create_id("L-1")).version == 1


def test_escalation_ignores_the_same_event_at_a_new_offset_and_moves_on(
        escalation_sink: HandlerSink, cases: Cases, clock: ManualClock) -> None:
    deliver(escalation_sink, overdue_event(clock), topics.LOANS, FIRST)
    stored_before = stored(cases)

    assert deliver(escalation_sink, overdue_event(clock), topics.LOANS, LATER) is False

    assert stored(cases) == stored_before
    assert position(escalation_sink, topics.LOANS) == LATER  # so it is not read a third time
    assert cases.repository.get(CollectionCase.create_id("L-1")).version == 1


def test_escalation_applies_a_new_report_of_the_same_loan(escalation_sink: HandlerSink,
                                                          cases: Cases,
                                                          clock: ManualClock) -> None:
    deliver(escalation_sink, overdue_event(clock), topics.LOANS, FIRST)
    assert deliver(escalation_sink, overdue_event(clock, "ev-overdue-2", dpd=36), topics.LOANS,
                   LATER) is True
    case = cases.repository.get(CollectionCase.create_id("L-1"))
    assert (case.version, case.status, case.days_past_due) == (2, "open", 36)


def test_escalation_closes_a_paid_case_once(escalation_sink: HandlerSink, cases: Cases,
                                            clock: ManualClock) -> None:
    deliver(escalation_sink, overdue_event(clock), topics.LOANS, 1)
    paid = envelope(PaymentReceived(loan_id="L-1", amount=Decimal("1200.50"), currency="CNY",
                                    paid_at=clock.now(), remaining_overdue=Decimal("0")),
                    event_id="ev-paid-1", source="/lender-1/core", time=clock.now(),
                    causation_id=None, correlation_id=None)
    assert deliver(escalation_sink, paid, topics.LOANS, 2) is True
    after_payment = stored(cases)
    assert deliver(escalation_sink, paid, topics.LOANS, 2) is False
    assert deliver(escalation_sink, paid, topics.LOANS, 3) is False
    assert stored(cases) == after_payment
    case = cases.case("L-1")
    assert case is not None and (case.status, case.close_reason) == ("closed", "paid")


def test_a_redelivery_survives_a_restart(build: Callable[[str], FastAPI],
                                         clock: ManualClock) -> None:
    first: Cases = build("escalation").state.service
    deliver(HandlerSink(first, ESCALATION_HANDLERS, clock), overdue_event(clock), topics.LOANS,
            FIRST)
    stored_before = stored(first)

    restarted: Cases = build("escalation").state.service
    sink = HandlerSink(restarted, ESCALATION_HANDLERS, clock)
    assert position(sink, topics.LOANS) == FIRST
    assert deliver(sink, overdue_event(clock), topics.LOANS, LATER) is False
    assert stored(restarted) == stored_before


# --- (b) reminder ---

@pytest.fixture
def reminders(service: Callable[[str], ServiceApplication]) -> Reminders:
    app = service("reminder")
    assert isinstance(app, Reminders)
    return app


def scheduled(app: Reminders) -> list[ReminderScheduled]:
    """The ReminderScheduled events the relay would publish from the notification log."""
    found = []
    for notification in app.recorder.select_notifications(1, 1000):
        publication = reminder_publication(app.mapper.to_domain_event(notification))
        if publication is not None and isinstance(publication.data, ReminderScheduled):
            found.append(publication.data)
    return found


def test_reminder_plans_one_reminder_for_a_case_delivered_three_times(
        reminders: Reminders, clock: ManualClock) -> None:
    sink = HandlerSink(reminders, REMINDER_HANDLERS, clock)
    opened = case_opened_event(clock)

    assert deliver(sink, opened, topics.CASES, FIRST) is True
    stored_once = stored(reminders)
    assert deliver(sink, opened, topics.CASES, AGAIN) is False
    assert position(sink, topics.CASES) == FIRST
    assert deliver(sink, opened, topics.CASES, LATER) is False
    assert position(sink, topics.CASES) == LATER

    assert stored(reminders) == stored_once
    plan_id = ContactPlan.create_id("L-1")
    assert reminders.due(clock.now()) == [plan_id]  # one plan, its day-0 step due
    reminders.take_step(plan_id, clock.now())
    planned = reminders.reminders_of("L-1")
    assert planned is not None and len(planned) == 1
    assert [event.reminder_id for event in scheduled(reminders)] == [
        Reminder.create_id(f"{opened.id}/0/sms")]
    assert reminders.due(clock.now()) == [planned[0].id]


# --- (c) audit ---

@pytest.fixture
def audit_path(tmp_path: Path) -> Path:
    return tmp_path / "audit.db"


@pytest.fixture
def audit(audit_path: Path) -> Iterator[AuditLog]:
    log = audit_log(audit_path)
    yield log
    log.store.close()


def test_audit_logs_an_event_once_whatever_the_redelivery(audit: AuditLog,
                                                          clock: ManualClock) -> None:
    event = overdue_event(clock)
    assert deliver(audit, event, topics.LOANS, FIRST) is True
    assert (audit.store.size, position(audit, topics.LOANS)) == (1, FIRST)

    assert deliver(audit, event, topics.LOANS, AGAIN) is False
    assert (audit.store.size, position(audit, topics.LOANS)) == (1, FIRST)

    assert deliver(audit, event, topics.LOANS, LATER) is False
    assert (audit.store.size, position(audit, topics.LOANS)) == (1, LATER)


def test_audit_keeps_the_leaf_bytes_exactly_as_consumed(audit: AuditLog,
                                                        clock: ManualClock) -> None:
    event = overdue_event(clock)
    deliver(audit, event, topics.LOANS, FIRST)
    [leaf] = audit.timeline("L-1")
    assert (leaf.leaf_index, leaf.event_id, leaf.event_type) == (0, event.id, "LoanOverdue")
    assert leaf.data == consumer_record(event, topics.LOANS, FIRST).value
    assert leaf_hash(leaf.data) == leaf_hash(event.encode())


def test_audit_positions_are_per_topic(audit: AuditLog, clock: ManualClock) -> None:
    deliver(audit, overdue_event(clock), topics.LOANS, FIRST)
    assert deliver(audit, case_opened_event(clock), topics.CASES, 0) is True
    assert (position(audit, topics.LOANS), position(audit, topics.CASES)) == (FIRST, 0)
    assert audit.store.size == 2


def test_a_reopened_audit_log_keeps_its_size_and_positions(audit_path: Path,
                                                           clock: ManualClock) -> None:
    before = audit_log(audit_path)
    deliver(before, overdue_event(clock), topics.LOANS, FIRST)
    deliver(before, overdue_event(clock), topics.LOANS, LATER)
    deliver(before, case_opened_event(clock), topics.CASES, 2)
    before.store.close()

    reopened = audit_log(audit_path)
    try:
        assert reopened.store.size == 2
        assert (position(reopened, topics.LOANS), position(reopened, topics.CASES)) == (LATER, 2)
        assert deliver(reopened, overdue_event(clock), topics.LOANS, LATER + 1) is False
        assert deliver(reopened, case_opened_event(clock), topics.CASES, 2) is False
        assert reopened.store.size == 2
        assert [leaf.leaf_index for leaf in reopened.timeline("L-1")] == [0, 1]
    finally:
        reopened.store.close()
