"""The plan follows what escalation publishes: the opening stage's cadence (the built-in one
when none is named), a switch of cadence on escalation from its own day 0, pauses for a
promise, a plan or hardship (with courtesy reminders before a promise's due date), and the
cadence resuming where it was, never in a burst."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from shared.clock import ManualClock
from shared.events import (
    Borrower,
    Cadence,
    CadencePaused,
    CadenceResumed,
    CadenceStep,
    CaseClosed,
    CaseEscalated,
    CaseOpened,
    Channel,
    CloudEvent,
    Courtesy,
    EventData,
    Reason,
    Repeat,
)
from shared.policy_pack import CN
from tests.unit.reminder.test_application import (
    DAY,
    IN_MEMORY,
    PHONE,
    Engine,
    case_opened,
    event_of,
    local,
    open_case,
)

from services.reminder.application import Attempt, ContactPaused, Reminders
from services.reminder.domain import DEFAULT_CADENCE, ContactPlan, Reminder, Step
from services.reminder.relay import integration_event


@pytest.fixture
def app() -> Iterator[Reminders]:
    reminders = Reminders(CN, "the official hotline 95555", env=IN_MEMORY)
    yield reminders
    reminders.close()


def day(n: int, hhmm: str = "10:00") -> datetime:
    return local(hhmm, DAY + timedelta(days=n))


CALLS = Cadence(steps=[CadenceStep(day=0, channel=Channel.SMS)],
                repeat=Repeat(channel=Channel.CALL, from_day=0, every_days=1))


def opened_with(cadence: Cadence | None, now: datetime, event_id: str = "ev-opened-L-1"
                ) -> CloudEvent:
    data = CaseOpened(
        loan_id="L-1", lender_id="lender-1",
        borrower=Borrower(borrower_id="B-1", name="Wang Fang", phone=PHONE,
                          email="wang@example.com", timezone="Asia/Shanghai"),
        amount_overdue=Decimal("1200.50"), currency="CNY", due_date=date(2026, 10, 1),
        days_past_due=13, repayment_channel="transfer to account 6222-0000-1111",
        stage="soft_reminders", opened_at=now, cadence=cadence,
        policy_version="cn-2026.1/lender-1@3" if cadence else None)
    return event_of(data, now, event_id)


def escalated(at: datetime | None, cadence: Cadence | None = CALLS, to_stage: str = "calls",
              event_id: str = "ev-escalated", sent: datetime | None = None) -> CloudEvent:
    data = CaseEscalated(loan_id="L-1", from_stage="soft_reminders", to_stage=to_stage,
                         reasons=[Reason(code="dpd", value="31", threshold="31")],
                         policy_version="cn-2026.1/lender-1@3", cadence=cadence,
                         escalated_at=at, days_past_due=31)
    return event_of(data, sent or at or day(0), event_id)


def paused(pause_id: str, at: datetime, *courtesy: tuple[date, str],
           reason: str = "promise", event_id: str | None = None) -> CloudEvent:
    data = CadencePaused.model_validate({
        "loan_id": "L-1", "pause_id": pause_id, "reason": reason, "at": at,
        "courtesy": [Courtesy(due_date=d, amount=Decimal(a), currency="CNY")
                     for d, a in courtesy]})
    return event_of(data, at, event_id or f"ev-paused-{pause_id}")


def resumed(pause_id: str, at: datetime, reason: str = "promise",
            event_id: str | None = None) -> CloudEvent:
    data = CadenceResumed.model_validate({"loan_id": "L-1", "pause_id": pause_id,
                                          "reason": reason, "at": at})
    return event_of(data, at, event_id or f"ev-resumed-{pause_id}")


def deliver_at(engine: Engine, moment: datetime, event: CloudEvent) -> None:
    engine.clock.set(moment)
    engine.deliver(event)
    engine.run()


def walk(engine: Engine, start: datetime, end: datetime, every: timedelta) -> None:
    """Fire the agenda at each moment from `start` to `end`, as time goes by."""
    moment = start
    while moment <= end:
        engine.at(moment)
        moment += every


def published(app: Reminders) -> list[EventData]:
    found = [integration_event(app.mapper.to_domain_event(n))
             for n in app.recorder.select_notifications(1, 10_000)]
    return [p.data for p in found if p is not None]


def sent_times(engine: Engine) -> list[tuple[str, datetime | None]]:
    return [(r.channel, r.sent_at) for r in engine.reminders() if r.status == "sent"]


# --- the opening stage's cadence ---


def test_the_built_in_cadence_is_sms_email_push_then_a_call_every_day_from_day_6() -> None:
    assert [DEFAULT_CADENCE.step(i) for i in range(7)] == [
        Step(0, "sms"), Step(2, "email"), Step(4, "push"), Step(6, "call"), Step(7, "call"),
        Step(8, "call"), Step(9, "call")]


def test_a_case_opened_without_a_cadence_keeps_the_built_in_one(app: Reminders) -> None:
    engine = open_case(app, day(0))
    plan = engine.plan()
    assert plan.cadence == DEFAULT_CADENCE.as_data() and plan.strategy == "default@1"
    assert (plan.stage, plan.policy_version) == ("soft_reminders", None)
    walk(engine, day(1), day(6), timedelta(days=1))
    assert engine.outbox.channels() == ["sms", "email", "push"]
    assert [t.status for t in engine.tasks()] == ["issued"]


def test_a_plan_recorded_before_cadences_were_per_case_replays_with_the_built_in_one(
        app: Reminders) -> None:
    plan = ContactPlan("L-9", "lender-1", {"borrower_id": "B-9", "phone": PHONE,
                                           "timezone": "Asia/Shanghai"},
                       [], "zh-CN", None, {}, day(0), "default@1", "ev-old", "ev-old")
    (started,) = plan.collect_events()
    for name in ("cadence", "stage", "policy_version"):  # as the earlier code stored it
        del started.__dict__[name]
    app.recorder.insert_events([app.mapper.to_stored_event(started)])
    replayed: ContactPlan = app.repository.get(plan.id)
    assert replayed.cadence == DEFAULT_CADENCE.as_data() and replayed.stage is None
    assert replayed.next_due() == day(0)


def test_a_case_opened_with_its_stages_cadence_follows_it(app: Reminders) -> None:
    cadence = Cadence(steps=[CadenceStep(day=0, channel=Channel.PUSH),
                             CadenceStep(day=1, channel=Channel.SMS)])
    engine = Engine(app, ManualClock(day(0)))
    engine.deliver(opened_with(cadence, day(0)))
    engine.run()
    assert engine.outbox.channels() == ["push"]
    walk(engine, day(1), day(12), timedelta(days=1))
    assert engine.outbox.channels() == ["push", "sms"]  # no repeat: nothing more
    assert engine.tasks() == [] and engine.plan().next_due() is None
    assert engine.plan().policy_version == "cn-2026.1/lender-1@3"


def test_a_repeat_every_two_days_plans_a_call_task_every_other_day(app: Reminders) -> None:
    cadence = Cadence(repeat=Repeat(channel=Channel.CALL, from_day=1, every_days=2))
    engine = Engine(app, ManualClock(day(0)))
    engine.deliver(opened_with(cadence, day(0)))
    walk(engine, day(0), day(6), timedelta(days=1))
    assert [t.due_from for t in engine.tasks()] == [day(1), day(3), day(5)]
    assert engine.outbox.channels() == []


# --- escalation ---


def test_escalation_switches_the_cadence_from_its_own_day_0(app: Reminders) -> None:
    engine = open_case(app, day(0))  # the SMS of day 0 goes
    at = day(1, "09:30")
    deliver_at(engine, at, escalated(at))
    plan = engine.plan()
    assert (plan.stage, plan.policy_version, plan.day0) == (
        "calls", "cn-2026.1/lender-1@3", at)
    # step 0 of the new stage at once: its SMS, then a call task from the same day 0
    assert engine.outbox.channels() == ["sms", "sms"]
    assert engine.reminders()[1].id == Reminder.create_id("ev-escalated/0/sms")
    assert [t.due_from for t in engine.tasks()] == [at]
    walk(engine, day(2), day(4), timedelta(days=1))
    assert [t.due_from for t in engine.tasks()] == [at, day(2), day(3), day(4)]
    # the soft stage's e-mail (day 2) and push (day 4) never come
    assert engine.outbox.channels() == ["sms", "sms"]


def test_escalation_without_escalated_at_counts_from_the_events_time(app: Reminders) -> None:
    engine = open_case(app, day(0))
    deliver_at(engine, day(3), escalated(None, sent=day(3)))
    assert engine.plan().day0 == day(3) and engine.plan().stage == "calls"


def test_what_was_planned_before_the_escalation_still_goes_under_the_rules(
        app: Reminders) -> None:
    engine = open_case(app, day(0, "23:00"))  # its SMS waits for 08:00 (C1)
    deliver_at(engine, day(0, "23:30"), escalated(day(0, "23:30")))
    old, new = engine.reminders()
    assert (old.status, new.status) == ("pending", "pending")
    engine.at(day(1, "08:00"))
    assert [r.status for r in engine.reminders()] == ["sent", "sent"]


def test_an_escalation_without_a_cadence_keeps_the_cadence_and_records_the_stage(
        app: Reminders) -> None:
    engine = open_case(app, day(0))
    deliver_at(engine, day(1), escalated(day(1), cadence=None, to_stage="review"))
    plan = engine.plan()
    assert (plan.stage, plan.step, plan.day0) == ("review", 1, day(0))
    engine.at(day(2))
    assert engine.outbox.channels() == ["sms", "email"]


def test_the_same_escalation_seen_again_is_one_switch(app: Reminders) -> None:
    engine = open_case(app, day(0))
    deliver_at(engine, day(1), escalated(day(1)))
    engine.at(day(2))
    before = (engine.plan().step, engine.plan().day0, len(engine.tasks()))
    # a replay under another event id (the consumer's de-duplication is by id)
    deliver_at(engine, day(2), escalated(day(1), event_id="ev-escalated-again"))
    deliver_at(engine, day(2), escalated(day(1)))  # and under the same id
    plan = engine.plan()
    assert (plan.step, plan.day0, len(engine.tasks())) == before
    assert plan.switches == [f"calls@{day(1).isoformat()}"]


def test_an_escalation_older_than_the_stage_in_force_changes_nothing(app: Reminders) -> None:
    engine = open_case(app, day(0))
    deliver_at(engine, day(5), escalated(day(5)))
    deliver_at(engine, day(5), escalated(day(2), to_stage="field_visit", event_id="ev-old"))
    assert (engine.plan().stage, engine.plan().day0) == ("calls", day(5))


# --- pauses: a promise, with its courtesy reminder ---


def test_a_promise_pause_sends_one_courtesy_sms_the_day_before_due_at_1000_and_nothing_else(
        app: Reminders) -> None:
    engine = open_case(app, day(0))  # the SMS of day 0 goes
    due = DAY + timedelta(days=6)
    deliver_at(engine, day(1), paused("promise:P-1", day(1), (due, "500.00")))
    walk(engine, day(1), day(5, "09:00"), timedelta(hours=1))
    assert engine.outbox.channels() == ["sms"]  # no e-mail on day 2, no push on day 4
    engine.at(day(5, "10:00"))
    assert engine.outbox.channels() == ["sms", "sms"]
    courtesy = engine.outbox.sent[1]
    assert "500.00" in courtesy.text and due.isoformat() in courtesy.text
    assert "1200.50" not in courtesy.text and "95555" in courtesy.text
    (reminder,) = [r for r in engine.reminders() if r.courtesy_of]
    assert (reminder.template_id, reminder.template_version) == ("sms.promise_courtesy", 1)
    assert reminder.courtesy_of == "promise:P-1" and reminder.sent_at == day(5)
    walk(engine, day(5, "11:00"), day(9), timedelta(hours=6))
    assert engine.outbox.channels() == ["sms", "sms"] and engine.tasks() == []
    blocked = [e for e in published(app) if type(e).__name__ == "ContactBlocked"]
    assert blocked == []  # a pause is no conduct rule's refusal


def test_a_pause_holds_back_a_pending_reminder_without_saying_a_rule_blocked_it(
        app: Reminders) -> None:
    engine = open_case(app, day(0, "23:00"))  # its SMS waits for 08:00 (C1)
    deliver_at(engine, day(0, "23:30"), paused("plan:R-1", day(0, "23:30"), reason="plan"))
    (sms,) = engine.reminders()
    assert sms.paused_by == "plan:R-1" and sms.next_due() is None
    engine.at(day(1, "08:00"))
    assert engine.outbox.channels() == []
    assert [getattr(e, "rule", None) for e in published(app)
            if type(e).__name__ == "ContactBlocked"] == ["C1"]
    deliver_at(engine, day(3), resumed("plan:R-1", day(3), reason="plan"))
    assert engine.outbox.channels() == ["sms"]  # released at the resume, asked again


@pytest.mark.parametrize(("now", "expected"), [
    (day(1), day(5)),  # the day before, 10:00 local
    (day(5, "15:00"), day(5, "15:00")),  # that has passed: at once
    (day(6, "21:00"), day(6, "21:00")),  # the due date itself, not yet over
    (day(7, "00:00"), None),  # the due date is over: none
])
def test_when_a_courtesy_reminder_is_planned(app: Reminders, now: datetime,
                                             expected: datetime | None) -> None:
    engine = open_case(app, day(0))
    deliver_at(engine, now, paused("promise:P-2", now, (DAY + timedelta(days=6), "80.00")))
    courtesy = [r for r in engine.reminders() if r.courtesy_of]
    planned = [r.sent_at or r.due_at for r in courtesy]
    assert planned == ([] if expected is None else [expected])


def test_a_plans_pause_plans_a_courtesy_reminder_per_instalment(app: Reminders) -> None:
    engine = open_case(app, day(0))
    first, second = DAY + timedelta(days=10), DAY + timedelta(days=40)
    deliver_at(engine, day(1), paused("plan:R-2", day(1), (first, "300.00"),
                                      (second, "300.00"), reason="plan"))
    courtesy = [r for r in engine.reminders() if r.courtesy_of]
    assert [r.due_at for r in courtesy] == [day(9), day(39)]
    assert {r.id for r in courtesy} <= set(engine.plan().reminder_ids)


# --- resuming where it was ---


def test_after_a_30_day_pause_the_next_step_comes_at_its_remaining_time_one_at_a_time(
        app: Reminders) -> None:
    engine = open_case(app, day(0))  # SMS on day 0; the e-mail was due on day 2
    deliver_at(engine, day(1), paused("promise:P-3", day(1)))
    deliver_at(engine, day(31), resumed("promise:P-3", day(31)))
    plan = engine.plan()
    assert plan.day0 == day(30) and plan.step_due == day(32)
    walk(engine, day(31), day(32, "09:00"), timedelta(hours=1))
    assert engine.outbox.channels() == ["sms"]  # not a burst of what the pause missed
    engine.at(day(32))
    assert engine.outbox.channels() == ["sms", "email"]
    walk(engine, day(32, "11:00"), day(34, "09:00"), timedelta(hours=2))
    assert engine.outbox.channels() == ["sms", "email"]
    engine.at(day(34))
    assert engine.outbox.channels() == ["sms", "email", "push"]
    engine.at(day(36))
    assert [t.due_from for t in engine.tasks()] == [day(36)]


def test_overlapping_pauses_resume_only_when_the_last_is_lifted(app: Reminders) -> None:
    engine = open_case(app, day(0))
    deliver_at(engine, day(1), paused("promise:P-4", day(1)))
    deliver_at(engine, day(3), paused("hardship:H-1", day(3), reason="hardship"))
    deliver_at(engine, day(5), resumed("promise:P-4", day(5)))
    walk(engine, day(5), day(9), timedelta(days=1))
    assert engine.outbox.channels() == ["sms"]  # hardship still holds the cadence
    deliver_at(engine, day(11), resumed("hardship:H-1", day(11), reason="hardship"))
    assert engine.plan().day0 == day(10)  # paused from day 1 to day 11
    engine.at(day(12))
    assert engine.outbox.channels() == ["sms", "email"]


def test_an_escalation_during_a_pause_counts_its_day_0_from_the_resume(
        app: Reminders) -> None:
    engine = open_case(app, day(0))
    deliver_at(engine, day(1), paused("promise:P-5", day(1)))
    deliver_at(engine, day(4), escalated(day(4)))
    engine.at(day(6))
    assert engine.outbox.channels() == ["sms"] and engine.tasks() == []
    deliver_at(engine, day(10), resumed("promise:P-5", day(10)))
    assert engine.plan().day0 == day(10)
    assert engine.outbox.channels() == ["sms", "sms"]  # the new stage's step 0, at the resume
    engine.at(day(11))
    assert [t.due_from for t in engine.tasks()] == [day(10), day(11)]


def test_the_end_of_a_promise_cancels_its_courtesy_reminders_still_pending(
        app: Reminders) -> None:
    engine = open_case(app, day(0))
    deliver_at(engine, day(1), paused("promise:P-6", day(1), (DAY + timedelta(days=20), "9.00")))
    deliver_at(engine, day(5), resumed("promise:P-6", day(5)))
    (courtesy,) = [r for r in engine.reminders() if r.courtesy_of]
    assert courtesy.status == "cancelled" and courtesy.cancelled is not None
    assert courtesy.cancelled["rule"] == "promise_ended"
    cancelled = [e for e in published(app) if type(e).__name__ == "ReminderCancelled"]
    assert [getattr(e, "rule", None) for e in cancelled] == ["promise_ended"]
    walk(engine, day(18), day(20), timedelta(hours=4))
    assert all(m.channel != "sms" or "9.00" not in m.text for m in engine.outbox.sent)


def test_replayed_pauses_and_resumes_change_nothing(app: Reminders) -> None:
    engine = open_case(app, day(0))
    due = DAY + timedelta(days=6)
    deliver_at(engine, day(1), paused("promise:P-7", day(1), (due, "50.00")))
    deliver_at(engine, day(1), paused("promise:P-7", day(1), (due, "50.00"),
                                      event_id="ev-paused-again"))
    assert len([r for r in engine.reminders() if r.courtesy_of]) == 1
    deliver_at(engine, day(3), resumed("promise:P-7", day(3)))
    assert (engine.plan().day0, engine.plan().step_due) == (day(2), day(4))  # two days on
    deliver_at(engine, day(3), resumed("promise:P-7", day(3), event_id="ev-resumed-again"))
    deliver_at(engine, day(3), resumed("promise:P-8", day(3), event_id="ev-unknown"))
    plan = engine.plan()
    assert (plan.day0, plan.step_due) == (day(2), day(4))  # shifted once
    assert plan.pauses["promise:P-7"]["lifted_at"] == day(3) and list(plan.pauses) == [
        "promise:P-7"]
    engine.at(day(4))
    assert engine.outbox.channels() == ["sms", "email"]


# --- hardship ---


def call_day(app: Reminders) -> Engine:
    engine = open_case(app, day(0, "09:00"))
    engine.at(day(6, "09:00"))
    return engine


def test_hardship_holds_an_issued_call_task_back_from_the_collectors(app: Reminders) -> None:
    engine = call_day(app)
    (task,) = engine.tasks()
    assert [t.id for t in app.open_call_tasks(engine.clock.now())] == [task.id]
    permit = app.permit_dial("L-1", task.id, PHONE, "C-7", engine.clock.now())
    deliver_at(engine, day(6, "09:05"), paused("hardship:H-2", day(6, "09:05"),
                                               reason="hardship"))
    assert app.open_call_tasks(engine.clock.now()) == []
    # a permit given before the pause is not honoured for a dial after it began
    attempt = Attempt("L-1", "call", PHONE, "no_answer", engine.clock.now(), permit.permit_id)
    assert app.record_attempt(attempt, "C-7", engine.clock.now())[1] is False
    with pytest.raises(ContactPaused) as refused:
        app.permit_dial("L-1", task.id, PHONE, "C-7", engine.clock.now())
    error: dict[str, Any] = refused.value.as_error()
    assert error["code"] == "contact_paused" and "rule" not in error["details"]
    assert error["details"]["reason"] == "hardship" and "hardship" in error["message"]
    assert engine.tasks()[0].paused_by == "hardship:H-2"
    walk(engine, day(7, "09:00"), day(12, "09:00"), timedelta(days=1))
    assert len(engine.tasks()) == 1  # no new call tasks while paused
    deliver_at(engine, day(20), resumed("hardship:H-2", day(20), reason="hardship"))
    # the next call was due 23 h 55 min after the pause began: so long after the resume
    engine.at(day(21, "09:54"))
    assert [t.status for t in engine.tasks()] == ["expired"]
    engine.at(day(21, "09:55"))
    assert [t.status for t in engine.tasks()] == ["expired", "issued"]
    app.permit_dial("L-1", engine.tasks()[-1].id, PHONE, "C-7", engine.clock.now())


def test_a_later_hardship_holds_back_even_a_promises_courtesy_reminder(
        app: Reminders) -> None:
    engine = open_case(app, day(0))
    due = DAY + timedelta(days=6)
    deliver_at(engine, day(1), paused("promise:P-9", day(1), (due, "70.00")))
    deliver_at(engine, day(2), paused("hardship:H-3", day(2), reason="hardship"))
    engine.at(day(5))
    (courtesy,) = [r for r in engine.reminders() if r.courtesy_of]
    assert courtesy.paused_by == "hardship:H-3"
    assert engine.outbox.channels() == ["sms"]
    # the hardship ends while the due date is still ahead: the courtesy goes, nothing more
    deliver_at(engine, day(5, "12:00"), resumed("hardship:H-3", day(5, "12:00"),
                                                reason="hardship"))
    assert engine.outbox.channels() == ["sms", "sms"] and "70.00" in engine.outbox.sent[1].text
    assert engine.plan().paused()  # the promise still pauses the cadence


def test_a_courtesy_reminder_held_past_its_due_date_is_dropped(app: Reminders) -> None:
    engine = open_case(app, day(0))
    deliver_at(engine, day(1), paused("promise:P-10", day(1), (DAY + timedelta(days=6), "7.00")))
    deliver_at(engine, day(2), paused("hardship:H-4", day(2), reason="hardship"))
    deliver_at(engine, day(9), resumed("hardship:H-4", day(9), reason="hardship"))
    (courtesy,) = [r for r in engine.reminders() if r.courtesy_of]
    assert courtesy.status == "cancelled" and courtesy.cancelled is not None
    assert courtesy.cancelled["rule"] == "due_date_passed"
    assert engine.outbox.channels() == ["sms"]


# --- C4 ---


def test_closing_the_case_cancels_courtesy_reminders_too(app: Reminders) -> None:
    engine = open_case(app, day(0))
    deliver_at(engine, day(1), paused("promise:P-11", day(1), (DAY + timedelta(days=6), "5.00")))
    closed = CaseClosed(loan_id="L-1", reason="paid", closed_at=day(2))
    deliver_at(engine, day(2), event_of(closed, day(2), "ev-closed"))
    (courtesy,) = [r for r in engine.reminders() if r.courtesy_of]
    assert courtesy.status == "cancelled" and courtesy.cancelled is not None
    assert courtesy.cancelled["rule"] == "C4"
    walk(engine, day(5), day(6), timedelta(hours=6))
    assert engine.outbox.channels() == ["sms"]


def test_a_pause_on_a_closed_case_plans_nothing(app: Reminders) -> None:
    engine = open_case(app, day(0))
    closed = CaseClosed(loan_id="L-1", reason="paid", closed_at=day(1))
    deliver_at(engine, day(1), event_of(closed, day(1), "ev-closed"))
    deliver_at(engine, day(2), paused("promise:P-12", day(2), (DAY + timedelta(days=6), "5.00")))
    assert engine.plan().pauses == {}
    assert [r for r in engine.reminders() if r.courtesy_of] == []


def test_a_reopened_case_starts_its_cadence_again_without_the_old_pauses(
        app: Reminders) -> None:
    engine = open_case(app, day(0))
    deliver_at(engine, day(1), paused("hardship:H-5", day(1), reason="hardship"))
    closed = CaseClosed(loan_id="L-1", reason="paid", closed_at=day(2))
    deliver_at(engine, day(2), event_of(closed, day(2), "ev-closed"))
    deliver_at(engine, day(3), case_opened(day(3), loan_id="L-1").model_copy(
        update={"id": "ev-reopened"}))
    plan = engine.plan()
    assert plan.open and plan.pauses == {} and plan.day0 == day(3)
    assert engine.outbox.channels() == ["sms", "sms"]


def test_the_plan_keeps_its_pauses_and_stage_through_a_real_store(tmp_path: Any) -> None:
    """Every new event argument survives the store's encoding (SQLite, read back)."""
    store = {"PERSISTENCE_MODULE": "eventsourcing.sqlite",
             "SQLITE_DBNAME": str(tmp_path / "reminder.db")}
    before = Reminders(CN, "the official hotline 95555", env=store)
    engine = open_case(before, day(0))
    deliver_at(engine, day(1), escalated(day(1)))
    deliver_at(engine, day(2), paused("promise:P-13", day(2), (DAY + timedelta(days=6), "5.00")))
    deliver_at(engine, day(3), resumed("promise:P-13", day(3)))
    expected = engine.plan().__dict__.copy()
    before.close()
    after = Reminders(CN, "the official hotline 95555", env=store)
    plan: ContactPlan = after.repository.get(ContactPlan.create_id("L-1"))
    for name in ("cadence", "stage", "policy_version", "day0", "step_due", "pauses",
                 "reminder_ids", "switches"):
        assert getattr(plan, name) == expected[name], name
    assert plan.pauses["promise:P-13"]["at"].tzinfo is not None
    after.close()


def test_a_utc_escalated_at_and_its_local_spelling_are_one_switch(app: Reminders) -> None:
    engine = open_case(app, day(0))
    at = day(1)
    deliver_at(engine, at, escalated(at.astimezone(UTC)))
    deliver_at(engine, at, escalated(at.astimezone(ZoneInfo("Asia/Shanghai")),
                                     event_id="ev-again"))
    assert len(engine.plan().switches) == 1
