"""A field visit's advance notice (C8) goes out through the reminder service's one outbound
path: an SMS in the borrower's language and zone under C4, C3 and C1 like any message, once,
reported with its visit, and dropped while still pending when the visit is called off."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from eventsourcing.persistence import Tracking

from shared.clock import ManualClock
from shared.consumer import HandlerSink, Rejected
from shared.events import (
    Borrower,
    CadencePaused,
    CaseClosed,
    CaseOpened,
    Channel,
    CloudEvent,
    ContactBlocked,
    ContactResumed,
    EventData,
    ReminderCancelled,
    ReminderDelivered,
    ReminderFailed,
    ReminderSent,
    ScheduledCollector,
    VisitCancelled,
    VisitDeclined,
    VisitScheduled,
    envelope,
)
from shared.policy_pack import CN
from tests.service.records import consumer_record
from tests.unit.reminder.test_application import (
    DAY,
    IN_MEMORY,
    PHONE,
    Engine,
    event_of,
    held,
    local,
)

from services.reminder.application import Reminders
from services.reminder.domain import ContactPlan, Reminder
from services.reminder.handlers import HANDLERS
from services.reminder.relay import integration_event

VISITS = "kafka/inc/visits.events/0"
VISIT = UUID("6f1c2a4e-0000-4000-8000-00000000000a")
VERIFY = "http://127.0.0.1:8003/v1/verify"
COLLECTORS = [
    ScheduledCollector(collector_id="C-7", name="Zhang Wei", agency="Eastbridge Recoveries",
                       letter_id="LTR-7", verification_code="VC7K2M9Q"),
    ScheduledCollector(collector_id="C-8", name="Liu Yang", letter_id="LTR-8",
                       verification_code="VC8P4R6T"),
]
START, END = local("10:00", DAY + timedelta(days=3)), local("12:00", DAY + timedelta(days=3))


@pytest.fixture
def app() -> Iterator[Reminders]:
    reminders = Reminders(CN, "the official hotline 95555", env=IN_MEMORY)
    yield reminders
    reminders.close()


def opened(now: datetime, language: str = "zh-CN") -> CloudEvent:
    data = CaseOpened(
        loan_id="L-1", lender_id="lender-1",
        borrower=Borrower(borrower_id="B-1", name="Wang Fang", phone=PHONE,
                          timezone="Asia/Shanghai"),
        amount_overdue=Decimal("1200.50"), currency="CNY", due_date=date(2026, 7, 1),
        days_past_due=105, repayment_channel="transfer to account 6222-0000-1111",
        language=language, stage="field_visit", opened_at=now)  # type: ignore[arg-type]
    return event_of(data, now, "ev-opened-L-1")


def scheduled(*, start: datetime = START, end: datetime = END,
              address_kind: str = "residence", loan_id: str = "L-1") -> VisitScheduled:
    return VisitScheduled(loan_id=loan_id, visit_id=VISIT, scheduled_start=start,
                          scheduled_end=end, address_kind=address_kind,  # type: ignore[arg-type]
                          collector_ids=[c.collector_id for c in COLLECTORS],
                          collectors=COLLECTORS)


class Visits:
    """visits.events through the reminder's own sink, at the engine's clock."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.offset = 0

    def deliver(self, data: EventData, event_id: str, offset: int | None = None) -> bool:
        now = self.engine.clock.now()
        event = envelope(data, event_id=event_id, source="/dunwell/visit", time=now,
                         causation_id="ev-visit-requested", correlation_id="ev-overdue-1")
        if offset is None:
            self.offset += 1
            offset = self.offset
        sink = HandlerSink(self.engine.app, HANDLERS, self.engine.clock)
        record = consumer_record(event, "visits.events", offset)
        handled = sink.process(Tracking(VISITS, offset), record, event, event.payload())
        self.engine.run()
        return handled


def start(app: Reminders, at: datetime, language: str = "zh-CN") -> tuple[Engine, Visits]:
    """A case opened in the borrower's morning (its first SMS goes then), then the clock at
    `at`, where the visit is scheduled."""
    engine = Engine(app, ManualClock(local("09:00")))
    engine.deliver(opened(local("09:00"), language))
    engine.run()
    engine.clock.set(at)
    return engine, Visits(engine)


def notices(engine: Engine) -> list[Reminder]:
    return [r for r in engine.reminders() if r.visit_id is not None]


def notice_texts(engine: Engine) -> list[str]:
    keys = {str(n.id) for n in notices(engine)}
    return [m.text for m in engine.outbox.sent if m.idempotency_key in keys]


