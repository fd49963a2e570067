"""The escalation engine in memory: cases that age with a manual clock, the daily evaluation
fired from the agenda, stages with reasons, promises, plans, hardship and C6 visits; and what
the relay tells the other services of each."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from shared.clock import ManualClock
from shared.events import (
    EVENT_TYPES,
    CeaseContactRequested,
    ContactAttemptRecorded,
    DisputeOpened,
    DisputeResolved,
    EventData,
    HardshipEnded,
    HardshipGranted,
    LoanOverdue,
    PaymentReceived,
    PromiseToPayMade,
    RepaymentPlanAgreed,
    StrategyDocument,
    VisitRecorded,
    envelope,
)
from shared.policy_pack import CN
from tests.helpers import loan_body

from services.escalation import policy
from services.escalation.application import Cases, Incoherent, Loosens
from services.escalation.domain import CollectionCase
from services.escalation.handlers import HANDLERS
from services.escalation.relay import integration_event

# 10:00 in Shanghai on 2026-12-25: a loan due 85 days before is at DPD 85.
START = datetime(2026, 12, 25, 2, 0, tzinfo=UTC)


class Engine:
    """The escalation application with a manual clock: events in through the handlers, the
    agenda fired as the service's loop fires it, and what the relay would publish."""

    def __init__(self) -> None:
        self.cases = Cases(CN, env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
        self.clock = ManualClock(START)
        self.position = 0

    def deliver(self, data: EventData) -> None:
        self.position += 1
        event = envelope(data, event_id=str(uuid.uuid4()), source="/test", time=self.clock.now(),
                         causation_id=None, correlation_id=None)
        unit = self.cases.unit()
        HANDLERS[type(data)](self.cases, unit, event, data, self.clock.now())
        self.cases.commit(unit)

    def run_agenda(self) -> int:
        """Fire everything due now, as often as it falls due again (at most a few rounds)."""
        fired = 0
        for _ in range(10):
            due = self.cases.due(self.clock.now())
            if not due:
                return fired
            for case_id in due:
                self.cases.fire(case_id, "CollectionCase", self.clock.now())
                fired += 1
        raise AssertionError("the agenda keeps firing: something is always due")

    def advance(self, **delta: float) -> None:
        """Move the clock a day at a time, firing the agenda at each step (as the loop does)."""
        end = self.clock.now() + timedelta(**delta)
        while self.clock.now() < end:
            self.clock.set(min(end, self.clock.now() + timedelta(hours=6)))
            self.run_agenda()

    def published(self, loan_id: str | None = None) -> list[EventData]:
        found = []
        for notification in self.cases.recorder.select_notifications(1, 100_000):
            publication = integration_event(self.cases.mapper.to_domain_event(notification))
            if publication is None:
                continue
            data = publication.data
            # Every publication fits its contract type (what the relay would put on Kafka).
            EVENT_TYPES[data.event_type()].model_validate(data.model_dump(mode="json"))
            if loan_id is None or getattr(data, "loan_id", None) == loan_id:
                found.append(data)
        return found

    def types(self, loan_id: str) -> list[str]:
        return [d.event_type() for d in self.published(loan_id)]

    def of_type(self, loan_id: str, name: str) -> list[Any]:
        return [d for d in self.published(loan_id) if d.event_type() == name]

    def case(self, loan_id: str) -> CollectionCase:
        case = self.cases.case(loan_id)
        assert case is not None
        return case


def overdue(loan_id: str, *, dpd: int = 85, amount: str = "5000.00", at: datetime = START,
            lender_id: str = "lender-1", zone: str = "Asia/Shanghai") -> LoanOverdue:
    body = loan_body(loan_id, amount=amount, dpd=dpd, lender_id=lender_id, timezone_name=zone)
    body["due_date"] = (at.astimezone(policy.ZoneInfo(zone)).date()
                        - timedelta(days=dpd)).isoformat()
    return LoanOverdue.model_validate(body)


def failed_call(loan_id: str, at: datetime, outcome: str = "no_answer",
                promise: dict[str, str] | None = None) -> ContactAttemptRecorded:
    return ContactAttemptRecorded.model_validate({
        "loan_id": loan_id, "attempt_id": str(uuid.uuid4()), "channel": "call",
        "outcome": outcome, "attempted_at": at.isoformat(), "party": "borrower",
        "promise_to_pay": promise})


def reasons_of(data: Any) -> dict[str, tuple[str | None, str | None]]:
    return {r.code: (r.value, r.threshold) for r in data.reasons}


@pytest.fixture
def engine() -> Engine:
    return Engine()


def three_failures(engine: Engine, loan_id: str) -> None:
    for hour in range(3):
        engine.deliver(failed_call(loan_id, START + timedelta(hours=hour)))


# --- ageing, stages and C6 ---


def test_a_long_overdue_large_loan_with_failed_calls_is_escalated_and_a_visit_asked(
        engine: Engine) -> None:
    engine.deliver(overdue("L-1"))
    three_failures(engine, "L-1")
    assert engine.types("L-1") == ["CaseOpened"]
    assert engine.case("L-1").dpd_at(engine.clock.now()) == 85
    engine.advance(days=7)
    escalated = engine.of_type("L-1", "CaseEscalated")
    assert len(escalated) == 1
    assert (escalated[0].from_stage, escalated[0].to_stage) == ("soft_reminders", "field_visit")
    assert reasons_of(escalated[0]) == {"dpd": ("91", "91"), "amount": ("5000.00", "3000.00"),
                                        "failed_contacts": ("3", "3")}
    assert escalated[0].policy_version == "cn-2026.1/default@1"
    assert escalated[0].cadence is not None and escalated[0].cadence.repeat is not None
    (visit,) = engine.of_type("L-1", "VisitRequested")
    assert reasons_of(visit) == {"dpd": ("91", "91"), "amount": ("5000.00", "3000.00"),
                                 "failed_contacts": ("3", "3")}
    assert visit.stage == "field_visit" and visit.policy_version == "cn-2026.1/default@1"
    # Asked once for this entry into the stage, however many days pass.
    engine.advance(days=5)
    assert len(engine.of_type("L-1", "VisitRequested")) == 1
    assert engine.case("L-1").dpd_at(engine.clock.now()) == 97


def test_a_small_loan_is_never_visited(engine: Engine) -> None:
    engine.deliver(overdue("L-2", amount="500.00"))
    three_failures(engine, "L-2")
    engine.advance(days=30)
    assert engine.of_type("L-2", "VisitRequested") == []
    assert engine.case("L-2").stage == "soft_reminders"


def test_a_disputed_case_is_not_visited_until_the_dispute_is_resolved(engine: Engine) -> None:
    engine.deliver(overdue("L-3"))
    three_failures(engine, "L-3")
    engine.deliver(DisputeOpened(loan_id="L-3", dispute_id="D-1", reason="not mine",
                                 opened_at=START))
    engine.advance(days=10)
    assert engine.of_type("L-3", "VisitRequested") == []
    engine.deliver(DisputeResolved(loan_id="L-3", dispute_id="D-1", resolution="confirmed",
                                   resolved_at=engine.clock.now()))
    assert len(engine.of_type("L-3", "VisitRequested")) == 1


def test_a_borrower_who_asked_for_no_visits_is_not_visited(engine: Engine) -> None:
    engine.deliver(overdue("L-4"))
    three_failures(engine, "L-4")
    engine.deliver(CeaseContactRequested.model_validate(
        {"loan_id": "L-4", "channels": ["visit"], "requested_at": START.isoformat()}))
    engine.advance(days=10)
    assert engine.of_type("L-4", "VisitRequested") == []


def test_a_conversation_starts_the_failed_count_again(engine: Engine) -> None:
    engine.deliver(overdue("L-5"))
    three_failures(engine, "L-5")
    engine.deliver(failed_call("L-5", START + timedelta(hours=4), outcome="answered"))
    engine.advance(days=10)
    assert engine.of_type("L-5", "VisitRequested") == []
    assert engine.case("L-5").failed_contacts_at(engine.clock.now()) == 0


def test_dpd_follows_a_corrected_due_date(engine: Engine) -> None:
    engine.deliver(overdue("L-6", dpd=10))
    three_failures(engine, "L-6")
    engine.advance(days=1)
    assert engine.of_type("L-6", "CaseEscalated") == []
    engine.deliver(overdue("L-6", dpd=95, at=engine.clock.now()))
    assert engine.of_type("L-6", "CaseEscalated")[0].to_stage == "field_visit"


def test_each_evaluation_is_recorded_once_however_often_it_is_fired(engine: Engine) -> None:
    engine.deliver(overdue("L-7"))
    three_failures(engine, "L-7")
    engine.clock.set(START + timedelta(days=7))
    case_id = CollectionCase.create_id("L-7")
    for _ in range(3):
        engine.cases.fire(case_id, "CollectionCase", engine.clock.now())
    assert len(engine.of_type("L-7", "CaseEscalated")) == 1
    assert len(engine.of_type("L-7", "VisitRequested")) == 1


def test_a_closed_case_leaves_the_agenda(engine: Engine) -> None:
    engine.deliver(overdue("L-8"))
    engine.deliver(PaymentReceived.model_validate({
        "loan_id": "L-8", "amount": "5000.00", "currency": "CNY",
        "paid_at": START.isoformat(), "remaining_overdue": "0"}))
    engine.advance(days=2)
    assert engine.cases.due(engine.clock.now() + timedelta(days=400)) == []


# --- promises and plans ---


def promise(loan_id: str, due: date, amount: str = "1000.00",
            made_at: datetime = START) -> PromiseToPayMade:
    return PromiseToPayMade.model_validate({
        "loan_id": loan_id, "promise_id": f"P-{loan_id}", "amount": amount, "currency": "CNY",
        "due_date": due.isoformat(), "made_at": made_at.isoformat(), "via": "lender"})


def test_a_promise_holds_escalation_and_is_broken_when_unpaid(engine: Engine) -> None:
    engine.deliver(overdue("L-10", dpd=89))
    three_failures(engine, "L-10")
    engine.deliver(promise("L-10", date(2026, 12, 30)))
    (paused,) = engine.of_type("L-10", "CadencePaused")
    assert paused.pause_id == "promise:P-L-10" and paused.reason == "promise"
    assert [c.due_date for c in paused.courtesy] == [date(2026, 12, 30)]
    engine.advance(days=5, hours=12)  # 2026-12-30 22:00 Shanghai: the due day not yet over
    assert engine.of_type("L-10", "CaseEscalated") == []
    assert engine.of_type("L-10", "PromiseBroken") == []
    engine.advance(hours=3)  # past midnight in Shanghai
    (broken,) = engine.of_type("L-10", "PromiseBroken")
    assert broken.paid == Decimal("0") and broken.due_date == date(2026, 12, 30)
    assert broken.decided_at == datetime(2026, 12, 30, 16, 0, tzinfo=UTC)
    (resumed,) = engine.of_type("L-10", "CadenceResumed")
    assert resumed.pause_id == "promise:P-L-10"
    escalated = engine.of_type("L-10", "CaseEscalated")
    assert len(escalated) == 1 and "broken_promises" not in reasons_of(escalated[0])
    assert engine.case("L-10").broken_promises == 1
    order = engine.types("L-10")
    assert order.index("PromiseBroken") < order.index("CadenceResumed") < \
        order.index("CaseEscalated")


def test_a_promise_paid_by_its_due_day_is_kept(engine: Engine) -> None:
    engine.deliver(overdue("L-11"))
    engine.deliver(promise("L-11", date(2026, 12, 27)))
    engine.advance(days=1)
    engine.deliver(PaymentReceived.model_validate({
        "loan_id": "L-11", "amount": "1000.00", "currency": "CNY",
        "paid_at": engine.clock.now().isoformat(), "remaining_overdue": "4000.00"}))
    engine.advance(days=2)
    (kept,) = engine.of_type("L-11", "PromiseKept")
    assert kept.paid == Decimal("1000.00") and kept.amount == Decimal("1000.00")
    assert engine.case("L-11").promises_kept == 1


def test_a_promise_in_a_call_is_told_on_loans_events_and_holds_escalation(
        engine: Engine) -> None:
    engine.deliver(overdue("L-12", dpd=89))
    three_failures(engine, "L-12")
    call = failed_call("L-12", START + timedelta(hours=5), outcome="promise_to_pay",
                       promise={"amount": "800.00", "currency": "CNY", "due_date": "2026-12-28"})
    engine.deliver(call)
    (told,) = engine.of_type("L-12", "PromiseToPayMade")
    assert told.via == "call" and told.attempt_id == call.attempt_id
    assert told.promise_id == str(call.attempt_id)
    engine.deliver(told)  # it comes back from loans.events: known already, nothing new
    assert len(engine.of_type("L-12", "CadencePaused")) == 1
    engine.advance(days=3)
    assert engine.of_type("L-12", "CaseEscalated") == []


def test_a_plan_with_two_broken_instalments_ends(engine: Engine) -> None:
    engine.deliver(overdue("L-13", dpd=60))
    engine.deliver(RepaymentPlanAgreed.model_validate({
        "loan_id": "L-13", "plan_id": "PL-1", "currency": "CNY",
        "agreed_at": START.isoformat(),
        "instalments": [{"due_date": "2026-12-28", "amount": "1000.00"},
                        {"due_date": "2027-01-04", "amount": "1000.00"},
                        {"due_date": "2027-01-11", "amount": "3000.00"}]}))
    (paused,) = engine.of_type("L-13", "CadencePaused")
    assert paused.pause_id == "plan:PL-1" and len(paused.courtesy) == 3
    engine.advance(days=4)
    engine.deliver(PaymentReceived.model_validate({
        "loan_id": "L-13", "amount": "1000.00", "currency": "CNY",
        "paid_at": engine.clock.now().isoformat(), "remaining_overdue": "4000.00"}))
    engine.advance(days=30)
    decided = [(d.event_type(), d.promise_id) for d in engine.published("L-13")
               if d.event_type() in ("PromiseKept", "PromiseBroken")]
    # The first instalment was paid late (after its day): broken; the second, broken too,
    # ends the plan (two broken, the default's max); the third is never decided.
    assert decided == [("PromiseBroken", "PL-1/1"), ("PromiseBroken", "PL-1/2")]
    assert [r.pause_id for r in engine.of_type("L-13", "CadenceResumed")] == ["plan:PL-1"]
    assert engine.case("L-13").plans["PL-1"]["ended"]


def test_a_plan_kept_instalment_by_instalment(engine: Engine) -> None:
    engine.deliver(overdue("L-14", dpd=40))
    engine.deliver(RepaymentPlanAgreed.model_validate({
        "loan_id": "L-14", "plan_id": "PL-2", "currency": "CNY",
        "agreed_at": START.isoformat(),
        "instalments": [{"due_date": "2026-12-26", "amount": "2000.00"},
                        {"due_date": "2026-12-27", "amount": "3000.00"}]}))
    engine.deliver(PaymentReceived.model_validate({
        "loan_id": "L-14", "amount": "2000.00", "currency": "CNY",
        "paid_at": START.isoformat(), "remaining_overdue": "3000.00"}))
    engine.advance(days=1, hours=15)  # 2026-12-27 01:00 in Shanghai: the first day is over
    assert [d.promise_id for d in engine.of_type("L-14", "PromiseKept")] == ["PL-2/1"]
    engine.deliver(PaymentReceived.model_validate({
        "loan_id": "L-14", "amount": "3000.00", "currency": "CNY",
        "paid_at": engine.clock.now().isoformat(), "remaining_overdue": "0"}))
    assert [d.promise_id for d in engine.of_type("L-14", "PromiseKept")] == ["PL-2/1", "PL-2/2"]
    assert engine.types("L-14")[-1] == "CaseClosed"


# --- hardship ---


def test_a_hardship_pause_stops_ageing_escalation_and_visits(engine: Engine) -> None:
    engine.deliver(overdue("L-20", dpd=88))
    three_failures(engine, "L-20")
    engine.deliver(HardshipGranted.model_validate({
        "loan_id": "L-20", "hardship_id": "H-1", "reason": "illness", "note": "in hospital",
        "starts_at": START.isoformat(),
        "ends_at": (START + timedelta(days=30)).isoformat()}))
    (paused,) = engine.of_type("L-20", "CadencePaused")
    assert paused.reason == "hardship" and paused.courtesy == []
    engine.advance(days=29)
    assert engine.of_type("L-20", "CaseEscalated") == []
    assert engine.of_type("L-20", "VisitRequested") == []
    assert engine.case("L-20").dpd_at(engine.clock.now()) == 88  # frozen
    engine.advance(days=1, hours=1)
    (resumed,) = engine.of_type("L-20", "CadenceResumed")
    assert resumed.pause_id == "hardship:H-1"
    assert engine.case("L-20").dpd_at(engine.clock.now()) == 88
    engine.advance(days=3)
    (visit,) = engine.of_type("L-20", "VisitRequested")
    assert reasons_of(visit)["dpd"] == ("91", "91")


def test_a_hardship_ended_early_resumes_at_once(engine: Engine) -> None:
    engine.deliver(overdue("L-21", dpd=50))
    engine.deliver(HardshipGranted.model_validate({
        "loan_id": "L-21", "hardship_id": "H-2", "reason": "unemployment", "note": "",
        "starts_at": START.isoformat(),
        "ends_at": (START + timedelta(days=60)).isoformat()}))
    engine.advance(days=10)
    engine.deliver(HardshipEnded.model_validate({
        "loan_id": "L-21", "hardship_id": "H-2", "ended_at": engine.clock.now().isoformat()}))
    assert [r.pause_id for r in engine.of_type("L-21", "CadenceResumed")] == ["hardship:H-2"]
    assert engine.case("L-21").dpd_at(engine.clock.now()) == 50
    engine.advance(days=60)
    assert len(engine.of_type("L-21", "CadenceResumed")) == 1  # no second resume at ends_at


# --- strategies ---


def document(**visit: Any) -> StrategyDocument:
    body = policy.DEFAULT_DOCUMENT.model_dump(mode="json")
    body["visit"] = {**body["visit"], **visit}
    body["stages"][-1]["entry"] = {**body["stages"][-1]["entry"], **visit}
    return StrategyDocument.model_validate(body)


def test_a_strategy_that_would_visit_at_dpd_30_is_refused_naming_c6(engine: Engine) -> None:
    with pytest.raises(Loosens) as refused:
        engine.cases.publish_strategy("lender-1", document(min_dpd=30), START)
    assert refused.value.rules == ["C6"]
    assert {loose.name for loose in refused.value.loosened} == {
        "visit.min_dpd", "stages.field_visit.entry.min_dpd"}
    assert engine.cases.strategy_versions("lender-1") == []


def test_a_tighter_strategy_is_the_next_version_and_decisions_name_it(engine: Engine) -> None:
    assert engine.cases.publish_strategy("lender-1", document(min_dpd=95), START) == (1, True)
    assert engine.cases.publish_strategy("lender-1", document(min_dpd=95), START) == (1, False)
    assert engine.cases.publish_strategy("lender-1", document(min_dpd=92), START) == (2, True)
    (published,) = [d for d in engine.published() if d.event_type() == "StrategyPublished"
                    and getattr(d, "version", 0) == 2]
    assert published.policy_version == "cn-2026.1/lender-1@2"
    engine.deliver(overdue("L-30"))
    three_failures(engine, "L-30")
    engine.advance(days=6)
    assert engine.of_type("L-30", "CaseEscalated") == []  # DPD 91: below this lender's 92
    engine.advance(days=1)
    (visit,) = engine.of_type("L-30", "VisitRequested")
    assert visit.policy_version == "cn-2026.1/lender-1@2"
    assert reasons_of(visit)["dpd"] == ("92", "92")


def test_champion_and_challenger_split_the_cases_evenly(engine: Engine) -> None:
    body = policy.DEFAULT_DOCUMENT.model_dump(mode="json")
    body["variants"] = [{"name": "champion", "share": 50},
                        {"name": "challenger", "share": 50,
                         "visit": {"min_dpd": 120, "min_amount": "3000.00",
                                   "min_failed_contacts": 3}}]
    engine.cases.publish_strategy("lender-1", StrategyDocument.model_validate(body), START)
    strategy = engine.cases.strategy_for("lender-1")
    split = Counter(strategy.variant_of(f"L-{n}") for n in range(1000))
    assert set(split) == {"champion", "challenger"}
    assert abs(split["champion"] - 500) <= 50
    assert strategy.variant_of("L-7") == strategy.variant_of("L-7")
    assert strategy.policy_version(CN, "challenger") == "cn-2026.1/lender-1@1#challenger"


def test_a_strategy_that_cannot_be_followed_is_refused_naming_each_problem(
        engine: Engine) -> None:
    body = policy.DEFAULT_DOCUMENT.model_dump(mode="json")
    body["variants"] = [{"name": "a", "share": 50}, {"name": "a", "share": 40}]
    body["stages"][0]["entry"] = {"min_dpd": 5}
    body["stages"][0]["cadence"]["steps"].reverse()
    with pytest.raises(Incoherent) as refused:
        engine.cases.publish_strategy("lender-1", StrategyDocument.model_validate(body), START)
    assert refused.value.problems == [
        ("stages: the first stage (soft_reminders) must have no entry criteria, since every "
         "case starts there"),
        "stages.soft_reminders.cadence: steps must be in day order",
        "variants: names must be unique", "variants: shares must add up to 100"]
    assert policy.incoherence(policy.DEFAULT_DOCUMENT) == []


# --- the portfolio ---


def test_a_lender_pages_through_its_own_cases_and_sees_performance(engine: Engine) -> None:
    for n in range(5):
        engine.deliver(overdue(f"L-4{n}", dpd=20))
    engine.deliver(overdue("L-other", dpd=20, lender_id="lender-2"))
    engine.deliver(PaymentReceived.model_validate({
        "loan_id": "L-41", "amount": "5000.00", "currency": "CNY",
        "paid_at": (START + timedelta(days=3)).isoformat(), "remaining_overdue": "0"}))
    first = engine.cases.page("lender-1", None, None, None, 2)
    assert [c.loan_id for c in first.cases] == ["L-40", "L-41"] and first.next is not None
    second = engine.cases.page("lender-1", None, None, first.next, 10)
    assert [c.loan_id for c in second.cases] == ["L-42", "L-43", "L-44"]
    assert second.next is None
    closed = engine.cases.page("lender-1", None, "closed", None, 10)
    assert [c.loan_id for c in closed.cases] == ["L-41"]
    (row,) = engine.cases.performance("lender-1")
    assert row == {"variant": None, "cases": 5, "cured": 1, "promises_kept": 0,
                   "median_days_to_cure": 3}


def test_the_engines_own_decisions_name_no_cause_but_keep_the_correlation() -> None:
    """The handlers take the envelope for causation only: a case's own decisions name no
    cause (they come from the clock)."""
    engine = Engine()
    engine.deliver(overdue("L-50"))
    three_failures(engine, "L-50")
    engine.advance(days=7)
    for notification in engine.cases.recorder.select_notifications(1, 10_000):
        publication = integration_event(engine.cases.mapper.to_domain_event(notification))
        if publication is not None and publication.data.event_type() == "VisitRequested":
            assert publication.causation_id is None
            assert publication.correlation_id is not None


def test_follow_ups_straight_from_kafka_are_held_to_the_same_limits(engine: Engine) -> None:
    """What the routes refuse (409 not_acceptable) is dead-lettered when a lender's core
    writes it on loans.events itself."""
    from shared.consumer import Rejected

    engine.deliver(overdue("L-60"))
    with pytest.raises(Rejected, match="already past"):
        engine.deliver(promise("L-60", date(2026, 12, 1)))
    with pytest.raises(Rejected, match="max_days"):
        engine.deliver(HardshipGranted.model_validate({
            "loan_id": "L-60", "hardship_id": "H-9", "reason": "other", "note": "",
            "starts_at": START.isoformat(),
            "ends_at": (START + timedelta(days=200)).isoformat()}))
    with pytest.raises(Rejected, match="currency"):
        engine.deliver(RepaymentPlanAgreed.model_validate({
            "loan_id": "L-60", "plan_id": "PL-9", "currency": "USD",
            "agreed_at": START.isoformat(),
            "instalments": [{"due_date": "2026-12-28", "amount": "10.00"}]}))
    assert engine.of_type("L-60", "CadencePaused") == []


# --- found by review: each was a defect ---


def test_a_reopened_case_keeps_its_hardship_and_its_failed_calls(engine: Engine) -> None:
    engine.deliver(overdue("L-70", dpd=85))
    three_failures(engine, "L-70")
    engine.deliver(HardshipGranted.model_validate({
        "loan_id": "L-70", "hardship_id": "H-70", "reason": "illness", "note": "",
        "starts_at": START.isoformat(), "ends_at": (START + timedelta(days=30)).isoformat()}))
    engine.advance(days=3)
    engine.deliver(PaymentReceived.model_validate({
        "loan_id": "L-70", "amount": "5000.00", "currency": "CNY",
        "paid_at": engine.clock.now().isoformat(), "remaining_overdue": "0"}))
    engine.advance(days=1)
    engine.deliver(overdue("L-70", dpd=85, at=START))  # the payment bounced: reported again
    engine.advance(days=10)
    assert engine.of_type("L-70", "VisitRequested") == []
    reopened = engine.case("L-70")
    assert reopened.status == "open" and reopened.hardship_at(engine.clock.now()) == "H-70"
    assert reopened.failed_contacts_at(engine.clock.now()) == 3


def test_a_hardship_ended_later_than_granted_ends_when_granted(engine: Engine) -> None:
    engine.deliver(overdue("L-71", dpd=40))
    engine.deliver(HardshipGranted.model_validate({
        "loan_id": "L-71", "hardship_id": "H-71", "reason": "other", "note": "",
        "starts_at": START.isoformat(), "ends_at": (START + timedelta(days=5)).isoformat()}))
    engine.deliver(HardshipEnded.model_validate({
        "loan_id": "L-71", "hardship_id": "H-71",
        "ended_at": (START + timedelta(days=50)).isoformat()}))
    assert engine.case("L-71").hardships["H-71"]["ended_at"] == START + timedelta(days=5)


def test_a_case_whose_variant_a_new_version_dropped_names_no_variant(engine: Engine) -> None:
    body = policy.DEFAULT_DOCUMENT.model_dump(mode="json")
    body["variants"] = [{"name": "champion", "share": 100}, {"name": "challenger", "share": 0}]
    engine.cases.publish_strategy("lender-1", StrategyDocument.model_validate(body), START)
    engine.deliver(overdue("L-72"))
    assert engine.case("L-72").variant == "champion"
    three_failures(engine, "L-72")
    engine.cases.publish_strategy("lender-1", policy.DEFAULT_DOCUMENT, START)
    engine.advance(days=7)
    (visit,) = engine.of_type("L-72", "VisitRequested")
    assert visit.policy_version == "cn-2026.1/lender-1@2"


def test_a_stage_a_new_version_removed_never_moves_a_case_back(engine: Engine) -> None:
    body = policy.DEFAULT_DOCUMENT.model_dump(mode="json")
    body["stages"].insert(1, {"name": "calls", "entry": {"min_dpd": 31},
                              "cadence": {"repeat": {"channel": "call", "from_day": 0}}})
    engine.cases.publish_strategy("lender-1", StrategyDocument.model_validate(body), START)
    engine.deliver(overdue("L-73", dpd=40))
    assert engine.case("L-73").stage == "calls"
    engine.cases.publish_strategy("lender-1", policy.DEFAULT_DOCUMENT, START)
    engine.advance(days=2)
    assert [(e.from_stage, e.to_stage) for e in engine.of_type("L-73", "CaseEscalated")] == [
        ("soft_reminders", "calls")]


def test_overlapping_or_backwards_hardships_are_refused(engine: Engine) -> None:
    from shared.consumer import Rejected

    engine.deliver(overdue("L-74", dpd=40))
    grant = {"loan_id": "L-74", "reason": "other", "note": "",
             "starts_at": START.isoformat(), "ends_at": (START + timedelta(days=20)).isoformat()}
    engine.deliver(HardshipGranted.model_validate({**grant, "hardship_id": "H-1"}))
    with pytest.raises(Rejected, match="overlaps"):
        engine.deliver(HardshipGranted.model_validate({
            **grant, "hardship_id": "H-2",
            "starts_at": (START + timedelta(days=5)).isoformat()}))
    with pytest.raises(Rejected, match="ends after it starts"):
        engine.deliver(HardshipGranted.model_validate({
            **grant, "hardship_id": "H-3", "starts_at": (START + timedelta(days=40)).isoformat(),
            "ends_at": (START + timedelta(days=30)).isoformat()}))
    engine.advance(days=25)
    assert engine.case("L-74").dpd_at(engine.clock.now()) == 45  # 20 days taken out, once


def test_no_strategy_may_be_published_for_the_shipped_defaults_name(engine: Engine) -> None:
    with pytest.raises(Incoherent, match="shipped default"):
        engine.cases.publish_strategy("default", policy.DEFAULT_DOCUMENT, START)


def visit_recorded(loan_id: str, at: datetime, **made: Any) -> VisitRecorded:
    return VisitRecorded.model_validate({
        "visit_id": str(uuid.uuid4()), "loan_id": loan_id, "outcome": "promise",
        "borrower_attitude": "cooperative", "difficulties": "", "recording_sha256": "a" * 64,
        "recording_seconds": 600, "ended_at": at.isoformat(), **made})


def test_a_promise_made_in_a_visit_is_told_on_loans_events_and_holds_escalation(
        engine: Engine) -> None:
    engine.deliver(overdue("L-V1", dpd=89))
    three_failures(engine, "L-V1")
    visit = visit_recorded("L-V1", START + timedelta(hours=5), promise_to_pay={
        "amount": "700.00", "currency": "CNY", "due_date": "2026-12-28"})
    engine.deliver(visit)
    (told,) = engine.of_type("L-V1", "PromiseToPayMade")
    assert told.via == "visit" and told.visit_id == visit.visit_id
    assert told.promise_id == f"visit:{visit.visit_id}" and told.amount == Decimal("700.00")
    engine.deliver(visit)  # redelivered: the promise is known, nothing new
    engine.deliver(told)  # and back from loans.events: known already
    assert len(engine.of_type("L-V1", "CadencePaused")) == 1
    engine.advance(days=3)
    assert engine.of_type("L-V1", "CaseEscalated") == []


def test_a_plan_made_in_a_visit_pauses_the_cadence_and_a_bad_one_is_left(
        engine: Engine) -> None:
    engine.deliver(overdue("L-V2"))
    visit = visit_recorded("L-V2", START + timedelta(hours=5), repayment_plan={
        "currency": "CNY", "instalments": [{"due_date": "2027-01-05", "amount": "2500.00"},
                                           {"due_date": "2027-02-05", "amount": "2500.00"}]})
    engine.deliver(visit)
    (paused,) = engine.of_type("L-V2", "CadencePaused")
    assert paused.reason == "plan" and paused.pause_id == f"plan:visit:{visit.visit_id}"
    # Told on loans.events, as a lender's plan is (the audit's C6 reads it with its decisions).
    (told,) = engine.of_type("L-V2", "RepaymentPlanAgreed")
    assert (told.plan_id, told.visit_id, told.currency) == (
        f"visit:{visit.visit_id}", visit.visit_id, "CNY")
    assert [(str(i.due_date), str(i.amount)) for i in told.instalments] == [
        ("2027-01-05", "2500.00"), ("2027-02-05", "2500.00")]
    engine.deliver(told)  # back from loans.events: known already
    assert len(engine.of_type("L-V2", "CadencePaused")) == 1
    engine.deliver(overdue("L-V3"))
    engine.deliver(visit_recorded("L-V3", START + timedelta(hours=5), promise_to_pay={
        "amount": "700.00", "currency": "USD", "due_date": "2026-12-28"}))
    assert engine.of_type("L-V3", "CadencePaused") == []  # another currency: not taken
