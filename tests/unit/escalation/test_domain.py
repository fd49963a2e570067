"""A CollectionCase from overdue to closed, and what escalation tells the other services."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from shared.events import CaseClosed, CaseOpened, LoanOverdue, PaymentReceived
from tests.helpers import loan_body

from services.escalation.domain import CollectionCase, Intake, OtherLendersLoan
from services.escalation.policy import SOFT_REMINDERS, payment_closes_case
from services.escalation.relay import integration_event

OPENED_AT = datetime(2026, 10, 14, 3, 0, tzinfo=UTC)


def report(dpd: int = 35, amount: str = "1200.50", cause: str = "ev-overdue-1") -> dict[str, Any]:
    """The fields escalation takes from a LoanOverdue report."""
    terms = LoanOverdue.model_validate(loan_body("L-1", amount=amount, dpd=dpd)).model_dump(
        mode="json", exclude={"loan_id"}, exclude_none=True)
    return {"terms": terms, "stage": SOFT_REMINDERS, "cause": cause}


def opened_case() -> CollectionCase:
    case = CollectionCase(loan_id="L-1", opened_at=OPENED_AT, **report())
    case.collect_events()
    return case


def pay(case: CollectionCase, remaining: str, cause: str = "ev-payment-1") -> None:
    left = Decimal(remaining)
    case.record_payment(Decimal("100.00"), left, OPENED_AT + timedelta(days=2),
                        payment_closes_case(left), cause)


def names(events: list[Any]) -> list[str]:
    return [type(e).__name__ for e in events]


def test_a_first_report_opens_a_case() -> None:
    case = CollectionCase(loan_id="L-1", opened_at=OPENED_AT, **report())
    assert names(case.collect_events()) == ["Opened"]
    assert (case.status, case.stage, case.correlation_id) == ("open", SOFT_REMINDERS,
                                                              "ev-overdue-1")
    assert case.id == CollectionCase.create_id("L-1")


def test_one_loan_is_one_case_stream() -> None:
    assert CollectionCase.create_id("L-1") == CollectionCase.create_id("L-1")
    assert CollectionCase.create_id("L-1") != CollectionCase.create_id("L-2")


def test_a_second_report_updates_the_case_and_opens_nothing() -> None:
    case = opened_case()
    case.report_overdue(at=OPENED_AT + timedelta(days=30), **report(dpd=65, amount="1500.00",
                                                                     cause="ev-overdue-2"))
    assert names(case.collect_events()) == ["TermsChanged"]
    assert (case.days_past_due, case.amount_overdue) == (65, Decimal("1500.00"))
    assert (case.status, case.opened_at, case.correlation_id) == ("open", OPENED_AT,
                                                                  "ev-overdue-1")


def test_paying_everything_closes_the_case_as_paid() -> None:
    case = opened_case()
    pay(case, "0.00")
    events = case.collect_events()
    assert names(events) == ["PaymentRecorded", "Closed"]
    assert events[-1].reason == "paid"
    assert (case.status, case.close_reason, case.amount_overdue) == ("closed", "paid",
                                                                     Decimal("0.00"))


@pytest.mark.parametrize("remaining", ["0.01", "600.00", "1200.49"])
def test_a_partial_payment_leaves_the_case_open(remaining: str) -> None:
    case = opened_case()
    pay(case, remaining)
    assert names(case.collect_events()) == ["PaymentRecorded", "TermsChanged"]
    assert (case.status, case.amount_overdue) == ("open", Decimal(remaining))


def test_a_payment_on_a_closed_case_does_not_close_it_twice() -> None:
    case = opened_case()
    pay(case, "0.00")
    case.collect_events()
    pay(case, "0.00", cause="ev-payment-2")
    assert names(case.collect_events()) == ["PaymentRecorded"]


def test_a_report_on_a_closed_case_reopens_it() -> None:
    case = opened_case()
    pay(case, "0.00")
    case.collect_events()
    reopened_at = OPENED_AT + timedelta(days=60)
    case.report_overdue(at=reopened_at, **report(dpd=10, amount="300.00", cause="ev-overdue-3"))
    assert names(case.collect_events()) == ["Reopened"]
    assert (case.status, case.opened_at, case.closed_at, case.close_reason) == (
        "open", reopened_at, None, None)
    assert (case.amount_overdue, case.correlation_id) == (Decimal("300.00"), "ev-overdue-3")


# --- the relay's view: stored domain events as integration events ---

def test_a_reported_intake_is_published_as_the_original_report() -> None:
    overdue = LoanOverdue.model_validate(loan_body("L-1"))
    intake = Intake(key="lender-1/key-1", event_type="LoanOverdue",
                    payload=overdue.model_dump(mode="json", exclude_none=True))
    publication = integration_event(intake.collect_events()[0])
    assert publication is not None
    assert publication.data == overdue
    assert (publication.causation_id, publication.correlation_id) == (None, None)


def test_a_reported_payment_is_published_as_the_original_payment() -> None:
    payment = PaymentReceived(loan_id="L-1", amount=Decimal("100.00"), currency="CNY",
                              paid_at=OPENED_AT, remaining_overdue=Decimal("0.00"))
    intake = Intake(key="lender-1/key-2", event_type="PaymentReceived",
                    payload=payment.model_dump(mode="json", exclude_none=True))
    publication = integration_event(intake.collect_events()[0])
    assert publication is not None and publication.data == payment


def test_an_opened_case_is_published_as_case_opened_caused_by_the_report() -> None:
    case = CollectionCase(loan_id="L-1", opened_at=OPENED_AT, **report(cause="ev-overdue-1"))
    publication = integration_event(case.collect_events()[0])
    assert publication is not None
    assert isinstance(publication.data, CaseOpened)
    assert (publication.causation_id, publication.correlation_id) == ("ev-overdue-1",
                                                                      "ev-overdue-1")
    data = publication.data
    assert (data.loan_id, data.lender_id, data.stage, data.opened_at) == (
        "L-1", "lender-1", SOFT_REMINDERS, OPENED_AT)
    assert (data.amount_overdue, data.days_past_due) == (Decimal("1200.50"), 35)
    assert data.borrower.timezone == "Asia/Shanghai"


def test_a_closed_case_is_published_as_case_closed_in_the_case_correlation() -> None:
    case = opened_case()
    pay(case, "0.00", cause="ev-payment-1")
    closed = case.collect_events()[-1]
    publication = integration_event(closed)
    assert publication is not None
    assert publication.data == CaseClosed(loan_id="L-1", reason="paid",
                                          closed_at=OPENED_AT + timedelta(days=2))
    assert (publication.causation_id, publication.correlation_id) == ("ev-payment-1",
                                                                      "ev-overdue-1")


def test_a_reopened_case_is_published_as_case_opened_in_a_new_correlation() -> None:
    case = opened_case()
    pay(case, "0.00")
    case.collect_events()
    case.report_overdue(at=OPENED_AT + timedelta(days=60), **report(cause="ev-overdue-3"))
    publication = integration_event(case.collect_events()[0])
    assert publication is not None and isinstance(publication.data, CaseOpened)
    assert (publication.causation_id, publication.correlation_id) == ("ev-overdue-3",
                                                                      "ev-overdue-3")


def test_updates_and_partial_payments_are_published_as_the_terms_now() -> None:
    from shared.events import CaseUpdated

    case = opened_case()
    case.report_overdue(at=OPENED_AT, **report(dpd=35))  # the same terms again: no change
    case.report_overdue(at=OPENED_AT, **report(dpd=40))
    pay(case, "600.00")
    published = [integration_event(e) for e in case.collect_events()]
    assert published[1] is None  # the payment itself stays escalation's
    updates = [p.data for p in published if p is not None]
    assert all(isinstance(u, CaseUpdated) for u in updates)
    reported, paid = updates
    assert isinstance(reported, CaseUpdated) and isinstance(paid, CaseUpdated)
    assert (reported.reason, reported.days_past_due, reported.amount_overdue) == (
        "reported", 40, Decimal("1200.50"))
    assert (paid.reason, paid.days_past_due, paid.amount_overdue) == (
        "paid", 40, Decimal("600.00"))


def test_another_lenders_report_on_the_same_loan_is_refused() -> None:
    case = CollectionCase(loan_id="L-1", opened_at=OPENED_AT, **report())
    foreign = report(dpd=50)
    foreign["terms"] = {**foreign["terms"], "lender_id": "lender-2"}
    with pytest.raises(OtherLendersLoan):
        case.report_overdue(at=OPENED_AT + timedelta(days=1), **foreign)
    assert (case.lender_id, case.days_past_due, case.version) == ("lender-1", 35, 1)


# --- C3: contact held and resumed ---


def test_a_cease_request_holds_its_channels_for_good_and_a_dispute_until_resolved() -> None:
    from shared.events import ContactHeld, ContactResumed

    case = opened_case()
    at = OPENED_AT + timedelta(hours=1)
    case.hold_contact("cease:ev-9", ["sms"], "asked to stop sms", at, True, "ev-9")
    case.hold_contact("cease:ev-9", ["sms"], "asked to stop sms", at, True, "ev-9")  # again
    case.hold_contact("dispute:D-1", None, "dispute D-1 is open", at, False, "ev-10")
    assert case.resume_contact("dispute:D-2", "no such dispute", at, "ev-11") is False
    assert case.resume_contact("dispute:D-1", "resolved", at, "ev-12") is True
    published = [p.data for p in map(integration_event, case.collect_events()) if p]
    assert [type(d) for d in published] == [ContactHeld, ContactHeld, ContactResumed]
    cease, dispute, resumed = published
    assert isinstance(cease, ContactHeld) and cease.permanent and cease.rule == "C3"
    assert [str(c) for c in cease.channels or []] == ["sms"]
    assert isinstance(dispute, ContactHeld) and not dispute.permanent
    assert dispute.channels is None
    assert isinstance(resumed, ContactResumed) and resumed.hold_id == "dispute:D-1"
    assert case.holds == {"cease:ev-9": ["sms"]}


def test_a_cease_on_a_lenders_event_with_a_long_id_still_reaches_the_reminder_service() -> None:
    from shared.events import CeaseContactRequested, Channel, ContactHeld, envelope
    from shared.policy_pack import CN

    from services.escalation.application import Cases

    cases = Cases(CN, env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    unit = cases.unit()
    unit.save(CollectionCase(loan_id="L-1", opened_at=OPENED_AT, **report()))
    cases.commit(unit)
    request = CeaseContactRequested(loan_id="L-1", channels=[Channel.SMS],
                                    requested_at=OPENED_AT)
    event = envelope(request, event_id="x" * 128, source="/lender-1/core", time=OPENED_AT,
                     causation_id=None, correlation_id=None)
    unit = cases.unit()
    assert cases.hold_contact(unit, event, request, OPENED_AT) is True
    cases.commit(unit)
    case = cases.case("L-1")
    assert case is not None
    published = [integration_event(cases.mapper.to_domain_event(n))
                 for n in cases.recorder.select_notifications(1, 100)]
    (held,) = [p.data for p in published if p and isinstance(p.data, ContactHeld)]
    assert held.permanent and len(held.hold_id) <= 80