def published(app: Reminders) -> list[Any]:
    found = [integration_event(app.mapper.to_domain_event(n))
             for n in app.recorder.select_notifications(1, 1000)]
    return [p.data for p in found if p is not None]


def about(app: Reminders, reminder: Reminder, kind: type[EventData]) -> list[Any]:
    return [d for d in published(app)
            if isinstance(d, kind) and getattr(d, "reminder_id", None) == reminder.id]


# --- sent, with its visit ---


def test_in_hours_the_notice_goes_at_once_naming_the_window_place_collectors_and_codes(
        app: Reminders) -> None:
    engine, visits = start(app, local("10:00", DAY + timedelta(days=1)))
    assert visits.deliver(scheduled(), "ev-scheduled-1") is True
    (notice,) = notices(engine)
    assert (notice.status, notice.channel, notice.recipient) == ("sent", "sms", PHONE)
    (text,) = notice_texts(engine)
    assert "2026-10-17 10:00至12:00" in text and "住所" in text
    assert "Zhang Wei（Eastbridge Recoveries）、Liu Yang" in text  # noqa: RUF001
    assert f"{VERIFY}/VC7K2M9Q" in text and f"{VERIFY}/VC8P4R6T" in text
    assert text.startswith("lender-1通知")
    (sent,) = about(app, notice, ReminderSent)
    assert (sent.visit_id, sent.template_id, sent.template_version) == (VISIT, "visit.notice", 1)
    assert sent.channel == Channel.SMS and sent.borrower_local_time.startswith(
        "2026-10-15T10:00:00+08:00")


def test_the_cadence_messages_carry_no_visit(app: Reminders) -> None:
    _engine, visits = start(app, local("10:00", DAY + timedelta(days=1)))
    visits.deliver(scheduled(), "ev-scheduled-1")
    sent = [d for d in published(app) if isinstance(d, ReminderSent)]
    assert [(s.template_id, s.visit_id) for s in sent] == [
        ("sms.reminder", None), ("visit.notice", VISIT)]


def test_an_english_borrower_reads_it_in_english_at_their_workplace(app: Reminders) -> None:
    engine, visits = start(app, local("10:00", DAY + timedelta(days=1)), language="en")
    visits.deliver(scheduled(address_kind="workplace"), "ev-scheduled-1")
    (text,) = notice_texts(engine)
    assert text.startswith("lender-1: we plan to visit you at your workplace between "
                           "2026-10-17 10:00 and 12:00.")
    assert "Coming: Zhang Wei (Eastbridge Recoveries), Liu Yang." in text
    assert f"check them at {VERIFY}/VC7K2M9Q, {VERIFY}/VC8P4R6T." in text
    assert "住所" not in text and "上门" not in text


def test_a_window_over_midnight_states_both_dates_in_the_borrowers_zone(
        app: Reminders) -> None:
    engine, visits = start(app, local("10:00", DAY + timedelta(days=1)), language="en")
    # 21:00 to 09:00 the next morning, Shanghai time, given in UTC as the event carries it
    visits.deliver(scheduled(start=datetime(2026, 10, 17, 13, 0, tzinfo=UTC),
                             end=datetime(2026, 10, 18, 1, 0, tzinfo=UTC)), "ev-scheduled-1")
    (text,) = notice_texts(engine)
    assert "between 2026-10-17 21:00 and 2026-10-18 09:00." in text


def test_the_verification_route_is_a_setting(app: Reminders) -> None:
    app.verify_url = "https://verify.example.cn/v1/verify/"
    engine, visits = start(app, local("10:00", DAY + timedelta(days=1)), language="en")
    visits.deliver(scheduled(), "ev-scheduled-1")
    (text,) = notice_texts(engine)
    assert "https://verify.example.cn/v1/verify/VC7K2M9Q, " in text
    assert "127.0.0.1" not in text


# --- C1 ---


def test_at_2230_local_the_notice_is_deferred_to_0800_by_c1(app: Reminders) -> None:
    engine, visits = start(app, local("22:30", DAY + timedelta(days=1)))
    visits.deliver(scheduled(), "ev-scheduled-1")
    (notice,) = notices(engine)
    assert notice.status == "pending" and notice_texts(engine) == []
    morning = local("08:00", DAY + timedelta(days=2))
    (blocked,) = about(app, notice, ContactBlocked)
    assert (blocked.rule, blocked.deferred_until) == ("C1", morning)
    engine.at(morning - timedelta(minutes=1))
    assert notice_texts(engine) == []
    engine.at(morning)
    assert len(notice_texts(engine)) == 1
    (sent,) = about(app, notice, ReminderSent)
    assert sent.sent_at == morning and sent.visit_id == VISIT


# --- once ---


def test_a_redelivered_visit_scheduled_sends_once(app: Reminders) -> None:
    engine, visits = start(app, local("22:30", DAY + timedelta(days=1)))
    visits.deliver(scheduled(), "ev-scheduled-1")
    assert visits.deliver(scheduled(), "ev-scheduled-1", offset=1) is False  # the same offset
    assert visits.deliver(scheduled(), "ev-scheduled-1") is False  # again, at a later offset
    visits.deliver(scheduled(), "ev-scheduled-1-republished")  # the same schedule, another id
    engine.at(local("08:00", DAY + timedelta(days=2)))
    engine.at(local("12:00", DAY + timedelta(days=2)))
    assert len(notices(engine)) == 1 and len(notice_texts(engine)) == 1
    assert len([d for d in published(app) if isinstance(d, ReminderSent) and d.visit_id]) == 1


def test_a_crash_mid_send_resends_the_notice_under_its_key_once(tmp_path: Path) -> None:
    store = {"PERSISTENCE_MODULE": "eventsourcing.sqlite",
             "SQLITE_DBNAME": str(tmp_path / "reminder.db")}
    before = Reminders(CN, "the official hotline 95555", env=store)
    engine, visits = start(before, local("22:30", DAY + timedelta(days=1)))
    visits.deliver(scheduled(), "ev-scheduled-1")
    (notice,) = notices(engine)
    engine.clock.set(local("08:00", DAY + timedelta(days=2)))
    notice.start_sending(engine.clock.now())
    before.save(notice)
    before.close()  # the process dies here: the send is recorded as started, never as sent

    after = Reminders(CN, "the official hotline 95555", env=store)
    resumed = Engine(after, engine.clock, engine.outbox)
    resumed.run()
    Visits(resumed).deliver(scheduled(), "ev-scheduled-1", offset=1)  # redelivered after it
    resumed.run()
    assert [m.idempotency_key for m in engine.outbox.sent][1:] == [str(notice.id)]
    resent: Reminder = after.repository.get(notice.id)
    assert (resent.status, resent.attempts, resent.visit_id) == ("sent", 2, str(VISIT))
    (sent,) = about(after, resent, ReminderSent)
    assert sent.visit_id == VISIT
    after.close()


# --- C3, C4, and no plan ---


def test_with_sms_ceased_the_notice_is_blocked_by_c3_and_nothing_goes(app: Reminders) -> None:
    engine, visits = start(app, local("10:00", DAY + timedelta(days=1)))
    engine.deliver(held([Channel.SMS], "cease:1", True, engine.clock.now()))
    visits.deliver(scheduled(), "ev-scheduled-1")
    (notice,) = notices(engine)
    assert notice_texts(engine) == []
    assert notice.status == "cancelled" and notice.cancelled and notice.cancelled["rule"] == "C3"
    (blocked,) = about(app, notice, ContactBlocked)
    assert (blocked.rule, blocked.deferred_until) == ("C3", None)
    assert [c.rule for c in about(app, notice, ReminderCancelled)] == ["C3"]
    assert about(app, notice, ReminderSent) == []


def test_during_a_dispute_the_notice_waits_blocked_by_c3(app: Reminders) -> None:
    engine, visits = start(app, local("10:00", DAY + timedelta(days=1)))
    engine.deliver(held(None, "dispute:D-1", False, engine.clock.now()))
    visits.deliver(scheduled(), "ev-scheduled-1")
    (notice,) = notices(engine)
    assert notice.held_by == "dispute:D-1" and notice_texts(engine) == []
    (blocked,) = about(app, notice, ContactBlocked)
    assert (blocked.rule, blocked.deferred_until) == ("C3", None)


def test_a_closed_case_is_sent_no_notice(app: Reminders) -> None:
    engine, visits = start(app, local("10:00", DAY + timedelta(days=1)))
    engine.deliver(event_of(CaseClosed(loan_id="L-1", reason="paid", closed_at=local("09:30")),
                            engine.clock.now(), "ev-closed"))
    assert visits.deliver(scheduled(), "ev-scheduled-1") is True
    engine.at(local("12:00", DAY + timedelta(days=2)))
    assert notices(engine) == [] and notice_texts(engine) == []
    assert [d for d in published(app) if isinstance(d, ReminderSent) and d.visit_id] == []


def test_closing_the_case_drops_a_pending_notice_by_c4(app: Reminders) -> None:
    engine, visits = start(app, local("22:30", DAY + timedelta(days=1)))
    visits.deliver(scheduled(), "ev-scheduled-1")
    engine.deliver(event_of(CaseClosed(loan_id="L-1", reason="paid", closed_at=local("23:00")),
                            engine.clock.now(), "ev-closed"))
    engine.at(local("08:00", DAY + timedelta(days=2)))
    (notice,) = notices(engine)
    assert notice.cancelled and notice.cancelled["rule"] == "C4"
    assert notice_texts(engine) == []


def test_a_visit_of_a_loan_without_a_plan_is_dead_lettered(app: Reminders) -> None:
    _engine, visits = start(app, local("10:00", DAY + timedelta(days=1)))
    with pytest.raises(Rejected, match="no contact plan for loan L-404"):
        visits.deliver(scheduled(loan_id="L-404"), "ev-scheduled-404")
    assert app.plan_of("L-404") is None


def test_a_visit_naming_no_collector_is_dead_lettered(app: Reminders) -> None:
    engine, visits = start(app, local("10:00", DAY + timedelta(days=1)))
    bare = scheduled().model_copy(update={"collectors": []})
    with pytest.raises(Rejected, match="C5"):
        visits.deliver(bare, "ev-scheduled-bare")
    assert notices(engine) == []


# --- pauses ---


def pause(engine: Engine, reason: str, event_id: str) -> None:
    now = engine.clock.now()
    engine.deliver(event_of(CadencePaused(loan_id="L-1", pause_id=f"{reason}:P-1",
                                          reason=reason, at=now),  # type: ignore[arg-type]
                            now, event_id))


def test_a_promises_pause_does_not_hold_the_notice(app: Reminders) -> None:
    engine, visits = start(app, local("22:30", DAY + timedelta(days=1)))
    visits.deliver(scheduled(), "ev-scheduled-1")
    pause(engine, "promise", "ev-paused")
    (notice,) = notices(engine)
    assert notice.paused_by is None
    engine.at(local("08:00", DAY + timedelta(days=2)))
    assert len(notice_texts(engine)) == 1


def test_a_hardship_holds_the_notice(app: Reminders) -> None:
    engine, visits = start(app, local("10:00", DAY + timedelta(days=1)))
    pause(engine, "hardship", "ev-paused")
    visits.deliver(scheduled(), "ev-scheduled-1")
    (notice,) = notices(engine)
    assert notice.paused_by == "hardship:P-1" and notice_texts(engine) == []


# --- receipts ---


def test_the_providers_receipt_reports_delivery_with_the_visit(app: Reminders) -> None:
    engine, visits = start(app, local("10:00", DAY + timedelta(days=1)))
    visits.deliver(scheduled(), "ev-scheduled-1")
    (notice,) = notices(engine)
    app.receipt("sms", notice.id, True, engine.clock.now() + timedelta(seconds=5), None)
    (delivered,) = about(app, notice, ReminderDelivered)
    assert delivered.visit_id == VISIT and delivered.channel == Channel.SMS
    assert app.repository.get(notice.id).delivery == "delivered"


def test_a_failed_receipt_reports_the_failure_with_the_visit(app: Reminders) -> None:
    engine, visits = start(app, local("10:00", DAY + timedelta(days=1)))
    visits.deliver(scheduled(), "ev-scheduled-1")
    (notice,) = notices(engine)
    app.receipt("sms", notice.id, False, engine.clock.now(), "handset unreachable")
    (failed,) = about(app, notice, ReminderFailed)
    assert failed.visit_id == VISIT and "unreachable" in failed.reason


# --- called off ---


@pytest.mark.parametrize(("called_off", "rule"), [
    (VisitCancelled(visit_id=VISIT, loan_id="L-1", reason="case paid", rule="C4",
                    cancelled_at=local("23:00", DAY + timedelta(days=1))), "C4"),
    (VisitCancelled(visit_id=VISIT, loan_id="L-1", reason="collector unavailable",
                    cancelled_at=local("23:00", DAY + timedelta(days=1))), "visit_cancelled"),
    (VisitCancelled(visit_id=VISIT, loan_id="L-1", reason="complaint open", rule="C14",
                    cancelled_at=local("23:00", DAY + timedelta(days=1))), "C14"),
    (VisitDeclined(visit_id=VISIT, loan_id="L-1", via="call",
                   declined_at=local("23:00", DAY + timedelta(days=1))), "C9"),
], ids=["cancelled-c4", "cancelled-no-rule", "cancelled-c14", "declined"])
def test_a_pending_notice_is_dropped_when_the_visit_is_called_off(
        app: Reminders, called_off: EventData, rule: str) -> None:
    engine, visits = start(app, local("22:30", DAY + timedelta(days=1)))
    visits.deliver(scheduled(), "ev-scheduled-1")
    visits.deliver(called_off, "ev-called-off")
    engine.at(local("08:00", DAY + timedelta(days=2)))
    (notice,) = notices(engine)
    assert notice.status == "cancelled" and notice_texts(engine) == []
    (cancelled,) = about(app, notice, ReminderCancelled)
    assert cancelled.rule == rule and cancelled.channel == Channel.SMS


def test_a_sent_notice_is_not_recalled(app: Reminders) -> None:
    engine, visits = start(app, local("10:00", DAY + timedelta(days=1)))
    visits.deliver(scheduled(), "ev-scheduled-1")
    visits.deliver(VisitDeclined(visit_id=VISIT, loan_id="L-1", via="call",
                                 declined_at=engine.clock.now()), "ev-declined")
    (notice,) = notices(engine)
    assert notice.status == "sent" and notice.withdrawn == {
        "rule": "C9", "reason": "the borrower declined the visit"}
    assert about(app, notice, ReminderCancelled) == []
    assert len(notice_texts(engine)) == 1


def test_a_send_cut_short_for_a_visit_since_cancelled_is_not_finished(
        app: Reminders) -> None:
    engine, visits = start(app, local("22:30", DAY + timedelta(days=1)))
    visits.deliver(scheduled(), "ev-scheduled-1")
    (notice,) = notices(engine)
    engine.clock.set(local("08:00", DAY + timedelta(days=2)))
    notice.start_sending(engine.clock.now())
    app.save(notice)  # and the process dies here
    visits.deliver(VisitCancelled(visit_id=VISIT, loan_id="L-1", reason="collector ill",
                                  cancelled_at=engine.clock.now()), "ev-cancelled")
    engine.run()
    dropped: Reminder = app.repository.get(notice.id)
    assert dropped.status == "cancelled" and notice_texts(engine) == []
    assert dropped.cancelled and "the provider may have it" in dropped.cancelled["reason"]


def test_a_visit_scheduled_again_gets_a_notice_of_its_new_window(app: Reminders) -> None:
    engine, visits = start(app, local("22:30", DAY + timedelta(days=1)), language="en")
    visits.deliver(scheduled(), "ev-scheduled-1")
    later = START + timedelta(days=1)
    visits.deliver(scheduled(start=later, end=later + timedelta(hours=2)), "ev-scheduled-2")
    engine.at(local("08:00", DAY + timedelta(days=2)))
    first, second = notices(engine)
    assert first.cancelled and first.cancelled["rule"] == "rescheduled"
    (text,) = notice_texts(engine)
    assert "between 2026-10-18 10:00 and 12:00." in text and second.status == "sent"


def test_a_declined_visit_consented_and_scheduled_again_gets_a_new_notice(
        app: Reminders) -> None:
    engine, visits = start(app, local("10:00", DAY + timedelta(days=1)))
    visits.deliver(scheduled(), "ev-scheduled-1")
    visits.deliver(VisitDeclined(visit_id=VISIT, loan_id="L-1", via="call",
                                 declined_at=engine.clock.now()), "ev-declined")
    visits.deliver(scheduled(), "ev-scheduled-2")  # the same window, after consent
    assert [n.status for n in notices(engine)] == ["sent", "sent"]
    assert len(notice_texts(engine)) == 2


def test_a_notice_kept_waiting_past_the_windows_start_is_dropped_by_c8(
        app: Reminders) -> None:
    engine, visits = start(app, local("10:00", DAY + timedelta(days=1)))
    engine.deliver(held(None, "dispute:D-2", False, engine.clock.now()))
    visits.deliver(scheduled(), "ev-scheduled-1")
    resolved = START + timedelta(minutes=30)
    engine.clock.set(resolved)
    engine.deliver(event_of(ContactResumed(loan_id="L-1", rule="C3", reason="resolved",
                                           at=resolved, hold_id="dispute:D-2"),
                            resolved, "ev-resumed"))
    engine.run()
    (notice,) = notices(engine)
    assert notice.cancelled and notice.cancelled["rule"] == "C8"
    assert notice_texts(engine) == []


def test_the_plan_lists_the_notice_among_its_messages(app: Reminders) -> None:
    engine, visits = start(app, local("10:00", DAY + timedelta(days=1)))
    visits.deliver(scheduled(), "ev-scheduled-1")
    plan: ContactPlan = engine.plan()
    (notice_id,) = plan.notices[str(VISIT)]
    assert notice_id in plan.reminder_ids and plan.current is None
